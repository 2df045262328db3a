//! berth-volumed: named and anonymous volumes (local driver) and which containers use
//! them. Records live in SQLite, data in `<data-root>/volumed/volumes/<name>/_data`
//! (a mount there for volumes with `type`/`device` options while they are in use).

pub mod copyup;
pub mod error;
pub mod mounts;
pub mod service;
pub mod store;

pub use error::VolumeError;
pub use service::VolumeService;
pub use store::VolumeStore;

/// volumed's embedded database migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The service name: socket `volumed.sock`, data dir `<data-root>/volumed/`.
pub const SERVICE: &str = "volumed";
