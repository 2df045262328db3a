//! berth-imaged: the image store. Registry pulls (oci-client), image/tag records in
//! SQLite, layers unpacked once per chain ID, and per-container overlay snapshots.
//!
//! On disk, under `<data-root>/imaged/`:
//! - `state.db`: the records (source of truth);
//! - `tmp/`: downloads and unpacks in progress (emptied on start);
//! - `layers/<chain-id-hex>/diff`: unpacked layers, renamed into place when complete;
//! - `l/<16 hex>`: short symlinks to layer diff dirs, so overlay options fit in a page;
//! - `empty/`: the lower dir of images without layers;
//! - `snapshots/<container-id>/{upper,work,merged}`: container rootfs overlays.

pub mod changes;
pub mod commit;
pub mod error;
pub mod export;
pub mod grpc;
pub mod login;
pub mod lookup;
pub mod manage;
pub mod metrics;
pub mod mounts;
pub mod pull;
pub mod push;
pub mod reconcile;
pub mod reference;
pub mod saveload;
pub mod snapshot;
pub mod store;
pub mod unpack;
pub mod usage;

pub use error::{ImagedError, Result};
pub use grpc::ImagesService;
pub use store::{MIGRATOR, Store};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where imaged keeps its files (all under `<data-root>/imaged/`).
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout rooted at imaged's service directory.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `<root>/tmp`: work in progress; anything here at start is debris.
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// `<root>/layers`.
    pub fn layers(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// `<root>/layers/<chain-id-hex>`.
    pub fn layer_dir(&self, chain_id: &str) -> PathBuf {
        self.layers().join(digest_hex(chain_id))
    }

    /// `<root>/l`: short names for layer diff dirs.
    pub fn links(&self) -> PathBuf {
        self.root.join("l")
    }

    /// `<root>/empty`: the lower dir of an image without layers.
    pub fn empty(&self) -> PathBuf {
        self.root.join("empty")
    }

    /// `<root>/snapshots`.
    pub fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// `<root>/snapshots/<container-id>`.
    pub fn snapshot_dir(&self, container_id: &str) -> PathBuf {
        self.snapshots().join(container_id)
    }

    /// Creates the directories above.
    pub fn create(&self) -> Result<()> {
        for d in [
            self.tmp(),
            self.layers(),
            self.links(),
            self.empty(),
            self.snapshots(),
        ] {
            std::fs::create_dir_all(&d)
                .map_err(|e| ImagedError::io(format!("creating {}", d.display()), e))?;
        }
        Ok(())
    }
}

/// The hex part of `sha256:<hex>` (the input itself when it has no algorithm).
pub fn digest_hex(digest: &str) -> &str {
    digest.split_once(':').map(|(_, h)| h).unwrap_or(digest)
}

/// imaged's settings, from flags and daemon.json.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `<data-root>/imaged`.
    pub dir: PathBuf,
    /// `host:port` registries spoken to over plain HTTP (besides loopback ones).
    pub insecure_registries: Vec<String>,
    /// daemon.json `registry-mirrors`: tried in order before Docker Hub for its images.
    pub registry_mirrors: Vec<Mirror>,
}

/// A pull-through mirror of Docker Hub (daemon.json `registry-mirrors`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// `host[:port]`.
    pub host: String,
    /// Plain HTTP (`http://...`) rather than TLS.
    pub plain_http: bool,
}

impl Mirror {
    /// Parses one entry as Docker accepts it: an http(s) URL of a host, without a path,
    /// query or fragment (a trailing slash is fine).
    pub fn parse(url: &str) -> Result<Self> {
        let bad =
            |why: &str| ImagedError::InvalidArgument(format!("invalid mirror: {url:?}: {why}"));
        let (plain_http, rest) = if let Some(r) = url.strip_prefix("http://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (false, r)
        } else {
            return Err(bad("unsupported scheme (http or https)"));
        };
        let host = rest.strip_suffix('/').unwrap_or(rest);
        if host.is_empty() || host.contains(['/', '?', '#', '@']) {
            return Err(bad("path, query, fragment or user info not allowed"));
        }
        Ok(Self {
            host: host.to_string(),
            plain_http,
        })
    }
}

/// Reads daemon.json's `registry-mirrors`, if there is a file (see
/// [`insecure_registries_from`] for a missing or malformed one).
pub fn registry_mirrors_from(config_file: Option<&Path>) -> Result<Vec<Mirror>> {
    string_list_from(config_file, "registry-mirrors")?
        .iter()
        .map(|u| Mirror::parse(u))
        .collect()
}

/// Reads `insecure-registries` from a daemon.json, if there is one. A missing file means
/// none; a malformed one is an error (the daemon should not start on a broken config).
pub fn insecure_registries_from(config_file: Option<&Path>) -> Result<Vec<String>> {
    string_list_from(config_file, "insecure-registries")
}

/// A list of strings under `key` in a daemon.json, if there is one.
fn string_list_from(config_file: Option<&Path>, key: &str) -> Result<Vec<String>> {
    let Some(path) = config_file else {
        return Ok(Vec::new());
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ImagedError::io(format!("reading {}", path.display()), e)),
    };
    let doc: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ImagedError::InvalidArgument(format!("parsing {}: {e}", path.display())))?;
    Ok(doc
        .get(key)
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// The image store. Cheap to clone; every clone shares state.
#[derive(Clone)]
pub struct Imaged {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    layout: Layout,
    insecure: Vec<String>,
    mirrors: Vec<Mirror>,
    /// One unpack per chain ID at a time: concurrent pulls sharing a layer wait, then
    /// find it committed.
    layer_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Snapshot prepare/remove are short; serialising them keeps mount state simple.
    snapshot_lock: tokio::sync::Mutex<()>,
}

impl Imaged {
    /// An image store over an opened database.
    pub fn new(pool: sqlx::SqlitePool, settings: Settings) -> Self {
        Self {
            inner: Arc::new(Inner {
                store: Store::new(pool),
                layout: Layout::new(settings.dir),
                insecure: settings.insecure_registries,
                mirrors: settings.registry_mirrors,
                layer_locks: std::sync::Mutex::new(HashMap::new()),
                snapshot_lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Whether daemon.json's `insecure-registries` names `registry`, or it is a mirror
    /// given as `http://` (plain HTTP).
    pub fn is_insecure(&self, registry: &str) -> bool {
        self.inner.insecure.iter().any(|r| r == registry)
            || self
                .inner
                .mirrors
                .iter()
                .any(|m| m.plain_http && m.host == registry)
    }

    /// daemon.json's `registry-mirrors`, in order.
    pub fn mirrors(&self) -> &[Mirror] {
        &self.inner.mirrors
    }

    /// The database access.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The on-disk layout.
    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    fn layer_lock(&self, chain_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = match self.inner.layer_locks.lock() {
            Ok(m) => m,
            // A panic while holding this map cannot leave it inconsistent (insert only).
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(chain_id.to_string()).or_default().clone()
    }
}

/// Runs blocking work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    // The blocking thread continues the caller's span, so its work is traced under it.
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| ImagedError::io("blocking task", std::io::Error::other(e.to_string())))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_are_parsed_as_docker_accepts_them() {
        assert_eq!(
            Mirror::parse("http://127.0.0.1:5000/").unwrap(),
            Mirror {
                host: "127.0.0.1:5000".into(),
                plain_http: true
            }
        );
        assert!(!Mirror::parse("https://mirror.example").unwrap().plain_http);
        for bad in [
            "ftp://m",
            "mirror.example",
            "https://m/path",
            "https://m?x",
            "http://",
        ] {
            assert!(Mirror::parse(bad).is_err(), "{bad}");
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("daemon.json");
        std::fs::write(&p, r#"{"registry-mirrors": ["http://127.0.0.1:1"]}"#).unwrap();
        assert_eq!(registry_mirrors_from(Some(&p)).unwrap().len(), 1);
        std::fs::write(&p, r#"{"registry-mirrors": ["m/x"]}"#).unwrap();
        assert!(registry_mirrors_from(Some(&p)).is_err());
    }

    #[test]
    fn reads_insecure_registries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("daemon.json");
        assert!(insecure_registries_from(Some(&p)).unwrap().is_empty());
        std::fs::write(&p, r#"{"insecure-registries": ["reg.local:5000"]}"#).unwrap();
        assert_eq!(
            insecure_registries_from(Some(&p)).unwrap(),
            vec!["reg.local:5000".to_string()]
        );
        std::fs::write(&p, "{").unwrap();
        assert!(insecure_registries_from(Some(&p)).is_err());
    }
}
