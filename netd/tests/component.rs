//! Component test: the real berth-netd binary alone, with temporary roots, its own bridge
//! (named from the temp run root) and `--bip 172.29.250.1/24`. Needs root.

// Test helpers outside #[test] functions are test code too: a failed step should panic.
#![allow(clippy::unwrap_used)]

use berth_kit::Roots;
use berth_proto::networks::networks_client::NetworksClient;
use berth_proto::networks::{
    CreateEndpointRequest, CreateNetworkRequest, GetEndpointRequest, GetNetworkRequest,
    ListEndpointsRequest, ListNetworksRequest, PortBinding, RemoveEndpointRequest,
    RemoveNetworkRequest,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_berth-netd");
const BIP: &str = "172.29.250.1/24";

/// One netd instance; Drop kills it and removes every kernel object it may have left.
struct Instance {
    data: tempfile::TempDir,
    run: tempfile::TempDir,
    roots: Roots,
    child: Option<Child>,
    /// Runs netd through this (e.g. `nsenter --net=FILE`) instead of directly.
    wrapper: Vec<String>,
}

impl Instance {
    fn new() -> Self {
        let data = tempfile::Builder::new()
            .prefix("b")
            .tempdir_in("/tmp")
            .unwrap();
        let run = tempfile::Builder::new()
            .prefix("b")
            .tempdir_in("/tmp")
            .unwrap();
        let roots = Roots::new(data.path(), run.path());
        Self {
            data,
            run,
            roots,
            child: None,
            wrapper: Vec::new(),
        }
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--data-root".into(),
            self.data.path().display().to_string(),
            "--exec-root".into(),
            self.run.path().display().to_string(),
        ]
    }

    async fn start(&mut self) {
        self.start_with(&["--bip", BIP]).await;
    }

    fn command(&self) -> Command {
        match self.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        }
    }

    async fn start_with(&mut self, extra: &[&str]) {
        let child = self
            .command()
            .args(self.args())
            .args(extra)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let sock = self.roots.socket("netd");
        for _ in 0..100 {
            if berth_kit::grpc::is_serving(&sock, Duration::from_millis(200)).await {
                return;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("berth-netd exited early: {st}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("berth-netd never became SERVING");
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    fn client(&self) -> NetworksClient<Channel> {
        NetworksClient::new(berth_kit::grpc::channel(&self.roots.socket("netd")))
    }

    fn teardown(&mut self) {
        self.kill9();
        let st = self
            .command()
            .args(self.args())
            .arg("--teardown")
            .status()
            .unwrap();
        assert!(st.success(), "--teardown failed: {st}");
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill9();
        // User-defined networks' bridges (br-*) and veths: the instance's own teardown
        // knows them from its records.
        quiet(&[
            BIN,
            "--data-root",
            &self.data.path().display().to_string(),
            "--exec-root",
            &self.run.path().display().to_string(),
            "--teardown",
        ]);
        let bridge = self.roots.bridge_name();
        if let Ok(out) = Command::new("ip")
            .args(["-o", "link", "show", "master", &bridge])
            .output()
        {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(name) = line.split(": ").nth(1) {
                    let name = name.split('@').next().unwrap_or(name);
                    quiet(&["ip", "link", "del", name]);
                }
            }
        }
        quiet(&["ip", "link", "del", &bridge]);
        quiet(&["nft", "delete", "table", "ip", &self.roots.nft_table()]);
        if let Ok(entries) = std::fs::read_dir(self.run.path().join("netns")) {
            for e in entries.flatten() {
                let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

fn quiet(cmd: &[&str]) {
    let _ = Command::new(cmd[0])
        .args(&cmd[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn run(cmd: &[&str]) -> (bool, String) {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

fn in_ns(ns: &str, cmd: &[&str]) -> (bool, String) {
    let net = format!("--net={ns}");
    let mut full = vec!["nsenter", net.as_str()];
    full.extend_from_slice(cmd);
    run(&full)
}

fn ping(ns: &str, ip: &str) {
    let (ok, out) = in_ns(ns, &["busybox", "ping", "-c1", "-W1", ip]);
    if !ok {
        // One retry: the very first packet may be lost while neighbours are resolved.
        let (ok2, out2) = in_ns(ns, &["busybox", "ping", "-c1", "-W2", ip]);
        assert!(ok2, "ping {ip} from {ns} failed: {out}\n{out2}");
    }
}

fn ifindex(name: &str) -> u32 {
    let (ok, out) = run(&["ip", "-o", "link", "show", name]);
    assert!(ok, "ip link show {name}: {out}");
    out.split(':').next().unwrap().trim().parse().unwrap()
}

fn link_exists(name: &str) -> bool {
    run(&["ip", "link", "show", name]).0
}

/// A removed namespace's veth pair goes with it in the kernel's own cleanup, a few tens
/// of milliseconds later: true once `name` is gone, false if it is still there after 5 s.
fn link_gone(name: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while link_exists(name) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}

fn random_id() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

async fn c_get_err(inst: &Instance, id: &str) -> tonic::Code {
    inst.client()
        .get_endpoint(GetEndpointRequest {
            container_id: id.into(),
        })
        .await
        .unwrap_err()
        .code()
}

async fn create(
    c: &mut NetworksClient<Channel>,
    id: &str,
    network: &str,
) -> berth_proto::networks::Endpoint {
    c.create_endpoint(CreateEndpointRequest {
        container_id: id.into(),
        network: network.into(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("CreateEndpoint {id} on {network}: {e}"))
    .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netd_plumbs_endpoints_and_survives_kill9() {
    let mut inst = Instance::new();
    let bridge = inst.roots.bridge_name();
    let table = inst.roots.nft_table();
    inst.start().await;

    // Bridge with the --bip address, and our nft table.
    let (ok, out) = run(&["ip", "-o", "-4", "addr", "show", "dev", &bridge]);
    assert!(
        ok && out.contains("172.29.250.1/24"),
        "bridge address: {out}"
    );
    let (ok, out) = run(&["nft", "list", "table", "ip", &table]);
    assert!(ok, "nft table: {out}");
    assert!(out.contains("masquerade") && out.contains(&bridge), "{out}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim(),
        "1"
    );

    let mut c = inst.client();
    let nets = c
        .list_networks(ListNetworksRequest {})
        .await
        .unwrap()
        .into_inner()
        .networks;
    let mut names: Vec<_> = nets.iter().map(|n| n.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["bridge", "host", "none"]);
    let br = nets.iter().find(|n| n.name == "bridge").unwrap();
    assert_eq!(br.driver, "bridge");
    assert_eq!(br.subnet, "172.29.250.0/24");
    assert_eq!(br.gateway, "172.29.250.1");
    assert_eq!(br.bridge, bridge);
    assert_eq!(br.id.len(), 64);
    let by_prefix = c
        .get_network(GetNetworkRequest {
            name_or_id: br.id[..12].to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_prefix.name, "bridge");
    let none_net = c
        .get_network(GetNetworkRequest {
            name_or_id: "none".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(none_net.driver, "null");

    // Two bridged containers.
    let a = random_id();
    let b = random_id();
    let ea = create(&mut c, &a, "bridge").await;
    let eb = create(&mut c, &b, "default").await;
    assert_eq!(ea.ip_address, "172.29.250.2");
    assert_eq!(eb.ip_address, "172.29.250.3");
    assert_eq!(ea.prefix_len, 24);
    assert_eq!(ea.gateway, "172.29.250.1");
    assert_eq!(ea.mac_address, "02:42:ac:1d:fa:02");
    assert_eq!(ea.host_veth, format!("vb{}", &a[..12]));
    assert_eq!(ea.network_name, "bridge");
    assert_eq!(ea.network_id, br.id);
    assert_eq!(
        ea.netns_path,
        inst.roots.netns_path(&a).display().to_string()
    );
    // Idempotent.
    let again = create(&mut c, &a, "bridge").await;
    assert_eq!(again, ea);

    let err = c
        .create_endpoint(CreateEndpointRequest {
            container_id: random_id(),
            network: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(err.message(), "network nope not found");

    // A failure half-way (the netns path is occupied by a directory) undoes everything:
    // no record, no veth, and the address goes back to the pool (x below gets .4).
    let bad = random_id();
    std::fs::create_dir_all(inst.roots.netns_path(&bad)).unwrap();
    let err = c
        .create_endpoint(CreateEndpointRequest {
            container_id: bad.clone(),
            network: "bridge".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
    assert_eq!(c_get_err(&inst, &bad).await, tonic::Code::NotFound);
    assert!(!link_exists(&format!("vb{}", &bad[..12])));
    std::fs::remove_dir(inst.roots.netns_path(&bad)).unwrap();
    // Two ids sharing the short id would share a veth name: refused, not clobbered.
    let twin = format!("{}{}", &a[..12], "f".repeat(52));
    let err = c
        .create_endpoint(CreateEndpointRequest {
            container_id: twin,
            network: "bridge".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");

    for (ep, ip) in [(&ea, "172.29.250.2/24"), (&eb, "172.29.250.3/24")] {
        let (ok, out) = in_ns(
            &ep.netns_path,
            &["ip", "-o", "-4", "addr", "show", "dev", "eth0"],
        );
        assert!(ok && out.contains(ip), "eth0 in {}: {out}", ep.netns_path);
        let (_, out) = in_ns(&ep.netns_path, &["ip", "link", "show", "eth0"]);
        assert!(out.contains(&ep.mac_address), "{out}");
        let (_, out) = in_ns(&ep.netns_path, &["ip", "route"]);
        assert!(out.contains("default via 172.29.250.1"), "{out}");
        assert!(link_exists(&ep.host_veth));
    }
    ping(&ea.netns_path, "172.29.250.3");
    ping(&eb.netns_path, "172.29.250.2");
    ping(&ea.netns_path, "172.29.250.1");

    // "none": only lo, up. "host": no namespace.
    let n = random_id();
    let en = create(&mut c, &n, "none").await;
    assert!(en.ip_address.is_empty() && en.host_veth.is_empty());
    let (ok, out) = in_ns(&en.netns_path, &["ip", "-o", "link"]);
    assert!(ok, "{out}");
    let links: Vec<_> = out.lines().collect();
    assert_eq!(links.len(), 1, "{out}");
    assert!(
        links[0].contains(": lo:") && links[0].contains("UP"),
        "{out}"
    );
    let h = random_id();
    let eh = create(&mut c, &h, "host").await;
    assert!(eh.netns_path.is_empty());
    let listed = c
        .list_endpoints(ListEndpointsRequest {
            network: "bridge".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .endpoints;
    assert_eq!(listed.len(), 2);

    // A third container whose namespace will vanish while netd is down.
    let x = random_id();
    let ex = create(&mut c, &x, "bridge").await;
    assert_eq!(ex.ip_address, "172.29.250.4");

    // kill -9 and restart: nothing is recreated, everything still works.
    let idx_a = ifindex(&ea.host_veth);
    let idx_b = ifindex(&eb.host_veth);
    inst.kill9();
    ping(&ea.netns_path, "172.29.250.3");
    // While netd is down: x's namespace disappears, and a stray veth lands on our bridge.
    nix::mount::umount2(Path::new(&ex.netns_path), nix::mount::MntFlags::MNT_DETACH).unwrap();
    std::fs::remove_file(&ex.netns_path).unwrap();
    let (ok, out) = run(&[
        "ip",
        "link",
        "add",
        "vbstray000001",
        "type",
        "veth",
        "peer",
        "name",
        "vqstray000001",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["ip", "link", "set", "vbstray000001", "master", &bridge]);
    assert!(ok, "{out}");
    // A different --bip is refused while containers use the bridge.
    let out = Command::new(BIN)
        .args(inst.args())
        .args(["--bip", "172.29.249.1/24"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("containers still use it"), "{stderr}");
    inst.start().await;
    assert!(
        !link_exists("vbstray000001"),
        "stray veth on our bridge survived reconcile"
    );
    assert!(link_gone(&ex.host_veth));
    let err = c_get_err(&inst, &x).await;
    assert_eq!(err, tonic::Code::NotFound);
    let mut c = inst.client();
    assert_eq!(ifindex(&ea.host_veth), idx_a);
    assert_eq!(ifindex(&eb.host_veth), idx_b);
    ping(&ea.netns_path, "172.29.250.3");
    ping(&eb.netns_path, "172.29.250.1");
    let got = c
        .get_endpoint(GetEndpointRequest {
            container_id: a.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, ea);
    let (ok, _) = run(&["nft", "list", "table", "ip", &table]);
    assert!(ok);

    // RemoveEndpoint leaves nothing; a second remove is fine; the address is reused.
    for _ in 0..2 {
        c.remove_endpoint(RemoveEndpointRequest {
            container_id: a.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    assert!(!Path::new(&ea.netns_path).exists());
    assert!(link_gone(&ea.host_veth));
    let err = c
        .get_endpoint(GetEndpointRequest {
            container_id: a.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let e2 = create(&mut c, &random_id(), "bridge").await;
    assert_eq!(e2.ip_address, "172.29.250.2");
    let e3 = create(&mut c, &random_id(), "bridge").await;
    assert_eq!(
        e3.ip_address, "172.29.250.4",
        "x's address was not released"
    );
    ping(&e2.netns_path, "172.29.250.3");
    c.remove_endpoint(RemoveEndpointRequest {
        container_id: n.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(!Path::new(&en.netns_path).exists());

    // Teardown removes the bridge, the table and every namespace.
    let netns_dir: PathBuf = inst.run.path().join("netns");
    inst.teardown();
    assert!(!link_exists(&bridge));
    assert!(link_gone(&eb.host_veth));
    assert!(link_gone(&e2.host_veth));
    assert!(link_gone(&e3.host_veth));
    let (ok, _) = run(&["nft", "list", "table", "ip", &table]);
    assert!(!ok, "nft table still there after --teardown");
    let left = std::fs::read_dir(&netns_dir)
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "netns files left in {}", netns_dir.display());
}

/// A UDP resolver on 127.0.0.1 that answers every A query with 198.51.100.7 (a
/// documentation address nothing routes to); returns its port.
fn fake_upstream() -> u16 {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            if n < 12 {
                continue;
            }
            // Header: same id, QR+RD+RA, one question, one answer.
            let mut out = buf[..n].to_vec();
            out[2] = 0x81;
            out[3] = 0x80;
            out[6] = 0;
            out[7] = 1;
            // The answer: a pointer to the question's name, A, IN, TTL 60, 4 bytes.
            out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 198, 51, 100, 7]);
            let _ = sock.send_to(&out, from);
        }
    });
    port
}

/// The host's first global IPv4 address (not loopback, not one of our bridges).
fn host_address() -> Option<String> {
    let (_, out) = run(&["ip", "-o", "-4", "addr", "show", "scope", "global"]);
    out.lines()
        .filter(|l| !l.contains(" br-") && !l.contains(" bx") && !l.contains(" berth"))
        .find_map(|l| {
            let addr = l.split_whitespace().skip_while(|w| *w != "inet").nth(1)?;
            Some(addr.split('/').next()?.to_string())
        })
}

/// busybox httpd serving `text` at /index.html inside `ns` on port 80; killed on drop
/// (the directory lives as long as the server).
struct Httpd(Child, #[allow(dead_code)] tempfile::TempDir);

impl Httpd {
    fn start(ns: &str, text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), text).unwrap();
        let child = Command::new("nsenter")
            .args([
                &format!("--net={ns}"),
                "busybox",
                "httpd",
                "-f",
                "-p",
                "80",
                "-h",
            ])
            .arg(dir.path())
            .spawn()
            .unwrap();
        Self(child, dir)
    }
}

impl Drop for Httpd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fetch(ns: Option<&str>, url: &str) -> (bool, String) {
    // Debian's busybox wget crashes with -T; `timeout` bounds it instead.
    let cmd = ["timeout", "5", "busybox", "wget", "-q", "-O", "-", url];
    let mut last = (false, String::new());
    // httpd may need a moment to listen.
    for _ in 0..20 {
        last = match ns {
            Some(ns) => in_ns(ns, &cmd),
            None => run(&cmd),
        };
        if last.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    last
}

async fn connect(
    c: &mut NetworksClient<Channel>,
    id: &str,
    network: &str,
    name: &str,
    aliases: &[&str],
    ports: Vec<PortBinding>,
) -> berth_proto::networks::Endpoint {
    c.create_endpoint(CreateEndpointRequest {
        container_id: id.into(),
        network: network.into(),
        container_name: name.into(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        ports,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("CreateEndpoint {name} on {network}: {e}"))
    .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_networks_dns_ports_and_isolation() {
    let mut inst = Instance::new();
    let upstream = fake_upstream();
    let dns = format!("127.0.0.1:{upstream}");
    inst.start_with(&["--bip", "172.29.251.1/24", "--dns", &dns])
        .await;
    let mut c = inst.client();

    let front = c
        .create_network(CreateNetworkRequest {
            name: "front".into(),
            subnet: "172.29.252.0/24".into(),
            ip_range: "172.29.252.128/25".into(),
            labels: [("tier".to_string(), "web".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(front.gateway, "172.29.252.1");
    assert_eq!(front.bridge, format!("br-{}", &front.id[..12]));
    assert_eq!(front.labels["tier"], "web");
    let err = c
        .create_network(CreateNetworkRequest {
            name: "front".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");
    let err = c
        .create_network(CreateNetworkRequest {
            name: "overlapping".into(),
            subnet: "172.29.252.0/25".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let err = c
        .create_network(CreateNetworkRequest {
            name: "bad\nname".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    // dockerd takes spaces and punctuation (docker-py's suite creates "test 01").
    let spaced = c
        .create_network(CreateNetworkRequest {
            name: "test 01!".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    c.remove_network(RemoveNetworkRequest {
        name_or_id: spaced.id,
    })
    .await
    .unwrap();
    let back = c
        .create_network(CreateNetworkRequest {
            name: "back".into(),
            subnet: "172.29.253.0/24".into(),
            internal: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    // web and api on front; api also on back (eth1); db on back only.
    let (web, api, db) = (random_id(), random_id(), random_id());
    let e_web = connect(
        &mut c,
        &web,
        "front",
        "web",
        &["www"],
        vec![PortBinding {
            protocol: "tcp".into(),
            container_port: 80,
            host_ip: String::new(),
            host_port: 0,
        }],
    )
    .await;
    assert_eq!(e_web.ip_address, "172.29.252.128", "--ip-range is honoured");
    assert_eq!(e_web.dns_names, ["web", &web[..12], "www"]);
    let host_port = e_web.ports[0].host_port;
    assert!(host_port >= 1024, "{:?}", e_web.ports);
    let e_api = connect(&mut c, &api, "front", "api", &[], vec![]).await;
    let e_api_back = connect(&mut c, &api, "back", "api", &["backend"], vec![]).await;
    assert_eq!(e_api_back.interface_name, "eth1");
    let e_db = connect(&mut c, &db, "back", "db", &[], vec![]).await;
    let (_, routes) = in_ns(&e_api.netns_path, &["ip", "route"]);
    assert_eq!(routes.matches("default").count(), 1, "{routes}");

    // DNS: names, aliases and short ids on shared networks only; others forwarded.
    let lookup = |ns: &str, name: &str| in_ns(ns, &["busybox", "nslookup", name, "127.0.0.11"]);
    let (ok, out) = lookup(&e_api.netns_path, "web");
    assert!(ok && out.contains(&e_web.ip_address), "{out}");
    let (ok, out) = lookup(&e_api.netns_path, "WWW");
    assert!(ok && out.contains(&e_web.ip_address), "{out}");
    let (ok, out) = lookup(&e_api.netns_path, &web[..12]);
    assert!(ok && out.contains(&e_web.ip_address), "{out}");
    let (ok, out) = lookup(&e_db.netns_path, "backend");
    assert!(ok && out.contains(&e_api_back.ip_address), "{out}");
    let (_, out) = lookup(&e_db.netns_path, "web");
    assert!(
        !out.contains(&e_web.ip_address),
        "db is not on front: {out}"
    );
    let (ok, out) = lookup(&e_web.netns_path, "anything.example");
    assert!(ok && out.contains("198.51.100.7"), "not forwarded: {out}");

    // Same network talks, different networks do not, internal reaches nothing outside.
    ping(&e_api.netns_path, &e_web.ip_address);
    ping(&e_db.netns_path, &e_api_back.ip_address);
    let (ok, _) = in_ns(
        &e_web.netns_path,
        &["busybox", "ping", "-c1", "-W1", &e_db.ip_address],
    );
    assert!(!ok, "front reached back");
    let (ok, _) = in_ns(
        &e_db.netns_path,
        &["busybox", "ping", "-c1", "-W1", &e_web.ip_address],
    );
    assert!(!ok, "back reached front");

    // The published port answers on 127.0.0.1, on the host's address, and from another
    // container (hairpin).
    let _httpd = Httpd::start(&e_web.netns_path, "hello from web");
    let (ok, out) = fetch(None, &format!("http://127.0.0.1:{host_port}/index.html"));
    if !ok {
        let direct = fetch(
            Some(&e_api.netns_path),
            &format!("http://{}/index.html", e_web.ip_address),
        );
        let (_, table) = run(&["nft", "list", "table", "ip", &inst.roots.nft_table()]);
        let (_, verbose) = run(&[
            "busybox",
            "wget",
            "-O",
            "-",
            &format!("http://127.0.0.1:{host_port}/index.html"),
        ]);
        panic!("port {host_port}: {out}\ndirect: {direct:?}\n{table}\n{verbose}");
    }
    if let Some(addr) = host_address() {
        let (ok, out) = fetch(None, &format!("http://{addr}:{host_port}/index.html"));
        assert!(ok && out.contains("hello from web"), "via {addr}: {out}");
        let (ok, out) = fetch(
            Some(&e_api.netns_path),
            &format!("http://{addr}:{host_port}/index.html"),
        );
        assert!(
            ok && out.contains("hello from web"),
            "hairpin via {addr}: {out}"
        );
    }
    // The same host port cannot be published twice.
    let err = c
        .create_endpoint(CreateEndpointRequest {
            container_id: random_id(),
            network: "front".into(),
            ports: vec![PortBinding {
                protocol: "tcp".into(),
                container_port: 81,
                host_ip: "127.0.0.1".into(),
                host_port,
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("port is already allocated"),
        "{err:?}"
    );

    // A network with containers cannot go.
    let err = c
        .remove_network(RemoveNetworkRequest {
            name_or_id: "back".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("has active endpoints"), "{err:?}");

    // kill -9 of netd: connections keep working, DNS and ports come back.
    let idx = ifindex(&e_web.host_veth);
    inst.kill9();
    ping(&e_api.netns_path, &e_web.ip_address);
    let (ok, out) = fetch(None, &format!("http://127.0.0.1:{host_port}/index.html"));
    assert!(
        ok && out.contains("hello from web"),
        "port lost while netd is down: {out}"
    );
    inst.start_with(&["--bip", "172.29.251.1/24", "--dns", &dns])
        .await;
    let mut c = inst.client();
    assert_eq!(ifindex(&e_web.host_veth), idx);
    let (ok, out) = lookup(&e_api.netns_path, "web");
    assert!(
        ok && out.contains(&e_web.ip_address),
        "DNS after restart: {out}"
    );
    let (ok, out) = fetch(None, &format!("http://127.0.0.1:{host_port}/index.html"));
    assert!(ok && out.contains("hello from web"), "{out}");

    // Disconnect: the interface goes, the name stops resolving there.
    c.remove_endpoint(RemoveEndpointRequest {
        container_id: api.clone(),
        network: "back".into(),
    })
    .await
    .unwrap();
    let (_, out) = in_ns(&e_api.netns_path, &["ip", "-o", "link"]);
    assert!(!out.contains("eth1"), "{out}");
    let (_, out) = lookup(&e_db.netns_path, "backend");
    assert!(!out.contains(&e_api_back.ip_address), "{out}");

    // Removal of containers, then networks; teardown leaves nothing.
    for id in [&web, &api, &db] {
        c.remove_endpoint(RemoveEndpointRequest {
            container_id: id.to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    for n in ["front", "back"] {
        c.remove_network(RemoveNetworkRequest {
            name_or_id: n.into(),
        })
        .await
        .unwrap();
    }
    assert!(!link_exists(&front.bridge));
    assert!(!link_exists(&back.bridge));
    let (ok, out) = fetch(None, &format!("http://127.0.0.1:{host_port}/index.html"));
    assert!(!ok, "port still published after removal: {out}");
    inst.teardown();
    let (ok, _) = run(&["nft", "list", "table", "ip", &inst.roots.nft_table()]);
    assert!(!ok);
}

/// A network namespace of the test's own, bind-mounted on a file, standing in for a host
/// whose firewall drops forwarded traffic; unmounted and removed on drop.
struct TestHost {
    _dir: tempfile::TempDir,
    file: PathBuf,
}

impl TestHost {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("host-ns");
        std::fs::write(&file, b"").unwrap();
        let (ok, out) = run(&["unshare", &format!("--net={}", file.display()), "true"]);
        assert!(ok, "unshare --net: {out}");
        let host = Self { _dir: dir, file };
        host.ok(&["ip", "link", "set", "lo", "up"]);
        host
    }

    fn ns(&self) -> String {
        self.file.display().to_string()
    }

    fn ok(&self, cmd: &[&str]) -> String {
        let (ok, out) = in_ns(&self.ns(), cmd);
        assert!(ok, "{cmd:?} in the test host: {out}");
        out
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.file, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_behind_a_forward_drop_firewall() {
    let host = TestHost::new();
    // What a Docker engine leaves behind: FORWARD policy DROP, bridged traffic through
    // iptables (per namespace; only where the kernel has br_netfilter).
    host.ok(&["iptables", "-w", "-P", "FORWARD", "DROP"]);
    let _ = in_ns(
        &host.ns(),
        &["sysctl", "-w", "net.bridge.bridge-nf-call-iptables=1"],
    );
    let mut inst = Instance::new();
    inst.wrapper = vec!["nsenter".into(), format!("--net={}", host.ns())];
    inst.start_with(&["--bip", "172.29.254.1/24"]).await;
    let mut c = inst.client();
    let chain = format!("{}-FORWARD", inst.roots.nft_table().to_uppercase());
    let rules = host.ok(&["iptables", "-w", "-S", "FORWARD"]);
    assert!(rules.contains(&format!("-A FORWARD -j {chain}")), "{rules}");

    let (a, b) = (random_id(), random_id());
    let ea = create(&mut c, &a, "bridge").await;
    let eb = c
        .create_endpoint(CreateEndpointRequest {
            container_id: b.clone(),
            network: "bridge".into(),
            ports: vec![PortBinding {
                protocol: "tcp".into(),
                container_port: 80,
                host_ip: String::new(),
                host_port: 8080,
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Bridged traffic between two containers passes FORWARD (br_netfilter).
    ping(&ea.netns_path, &eb.ip_address);
    // Hairpin through a published port is routed: FORWARD again.
    let _httpd = Httpd::start(&eb.netns_path, "behind the firewall");
    let (ok, out) = fetch(Some(&ea.netns_path), "http://172.29.254.1:8080/index.html");
    assert!(ok && out.contains("behind the firewall"), "{out}");
    // Isolation is still ours to enforce, whatever iptables accepts.
    c.create_network(CreateNetworkRequest {
        name: "other".into(),
        subnet: "172.29.255.0/24".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let eo = create(&mut c, &random_id(), "other").await;
    let (ok, _) = in_ns(
        &eo.netns_path,
        &["busybox", "ping", "-c1", "-W1", &ea.ip_address],
    );
    assert!(!ok, "another network reached the default bridge");

    inst.teardown();
    let rules = host.ok(&["iptables", "-w", "-S"]);
    assert!(
        !rules.contains(&chain),
        "iptables chain left after teardown: {rules}"
    );
    host.ok(&["iptables", "-w", "-P", "FORWARD", "ACCEPT"]);
}
