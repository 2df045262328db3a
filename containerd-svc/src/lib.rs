//! berth-containerd: container records and lifecycle.
//!
//! It owns the container records (SQLite), writes each container's OCI bundle, and runs
//! every started container under its own `berth-shim` (which alone links libcontainer).
//! It never is a container's parent: shims are detached and found again after a restart.
//! It keeps `docker exec` records in memory and relays each exec's stream between the
//! gateway and the container's shim ([`exec`]).

pub mod archive;
pub mod cgroup_warmup;
pub mod exec;
pub mod freezer;
pub mod health;
pub mod hostconfig;
pub mod names;
pub mod restart;
pub mod seccomp;
pub mod service;
pub mod shim;
pub mod spec;
pub mod state;
pub mod stats;
pub mod stdio;
pub mod store;
pub mod update;

use std::path::PathBuf;

/// Embedded migrations of `<data-root>/containerd/state.db`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Service name for paths (`<data-root>/containerd/`, `<run-root>/containerd.sock`).
pub const SERVICE: &str = "containerd";

/// Errors of this service, mapped once to gRPC codes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such container (Docker's wording).
    #[error("No such container: {0}")]
    NotFound(String),
    /// Something else that does not exist; the text is the whole message.
    #[error("{0}")]
    Missing(String),
    /// No such exec instance (Docker's wording).
    #[error("No such exec instance: {0}")]
    NoSuchExec(String),
    /// Name or id in use.
    #[error("{0}")]
    AlreadyExists(String),
    /// The container is in the wrong state for the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Bad input.
    #[error("{0}")]
    InvalidArgument(String),
    /// A shim did not answer in time.
    #[error("{0}")]
    Unavailable(String),
    /// An option Berth does not implement yet (HTTP 501 at the API).
    #[error("{0} is not supported yet")]
    Unimplemented(String),
    /// Anything else.
    #[error("{0}")]
    Internal(String),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::NotFound(_) | Error::NoSuchExec(_) | Error::Missing(_) => {
                tonic::Status::not_found(msg)
            }
            Error::AlreadyExists(_) => tonic::Status::already_exists(msg),
            Error::FailedPrecondition(_) => tonic::Status::failed_precondition(msg),
            Error::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
            Error::Unavailable(_) => tonic::Status::unavailable(msg),
            Error::Unimplemented(_) => tonic::Status::unimplemented(msg),
            Error::Internal(_) | Error::Db(_) => tonic::Status::internal(msg),
        }
    }
}

/// Where things live and which binaries to use.
#[derive(Debug, Clone)]
pub struct Config {
    /// `<data-root>/containerd/bundles`.
    pub bundles_dir: PathBuf,
    /// `<run-root>/shims`.
    pub shims_dir: PathBuf,
    /// libcontainer's state root, `<run-root>/youki`.
    pub state_root: PathBuf,
    /// The berth-shim executable.
    pub shim_binary: PathBuf,
    /// logd's socket, handed to every shim.
    pub logd_socket: PathBuf,
    /// Cgroup parent: containers land in `/<parent>/<id>`.
    pub cgroup_parent: String,
    /// The static init `--init` bind-mounts at /sbin/docker-init (None: --init refused).
    pub init_binary: Option<PathBuf>,
}

impl Config {
    /// `<run-root>/shims/<id>`.
    pub fn shim_dir(&self, id: &str) -> PathBuf {
        self.shims_dir.join(id)
    }
    /// `<data-root>/containerd/bundles/<id>`.
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.bundles_dir.join(id)
    }
}

/// Finds berth-shim: beside the current executable, else on PATH.
pub fn find_shim_binary() -> Option<PathBuf> {
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let p = dir.join("berth-shim");
        if p.is_file() {
            return Some(p);
        }
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("berth-shim"))
            .find(|p| p.is_file())
    })
}

/// A static init for `--init`: Docker ships tini as docker-init; Debian's `tini` package
/// has a static build (a container may have no libc).
pub fn find_init_binary() -> Option<PathBuf> {
    [
        "/usr/bin/tini-static",
        "/usr/bin/docker-init",
        "/usr/libexec/docker/docker-init",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// Unix nanoseconds of an RFC 3339 time.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
}

/// RFC 3339 with nanoseconds, UTC ("2024-01-02T03:04:05.123456789Z").
pub fn rfc3339_nanos(unix_nano: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(unix_nano)
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Now, in nanoseconds since the epoch.
pub fn now_unix_nano() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}
