//! The test image: Debian's static busybox as a one-layer OCI image, pushed with skopeo.
//!
//! There is no internet on the test machines, so the image is made here from
//! `/bin/busybox` (package busybox-static): `bin/busybox`, one symlink per applet
//! (`bin/sh`, `bin/echo`, `bin/sleep`, ...), `etc/passwd` and `etc/group` with root and
//! nobody, and a world-writable sticky `tmp/`. The layer is a gzip-compressed tar; the
//! config has `Cmd ["sh"]` and Docker's default PATH, like the real busybox image.

use crate::cmd;
use crate::registry::Registry;
use anyhow::{Context, Result, bail};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Where Debian's busybox-static puts its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// The PATH Docker images conventionally set.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Manifest formats skopeo can push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/vnd.oci.image.manifest.v1+json` (as built).
    Oci,
    /// `application/vnd.docker.distribution.manifest.v2+json` (skopeo converts).
    DockerV2,
}

/// A built image as an OCI image layout on disk.
#[derive(Debug)]
pub struct TestImage {
    dir: tempfile::TempDir,
    /// `sha256:...` of the compressed layer.
    pub layer_digest: String,
    /// `sha256:...` of the uncompressed layer tar (the config's diff_id).
    pub diff_id: String,
    /// Size of the uncompressed layer in bytes.
    pub layer_size: u64,
    /// `sha256:...` of the config blob: Docker's image ID for this image.
    pub config_digest: String,
    /// `sha256:...` of the OCI manifest as built.
    pub manifest_digest: String,
    /// The applets linked in `bin/`.
    pub applets: Vec<String>,
}

/// Docker's name for the host architecture.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

impl TestImage {
    /// Builds the busybox image from `/bin/busybox`.
    pub fn build() -> Result<Self> {
        let busybox = std::fs::read(BUSYBOX)
            .with_context(|| format!("reading {BUSYBOX} (install busybox-static)"))?;
        let list = cmd::run(Command::new(BUSYBOX).arg("--list"), Duration::from_secs(10))?;
        if !list.success() {
            bail!("busybox --list failed: {list}");
        }
        let applets: Vec<String> = list
            .stdout
            .lines()
            .map(str::trim)
            .filter(|a| !a.is_empty() && !a.contains('/') && *a != "busybox")
            .map(String::from)
            .collect();
        if !applets.iter().any(|a| a == "sh") {
            bail!("{BUSYBOX} has no sh applet");
        }

        let tar = layer_tar(&busybox, &applets)?;
        let base = Layer::gzip(tar, Compression::default())?;
        Self::assemble(vec![base], applets, json!(null))
    }

    /// The busybox image with one more layer per entry of `filler_sizes`, each holding
    /// one file of that many pseudo-random (incompressible) bytes: a big multi-layer
    /// image for pull benchmarks and interrupted pulls. Deterministic for given sizes.
    pub fn build_with_filler(filler_sizes: &[usize]) -> Result<Self> {
        let base = Self::build()?;
        let hex = base.layer_digest.trim_start_matches("sha256:");
        let mut layers = vec![Layer {
            gz: std::fs::read(base.dir.path().join("blobs/sha256").join(hex))?,
            diff_id: base.diff_id.clone(),
            size: base.layer_size,
        }];
        for (i, size) in filler_sizes.iter().enumerate() {
            let data = pseudo_random(*size, i as u64 + 1);
            let mut b = tar::Builder::new(Vec::new());
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            b.append_data(&mut h, "filler/", std::io::empty())?;
            let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
            b.append_data(&mut h, format!("filler/{i}.bin"), data.as_slice())?;
            layers.push(Layer::gzip(b.into_inner()?, Compression::fast())?);
        }
        Self::assemble(layers, base.applets.clone(), json!(null))
    }

    /// Another image with the same layer and `labels` in its config: a different image
    /// ID sharing every byte on disk (for `docker system df`'s shared sizes).
    pub fn relabel(&self, labels: serde_json::Value) -> Result<Self> {
        let hex = self.layer_digest.trim_start_matches("sha256:");
        let layer = Layer {
            gz: std::fs::read(self.dir.path().join("blobs/sha256").join(hex))?,
            diff_id: self.diff_id.clone(),
            size: self.layer_size,
        };
        Self::assemble(vec![layer], self.applets.clone(), labels)
    }

    /// Writes the OCI layout of an image of `layers` (the first is busybox's).
    fn assemble(
        layers: Vec<Layer>,
        applets: Vec<String>,
        labels: serde_json::Value,
    ) -> Result<Self> {
        Self::assemble_for(layers, applets, labels, host_arch())
    }

    /// As [`Self::assemble`], with `arch` in the config.
    fn assemble_for(
        layers: Vec<Layer>,
        applets: Vec<String>,
        labels: serde_json::Value,
        arch: &str,
    ) -> Result<Self> {
        let digests: Vec<String> = layers.iter().map(|l| sha256(&l.gz)).collect();
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
        let created = "2024-01-01T00:00:00Z";
        let history: Vec<serde_json::Value> = (0..layers.len())
            .map(|i| {
                json!({
                    "created": created,
                    "created_by": if i == 0 {
                        "berth-e2e: busybox-static rootfs".to_string()
                    } else {
                        format!("berth-e2e: filler layer {i}")
                    },
                })
            })
            .collect();
        let config = serde_json::to_vec(&json!({
            "architecture": arch,
            "os": "linux",
            "created": created,
            "config": {
                "Env": [DEFAULT_PATH],
                "Cmd": ["sh"],
                "Labels": labels,
            },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": history,
        }))?;
        let config_digest = sha256(&config);
        let descriptors: Vec<serde_json::Value> = layers
            .iter()
            .zip(&digests)
            .map(|(l, d)| {
                json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": d,
                    "size": l.gz.len(),
                })
            })
            .collect();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": descriptors,
        }))?;
        let manifest_digest = sha256(&manifest);

        let dir = tempfile::Builder::new()
            .prefix("berth-img")
            .tempdir_in("/tmp")?;
        let blobs = dir.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs)?;
        let mut files: Vec<(&String, &Vec<u8>)> = layers
            .iter()
            .map(|l| &l.gz)
            .zip(&digests)
            .map(|(g, d)| (d, g))
            .collect();
        files.push((&config_digest, &config));
        files.push((&manifest_digest, &manifest));
        for (digest, data) in files {
            let hex = digest.trim_start_matches("sha256:");
            std::fs::write(blobs.join(hex), data)?;
        }
        std::fs::write(
            dir.path().join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest.len(),
                "annotations": { "org.opencontainers.image.ref.name": "latest" },
            }],
        });
        std::fs::write(dir.path().join("index.json"), serde_json::to_vec(&index)?)?;

        let first = &layers[0];
        Ok(Self {
            dir,
            layer_digest: digests[0].clone(),
            diff_id: first.diff_id.clone(),
            layer_size: first.size,
            config_digest,
            manifest_digest,
            applets,
        })
    }

    /// The busybox image for two platforms under one OCI image index: this host's
    /// architecture and `other_arch` (same layer, its config saying `other_arch`, so a
    /// different image ID). Returns the layout (push it with [`Self::push_all`]) and the
    /// image ID (config digest) for each, host first.
    pub fn build_multi_platform(other_arch: &str) -> Result<(Self, String, String)> {
        let host = Self::build()?;
        let other = host.with_architecture(other_arch)?;
        let blobs = host.dir.path().join("blobs/sha256");
        for entry in std::fs::read_dir(other.dir.path().join("blobs/sha256"))? {
            let entry = entry?;
            std::fs::copy(entry.path(), blobs.join(entry.file_name()))?;
        }
        let entry = |img: &TestImage, arch: &str| -> Result<serde_json::Value> {
            let hex = img.manifest_digest.trim_start_matches("sha256:");
            let size = std::fs::metadata(blobs.join(hex))?.len();
            Ok(json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": img.manifest_digest,
                "size": size,
                "platform": {"architecture": arch, "os": "linux"},
            }))
        };
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [entry(&host, host_arch())?, entry(&other, other_arch)?],
        }))?;
        let index_digest = sha256(&index);
        std::fs::write(
            blobs.join(index_digest.trim_start_matches("sha256:")),
            &index,
        )?;
        let top = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": index_digest,
                "size": index.len(),
                "annotations": { "org.opencontainers.image.ref.name": "latest" },
            }],
        });
        std::fs::write(
            host.dir.path().join("index.json"),
            serde_json::to_vec(&top)?,
        )?;
        let (host_id, other_id) = (host.config_digest.clone(), other.config_digest.clone());
        Ok((host, host_id, other_id))
    }

    /// This image with `arch` in its config.
    fn with_architecture(&self, arch: &str) -> Result<Self> {
        let hex = self.layer_digest.trim_start_matches("sha256:");
        let layer = Layer {
            gz: std::fs::read(self.dir.path().join("blobs/sha256").join(hex))?,
            diff_id: self.diff_id.clone(),
            size: self.layer_size,
        };
        Self::assemble_for(vec![layer], self.applets.clone(), json!(null), arch)
    }

    /// Pushes every platform of the layout (`skopeo copy --all`) as `repo_tag`.
    pub fn push_all(&self, registry: &Registry, repo_tag: &str) -> Result<String> {
        let reference = format!("127.0.0.1:{}/{repo_tag}", registry.port());
        let mut c = Command::new("skopeo");
        c.args([
            "copy",
            "--all",
            "--insecure-policy",
            "--dest-tls-verify=false",
            "--dest-no-creds",
        ])
        .arg(format!("oci:{}:latest", self.dir.path().display()))
        .arg(format!("docker://{reference}"))
        .env("HOME", self.dir.path());
        let out = cmd::run(&mut c, Duration::from_secs(120))?;
        if !out.success() {
            bail!("skopeo copy --all to {reference} failed: {out}");
        }
        Ok(reference)
    }

    /// The OCI image layout directory.
    pub fn layout_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Pushes the image to `registry` as `repo:tag` (e.g. `busybox:latest`) and returns
    /// the full reference (`127.0.0.1:PORT/busybox:latest`) and the pushed manifest's
    /// digest (which differs from [`Self::manifest_digest`] for [`Format::DockerV2`]).
    pub fn push(
        &self,
        registry: &Registry,
        repo_tag: &str,
        format: Format,
    ) -> Result<(String, String)> {
        self.push_as(registry, repo_tag, format, None)
    }

    /// As [`Self::push`], logging in as `user:password` when given.
    pub fn push_as(
        &self,
        registry: &Registry,
        repo_tag: &str,
        format: Format,
        creds: Option<&str>,
    ) -> Result<(String, String)> {
        let reference = format!("127.0.0.1:{}/{repo_tag}", registry.port());
        let digest_file = self.dir.path().join(format!(
            "pushed-{}.digest",
            repo_tag.replace(['/', ':'], "_")
        ));
        let mut c = Command::new("skopeo");
        c.args(["copy", "--insecure-policy", "--dest-tls-verify=false"]);
        match creds {
            Some(c_) => c.arg("--dest-creds").arg(c_),
            None => c.arg("--dest-no-creds"),
        };
        c.arg("--digestfile").arg(&digest_file);
        if format == Format::DockerV2 {
            c.args(["--format", "v2s2"]);
        }
        c.arg(format!("oci:{}:latest", self.dir.path().display()))
            .arg(format!("docker://{reference}"));
        // skopeo must not read the host's registries config or credentials.
        c.env("HOME", self.dir.path());
        let out = cmd::run(&mut c, Duration::from_secs(120))?;
        if !out.success() {
            bail!("skopeo copy to {reference} failed: {out}");
        }
        let digest = std::fs::read_to_string(&digest_file)
            .context("reading skopeo's digest file")?
            .trim()
            .to_string();
        Ok((reference, digest))
    }
}

/// One layer of a test image: its gzip blob and what the config says of it.
struct Layer {
    gz: Vec<u8>,
    diff_id: String,
    /// Uncompressed size.
    size: u64,
}

impl Layer {
    fn gzip(tar: Vec<u8>, level: Compression) -> Result<Self> {
        let diff_id = sha256(&tar);
        let size = tar.len() as u64;
        let mut gz = GzEncoder::new(Vec::new(), level);
        std::io::Write::write_all(&mut gz, &tar)?;
        Ok(Self {
            gz: gz.finish()?,
            diff_id,
            size,
        })
    }
}

/// `len` bytes from a xorshift generator seeded with `seed`: incompressible, repeatable.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The uncompressed layer: deterministic (fixed mtime, root owner), so the image ID is
/// the same every run.
fn layer_tar(busybox: &[u8], applets: &[String]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32| -> Result<()> {
        let mut h = header(tar::EntryType::Directory, mode, 0);
        b.append_data(&mut h, path, std::io::empty())?;
        Ok(())
    };
    for d in [
        "bin/", "etc/", "root/", "home/", "dev/", "proc/", "sys/", "var/", "usr/",
    ] {
        dir(&mut b, d, 0o755)?;
    }
    dir(&mut b, "tmp/", 0o1777)?;
    let mut h = header(tar::EntryType::Regular, 0o755, busybox.len() as u64);
    b.append_data(&mut h, "bin/busybox", busybox)?;
    for a in applets {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, format!("bin/{a}"), "busybox")?;
    }
    let files: [(&str, &str); 2] = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        (
            "etc/group",
            "root:x:0:\nnogroup:x:65534:\nnobody:x:65534:\n",
        ),
    ];
    for (path, text) in files {
        let mut h = header(tar::EntryType::Regular, 0o644, text.len() as u64);
        b.append_data(&mut h, path, text.as_bytes())?;
    }
    Ok(b.into_inner()?)
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_704_067_200);
    h
}
