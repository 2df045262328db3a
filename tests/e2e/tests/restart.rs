//! Berth's point: a service crashing never touches a running container. Kill -9 the
//! gateway, then containerd-svc, while a container ticks; berthd restarts each (backoff
//! starts at 100 ms) and afterwards the same container, with the same PID, is still
//! running, and its log is complete: no tick lost or duplicated across the restarts.

use berth_e2e::{berth_with_busybox, step, wait_until};
use berth_e2e::{procs, ticker};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::Duration;

#[test]
fn a_service_crash_leaves_containers_running() {
    let (_registry, _image, img, berth) = berth_with_busybox("restart").unwrap();

    step!("start a container that counts");
    ticker::start(&berth, "ticker", &img, "1").unwrap();
    let container_pid = berth.container_pid("ticker").unwrap();
    assert!(wait_until(Duration::from_secs(10), || ticker::ticks(
        &berth, "ticker"
    )
    .len()
        >= 2));

    for service in ["berth-gateway", "berth-containerd"] {
        step!("kill -9 {service}");
        let old = berth
            .service_pid(service)
            .unwrap_or_else(|| panic!("{service} is not a child of berthd"));
        let seen_before = ticker::ticks(&berth, "ticker").len();
        kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();

        // berthd notices the exit and starts a new process.
        assert!(
            wait_until(Duration::from_secs(15), || berth
                .service_pid(service)
                .is_some_and(|p| p != old)),
            "berthd did not restart {service}"
        );
        // The API works again (for containerd-svc: the gateway reaches the new one).
        assert!(
            wait_until(Duration::from_secs(15), || berth.docker(&["ps"]).success()),
            "docker ps kept failing after {service} restarted: {}",
            berth.docker(&["ps"])
        );

        step!("same container, same PID, still logging after {service} restarted");
        let ps = berth
            .docker_ok(&["ps", "--format", "{{.Names}}\t{{.Status}}"])
            .unwrap();
        assert!(
            ps.lines().any(|l| l.starts_with("ticker\tUp")),
            "ticker not Up after {service} restart:\n{ps}"
        );
        assert_eq!(berth.container_pid("ticker").unwrap(), container_pid);
        assert!(procs::alive(container_pid));
        assert!(
            wait_until(Duration::from_secs(10), || ticker::ticks(&berth, "ticker")
                .len()
                > seen_before + 1),
            "the log stopped growing after {service} restarted"
        );
    }

    step!("no tick was lost or duplicated across both restarts");
    let all = ticker::ticks(&berth, "ticker");
    assert!(
        ticker::whole(&all),
        "the log has gaps or duplicates: {all:?}"
    );
}

/// A rolling upgrade: each service's binary is replaced on disk (a new file, as a package
/// upgrade does) and the service is stopped with SIGTERM; berthd starts the new binary.
/// The container keeps running with the same PID and its log stays whole.
#[test]
fn rolling_upgrade_keeps_containers_running() {
    let (_registry, _image, img, berth) = berth_with_busybox("upgrade").unwrap();
    ticker::start(&berth, "ticker", &img, "0.5").unwrap();
    let container_pid = berth.container_pid("ticker").unwrap();
    for service in [
        "berth-logd",
        "berth-volumed",
        "berth-netd",
        "berth-imaged",
        "berth-containerd",
        "berth-gateway",
    ] {
        step!("upgrade {service}");
        let bin = berth_e2e::berth::binary(service).unwrap();
        let fresh = bin.with_extension("upgrade");
        std::fs::copy(&bin, &fresh).unwrap();
        std::fs::rename(&fresh, &bin).unwrap();
        let old = berth.service_pid(service).unwrap();
        let seen_before = ticker::ticks(&berth, "ticker").len();
        kill(Pid::from_raw(old as i32), Signal::SIGTERM).unwrap();
        assert!(
            wait_until(Duration::from_secs(20), || berth
                .service_pid(service)
                .is_some_and(|p| p != old)),
            "berthd did not start the new {service}"
        );
        let new = berth.service_pid(service).unwrap();
        // The new process runs the replaced file, not the deleted one.
        let exe = std::fs::read_link(format!("/proc/{new}/exe")).unwrap();
        assert!(
            !exe.to_string_lossy().ends_with("(deleted)"),
            "{service} runs {}",
            exe.display()
        );
        assert!(
            wait_until(Duration::from_secs(15), || berth.docker(&["ps"]).success()),
            "docker ps kept failing after upgrading {service}"
        );
        assert_eq!(berth.container_pid("ticker").unwrap(), container_pid);
        assert!(
            wait_until(Duration::from_secs(10), || ticker::ticks(&berth, "ticker")
                .len()
                > seen_before + 1),
            "the log stopped growing after upgrading {service}"
        );
    }
    let all = ticker::ticks(&berth, "ticker");
    assert!(
        ticker::whole(&all),
        "the log has gaps or duplicates: {all:?}"
    );
    berth.docker_ok(&["rm", "-f", "ticker"]).unwrap();
}
