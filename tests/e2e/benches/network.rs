//! Networking figures of issue 6 against a release-built Berth: create+start of a
//! container on a user-defined network (hyperfine median, with the default bridge beside
//! it), embedded DNS lookup latency by name (UDP queries to 127.0.0.11 sent from inside a
//! container's namespace; median and p99), and TCP throughput from the host through a
//! published port (curl of a 512 MiB file; the container's own address beside it, the
//! path without NAT).
//!
//! Run with `bash bench/network.sh`. With DOCKER_HOST_REF set to another engine's socket
//! the same figures are taken for it in the same run (its image as BENCH_REF_IMAGE).

use anyhow::{Context, Result};
use berth_e2e::bench::{berth_env, docker, hyperfine, runs};
use berth_e2e::registry::free_port;
use berth_e2e::{Berth, registry_with_busybox};
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

const SERVE_BIG: &str =
    "dd if=/dev/zero of=/tmp/big bs=1M count=512 2>/dev/null && exec httpd -f -p 80 -h /tmp";

/// A DNS query for `name` (type A, class IN, recursion desired) with id `id`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Round trips of `count` A queries for `name` to 127.0.0.11:53, sent from inside the
/// network namespace of process `pid` (on a thread of its own: setns moves only it).
fn dns_round_trips(pid: u32, name: &str, count: usize) -> Result<Vec<Duration>> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    let name = name.to_string();
    std::thread::spawn(move || -> Result<Vec<Duration>> {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.set_read_timeout(Some(Duration::from_secs(2)))?;
        sock.connect("127.0.0.11:53")?;
        let mut buf = [0u8; 512];
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let q = query(i as u16, &name);
            let start = Instant::now();
            sock.send(&q)?;
            let n = sock.recv(&mut buf).context("no DNS answer within 2 s")?;
            out.push(start.elapsed());
            anyhow::ensure!(
                n > 12 && buf[..2] == q[..2] && buf[7] >= 1,
                "no answer for {name}"
            );
        }
        Ok(out)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("DNS thread panicked"))?
}

/// Best of three: MiB/s of downloading `url` with curl.
fn throughput(url: &str) -> Result<f64> {
    let mut best = 0.0f64;
    for _ in 0..3 {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{speed_download}", url])
            .output()?;
        anyhow::ensure!(out.status.success(), "curl {url} failed");
        let bps: f64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
        best = best.max(bps / 1_048_576.0);
    }
    Ok(best)
}

fn wait_for(url: &str) {
    for _ in 0..100 {
        let ok = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "--max-time", "2", "-r", "0-0", url])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn figures(label: &str, env: &[(String, String)], img: &str) -> Result<()> {
    let _ = docker(env, &["rm", "-f", "bench-web", "bench-client"]);
    let _ = docker(env, &["network", "rm", "benchnet"]);
    docker(env, &["network", "create", "benchnet"])?;
    let n = runs();
    let on_net = hyperfine(
        env,
        &format!("docker run --rm --network benchnet {img} true"),
        n,
    )?;
    let on_bridge = hyperfine(env, &format!("docker run --rm {img} true"), n)?;

    let port = free_port()?;
    docker(
        env,
        &[
            "run",
            "-d",
            "--name",
            "bench-web",
            "--network",
            "benchnet",
            "-p",
            &format!("{port}:80"),
            img,
            "sh",
            "-c",
            SERVE_BIG,
        ],
    )?;
    docker(
        env,
        &[
            "run",
            "-d",
            "--name",
            "bench-client",
            "--network",
            "benchnet",
            img,
            "sleep",
            "3600",
        ],
    )?;
    let pid: u32 = docker(env, &["inspect", "-f", "{{.State.Pid}}", "bench-client"])?.parse()?;
    let mut rtts = dns_round_trips(pid, "bench-web", 2000)?;
    rtts.sort();
    let median = rtts[rtts.len() / 2].as_secs_f64() * 1e6;
    let p99 = rtts[rtts.len() * 99 / 100].as_secs_f64() * 1e6;

    let ip = docker(
        env,
        &[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.benchnet.IPAddress}}",
            "bench-web",
        ],
    )?;
    let published = format!("http://127.0.0.1:{port}/big");
    wait_for(&published);
    let via_port = throughput(&published)?;
    let direct = throughput(&format!("http://{ip}/big"))?;
    println!(
        "  {label:<6} run --rm on a user network {on_net:7.1} ms (default bridge {on_bridge:7.1} ms) | \
         DNS by name median {median:6.0} us p99 {p99:6.0} us | \
         published port {via_port:7.0} MiB/s (container address {direct:7.0} MiB/s)"
    );
    docker(env, &["rm", "-f", "bench-web", "bench-client"])?;
    docker(env, &["network", "rm", "benchnet"])?;
    Ok(())
}

fn main() -> Result<()> {
    let (_registry, _image, img) = registry_with_busybox()?;
    let berth = Berth::start_full(
        "bench-network",
        &[],
        &[],
        r#"{"default-address-pools": [{"base": "10.214.0.0/16", "size": 24}]}"#,
    )?;
    berth.docker_ok(&["pull", &img])?;
    println!("network (medians):");
    figures("berth", &berth_env(&berth), &img)?;
    if let Ok(host) = std::env::var("DOCKER_HOST_REF") {
        let ref_img = std::env::var("BENCH_REF_IMAGE").unwrap_or_else(|_| "busybox".into());
        figures("ref", &[("DOCKER_HOST".to_string(), host)], &ref_img)?;
    }
    Ok(())
}
