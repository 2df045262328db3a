//! Log and event figures of issue 7 against a release-built Berth: `docker logs` of a
//! 64 MiB log (MiB/s, hyperfine median), `docker logs --tail 10` on a 1 GiB log (ms; it
//! must not depend on the size), and `docker events` latency (from the event's own time
//! to the CLI printing it; median of 50 network create/rm events), and `docker system
//! df` (plain and -v) with 100 containers and 20 volumes.
//!
//! Run with `bash bench/logs.sh` (BENCH_BIG_MIB overrides the 1024 MiB of the big log).
//! With DOCKER_HOST_REF set to another engine's socket the same figures are taken for it
//! in the same run (its image as BENCH_REF_IMAGE).

use anyhow::Result;
use berth_e2e::bench::{berth_env, docker, hyperfine, runs};
use berth_e2e::{Berth, registry_with_busybox};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A container that writes `mib` MiB of 100-byte lines to stdout, then sleeps.
fn writer(env: &[(String, String)], img: &str, name: &str, mib: u64) -> Result<()> {
    let _ = docker(env, &["rm", "-f", name]);
    let script = format!(
        "yes 'the quick brown fox jumps over the lazy dog, again and again, line after line, until enough' \
         | head -c {} ; exec sleep 3600",
        mib << 20
    );
    docker(
        env,
        &[
            "run",
            "-d",
            "--name",
            name,
            "--log-opt",
            "max-size=100g",
            img,
            "sh",
            "-c",
            &script,
        ],
    )?;
    // Written once the last line is readable: the log's size stops growing.
    let mut last = String::new();
    for _ in 0..1200 {
        std::thread::sleep(Duration::from_millis(500));
        let now = docker(env, &["inspect", "-f", "{{.LogPath}}", name])
            .ok()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.len().to_string())
            .unwrap_or_default();
        if !now.is_empty() && now == last {
            return Ok(());
        }
        last = now;
    }
    anyhow::bail!("{name} never finished writing")
}

fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Median latency (ms) of `docker events` for network create/rm events.
fn event_latency(env: &[(String, String)]) -> Result<f64> {
    let mut follower = Command::new("docker")
        .args([
            "events",
            "--filter",
            "type=network",
            "--format",
            "{{.TimeNano}}",
        ])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = follower
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel::<i64>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            if let Ok(t) = line.trim().parse::<i64>() {
                let _ = tx.send(unix_nanos() - t);
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut lat = Vec::new();
    for i in 0..25 {
        let name = format!("bench-ev-{i}");
        docker(env, &["network", "create", &name])?;
        docker(env, &["network", "rm", &name])?;
    }
    while lat.len() < 50 {
        lat.push(rx.recv_timeout(Duration::from_secs(10))? as f64 / 1e6);
    }
    let _ = follower.kill();
    lat.sort_by(f64::total_cmp);
    Ok(lat[lat.len() / 2])
}

fn figures(label: &str, env: &[(String, String)], img: &str) -> Result<()> {
    let n = runs().min(10);
    writer(env, img, "bench-log64", 64)?;
    let full = hyperfine(env, "docker logs bench-log64 > /dev/null", n)?;
    let big_mib: u64 = std::env::var("BENCH_BIG_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    writer(env, img, "bench-logbig", big_mib)?;
    let tail_big = hyperfine(env, "docker logs --tail 10 bench-logbig > /dev/null", n)?;
    let tail_small = hyperfine(env, "docker logs --tail 10 bench-log64 > /dev/null", n)?;
    let events = event_latency(env)?;
    docker(env, &["rm", "-f", "bench-log64", "bench-logbig"])?;
    let (df, df_v) = system_df(env, img, n)?;
    println!(
        "  {label:<6} logs 64 MiB {full:8.1} ms ({:6.1} MiB/s) | --tail 10: {big_mib} MiB log {tail_big:6.1} ms, 64 MiB log {tail_small:6.1} ms | events latency median {events:5.2} ms | system df (100 containers, 20 volumes) {df:6.1} ms, -v {df_v:6.1} ms",
        64.0 / (full / 1000.0)
    );
    Ok(())
}

/// `docker system df` and `docker system df -v` with 100 containers (each wrote 10 kB)
/// and 20 volumes (10 kB each).
fn system_df(env: &[(String, String)], img: &str, n: usize) -> Result<(f64, f64)> {
    for i in 0..100 {
        let name = format!("bench-df-{i}");
        let volume = format!("bench-dfv-{}:/data", i % 20);
        docker(
            env,
            &[
                "run",
                "--name",
                &name,
                "-v",
                &volume,
                img,
                "sh",
                "-c",
                "dd if=/dev/zero of=/root/f bs=1000 count=10 2>/dev/null; cp /root/f /data/f",
            ],
        )?;
    }
    let df = hyperfine(env, "docker system df > /dev/null", n)?;
    let df_v = hyperfine(env, "docker system df -v > /dev/null", n)?;
    let names: Vec<String> = (0..100).map(|i| format!("bench-df-{i}")).collect();
    let mut rm = vec!["rm", "-f"];
    rm.extend(names.iter().map(String::as_str));
    docker(env, &rm)?;
    let vols: Vec<String> = (0..20).map(|i| format!("bench-dfv-{i}")).collect();
    let mut rmv = vec!["volume", "rm"];
    rmv.extend(vols.iter().map(String::as_str));
    docker(env, &rmv)?;
    Ok((df, df_v))
}

fn main() -> Result<()> {
    let (_registry, _image, img) = registry_with_busybox()?;
    let berth = Berth::start("bench-logs")?;
    berth.docker_ok(&["pull", &img])?;
    println!("logs and events (medians):");
    figures("berth", &berth_env(&berth), &img)?;
    if let Ok(host) = std::env::var("DOCKER_HOST_REF") {
        let ref_img = std::env::var("BENCH_REF_IMAGE").unwrap_or_else(|_| "busybox".into());
        figures("ref", &[("DOCKER_HOST".to_string(), host)], &ref_img)?;
    }
    Ok(())
}
