//! `docker run` options that shape the container, checked from inside it and on its
//! cgroup: capabilities (--cap-add/--cap-drop, --privileged), --security-opt
//! (no-new-privileges, seccomp=unconfined), --read-only, --cpus/--cpu-shares,
//! --ulimit, --sysctl, --shm-size, --group-add, --device, and --init's 501; `docker
//! update` of a running and of a stopped container.

use berth_e2e::{Berth, registry_with_busybox, step};
use std::time::Duration;

/// A bit of `CapEff` in /proc/self/status (CAP_CHOWN = 0, CAP_NET_ADMIN = 12, ...).
fn cap_eff(berth: &Berth, img: &str, extra: &[&str]) -> u64 {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[img, "grep", "CapEff", "/proc/self/status"]);
    let out = berth.docker_ok(&args).expect("docker run");
    u64::from_str_radix(out.trim().trim_start_matches("CapEff:").trim(), 16).expect("hex")
}

fn run(berth: &Berth, img: &str, extra: &[&str], script: &str) -> String {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[img, "sh", "-c", script]);
    berth
        .docker_ok(&args)
        .expect("docker run")
        .trim()
        .to_string()
}

/// A file of the container's cgroup for `controller` (v1) or of its v2 directory.
fn cgroup_file(berth: &Berth, id: &str, controller: &str, file: &str) -> Option<String> {
    let parent = berth.roots().cgroup_parent();
    let root = std::path::Path::new("/sys/fs/cgroup");
    let v1 = root.join(controller).join(&parent).join(id).join(file);
    let v2 = root.join(&parent).join(id).join(file);
    std::fs::read_to_string(v1)
        .or_else(|_| std::fs::read_to_string(v2))
        .ok()
        .map(|s| s.trim().to_string())
}

#[test]
fn run_options() {
    let (_registry, _image, img) = registry_with_busybox().unwrap();
    let berth = Berth::start("run-options").unwrap();
    berth.docker_ok(&["pull", &img]).unwrap();

    step!("capabilities: Docker's set, --cap-add, --cap-drop, --privileged");
    let default = cap_eff(&berth, &img, &[]);
    assert_eq!(
        default & (1 << 12),
        0,
        "NET_ADMIN is not a default: {default:x}"
    );
    assert_ne!(default & 1, 0, "CHOWN is a default: {default:x}");
    let added = cap_eff(
        &berth,
        &img,
        &["--cap-add", "NET_ADMIN", "--cap-drop", "chown"],
    );
    assert_eq!(added, (default | (1 << 12)) & !1, "{added:x}");
    assert_eq!(cap_eff(&berth, &img, &["--cap-drop", "ALL"]), 0);
    // Every capability this host lets a process hold (Berth's own bounding set, which
    // the test shares).
    let own: u64 = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(cap_eff(&berth, &img, &["--privileged"]), own);
    assert_eq!(cap_eff(&berth, &img, &["--cap-add", "ALL"]), own);
    let out = run(
        &berth,
        &img,
        &["--privileged"],
        "grep Seccomp: /proc/self/status; ls /dev/kmsg",
    );
    assert!(
        out.contains("Seccomp:\t0") && out.contains("/dev/kmsg"),
        "{out}"
    );

    step!("--security-opt no-new-privileges and seccomp=unconfined");
    let out = run(
        &berth,
        &img,
        &[],
        "grep -E 'Seccomp:|NoNewPrivs' /proc/self/status",
    );
    assert!(
        out.contains("Seccomp:\t2") && out.contains("NoNewPrivs:\t0"),
        "{out}"
    );
    let out = run(
        &berth,
        &img,
        &["--security-opt", "no-new-privileges"],
        "grep NoNewPrivs /proc/self/status",
    );
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    let out = run(
        &berth,
        &img,
        &["--security-opt", "seccomp=unconfined"],
        "grep Seccomp: /proc/self/status",
    );
    assert!(out.contains("Seccomp:\t0"), "{out}");

    step!("--read-only, --ulimit, --sysctl, --shm-size, --group-add, --device");
    let out = run(
        &berth,
        &img,
        &["--read-only"],
        "touch /x 2>&1; touch /tmp/y 2>&1; echo done",
    );
    assert!(out.contains("Read-only file system"), "{out}");
    let out = run(
        &berth,
        &img,
        &["--ulimit", "nofile=100:200"],
        "ulimit -n; ulimit -Hn",
    );
    assert_eq!(out, "100\n200");
    let out = run(
        &berth,
        &img,
        &["--sysctl", "net.ipv4.ip_forward=1"],
        "cat /proc/sys/net/ipv4/ip_forward",
    );
    assert_eq!(out, "1");
    let out = run(
        &berth,
        &img,
        &["--shm-size", "1m"],
        "df -k /dev/shm | tail -1",
    );
    assert_eq!(out.split_whitespace().nth(1), Some("1024"), "{out}");
    let out = run(
        &berth,
        &img,
        &["--group-add", "50", "--group-add", "7"],
        "id -G",
    );
    assert!(
        out.split_whitespace().any(|g| g == "50") && out.contains('7'),
        "{out}"
    );
    let out = run(
        &berth,
        &img,
        &["--device", "/dev/kmsg:/dev/mykmsg"],
        "ls -l /dev/mykmsg",
    );
    assert!(out.starts_with('c') && out.contains("1,  11"), "{out}");

    step!("--cpus and --cpu-shares reach the cgroup");
    let id = berth
        .docker_ok(&[
            "run",
            "-d",
            "--cpus",
            "0.5",
            "--cpu-shares",
            "512",
            &img,
            "sleep",
            "60",
        ])
        .unwrap();
    let id = id.trim();
    let quota = cgroup_file(&berth, id, "cpu", "cpu.cfs_quota_us")
        .or_else(|| cgroup_file(&berth, id, "cpu", "cpu.max"))
        .expect("the container's cpu cgroup");
    assert!(quota == "50000" || quota == "50000 100000", "{quota}");
    if let Some(shares) = cgroup_file(&berth, id, "cpu", "cpu.shares") {
        assert_eq!(shares, "512");
    }
    assert_eq!(
        berth.inspect("{{.HostConfig.NanoCpus}}", id).unwrap(),
        "500000000"
    );
    berth.docker_ok(&["rm", "-f", id]).unwrap();

    step!("docker update: a running container's cgroup, and the next start's");
    let id = berth
        .docker_ok(&[
            "run", "-d", "--name", "upd", "--memory", "64m", &img, "sleep", "600",
        ])
        .unwrap();
    let id = id.trim().to_string();
    berth
        .docker_ok(&[
            "update",
            "--memory",
            "128m",
            "--memory-swap",
            "256m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "50",
            "--restart",
            "on-failure:3",
            "upd",
        ])
        .unwrap();
    let mem = cgroup_file(&berth, &id, "memory", "memory.limit_in_bytes")
        .or_else(|| cgroup_file(&berth, &id, "memory", "memory.max"))
        .expect("memory cgroup");
    assert_eq!(mem, (128u64 << 20).to_string());
    let quota = cgroup_file(&berth, &id, "cpu", "cpu.cfs_quota_us")
        .or_else(|| cgroup_file(&berth, &id, "cpu", "cpu.max"))
        .expect("cpu cgroup");
    assert!(quota == "50000" || quota == "50000 100000", "{quota}");
    assert_eq!(
        cgroup_file(&berth, &id, "pids", "pids.max").as_deref(),
        Some("50")
    );
    assert_eq!(
        berth
            .inspect(
                "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.PidsLimit}} {{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}}",
                "upd"
            )
            .unwrap(),
        format!("{} {} 50 on-failure:3", 128u64 << 20, 256u64 << 20)
    );
    let out = berth.docker(&["update", "--memory", "300m", "upd"]);
    assert!(
        out.stderr
            .contains("memoryswap limit should be larger than memory limit"),
        "{out}"
    );
    berth.docker_ok(&["stop", "-t", "0", "upd"]).unwrap();
    berth
        .docker_ok(&["update", "--memory", "96m", "--memory-swap", "-1", "upd"])
        .unwrap();
    berth.docker_ok(&["start", "upd"]).unwrap();
    let mem = cgroup_file(&berth, &id, "memory", "memory.limit_in_bytes")
        .or_else(|| cgroup_file(&berth, &id, "memory", "memory.max"))
        .expect("memory cgroup");
    assert_eq!(mem, (96u64 << 20).to_string());
    berth.docker_ok(&["rm", "-f", "upd"]).unwrap();

    step!("--init: tini is PID 1, passes SIGTERM on (a quick stop), reaps orphans");
    let out = berth
        .docker_ok(&[
            "run", "--rm", "--init", &img, "sh", "-c",
            "tr '\\0' ' ' < /proc/1/cmdline; (sleep 0.1 &); sleep 0.3; cat /proc/[0-9]*/stat | grep -c ') Z ' || true",
        ])
        .unwrap();
    assert!(out.starts_with("/sbin/docker-init -- sh -c"), "{out}");
    assert!(out.trim_end().ends_with('0'), "a zombie was left: {out}");
    berth
        .docker_ok(&[
            "run", "-d", "--init", "--name", "inited", &img, "sleep", "1000",
        ])
        .unwrap();
    let started = std::time::Instant::now();
    berth.docker_ok(&["stop", "-t", "8", "inited"]).unwrap();
    // sleep as PID 1 would ignore SIGTERM and take the whole 8 s (then SIGKILL).
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        started.elapsed()
    );
    assert_eq!(
        berth.inspect("{{.State.ExitCode}}", "inited").unwrap(),
        "143"
    );
    berth.docker_ok(&["rm", "inited"]).unwrap();

    step!("bad options are Docker's errors");
    let out = berth.docker(&["run", "--rm", "--cap-add", "NOT_A_CAP", &img, "true"]);
    assert!(
        !out.success() && out.stderr.contains("unknown capability"),
        "{out}"
    );
    let out = berth.docker(&["run", "--rm", "--ulimit", "nofile=20:10", &img, "true"]);
    assert!(!out.success(), "{out}");
    assert_eq!(
        berth.docker_ok(&["ps", "-aq"]).unwrap(),
        "",
        "a failed create leaves nothing"
    );
}
