//! Container figures of issue 4, timed by hyperfine against a release-built Berth:
//! `docker run --rm busybox true` (median of BENCH_RUNS, default 20), ten of those in
//! parallel, `docker exec <running> true`; and the resident memory of one idle shim and
//! of containerd-svc with 50 running containers (from /proc/<pid>/status).
//!
//! Run with `bash bench/containers.sh`. With DOCKER_HOST_REF set to another engine's
//! socket (e.g. unix:///run/docker.sock), the same commands are timed against it in the
//! same run, side by side (the image must be loadable there as BENCH_REF_IMAGE).

use berth_e2e::bench::{berth_env, hyperfine, pss_kib, rss_kib, runs, status_kib};
use berth_e2e::{Berth, registry_with_busybox};
use std::process::Command;

fn time_all(label: &str, env: &[(String, String)], img: &str, idle: &str) -> anyhow::Result<()> {
    let n = runs();
    let run = hyperfine(env, &format!("docker run --rm {img} true"), n)?;
    let par = hyperfine(
        env,
        &format!("for i in 1 2 3 4 5 6 7 8 9 10; do docker run --rm {img} true & done; wait"),
        (n / 4).max(3),
    )?;
    let exec = hyperfine(env, &format!("docker exec {idle} true"), n)?;
    println!(
        "  {label:<8} run --rm true {run:8.1} ms | 10 in parallel {par:8.1} ms | exec true {exec:7.1} ms"
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let (_registry, _image, img) = registry_with_busybox()?;
    let berth = Berth::start("bench-containers")?;
    berth.docker_ok(&["pull", &img])?;
    berth.docker_ok(&["run", "-d", "--name", "idle", &img, "sleep", "3600"])?;
    println!("containers (medians; hyperfine):");
    time_all("berth", &berth_env(&berth), &img, "idle")?;
    if let Ok(host) = std::env::var("DOCKER_HOST_REF") {
        let ref_img = std::env::var("BENCH_REF_IMAGE").unwrap_or_else(|_| "busybox".into());
        let env = vec![("DOCKER_HOST".to_string(), host.clone())];
        let ok = Command::new("docker")
            .args([
                "run",
                "-d",
                "--name",
                "bench-idle",
                &ref_img,
                "sleep",
                "3600",
            ])
            .env("DOCKER_HOST", &host)
            .status()?
            .success();
        if ok {
            time_all("ref", &env, &ref_img, "bench-idle")?;
            let _ = Command::new("docker")
                .args(["rm", "-f", "bench-idle"])
                .env("DOCKER_HOST", &host)
                .status();
        }
    }

    for i in 0..49 {
        berth.docker_ok(&[
            "run",
            "-d",
            "--name",
            &format!("s{i}"),
            &img,
            "sleep",
            "3600",
        ])?;
    }
    // An idle shim: the first of the sleepers, never exec'd into, idle for a while
    // (a shim sheds its start-up pages a second after the start, then every 10 s).
    let shim = berth_e2e::procs::parent_pid(berth.container_pid("s0")?)
        .ok_or_else(|| anyhow::anyhow!("the container has no parent"))?;
    println!(
        "  idle shim RSS: {} KiB (anonymous {} KiB, PSS {} KiB)",
        rss_kib(shim),
        status_kib(shim, "RssAnon:"),
        pss_kib(shim)
    );
    let containerd = berth
        .service_pid("berth-containerd")
        .ok_or_else(|| anyhow::anyhow!("containerd-svc not running"))?;
    println!(
        "  containerd-svc RSS with 50 running containers: {} KiB",
        rss_kib(containerd)
    );
    let mut services = Vec::new();
    for s in berth_e2e::berth::SERVICE_BINARIES {
        if let Some(p) = berth.service_pid(s) {
            services.push(format!("{s} {}", rss_kib(p)));
        }
    }
    println!(
        "  services RSS (KiB) with 50 running: {}",
        services.join(", ")
    );
    let mut all = vec!["rm".to_string(), "-f".to_string(), "idle".to_string()];
    all.extend((0..49).map(|i| format!("s{i}")));
    let args: Vec<&str> = all.iter().map(String::as_str).collect();
    berth.docker_ok(&args)?;
    Ok(())
}
