//! Component test: the real berth-imaged binary against Debian's docker-registry on
//! loopback. Needs root (overlay mounts).

// Test helpers panic on failure by design: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use berth_proto::images::images_client::ImagesClient;
use berth_proto::images::{
    GetImageRequest, ListImagesRequest, PrepareSnapshotRequest, PullProgress, PullRequest,
    RemoveSnapshotRequest,
};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use sha2::{Digest, Sha256};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// Kills a child we started (by its PID) when the test ends, also on failure.
struct Proc {
    child: Option<Child>,
}

impl Proc {
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

struct Imaged {
    proc: Proc,
    data: PathBuf,
    run: PathBuf,
}

impl Imaged {
    async fn start(data: &Path, run: &Path) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_berth-imaged"))
            .arg("--data-root")
            .arg(data)
            .arg("--exec-root")
            .arg(run)
            .arg("--config-file")
            .arg(data.join("daemon.json"))
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn berth-imaged");
        let me = Self {
            proc: Proc { child: Some(child) },
            data: data.to_path_buf(),
            run: run.to_path_buf(),
        };
        let sock = me.socket();
        for _ in 0..100 {
            if berth_kit::grpc::is_serving(&sock, Duration::from_millis(200)).await {
                return me;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("berth-imaged did not become healthy");
    }

    fn socket(&self) -> PathBuf {
        self.run.join("imaged.sock")
    }

    fn client(&self) -> ImagesClient<Channel> {
        ImagesClient::new(berth_kit::grpc::channel(&self.socket()))
    }

    fn dir(&self) -> PathBuf {
        self.data.join("imaged")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_registry(dir: &Path) -> (Proc, u16) {
    let port = free_port();
    let cfg = dir.join("registry.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("storage").display()
        ),
    )
    .unwrap();
    let child = Command::new(REGISTRY_BIN)
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn docker-registry");
    let proc = Proc { child: Some(child) };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (proc, port);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("docker-registry did not listen on {port}");
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, data).unwrap();
    gz.finish().unwrap()
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

fn dir_entry(b: &mut tar::Builder<Vec<u8>>, path: &str) {
    let mut h = header(tar::EntryType::Directory, 0, 0o755);
    b.append_data(&mut h, path, &[][..]).unwrap();
}

fn file_entry(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
    let mut h = header(tar::EntryType::Regular, data.len() as u64, mode);
    b.append_data(&mut h, path, data).unwrap();
}

/// Layer 1: busybox + sh symlink + a file layer 2 deletes. Layer 2: a new file and the
/// whiteout.
fn busybox_layers() -> (Vec<u8>, Vec<u8>) {
    let mut b = tar::Builder::new(Vec::new());
    dir_entry(&mut b, "bin/");
    let busybox = std::fs::read("/bin/busybox").unwrap();
    file_entry(&mut b, "bin/busybox", &busybox, 0o755);
    let mut h = header(tar::EntryType::Symlink, 0, 0o777);
    b.append_link(&mut h, "bin/sh", "busybox").unwrap();
    dir_entry(&mut b, "etc/");
    file_entry(&mut b, "etc/gone", b"delete me", 0o644);
    file_entry(&mut b, "etc/kept", b"keep me", 0o644);
    let l1 = b.into_inner().unwrap();

    let mut b = tar::Builder::new(Vec::new());
    dir_entry(&mut b, "etc/");
    file_entry(&mut b, "etc/added", b"layer two", 0o644);
    file_entry(&mut b, "etc/.wh.gone", b"", 0o644);
    let l2 = b.into_inner().unwrap();
    (l1, l2)
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

struct Pushed {
    manifest_digest: String,
    config_digest: String,
}

/// Pushes an image made of `layers` (blob bytes, media type, diff ID) with oci-client;
/// the manifest gives each layer's size `understate` bytes short (0: the true size).
async fn push_image(
    port: u16,
    name: &str,
    layers: &[(Vec<u8>, &str, String)],
    manifest_type: &str,
    config_type: &str,
    understate: usize,
) -> Pushed {
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    let reference: Reference = format!("127.0.0.1:{port}/{name}").parse().unwrap();
    client
        .auth(
            &reference,
            &RegistryAuth::Anonymous,
            RegistryOperation::Push,
        )
        .await
        .ok();
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.2.as_str()).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": host_arch(),
        "os": "linux",
        "created": "2024-01-02T03:04:05Z",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_digest = sha(&config);
    client
        .push_blob(&reference, config.clone(), &config_digest)
        .await
        .unwrap();
    let mut descs = Vec::new();
    for (blob, media, _) in layers {
        let d = sha(blob);
        client
            .push_blob(&reference, blob.clone(), &d)
            .await
            .unwrap();
        let size = blob.len() - understate;
        descs.push(serde_json::json!({"mediaType": media, "size": size, "digest": d}));
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {"mediaType": config_type, "size": config.len(), "digest": config_digest},
        "layers": descs,
    }))
    .unwrap();
    let manifest_digest = sha(&manifest);
    client
        .push_manifest_raw(
            &reference,
            manifest,
            http::HeaderValue::from_str(manifest_type).unwrap(),
        )
        .await
        .unwrap();
    Pushed {
        manifest_digest,
        config_digest,
    }
}

async fn pull(
    client: &mut ImagesClient<Channel>,
    reference: &str,
) -> Result<Vec<PullProgress>, tonic::Status> {
    let mut stream = client
        .pull(PullRequest {
            reference: reference.to_string(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await? {
        out.push(m);
    }
    Ok(out)
}

fn statuses(msgs: &[PullProgress]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.status != "Downloading")
        .map(|m| {
            if m.id.is_empty() {
                m.status.clone()
            } else {
                format!("{}: {}", m.id, m.status)
            }
        })
        .collect()
}

fn dir_is_empty(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

fn is_mounted(p: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = p.display().to_string();
    table
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(p.as_str()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_lookup_snapshot_and_crash_recovery() {
    if !Path::new(REGISTRY_BIN).exists() {
        eprintln!("skipping: {REGISTRY_BIN} is not installed");
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("b")
        .tempdir_in("/tmp")
        .unwrap();
    let data = tmp.path().join("d");
    let run = tmp.path().join("r");
    let reg_dir = tmp.path().join("reg");
    std::fs::create_dir_all(&reg_dir).unwrap();
    let (mut registry, port) = start_registry(&reg_dir).await;
    let mut imaged = Imaged::start(&data, &run).await;
    let mut c = imaged.client();

    // A 2-layer image, Docker v2 media types, gzip layers.
    let (l1, l2) = busybox_layers();
    let layers = vec![
        (
            gzip(&l1),
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            sha(&l1),
        ),
        (
            gzip(&l2),
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            sha(&l2),
        ),
    ];
    let pushed = push_image(
        port,
        "test/busybox",
        &layers,
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.container.image.v1+json",
        0,
    )
    .await;
    let name = format!("127.0.0.1:{port}/test/busybox");
    let image_id = pushed.config_digest.clone();
    let hex = image_id.trim_start_matches("sha256:").to_string();
    let short1 = &sha(&layers[0].0)[7..19];
    let short2 = &sha(&layers[1].0)[7..19];

    // Pull: Docker's message sequence. The layers download side by side, so their
    // messages interleave; each layer's own come in order, between the head and the tail.
    let msgs = pull(&mut c, &name).await.unwrap();
    let st = statuses(&msgs);
    assert_eq!(
        st[..3],
        [
            "latest: Pulling from test/busybox".to_string(),
            format!("{short1}: Pulling fs layer"),
            format!("{short2}: Pulling fs layer"),
        ]
    );
    assert_eq!(
        st[st.len() - 2..],
        [
            format!("Digest: {}", pushed.manifest_digest),
            format!("Status: Downloaded newer image for {name}:latest"),
        ]
    );
    assert_eq!(st.len(), 13, "{st:?}");
    for short in [short1, short2] {
        let own: Vec<&String> = st[3..]
            .iter()
            .filter(|s| s.starts_with(&format!("{short}: ")))
            .collect();
        let want: Vec<String> = [
            "Verifying Checksum",
            "Download complete",
            "Extracting",
            "Pull complete",
        ]
        .iter()
        .map(|w| format!("{short}: {w}"))
        .collect();
        assert_eq!(own, want.iter().collect::<Vec<_>>(), "{st:?}");
    }
    let dl = msgs
        .iter()
        .find(|m| m.status == "Downloading" && m.id == short1)
        .expect("a Downloading message");
    assert_eq!(dl.total, layers[0].0.len() as i64);
    let image = msgs
        .last()
        .unwrap()
        .image
        .clone()
        .expect("last message carries the image");
    assert_eq!(image.id, image_id);
    assert_eq!(image.repo_tags, vec![format!("{name}:latest")]);
    assert_eq!(
        image.repo_digests,
        vec![format!("{name}@{}", pushed.manifest_digest)]
    );
    assert_eq!(image.diff_ids, vec![sha(&l1), sha(&l2)]);
    assert_eq!(image.os, "linux");
    assert_eq!(image.created, "2024-01-02T03:04:05Z");
    assert!(image.size > 1_000_000, "size {}", image.size);
    assert_eq!(sha(&image.config_json), image_id);

    // Pulling again: layers exist, image up to date.
    let st = statuses(&pull(&mut c, &name).await.unwrap());
    assert_eq!(st[1], format!("{short1}: Already exists"));
    assert_eq!(st[2], format!("{short2}: Already exists"));
    assert_eq!(
        st.last().unwrap(),
        &format!("Status: Image is up to date for {name}:latest")
    );

    // Pulling by digest: no new tag, the repo digest is already known.
    let by_digest = format!("{name}@{}", pushed.manifest_digest);
    let st = statuses(&pull(&mut c, &by_digest).await.unwrap());
    assert_eq!(
        st[0],
        format!("{}: Pulling from test/busybox", pushed.manifest_digest)
    );
    assert_eq!(
        st.last().unwrap(),
        &format!("Status: Image is up to date for {by_digest}")
    );

    // Lookups.
    for r in [
        name.clone(),
        format!("{name}:latest"),
        format!("{name}@{}", pushed.manifest_digest),
        image_id.clone(),
        hex.clone(),
        hex[..12].to_string(),
        hex[..3].to_string(),
    ] {
        let got = c
            .get_image(GetImageRequest {
                reference: r.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("GetImage {r}: {e}"))
            .into_inner();
        assert_eq!(got.id, image_id, "GetImage {r}");
    }
    let err = c
        .get_image(GetImageRequest {
            reference: format!("127.0.0.1:{port}/nope"),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        err.message(),
        format!("No such image: 127.0.0.1:{port}/nope:latest")
    );
    let err = c
        .get_image(GetImageRequest {
            reference: "busybox".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "No such image: busybox:latest");
    let list = c
        .list_images(ListImagesRequest { all: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.images.len(), 1);

    // Errors.
    let err = pull(&mut c, &format!("127.0.0.1:{port}/nope"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        err.message().starts_with(&format!(
            "manifest for 127.0.0.1:{port}/nope:latest not found: "
        )),
        "{}",
        err.message()
    );
    let err = pull(&mut c, &format!("{name}:missing")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        err.message(),
        format!("manifest for {name}:missing not found: manifest unknown: manifest unknown")
    );
    let dead = free_port();
    let err = pull(&mut c, &format!("127.0.0.1:{dead}/busybox"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(
        err.message(),
        format!(
            "Get \"http://127.0.0.1:{dead}/v2/\": dial tcp 127.0.0.1:{dead}: connect: connection refused"
        )
    );
    let err = pull(&mut c, "Busybox").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "invalid reference format: repository name (library/Busybox) must be lowercase"
    );

    // Snapshot: the merged rootfs has both layers, minus the whited-out file.
    let snap = c
        .prepare_snapshot(PrepareSnapshotRequest {
            container_id: "c1".into(),
            image_id: image_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let rootfs = PathBuf::from(&snap.rootfs_path);
    assert_eq!(rootfs, imaged.dir().join("snapshots/c1/merged"));
    assert!(is_mounted(&rootfs));
    assert!(rootfs.join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(rootfs.join("bin/sh")).unwrap(),
        PathBuf::from("busybox")
    );
    assert_eq!(
        std::fs::read(rootfs.join("etc/added")).unwrap(),
        b"layer two"
    );
    assert_eq!(std::fs::read(rootfs.join("etc/kept")).unwrap(), b"keep me");
    assert!(!rootfs.join("etc/gone").exists());
    // The busybox in the rootfs really runs there.
    let out = Command::new("chroot")
        .arg(&rootfs)
        .args(["/bin/sh", "-c", "echo hi from $0"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi from /bin/sh\n");
    // Writes go to the upper dir, not to the layers.
    std::fs::write(rootfs.join("etc/new"), b"x").unwrap();
    assert!(Path::new(&snap.upper_dir).join("etc/new").exists());
    // Idempotent.
    let again = c
        .prepare_snapshot(PrepareSnapshotRequest {
            container_id: "c1".into(),
            image_id: image_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.rootfs_path, snap.rootfs_path);

    // A recorded snapshot that is not mounted (a reboot) is mounted again on start.
    imaged.proc.kill9();
    nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH).unwrap();
    assert!(!is_mounted(&rootfs));
    imaged = Imaged::start(&data, &run).await;
    c = imaged.client();
    assert!(is_mounted(&rootfs));
    assert_eq!(std::fs::read(rootfs.join("etc/new")).unwrap(), b"x");

    c.remove_snapshot(RemoveSnapshotRequest {
        container_id: "c1".into(),
    })
    .await
    .unwrap();
    assert!(!is_mounted(&rootfs));
    assert!(!imaged.dir().join("snapshots/c1").exists());
    c.remove_snapshot(RemoveSnapshotRequest {
        container_id: "c1".into(),
    })
    .await
    .unwrap();
    // Layers are untouched by the container's writes and removal.
    let l1_dir = imaged
        .dir()
        .join("layers")
        .join(sha(&l1).trim_start_matches("sha256:"))
        .join("diff");
    assert!(l1_dir.join("bin/busybox").is_file());
    assert!(!l1_dir.join("etc/new").exists());
    // Layer 2 (its dir is named by its chain ID) holds the whiteout as a 0/0 char device.
    let chain2 = sha(format!("{} {}", sha(&l1), sha(&l2)).as_bytes());
    let wh = std::fs::symlink_metadata(
        imaged
            .dir()
            .join("layers")
            .join(chain2.trim_start_matches("sha256:"))
            .join("diff/etc/gone"),
    )
    .unwrap();
    assert!(wh.file_type().is_char_device());

    // A blob larger than its manifest says (a wrong or hostile registry or mirror): the
    // download stops there with the reason, and nothing of it is kept.
    let mut b = tar::Builder::new(Vec::new());
    file_entry(&mut b, "short.txt", b"announced one byte short", 0o644);
    let short_tar = b.into_inner().unwrap();
    let short_layers = vec![(
        short_tar.clone(),
        "application/vnd.oci.image.layer.v1.tar",
        sha(&short_tar),
    )];
    push_image(
        port,
        "test/short",
        &short_layers,
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.config.v1+json",
        1,
    )
    .await;
    let refused = pull(&mut c, &format!("127.0.0.1:{port}/test/short"))
        .await
        .expect_err("a blob larger than its manifest says is refused");
    assert!(
        refused.message().contains("larger than"),
        "{}",
        refused.message()
    );
    assert!(dir_is_empty(&imaged.dir().join("tmp")));

    // kill -9 in the middle of a pull of a big (30 MB, uncompressed OCI) layer.
    let mut big = vec![0u8; 30 * 1024 * 1024];
    rand::Rng::fill(&mut rand::rng(), &mut big[..]);
    let mut b = tar::Builder::new(Vec::new());
    file_entry(&mut b, "big.bin", &big, 0o644);
    let big_tar = b.into_inner().unwrap();
    drop(big);
    let big_layers = vec![
        layers[0].clone(),
        (
            big_tar.clone(),
            "application/vnd.oci.image.layer.v1.tar",
            sha(&big_tar),
        ),
    ];
    push_image(
        port,
        "test/big",
        &big_layers,
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.config.v1+json",
        0,
    )
    .await;
    let big_name = format!("127.0.0.1:{port}/test/big");
    let mut stream = c
        .pull(PullRequest {
            reference: big_name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    loop {
        let m = stream
            .message()
            .await
            .unwrap()
            .expect("pull ended too early");
        if m.status == "Downloading" {
            break;
        }
    }
    imaged.proc.kill9();
    drop(stream);
    imaged = Imaged::start(&data, &run).await;
    c = imaged.client();
    assert!(dir_is_empty(&imaged.dir().join("tmp")), "tmp/ not cleaned");
    let msgs = pull(&mut c, &big_name).await.unwrap();
    let st = statuses(&msgs);
    assert_eq!(st[1], format!("{short1}: Already exists"));
    assert_eq!(
        st.last().unwrap(),
        &format!("Status: Downloaded newer image for {big_name}:latest")
    );
    assert!(dir_is_empty(&imaged.dir().join("tmp")));
    let big_image = msgs.last().unwrap().image.clone().unwrap();
    assert!(big_image.size >= 30 * 1024 * 1024);
    let snap = c
        .prepare_snapshot(PrepareSnapshotRequest {
            container_id: "c2".into(),
            image_id: big_image.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        std::fs::metadata(Path::new(&snap.rootfs_path).join("big.bin"))
            .unwrap()
            .len(),
        30 * 1024 * 1024
    );
    c.remove_snapshot(RemoveSnapshotRequest {
        container_id: "c2".into(),
    })
    .await
    .unwrap();

    imaged.proc.kill9();
    registry.kill9();
}
