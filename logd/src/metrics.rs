//! logd's metrics: lines and bytes stored, by stream.

use berth_kit::metrics::{Labels, counter_family, label};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::OnceLock;

struct LogMetrics {
    lines: Family<Labels, Counter>,
    bytes: Family<Labels, Counter>,
}

fn get() -> &'static LogMetrics {
    static M: OnceLock<LogMetrics> = OnceLock::new();
    M.get_or_init(|| LogMetrics {
        lines: counter_family("log_lines", "Log lines stored, by stream"),
        bytes: counter_family("log_bytes", "Bytes of log lines stored, by stream"),
    })
}

/// Registers the metrics so a scrape shows them before the first line.
pub fn register() {
    let _ = get();
}

/// Counts lines committed to a log.
pub fn written(stream: &str, lines: u64, bytes: u64) {
    let m = get();
    m.lines
        .get_or_create(&label("stream", stream))
        .inc_by(lines);
    m.bytes
        .get_or_create(&label("stream", stream))
        .inc_by(bytes);
}
