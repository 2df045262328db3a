//! deploy/observability/prometheus.yml is a valid Prometheus configuration (Prometheus's
//! own `promtool` checks it) and scrapes the gateway's default metrics address.

use std::path::Path;
use std::process::Command;

#[test]
fn prometheus_config_passes_promtool() {
    let cfg =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/observability/prometheus.yml");
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(&cfg)
        .output()
        .expect("promtool (Debian's prometheus package, installed by scripts/setup-host.sh)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&cfg).expect("reading prometheus.yml");
    assert!(text.contains("127.0.0.1:9323"), "{text}");
}
