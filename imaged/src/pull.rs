//! Registry pulls: manifest + config via oci-client, each layer streamed to a temp file,
//! verified, unpacked beside its final place and renamed in, then the image recorded.

use crate::error::{ImagedError, Result};
use crate::reference::{ImageRef, is_loopback_registry, registry_host};
use crate::store::{ImageRow, LayerRow};
use crate::unpack::{Unpacked, chain_ids, chunk_reader, unpack_layer, unpack_layer_from};
use crate::{Imaged, blocking, digest_hex};
use berth_proto::images::{Image, PullProgress, PullRequest};
use futures_util::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::ImageIndexEntry;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Where pull progress goes: the gRPC response stream.
pub type ProgressSender = mpsc::Sender<std::result::Result<PullProgress, tonic::Status>>;

/// How often a `Downloading` message is sent at most, per layer.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// A requested platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, ...
    pub arch: String,
    /// `v7`, `v8`, ...
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]`; empty means this host.
    pub fn parse(s: &str) -> Result<Self> {
        if s.is_empty() {
            return Ok(Self::host());
        }
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Self {
                os: os.to_lowercase(),
                arch: arch.to_lowercase(),
                variant: None,
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Self {
                    os: os.to_lowercase(),
                    arch: arch.to_lowercase(),
                    variant: Some(variant.to_lowercase()),
                })
            }
            _ => Err(ImagedError::InvalidArgument(format!(
                "\"{s}\": unknown operating system or architecture: invalid argument"
            ))),
        }
    }

    /// linux + this host's architecture, in Go's names.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Self {
            os: "linux".into(),
            arch: arch.into(),
            variant: None,
        }
    }

    /// Picks the index entry for this platform: os and arch must match; an entry with the
    /// wanted variant wins, else the first os/arch match.
    pub fn choose(&self, entries: &[ImageIndexEntry]) -> Option<String> {
        let matching: Vec<&ImageIndexEntry> = entries
            .iter()
            .filter(|e| {
                e.platform.as_ref().is_some_and(|p| {
                    p.os.to_string() == self.os && p.architecture.to_string() == self.arch
                })
            })
            .collect();
        if let Some(v) = &self.variant
            && let Some(e) = matching.iter().find(|e| {
                e.platform
                    .as_ref()
                    .and_then(|p| p.variant.as_deref())
                    .is_some_and(|pv| pv == v)
            })
        {
            return Some(e.digest.clone());
        }
        matching.first().map(|e| e.digest.clone())
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The subset of an image config imaged needs (the raw bytes are kept as pulled).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct ConfigDoc {
    #[serde(default)]
    pub(crate) created: Option<String>,
    #[serde(default)]
    pub(crate) os: String,
    #[serde(default)]
    pub(crate) architecture: String,
    pub(crate) rootfs: RootFs,
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct RootFs {
    #[serde(default)]
    pub(crate) diff_ids: Vec<String>,
}

/// Sends progress messages; a vanished client does not stop the pull.
struct Progress {
    tx: ProgressSender,
}

impl Progress {
    async fn send(&self, status: impl Into<String>, id: &str, current: i64, total: i64) {
        let msg = PullProgress {
            status: status.into(),
            id: id.to_string(),
            current,
            total,
            ..Default::default()
        };
        let _ = self.tx.send(Ok(msg)).await;
    }

    async fn status(&self, status: impl Into<String>, id: &str) {
        self.send(status, id, 0, 0).await;
    }
}

/// Removes a temp file or directory unless disarmed (on every error path).
pub(crate) struct TempPath {
    pub(crate) path: PathBuf,
    armed: bool,
}

impl TempPath {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self { path, armed: true }
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let _ = match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&self.path),
            Ok(_) => std::fs::remove_file(&self.path),
            Err(_) => Ok(()),
        };
    }
}

/// What a registry error message needs to say.
struct ErrCtx {
    scheme: &'static str,
    registry: String,
    familiar: String,
    familiar_name: String,
    platform: Platform,
}

impl ErrCtx {
    /// Maps oci-client errors to Docker's messages and our codes.
    fn map(&self, err: OciDistributionError) -> ImagedError {
        match err {
            OciDistributionError::RequestError(e) => {
                // reqwest is only reachable through oci-client: we use the value, not its type.
                self.request_error(
                    e.is_connect() || e.is_timeout(),
                    io_reason(&e),
                    e.to_string(),
                )
            }
            OciDistributionError::RegistryError { envelope, .. } => {
                let mut code = String::new();
                let mut parts = Vec::new();
                for e in &envelope.errors {
                    let c = serde_json::to_value(&e.code)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    if code.is_empty() {
                        code = c.clone();
                    }
                    // Docker renders an errcode as "<code in lower case words>: <message>".
                    parts.push(format!(
                        "{}: {}",
                        c.to_lowercase().replace('_', " "),
                        e.message
                    ));
                }
                let detail = parts.join(", ");
                match code.as_str() {
                    "MANIFEST_UNKNOWN" | "BLOB_UNKNOWN" => ImagedError::NotFound(format!(
                        "manifest for {} not found: {detail}",
                        self.familiar
                    )),
                    "NAME_UNKNOWN" | "DENIED" | "UNAUTHORIZED" => {
                        ImagedError::NotFound(self.access_denied(&detail))
                    }
                    _ => ImagedError::Registry(detail),
                }
            }
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => ImagedError::NotFound(
                self.access_denied("denied: requested access to the resource is denied"),
            ),
            OciDistributionError::ServerError { code: 404, .. } => ImagedError::NotFound(format!(
                "manifest for {} not found: manifest unknown: manifest unknown",
                self.familiar
            )),
            OciDistributionError::ImageManifestNotFoundError(_) => ImagedError::NotFound(format!(
                "no matching manifest for {} in the manifest list entries",
                self.platform
            )),
            OciDistributionError::DigestError(e) => {
                ImagedError::BadLayer(format!("filesystem layer verification failed: {e}"))
            }
            other => ImagedError::Registry(format!("error pulling {}: {other}", self.familiar)),
        }
    }

    /// Docker's wording for a repository we may not read.
    fn access_denied(&self, detail: &str) -> String {
        format!(
            "pull access denied for {}, repository does not exist or may require 'docker login': {detail}",
            self.familiar_name
        )
    }

    /// Docker's wording for a registry it cannot talk to:
    /// `Get "http://127.0.0.1:5999/v2/": dial tcp 127.0.0.1:5999: connect: connection refused`.
    fn request_error(&self, dial: bool, reason: Option<String>, text: String) -> ImagedError {
        let url = format!("{}://{}/v2/", self.scheme, self.registry);
        let host_port = if self
            .registry
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
            && !self.registry.ends_with(']')
        {
            self.registry.clone()
        } else {
            let port = if self.scheme == "http" { 80 } else { 443 };
            format!("{}:{port}", registry_host(&self.registry))
        };
        if dial {
            let reason = reason.unwrap_or_else(|| "i/o timeout".to_string());
            ImagedError::Unavailable(format!(
                "Get \"{url}\": dial tcp {host_port}: connect: {reason}"
            ))
        } else {
            let reason = reason.unwrap_or(text);
            ImagedError::Unavailable(format!("Get \"{url}\": {reason}"))
        }
    }
}

/// The innermost I/O error of a chain, in Go's words where they differ from Rust's.
fn io_reason(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut found = None;
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            found = Some(match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
                std::io::ErrorKind::ConnectionReset => "connection reset by peer".to_string(),
                std::io::ErrorKind::TimedOut => "i/o timeout".to_string(),
                _ => io.to_string(),
            });
        }
        cur = err.source();
    }
    found
}

/// The CLI's credentials (X-Registry-Auth, as the gateway decoded them) for oci-client.
pub(crate) fn registry_auth(auth: Option<berth_proto::images::RegistryAuth>) -> RegistryAuth {
    match auth {
        Some(a) if !a.username.is_empty() => RegistryAuth::Basic(a.username, a.password),
        Some(a) if !a.registry_token.is_empty() => RegistryAuth::Bearer(a.registry_token),
        _ => RegistryAuth::Anonymous,
    }
}

/// A layer's compressed blob, beside its `diff` dir.
pub const BLOB_FILE: &str = "blob";

/// A layer blob as a manifest describes it.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    pub digest: String,
    pub media_type: String,
    pub size: i64,
}

/// The most a download hands to its file in one write.
const WRITE_BUF: usize = 128 << 10;

/// Batches of a download waiting for its unpack (bounds the memory a slow disk costs).
const UNPACK_QUEUE: usize = 2;
/// The size of those batches.
const UNPACK_BATCH: usize = 256 << 10;

pub(crate) fn short_id(digest: &str) -> String {
    digest_hex(digest).chars().take(12).collect()
}

pub(crate) fn random_name(suffix: &str) -> String {
    format!("{:016x}.{suffix}", rand::random::<u64>())
}

impl Imaged {
    /// Where to pull `r` from, in order: for Docker Hub's images each of daemon.json's
    /// `registry-mirrors` (true: a mirror), then the image's own registry.
    fn sources(&self, r: &ImageRef) -> Vec<(Reference, bool)> {
        let mut out = Vec::new();
        if r.registry() == "docker.io" {
            for m in self.mirrors() {
                let repo = r.repository().to_string();
                let on_mirror = match r.digest() {
                    Some(d) => Reference::with_digest(m.host.clone(), repo, d.to_string()),
                    None => Reference::with_tag(
                        m.host.clone(),
                        repo,
                        r.tag().unwrap_or("latest").to_string(),
                    ),
                };
                out.push((on_mirror, true));
            }
        }
        out.push((r.oci().clone(), false));
        out
    }

    pub(crate) fn client_for(&self, registry: &str, platform: &Platform) -> (Client, &'static str) {
        let insecure = is_loopback_registry(registry) || self.is_insecure(registry);
        let (protocol, scheme) = if insecure {
            (ClientProtocol::Http, "http")
        } else {
            (ClientProtocol::Https, "https")
        };
        let chooser = platform.clone();
        let config = ClientConfig {
            protocol,
            platform_resolver: Some(Box::new(move |entries: &[ImageIndexEntry]| {
                chooser.choose(entries)
            })),
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        (Client::new(config), scheme)
    }

    /// True when the layer is committed and its directory present. A record whose
    /// directory vanished is dropped so the layer is pulled again.
    pub(crate) async fn layer_present(&self, chain_id: &str) -> Result<bool> {
        if self.store().layer(chain_id).await?.is_none() {
            return Ok(false);
        }
        let diff = self.layout().layer_dir(chain_id).join("diff");
        if tokio::fs::metadata(&diff).await.is_ok() {
            return Ok(true);
        }
        tracing::warn!(chain_id, "layer record without directory; pulling it again");
        self.store().delete_layer(chain_id).await?;
        Ok(false)
    }

    /// Pulls `req.reference`, streaming Docker-style progress to `tx`. The last message
    /// of a successful pull carries the image; errors are returned (not sent).
    #[tracing::instrument(name = "image.pull", skip_all, fields(image.name = %req.reference))]
    pub async fn pull(&self, req: PullRequest, tx: ProgressSender) -> Result<Image> {
        let r = ImageRef::parse(&req.reference)?;
        let platform = Platform::parse(&req.platform)?;
        let progress = Progress { tx };
        let auth = registry_auth(req.auth);

        // The first source that answers with the manifest serves the whole pull.
        let mut answered = None;
        for (source, is_mirror) in self.sources(&r) {
            let registry = source.resolve_registry().to_string();
            let (client, scheme) = self.client_for(&registry, &platform);
            let ctx = ErrCtx {
                scheme,
                registry: registry.clone(),
                familiar: r.familiar(),
                familiar_name: r.familiar_name(),
                platform: platform.clone(),
            };
            // Docker Hub's credentials stay with Docker Hub.
            let auth = if is_mirror {
                RegistryAuth::Anonymous
            } else {
                auth.clone()
            };
            match client
                .pull_manifest_and_config_and_list_digest(&source, &auth)
                .await
            {
                Ok(got) => {
                    answered = Some((client, ctx, source, got));
                    break;
                }
                Err(e) if is_mirror => {
                    tracing::warn!(mirror = %registry, image = %r.familiar(), "mirror failed, trying the next source: {e}");
                }
                Err(e) => return Err(ctx.map(e)),
            }
        }
        let Some((client, ctx, source, (manifest, manifest_digest, config, list_digest))) =
            answered
        else {
            return Err(ImagedError::Registry("no source to pull from".into()));
        };
        let pulled_as = r
            .digest()
            .map(str::to_string)
            .or_else(|| r.tag().map(str::to_string))
            .unwrap_or_default();
        progress
            .status(format!("Pulling from {}", r.repository()), &pulled_as)
            .await;

        let config = config.into_bytes();
        let image_id = format!("sha256:{}", hex::encode(Sha256::digest(&config)));
        let doc: ConfigDoc = serde_json::from_slice(&config)
            .map_err(|e| ImagedError::Registry(format!("invalid image config: {e}")))?;
        if doc.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ImagedError::Registry(format!(
                "invalid image: manifest has {} layers, config has {} diff IDs",
                manifest.layers.len(),
                doc.rootfs.diff_ids.len()
            )));
        }
        let chains = chain_ids(&doc.rootfs.diff_ids);

        let mut present = Vec::with_capacity(chains.len());
        for (layer, chain) in manifest.layers.iter().zip(&chains) {
            let here = self.layer_present(chain).await?;
            let status = if here {
                "Already exists"
            } else {
                "Pulling fs layer"
            };
            progress.status(status, &short_id(&layer.digest)).await;
            present.push(here);
        }

        // The missing layers download, verify and unpack side by side (daemon.json's
        // max-concurrent-downloads, three by default); each commits on its own, under its
        // chain's lock, so a concurrent pull of the same layer waits and then finds it.
        let (client_ref, ctx_ref, chains_ref, progress_ref) = (&client, &ctx, &chains, &progress);
        let diff_ids = &doc.rootfs.diff_ids;
        let oci = &source;
        let mut fetches = Vec::new();
        for (i, layer) in manifest.layers.iter().enumerate() {
            if present[i] {
                continue;
            }
            fetches.push(async move {
                let chain = &chains_ref[i];
                let lock = self.layer_lock(chain);
                let _guard = lock.lock().await;
                if !self.layer_present(chain).await? {
                    self.fetch_layer(
                        client_ref,
                        oci,
                        ctx_ref,
                        layer,
                        i,
                        diff_ids,
                        chains_ref,
                        progress_ref,
                    )
                    .await?;
                }
                progress_ref
                    .status("Pull complete", &short_id(&layer.digest))
                    .await;
                Ok::<_, ImagedError>(())
            });
        }
        futures_util::stream::iter(fetches)
            .buffer_unordered(self.concurrent_downloads())
            .try_collect::<Vec<()>>()
            .await?;

        let mut size = 0i64;
        for chain in &chains {
            size += self
                .store()
                .layer(chain)
                .await?
                .map(|l| l.size)
                .unwrap_or_default();
        }

        let digest = list_digest.unwrap_or_else(|| manifest_digest.clone());
        let repo_digest = r.familiar_digest(&digest);
        let tag = if r.digest().is_none() {
            r.familiar_tag()
        } else {
            None
        };
        let had_digest = self.store().image_id_by_repo_digest(&repo_digest).await?;
        let row = ImageRow {
            id: image_id.clone(),
            config,
            manifest_digest,
            diff_ids: serde_json::to_string(&doc.rootfs.diff_ids)
                .map_err(|e| ImagedError::Registry(format!("diff ids: {e}")))?,
            size,
            created: doc.created.unwrap_or_default(),
            os: doc.os,
            architecture: doc.architecture,
            parent: String::new(),
        };
        let previous = self
            .store()
            .commit_image(&row, tag.as_deref(), &repo_digest)
            .await?;
        let up_to_date = match &tag {
            Some(_) => previous.as_deref() == Some(image_id.as_str()),
            None => had_digest.as_deref() == Some(image_id.as_str()),
        };
        progress.status(format!("Digest: {digest}"), "").await;
        let image = self.image_proto(row).await?;
        let shown = tag.unwrap_or_else(|| r.familiar());
        let status = if up_to_date {
            format!("Status: Image is up to date for {shown}")
        } else {
            format!("Status: Downloaded newer image for {shown}")
        };
        let _ = progress
            .tx
            .send(Ok(PullProgress {
                status,
                id: String::new(),
                current: 0,
                total: 0,
                image: Some(image.clone()),
                ..Default::default()
            }))
            .await;
        tracing::info!(image = %r.familiar(), id = %image_id, "pulled");
        Ok(image)
    }

    /// Downloads layer `i` and unpacks it as it arrives (on a blocking thread fed chunk
    /// by chunk), then verifies the blob's digest and the diff ID and commits it. A
    /// failure anywhere leaves nothing: the unpacked directory and the blob are temporary
    /// until the commit.
    #[allow(clippy::too_many_arguments)]
    #[tracing::instrument(name = "layer.fetch", skip_all, fields(layer.digest = %layer.digest))]
    async fn fetch_layer(
        &self,
        client: &Client,
        reference: &Reference,
        ctx: &ErrCtx,
        layer: &oci_client::manifest::OciDescriptor,
        i: usize,
        diff_ids: &[String],
        chains: &[String],
        progress: &Progress,
    ) -> Result<()> {
        let id = short_id(&layer.digest);
        let tmp = self.layout().tmp();
        let blob = TempPath::new(tmp.join(random_name("blob")));
        let unpack_dir = TempPath::new(tmp.join(random_name("layer")));
        let mut stream = client
            .pull_blob_stream(reference, layer)
            .await
            .map_err(|e| ctx.map(e))?;
        let total = if layer.size > 0 {
            layer.size
        } else {
            stream.content_length.map(|n| n as i64).unwrap_or_default()
        };
        let (chunks, chunk_rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(UNPACK_QUEUE);
        // The unpack thread owns its directory and hands it back with the result: if
        // this future is dropped (another layer failed, the client left), the directory
        // is removed by the thread once it is done writing, not under it.
        let unpacking = {
            let (dir, media) = (unpack_dir.path.join("diff"), layer.media_type.clone());
            let span = tracing::Span::current();
            let mut source = chunk_reader(chunk_rx, tokio::runtime::Handle::current());
            tokio::task::spawn_blocking(move || {
                let unpacked = span.in_scope(|| {
                    let unpacked = unpack_layer_from(&mut source, &media, &dir)?;
                    // Whatever follows the compressed stream is the blob's too (its
                    // digest covers it): read to the end, as the download goes on.
                    std::io::copy(&mut source, &mut std::io::sink())
                        .map_err(|e| ImagedError::io("reading the layer", e))?;
                    Ok::<_, ImagedError>(unpacked)
                });
                (unpack_dir, unpacked)
            })
        };
        let mut current = 0i64;
        let mut hasher = Sha256::new();
        let downloaded = async {
            let mut file = tokio::fs::File::create(&blob.path)
                .await
                .map_err(|e| ImagedError::io(format!("creating {}", blob.path.display()), e))?;
            // tokio copies each write into a buffer of up to 2 MiB by default, kept for
            // the file's life: with three layers at a time that is memory held for nothing.
            file.set_max_buf_size(WRITE_BUF);
            let mut last = Instant::now();
            let mut batch = bytes::BytesMut::with_capacity(UNPACK_BATCH);
            progress.send("Downloading", &id, 0, total).await;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| blob_error(ctx, &layer.digest, e))?;
                hasher.update(&chunk);
                file.write_all(&chunk)
                    .await
                    .map_err(|e| ImagedError::io(format!("writing {}", blob.path.display()), e))?;
                current += chunk.len() as i64;
                crate::metrics::downloaded(chunk.len() as u64);
                if layer.size > 0 && current > layer.size {
                    // More than the manifest announced: not the blob it names, and the
                    // unpack must not be fed without bound before the digest says so.
                    return Err(ImagedError::BadLayer(format!(
                        "layer {} is larger than the {} bytes its manifest gives",
                        layer.digest, layer.size
                    )));
                }
                // Batched into copies of its own: a chunk is a slice of the HTTP client's
                // read buffer, which a queued slice would keep from reuse, and handing
                // the unpack thread every small chunk would cost a wake-up each.
                batch.extend_from_slice(&chunk);
                drop(chunk);
                if batch.len() >= UNPACK_BATCH && chunks.send(batch.split().freeze()).await.is_err()
                {
                    // The unpack stopped (a bad layer): its error says why.
                    return Ok(false);
                }
                if last.elapsed() >= PROGRESS_EVERY {
                    progress.send("Downloading", &id, current, total).await;
                    last = Instant::now();
                }
            }
            file.flush()
                .await
                .map_err(|e| ImagedError::io(format!("writing {}", blob.path.display()), e))?;
            if !batch.is_empty() && chunks.send(batch.split().freeze()).await.is_err() {
                return Ok(false);
            }
            Ok::<bool, ImagedError>(true)
        }
        .await;
        // The end of the stream for the unpack; waited for before anything is returned,
        // so no thread still writes into a directory being removed.
        drop(chunks);
        let (unpack_dir, unpacked) = unpacking
            .await
            .map_err(|e| ImagedError::io("unpacking", std::io::Error::other(e.to_string())))?;
        if !downloaded? {
            return Err(unpacked
                .err()
                .unwrap_or_else(|| ImagedError::BadLayer("the unpack ended early".into())));
        }
        progress.status("Verifying Checksum", &id).await;
        let got = format!("sha256:{}", hex::encode(hasher.finalize()));
        if layer.digest.starts_with("sha256:") && got != layer.digest {
            return Err(ImagedError::BadLayer(format!(
                "layer {} downloaded with digest {got}",
                layer.digest
            )));
        }
        progress.status("Download complete", &id).await;
        progress.send("Extracting", &id, current, total).await;
        let blob_row = LayerBlob {
            digest: layer.digest.clone(),
            media_type: layer.media_type.clone(),
            size: current,
        };
        self.commit_layer(
            &blob.path, &blob_row, unpack_dir, unpacked?, i, diff_ids, chains,
        )
        .await
    }

    /// Unpacks the blob at `blob_path` as layer `i` of an image with `diff_ids`, checks
    /// its diff ID, and commits it (directory renamed into place with the blob beside it,
    /// then the record). The blob file is moved, not copied.
    pub(crate) async fn install_layer(
        &self,
        blob_path: &Path,
        blob: &LayerBlob,
        i: usize,
        diff_ids: &[String],
        chains: &[String],
    ) -> Result<()> {
        let tmp = self.layout().tmp();
        let unpack_dir = TempPath::new(tmp.join(random_name("layer")));
        let (src, dir, media) = (
            blob_path.to_path_buf(),
            unpack_dir.path.join("diff"),
            blob.media_type.clone(),
        );
        let unpacked = blocking(move || unpack_layer(&src, &media, &dir)).await?;
        self.commit_layer(blob_path, blob, unpack_dir, unpacked, i, diff_ids, chains)
            .await
    }

    /// Checks an unpacked layer's diff ID and commits it with its blob.
    #[allow(clippy::too_many_arguments)]
    async fn commit_layer(
        &self,
        blob_path: &Path,
        blob: &LayerBlob,
        unpack_dir: TempPath,
        unpacked: Unpacked,
        i: usize,
        diff_ids: &[String],
        chains: &[String],
    ) -> Result<()> {
        if unpacked.diff_id != diff_ids[i] {
            return Err(ImagedError::BadLayer(format!(
                "layer {} has diff ID {}, the image config says {}",
                blob.digest, unpacked.diff_id, diff_ids[i]
            )));
        }
        // The blob goes with the layer (push and save send it as pulled).
        let kept = unpack_dir.path.join(BLOB_FILE);
        tokio::fs::rename(blob_path, &kept)
            .await
            .map_err(|e| ImagedError::io(format!("keeping {}", blob_path.display()), e))?;
        let final_dir = self.layout().layer_dir(&chains[i]);
        commit_dir(&unpack_dir.path, &final_dir).await?;
        let mut unpack_dir = unpack_dir;
        unpack_dir.armed = false;
        self.store()
            .insert_layer(&LayerRow {
                chain_id: chains[i].clone(),
                diff_id: unpacked.diff_id,
                size: unpacked.size as i64,
                parent: if i == 0 {
                    None
                } else {
                    Some(chains[i - 1].clone())
                },
                blob_digest: blob.digest.clone(),
                blob_media_type: blob.media_type.clone(),
                blob_size: blob.size,
            })
            .await?;
        Ok(())
    }

    /// `GET /distribution/{name}/json`: the manifest the registry (or a mirror, for Docker
    /// Hub's images) serves for `reference`, as a descriptor, and the platforms it covers:
    /// an index's entries, or a single manifest's config.
    pub async fn distribution(
        &self,
        req: berth_proto::images::DistributionRequest,
    ) -> Result<berth_proto::images::DistributionResponse> {
        use oci_client::manifest::{
            IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
            OCI_IMAGE_MEDIA_TYPE,
        };
        const ACCEPTED: [&str; 4] = [
            OCI_IMAGE_INDEX_MEDIA_TYPE,
            IMAGE_MANIFEST_LIST_MEDIA_TYPE,
            OCI_IMAGE_MEDIA_TYPE,
            IMAGE_MANIFEST_MEDIA_TYPE,
        ];
        let r = ImageRef::parse(&req.reference)?;
        let platform = Platform::parse("")?;
        let auth = registry_auth(req.auth);
        for (source, is_mirror) in self.sources(&r) {
            let registry = source.resolve_registry().to_string();
            let (client, scheme) = self.client_for(&registry, &platform);
            let ctx = ErrCtx {
                scheme,
                registry: registry.clone(),
                familiar: r.familiar(),
                familiar_name: r.familiar_name(),
                platform: platform.clone(),
            };
            let auth = if is_mirror {
                RegistryAuth::Anonymous
            } else {
                auth.clone()
            };
            let (raw, digest) = match client.pull_manifest_raw(&source, &auth, &ACCEPTED).await {
                Ok(got) => got,
                Err(e) if is_mirror => {
                    tracing::warn!(mirror = %registry, image = %r.familiar(), "mirror failed, trying the next source: {e}");
                    continue;
                }
                Err(e) => return Err(ctx.map(e)),
            };
            let doc: serde_json::Value = serde_json::from_slice(&raw)
                .map_err(|e| ImagedError::Registry(format!("invalid manifest: {e}")))?;
            let text = |v: &serde_json::Value, k: &str| {
                v.get(k)
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let platform_of = |p: &serde_json::Value| berth_proto::images::DistributionPlatform {
                os: text(p, "os"),
                architecture: text(p, "architecture"),
                variant: text(p, "variant"),
            };
            let platforms = if let Some(list) = doc.get("manifests").and_then(|m| m.as_array()) {
                list.iter()
                    .filter_map(|m| m.get("platform"))
                    .map(platform_of)
                    .collect()
            } else {
                let config = doc
                    .pointer("/config/digest")
                    .and_then(serde_json::Value::as_str)
                    .ok_or_else(|| ImagedError::Registry("the manifest has no config".into()))?;
                let mut blob = Vec::new();
                client
                    .pull_blob(&source, config, &mut blob)
                    .await
                    .map_err(|e| ctx.map(e))?;
                let cfg: serde_json::Value = serde_json::from_slice(&blob)
                    .map_err(|e| ImagedError::Registry(format!("invalid image config: {e}")))?;
                vec![platform_of(&cfg)]
            };
            let media_type = match text(&doc, "mediaType") {
                t if t.is_empty() => OCI_IMAGE_MEDIA_TYPE.to_string(),
                t => t,
            };
            return Ok(berth_proto::images::DistributionResponse {
                media_type,
                digest,
                size: raw.len() as i64,
                platforms,
            });
        }
        Err(ImagedError::Registry("no source to ask".into()))
    }

    /// Builds the API view of an image row.
    pub async fn image_proto(&self, row: ImageRow) -> Result<Image> {
        let repo_tags = self.store().tags_of(&row.id).await?;
        let repo_digests = self.store().repo_digests_of(&row.id).await?;
        let diff_ids: Vec<String> = serde_json::from_str(&row.diff_ids).unwrap_or_default();
        Ok(Image {
            id: row.id,
            repo_tags,
            repo_digests,
            size: row.size,
            created: row.created,
            config_json: row.config,
            diff_ids,
            os: row.os,
            architecture: row.architecture,
            parent: row.parent,
        })
    }
}

/// Renames a finished unpack into its final place (same file system, atomic); a leftover
/// final dir cannot exist (reconcile removes uncommitted ones), so it is replaced.
async fn commit_dir(from: &Path, to: &Path) -> Result<()> {
    let (from, to) = (from.to_path_buf(), to.to_path_buf());
    blocking(move || {
        if std::fs::symlink_metadata(&to).is_ok() {
            std::fs::remove_dir_all(&to)
                .map_err(|e| ImagedError::io(format!("removing {}", to.display()), e))?;
        }
        std::fs::rename(&from, &to).map_err(|e| {
            ImagedError::io(
                format!("renaming {} to {}", from.display(), to.display()),
                e,
            )
        })?;
        if let Some(parent) = to.parent() {
            // The rename is only durable once the directory holding it is synced.
            if let Ok(d) = std::fs::File::open(parent) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })
    .await
}

/// A blob stream error: a digest mismatch (oci-client reports it at the end of the
/// stream) is a bad layer; anything else is the connection.
fn blob_error(ctx: &ErrCtx, digest: &str, e: std::io::Error) -> ImagedError {
    let text = e.to_string();
    if text.to_lowercase().contains("digest") {
        ImagedError::BadLayer(format!(
            "filesystem layer verification failed for digest {digest}: {text}"
        ))
    } else {
        let reason = io_reason(&e).unwrap_or(text);
        ImagedError::Unavailable(format!(
            "error pulling {} layer {digest}: {reason}",
            ctx.familiar
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_parsing() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!(Platform::parse("").unwrap().os, "linux");
        assert!(Platform::parse("linux").is_err());
    }
}
