//! Helpers shared by the benchmarks (`tests/e2e/benches`): hyperfine medians, resident
//! memory, and the environment that aims the docker CLI at an engine.

use crate::Berth;
use anyhow::{Context, Result};
use std::process::Command;

/// Runs per measurement: BENCH_RUNS, default 20.
pub fn runs() -> usize {
    std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// Median wall time in ms of `cmd` (a shell command) with `env` applied.
pub fn hyperfine(env: &[(String, String)], cmd: &str, runs: usize) -> Result<f64> {
    hyperfine_prepared(env, None, cmd, runs)
}

/// As [`hyperfine`], running `prepare` (untimed) before each run of `cmd`.
pub fn hyperfine_prepared(
    env: &[(String, String)],
    prepare: Option<&str>,
    cmd: &str,
    runs: usize,
) -> Result<f64> {
    let out = tempfile::NamedTempFile::new()?;
    let mut c = Command::new("hyperfine");
    c.args(["--style", "none", "--warmup", "2", "--runs"])
        .arg(runs.to_string())
        .arg("--export-json")
        .arg(out.path());
    if let Some(p) = prepare {
        c.arg("--prepare").arg(p);
    }
    c.arg(cmd).envs(env.iter().map(|(k, v)| (k, v)));
    anyhow::ensure!(c.status()?.success(), "hyperfine failed: {cmd}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.path())?)?;
    json["results"][0]["median"]
        .as_f64()
        .map(|s| s * 1000.0)
        .with_context(|| format!("no median for {cmd}"))
}

/// VmRSS of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A KiB figure of `/proc/<pid>/status` (`VmRSS:`, `RssAnon:`, ...); 0 if unreadable.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    kib_field(&format!("/proc/{pid}/status"), field)
}

/// The proportional set size (shared pages divided among their users), in KiB.
pub fn pss_kib(pid: u32) -> u64 {
    kib_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

fn kib_field(file: &str, field: &str) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// The environment that points the docker CLI at `berth`.
pub fn berth_env(berth: &Berth) -> Vec<(String, String)> {
    berth
        .docker_command(&["version"])
        .get_envs()
        .filter_map(|(k, v)| {
            Some((
                k.to_string_lossy().into_owned(),
                v?.to_string_lossy().into_owned(),
            ))
        })
        .collect()
}

/// `docker <args>` with `env`; its stdout, or an error with its stderr.
pub fn docker(env: &[(String, String)], args: &[&str]) -> Result<String> {
    let out = Command::new("docker")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
