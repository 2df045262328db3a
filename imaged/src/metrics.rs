//! imaged's metrics: pulls by result and bytes downloaded from registries.

use berth_kit::metrics::{Labels, counter_family, label};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::OnceLock;

struct PullMetrics {
    pulls: Family<Labels, Counter>,
    bytes: Family<Labels, Counter>,
}

fn get() -> &'static PullMetrics {
    static M: OnceLock<PullMetrics> = OnceLock::new();
    M.get_or_init(|| PullMetrics {
        pulls: counter_family("image_pulls", "Image pulls, by result (ok, error)"),
        bytes: counter_family("image_pull_bytes", "Layer bytes downloaded from registries"),
    })
}

/// Registers the metrics so a scrape shows them before the first pull.
pub fn register() {
    let _ = get();
}

/// Counts a finished pull.
pub fn pulled(ok: bool) {
    get()
        .pulls
        .get_or_create(&label("result", if ok { "ok" } else { "error" }))
        .inc();
}

/// Counts downloaded layer bytes.
pub fn downloaded(bytes: u64) {
    get().bytes.get_or_create(&Vec::new()).inc_by(bytes);
}
