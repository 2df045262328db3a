//! Component test: the real berth-netd binary alone, with temporary roots, its own bridge
//! (named from the temp run root) and `--bip 172.29.250.1/24`. Needs root.

// Test helpers outside #[test] functions are test code too: a failed step should panic.
#![allow(clippy::unwrap_used)]

use berth_kit::Roots;
use berth_proto::networks::networks_client::NetworksClient;
use berth_proto::networks::{
    CreateEndpointRequest, GetEndpointRequest, GetNetworkRequest, ListEndpointsRequest,
    ListNetworksRequest, RemoveEndpointRequest,
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
        let child = Command::new(BIN)
            .args(self.args())
            .args(["--bip", BIP])
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
        let st = Command::new(BIN)
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
    assert!(!link_exists(&ex.host_veth));
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
        })
        .await
        .unwrap();
    }
    assert!(!link_exists(&ea.host_veth));
    assert!(!Path::new(&ea.netns_path).exists());
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
    })
    .await
    .unwrap();
    assert!(!Path::new(&en.netns_path).exists());

    // Teardown removes the bridge, the table and every namespace.
    let netns_dir: PathBuf = inst.run.path().join("netns");
    inst.teardown();
    assert!(!link_exists(&bridge));
    assert!(!link_exists(&eb.host_veth));
    assert!(!link_exists(&e2.host_veth));
    assert!(!link_exists(&e3.host_veth));
    let (ok, _) = run(&["nft", "list", "table", "ip", &table]);
    assert!(!ok, "nft table still there after --teardown");
    let left = std::fs::read_dir(&netns_dir)
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "netns files left in {}", netns_dir.display());
}
