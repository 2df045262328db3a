//! Chaos: a mixed docker workload runs while a random service is killed with `kill -9`
//! every few seconds (berthd restarts it). Afterwards: the long-running container was
//! never stopped or restarted (same PID), its log has every line exactly once, nothing
//! leaked (containers, snapshots, mounts, netns, veths, cgroups), and every failed
//! command failed the allowed way: the daemon unreachable while the gateway restarts, or
//! a 503 naming the service that was down. Never a hang, never another error.
//!
//! The run lasts `BERTH_CHAOS_SECS` seconds (default 60: the suite's short run;
//! `bench/chaos.sh` runs ten minutes) and prints its figures.

#![allow(clippy::unwrap_used)]

use berth_e2e::{Berth, registry_with_busybox, step, ticker, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_e2e::berth::SERVICE_BINARIES as SERVICES;

/// Longest any single command may take: longer is a hang.
const HANG: Duration = Duration::from_secs(60);

/// A small deterministic generator (xorshift), seeded from the clock; the seed is printed
/// so a failing run can be replayed with BERTH_CHAOS_SEED.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Default)]
struct Tally {
    ops: BTreeMap<&'static str, u64>,
    ok: u64,
    /// Allowed failures, by kind.
    allowed: BTreeMap<String, u64>,
    /// Everything else: each is a bug.
    bad: Vec<String>,
}

/// How a failed command failed: `Ok(kind)` if allowed, `Err(text)` if not.
fn classify(out: &berth_e2e::Output) -> Result<String, String> {
    let err = out.stderr.as_str();
    if out.code == -1 {
        return Err(format!("hang (> {}s): {err}", HANG.as_secs()));
    }
    if err.contains("Cannot connect to the Docker daemon")
        || err.contains("EOF")
        || err.contains("connection reset by peer")
        || err.contains("broken pipe")
        || err.contains("connection refused")
    {
        return Ok("gateway unreachable".into());
    }
    // The CLI prints only the status of a refused upgrade (attach, exec start), never its
    // body: the gateway's 503 names the service there, the CLI does not show it.
    if err.contains("unable to upgrade to tcp, received 503") {
        return Ok("503 on an upgrade".into());
    }
    for svc in ["imaged", "containerd", "netd", "volumed", "logd"] {
        if err.contains(&format!("the {svc} service is unavailable")) {
            return Ok(format!("503 {svc}"));
        }
    }
    Err(format!("exit {}: {}", out.code, err.trim()))
}

fn record(t: &Mutex<Tally>, op: &'static str, out: &berth_e2e::Output) {
    let mut t = t.lock().unwrap();
    *t.ops.entry(op).or_default() += 1;
    if out.success() {
        t.ok += 1;
        return;
    }
    match classify(out) {
        Ok(kind) => *t.allowed.entry(kind).or_default() += 1,
        Err(text) => t.bad.push(format!("{op}: {text}")),
    }
}

/// The gateway sweeps orphans every 30 s (`berth_gateway::orphans::SWEEP_EVERY`).
fn berth_gateway_sweep_period() -> Duration {
    Duration::from_secs(30)
}

fn entries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn services_killed_at_random_lose_nothing() {
    let secs: u64 = std::env::var("BERTH_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("BERTH_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("chaos: {secs}s, seed {seed}");
    let (_registry, _image, img) = registry_with_busybox().unwrap();
    let berth = Arc::new(Berth::start("chaos").unwrap());
    berth.docker_ok(&["pull", &img]).unwrap();

    step!("a long-running container that counts");
    let ticker_id = ticker::start(&berth, "ticker", &img, "0.2").unwrap();
    let ticker_pid = berth.container_pid("ticker").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let kills: Arc<Mutex<BTreeMap<&'static str, u64>>> = Arc::default();

    step!("the killer: kill -9 of a random service every 2-4 s");
    let killer = {
        let (berth, stop, kills) = (berth.clone(), stop.clone(), kills.clone());
        std::thread::spawn(move || {
            let mut rng = Rng(seed);
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(2000 + rng.below(2000)));
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let svc = SERVICES[rng.below(SERVICES.len() as u64) as usize];
                if let Some(pid) = berth.service_pid(svc) {
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    *kills.lock().unwrap().entry(svc).or_default() += 1;
                }
            }
        })
    };

    step!("a follower: docker logs -f ticker, started again whenever it ends");
    let follower = {
        let (berth, stop) = (berth.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut restarts = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let child = berth
                    .docker_command(&["logs", "-f", "--tail", "1", "ticker"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn();
                let Ok(mut child) = child else { break };
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = child.kill();
                let _ = child.wait();
                restarts += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            restarts
        })
    };

    step!("the workload");
    let started = Instant::now();
    let mut rng = Rng(seed.rotate_left(17) | 1);
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        n += 1;
        let d = |args: &[&str]| berth.docker_within(args, HANG);
        match rng.below(7) {
            0 => {
                let token = format!("token-{n}");
                let out = d(&["run", "--rm", &img, "echo", &token]);
                if out.success() && !out.stdout.contains(&token) {
                    tally
                        .lock()
                        .unwrap()
                        .bad
                        .push(format!("run --rm printed {:?}, not {token}", out.stdout));
                }
                record(&tally, "run --rm", &out);
            }
            1 => {
                let name = format!("c{n}");
                let out = d(&["run", "-d", "--name", &name, &img, "sleep", "300"]);
                record(&tally, "run -d", &out);
                let out = d(&["rm", "-f", &name]);
                // The run may have failed before the container existed.
                if !out.stderr.contains("No such container") {
                    record(&tally, "rm -f", &out);
                }
            }
            2 => record(&tally, "pull", &d(&["pull", "-q", &img])),
            3 => {
                let name = format!("v{n}");
                record(&tally, "volume create", &d(&["volume", "create", &name]));
                let out = d(&["volume", "rm", &name]);
                if !out.stderr.contains("no such volume") {
                    record(&tally, "volume rm", &out);
                }
            }
            4 => record(
                &tally,
                "logs --tail",
                &d(&["logs", "--tail", "3", "ticker"]),
            ),
            5 => {
                let token = format!("exec-{n}");
                let out = d(&["exec", "ticker", "echo", &token]);
                if out.success() && out.stdout.trim() != token {
                    tally
                        .lock()
                        .unwrap()
                        .bad
                        .push(format!("exec printed {:?}, not {token}", out.stdout));
                }
                record(&tally, "exec", &out);
            }
            _ => record(&tally, "ps -a", &d(&["ps", "-a"])),
        }
    }
    stop.store(true, Ordering::SeqCst);
    killer.join().unwrap();
    let follower_restarts = follower.join().unwrap();

    step!("all services back");
    assert!(
        wait_until(Duration::from_secs(30), || berth
            .docker(&["info"])
            .success()
            && SERVICES.iter().all(|s| berth.service_pid(s).is_some())),
        "Berth did not come back: {}",
        berth.log()
    );
    // Let every restarted service finish its reconcile and the reaper its sweep.
    assert!(wait_until(Duration::from_secs(30), || {
        let info = berth.docker(&["info", "--format", "{{json .Warnings}}"]);
        info.success() && !info.stdout.contains("unavailable")
    }));

    step!("leftovers of interrupted commands are removable, then only the ticker remains");
    let names = berth
        .docker_ok(&["ps", "-a", "--format", "{{.Names}}"])
        .unwrap();
    for name in names.lines().filter(|n| *n != "ticker") {
        let _ = berth.docker(&["rm", "-f", name]);
    }
    assert!(
        wait_until(Duration::from_secs(30), || berth
            .docker_ok(&["ps", "-aq", "--no-trunc"])
            .is_ok_and(|ids| ids.trim() == ticker_id)),
        "containers left: {}",
        berth.docker(&["ps", "-a"])
    );

    step!("the ticker was never stopped or restarted and its log is whole");
    assert_eq!(berth.container_pid("ticker").unwrap(), ticker_pid);
    assert!(berth_e2e::procs::alive(ticker_pid));
    let logs = berth.docker_ok(&["logs", "ticker"]).unwrap();
    let seen = ticker::parse(&logs);
    assert!(seen.len() as u64 >= secs, "only {} ticks", seen.len());
    if !ticker::whole(&seen) {
        let dups = seen.len() - {
            let mut s = seen.clone();
            s.sort();
            s.dedup();
            s.len()
        };
        panic!(
            "the ticker's log has gaps or duplicates ({} lines, {dups} duplicates)",
            seen.len()
        );
    }

    step!("nothing leaked (the gateway's sweep releases what cut-short creates left)");
    let data = berth.data_root();
    let snapshots_dir = data.join("imaged/snapshots");
    let netns_dir = berth.exec_root().join("netns");
    let swept = wait_until(
        // Two sweeps and a margin: on a loaded machine (the whole suite on two cores) a
        // sweep's calls can miss their deadlines once.
        2 * berth_gateway_sweep_period() + Duration::from_secs(30),
        || entries(&snapshots_dir) == vec![ticker_id.clone()] && entries(&netns_dir).len() == 1,
    );
    assert!(
        swept,
        "snapshots {:?}, netns {:?}",
        entries(&snapshots_dir),
        entries(&netns_dir)
    );
    let overlays: Vec<_> =
        berth_e2e::procs::mountinfo(std::path::Path::new("/proc/self/mountinfo"))
            .into_iter()
            .filter(|m| {
                m.mount_point.starts_with(data) || m.mount_point.starts_with(berth.exec_root())
            })
            .filter(|m| m.fstype == "overlay")
            .collect();
    assert_eq!(overlays.len(), 1, "overlay mounts: {overlays:?}");
    let bridge = berth.roots().bridge_name();
    // A removed container's veth pair goes with its namespace, a moment after the rm.
    let veths = || {
        let out = std::process::Command::new("ip")
            .args(["-o", "link", "show", "master", &bridge])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    wait_until(Duration::from_secs(5), || veths() == 1);
    assert_eq!(veths(), 1, "veths on {bridge}");
    let parent = berth.roots().cgroup_parent();
    let mut cgroups = Vec::new();
    for root in [
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/pids",
    ] {
        let dir = std::path::Path::new(root).join(&parent);
        cgroups.extend(entries(&dir).into_iter().filter(|e| e.len() == 64));
    }
    cgroups.sort();
    cgroups.dedup();
    assert_eq!(cgroups, vec![ticker_id.clone()], "cgroups under {parent}");
    let volumes = berth.docker_ok(&["volume", "ls", "-q"]).unwrap();
    for v in volumes.lines() {
        berth.docker_ok(&["volume", "rm", v]).unwrap();
    }

    let t = tally.lock().unwrap();
    let kills = kills.lock().unwrap();
    let total_ops: u64 = t.ops.values().sum();
    eprintln!(
        "chaos figures: {secs}s, seed {seed}\n  operations: {total_ops} ({} ok) {:?}\n  kills: {} {:?}\n  allowed failures: {:?}\n  follower restarts: {follower_restarts}\n  ticker lines: {} (lost 0, doubled 0)\n  bad: {}",
        t.ok,
        t.ops,
        kills.values().sum::<u64>(),
        *kills,
        t.allowed,
        seen.len(),
        t.bad.len()
    );
    assert!(
        kills.values().sum::<u64>() >= secs / 5,
        "too few kills: {kills:?}"
    );
    assert!(
        t.bad.is_empty(),
        "failures that are not allowed:\n{}",
        t.bad.join("\n")
    );
    berth.docker_ok(&["rm", "-f", "ticker"]).unwrap();
}
