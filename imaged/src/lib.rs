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
    /// daemon.json `max-concurrent-downloads`: layers one pull fetches at once.
    pub max_concurrent_downloads: usize,
}

pub use berth_kit::registries::Mirror;

/// Reads daemon.json's `registry-mirrors`, if there is a file (see
/// [`insecure_registries_from`] for a missing or malformed one).
pub fn registry_mirrors_from(config_file: Option<&Path>) -> Result<Vec<Mirror>> {
    berth_kit::registries::from_daemon_json(&daemon_json(config_file)?)
        .map_err(ImagedError::InvalidArgument)
}

/// Reads daemon.json's `max-concurrent-downloads` (Docker's 3 without it).
pub fn max_concurrent_downloads_from(config_file: Option<&Path>) -> Result<usize> {
    berth_kit::registries::max_concurrent_downloads(&daemon_json(config_file)?)
        .map_err(ImagedError::InvalidArgument)
}

/// Reads `insecure-registries` from a daemon.json, if there is one. A missing file means
/// none; a malformed one is an error (the daemon should not start on a broken config).
pub fn insecure_registries_from(config_file: Option<&Path>) -> Result<Vec<String>> {
    string_list_from(config_file, "insecure-registries")
}

/// A list of strings under `key` in a daemon.json, if there is one.
fn string_list_from(config_file: Option<&Path>, key: &str) -> Result<Vec<String>> {
    Ok(daemon_json(config_file)?
        .get(key)
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// The daemon.json document (`{}` without a file).
fn daemon_json(config_file: Option<&Path>) -> Result<serde_json::Value> {
    berth_kit::reload::read_daemon_json(config_file).map_err(ImagedError::InvalidArgument)
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
    concurrent_downloads: usize,
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
                concurrent_downloads: settings.max_concurrent_downloads.max(1),
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

    /// Layers one pull downloads at once.
    pub fn concurrent_downloads(&self) -> usize {
        self.inner.concurrent_downloads
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
    fn reads_registry_mirrors() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("daemon.json");
        assert!(registry_mirrors_from(Some(&p)).unwrap().is_empty());
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
