//! `docker top` (ps on the host, the container's processes only, custom ps arguments)
//! and `docker diff` (added, changed and deleted paths; the runtime's own mount points
//! left out) and `docker export` (the container's filesystem as a tar) with the real CLI.

use berth_e2e::{Berth, registry_with_busybox, step};

#[test]
fn docker_top_and_diff() {
    let (_registry, _image, img) = registry_with_busybox().unwrap();
    let berth = Berth::start("top-diff").unwrap();
    berth.docker_ok(&["pull", &img]).unwrap();
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "busy",
            &img,
            "sh",
            "-c",
            "mkdir /tmp/new && echo x > /tmp/new/file && echo y >> /etc/passwd && rm /bin/ls \
             && sleep 600 & exec sleep 601",
        ])
        .unwrap();

    step!("docker top: the container's processes, from the host's ps");
    let pid = berth.container_pid("busy").unwrap();
    let out = berth.docker_ok(&["top", "busy"]).unwrap();
    let mut lines = out.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("UID") && header.contains("PID") && header.contains("CMD"),
        "{out}"
    );
    let rows: Vec<&str> = lines.collect();
    assert!(
        rows.iter()
            .any(|r| r.contains(&pid.to_string()) && r.contains("sleep 601")),
        "{out}"
    );
    assert!(rows.iter().any(|r| r.contains("sleep 600")), "{out}");
    assert!(
        !out.contains("berth-shim"),
        "host processes leaked in: {out}"
    );
    let out = berth.docker_ok(&["top", "busy", "-o", "pid,comm"]).unwrap();
    assert!(out.lines().next().unwrap().contains("COMMAND"), "{out}");
    assert_eq!(out.lines().count(), 3, "{out}");
    let out = berth.docker(&["top", "busy", "-o", "comm"]);
    assert!(
        out.stderr.contains("Couldn't find PID field in ps output"),
        "{out}"
    );

    step!("docker diff: A/C/D as Docker prints them, runtime mount points left out");
    let diff = berth.docker_ok(&["diff", "busy"]).unwrap();
    let lines: Vec<&str> = diff.lines().collect();
    for want in [
        "C /bin",
        "D /bin/ls",
        "C /etc",
        "C /etc/passwd",
        "C /tmp",
        "A /tmp/new",
        "A /tmp/new/file",
    ] {
        assert!(lines.contains(&want), "{want} missing from:\n{diff}");
    }
    for hidden in [
        "/etc/hostname",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/proc",
        "/sys",
        "/dev",
    ] {
        assert!(
            !lines.iter().any(|l| l.ends_with(hidden)),
            "{hidden} shown:\n{diff}"
        );
    }

    step!("docker export: the filesystem with the container's changes");
    let dir = tempfile::tempdir().unwrap();
    let tar_path = dir.path().join("busy.tar");
    berth
        .docker_ok(&["export", "-o", tar_path.to_str().unwrap(), "busy"])
        .unwrap();
    let list = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&tar_path)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    let names: Vec<&str> = list.lines().map(|l| l.trim_end_matches('/')).collect();
    for want in ["bin/busybox", "tmp/new/file", "etc/passwd"] {
        assert!(names.contains(&want), "{want} missing from the export");
    }
    assert!(!names.contains(&"bin/ls"), "a deleted file was exported");
    let passwd = std::process::Command::new("tar")
        .args(["-xOf"])
        .arg(&tar_path)
        .arg("etc/passwd")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&passwd.stdout).ends_with("y\n"));

    step!("errors: top of a stopped container, unknown containers");
    berth.docker_ok(&["stop", "-t", "0", "busy"]).unwrap();
    let out = berth.docker(&["top", "busy"]);
    assert!(out.stderr.contains("is not running"), "{out}");
    // The writable layer outlives the process.
    assert!(
        berth
            .docker_ok(&["diff", "busy"])
            .unwrap()
            .contains("A /tmp/new/file")
    );
    let out = berth.docker(&["diff", "nosuch"]);
    assert!(out.stderr.contains("No such container: nosuch"), "{out}");
}
