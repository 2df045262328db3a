//! SIGHUP: re-read daemon.json and apply what may change while running, as dockerd's
//! reload does (`debug` only when the file sets it; the caller applies its own keys).
//! berthd validates the file before it forwards the signal to the services.

use serde_json::Value;
use std::path::{Path, PathBuf};

/// daemon.json as a document: `{}` when there is no file (or no path).
pub fn read_daemon_json(path: Option<&Path>) -> Result<Value, String> {
    let Some(path) = path else {
        return Ok(Value::Object(Default::default()));
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            serde_json::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Object(Default::default())),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// Applies the keys every process shares (`debug`).
pub fn apply_common(doc: &Value) {
    if let Some(debug) = doc.get("debug").and_then(Value::as_bool) {
        crate::telemetry::set_debug(debug);
    }
}

/// Spawns the SIGHUP handler (inside a tokio runtime): each signal re-reads `config_file`,
/// applies the common keys, then `apply`. A file that does not parse changes nothing.
pub fn on_sighup<F>(config_file: Option<PathBuf>, apply: F)
where
    F: Fn(&Value) + Send + 'static,
{
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("no SIGHUP handler, configuration reload disabled: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match read_daemon_json(config_file.as_deref()) {
                Ok(doc) => {
                    apply_common(&doc);
                    apply(&doc);
                    tracing::info!("configuration reloaded");
                }
                Err(e) => tracing::warn!("configuration not reloaded: {e}"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_empty_and_bad_json_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_daemon_json(None).unwrap(), serde_json::json!({}));
        assert_eq!(
            read_daemon_json(Some(&d.path().join("none.json"))).unwrap(),
            serde_json::json!({})
        );
        let bad = d.path().join("bad.json");
        std::fs::write(&bad, "{").unwrap();
        assert!(
            read_daemon_json(Some(&bad))
                .unwrap_err()
                .contains("parsing")
        );
    }
}
