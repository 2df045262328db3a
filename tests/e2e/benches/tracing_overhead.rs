//! What tracing costs: `docker run --rm busybox true` (and `docker exec`, once exec
//! exists) timed by hyperfine against three Berths side by side in one run: tracing off
//! (no endpoint), on (every request sampled, exported over OTLP/gRPC to a real receiver on
//! loopback) and on with an endpoint nobody listens on. Batches alternate between the
//! three so drift on the machine hits each alike. Prints medians and ratios to "off".
//!
//! Run with `bash bench/tracing-overhead.sh` (release build; needs hyperfine).
//! BENCH_RUNS (default 20) sets the runs per batch, BENCH_ROUNDS (default 3) the batches.

use berth_e2e::{Berth, registry_with_busybox};
use std::process::Command;

fn env_num(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median wall time (ms) of `cmd` over `runs` runs, measured by hyperfine.
fn hyperfine(berth: &Berth, cmd: &str, runs: usize) -> anyhow::Result<Vec<f64>> {
    let out_file = tempfile::NamedTempFile::new()?;
    let probe = berth.docker_command(&["version"]);
    let mut c = Command::new("hyperfine");
    c.args(["--style", "none", "--warmup", "2", "--runs"])
        .arg(runs.to_string())
        .arg("--export-json")
        .arg(out_file.path())
        .arg(cmd);
    // The docker CLI's environment aimed at this Berth.
    for (k, v) in probe.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let status = c.status()?;
    anyhow::ensure!(status.success(), "hyperfine failed for {cmd}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out_file.path())?)?;
    Ok(json["results"][0]["times"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_f64())
                .map(|s| s * 1000.0)
                .collect()
        })
        .unwrap_or_default())
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let runs = env_num("BENCH_RUNS", 20);
    let rounds = env_num("BENCH_ROUNDS", 3);
    let (_registry, _image, img) = registry_with_busybox()?;
    let (receiver, port, _rt) = berth_e2e::otlp::start_receiver()?;
    let dead_port = berth_e2e::registry::free_port()?;
    let modes: Vec<(&str, String)> = vec![
        ("off", "{}".to_string()),
        (
            "on (sampled 1.0)",
            format!(
                r#"{{"tracing": {{"endpoint": "http://127.0.0.1:{port}", "protocol": "grpc", "sampler": "always_on"}}}}"#
            ),
        ),
        (
            "on, unreachable endpoint",
            format!(
                r#"{{"tracing": {{"endpoint": "http://127.0.0.1:{dead_port}", "protocol": "grpc", "sampler": "always_on"}}}}"#
            ),
        ),
    ];
    let mut berths = Vec::new();
    for (i, (_, json)) in modes.iter().enumerate() {
        let b = Berth::start_full(&format!("bench-tracing-{i}"), &[], &[], json)?;
        b.docker_ok(&["pull", &img])?;
        b.docker_ok(&["run", "-d", "--name", "idle", &img, "sleep", "3600"])?;
        berths.push(b);
    }
    let exec_works = berths[0].docker(&["exec", "idle", "true"]).success();
    let mut commands = vec![("run --rm true", format!("docker run --rm {img} true"))];
    if exec_works {
        commands.push(("exec true", "docker exec idle true".to_string()));
    }
    println!("tracing overhead: {rounds} rounds x {runs} runs per mode, medians in ms");
    for (label, cmd) in &commands {
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        for _ in 0..rounds {
            for (i, b) in berths.iter().enumerate() {
                times[i].extend(hyperfine(b, cmd, runs)?);
            }
        }
        let base = median(times[0].clone());
        for (i, (mode, _)) in modes.iter().enumerate() {
            let m = median(times[i].clone());
            println!(
                "  {label:<14} {mode:<26} {m:8.1} ms  x{:.3} of off",
                m / base
            );
        }
    }
    if !exec_works {
        println!("  exec true      (not measured: docker exec is not supported yet)");
    }
    let spans = receiver.0.lock().map(|s| s.len()).unwrap_or(0);
    println!("  spans received by the OTLP receiver: {spans}");
    for b in &berths {
        let _ = b.docker(&["rm", "-f", "idle"]);
    }
    Ok(())
}
