//! Logging setup: human-readable lines on stderr, `RUST_LOG` honoured.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber for `service` (e.g. "berth-imaged").
pub fn init(service: &str, debug: bool) {
    let default = if debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!("{default},h2=info,hyper=info,tower=info,sqlx=warn"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    tracing::debug!(service, "logging initialised");
}
