//! Volumes with the real docker CLI, against Docker's behaviour: `docker volume
//! create/ls/inspect/rm/prune` with labels, `-o` options and filters; `-v` named,
//! anonymous and host binds (`:ro`, `:z`); `--mount` of all three types with their
//! options; `--tmpfs`; `--volumes-from`; an image's `VOLUME`; copy-up of image content
//! into new volumes; local-driver tmpfs and bind volumes really mounted; in-use
//! protection; `rm -v` and `--rm` dropping anonymous volumes; bad input refused with
//! nothing changed; data surviving container removal and a kill -9 of every service.

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used)]

use berth_e2e::{Berth, Registry, TestImage, cmd, registry_with_busybox, step, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `docker <args>` must fail; returns its stderr.
fn docker_err(berth: &Berth, args: &[&str]) -> String {
    let out = berth.docker(args);
    assert!(
        !out.success(),
        "docker {} should fail: {out}",
        args.join(" ")
    );
    out.stderr
}

fn volume_names(berth: &Berth, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["volume", "ls", "-q"];
    args.extend_from_slice(extra);
    let mut v: Vec<String> = berth
        .docker_ok(&args)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

fn inspect_json(berth: &Berth, args: &[&str]) -> Value {
    let out = berth.docker_ok(args).unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

/// The container's `Mounts` from `docker inspect`.
fn mounts_of(berth: &Berth, container: &str) -> Vec<Value> {
    inspect_json(berth, &["inspect", container])["Mounts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn mount_at<'a>(mounts: &'a [Value], dest: &str) -> &'a Value {
    mounts
        .iter()
        .find(|m| m["Destination"] == dest)
        .unwrap_or_else(|| panic!("no mount at {dest}: {mounts:?}"))
}

/// The `/proc/mounts` line of `dest` inside a running container.
fn proc_mount(berth: &Berth, container: &str, dest: &str) -> String {
    let mounts = berth
        .docker_ok(&["exec", container, "cat", "/proc/mounts"])
        .unwrap();
    mounts
        .lines()
        .rfind(|l| l.split(' ').nth(1) == Some(dest))
        .unwrap_or_else(|| panic!("{dest} not mounted in {container}:\n{mounts}"))
        .to_string()
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The test image with `VOLUME`s in its config, pushed as `withvol:latest`: the built
/// layout is copied with a changed config and manifest, and pushed with skopeo.
fn push_with_volumes(image: &TestImage, registry: &Registry, volumes: &[&str]) -> String {
    let src = image.layout_dir();
    let dir = tempfile::Builder::new()
        .prefix("berth-img-vol")
        .tempdir_in("/tmp")
        .unwrap();
    let blobs = dir.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for e in std::fs::read_dir(src.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), blobs.join(e.file_name())).unwrap();
    }
    std::fs::copy(src.join("oci-layout"), dir.path().join("oci-layout")).unwrap();
    let blob = |d: &str| std::fs::read(src.join("blobs/sha256").join(&d[7..])).unwrap();
    let mut config: Value = serde_json::from_slice(&blob(&image.config_digest)).unwrap();
    config["config"]["Volumes"] = volumes
        .iter()
        .map(|v| (v.to_string(), serde_json::json!({})))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = sha256(&config);
    std::fs::write(blobs.join(&config_digest[7..]), &config).unwrap();
    let mut manifest: Value = serde_json::from_slice(&blob(&image.manifest_digest)).unwrap();
    manifest["config"]["digest"] = config_digest.into();
    manifest["config"]["size"] = config.len().into();
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = sha256(&manifest);
    std::fs::write(blobs.join(&manifest_digest[7..]), &manifest).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": "latest" },
        }],
    });
    std::fs::write(
        dir.path().join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let reference = format!("127.0.0.1:{}/withvol:latest", registry.port());
    let mut c = Command::new("skopeo");
    c.args([
        "copy",
        "--insecure-policy",
        "--dest-tls-verify=false",
        "--dest-no-creds",
    ])
    .arg(format!("oci:{}:latest", dir.path().display()))
    .arg(format!("docker://{reference}"))
    .env("HOME", dir.path());
    let out = cmd::run(&mut c, Duration::from_secs(120)).unwrap();
    assert!(out.success(), "skopeo: {out}");
    reference
}

#[test]
fn volume_commands() {
    let (_registry, _image, img) = registry_with_busybox().unwrap();
    let berth = Berth::start("volume-commands").unwrap();
    berth.docker_ok(&["pull", &img]).unwrap();
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;

    step!("volume create with labels, without a name, with local-driver options");
    let out = berth
        .docker_ok(&[
            "volume", "create", "--label", "team=a", "--label", "env=prod", "data1",
        ])
        .unwrap();
    assert_eq!(out, "data1\n");
    let unnamed = berth.docker_ok(&["volume", "create"]).unwrap();
    let unnamed = unnamed.trim().to_string();
    assert_eq!(unnamed.len(), 64, "{unnamed}");
    assert!(unnamed.chars().all(|c| c.is_ascii_hexdigit()));
    berth
        .docker_ok(&[
            "volume",
            "create",
            "-o",
            "type=tmpfs",
            "-o",
            "device=tmpfs",
            "-o",
            "o=size=16m",
            "tmpvol",
        ])
        .unwrap();
    // Creating an existing name returns it unchanged.
    let before = inspect_json(&berth, &["volume", "inspect", "data1"]);
    berth.docker_ok(&["volume", "create", "data1"]).unwrap();
    assert_eq!(
        inspect_json(&berth, &["volume", "inspect", "data1"]),
        before
    );

    step!("volume inspect shows Docker's fields");
    let v = inspect_json(&berth, &["volume", "inspect", "data1"]);
    assert_eq!(v["Name"], "data1");
    assert_eq!(v["Driver"], "local");
    assert_eq!(v["Scope"], "local");
    assert_eq!(v["Labels"]["team"], "a");
    assert_eq!(v["Labels"]["env"], "prod");
    assert!(v["CreatedAt"].as_str().unwrap().starts_with("20"), "{v}");
    let mp = v["Mountpoint"].as_str().unwrap().to_string();
    assert_eq!(
        Path::new(&mp),
        berth.data_root().join("volumed/volumes/data1/_data")
    );
    assert!(Path::new(&mp).is_dir());
    let t = inspect_json(&berth, &["volume", "inspect", "tmpvol"]);
    assert_eq!(t["Options"]["type"], "tmpfs");
    assert_eq!(t["Options"]["device"], "tmpfs");
    assert_eq!(t["Options"]["o"], "size=16m");
    let u = inspect_json(&berth, &["volume", "inspect", &unnamed]);
    assert_eq!(u["Labels"]["com.docker.volume.anonymous"], "");
    assert_eq!(
        berth
            .docker_ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", "data1"])
            .unwrap()
            .trim(),
        mp
    );

    step!("bad volume input: Docker's errors, nothing created");
    let all_before = volume_names(&berth, &[]);
    assert!(
        docker_err(&berth, &["volume", "create", "-o", "bogus=1", "v1"])
            .contains("create v1: invalid option: \"bogus\""),
    );
    assert!(
        docker_err(&berth, &["volume", "create", "-o", "type=tmpfs", "v2"])
            .contains("create v2: missing required option: \"device\""),
    );
    assert!(
        docker_err(&berth, &["volume", "create", "-o", "size=10m", "v3"])
            .contains("quota size requested but no quota support"),
    );
    assert!(
        docker_err(&berth, &["volume", "create", "-d", "flocker", "v4"])
            .contains("plugin \"flocker\" not found"),
    );
    assert!(docker_err(&berth, &["volume", "create", "x"]).contains(
        "volume name is too short, names should be at least two alphanumeric characters"
    ),);
    assert!(
        docker_err(&berth, &["volume", "create", "bad/name"])
            .contains("includes invalid characters for a local volume name"),
    );
    assert_eq!(volume_names(&berth, &[]), all_before);

    step!("volume ls with filters");
    let mut expect = vec!["data1".to_string(), "tmpvol".to_string(), unnamed.clone()];
    expect.sort();
    assert_eq!(volume_names(&berth, &[]), expect);
    assert_eq!(volume_names(&berth, &["-f", "label=team=a"]), vec!["data1"]);
    assert_eq!(volume_names(&berth, &["-f", "label=team"]), vec!["data1"]);
    assert!(volume_names(&berth, &["-f", "label=team=b"]).is_empty());
    assert_eq!(volume_names(&berth, &["-f", "name=data"]), vec!["data1"]);
    assert_eq!(volume_names(&berth, &["-f", "name=^tmp"]), vec!["tmpvol"]);
    assert_eq!(volume_names(&berth, &["-f", "driver=local"]).len(), 3);
    assert!(volume_names(&berth, &["-f", "driver=nfs"]).is_empty());
    let table = berth
        .docker_ok(&["volume", "ls", "--format", "{{.Driver}} {{.Name}}"])
        .unwrap();
    assert!(table.lines().any(|l| l == "local data1"), "{table}");
    assert!(
        docker_err(&berth, &["volume", "ls", "-f", "bogus=1"]).contains("invalid filter 'bogus'")
    );
    assert!(
        docker_err(&berth, &["volume", "ls", "-f", "dangling=maybe"])
            .contains("invalid filter 'dangling=maybe'")
    );

    step!("a volume in use: dangling=false, and rm refused (409) even with -f");
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "user",
            "-v",
            "data1:/data",
            &img,
            "sleep",
            "600",
        ])
        .unwrap();
    let user_id = berth.inspect("{{.Id}}", "user").unwrap();
    assert_eq!(
        volume_names(&berth, &["-f", "dangling=false"]),
        vec!["data1"]
    );
    let mut dangling = vec!["tmpvol".to_string(), unnamed.clone()];
    dangling.sort();
    assert_eq!(volume_names(&berth, &["-f", "dangling=true"]), dangling);
    for args in [
        &["volume", "rm", "data1"][..],
        &["volume", "rm", "-f", "data1"],
    ] {
        let err = docker_err(&berth, args);
        assert!(
            err.contains(&format!("remove data1: volume is in use - [{user_id}]")),
            "{err}"
        );
    }
    let resp = berth_e2e::http::unix_request(berth.socket(), "DELETE", "/volumes/data1", None, b"")
        .unwrap();
    assert_eq!(resp.status, 409);
    assert!(Path::new(&mp).is_dir());

    step!("volume rm: a missing volume, -f, and a real removal");
    assert!(docker_err(&berth, &["volume", "rm", "nope"]).contains("no such volume"));
    berth.docker_ok(&["volume", "rm", "-f", "nope"]).unwrap();
    berth.docker_ok(&["volume", "create", "gone"]).unwrap();
    let gone_mp = berth
        .docker_ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", "gone"])
        .unwrap();
    assert_eq!(
        berth.docker_ok(&["volume", "rm", "gone"]).unwrap(),
        "gone\n"
    );
    assert!(!Path::new(gone_mp.trim()).exists());
    assert!(docker_err(&berth, &["volume", "inspect", "gone"]).contains("no such volume"));

    step!("prune: unused anonymous volumes only, then --all; never in use or option volumes");
    // A container's anonymous volume outlives `docker rm` without -v.
    berth
        .docker_ok(&[
            "run",
            "--name",
            "anon",
            "-v",
            "/anon",
            &img,
            "sh",
            "-c",
            "head -c 2048 /dev/zero > /anon/f",
        ])
        .unwrap();
    let anon = mounts_of(&berth, "anon")[0]["Name"]
        .as_str()
        .unwrap()
        .to_string();
    berth.docker_ok(&["rm", "anon"]).unwrap();
    berth
        .docker_ok(&["volume", "create", "named-unused"])
        .unwrap();
    berth
        .docker_ok(&["volume", "create", "--label", "keep=yes", "labelled"])
        .unwrap();
    let out = berth.docker_ok(&["volume", "prune", "-f"]).unwrap();
    assert!(out.contains("Deleted Volumes:"), "{out}");
    assert!(out.contains(&anon) && out.contains(&unnamed), "{out}");
    assert!(out.contains("Total reclaimed space: 2.048kB"), "{out}");
    let left = volume_names(&berth, &[]);
    assert!(
        !left.contains(&anon) && !left.contains(&unnamed),
        "{left:?}"
    );
    assert!(left.contains(&"named-unused".to_string()), "{left:?}");
    // --all with a label filter narrows it; label! excludes.
    let out = berth
        .docker_ok(&["volume", "prune", "-af", "--filter", "label=keep=yes"])
        .unwrap();
    assert!(
        out.contains("labelled") && !out.contains("named-unused"),
        "{out}"
    );
    let out = berth.docker_ok(&["volume", "prune", "-af"]).unwrap();
    assert!(out.contains("named-unused"), "{out}");
    assert_eq!(volume_names(&berth, &[]), vec!["data1", "tmpvol"]);
    assert!(
        docker_err(
            &berth,
            &["volume", "prune", "-f", "--filter", "dangling=true"]
        )
        .contains("invalid filter 'dangling'")
    );
    let out = berth.docker_ok(&["volume", "prune", "-af"]).unwrap();
    assert!(out.contains("Total reclaimed space: 0B"), "{out}");

    berth.docker_ok(&["rm", "-f", "user"]).unwrap();
    // Unused now: it can go, data and all.
    berth.docker_ok(&["volume", "rm", "data1"]).unwrap();
    assert!(!Path::new(&mp).exists());

    step!("the volume API's events: create, destroy, prune");
    // A past or near `--until` makes the CLI return after the replay.
    let until = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1)
    .to_string();
    let events = berth
        .docker_ok(&[
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &until,
            "--filter",
            "type=volume",
            "--format",
            "{{.Action}} {{.Actor.ID}}",
        ])
        .unwrap();
    for want in [
        "create data1",
        "destroy data1",
        "destroy named-unused",
        "prune ",
    ] {
        assert!(
            events.lines().any(|l| l.starts_with(want)),
            "{want}: {events}"
        );
    }
    // Creating an existing volume is no new event.
    assert_eq!(
        events.lines().filter(|l| *l == "create data1").count(),
        1,
        "{events}"
    );
}

#[test]
fn container_mounts() {
    let (registry, image, img) = registry_with_busybox().unwrap();
    let berth = Berth::start("volume-mounts").unwrap();
    berth.docker_ok(&["pull", &img]).unwrap();
    let host = tempfile::Builder::new()
        .prefix("berth-vol-host")
        .tempdir_in("/tmp")
        .unwrap();
    let hdir = host.path().join("shared");
    std::fs::create_dir(&hdir).unwrap();
    std::fs::write(hdir.join("from-host"), b"host file\n").unwrap();
    let hdir_s = hdir.to_str().unwrap().to_string();

    step!("-v name:/path: data written by one container is read by the next");
    berth
        .docker_ok(&[
            "run",
            "--rm",
            "-v",
            "keep:/data",
            &img,
            "sh",
            "-c",
            "echo kept > /data/f",
        ])
        .unwrap();
    let out = berth
        .docker_ok(&["run", "--rm", "-v", "keep:/data", &img, "cat", "/data/f"])
        .unwrap();
    assert_eq!(out, "kept\n");

    step!("-v host:path binds: :ro refuses writes, :z is tolerated, a missing source is created");
    let out = berth
        .docker_ok(&[
            "run",
            "--rm",
            "-v",
            &format!("{hdir_s}:/h:ro"),
            &img,
            "cat",
            "/h/from-host",
        ])
        .unwrap();
    assert_eq!(out, "host file\n");
    let out = berth.docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{hdir_s}:/h:ro"),
        &img,
        "touch",
        "/h/x",
    ]);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("Read-only file system"), "{out}");
    berth
        .docker_ok(&[
            "run",
            "--rm",
            "-v",
            &format!("{hdir_s}:/h:z"),
            &img,
            "sh",
            "-c",
            "echo from-container > /h/written",
        ])
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(hdir.join("written")).unwrap(),
        "from-container\n"
    );
    let fresh = host.path().join("made/by/run");
    berth
        .docker_ok(&[
            "run",
            "--rm",
            "-v",
            &format!("{}:/m", fresh.display()),
            &img,
            "true",
        ])
        .unwrap();
    assert!(fresh.is_dir());

    step!("inspect Mounts for -v: named, anonymous, bind");
    berth
        .docker_ok(&[
            "create",
            "--name",
            "shown",
            "-v",
            "keep:/data",
            "-v",
            "/anon",
            "-v",
            &format!("{hdir_s}:/h:ro"),
            &img,
            "true",
        ])
        .unwrap();
    let mounts = mounts_of(&berth, "shown");
    assert_eq!(mounts.len(), 3, "{mounts:?}");
    let named = mount_at(&mounts, "/data");
    assert_eq!(named["Type"], "volume");
    assert_eq!(named["Name"], "keep");
    assert_eq!(named["Driver"], "local");
    assert_eq!(named["Mode"], "z");
    assert_eq!(named["RW"], true);
    assert_eq!(
        Path::new(named["Source"].as_str().unwrap()),
        berth.data_root().join("volumed/volumes/keep/_data")
    );
    let anon = mount_at(&mounts, "/anon");
    assert_eq!(anon["Type"], "volume");
    assert_eq!(anon["Name"].as_str().unwrap().len(), 64);
    let bind = mount_at(&mounts, "/h");
    assert_eq!(bind["Type"], "bind");
    assert_eq!(bind["Source"], hdir_s.as_str());
    assert_eq!(bind["Mode"], "ro");
    assert_eq!(bind["RW"], false);
    assert_eq!(bind["Propagation"], "rprivate");

    step!("docker rm -v drops the anonymous volume, never the named one");
    let anon_name = anon["Name"].as_str().unwrap().to_string();
    assert!(volume_names(&berth, &[]).contains(&anon_name));
    berth.docker_ok(&["rm", "-v", "shown"]).unwrap();
    let left = volume_names(&berth, &[]);
    assert!(!left.contains(&anon_name), "{left:?}");
    assert!(left.contains(&"keep".to_string()));

    step!("--rm drops the anonymous volume when the container goes");
    let before = volume_names(&berth, &[]);
    berth
        .docker_ok(&["run", "--rm", "-v", "/scratch", &img, "touch", "/scratch/x"])
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || volume_names(&berth, &[])
            == before),
        "anonymous volume of a --rm container left: {:?}",
        volume_names(&berth, &[])
    );

    step!("copy-up: a new volume over /etc gets the image's files, owners and modes");
    let out = berth
        .docker_ok(&[
            "run",
            "--rm",
            "-v",
            "etcvol:/etc",
            &img,
            "cat",
            "/etc/passwd",
        ])
        .unwrap();
    assert!(out.starts_with("root:x:0:0:"), "{out}");
    let etc_mp = berth.data_root().join("volumed/volumes/etcvol/_data");
    let md = std::fs::metadata(etc_mp.join("passwd")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o644);
    assert_eq!((md.uid(), md.gid()), (0, 0));
    assert!(etc_mp.join("group").is_file());
    // The container's own /etc files still go over the volume.
    let out = berth
        .docker_ok(&[
            "run",
            "--rm",
            "--hostname",
            "volhost",
            "-v",
            "etcvol:/etc",
            &img,
            "sh",
            "-c",
            "cat /etc/hostname; grep -c localhost /etc/hosts",
        ])
        .unwrap();
    assert!(out.starts_with("volhost\n"), "{out}");
    // Only into an empty volume: what is there stays.
    std::fs::write(etc_mp.join("passwd"), b"changed\n").unwrap();
    let out = berth
        .docker_ok(&[
            "run",
            "--rm",
            "-v",
            "etcvol:/etc",
            &img,
            "cat",
            "/etc/passwd",
        ])
        .unwrap();
    assert_eq!(out, "changed\n");
    // nocopy: the volume stays empty.
    let out = berth
        .docker_ok(&[
            "run",
            "--rm",
            "-v",
            "bare:/etc:nocopy",
            &img,
            "sh",
            "-c",
            "test -e /etc/passwd && echo present || echo absent",
        ])
        .unwrap();
    assert_eq!(out, "absent\n");
    // An anonymous volume is filled too.
    let out = berth
        .docker_ok(&["run", "--rm", "-v", "/etc", &img, "cat", "/etc/group"])
        .unwrap();
    assert!(out.contains("root:x:0:"), "{out}");

    step!("--mount type=volume with label, options, readonly, nocopy, anonymous");
    berth
        .docker_ok(&[
            "run", "-d", "--name", "mnt",
            "--mount", "type=volume,src=mvol,dst=/m,volume-label=made=by-mount",
            "--mount", "type=volume,dst=/anon-m",
            "--mount", "type=volume,src=optvol,dst=/o,volume-opt=type=tmpfs,volume-opt=device=tmpfs,volume-opt=o=size=8m",
            "--mount", "type=volume,src=keep,dst=/ro,readonly",
            "--mount", "type=volume,src=nc,dst=/etc,volume-nocopy",
            "--mount", &format!("type=bind,src={hdir_s},dst=/b,readonly"),
            "--mount", "type=tmpfs,dst=/t,tmpfs-size=1m,tmpfs-mode=1770",
            "--tmpfs", "/run:size=64k",
            &img, "sleep", "600",
        ])
        .unwrap();
    let mv = inspect_json(&berth, &["volume", "inspect", "mvol"]);
    assert_eq!(mv["Labels"]["made"], "by-mount");
    let ov = inspect_json(&berth, &["volume", "inspect", "optvol"]);
    assert_eq!(ov["Options"]["type"], "tmpfs");
    let line = proc_mount(&berth, "mnt", "/o");
    assert!(line.starts_with("tmpfs /o tmpfs"), "{line}");
    assert!(line.contains("size=8192k"), "{line}");
    let out = berth.docker(&["exec", "mnt", "touch", "/ro/x"]);
    assert!(out.stderr.contains("Read-only file system"), "{out}");
    let out = berth.docker(&["exec", "mnt", "touch", "/b/x"]);
    assert!(out.stderr.contains("Read-only file system"), "{out}");
    assert_eq!(
        berth
            .docker_ok(&["exec", "mnt", "cat", "/b/from-host"])
            .unwrap(),
        "host file\n"
    );
    let out = berth.docker_ok(&["exec", "mnt", "ls", "/etc"]).unwrap();
    assert!(
        !out.contains("passwd"),
        "nocopy volume got the image's files: {out}"
    );

    step!("--mount type=tmpfs and --tmpfs: size, mode, noexec; only --mount in inspect Mounts");
    let line = proc_mount(&berth, "mnt", "/t");
    assert!(line.starts_with("tmpfs /t tmpfs"), "{line}");
    assert!(
        line.contains("size=1024k") && line.contains("mode=1770"),
        "{line}"
    );
    assert!(line.contains("noexec") && line.contains("nosuid"), "{line}");
    let out = berth.docker(&[
        "exec",
        "mnt",
        "sh",
        "-c",
        "dd if=/dev/zero of=/t/big bs=1024 count=2048",
    ]);
    assert!(out.stderr.contains("No space left on device"), "{out}");
    let size = berth
        .docker_ok(&["exec", "mnt", "stat", "-c", "%s", "/t/big"])
        .unwrap();
    assert!(size.trim().parse::<u64>().unwrap() <= 1 << 20, "{size}");
    let line = proc_mount(&berth, "mnt", "/run");
    assert!(
        line.contains("size=64k") && line.contains("noexec"),
        "{line}"
    );
    let mounts = mounts_of(&berth, "mnt");
    let t = mount_at(&mounts, "/t");
    assert_eq!(t["Type"], "tmpfs");
    assert_eq!(t["Source"], "");
    assert!(
        !mounts.iter().any(|m| m["Destination"] == "/run"),
        "--tmpfs shows in Mounts: {mounts:?}"
    );
    assert_eq!(mount_at(&mounts, "/b")["Type"], "bind");
    assert_eq!(mount_at(&mounts, "/m")["Name"], "mvol");
    assert_eq!(
        mount_at(&mounts, "/anon-m")["Name"].as_str().unwrap().len(),
        64
    );
    assert_eq!(
        inspect_json(&berth, &["inspect", "mnt"])["HostConfig"]["Tmpfs"]["/run"],
        "size=64k"
    );

    step!("--volumes-from shares volumes and binds; :ro makes them read-only");
    berth
        .docker_ok(&[
            "create",
            "--name",
            "src",
            "-v",
            "fromvol:/shared",
            "-v",
            "/src-anon",
            "-v",
            &format!("{hdir_s}:/hb"),
            &img,
            "true",
        ])
        .unwrap();
    berth
        .docker_ok(&[
            "run",
            "--rm",
            "--volumes-from",
            "src",
            &img,
            "sh",
            "-c",
            "echo via-from > /shared/f; ls /src-anon; cat /hb/from-host",
        ])
        .unwrap();
    berth
        .docker_ok(&[
            "create",
            "--name",
            "taker",
            "--volumes-from",
            "src:ro",
            &img,
            "true",
        ])
        .unwrap();
    let src_mounts = mounts_of(&berth, "src");
    let taker_mounts = mounts_of(&berth, "taker");
    for dest in ["/shared", "/src-anon", "/hb"] {
        assert_eq!(
            mount_at(&src_mounts, dest)["Source"],
            mount_at(&taker_mounts, dest)["Source"],
            "{dest}"
        );
        assert_eq!(mount_at(&taker_mounts, dest)["RW"], false, "{dest}");
    }
    let out = berth.docker(&[
        "run",
        "--rm",
        "--volumes-from",
        "src:ro",
        &img,
        "touch",
        "/shared/x",
    ]);
    assert!(out.stderr.contains("Read-only file system"), "{out}");
    let out = berth
        .docker_ok(&["run", "--rm", "-v", "fromvol:/v", &img, "cat", "/v/f"])
        .unwrap();
    assert_eq!(out, "via-from\n");
    // The shared anonymous volume is in use by "taker": rm -v of "src" keeps it.
    let src_anon = mount_at(&src_mounts, "/src-anon")["Name"]
        .as_str()
        .unwrap()
        .to_string();
    berth.docker_ok(&["rm", "-v", "src"]).unwrap();
    assert!(volume_names(&berth, &[]).contains(&src_anon));
    berth.docker_ok(&["rm", "-v", "taker"]).unwrap();
    assert!(!volume_names(&berth, &[]).contains(&src_anon));

    step!("an image VOLUME becomes an anonymous volume filled from the image, unless mounted over");
    let withvol = push_with_volumes(&image, &registry, &["/etc"]);
    berth.docker_ok(&["pull", &withvol]).unwrap();
    berth
        .docker_ok(&["run", "--name", "iv", &withvol, "cat", "/etc/passwd"])
        .unwrap();
    let ivm = mounts_of(&berth, "iv");
    assert_eq!(ivm.len(), 1, "{ivm:?}");
    assert_eq!(ivm[0]["Destination"], "/etc");
    let iv_name = ivm[0]["Name"].as_str().unwrap().to_string();
    let iv_src = ivm[0]["Source"].as_str().unwrap().to_string();
    assert!(Path::new(&iv_src).join("passwd").is_file());
    berth.docker_ok(&["rm", "-v", "iv"]).unwrap();
    assert!(!volume_names(&berth, &[]).contains(&iv_name));
    berth
        .docker_ok(&[
            "create",
            "--name",
            "iv2",
            "-v",
            "etcvol:/etc",
            &withvol,
            "true",
        ])
        .unwrap();
    let ivm = mounts_of(&berth, "iv2");
    assert_eq!(ivm.len(), 1, "{ivm:?}");
    assert_eq!(ivm[0]["Name"], "etcvol");
    berth.docker_ok(&["rm", "-v", "iv2"]).unwrap();

    step!("local-driver bind volume: the host directory, read-only with o=bind,ro");
    berth
        .docker_ok(&[
            "volume",
            "create",
            "-o",
            "type=none",
            "-o",
            "o=bind",
            "-o",
            &format!("device={hdir_s}"),
            "hostvol",
        ])
        .unwrap();
    berth
        .docker_ok(&[
            "volume",
            "create",
            "-o",
            "type=none",
            "-o",
            "o=bind,ro",
            "-o",
            &format!("device={hdir_s}"),
            "hostvol-ro",
        ])
        .unwrap();
    let out = berth
        .docker_ok(&[
            "run",
            "--rm",
            "-v",
            "hostvol:/hv",
            &img,
            "sh",
            "-c",
            "cat /hv/from-host; echo via-volume > /hv/by-volume",
        ])
        .unwrap();
    assert_eq!(out, "host file\n");
    assert_eq!(
        std::fs::read_to_string(hdir.join("by-volume")).unwrap(),
        "via-volume\n"
    );
    let out = berth.docker(&[
        "run",
        "--rm",
        "-v",
        "hostvol-ro:/hv",
        &img,
        "touch",
        "/hv/x",
    ]);
    assert!(out.stderr.contains("Read-only file system"), "{out}");
    // Removing the volume never touches the host directory.
    berth
        .docker_ok(&["volume", "rm", "hostvol", "hostvol-ro"])
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(hdir.join("from-host")).unwrap(),
        "host file\n"
    );

    step!("bad mounts: Docker's errors, nothing left behind");
    let containers_before = berth.docker_ok(&["ps", "-aq"]).unwrap();
    let volumes_before = volume_names(&berth, &[]);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["-v".into(), "v9:/b:bogus".into()],
            "invalid mode: bogus",
        ),
        (
            vec!["-v".into(), "v9:rel".into()],
            "invalid mount path: 'rel' mount path must be absolute",
        ),
        (
            vec!["-v".into(), "v9:/x".into(), "-v".into(), "v8:/x".into()],
            "Duplicate mount point: /x",
        ),
        (
            vec![
                "--mount".into(),
                "type=bind,src=/nonexistent/berth-e2e,dst=/b".into(),
            ],
            "bind source path does not exist: /nonexistent/berth-e2e",
        ),
        (
            vec!["--mount".into(), "type=volume,dst=/a,readonly".into()],
            "must not set ReadOnly mode when using anonymous volumes",
        ),
        (
            vec!["--volumes-from".into(), "nosuch".into()],
            "No such container: nosuch",
        ),
        (
            vec!["--tmpfs".into(), "/t:bogus=1".into()],
            "invalid tmpfs option \"bogus\"",
        ),
        (
            vec![
                "-v".into(),
                "v9:/x".into(),
                "--mount".into(),
                "type=volume,src=v8,dst=/x".into(),
            ],
            "Duplicate mount point: /x",
        ),
    ];
    for (flags, want) in cases {
        let mut args: Vec<&str> = vec!["create"];
        args.extend(flags.iter().map(String::as_str));
        args.extend([img.as_str(), "true"]);
        let err = docker_err(&berth, &args);
        assert!(err.contains(want), "{flags:?}: want {want:?} in {err}");
    }
    // A create whose volume mount fails undoes the volume it created before.
    berth
        .docker_ok(&[
            "volume",
            "create",
            "-o",
            "type=none",
            "-o",
            "o=bind",
            "-o",
            "device=/nonexistent/berth-e2e",
            "broken",
        ])
        .unwrap();
    let err = docker_err(
        &berth,
        &[
            "create",
            "-v",
            "a-fresh:/a",
            "-v",
            "broken:/z",
            &img,
            "true",
        ],
    );
    assert!(err.contains("failed to mount local volume"), "{err}");
    assert!(err.contains("no such file or directory"), "{err}");
    let mut with_broken = volumes_before.clone();
    with_broken.push("broken".into());
    with_broken.sort();
    assert_eq!(volume_names(&berth, &[]), with_broken);
    assert_eq!(berth.docker_ok(&["ps", "-aq"]).unwrap(), containers_before);

    berth.docker_ok(&["rm", "-f", "mnt"]).unwrap();
    // optvol's tmpfs goes with its last user.
    let ov_mp = ov["Mountpoint"].as_str().unwrap();
    assert!(
        !berth_e2e::procs::mountinfo(Path::new("/proc/self/mountinfo"))
            .iter()
            .any(|m| m.mount_point == Path::new(ov_mp)),
        "optvol still mounted after its container went"
    );
}

#[test]
fn volume_data_survives_every_service_restart() {
    let (_registry, _image, img) = registry_with_busybox().unwrap();
    let berth = Berth::start("volume-restart").unwrap();
    berth.docker_ok(&["pull", &img]).unwrap();

    step!("data in a named volume outlives its container");
    berth
        .docker_ok(&[
            "run",
            "--name",
            "writer",
            "-v",
            "persist:/data",
            &img,
            "sh",
            "-c",
            "echo precious > /data/f",
        ])
        .unwrap();
    berth.docker_ok(&["rm", "-v", "writer"]).unwrap();
    berth
        .docker_ok(&[
            "volume",
            "create",
            "-o",
            "type=tmpfs",
            "-o",
            "device=tmpfs",
            "-o",
            "o=size=4m",
            "ram",
        ])
        .unwrap();
    berth
        .docker_ok(&[
            "run",
            "-d",
            "--name",
            "holder",
            "-v",
            "ram:/ram",
            "-v",
            "persist:/data",
            &img,
            "sh",
            "-c",
            "echo in-ram > /ram/f; sleep 600",
        ])
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || berth
        .docker(&["exec", "holder", "cat", "/ram/f"])
        .success()));

    for service in berth_e2e::berth::SERVICE_BINARIES {
        step!("kill -9 {service}");
        let old = berth
            .service_pid(service)
            .unwrap_or_else(|| panic!("{service} is not a child of berthd"));
        kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
        assert!(
            wait_until(Duration::from_secs(20), || berth
                .service_pid(service)
                .is_some_and(|p| p != old)),
            "berthd did not restart {service}"
        );
        let mut last = berth.docker(&["volume", "ls", "-q"]);
        assert!(
            wait_until(Duration::from_secs(30), || {
                last = berth.docker(&["volume", "ls", "-q"]);
                last.success()
            }),
            "volume ls kept failing after {service} restarted: {last}"
        );
        assert!(last.stdout.lines().any(|l| l == "persist"), "{last}");
        let mut out = berth.docker(&["run", "--rm", "-v", "persist:/data", &img, "cat", "/data/f"]);
        assert!(
            wait_until(Duration::from_secs(30), || {
                out = berth.docker(&["run", "--rm", "-v", "persist:/data", &img, "cat", "/data/f"]);
                out.success()
            }),
            "after {service}: {out}"
        );
        assert_eq!(out.stdout, "precious\n", "after {service}");
        // The tmpfs volume stays mounted (and so keeps its data) while its user runs.
        let out = berth
            .docker_ok(&["exec", "holder", "cat", "/ram/f"])
            .unwrap();
        assert_eq!(out, "in-ram\n", "after {service}");
        let err = docker_err(&berth, &["volume", "rm", "persist"]);
        assert!(err.contains("volume is in use"), "after {service}: {err}");
    }

    step!("the tmpfs volume is unmounted once its last user is removed");
    let ram_mp = berth
        .docker_ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", "ram"])
        .unwrap();
    let mounted = || {
        berth_e2e::procs::mountinfo(Path::new("/proc/self/mountinfo"))
            .iter()
            .any(|m| m.mount_point == Path::new(ram_mp.trim()) && m.fstype == "tmpfs")
    };
    assert!(mounted());
    berth.docker_ok(&["rm", "-f", "holder"]).unwrap();
    assert!(!mounted());
    let out = berth
        .docker_ok(&["run", "--rm", "-v", "ram:/ram", &img, "ls", "/ram"])
        .unwrap();
    assert_eq!(out, "", "a tmpfs volume starts empty for its next user");
}
