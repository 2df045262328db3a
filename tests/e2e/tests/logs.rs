//! `docker logs` with the real CLI: json-file rotation from --log-opt and from
//! daemon.json's log-opts (disk use bounded by max-size x max-file, reads spanning the
//! rotated files, --tail), Docker's option errors, --timestamps, and kill -9 of
//! berth-logd while a container writes: no line lost or doubled.

use berth_e2e::{Berth, registry_with_busybox, step, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::Duration;

/// Prints `line 0` .. `line <n-1>`, then sleeps (so the container stays up).
fn counter(n: u32, pause: &str) -> String {
    format!("i=0; while [ $i -lt {n} ]; do echo line $i; i=$((i+1)); {pause} done; exec sleep 600")
}

fn lines(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("line {i}")).collect()
}

fn log_dir_bytes(berth: &Berth, container: &str) -> u64 {
    let path = berth
        .inspect("{{.LogPath}}", container)
        .expect("the container has a log path");
    let dir = std::path::Path::new(&path)
        .parent()
        .expect("the log file is in a directory")
        .to_path_buf();
    std::fs::read_dir(&dir)
        .expect("the log directory exists")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn docker_logs_rotation_and_restarts() {
    let (_registry, _image, img) = registry_with_busybox().unwrap();
    let berth = Berth::start_full(
        "logs",
        &[],
        &[],
        r#"{"log-opts": {"max-size": "2k", "max-file": "2"}}"#,
    )
    .unwrap();
    berth.docker_ok(&["pull", &img]).unwrap();

    step!("--log-opt max-size/max-file bound the disk; reads span the rotated file");
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "rot",
            "--log-opt",
            "max-size=1k",
            "--log-opt",
            "max-file=3",
            "--log-opt",
            "compress=true",
            &img,
            "sh",
            "-c",
            &counter(400, ""),
        ])
        .unwrap();
    let done = wait_until(Duration::from_secs(30), || {
        berth.docker(&["logs", "--tail", "1", "rot"]).stdout == "line 399\n"
    });
    assert!(done, "{}", berth.docker(&["logs", "--tail", "3", "rot"]));
    assert_eq!(
        berth
            .inspect("{{index .HostConfig.LogConfig.Config \"max-size\"}}", "rot")
            .unwrap(),
        "1k"
    );
    let used = log_dir_bytes(&berth, "rot");
    assert!(used <= 3 * 1024, "{used} bytes for max-size 1k x 3 files");
    let all = berth.docker_ok(&["logs", "rot"]).unwrap();
    let all: Vec<String> = all.lines().map(str::to_string).collect();
    let first: u32 = all[0].trim_start_matches("line ").parse().unwrap();
    assert!(first > 0, "nothing rotated away");
    assert_eq!(all, lines(first..400));
    assert!(
        all.len() > 20,
        "only the current file was read: {}",
        all.len()
    );
    // 20 lines always span the rotated files: the two rotated ones alone hold about 26
    // (1 kB of ~75-byte records each), the current one may have just been started.
    let tail = berth.docker_ok(&["logs", "--tail", "20", "rot"]).unwrap();
    assert_eq!(
        tail.lines().map(str::to_string).collect::<Vec<_>>(),
        lines(380..400)
    );

    step!("daemon.json log-opts apply to containers without their own");
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "dflt",
            &img,
            "sh",
            "-c",
            &counter(300, ""),
        ])
        .unwrap();
    assert_eq!(
        berth
            .inspect(
                "{{index .HostConfig.LogConfig.Config \"max-size\"}}",
                "dflt"
            )
            .unwrap(),
        "2k"
    );
    let done = wait_until(Duration::from_secs(30), || {
        berth.docker(&["logs", "--tail", "1", "dflt"]).stdout == "line 299\n"
    });
    assert!(done);
    let used = log_dir_bytes(&berth, "dflt");
    assert!(used <= 2 * 2048, "{used} bytes for max-size 2k x 2 files");

    step!("Docker's errors for bad log options");
    let out = berth.docker(&["run", "--rm", "--log-opt", "max-sise=1k", &img, "true"]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr
            .contains("unknown log opt 'max-sise' for json-file log driver"),
        "{out}"
    );
    let out = berth.docker(&[
        "run",
        "--rm",
        "--log-opt",
        "compress=true",
        "--log-opt",
        "max-file=1",
        &img,
        "true",
    ]);
    assert!(
        out.stderr
            .contains("compress cannot be true when max-file is less than 2"),
        "{out}"
    );

    step!("--timestamps prefixes RFC 3339 times with nanoseconds");
    let ts = berth
        .docker_ok(&["logs", "--timestamps", "--tail", "1", "rot"])
        .unwrap();
    let (stamp, text) = ts.trim_end().split_once(' ').unwrap();
    assert_eq!(text, "line 399");
    assert!(stamp.ends_with('Z') && stamp.len() == 30, "{stamp}");

    step!("stdout and stderr stay apart; partial and very long lines come back whole");
    berth
        .docker_ok(&[
            "run",
            "--name",
            "mix",
            // Not the daemon's 2k default: all of it must stay.
            "--log-opt",
            "max-size=10m",
            &img,
            "sh",
            "-c",
            "echo out1; echo err1 >&2; sleep 1.5; echo out2; \
             head -c 40000 /dev/zero | tr '\\0' a; echo; printf partial",
        ])
        .unwrap();
    let long = format!("{}\n", "a".repeat(40000));
    // Compared by digest-like summaries: a 40 kB line in a failure message helps no one.
    let summary = |s: &str| {
        (
            s.len(),
            s.chars().take(12).collect::<String>(),
            s.chars().rev().take(12).collect::<String>(),
        )
    };
    let out = berth.docker(&["logs", "mix"]);
    assert!(out.success(), "{}", out.stderr);
    assert_eq!(
        summary(&out.stdout),
        summary(&format!("out1\nout2\n{long}partial"))
    );
    assert!(out.stdout == format!("out1\nout2\n{long}partial"));
    assert_eq!(out.stderr, "err1\n");

    step!("an attached docker run keeps its output whole across kill -9 of logd");
    let attached = berth
        .docker_command(&[
            "run",
            "--rm",
            &img,
            "sh",
            "-c",
            "echo before; sleep 2; echo after; echo last",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    berth.kill9_and_wait("berth-logd").unwrap();
    let done = attached.wait_with_output().unwrap();
    assert!(done.status.success(), "{done:?}");
    assert_eq!(
        String::from_utf8_lossy(&done.stdout),
        "before\nafter\nlast\n"
    );

    step!("--since and --until select by time (both inclusive, as Docker)");
    let stamped = berth.docker_ok(&["logs", "--timestamps", "mix"]).unwrap();
    let time_of = |text: &str| -> String {
        stamped
            .lines()
            .find(|l| l.ends_with(text))
            .and_then(|l| l.split_once(' '))
            .map(|(t, _)| t.to_string())
            .unwrap_or_else(|| panic!("no {text} in {stamped}"))
    };
    let (t1, t2) = (time_of(" out1"), time_of(" out2"));
    let since = berth.docker(&["logs", "--since", &t2, "mix"]);
    assert_eq!(
        summary(&since.stdout),
        summary(&format!("out2\n{long}partial")),
        "since {t2}"
    );
    assert_eq!(since.stderr, "", "err1 was written before {t2}");
    let until = berth.docker(&["logs", "--until", &t1, "mix"]);
    assert_eq!(until.stdout, "out1\n", "until {t1}");

    step!("-f follows a running container until it exits");
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "slow",
            &img,
            "sh",
            "-c",
            "for i in 1 2 3; do echo f$i; sleep 0.4; done",
        ])
        .unwrap();
    let followed = berth.docker_within(&["logs", "-f", "slow"], Duration::from_secs(30));
    assert!(followed.success(), "{followed}");
    assert_eq!(followed.stdout, "f1\nf2\nf3\n");

    step!("--details prefixes the attributes named by labels/env log options");
    berth
        .docker_ok(&[
            "run",
            "--name",
            "det",
            "--label",
            "team=core",
            "--label",
            "app=web",
            "-e",
            "REGION=eu west",
            "--log-opt",
            "labels=team",
            "--log-opt",
            "env=REGION",
            &img,
            "echo",
            "hello",
        ])
        .unwrap();
    assert_eq!(
        berth.docker_ok(&["logs", "--details", "det"]).unwrap(),
        "REGION=eu+west,team=core hello\n"
    );
    // No attributes: Docker still separates the (empty) details with a space.
    assert_eq!(
        berth
            .docker_ok(&["logs", "--details", "--tail", "1", "rot"])
            .unwrap(),
        " line 399\n"
    );

    step!("the local driver: Docker's defaults and options, rotation, no LogPath");
    let out = berth.docker(&[
        "run",
        "--rm",
        "--log-driver",
        "local",
        "--log-opt",
        "labels=x",
        &img,
        "true",
    ]);
    assert!(
        out.stderr
            .contains("unknown log opt 'labels' for local log driver"),
        "{out}"
    );
    let id = berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "loc",
            "--log-driver",
            "local",
            "--log-opt",
            "max-size=1k",
            &img,
            "sh",
            "-c",
            &counter(400, ""),
        ])
        .unwrap();
    let id = id.trim();
    let done = wait_until(Duration::from_secs(30), || {
        berth.docker(&["logs", "--tail", "1", "loc"]).stdout == "line 399\n"
    });
    assert!(done, "{}", berth.docker(&["logs", "--tail", "3", "loc"]));
    assert_eq!(berth.inspect("{{.LogPath}}", "loc").unwrap(), "");
    assert_eq!(
        berth
            .inspect("{{.HostConfig.LogConfig.Type}}", "loc")
            .unwrap(),
        "local"
    );
    let dir = berth
        .data_root()
        .join("logd/containers")
        .join(id)
        .join("local-logs");
    let files: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    // Five files at most (the current one and four rotated, gzipped by default).
    assert!(files.len() <= 5, "{files:?}");
    assert!(files.iter().any(|(n, _)| n.ends_with(".gz")), "{files:?}");
    assert!(files.iter().all(|(_, len)| *len <= 1024), "{files:?}");
    let all = berth.docker_ok(&["logs", "loc"]).unwrap();
    let all: Vec<String> = all.lines().map(str::to_string).collect();
    let first: u32 = all[0].trim_start_matches("line ").parse().unwrap();
    assert!(first > 0, "nothing rotated away");
    assert_eq!(all, lines(first..400));

    step!("the none driver keeps nothing and says so");
    berth
        .docker_ok(&[
            "run",
            "--name",
            "quiet",
            "--log-driver",
            "none",
            &img,
            "echo",
            "x",
        ])
        .unwrap();
    let out = berth.docker(&["logs", "quiet"]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr
            .contains("configured logging driver does not support reading"),
        "{out}"
    );

    step!("kill -9 of berth-logd while a container writes: no line lost or doubled");
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "steady",
            "--log-opt",
            "max-size=100m",
            &img,
            "sh",
            "-c",
            &counter(3000, "usleep 1000;"),
        ])
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || {
        berth
            .docker(&["logs", "--tail", "1", "steady"])
            .stdout
            .starts_with("line ")
    }));
    for _ in 0..2 {
        let old = berth.service_pid("berth-logd").expect("logd runs");
        kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
        assert!(wait_until(Duration::from_secs(30), || berth
            .service_pid("berth-logd")
            .is_some_and(|p| p != old)));
        std::thread::sleep(Duration::from_millis(500));
    }
    let done = wait_until(Duration::from_secs(60), || {
        berth.docker(&["logs", "--tail", "1", "steady"]).stdout == "line 2999\n"
    });
    assert!(done, "{}", berth.docker(&["logs", "--tail", "3", "steady"]));
    let got = berth.docker_ok(&["logs", "steady"]).unwrap();
    assert_eq!(
        got.lines().map(str::to_string).collect::<Vec<_>>(),
        lines(0..3000)
    );
}
