//! `docker cp` with the real CLI, both directions: files, directories (contents kept,
//! modes, links), into a volume of a running container and of a stopped one, `-a`,
//! Docker's errors, and
//! symlinks planted in the container that point at the host's files: they resolve
//! inside the container, so nothing of the host is read or written.

use berth_e2e::{berth_with_busybox, step};
use std::os::unix::fs::PermissionsExt;

#[test]
fn docker_cp() {
    let (_registry, _image, img, berth) = berth_with_busybox("cp").unwrap();
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "box",
            "-v",
            "data:/data",
            &img,
            "sleep",
            "1000",
        ])
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();

    step!("host to container: a file, a directory with a mode and a link, into a volume");
    std::fs::write(w.join("hello.txt"), "hello from the host\n").unwrap();
    std::fs::create_dir_all(w.join("tree/sub")).unwrap();
    std::fs::write(w.join("tree/sub/run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(
        w.join("tree/sub/run.sh"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    std::os::unix::fs::symlink("sub/run.sh", w.join("tree/link")).unwrap();
    let host = |p: &str| w.join(p).display().to_string();
    berth
        .docker_ok(&["cp", &host("hello.txt"), "box:/tmp/"])
        .unwrap();
    berth
        .docker_ok(&["cp", &host("tree"), "box:/tmp/tree"])
        .unwrap();
    berth
        .docker_ok(&["cp", &host("hello.txt"), "box:/data/renamed.txt"])
        .unwrap();
    let out = berth
        .docker_ok(&[
            "exec", "box", "sh", "-c",
            "cat /tmp/hello.txt /data/renamed.txt; stat -c %a /tmp/tree/sub/run.sh; readlink /tmp/tree/link; /tmp/tree/link",
        ])
        .unwrap();
    assert_eq!(
        out, "hello from the host\nhello from the host\n750\nsub/run.sh\nran\n",
        "{out}"
    );

    step!("container to host: a file, a directory, the contents of one (dir/.), to stdout");
    berth
        .docker_ok(&[
            "exec",
            "box",
            "sh",
            "-c",
            "mkdir -p /srv/app && echo v1 > /srv/app/conf && echo x > /srv/app/.hidden",
        ])
        .unwrap();
    berth
        .docker_ok(&["cp", "box:/srv/app/conf", &host("conf")])
        .unwrap();
    assert_eq!(std::fs::read_to_string(w.join("conf")).unwrap(), "v1\n");
    berth
        .docker_ok(&["cp", "box:/srv/app", &host("app")])
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(w.join("app/.hidden")).unwrap(),
        "x\n"
    );
    std::fs::create_dir(w.join("flat")).unwrap();
    berth
        .docker_ok(&["cp", "box:/srv/app/.", &host("flat")])
        .unwrap();
    assert!(w.join("flat/conf").is_file() && !w.join("flat/app").exists());
    let tar = berth
        .docker_command(&["cp", "box:/srv/app/conf", "-"])
        .output()
        .unwrap();
    assert!(tar.status.success());
    let mut a = tar::Archive::new(&tar.stdout[..]);
    let names: Vec<String> = a
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, vec!["conf"]);

    step!("-a keeps the container user's ownership; a stopped container works too");
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "userbox",
            "-u",
            "1234:2345",
            &img,
            "sleep",
            "1000",
        ])
        .unwrap();
    berth
        .docker_ok(&["cp", "-a", &host("hello.txt"), "userbox:/tmp/owned"])
        .unwrap();
    let owner = berth
        .docker_ok(&["exec", "userbox", "stat", "-c", "%u:%g", "/tmp/owned"])
        .unwrap();
    assert_eq!(owner.trim(), "1234:2345");
    berth.docker_ok(&["stop", "-t", "0", "userbox"]).unwrap();
    berth
        .docker_ok(&["cp", &host("conf"), "userbox:/etc/conf"])
        .unwrap();
    berth
        .docker_ok(&["cp", "userbox:/etc/conf", &host("back")])
        .unwrap();
    assert_eq!(std::fs::read_to_string(w.join("back")).unwrap(), "v1\n");

    step!("a stopped container's volume and bind mounts, as it sees them (ro too)");
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(shared.path().join("from-host"), "bound\n").unwrap();
    let bind = format!("{}:/bind:ro", shared.path().display());
    berth
        .docker_ok(&[
            "run",
            "--name",
            "parked",
            "-v",
            "parked:/vol",
            "-v",
            &bind,
            &img,
            "true",
        ])
        .unwrap();
    berth
        .docker_ok(&["cp", &host("hello.txt"), "parked:/vol/in-volume"])
        .unwrap();
    let out = berth
        .docker_ok(&["cp", "parked:/bind/from-host", "-"])
        .unwrap();
    assert!(out.contains("bound\n"), "{out:?}");
    // The file is in the volume itself, not hidden under its mount point in the rootfs.
    let out = berth
        .docker_ok(&[
            "run",
            "--rm",
            "-v",
            "parked:/v",
            &img,
            "cat",
            "/v/in-volume",
        ])
        .unwrap();
    assert_eq!(out, "hello from the host\n");
    let out = berth.docker(&["cp", &host("hello.txt"), "parked:/bind/nope"]);
    assert!(!out.success(), "{out}");
    assert!(!shared.path().join("nope").exists());
    // The copy's mounts lived in a namespace of their own: none is left on the host.
    let leaked: Vec<_> = berth_e2e::procs::mountinfo(std::path::Path::new("/proc/self/mountinfo"))
        .into_iter()
        .filter(|m| m.mount_point.ends_with("vol") || m.mount_point.ends_with("bind"))
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");

    step!("a container that never ran: its volume's mount point is made for the copy");
    berth
        .docker_ok(&[
            "create",
            "--name",
            "fresh",
            "-v",
            "freshvol:/vol1/deep",
            &img,
            "cat",
            "/vol1/deep/in",
        ])
        .unwrap();
    berth
        .docker_ok(&["cp", &host("hello.txt"), "fresh:/vol1/deep/in"])
        .unwrap();
    let out = berth.docker_ok(&["start", "-a", "fresh"]).unwrap();
    assert_eq!(out, "hello from the host\n");

    step!("symlinks in the container resolve inside it, never on the host");
    let canary = w.join("canary");
    std::fs::write(&canary, "host secret\n").unwrap();
    berth
        .docker_ok(&[
            "exec", "box", "sh", "-c",
            &format!(
                "mkdir -p /trap && ln -s {c} /trap/file && ln -s / /trap/root && ln -s ../../../../../ /trap/up",
                c = canary.display()
            ),
        ])
        .unwrap();
    // Reading through the links: the container has no such file.
    let out = berth.docker(&["cp", "box:/trap/root/etc/shadow", &host("stolen")]);
    assert!(!out.success(), "{out}");
    assert!(!w.join("stolen").exists());
    let out = berth.docker(&[
        "cp",
        &format!("box:/trap/up{}", canary.display()),
        &host("stolen2"),
    ]);
    assert!(!out.success(), "{out}");
    // Copying the link itself gives the link, not the host file.
    berth
        .docker_ok(&["cp", "box:/trap/file", &host("link-copy")])
        .unwrap();
    let md = std::fs::symlink_metadata(w.join("link-copy")).unwrap();
    assert!(md.file_type().is_symlink());
    // Writing through the links lands in the container: the same path exists there.
    std::fs::write(w.join("evil"), "overwritten\n").unwrap();
    berth
        .docker_ok(&["exec", "box", "mkdir", "-p", &w.display().to_string()])
        .unwrap();
    berth
        .docker_ok(&[
            "cp",
            &host("evil"),
            &format!("box:/trap/up{}", canary.display()),
        ])
        .unwrap();
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "host secret\n");
    let inside = berth
        .docker_ok(&["exec", "box", "cat", &canary.display().to_string()])
        .unwrap();
    assert_eq!(inside, "overwritten\n");
    berth
        .docker_ok(&["cp", &host("evil"), "box:/trap/file"])
        .unwrap();
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "host secret\n");

    step!("a hostile archive through the API: refused whole, nothing written");
    let mut b = tar::Builder::new(Vec::new());
    for name in ["first-ok", "../../escaped"] {
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
    }
    let body = b.into_inner().unwrap();
    let resp = berth_e2e::http::unix_request(
        berth.socket(),
        "PUT",
        "/containers/box/archive?path=/tmp",
        Some("application/x-tar"),
        &body,
    )
    .unwrap();
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert!(
        resp.text().contains("leaves the destination"),
        "{}",
        resp.text()
    );
    let out = berth.docker(&["exec", "box", "ls", "/tmp/first-ok", "/escaped"]);
    assert!(!out.success(), "{out}");

    step!("Docker's errors");
    let out = berth.docker(&["cp", "box:/nope", &host("x")]);
    assert!(!out.success());
    assert!(
        out.stderr
            .contains("Could not find the file /nope in container box"),
        "{out}"
    );
    let out = berth.docker(&["cp", &host("hello.txt"), "nosuch:/tmp/x"]);
    assert!(!out.success());
    assert!(out.stderr.contains("No such container: nosuch"), "{out}");
    let out = berth.docker(&["cp", &host("tree"), "box:/tmp/hello.txt/"]);
    assert!(!out.success(), "{out}");
}
