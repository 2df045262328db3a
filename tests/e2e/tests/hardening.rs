//! What a local user who is not root can reach of a running Berth (issue 17, first
//! slice): the data root is dockerd's 0710 and each service's state directory 0700, so
//! no database, container config (environment variables included) or log can be read,
//! while a container running as an unprivileged user still works; a healthcheck that
//! would spin (interval under 1 ms) is refused.

use berth_e2e::{berth_with_busybox, step};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

/// Runs `sh -c script` as nobody (uid and gid 65534, no supplementary groups).
fn as_nobody(script: &str) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .output()
        .expect("running setpriv")
}

#[test]
fn an_unprivileged_user_reads_nothing() {
    let (_registry, _image, img, berth) = berth_with_busybox("hardening").unwrap();
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "secret",
            "-e",
            "TOKEN=hunter2",
            &img,
            "sleep",
            "600",
        ])
        .unwrap();

    step!("the roots' modes, whatever the umask");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(berth.data_root()), 0o710, "data root");
    assert_eq!(mode(berth.exec_root()), 0o711, "run root");
    for svc in ["gateway", "imaged", "containerd", "netd", "volumed", "logd"] {
        let dir = berth.data_root().join(svc);
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }

    step!("a container's config.json (its environment) is 0600 in a 0700 bundle");
    let id = berth.inspect("{{.Id}}", "secret").unwrap();
    let bundle = berth.data_root().join("containerd/bundles").join(&id);
    assert_eq!(mode(&bundle), 0o700);
    assert_eq!(mode(&bundle.join("config.json")), 0o600);

    step!("nobody can list the data root or read a database, a config or a log");
    let data = berth.data_root().display().to_string();
    for script in [
        format!("ls {data}"),
        format!("cat {data}/containerd/state.db"),
        format!("grep -r hunter2 {data}"),
        format!("ls {}", berth.exec_root().display()),
    ] {
        let out = as_nobody(&script);
        assert!(!out.status.success(), "nobody could: {script}: {out:?}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("hunter2"),
            "{script}"
        );
    }

    step!("a health interval below 1 ms is refused, nothing created");
    let out = berth.docker(&[
        "run",
        "-d",
        "--name",
        "spin",
        "--health-cmd",
        "true",
        "--health-interval",
        "500us",
        &img,
        "sleep",
        "60",
    ]);
    assert!(
        !out.success()
            && out
                .stderr
                .contains("Interval in Healthcheck cannot be less than 1ms"),
        "{out}"
    );
    assert!(!berth.docker(&["inspect", "spin"]).success());

    step!("security keys of daemon.json Berth does not apply stop it from starting");
    let berthd = berth_e2e::berth::binary("berthd").unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (i, json) in [
        r#"{"userns-remap": "default"}"#,
        r#"{"no-new-privileges": true}"#,
        r#"{"icc": false}"#,
        r#"{"authorization-plugins": ["authz-broker"]}"#,
    ]
    .iter()
    .enumerate()
    {
        let file = dir.path().join(format!("{i}.json"));
        std::fs::write(&file, json).unwrap();
        let out = Command::new(&berthd)
            .args(["--validate", "--config-file"])
            .arg(&file)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("not supported by Berth yet"),
            "{json}: {out:?}"
        );
    }

    step!("seccomp: Docker's allow-list (unshare -U, clone3, io_uring refused by default)");
    seccomp_matrix(&berth, &img);

    step!("an image's /etc/group linked to /dev/zero: read inside it, refused at once");
    berth
        .docker_ok(&[
            "run",
            "--name",
            "linker",
            &img,
            "sh",
            "-c",
            "rm /etc/group && ln -s /dev/zero /etc/group",
        ])
        .unwrap();
    berth
        .docker_ok(&["commit", "linker", "zero-group"])
        .unwrap();
    let t = std::time::Instant::now();
    let out = berth.docker_within(
        &["run", "--rm", "-u", "0:staff", "zero-group", "true"],
        std::time::Duration::from_secs(30),
    );
    assert!(
        !out.success() && out.stderr.contains("unable to find group staff"),
        "{out}"
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(30));

    step!("no TCP port is listened on unless asked (metrics are off without metrics-addr)");
    for svc in berth_e2e::berth::SERVICE_BINARIES {
        let pid = berth.service_pid(svc).unwrap();
        let listening = tcp_listeners_of(pid);
        assert!(listening.is_empty(), "{svc} listens on TCP: {listening:?}");
    }

    step!("bridge names keep to Linux's charset");
    for bad in ["a:b", "..", "tab\tname"] {
        let opt = format!("com.docker.network.bridge.name={bad}");
        let out = berth.docker(&["network", "create", "-o", &opt, "badbridge"]);
        assert!(
            !out.success() && out.stderr.contains("invalid bridge name"),
            "{bad:?}: {out}"
        );
    }
    assert!(!berth.docker(&["network", "inspect", "badbridge"]).success());

    step!("containers still run as an unprivileged user");
    let out = berth
        .docker_ok(&[
            "run",
            "--rm",
            "-u",
            "65534",
            &img,
            "sh",
            "-c",
            "id -u; cat /etc/passwd /etc/hosts /etc/hostname /etc/resolv.conf >/dev/null && echo read",
        ])
        .unwrap();
    assert_eq!(out, "65534\nread\n");
}

/// unshare(CLONE_NEWUSER), clone3(NULL, 0) and io_uring_setup(0, NULL) from inside
/// containers: the errno each gets (0 = it succeeded) under the default profile, with
/// `--privileged`, `--cap-add SYS_ADMIN` and `seccomp=unconfined`.
#[cfg(target_arch = "x86_64")]
fn seccomp_matrix(berth: &berth_e2e::Berth, img: &str) {
    use berth_e2e::syscall_probe::program;
    const EPERM: i32 = 1;
    const EINVAL: i32 = 22;
    const ENOSYS: i32 = 38;
    let dir = tempfile::tempdir().expect("writing the probe");
    for (name, nr, arg) in [
        ("unshare", 272, 0x1000_0000),
        ("clone3", 435, 0),
        ("io_uring", 425, 0),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, program(nr, arg)).expect("writing the probe");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
            .expect("writing the probe");
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("writing the probe");
    let bind = format!("{}:/probe:ro", dir.path().display());
    let errno = |opts: &[&str], probe: &str| -> i32 {
        let mut args = vec!["run", "--rm", "-v", &bind];
        args.extend_from_slice(opts);
        let path = format!("/probe/{probe}");
        args.extend_from_slice(&[img, &path]);
        berth.docker(&args).code
    };
    assert_eq!(
        errno(&[], "unshare"),
        EPERM,
        "unshare -U in a default container"
    );
    assert_eq!(
        errno(&[], "clone3"),
        ENOSYS,
        "clone3 in a default container"
    );
    assert_eq!(
        errno(&[], "io_uring"),
        EPERM,
        "io_uring_setup in a default container"
    );
    assert_eq!(
        errno(&["--privileged"], "unshare"),
        0,
        "unshare -U, privileged"
    );
    assert_eq!(
        errno(&["--privileged"], "clone3"),
        EINVAL,
        "clone3, privileged"
    );
    assert_ne!(
        errno(&["--privileged"], "io_uring"),
        EPERM,
        "io_uring, privileged"
    );
    assert_eq!(
        errno(&["--cap-add", "SYS_ADMIN"], "unshare"),
        0,
        "unshare -U with SYS_ADMIN"
    );
    assert_eq!(
        errno(&["--cap-add", "SYS_ADMIN"], "clone3"),
        EINVAL,
        "clone3 with SYS_ADMIN"
    );
    let unconfined = ["--security-opt", "seccomp=unconfined"];
    assert_eq!(errno(&unconfined, "clone3"), EINVAL, "clone3, unconfined");
    assert_ne!(
        errno(&unconfined, "io_uring"),
        EPERM,
        "io_uring, unconfined"
    );
}

#[cfg(not(target_arch = "x86_64"))]
fn seccomp_matrix(_berth: &berth_e2e::Berth, _img: &str) {}

/// The local addresses (hex, as /proc/net/tcp shows them) process `pid` listens on.
fn tcp_listeners_of(pid: u32) -> Vec<String> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // st 0A is LISTEN; the inode is the tenth field.
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                out.push(f[1].to_string());
            }
        }
    }
    out
}
