//! berth-kit: the few things every Berth service shares. Paths and per-instance names,
//! common flags, logging setup, SQLite open + migrate, and gRPC over unix sockets.
//! Nothing service-specific belongs here.

pub mod args;
pub mod chunks;
pub mod db;
pub mod disk;
pub mod grpc;
pub mod metrics;
pub mod paths;
pub mod registries;
pub mod reload;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod unix;

pub use args::ServiceArgs;
pub use paths::Roots;
