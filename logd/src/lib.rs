//! berth-logd: container log streams. Shims write lines over gRPC, logd stores them
//! durably in Docker's json-file format and serves reads and follows.

pub mod error;
pub mod format;
pub mod metrics;
pub mod rotate;
pub mod service;
pub mod store;

pub use error::LogError;
pub use service::{Driver, LogService};

/// logd's embedded database migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The service name: socket `logd.sock`, data dir `<data-root>/logd/`.
pub const SERVICE: &str = "logd";
