//! Defects found trying Berth as a new user would (issue 16), each checked with the real
//! CLI: a missing working directory is created, `--network host` gives the host's
//! hostname, `--pid host` shows the host's processes, `--privileged` may mount,
//! `--mac-address`/`--link-local-ip` reach the interface, `docker images NAME:TAG` lists
//! that tag only, and a container on a network emits network connect/disconnect events
//! at start and stop.

use berth_e2e::{berth_with_busybox, step};

#[test]
fn new_user_defects() {
    let (_registry, image, img, berth) = berth_with_busybox("conformance").unwrap();

    step!("GET /distribution/NAME/json asks the registry, pulls nothing");
    let body = berth
        .api_get(&format!("/v1.50/distribution/{img}/json"))
        .unwrap();
    let d: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(d["Descriptor"]["digest"], image.manifest_digest, "{d}");
    assert_eq!(
        d["Descriptor"]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        d["Platforms"],
        serde_json::json!([{"architecture": berth_e2e::image::host_arch(), "os": "linux"}])
    );
    let missing = berth_e2e::http::unix_request(
        berth.socket(),
        "GET",
        &format!("/v1.50/distribution/{img}-nope/json"),
        None,
        b"",
    )
    .unwrap();
    assert_eq!(missing.status, 404, "{}", missing.text());

    step!("run -w DIR creates DIR, as Docker");
    let out = berth
        .docker_ok(&["run", "--rm", "-w", "/not/yet/there", &img, "pwd"])
        .unwrap();
    assert_eq!(out, "/not/yet/there\n");
    let out = berth.docker(&["run", "--rm", "-w", "/etc/passwd", &img, "pwd"]);
    assert!(
        !out.success() && out.stderr.contains("is not a directory"),
        "{out}"
    );

    step!("--network host: the host's hostname; --pid host: the host's processes");
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let out = berth
        .docker_ok(&["run", "--rm", "--network", "host", &img, "hostname"])
        .unwrap();
    assert_eq!(out.trim(), host);
    let out = berth
        .docker_ok(&[
            "run",
            "--rm",
            "--network",
            "host",
            "-h",
            "mine",
            &img,
            "hostname",
        ])
        .unwrap();
    assert_eq!(out.trim(), "mine");
    let own_pid = std::process::id();
    let out = berth
        .docker_ok(&[
            "run",
            "--rm",
            "--pid",
            "host",
            &img,
            "test",
            "-d",
            &format!("/proc/{own_pid}"),
        ])
        .unwrap();
    assert_eq!(out, "");
    let out = berth.docker(&[
        "run",
        "--rm",
        &img,
        "test",
        "-d",
        &format!("/proc/{own_pid}"),
    ]);
    assert_eq!(
        out.code, 1,
        "a private PID namespace hides the host's: {out}"
    );
    let out = berth.docker(&["run", "--rm", "--pid", "container:nope", &img, "true"]);
    assert!(!out.success(), "{out}");

    step!("--privileged: mount works inside");
    let out = berth
        .docker_ok(&[
            "run",
            "--rm",
            "--privileged",
            &img,
            "sh",
            "-c",
            "mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && echo mounted",
        ])
        .unwrap();
    assert_eq!(out, "mounted\n");
    let out = berth.docker(&[
        "run",
        "--rm",
        &img,
        "sh",
        "-c",
        "mkdir -p /mnt/t && mount -t tmpfs none /mnt/t",
    ]);
    assert!(!out.success(), "mount without privileges: {out}");

    step!("--mac-address and --link-local-ip are applied to the interface, not only shown");
    let out = berth
        .docker_ok(&[
            "run",
            "--rm",
            "--mac-address",
            "02:42:ac:11:00:0a",
            "--link-local-ip",
            "169.254.8.8",
            &img,
            "sh",
            "-c",
            "cat /sys/class/net/eth0/address; ip -4 addr show eth0",
        ])
        .unwrap();
    assert!(out.starts_with("02:42:ac:11:00:0a\n"), "{out}");
    assert!(out.contains("inet 169.254.8.8/16"), "{out}");
    let out = berth.docker(&["run", "--rm", "--link-local-ip", "10.0.0.1", &img, "true"]);
    assert!(
        !out.success() && out.stderr.contains("invalid link-local IP address"),
        "{out}"
    );
    assert_eq!(berth.docker_ok(&["ps", "-aq"]).unwrap(), "", "nothing left");

    step!("docker images NAME:TAG lists that tag only");
    berth.docker_ok(&["tag", &img, "second:one"]).unwrap();
    berth.docker_ok(&["tag", &img, "second:two"]).unwrap();
    let rows = berth
        .docker_ok(&[
            "images",
            "second:two",
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ])
        .unwrap();
    assert_eq!(rows, "second:two\n");
    let rows = berth
        .docker_ok(&["images", "second", "--format", "{{.Tag}}"])
        .unwrap();
    let mut tags: Vec<&str> = rows.lines().collect();
    tags.sort_unstable();
    assert_eq!(tags, ["one", "two"]);

    step!("network connect/disconnect events on start and stop");
    let subnet = format!("10.219.{}.0/24", std::process::id() % 200);
    berth
        .docker_ok(&["network", "create", "--subnet", &subnet, "evnet"])
        .unwrap();
    berth
        .docker_ok(&["run", "--rm", "--network", "evnet", &img, "true"])
        .unwrap();
    let got = berth
        .stored_events(
            &["network=evnet", "type=network"],
            "{{.Action}} {{.Actor.Attributes.name}}",
        )
        .unwrap();
    assert_eq!(
        got,
        ["create evnet", "connect evnet", "disconnect evnet"],
        "{got:?}"
    );

    step!("--link on a user-defined network: an alias only the linking container resolves");
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "upstream",
            "--network",
            "evnet",
            &img,
            "sleep",
            "60",
        ])
        .unwrap();
    let upstream_ip = berth
        .inspect("{{.NetworkSettings.Networks.evnet.IPAddress}}", "upstream")
        .unwrap();
    let out = berth
        .docker_ok(&[
            "run",
            "--rm",
            "--network",
            "evnet",
            "--link",
            "upstream:bar",
            &img,
            "nslookup",
            "bar",
            "127.0.0.11",
        ])
        .unwrap();
    assert!(out.contains(&upstream_ip), "{out}");
    berth.docker_ok(&["rm", "-f", "upstream"]).unwrap();

    step!("legacy --link on the default bridge: /etc/hosts, variables, inspect's Links");
    berth
        .docker_ok(&[
            "run", "-d", "--name", "linked", "-e", "FOO=1", "--expose", "80", &img, "sleep", "60",
        ])
        .unwrap();
    let linked_ip = berth
        .inspect("{{.NetworkSettings.IPAddress}}", "linked")
        .unwrap();
    berth
        .docker_ok(&[
            "create",
            "--name",
            "linking",
            "--link",
            "linked:my-link",
            &img,
            "sh",
            "-c",
            "env; cat /etc/hosts",
        ])
        .unwrap();
    assert_eq!(
        berth
            .inspect("{{json .HostConfig.Links}}", "linking")
            .unwrap(),
        r#"["/linked:/linking/my-link"]"#
    );
    let out = berth.docker_ok(&["start", "-a", "linking"]).unwrap();
    for want in [
        "MY_LINK_NAME=/linking/my-link".to_string(),
        "MY_LINK_ENV_FOO=1".to_string(),
        format!("MY_LINK_PORT=tcp://{linked_ip}:80"),
        format!("MY_LINK_PORT_80_TCP_ADDR={linked_ip}"),
        "MY_LINK_PORT_80_TCP_PROTO=tcp".to_string(),
        format!("{linked_ip}\tmy-link linked"),
    ] {
        assert!(out.contains(&want), "{want} missing in:\n{out}");
    }
    assert!(!out.contains("MY_LINK_ENV_PATH"), "{out}");
    berth.docker_ok(&["rm", "-f", "linked", "linking"]).unwrap();
    let out = berth.docker(&["run", "--rm", "--link", "nosuch:x", &img, "true"]);
    assert!(!out.success(), "{out}");
}
