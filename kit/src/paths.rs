//! Where an instance keeps its files, and the names of its kernel objects.
//!
//! Two Berths can run side by side: everything hangs off a data root and a run root, and
//! kernel object names (bridge, nftables table, cgroup parent) get a suffix derived from
//! the run root unless it is the default one.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The default data root, as dockerd's `/var/lib/docker`.
pub const DEFAULT_DATA_ROOT: &str = "/var/lib/berth";
/// The default run root (dockerd's `--exec-root`).
pub const DEFAULT_RUN_ROOT: &str = "/run/berth";

/// The two roots of one Berth instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    pub data_root: PathBuf,
    pub run_root: PathBuf,
}

impl Roots {
    pub fn new(data_root: impl Into<PathBuf>, run_root: impl Into<PathBuf>) -> Self {
        Self {
            data_root: data_root.into(),
            run_root: run_root.into(),
        }
    }

    /// `<data-root>/<service>/`: the service's private directory (state.db and its files).
    pub fn service_dir(&self, service: &str) -> PathBuf {
        self.data_root.join(service)
    }

    /// `<data-root>/<service>/state.db`.
    pub fn state_db(&self, service: &str) -> PathBuf {
        self.service_dir(service).join("state.db")
    }

    /// `<run-root>/<service>.sock`: the service's gRPC socket.
    pub fn socket(&self, service: &str) -> PathBuf {
        self.run_root.join(format!("{service}.sock"))
    }

    /// `<run-root>/docker.sock`: the default Docker API socket.
    pub fn docker_socket(&self) -> PathBuf {
        self.run_root.join("docker.sock")
    }

    /// `<run-root>/shims/<id>/`: a container's shim directory.
    pub fn shim_dir(&self, container_id: &str) -> PathBuf {
        self.run_root.join("shims").join(container_id)
    }

    /// `<run-root>/netns/<id>`: a container's bind-mounted network namespace.
    pub fn netns_path(&self, container_id: &str) -> PathBuf {
        self.run_root.join("netns").join(container_id)
    }

    /// Empty for the default run root, else 6 hex chars of sha256(run root).
    pub fn instance_suffix(&self) -> String {
        instance_suffix(&self.run_root)
    }

    /// The default bridge: `berth0`, or `bx<suffix>` for another run root.
    pub fn bridge_name(&self) -> String {
        let s = self.instance_suffix();
        if s.is_empty() {
            "berth0".to_string()
        } else {
            format!("bx{s}")
        }
    }

    /// The nftables table: `berth`, or `berth_<suffix>`.
    pub fn nft_table(&self) -> String {
        let s = self.instance_suffix();
        if s.is_empty() {
            "berth".to_string()
        } else {
            format!("berth_{s}")
        }
    }

    /// The cgroup parent: `berth`, or `berth-<suffix>`.
    pub fn cgroup_parent(&self) -> String {
        let s = self.instance_suffix();
        if s.is_empty() {
            "berth".to_string()
        } else {
            format!("berth-{s}")
        }
    }
}

/// See [`Roots::instance_suffix`].
pub fn instance_suffix(run_root: &Path) -> String {
    if run_root == Path::new(DEFAULT_RUN_ROOT) {
        return String::new();
    }
    let digest = Sha256::digest(run_root.as_os_str().as_encoded_bytes());
    hex::encode(digest)[..6].to_string()
}

/// The data root's mode, as dockerd's: only root may enter it (the images' files, every
/// service's database, container configs with their environment, logs).
pub const DATA_ROOT_MODE: u32 = 0o710;
/// The run root's mode: others may pass through to the API socket (its own mode and
/// group decide who may use it) but not list what is there.
pub const RUN_ROOT_MODE: u32 = 0o711;
/// A directory only its owner (root) may enter: each service's own state directory.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Creates `dir` (and its parents) and gives it exactly `mode`, whatever the umask or an
/// earlier mode was.
pub fn ensure_dir_mode(dir: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_instance_has_plain_names() {
        let r = Roots::new(DEFAULT_DATA_ROOT, DEFAULT_RUN_ROOT);
        assert_eq!(r.bridge_name(), "berth0");
        assert_eq!(r.nft_table(), "berth");
        assert_eq!(r.cgroup_parent(), "berth");
        assert_eq!(r.socket("imaged"), PathBuf::from("/run/berth/imaged.sock"));
    }

    #[test]
    fn other_instances_get_distinct_short_names() {
        let a = Roots::new("/tmp/a", "/tmp/run-a");
        let b = Roots::new("/tmp/b", "/tmp/run-b");
        assert_ne!(a.bridge_name(), b.bridge_name());
        assert!(a.bridge_name().starts_with("bx"));
        // Linux interface names are at most 15 bytes.
        assert!(a.bridge_name().len() <= 15);
        assert_eq!(a.nft_table(), format!("berth_{}", a.instance_suffix()));
        assert_eq!(a.cgroup_parent(), format!("berth-{}", a.instance_suffix()));
    }
}
