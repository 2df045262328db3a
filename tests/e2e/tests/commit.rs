//! `docker commit` with the real CLI: a container's added, changed and deleted files
//! become a new layer (deletions as whiteouts), `--change` instructions, author and
//! message land in the image, the runtime's mount points stay out, the new image runs
//! and saves; `docker import` of an exported filesystem (plain and gzip; a hostile
//! tarball is refused); `docker images` filters over the lot; Docker's error for a bad
//! change.

use berth_e2e::{berth_with_busybox, step};

#[test]
fn docker_commit() {
    let (_registry, _image, img, berth) = berth_with_busybox("commit").unwrap();
    berth
        .docker_ok(&["run", "-d", "--name", "box", &img, "sleep", "1000"])
        .unwrap();
    berth
        .docker_ok(&[
            "exec",
            "box",
            "sh",
            "-c",
            "echo hello > /hello && mkdir -p /srv/app && echo v1 > /srv/app/conf && rm /bin/vi",
        ])
        .unwrap();

    step!("commit with changes, author and message");
    let id = berth
        .docker_ok(&[
            "commit",
            "-a",
            "Ada <ada@example.org>",
            "-m",
            "added hello",
            "-c",
            r#"CMD ["cat", "/hello"]"#,
            "-c",
            "ENV GREETING=hi",
            "-c",
            "WORKDIR /srv/app",
            "-c",
            "LABEL stage=committed",
            "box",
            "committed/box:v1",
        ])
        .unwrap();
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert_eq!(
        berth.inspect("{{.Id}}", "committed/box:v1").unwrap(),
        id.trim()
    );
    assert_eq!(
        berth
            .inspect("{{.Author}}|{{.Comment}}|{{json .Config.Cmd}}|{{.Config.WorkingDir}}|{{index .Config.Labels \"stage\"}}", "committed/box:v1")
            .unwrap(),
        r#"Ada <ada@example.org>|added hello|["cat","/hello"]|/srv/app|committed"#
    );
    let layers = berth
        .inspect("{{len .RootFS.Layers}}", "committed/box:v1")
        .unwrap();
    assert_eq!(layers, "2");
    let history = berth
        .docker_ok(&["history", "--format", "{{.Comment}}", "committed/box:v1"])
        .unwrap();
    assert!(history.contains("added hello"), "{history}");

    step!("the new image has the container's files, not the deleted one nor the runtime's");
    let out = berth
        .docker_ok(&["run", "--rm", "committed/box:v1"])
        .unwrap();
    assert_eq!(out, "hello\n");
    let out = berth
        .docker_ok(&[
            "run",
            "--rm",
            "committed/box:v1",
            "sh",
            "-c",
            "cat conf; echo $GREETING; test -e /bin/vi && echo vi-still-there || echo vi-gone",
        ])
        .unwrap();
    assert_eq!(out, "v1\nhi\nvi-gone\n");

    step!("the running container was frozen during the commit; not with --pause=false");
    let count = |action: &str| berth.event_count("box", action).unwrap();
    assert_eq!((count("pause"), count("unpause")), (1, 1));
    assert_eq!(
        berth.inspect("{{.State.Status}}", "box").unwrap(),
        "running"
    );
    berth
        .docker_ok(&["commit", "--pause=false", "box", "committed/box:nopause"])
        .unwrap();
    assert_eq!((count("pause"), count("unpause")), (1, 1));
    berth.docker_ok(&["rmi", "committed/box:nopause"]).unwrap();

    step!("committed images save and load like pulled ones");
    let out = berth.shell("docker save committed/box:v1 | docker load");
    assert!(out.success(), "{out}");
    assert!(
        out.stdout.contains("Loaded image: committed/box:v1"),
        "{out}"
    );

    step!("docker import: an exported filesystem (plain or gzip) as a one-layer image");
    let out = berth.shell(
        r#"docker export box | docker import -c 'CMD ["/bin/sh", "-c", "cat /hello; echo imported"]' -m "from export" - imported/box:v1"#,
    );
    assert!(out.success(), "{out}");
    assert!(out.stdout.trim().starts_with("sha256:"), "{out}");
    let out = berth
        .docker_ok(&["run", "--rm", "imported/box:v1"])
        .unwrap();
    assert_eq!(out, "hello\nimported\n");
    assert_eq!(
        berth
            .inspect("{{len .RootFS.Layers}}", "imported/box:v1")
            .unwrap(),
        "1"
    );
    let history = berth
        .docker_ok(&["history", "--format", "{{.Comment}}", "imported/box:v1"])
        .unwrap();
    assert!(history.contains("from export"), "{history}");
    let work = tempfile::tempdir().unwrap();
    let gz = work.path().join("fs.tar.gz");
    let exported = berth.docker_command(&["export", "box"]).output().unwrap();
    assert!(exported.status.success());
    {
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::fast(),
        );
        std::io::Write::write_all(&mut enc, &exported.stdout).unwrap();
        enc.finish().unwrap();
    }
    let out = berth
        .docker_ok(&["import", &gz.display().to_string(), "imported/gz:v1"])
        .unwrap();
    assert!(out.trim().starts_with("sha256:"), "{out}");
    let out = berth
        .docker_ok(&["run", "--rm", "imported/gz:v1", "cat", "/srv/app/conf"])
        .unwrap();
    assert_eq!(out, "v1\n");
    let evil = work.path().join("evil.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&evil).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        let name = b"../../escaped";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        b.finish().unwrap();
    }
    let out = berth.docker(&["import", &evil.display().to_string(), "evil:v1"]);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("escapes the layer root"), "{out}");
    assert!(!berth.docker(&["image", "inspect", "evil:v1"]).success());

    step!("docker import URL: the daemon downloads the tarball (an HTTP error adds nothing)");
    let gz_bytes = std::fs::read(&gz).unwrap();
    let (url, server) = serve_once("200 OK", gz_bytes);
    let out = berth
        .docker_ok(&["import", &url, "fromurl/box:v1"])
        .unwrap();
    assert!(out.trim().starts_with("sha256:"), "{out}");
    server.join().unwrap();
    let out = berth
        .docker_ok(&["run", "--rm", "fromurl/box:v1", "cat", "/srv/app/conf"])
        .unwrap();
    assert_eq!(out, "v1\n");
    let history = berth
        .docker_ok(&["history", "--format", "{{.Comment}}", "fromurl/box:v1"])
        .unwrap();
    assert!(
        history.contains(&format!("Imported from {url}")),
        "{history}"
    );
    berth.docker_ok(&["rmi", "fromurl/box:v1"]).unwrap();
    let (url, server) = serve_once("404 Not Found", b"nothing here".to_vec());
    let out = berth.docker(&["import", &url, "fromurl/missing:v1"]);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("404"), "{out}");
    server.join().unwrap();
    assert!(
        !berth
            .docker(&["image", "inspect", "fromurl/missing:v1"])
            .success()
    );

    step!("docker images filters and --digests over these images");
    let list = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["images", "--format", "{{.Repository}}:{{.Tag}}"];
        a.extend_from_slice(args);
        let mut v: Vec<String> = berth
            .docker_ok(&a)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        list(&["--filter", "reference=imported/*"]),
        vec!["imported/box:v1", "imported/gz:v1"]
    );
    assert_eq!(list(&["imported/box"]), vec!["imported/box:v1"]);
    assert_eq!(
        list(&["--filter", "label=stage=committed"]),
        vec!["committed/box:v1"]
    );
    assert_eq!(
        list(&["--filter", "since=committed/box:v1"]),
        vec!["imported/box:v1", "imported/gz:v1"]
    );
    assert!(list(&["--filter", "before=committed/box:v1"]).contains(&img));
    assert!(list(&["--filter", "dangling=true"]).is_empty());
    // By name: a name:tag pattern matches tags only (dockerd drops the digests then).
    let (name, _) = img.rsplit_once(':').unwrap();
    let digests = berth
        .docker_ok(&["images", "--digests", "--format", "{{.Digest}}", name])
        .unwrap();
    assert!(digests.trim().starts_with("sha256:"), "{digests}");
    let bad = berth.docker(&["images", "--filter", "color=red"]);
    assert!(!bad.success(), "{bad}");

    step!("Docker's errors");
    let out = berth.docker(&["commit", "-c", "RUN rm -rf /", "box", "bad:one"]);
    assert!(!out.success());
    assert!(
        out.stderr.contains("RUN is not a valid change command"),
        "{out}"
    );
    let out = berth.docker(&["commit", "nosuch", "x:y"]);
    assert!(!out.success());
    assert!(out.stderr.contains("No such container: nosuch"), "{out}");
}

/// Answers one HTTP request on a loopback port with `status` and `body`; the URL to ask.
fn serve_once(status: &'static str, body: Vec<u8>) -> (String, std::thread::JoinHandle<()>) {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let url = format!(
        "http://{}/rootfs.tar.gz",
        listener.local_addr().expect("its address")
    );
    let server = std::thread::spawn(move || {
        let (conn, _) = listener.accept().expect("a connection");
        let mut reader = std::io::BufReader::new(conn.try_clone().expect("a second handle"));
        let mut line = String::new();
        // The request line and headers, up to the blank line.
        while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
            line.clear();
        }
        let mut w = conn;
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = w.write_all(head.as_bytes());
        let _ = w.write_all(&body);
    });
    (url, server)
}
