//! The walking skeleton, against Docker's real behaviour: version/info, pull, images,
//! run (foreground, exit codes, auto-pull, detached), what a container is in the kernel
//! (namespaces, PID 1, overlay root, cgroup, IP on the bridge), stop, rm; then bad input
//! and that failures leak nothing.
//!
//! Each test has its own registry and Berth. Expected strings are Docker's (the docker
//! CLI prints some itself, the daemon's wording comes back in "Error response from
//! daemon: ..."), so these tests also pin Berth's compatibility.

use berth_e2e::http::unix_request;
use berth_e2e::procs::{self, CONTAINER_NAMESPACES};
use berth_e2e::{Berth, Format, registry_with_busybox, step, wait_until};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[test]
fn skeleton() {
    let (registry, image, img) = registry_with_busybox().unwrap();
    let berth = Berth::start("skeleton").unwrap();

    step!("docker version talks to the server; docker info works");
    let version = berth.docker_ok(&["version"]).unwrap();
    assert!(version.contains("Server:"), "{version}");
    berth.docker_ok(&["info"]).unwrap();

    step!("docker pull {img}");
    let pull = berth.docker_ok(&["pull", &img]).unwrap();
    assert!(
        pull.contains(&format!("Digest: {}", image.manifest_digest)),
        "{pull}"
    );
    assert!(
        pull.contains(&format!("Status: Downloaded newer image for {img}")),
        "{pull}"
    );

    step!("docker images lists it with Docker's image ID (the config digest)");
    let id = berth
        .docker_ok(&["image", "inspect", "-f", "{{.Id}}", &img])
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(id, image.config_digest);
    let images = berth
        .docker_ok(&[
            "images",
            "--format",
            "{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.Size}}",
        ])
        .unwrap();
    let repo = format!("{}/busybox", registry.host());
    let row: Vec<&str> = images
        .lines()
        .find(|l| l.starts_with(&format!("{repo}\t")))
        .unwrap_or_else(|| panic!("{repo} not in docker images:\n{images}"))
        .split('\t')
        .collect();
    assert_eq!(row[1], "latest");
    // `docker images` shows the ID without "sha256:", truncated to 12 characters.
    assert_eq!(row[2], &id["sha256:".len().."sha256:".len() + 12]);
    assert!(
        row[3].ends_with("MB"),
        "size {:?} should be a few MB",
        row[3]
    );
    let size: u64 = berth
        .docker_ok(&["image", "inspect", "-f", "{{.Size}}", &img])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(size > 1_000_000, "image size {size}");

    step!("docker run --rm echo hello");
    let out = berth.docker(&["run", "--rm", &img, "echo", "hello"]);
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "hello\n");

    step!("the container's exit code is docker run's");
    let out = berth.docker(&["run", "--rm", &img, "sh", "-c", "exit 3"]);
    assert_eq!(out.code, 3, "{out}");

    step!("no signal is ignored in the container (yes | head ends on SIGPIPE)");
    // The shim runs with SIGPIPE ignored (and whatever its launcher ignored); none of it
    // may reach the container, or `yes` would spin on EPIPE forever.
    let out = berth.docker(&["run", "--rm", &img, "sh", "-c", "yes | head -n 1"]);
    assert_eq!(out.stdout, "y\n", "{out}");
    // Not through sh: busybox's shell ignores SIGQUIT itself.
    let out = berth.docker(&["run", "--rm", &img, "grep", "SigIgn", "/proc/self/status"]);
    assert!(out.success(), "{out}");
    let ignored = u64::from_str_radix(out.stdout.trim().trim_start_matches("SigIgn:").trim(), 16)
        .unwrap_or(u64::MAX);
    // Bits 0-30 are the standard signals (glibc keeps 32 and 33 for itself).
    assert_eq!(ignored & 0x7fff_ffff, 0, "{out}");

    step!("docker run of an image not pulled yet pulls it first");
    let (two, _) = image
        .push(&registry, "busybox:two", Format::DockerV2)
        .unwrap();
    let out = berth.docker(&["run", "--rm", &two, "echo", "auto"]);
    assert!(out.success(), "{out}");
    // Docker's CLI wording, printed before it pulls.
    assert!(
        out.stderr
            .contains(&format!("Unable to find image '{two}' locally")),
        "{out}"
    );
    assert_eq!(out.stdout.lines().last(), Some("auto"), "{out}");

    step!("docker run -d --name web");
    let id = berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "web",
            &img,
            "sh",
            "-c",
            "echo started; while true; do echo tick; sleep 1; done",
        ])
        .unwrap();
    let id = id.trim();
    assert_eq!(id.len(), 64, "docker run -d prints the full ID: {id:?}");
    let ps = berth
        .docker_ok(&["ps", "--format", "{{.Names}}\t{{.Status}}"])
        .unwrap();
    assert!(
        ps.lines().any(|l| l.starts_with("web\tUp")),
        "web should be Up:\n{ps}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || berth
            .docker(&["logs", "web"])
            .stdout
            .contains("started")),
        "docker logs web never showed 'started': {}",
        berth.docker(&["logs", "web"])
    );

    step!("the container is isolated in the kernel");
    let pid = berth.container_pid("web").unwrap();
    let me = std::process::id();
    for ns in CONTAINER_NAMESPACES {
        let theirs = procs::ns_link(pid, ns).unwrap();
        let ours = procs::ns_link(me, ns).unwrap();
        assert_ne!(
            theirs, ours,
            "the container shares the host's {ns} namespace"
        );
    }
    // NSpid's last number is the pid in its namespace; `docker exec` agrees.
    assert_eq!(
        procs::innermost_pid(pid),
        Some(1),
        "the command is not PID 1"
    );
    let ps1 = berth
        .docker_ok(&["exec", "web", "cat", "/proc/1/cmdline"])
        .unwrap();
    assert!(ps1.starts_with("sh\0-c\0"), "PID 1 inside is {ps1:?}");
    assert_eq!(procs::root_fstype(pid).as_deref(), Some("overlay"));
    let parent = berth.roots().cgroup_parent();
    let cgroups = procs::cgroups(pid);
    assert!(
        cgroups.iter().any(|l| l.contains(&format!("/{parent}/"))),
        "no cgroup under {parent}: {cgroups:?}"
    );

    step!("the container has an IP on the instance's bridge, reachable from the host");
    let ip = berth
        .inspect("{{.NetworkSettings.IPAddress}}", "web")
        .unwrap();
    assert!(
        ip.starts_with(&berth.ip_prefix()),
        "IP {ip:?} not in {}0/24",
        berth.ip_prefix()
    );
    let ping = berth_e2e::cmd::run(
        Command::new("/bin/busybox").args(["ping", "-c1", "-W2", &ip]),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(ping.success(), "ping {ip}: {ping}");

    step!("docker stop, then docker ps -a shows Exited");
    // -t 1: sh as PID 1 ignores SIGTERM, so Docker kills it after the timeout.
    berth.docker_ok(&["stop", "-t", "1", "web"]).unwrap();
    let ps = berth
        .docker_ok(&["ps", "-a", "--format", "{{.Names}}\t{{.Status}}"])
        .unwrap();
    assert!(
        ps.lines().any(|l| l.starts_with("web\tExited")),
        "web should be Exited:\n{ps}"
    );
    assert!(
        !procs::alive(pid),
        "the container's init survived docker stop"
    );

    step!("docker rm, and it is gone");
    berth.docker_ok(&["rm", "web"]).unwrap();
    let ps = berth
        .docker_ok(&["ps", "-a", "--format", "{{.Names}}"])
        .unwrap();
    assert!(!ps.lines().any(|l| l == "web"), "{ps}");
    let out = berth.docker(&["inspect", "web"]);
    assert!(!out.success());
    assert!(out.stderr.contains("No such object: web"), "{out}");
}

#[test]
fn bad_input_gets_docker_errors_and_leaks_nothing() {
    let (registry, _image, img) = registry_with_busybox().unwrap();
    let berth = Berth::start("bad_input").unwrap();
    berth.docker_ok(&["pull", &img]).unwrap();

    step!("an invalid reference");
    let out = berth.docker(&["run", "--rm", &format!("{}/BadName", registry.host())]);
    assert_eq!(out.code, 125, "{out}");
    assert!(out.stderr.contains("invalid reference format"), "{out}");

    step!("rm of a container that does not exist");
    let out = berth.docker(&["rm", "nope"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("No such container: nope"), "{out}");

    step!("a name already in use is a conflict (HTTP 409)");
    berth
        .docker_ok(&["run", "-d", "--name", "web2", &img, "sleep", "300"])
        .unwrap();
    let out = berth.docker(&["run", "-d", "--name", "web2", &img, "sleep", "300"]);
    assert_eq!(out.code, 125, "{out}");
    // Docker: Conflict. The container name "/web2" is already in use by container "<id>".
    assert!(out.stderr.contains("is already in use"), "{out}");
    berth.docker_ok(&["rm", "-f", "web2"]).unwrap();

    step!("a command that does not exist: Docker exits 127 and --rm removes the container");
    let out = berth.docker(&["run", "--rm", &img, "/nonexistent"]);
    assert_eq!(out.code, 127, "{out}");
    assert!(out.stderr.contains("no such file or directory"), "{out}");

    step!("pulling from a registry nobody listens on fails clearly");
    let port = berth_e2e::registry::free_port().unwrap();
    let out = berth.docker(&["pull", &format!("127.0.0.1:{port}/busybox:latest")]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("Error response from daemon"), "{out}");
    assert!(out.stderr.contains(&port.to_string()), "{out}");

    step!("malformed JSON gets a 400 with a JSON message");
    let r = unix_request(
        berth.socket(),
        "POST",
        "/v1.50/containers/create",
        Some("application/json"),
        b"{bad",
    )
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        r.headers
    );
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );

    step!("nothing leaked: no container, no netns file, no rootfs snapshot");
    let ps = berth.docker_ok(&["ps", "-aq"]).unwrap();
    assert_eq!(ps.trim(), "", "containers left: {ps}");
    assert_empty(&berth.exec_root().join("netns"));
    assert_empty(&berth.data_root().join("imaged/snapshots"));
}

/// A directory that is missing or empty.
fn assert_empty(dir: &Path) {
    let left: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    assert!(left.is_empty(), "{} still holds {left:?}", dir.display());
}
