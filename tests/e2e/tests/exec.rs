//! `docker exec` with the real CLI (terminals: tests/tty.rs), against Docker's behaviour: output in the
//! multiplexed framing, the exit code, -e/-w/-u, a missing command (126 and Docker's
//! words), -i with piped stdin, -d and exec inspect, exec into a stopped container, and
//! exec still working after kill -9 of berth-containerd.

use berth_e2e::{Berth, berth_with_busybox, procs, step, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::Duration;

#[test]
fn docker_exec() {
    let (_registry, _image, img, berth) = berth_with_busybox("exec").unwrap();
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "box",
            "-e",
            "FROM_RUN=run",
            &img,
            "sleep",
            "600",
        ])
        .unwrap();

    step!("docker exec echo: output on stdout, stderr kept apart");
    let out = berth.docker(&["exec", "box", "echo", "hello"]);
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "hello\n");
    let out = berth.docker(&["exec", "box", "sh", "-c", "echo out; echo err >&2"]);
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");

    step!("the exec's exit code is docker exec's");
    let out = berth.docker(&["exec", "box", "sh", "-c", "exit 3"]);
    assert_eq!(out.code, 3, "{out}");

    step!("exec_create, exec_start and exec_die events, as dockerd's");
    let exec_events = || {
        berth
            .stored_events(
                &["container=box", "event=exec_die"],
                "{{.Action}} {{index .Actor.Attributes \"execID\"}} {{index .Actor.Attributes \"exitCode\"}}",
            )
            .unwrap()
    };
    assert!(
        wait_until(Duration::from_secs(5), || exec_events()
            .iter()
            .any(|e| e.ends_with(" 3"))),
        "no exec_die with exit code 3: {:?}",
        exec_events()
    );
    let died = exec_events()
        .into_iter()
        .find(|e| e.ends_with(" 3"))
        .unwrap();
    let exec_id = died.split(' ').nth(1).unwrap().to_string();
    assert_eq!(exec_id.len(), 64, "{died}");
    let all: Vec<String> = berth
        .stored_events(
            &["container=box"],
            "{{.Action}}|{{index .Actor.Attributes \"execID\"}}|{{index .Actor.Attributes \"name\"}}",
        )
        .unwrap()
        .into_iter()
        .filter(|e| e.contains(&exec_id))
        .collect();
    assert_eq!(
        all,
        [
            format!("exec_create: sh -c exit 3|{exec_id}|box"),
            format!("exec_start: sh -c exit 3|{exec_id}|box"),
            format!("exec_die|{exec_id}|box"),
        ],
        "in order, once each"
    );

    step!("-e adds to the container's environment");
    let out = berth.docker(&[
        "exec",
        "-e",
        "FOO=bar",
        "box",
        "sh",
        "-c",
        "echo $FOO $FROM_RUN",
    ]);
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "bar run\n");

    step!("-w sets the working directory");
    let out = berth.docker(&["exec", "-w", "/tmp", "box", "pwd"]);
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "/tmp\n");

    step!("-u uid:gid and a name from the container's /etc/passwd");
    let out = berth.docker(&["exec", "-u", "1234:5678", "box", "sh", "-c", "id -u; id -g"]);
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "1234\n5678\n");
    // A user the container itself adds: names resolve from its /etc/passwd and group.
    berth
        .docker_ok(&[
            "exec",
            "box",
            "sh",
            "-c",
            "echo 'tester:x:4321:4322::/home/tester:/bin/sh' >> /etc/passwd; echo 'testers:x:4400:' >> /etc/group",
        ])
        .unwrap();
    let out = berth.docker(&["exec", "-u", "tester", "box", "sh", "-c", "id -u; id -g"]);
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "4321\n4322\n");
    let out = berth.docker(&["exec", "-u", "tester:testers", "box", "id", "-g"]);
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "4400\n");
    let out = berth.docker(&["exec", "-u", "nosuchuser", "box", "true"]);
    assert_eq!(out.code, 126, "{out}");
    assert!(
        out.stdout.contains("unable to find user nosuchuser"),
        "{out}"
    );

    step!("a missing command: 126 (as dockerd for any exec that cannot start) and Docker's words");
    let out = berth.docker(&["exec", "box", "nosuchcmd"]);
    assert_eq!(out.code, 126, "{out}");
    assert!(
        out.stdout
            .contains("exec: \"nosuchcmd\": executable file not found in $PATH"),
        "{out}"
    );
    assert!(out.stdout.starts_with("OCI runtime exec failed"), "{out}");
    let out = berth.docker(&["exec", "box", "/etc/passwd"]);
    assert_eq!(out.code, 126, "{out}");

    step!("-i: piped stdin reaches the process and its EOF ends it");
    let out = berth.shell("printf 'hi\\nthere\\n' | docker exec -i box cat");
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "hi\nthere\n");
    let out = berth.shell("printf 'a b c' | docker exec -i box wc -w");
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout.trim(), "3");

    step!("a running exec is the shim's child; afterwards nothing is left under the shim");
    let init = berth.container_pid("box").unwrap();
    let shim = procs::parent_pid(init).unwrap();
    berth
        .docker_ok(&["exec", "-d", "box", "sh", "-c", "sleep 2"])
        .unwrap();
    let children = |shim: u32| -> Vec<u32> {
        procs::all_pids()
            .into_iter()
            .filter(|p| procs::parent_pid(*p) == Some(shim))
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(5), || children(shim).len() == 2),
        "the exec should run as a child of the shim: {:?}",
        children(shim)
    );
    assert!(
        wait_until(Duration::from_secs(10), || children(shim) == vec![init]),
        "left under the shim: {:?}",
        children(shim)
    );

    step!("concurrent execs each get their own output and exit code");
    let out = berth.shell(
        "for i in 1 2 3 4; do (docker exec box sh -c \"echo n$i; exit $i\"; echo code$i=$?) & done; wait",
    );
    for i in 1..=4 {
        assert!(out.stdout.contains(&format!("n{i}\n")), "{out}");
        assert!(out.stdout.contains(&format!("code{i}={i}\n")), "{out}");
    }

    step!("-t without a terminal: one raw stream with the pty's line endings, exit code");
    let out = berth.docker(&[
        "exec",
        "-t",
        "box",
        "sh",
        "-c",
        "echo a; echo b >&2; exit 6",
    ]);
    assert_eq!(out.code, 6, "{out}");
    assert_eq!(out.stdout, "a\r\nb\r\n", "{out}");

    step!("--privileged gives the exec every capability the host grants, only to it");
    let caps = |args: &[&str]| -> u64 {
        let out = berth.docker_ok(args).unwrap();
        u64::from_str_radix(out.trim().trim_start_matches("CapEff:").trim(), 16).unwrap()
    };
    let own: u64 = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    let privileged = caps(&[
        "exec",
        "--privileged",
        "box",
        "grep",
        "CapEff",
        "/proc/self/status",
    ]);
    assert_eq!(privileged, own, "{privileged:x} vs {own:x}");
    let plain = caps(&["exec", "box", "grep", "CapEff", "/proc/self/status"]);
    assert_ne!(plain, own);
    assert_eq!(
        plain & (1 << 12),
        0,
        "NET_ADMIN leaked into a plain exec: {plain:x}"
    );

    step!("-d runs in the background; its exec record reports the exit");
    let out = berth.docker(&[
        "exec",
        "-d",
        "box",
        "sh",
        "-c",
        "sleep 1; touch /tmp/done; exit 5",
    ]);
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "");
    assert!(
        wait_until(Duration::from_secs(10), || berth
            .docker(&["exec", "box", "test", "-e", "/tmp/done"])
            .success()),
        "the detached exec did not run"
    );
    // The exec API directly: create, start detached, inspect until it ends.
    let created = http_json(
        &berth,
        "POST",
        "/containers/box/exec",
        r#"{"Cmd":["sh","-c","exit 7"],"AttachStdout":true}"#,
    );
    assert_eq!(created.0, 201, "{created:?}");
    let exec_id = created.1["Id"].as_str().unwrap().to_string();
    let before = http_json(&berth, "GET", &format!("/exec/{exec_id}/json"), "");
    assert_eq!(before.0, 200);
    assert_eq!(before.1["Running"], false);
    assert!(before.1["ExitCode"].is_null(), "{before:?}");
    assert_eq!(before.1["ProcessConfig"]["entrypoint"], "sh");
    assert_eq!(before.1["CanRemove"], false);
    assert_eq!(before.1["DetachKeys"], "");
    let started = http_json(
        &berth,
        "POST",
        &format!("/exec/{exec_id}/start"),
        r#"{"Detach":true}"#,
    );
    assert_eq!(started.0, 200, "{started:?}");
    let mut after = (0, serde_json::Value::Null);
    assert!(
        wait_until(Duration::from_secs(10), || {
            after = http_json(&berth, "GET", &format!("/exec/{exec_id}/json"), "");
            after.1["ExitCode"] == 7
        }),
        "{after:?}"
    );
    assert_eq!(after.1["Running"], false);
    assert!(after.1["Pid"].as_i64().unwrap() > 0, "{after:?}");
    let id = berth.inspect("{{.Id}}", "box").unwrap();
    assert_eq!(after.1["ContainerID"], id.trim());
    let resize = http_json(
        &berth,
        "POST",
        &format!("/exec/{exec_id}/resize?h=10&w=10"),
        "",
    );
    // A finished exec has no terminal to resize.
    assert_eq!(resize.0, 409, "{resize:?}");
    let missing = http_json(&berth, "GET", "/exec/nosuchexec/json", "");
    assert_eq!(missing.0, 404);
    assert_eq!(missing.1["message"], "No such exec instance: nosuchexec");

    step!("exec into an unknown or a stopped container: Docker's errors");
    let out = berth.docker(&["exec", "nosuch", "true"]);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("No such container: nosuch"), "{out}");
    berth
        .docker_ok(&["run", "--name", "stopped", &img, "true"])
        .unwrap();
    let stopped_id = berth.inspect("{{.Id}}", "stopped").unwrap();
    let out = berth.docker(&["exec", "stopped", "true"]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr
            .contains(&format!("container {} is not running", stopped_id.trim())),
        "{out}"
    );

    step!("kill -9 berth-containerd: exec works again once berthd restarted it");
    let old = berth.service_pid("berth-containerd").unwrap();
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || berth
            .service_pid("berth-containerd")
            .is_some_and(|p| p != old)),
        "berthd did not restart berth-containerd"
    );
    let mut last = berth.docker(&["exec", "box", "echo", "again"]);
    assert!(
        wait_until(Duration::from_secs(20), || {
            last = berth.docker(&["exec", "box", "echo", "again"]);
            last.success()
        }),
        "{last}"
    );
    assert_eq!(last.stdout, "again\n");
    let out = berth.docker(&["exec", "box", "sh", "-c", "exit 4"]);
    assert_eq!(out.code, 4, "{out}");

    berth.docker_ok(&["rm", "-f", "box", "stopped"]).unwrap();
}

/// One API request on the Berth socket; `(status, JSON body or Null)`.
fn http_json(berth: &Berth, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let resp = berth_e2e::http::unix_request(
        berth.socket(),
        method,
        path,
        Some("application/json"),
        body.as_bytes(),
    )
    .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"));
    let v = serde_json::from_slice(&resp.body).unwrap_or(serde_json::Value::Null);
    (resp.status, v)
}
