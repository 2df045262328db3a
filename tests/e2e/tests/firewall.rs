//! The host is no open router (issue 17): a LAN neighbour — a network namespace of the
//! test's own, linked to the host by a veth pair, with a route to the bridge's subnet
//! through the host — reaches a container's published port through the host's address,
//! never its unpublished ones; and the admins' chain (`<TABLE>-USER`, Docker's
//! DOCKER-USER) stops even published traffic.

use berth_e2e::registry::free_port;
use berth_e2e::{berth_with_busybox, step, wait_until};
use std::process::Command;
use std::time::Duration;

fn sh(cmd: &[&str]) -> std::process::Output {
    Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .expect("running a host command")
}

/// The LAN neighbour: removed (with both veth ends) when dropped.
struct Neighbour {
    ns: String,
}

impl Neighbour {
    fn new(ns: &str, host_if: &str, net: u32, bridge_subnet: &str) -> Self {
        let n = Self { ns: ns.into() };
        let host_ip = format!("10.97.{net}.1/24");
        let lan_ip = format!("10.97.{net}.2/24");
        let gw = format!("10.97.{net}.1");
        for cmd in [
            vec!["ip", "netns", "add", ns],
            vec![
                "ip", "link", "add", host_if, "type", "veth", "peer", "name", "lan0", "netns", ns,
            ],
            vec!["ip", "addr", "add", &host_ip, "dev", host_if],
            vec!["ip", "link", "set", host_if, "up"],
            vec!["ip", "-n", ns, "addr", "add", &lan_ip, "dev", "lan0"],
            vec!["ip", "-n", ns, "link", "set", "lan0", "up"],
            vec!["ip", "-n", ns, "link", "set", "lo", "up"],
            vec!["ip", "-n", ns, "route", "add", bridge_subnet, "via", &gw],
        ] {
            let out = sh(&cmd);
            assert!(out.status.success(), "{cmd:?}: {out:?}");
        }
        n
    }

    /// GET `url` from the neighbour (busybox wget, at most 5 s).
    fn get(&self, url: &str) -> Option<String> {
        let out = sh(&[
            "ip", "netns", "exec", &self.ns, "timeout", "5", "busybox", "wget", "-q", "-O", "-",
            url,
        ]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Neighbour {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.ns]);
    }
}

const HTTPD: &str = "echo hello from $(hostname) > /tmp/index.html && exec httpd -f -p 80 -h /tmp";

#[test]
fn lan_neighbours_reach_published_ports_only() {
    let (_registry, _image, img, berth) = berth_with_busybox("firewall").unwrap();
    let port = free_port().unwrap();
    berth
        .docker_ok(&["run", "-d", "--name", "hidden", &img, "sh", "-c", HTTPD])
        .unwrap();
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "shown",
            "-p",
            &format!("{port}:80"),
            &img,
            "sh",
            "-c",
            HTTPD,
        ])
        .unwrap();
    let hidden_ip = berth
        .inspect("{{.NetworkSettings.IPAddress}}", "hidden")
        .unwrap();
    let shown_ip = berth
        .inspect("{{.NetworkSettings.IPAddress}}", "shown")
        .unwrap();
    let net = std::process::id() % 200;
    let subnet = format!("{}0/24", berth.ip_prefix());
    let lan = Neighbour::new(
        &format!("berthlan{}", std::process::id()),
        &format!("bl{}", std::process::id()),
        net,
        &subnet,
    );
    let published = format!("http://10.97.{net}.1:{port}/index.html");

    step!("a published port answers the neighbour through the host's address");
    let mut body = None;
    assert!(
        wait_until(Duration::from_secs(15), || {
            body = lan.get(&published);
            body.is_some()
        }),
        "published port from the LAN"
    );
    assert!(body.unwrap().starts_with("hello from"));

    step!("no container port is reachable directly, published or not");
    for ip in [&hidden_ip, &shown_ip] {
        let direct = lan.get(&format!("http://{ip}/index.html"));
        assert!(
            direct.is_none(),
            "the LAN reached {ip}:80 directly: {direct:?}"
        );
    }
    // The containers themselves still reach each other and the outside's replies come in.
    let out = berth
        .docker_ok(&[
            "exec",
            "shown",
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{hidden_ip}/index.html"),
        ])
        .unwrap();
    assert!(out.starts_with("hello from"), "{out}");

    step!("the admins' chain is there, and a DROP in it stops published traffic too");
    let user = format!("{}-USER", berth.roots().nft_table().to_uppercase());
    assert!(
        sh(&["iptables", "-w", "-S", &user]).status.success(),
        "{user} missing"
    );
    let rule = ["-s", &format!("10.97.{net}.2"), "-j", "DROP"];
    let mut add = vec!["iptables", "-w", "-A", &user];
    add.extend(rule);
    assert!(sh(&add).status.success());
    let blocked = lan.get(&published);
    let mut del = vec!["iptables", "-w", "-D", &user];
    del.extend(rule);
    let _ = sh(&del);
    assert!(
        blocked.is_none(),
        "the admins' DROP was bypassed: {blocked:?}"
    );
    assert!(
        lan.get(&published).is_some(),
        "published again without the DROP"
    );
}
