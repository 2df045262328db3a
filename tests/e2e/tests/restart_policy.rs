//! Restart policies with the real CLI: on-failure:N stops after N restarts, always comes
//! back after each exit until `docker stop`, a killed container stays down, policies keep
//! counting across a kill -9 of containerd-svc, and Docker's errors for bad policies.

use berth_e2e::{Berth, registry_with_busybox, step, wait_until};
use std::time::Duration;

fn restarts(berth: &Berth, name: &str) -> u32 {
    berth
        .inspect("{{.RestartCount}}", name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn status(berth: &Berth, name: &str) -> String {
    berth.inspect("{{.State.Status}}", name).unwrap_or_default()
}

#[test]
fn restart_policies() {
    let (_registry, _image, img) = registry_with_busybox().unwrap();
    let berth = Berth::start("restart-policy").unwrap();
    berth.docker_ok(&["pull", &img]).unwrap();

    step!("on-failure:2 restarts a failing container twice, then leaves it exited");
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "flaky",
            "--restart",
            "on-failure:2",
            &img,
            "sh",
            "-c",
            "exit 3",
        ])
        .unwrap();
    let done = wait_until(Duration::from_secs(30), || {
        restarts(&berth, "flaky") == 2 && status(&berth, "flaky") == "exited"
    });
    assert!(
        done,
        "{} restarts, {}",
        restarts(&berth, "flaky"),
        status(&berth, "flaky")
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(restarts(&berth, "flaky"), 2);
    assert_eq!(berth.inspect("{{.State.ExitCode}}", "flaky").unwrap(), "3");
    assert_eq!(
        berth
            .inspect(
                "{{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}}",
                "flaky"
            )
            .unwrap(),
        "on-failure:2"
    );

    step!("always brings a container back after each exit, until docker stop");
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "phoenix",
            "--restart",
            "always",
            &img,
            "sh",
            "-c",
            "sleep 0.3; exit 0",
        ])
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || restarts(&berth, "phoenix") >= 2),
        "always did not restart"
    );
    berth.docker_ok(&["stop", "-t", "1", "phoenix"]).unwrap();
    let stopped_at = restarts(&berth, "phoenix");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(status(&berth, "phoenix"), "exited");
    assert_eq!(
        restarts(&berth, "phoenix"),
        stopped_at,
        "restarted after docker stop"
    );
    // A manual start puts the policy back to work.
    berth.docker_ok(&["start", "phoenix"]).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || restarts(&berth, "phoenix")
            > stopped_at),
        "the policy did not resume after docker start"
    );
    berth.docker_ok(&["rm", "-f", "phoenix"]).unwrap();

    step!("docker kill leaves an always container down");
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "victim",
            "--restart",
            "always",
            &img,
            "sleep",
            "600",
        ])
        .unwrap();
    berth.docker_ok(&["kill", "victim"]).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(status(&berth, "victim"), "exited");
    assert_eq!(restarts(&berth, "victim"), 0);

    step!("kill -9 of containerd-svc: the policy resumes and keeps counting");
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "cycler",
            "--restart",
            "unless-stopped",
            &img,
            "sh",
            "-c",
            "sleep 1; exit 1",
        ])
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || restarts(
        &berth, "cycler"
    ) >= 1));
    berth.kill9_and_wait("berth-containerd").unwrap();
    let before = restarts(&berth, "cycler");
    assert!(before >= 1, "the count was lost: {before}");
    assert!(
        wait_until(Duration::from_secs(30), || restarts(&berth, "cycler")
            >= before + 2),
        "the policy stopped after containerd-svc's restart: {} restarts",
        restarts(&berth, "cycler")
    );
    let ps = berth
        .docker_ok(&[
            "ps",
            "-a",
            "--filter",
            "name=cycler",
            "--format",
            "{{.Status}}",
        ])
        .unwrap();
    assert!(
        ps.starts_with("Up") || ps.starts_with("Restarting (1)"),
        "{ps}"
    );
    berth.docker_ok(&["rm", "-f", "cycler"]).unwrap();

    step!("Docker's errors for bad policies");
    let out = berth.docker(&["run", "--restart", "sometimes", &img, "true"]);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("invalid restart policy"), "{out}");
    let out = berth.docker(&["run", "--rm", "--restart", "always", &img, "true"]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr
            .contains("cannot specify both --restart and --rm"),
        "{out}"
    );
    let out = berth.docker(&["run", "--restart", "always:3", &img, "true"]);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("maximum retry count"), "{out}");
}
