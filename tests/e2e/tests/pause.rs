//! `docker pause` / `docker unpause` with the real CLI: the processes really stop (a
//! counter inside stands still), ps/inspect/events say so, exec and rm refuse with
//! Docker's words, and stop works on a paused container.

use berth_e2e::{Berth, berth_with_busybox, step, wait_until};
use std::time::Duration;

/// The counter the container writes, read through its root from the host.
fn counter(berth: &Berth, name: &str) -> u64 {
    let pid = berth.container_pid(name).expect("pid");
    std::fs::read_to_string(format!("/proc/{pid}/root/tmp/n"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn docker_pause() {
    let (_registry, _image, img, berth) = berth_with_busybox("pause").unwrap();
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "ticker",
            &img,
            "sh",
            "-c",
            "i=0; while :; do i=$((i+1)); echo $i > /tmp/n; sleep 0.05; done",
        ])
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || counter(
        &berth, "ticker"
    ) > 3));

    step!("pause freezes every process; ps, inspect and events say so");
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    berth.docker_ok(&["pause", "ticker"]).unwrap();
    let frozen = counter(&berth, "ticker");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        counter(&berth, "ticker"),
        frozen,
        "the counter moved while paused"
    );
    assert_eq!(
        berth
            .inspect(
                "{{.State.Status}} {{.State.Paused}} {{.State.Running}}",
                "ticker"
            )
            .unwrap(),
        "paused true true"
    );
    let ps = berth
        .docker_ok(&["ps", "--filter", "name=ticker", "--format", "{{.Status}}"])
        .unwrap();
    assert!(ps.trim().ends_with("(Paused)"), "{ps}");

    step!("Docker's errors while paused");
    let out = berth.docker(&["pause", "ticker"]);
    assert!(out.stderr.contains("is already paused"), "{out}");
    let out = berth.docker(&["exec", "ticker", "true"]);
    assert!(
        out.stderr
            .contains("is paused, unpause the container before exec"),
        "{out}"
    );
    let out = berth.docker(&["rm", "ticker"]);
    assert!(
        out.stderr.contains("paused and must be unpaused first"),
        "{out}"
    );
    let out = berth.docker(&["start", "ticker"]);
    assert!(!out.success(), "{out}");

    step!("unpause lets it run on");
    berth.docker_ok(&["unpause", "ticker"]).unwrap();
    assert!(wait_until(Duration::from_secs(10), || counter(
        &berth, "ticker"
    ) > frozen + 3));
    let out = berth.docker(&["unpause", "ticker"]);
    assert!(out.stderr.contains("is not paused"), "{out}");
    let now = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1)
    .to_string();
    let events = berth
        .docker_ok(&[
            "events",
            "--since",
            &t0,
            "--until",
            &now,
            "--filter",
            "container=ticker",
            "--filter",
            "event=pause",
            "--filter",
            "event=unpause",
            "--format",
            "{{.Action}}",
        ])
        .unwrap();
    assert_eq!(events.lines().collect::<Vec<_>>(), ["pause", "unpause"]);

    step!("stop and rm -f work on a paused container");
    berth.docker_ok(&["pause", "ticker"]).unwrap();
    berth.docker_ok(&["stop", "-t", "1", "ticker"]).unwrap();
    assert_eq!(
        berth.inspect("{{.State.Status}}", "ticker").unwrap(),
        "exited"
    );
    berth
        .docker_ok(&["run", "-d", "--name", "frozen", &img, "sleep", "600"])
        .unwrap();
    berth.docker_ok(&["pause", "frozen"]).unwrap();
    berth.docker_ok(&["rm", "-f", "frozen"]).unwrap();
    assert_eq!(berth.docker_ok(&["ps", "-q"]).unwrap(), "");
}
