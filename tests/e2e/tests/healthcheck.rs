//! Healthchecks with the real CLI: `--health-cmd/-interval/-timeout/-retries/
//! -start-period`, the status in `docker ps` and `inspect` (Status, FailingStreak, Log),
//! `--filter health=`, `health_status` events, Docker's timeout wording,
//! `--no-healthcheck`, timed-out probes killed, and the streak still counting after
//! kill -9 of containerd-svc.

use berth_e2e::{Berth, berth_with_busybox, step, wait_until};
use std::time::Duration;

fn health(berth: &Berth, name: &str) -> String {
    berth
        .inspect("{{.State.Health.Status}}", name)
        .unwrap_or_default()
}

fn streak(berth: &Berth, name: &str) -> u64 {
    berth
        .inspect("{{.State.Health.FailingStreak}}", name)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Now as `docker events` takes it, to the nanosecond.
fn unix_now() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", t.as_secs(), t.subsec_nanos())
}

#[test]
fn healthchecks() {
    let (_registry, _image, img, berth) = berth_with_busybox("health").unwrap();
    let t0 = unix_now();

    step!("a failing probe makes it unhealthy after the retries; ps and inspect say so");
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "hc",
            "--health-cmd",
            "test -f /tmp/ok && echo fine",
            "--health-interval",
            "300ms",
            "--health-retries",
            "2",
            &img,
            "sleep",
            "1000",
        ])
        .unwrap();
    let ps = berth
        .docker_ok(&["ps", "--format", "{{.Status}}", "--filter", "name=hc"])
        .unwrap();
    assert!(ps.contains("(health: starting)"), "{ps}");
    assert!(
        wait_until(Duration::from_secs(20), || health(&berth, "hc")
            == "unhealthy"),
        "{}",
        health(&berth, "hc")
    );
    assert!(streak(&berth, "hc") >= 2);
    let last = berth
        .inspect("{{(index .State.Health.Log 0).ExitCode}}", "hc")
        .unwrap();
    assert_eq!(last, "1");
    let ps = berth
        .docker_ok(&["ps", "--format", "{{.Status}}", "--filter", "name=hc"])
        .unwrap();
    assert!(ps.contains("(unhealthy)"), "{ps}");

    step!("once the probe passes: healthy, streak reset, output kept, filter and event");
    berth
        .docker_ok(&["exec", "hc", "touch", "/tmp/ok"])
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || health(&berth, "hc")
        == "healthy"));
    assert_eq!(streak(&berth, "hc"), 0);
    let log = berth
        .inspect("{{range .State.Health.Log}}{{.Output}}{{end}}", "hc")
        .unwrap();
    assert!(log.contains("fine"), "{log}");
    let listed = berth
        .docker_ok(&["ps", "--format", "{{.Names}}", "--filter", "health=healthy"])
        .unwrap();
    assert_eq!(listed.trim(), "hc");
    let listed = berth
        .docker_ok(&["ps", "-q", "--filter", "health=unhealthy"])
        .unwrap();
    assert!(listed.trim().is_empty(), "{listed}");
    let bad = berth.docker(&["ps", "--filter", "health=weird"]);
    assert!(!bad.success(), "{bad}");
    let events = berth
        .docker_ok(&[
            "events",
            "--since",
            &t0,
            "--until",
            &unix_now(),
            "--filter",
            "container=hc",
            "--format",
            "{{.Action}}",
        ])
        .unwrap();
    assert!(events.contains("health_status: unhealthy"), "{events}");
    assert!(events.contains("health_status: healthy"), "{events}");

    step!("the failing streak keeps counting across kill -9 of containerd-svc");
    berth.docker_ok(&["exec", "hc", "rm", "/tmp/ok"]).unwrap();
    assert!(wait_until(Duration::from_secs(20), || streak(&berth, "hc") >= 3));
    berth.kill9_and_wait("berth-containerd").unwrap();
    let before = streak(&berth, "hc");
    assert!(before >= 3, "the streak was lost: {before}");
    assert!(
        wait_until(Duration::from_secs(20), || streak(&berth, "hc")
            >= before + 2),
        "probes stopped after the restart: streak {}",
        streak(&berth, "hc")
    );
    assert_eq!(health(&berth, "hc"), "unhealthy");

    step!("--health-start-period: failures inside it do not count, after it they do");
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "warmup",
            "--health-cmd",
            "false",
            "--health-interval",
            "200ms",
            "--health-retries",
            "1",
            "--health-start-period",
            "5s",
            &img,
            "sleep",
            "1000",
        ])
        .unwrap();
    // Several probes fail inside the start period: still starting, no streak.
    assert!(wait_until(Duration::from_secs(10), || berth
        .inspect("{{len .State.Health.Log}}", "warmup")
        .is_ok_and(|n| n.parse::<usize>().unwrap_or(0) >= 3)));
    assert_eq!(health(&berth, "warmup"), "starting");
    assert_eq!(streak(&berth, "warmup"), 0);
    assert!(
        wait_until(Duration::from_secs(20), || health(&berth, "warmup")
            == "unhealthy"),
        "{}",
        health(&berth, "warmup")
    );

    step!("a probe that outlives its timeout: exit -1 and Docker's words");
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "slow",
            "--health-cmd",
            "sleep 5",
            "--health-interval",
            "200ms",
            "--health-timeout",
            "300ms",
            &img,
            "sleep",
            "1000",
        ])
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || berth
        .inspect("{{range .State.Health.Log}}{{.Output}}{{end}}", "slow")
        .is_ok_and(
            |o| o.contains("Health check exceeded timeout (300ms)")
        )));
    let code = berth
        .inspect("{{(index .State.Health.Log 0).ExitCode}}", "slow")
        .unwrap();
    assert_eq!(code, "-1");
    // A probe past its deadline is killed: hung probes do not pile up every interval
    // (each lives 300 ms, one starts every 500 ms).
    std::thread::sleep(Duration::from_secs(3));
    let hung = berth
        .docker_ok(&[
            "exec",
            "slow",
            "sh",
            "-c",
            "ps -o args | grep -c '^sleep 5' || true",
        ])
        .unwrap();
    let hung: u32 = hung.trim().parse().unwrap();
    assert!(hung <= 2, "{hung} timed-out probes still running");

    step!("--no-healthcheck and a plain container have no Health");
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "plain",
            "--no-healthcheck",
            &img,
            "sleep",
            "1000",
        ])
        .unwrap();
    let out = berth.inspect("{{json .State.Health}}", "plain").unwrap();
    assert_eq!(out.trim(), "null", "{out}");
    let ps = berth
        .docker_ok(&["ps", "--format", "{{.Status}}", "--filter", "name=plain"])
        .unwrap();
    assert!(!ps.contains("health"), "{ps}");
    let listed = berth
        .docker_ok(&["ps", "--format", "{{.Names}}", "--filter", "health=none"])
        .unwrap();
    assert_eq!(listed.trim(), "plain");
}
