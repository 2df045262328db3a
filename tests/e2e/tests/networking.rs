//! Docker's network model with the real CLI: user-defined networks with DNS by name and
//! alias, forwarding to an upstream resolver the test runs on loopback, isolation between
//! networks, --internal, none, connect/disconnect, published ports (-p, -P, docker port)
//! from the host and between containers, --dns/--dns-search/--add-host, rm/prune, and an
//! established connection through a published port surviving kill -9 of berth-netd.

use berth_e2e::dns::FakeResolver;
use berth_e2e::registry::free_port;
use berth_e2e::{Berth, registry_with_busybox, step, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::Write;
use std::time::Duration;

/// The host's own non-loopback, non-bridge IPv4 address, if it has one.
fn host_address() -> Option<String> {
    let out = std::process::Command::new("ip")
        .args(["-o", "-4", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains(" br-") && !l.contains(" bx") && !l.contains(" berth"))
        .find_map(|l| {
            let addr = l.split_whitespace().skip_while(|w| *w != "inet").nth(1)?;
            Some(addr.split('/').next()?.to_string())
        })
}

/// GET `url` from the host with busybox wget (bounded by `timeout`: Debian's busybox
/// wget crashes on -T); retried briefly while a server starts.
fn host_get(url: &str) -> Option<String> {
    for _ in 0..30 {
        let out = std::process::Command::new("timeout")
            .args(["5", "busybox", "wget", "-q", "-O", "-", url])
            .output()
            .ok()?;
        if out.status.success() {
            return Some(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

const HTTPD: &str = "echo hello from $(hostname) > /tmp/index.html && exec httpd -f -p 80 -h /tmp";

#[test]
fn docker_networks() {
    let (_registry, _image, img) = registry_with_busybox().unwrap();
    // The instance's subnet octet is only known after start, so the resolver's loopback
    // address comes from the pid: port 53 there is this test's alone.
    let resolver_ip = format!("127.0.{}.53", 100 + std::process::id() % 100);
    let resolver = FakeResolver::start(
        format!("{resolver_ip}:53").parse().unwrap(),
        "198.51.100.7".parse().unwrap(),
    )
    .unwrap();
    let berth = Berth::start_full(
        "networking",
        &[],
        &[],
        &format!(
            r#"{{"dns": ["{}"], "default-address-pools": [{{"base": "10.213.0.0/16", "size": 24}}]}}"#,
            resolver.addr().ip()
        ),
    )
    .unwrap();
    let n = berth.subnet_octet();
    berth.docker_ok(&["pull", &img]).unwrap();

    step!("docker network create / ls / inspect");
    let front_subnet = format!("172.30.{n}.0/24");
    let id = berth
        .docker_ok(&[
            "network",
            "create",
            "--subnet",
            &front_subnet,
            "--label",
            "tier=web",
            "front",
        ])
        .unwrap();
    assert_eq!(id.trim().len(), 64, "{id}");
    let out = berth.docker(&["network", "create", "front"]);
    assert!(!out.success());
    assert!(
        out.stderr
            .contains("network with name front already exists"),
        "{out}"
    );
    let ls = berth
        .docker_ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"])
        .unwrap();
    for want in ["bridge bridge", "host host", "none null", "front bridge"] {
        assert!(ls.lines().any(|l| l == want), "{want} missing in\n{ls}");
    }
    let only = berth
        .docker_ok(&["network", "ls", "-q", "--filter", "label=tier=web"])
        .unwrap();
    assert_eq!(only.trim(), &id.trim()[..12]);
    assert_eq!(
        berth
            .inspect(
                "{{(index .IPAM.Config 0).Subnet}} {{.Labels.tier}}",
                "front"
            )
            .unwrap(),
        format!("{front_subnet} web")
    );
    let auto = berth.docker_ok(&["network", "create", "auto"]).unwrap();
    assert!(!auto.is_empty());
    assert_eq!(
        berth
            .docker_ok(&[
                "network",
                "inspect",
                "-f",
                "{{(index .IPAM.Config 0).Subnet}}",
                "auto"
            ])
            .unwrap()
            .trim(),
        "10.213.0.0/24",
        "default-address-pools from daemon.json"
    );

    step!("--gateway, --ip-range and the bridge name option");
    let ranged = format!("10.214.{n}.0/24");
    berth
        .docker_ok(&[
            "network",
            "create",
            "--subnet",
            &ranged,
            "--gateway",
            &format!("10.214.{n}.254"),
            "--ip-range",
            &format!("10.214.{n}.64/26"),
            "-o",
            &format!("com.docker.network.bridge.name=bt{n}"),
            "ranged",
        ])
        .unwrap();
    assert_eq!(
        berth
            .inspect(
                "{{(index .IPAM.Config 0).Gateway}} {{(index .IPAM.Config 0).IPRange}}",
                "ranged"
            )
            .unwrap(),
        format!("10.214.{n}.254 10.214.{n}.64/26")
    );
    let addr = berth
        .docker_ok(&[
            "run",
            "--rm",
            "--network",
            "ranged",
            &img,
            "sh",
            "-c",
            "ip -o -4 addr show eth0; ip route",
        ])
        .unwrap();
    assert!(addr.contains(&format!("10.214.{n}.64/24")), "{addr}");
    assert!(
        addr.contains(&format!("default via 10.214.{n}.254")),
        "{addr}"
    );
    let bridge = std::process::Command::new("ip")
        .args(["-o", "-4", "addr", "show", &format!("bt{n}")])
        .output()
        .unwrap();
    let bridge = String::from_utf8_lossy(&bridge.stdout);
    assert!(
        bridge.contains(&format!("10.214.{n}.254/24")),
        "{bridge} {}",
        berth.docker_ok(&["network", "inspect", "ranged"]).unwrap()
    );
    berth.docker_ok(&["network", "rm", "ranged"]).unwrap();

    step!("--network host sees the host's interfaces; -p there is discarded with Docker's warning");
    let out = berth.docker(&[
        "run",
        "--rm",
        "--network",
        "host",
        "-p",
        "8099:80",
        &img,
        "true",
    ]);
    assert!(out.success(), "{out}");
    assert!(
        out.stderr
            .contains("Published ports are discarded when using host network mode"),
        "{out}"
    );
    let host_links = berth
        .docker_ok(&["run", "--rm", "--network", "host", &img, "ip", "-o", "link"])
        .unwrap();
    assert!(
        host_links.contains(&berth.roots().bridge_name()),
        "the instance's bridge is not visible: {host_links}"
    );

    step!("two containers talk by name and alias on a user-defined network");
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "front",
            "--network-alias",
            "www",
            &img,
            "sh",
            "-c",
            HTTPD,
        ])
        .unwrap();
    let web_ip = berth
        .inspect("{{.NetworkSettings.Networks.front.IPAddress}}", "web")
        .unwrap();
    assert!(web_ip.starts_with(&format!("172.30.{n}.")), "{web_ip}");
    let dns_names = berth
        .inspect("{{json .NetworkSettings.Networks.front.DNSNames}}", "web")
        .unwrap();
    assert!(
        dns_names.contains("\"web\"") && dns_names.contains("\"www\""),
        "{dns_names}"
    );
    for name in ["web", "www", "WEB"] {
        let out = berth.docker(&[
            "run",
            "--rm",
            "--network",
            "front",
            &img,
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{name}/index.html"),
        ]);
        assert!(
            out.success() && out.stdout.contains("hello from"),
            "{name}: {out}"
        );
    }
    let resolv = berth
        .docker_ok(&[
            "run",
            "--rm",
            "--network",
            "front",
            &img,
            "cat",
            "/etc/resolv.conf",
        ])
        .unwrap();
    assert!(resolv.contains("nameserver 127.0.0.11"), "{resolv}");
    assert!(resolv.contains("ndots:0"), "{resolv}");

    step!("other names go to the upstream resolver (a fake one on {resolver_ip})");
    let out = berth.docker(&[
        "run",
        "--rm",
        "--network",
        "front",
        &img,
        "nslookup",
        "anything.example",
        "127.0.0.11",
    ]);
    assert!(out.stdout.contains("198.51.100.7"), "{out}");

    step!("a container's own --dns is its upstream on a user-defined network");
    let own_ip = format!("127.0.{}.54", 100 + std::process::id() % 100);
    let _own = FakeResolver::start(
        format!("{own_ip}:53").parse().unwrap(),
        "198.51.100.8".parse().unwrap(),
    )
    .unwrap();
    let out = berth.docker(&[
        "run",
        "--rm",
        "--network",
        "front",
        "--dns",
        &own_ip,
        &img,
        "nslookup",
        "anything.example",
        "127.0.0.11",
    ]);
    assert!(out.stdout.contains("198.51.100.8"), "{out}");

    step!("no DNS by name on the default bridge; --dns/--dns-search/--add-host");
    let files = berth
        .docker_ok(&[
            "run",
            "--rm",
            "--dns",
            "192.0.2.53",
            "--dns-search",
            "corp.test",
            "--add-host",
            "db.local:10.1.2.3",
            "--add-host",
            "gw:host-gateway",
            &img,
            "cat",
            "/etc/resolv.conf",
            "/etc/hosts",
        ])
        .unwrap();
    assert!(files.contains("nameserver 192.0.2.53\n"), "{files}");
    assert!(!files.contains("127.0.0.11"), "{files}");
    assert!(files.contains("search corp.test\n"), "{files}");
    assert!(files.contains("10.1.2.3\tdb.local\n"), "{files}");
    assert!(files.contains(&format!("172.29.{n}.1\tgw\n")), "{files}");

    // A legacy link (default bridge) to a container that is not on it: dockerd's words.
    let out = berth.docker(&["run", "--rm", "--link", "web:w", &img, "true"]);
    assert!(
        !out.success()
            && out
                .stderr
                .contains("does not belong to the default network"),
        "{out}"
    );

    step!("networks are isolated; --internal reaches nothing outside; none has only lo");
    let back_subnet = format!("172.31.{n}.0/24");
    berth
        .docker_ok(&[
            "network",
            "create",
            "--internal",
            "--subnet",
            &back_subnet,
            "back",
        ])
        .unwrap();
    let out = berth.docker(&[
        "run",
        "--rm",
        "--network",
        "back",
        &img,
        "ping",
        "-c1",
        "-W1",
        &web_ip,
    ]);
    assert!(!out.success(), "back reached front: {out}");
    // Its embedded DNS answers its own names but forwards nothing (issue 17): the fake
    // upstream would answer 198.51.100.7.
    let out = berth.docker(&[
        "run",
        "--rm",
        "--network",
        "back",
        &img,
        "nslookup",
        "anything.example",
        "127.0.0.11",
    ]);
    assert!(
        !out.stdout.contains("198.51.100.7"),
        "an internal network's DNS forwarded: {out}"
    );
    if let Some(addr) = host_address() {
        let out = berth.docker(&[
            "run",
            "--rm",
            "--network",
            "front",
            &img,
            "ping",
            "-c1",
            "-W2",
            &addr,
        ]);
        assert!(
            out.success(),
            "front could not reach the host's {addr}: {out}"
        );
        let out = berth.docker(&[
            "run",
            "--rm",
            "--network",
            "back",
            &img,
            "ping",
            "-c1",
            "-W1",
            &addr,
        ]);
        assert!(!out.success(), "internal network reached {addr}: {out}");
    }
    let links = berth
        .docker_ok(&["run", "--rm", "--network", "none", &img, "ip", "-o", "link"])
        .unwrap();
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains(": lo:"), "{links}");

    step!("docker network connect / disconnect a running container");
    berth
        .docker_ok(&["network", "connect", "--alias", "api", "back", "web"])
        .unwrap();
    let addrs = berth
        .docker_ok(&["exec", "web", "ip", "-o", "-4", "addr"])
        .unwrap();
    assert!(
        addrs.contains("eth1") && addrs.contains(&format!("172.31.{n}.")),
        "{addrs}"
    );
    let out = berth.docker(&[
        "run",
        "--rm",
        "--network",
        "back",
        &img,
        "wget",
        "-q",
        "-O",
        "-",
        "http://api/index.html",
    ]);
    assert!(out.success() && out.stdout.contains("hello from"), "{out}");
    let members = berth
        .docker_ok(&[
            "network",
            "inspect",
            "-f",
            "{{range .Containers}}{{.Name}} {{end}}",
            "back",
        ])
        .unwrap();
    assert_eq!(members.trim(), "web");
    let out = berth.docker(&["network", "rm", "back"]);
    assert!(!out.success());
    assert!(out.stderr.contains("has active endpoints"), "{out}");
    berth
        .docker_ok(&["network", "disconnect", "back", "web"])
        .unwrap();
    let addrs = berth
        .docker_ok(&["exec", "web", "ip", "-o", "-4", "addr"])
        .unwrap();
    assert!(!addrs.contains("eth1"), "{addrs}");

    step!("--ip on a user-defined network; --network container:<name>");
    let fixed = format!("172.30.{n}.50");
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "fixed",
            "--network",
            "front",
            "--ip",
            &fixed,
            &img,
            "sleep",
            "600",
        ])
        .unwrap();
    assert_eq!(
        berth
            .inspect("{{.NetworkSettings.Networks.front.IPAddress}}", "fixed")
            .unwrap(),
        fixed
    );
    let out = berth.docker(&[
        "run",
        "--rm",
        "--network",
        "front",
        "--ip",
        &fixed,
        &img,
        "true",
    ]);
    assert!(
        !out.success() && out.stderr.contains("Address already in use"),
        "{out}"
    );
    let out = berth.docker(&["run", "--rm", "--ip", "172.29.1.9", &img, "true"]);
    assert!(
        !out.success() && out.stderr.contains("user defined networks only"),
        "{out}"
    );
    let shared = berth
        .docker_ok(&[
            "run",
            "--rm",
            "--network",
            "container:web",
            &img,
            "sh",
            "-c",
            "hostname; wget -q -O - http://127.0.0.1/index.html",
        ])
        .unwrap();
    let web_host = berth.inspect("{{.Config.Hostname}}", "web").unwrap();
    assert_eq!(shared, format!("{web_host}\nhello from {web_host}\n"));
    let out = berth.docker(&[
        "run",
        "--rm",
        "--network",
        "container:web",
        "-p",
        "81:81",
        &img,
        "true",
    ]);
    assert!(
        !out.success() && out.stderr.contains("conflicting options"),
        "{out}"
    );
    berth.docker_ok(&["rm", "-f", "fixed"]).unwrap();

    step!("-p host:container, -p ip:host:container, -P, docker port, docker ps");
    let port = free_port().unwrap();
    let local_port = free_port().unwrap();
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "pub",
            "-p",
            &format!("{port}:80"),
            "-p",
            &format!("127.0.0.1:{local_port}:80/tcp"),
            &img,
            "sh",
            "-c",
            HTTPD,
        ])
        .unwrap();
    let mapping = berth.docker_ok(&["port", "pub", "80"]).unwrap();
    assert!(mapping.contains(&format!("0.0.0.0:{port}")), "{mapping}");
    assert!(
        mapping.contains(&format!("127.0.0.1:{local_port}")),
        "{mapping}"
    );
    let ps = berth
        .docker_ok(&["ps", "--filter", "name=pub", "--format", "{{.Ports}}"])
        .unwrap();
    assert!(ps.contains(&format!("0.0.0.0:{port}->80/tcp")), "{ps}");
    let body = host_get(&format!("http://127.0.0.1:{port}/index.html"));
    assert!(
        body.as_deref().is_some_and(|b| b.contains("hello from")),
        "{body:?}"
    );
    let body = host_get(&format!("http://127.0.0.1:{local_port}/index.html"));
    assert!(body.is_some(), "127.0.0.1-only port");
    if let Some(addr) = host_address() {
        let body = host_get(&format!("http://{addr}:{port}/index.html"));
        assert!(body.is_some(), "published port via {addr}");
        let out = berth.docker(&[
            "run",
            "--rm",
            &img,
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{addr}:{port}/index.html"),
        ]);
        assert!(out.success(), "hairpin from the default bridge: {out}");
        // The container itself, through the host's address: DNAT'd back to its own
        // bridge port (needs hairpin mode; on hosts with br_netfilter, as this one when
        // /proc/sys/net/bridge exists, the bridge refused it before).
        let out = berth.docker(&[
            "exec",
            "pub",
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{addr}:{port}/index.html"),
        ]);
        assert!(
            out.success() && out.stdout.contains("hello from"),
            "a container reaching its own published port: {out}"
        );
        let out = berth.docker(&[
            "run",
            "--rm",
            "--network",
            "front",
            &img,
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{addr}:{port}/index.html"),
        ]);
        assert!(out.success(), "from another network: {out}");
    }
    let out = berth.docker(&["run", "--rm", "-p", &format!("{port}:80"), &img, "true"]);
    assert!(!out.success());
    assert!(out.stderr.contains("port is already allocated"), "{out}");
    berth
        .docker_ok(&[
            "run", "-d", "--name", "random", "--expose", "80", "-P", &img, "sh", "-c", HTTPD,
        ])
        .unwrap();
    let mapping = berth.docker_ok(&["port", "random"]).unwrap();
    let random_port: u16 = mapping
        .lines()
        .find_map(|l| l.strip_prefix("80/tcp -> 0.0.0.0:"))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no -P mapping in {mapping}"));
    assert!(host_get(&format!("http://127.0.0.1:{random_port}/index.html")).is_some());

    step!("-p for udp");
    // busybox has no UDP server; the test listens inside the container's namespace.
    let udp_port = free_port().unwrap();
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "udp",
            "-p",
            &format!("127.0.0.1:{udp_port}:5000/udp"),
            &img,
            "sleep",
            "600",
        ])
        .unwrap();
    let ns = std::fs::File::open(format!(
        "/proc/{}/ns/net",
        berth.container_pid("udp").unwrap()
    ))
    .unwrap();
    let listener = std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let sock = std::net::UdpSocket::bind("0.0.0.0:5000").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = sock
            .recv_from(&mut buf)
            .expect("no datagram through the udp port");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    while !listener.is_finished() {
        let _ = sock.send_to(b"datagram", ("127.0.0.1", udp_port));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(listener.join().unwrap(), "datagram");

    step!("kill -9 of berth-netd keeps an established connection through a published port");
    let nc_port = free_port().unwrap();
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "sink",
            "-p",
            &format!("127.0.0.1:{nc_port}:7000"),
            &img,
            "sh",
            "-c",
            "nc -l -p 7000 > /tmp/got; exec sleep 600",
        ])
        .unwrap();
    let mut conn = None;
    wait_until(Duration::from_secs(10), || {
        conn = std::net::TcpStream::connect(("127.0.0.1", nc_port)).ok();
        conn.is_some()
    });
    let mut conn = conn.expect("connecting to the published nc port");
    conn.write_all(b"before\n").unwrap();
    let old = berth.service_pid("berth-netd").expect("berth-netd runs");
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || berth
            .service_pid("berth-netd")
            .is_some_and(|p| p != old)),
        "berthd did not restart berth-netd"
    );
    conn.write_all(b"after\n").unwrap();
    drop(conn);
    let got = wait_until(Duration::from_secs(10), || {
        berth.docker(&["exec", "sink", "cat", "/tmp/got"]).stdout == "before\nafter\n"
    });
    assert!(
        got,
        "{}",
        berth.docker(&["exec", "sink", "cat", "/tmp/got"])
    );
    // And a new connection after the restart.
    assert!(host_get(&format!("http://127.0.0.1:{port}/index.html")).is_some());

    step!("rm and prune leave no bridge, veth or rule behind");
    let bridges: Vec<String> = ["front", "back", "auto"]
        .iter()
        .map(|net| format!("br-{}", &berth.inspect("{{.Id}}", net).unwrap()[..12]))
        .collect();
    let short_ids: Vec<String> = ["web", "pub", "random", "sink", "udp"]
        .iter()
        .map(|c| berth.inspect("{{.Id}}", c).unwrap()[..12].to_string())
        .collect();
    berth
        .docker_ok(&["rm", "-f", "web", "pub", "random", "sink", "udp"])
        .unwrap();
    // The kernel takes each veth pair down with its namespace, a moment after the rm.
    let links = || {
        let out = std::process::Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_until(Duration::from_secs(5), || {
        let now = links();
        !short_ids.iter().any(|id| now.contains(&format!("vb{id}")))
    });
    let links = links();
    for id in &short_ids {
        assert!(
            !links.contains(&format!("vb{id}")),
            "veth of {id} left:\n{links}"
        );
    }
    let netns_left = std::fs::read_dir(berth.exec_root().join("netns"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(netns_left, 0, "network namespaces left after rm");
    let out = berth.docker(&["network", "rm", "bridge"]);
    assert!(out.stderr.contains("pre-defined network"), "{out}");
    let pruned = berth.docker_ok(&["network", "prune", "-f"]).unwrap();
    for name in ["front", "back", "auto"] {
        assert!(pruned.contains(name), "{pruned}");
    }
    for br in &bridges {
        let out = std::process::Command::new("ip")
            .args(["link", "show", br])
            .output()
            .unwrap();
        assert!(!out.status.success(), "bridge {br} left behind");
    }
    let table = std::process::Command::new("nft")
        .args(["list", "table", "ip", &berth.roots().nft_table()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(!table.contains("dnat to"), "{table}");
    let refused = std::net::TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(2),
    );
    assert!(refused.is_err(), "port {port} still answers after rm");
}
