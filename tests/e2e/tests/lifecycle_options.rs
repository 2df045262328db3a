//! More `docker run` options and lifecycle commands, each checked the way a user sees
//! it: --entrypoint, --env-file, --cpuset-cpus (inside and on the cgroup), --stop-signal
//! and --stop-timeout (what `docker stop` sends, and the SIGKILL after the timeout),
//! `docker kill -s`, `docker ps -n`, and OOMKilled for a container past --memory.

use berth_e2e::{Berth, berth_with_busybox, step};
use std::time::{Duration, Instant};

fn inspect(berth: &Berth, format: &str, name: &str) -> String {
    berth.inspect(format, name).expect("docker inspect")
}

#[test]
fn lifecycle_options() {
    let (_registry, _image, img, berth) = berth_with_busybox("lifecycle").unwrap();

    step!("--entrypoint replaces the image's, the command becomes its arguments");
    let out = berth
        .docker_ok(&[
            "run",
            "--rm",
            "--entrypoint",
            "echo",
            &img,
            "from",
            "entrypoint",
        ])
        .unwrap();
    assert_eq!(out, "from entrypoint\n");

    step!("--env-file: KEY=value lines, comments skipped, a bare KEY taken from the CLI's env");
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("app.env");
    std::fs::write(&env_file, "# settings\nGREETING=hello world\nEMPTY=\n").unwrap();
    let out = berth
        .docker_ok(&[
            "run",
            "--rm",
            "--env-file",
            &env_file.display().to_string(),
            &img,
            "sh",
            "-c",
            "echo \"$GREETING|${EMPTY-unset}\"",
        ])
        .unwrap();
    assert_eq!(out, "hello world|\n");

    step!("--cpuset-cpus pins the container (its status and its cgroup)");
    let id = berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "pinned",
            "--cpuset-cpus",
            "0",
            &img,
            "sleep",
            "100",
        ])
        .unwrap();
    let id = id.trim();
    let out = berth
        .docker_ok(&[
            "exec",
            "pinned",
            "grep",
            "Cpus_allowed_list",
            "/proc/self/status",
        ])
        .unwrap();
    assert!(
        out.trim().ends_with("\t0") || out.trim().ends_with(" 0"),
        "{out:?}"
    );
    assert_eq!(inspect(&berth, "{{.HostConfig.CpusetCpus}}", "pinned"), "0");
    let parent = berth.roots().cgroup_parent();
    let v1 = std::path::Path::new("/sys/fs/cgroup/cpuset")
        .join(&parent)
        .join(id)
        .join("cpuset.cpus");
    let v2 = std::path::Path::new("/sys/fs/cgroup")
        .join(&parent)
        .join(id)
        .join("cpuset.cpus");
    let cpus = std::fs::read_to_string(&v1).or_else(|_| std::fs::read_to_string(&v2));
    assert_eq!(cpus.unwrap().trim(), "0");

    step!("--stop-signal: docker stop sends it (the container traps it and says so)");
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "usr1",
            "--stop-signal",
            "SIGUSR1",
            &img,
            "sh",
            "-c",
            "trap 'echo got-usr1; exit 7' USR1; while true; do sleep 0.1; done",
        ])
        .unwrap();
    assert_eq!(inspect(&berth, "{{.Config.StopSignal}}", "usr1"), "SIGUSR1");
    std::thread::sleep(Duration::from_millis(300));
    berth.docker_ok(&["stop", "usr1"]).unwrap();
    assert_eq!(inspect(&berth, "{{.State.ExitCode}}", "usr1"), "7");
    let logs = berth.docker_ok(&["logs", "usr1"]).unwrap();
    assert!(logs.contains("got-usr1"), "{logs:?}");

    step!("--stop-timeout: a container ignoring SIGTERM is killed after that many seconds");
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "stubborn",
            "--stop-timeout",
            "1",
            &img,
            "sh",
            "-c",
            "trap '' TERM; while true; do sleep 0.1; done",
        ])
        .unwrap();
    assert_eq!(inspect(&berth, "{{.Config.StopTimeout}}", "stubborn"), "1");
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    berth.docker_ok(&["stop", "stubborn"]).unwrap();
    // Not Docker's default 10 s: the container's own timeout, then SIGKILL (137).
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "stop took {:?}",
        t.elapsed()
    );
    assert_eq!(inspect(&berth, "{{.State.ExitCode}}", "stubborn"), "137");

    step!("docker kill -s delivers the named signal");
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "hup",
            &img,
            "sh",
            "-c",
            "trap 'echo got-hup; exit 3' HUP; while true; do sleep 0.1; done",
        ])
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    berth.docker_ok(&["kill", "-s", "HUP", "hup"]).unwrap();
    berth.docker_ok(&["wait", "hup"]).unwrap();
    assert_eq!(inspect(&berth, "{{.State.ExitCode}}", "hup"), "3");
    assert!(
        berth
            .docker_ok(&["logs", "hup"])
            .unwrap()
            .contains("got-hup")
    );

    step!("docker ps -n N: the N most recently created, running or not");
    let out = berth
        .docker_ok(&["ps", "-n", "2", "--format", "{{.Names}}"])
        .unwrap();
    assert_eq!(out, "hup\nstubborn\n");

    step!("a container past its --memory is OOM-killed, and inspect says so");
    let out = berth.docker(&[
        "run",
        "--name",
        "hog",
        "--memory",
        "16m",
        "--memory-swap",
        "16m",
        &img,
        "sh",
        "-c",
        "dd if=/dev/zero of=/dev/null bs=64M count=1",
    ]);
    assert!(!out.success(), "{out}");
    assert_eq!(
        inspect(&berth, "{{.State.OOMKilled}} {{.State.ExitCode}}", "hog"),
        "true 137"
    );
}
