//! What berthd knows about its services, as a JSON file in the run root
//! (`<run-root>/berthd-status.json`), written atomically by berthd and read by
//! `berthd status` and by the gateway (its `/status` endpoint and restart metrics).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file's name in the run root.
pub const FILE: &str = "berthd-status.json";

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LauncherStatus {
    /// berthd's pid.
    pub pid: u32,
    /// Berth's version (every binary is built from one workspace).
    pub version: String,
    /// When berthd started (RFC 3339).
    pub started_at: String,
    /// One entry per service, in start order.
    pub services: Vec<ServiceStatus>,
}

/// One service as berthd sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Short name: "imaged", "gateway", ...
    pub name: String,
    /// The binary it runs.
    pub binary: String,
    /// The current process (0 while restarting).
    pub pid: u32,
    /// When the current process started (RFC 3339; empty while restarting).
    pub started_at: String,
    /// How many times berthd restarted it.
    pub restarts: u32,
    /// How its last process ended, or why it could not start.
    pub last_error: String,
}

/// `<run_root>/berthd-status.json`.
pub fn path(run_root: &Path) -> PathBuf {
    run_root.join(FILE)
}

/// Writes the file atomically (temp file + rename): a reader never sees half of it.
pub fn write(run_root: &Path, status: &LauncherStatus) -> std::io::Result<()> {
    let tmp = run_root.join(format!(".{FILE}.tmp"));
    let json = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path(run_root))
}

/// Reads the file; `None` when berthd is not running there (or never wrote it).
pub fn read(run_root: &Path) -> Option<LauncherStatus> {
    let data = std::fs::read(path(run_root)).ok()?;
    serde_json::from_slice(&data).ok()
}

/// A service's live state, checked now over its socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveService {
    #[serde(flatten)]
    pub launcher: ServiceStatus,
    /// "up" (answers its health check), "down" (nothing listens) or "hung" (listens but
    /// does not answer in time).
    pub state: String,
    /// Seconds since the current process started.
    pub uptime_seconds: u64,
}

/// The live view: berthd's file plus a health check of each service's socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveStatus {
    pub pid: u32,
    pub version: String,
    pub started_at: String,
    pub services: Vec<LiveService>,
}

/// Health-checks every service in `status` (within `timeout` each, concurrently).
pub async fn live(run_root: &Path, status: LauncherStatus, timeout: Duration) -> LiveStatus {
    let checks = status.services.iter().map(|s| {
        let sock = if s.name == "gateway" {
            None
        } else {
            Some(crate::grpc::socket_for(run_root, &s.name))
        };
        async move {
            match sock {
                // The gateway speaks HTTP, not gRPC: it is up when it has a process.
                None => {
                    if s.pid != 0 {
                        "up"
                    } else {
                        "down"
                    }
                }
                Some(sock) => {
                    if crate::grpc::is_serving(&sock, timeout).await {
                        "up"
                    } else if crate::unix::connect_blocking(&sock).is_ok() {
                        "hung"
                    } else {
                        "down"
                    }
                }
            }
        }
    });
    let states = futures_util::future::join_all(checks).await;
    let now = chrono::Utc::now();
    let services = status
        .services
        .into_iter()
        .zip(states)
        .map(|(s, state)| {
            let uptime = chrono::DateTime::parse_from_rfc3339(&s.started_at)
                .map(|t| (now - t.with_timezone(&chrono::Utc)).num_seconds().max(0) as u64)
                .unwrap_or(0);
            LiveService {
                state: if s.pid == 0 { "down" } else { state }.to_string(),
                uptime_seconds: uptime,
                launcher: s,
            }
        })
        .collect();
    LiveStatus {
        pid: status.pid,
        version: status.version,
        started_at: status.started_at,
        services,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn written_status_reads_back_and_a_dead_socket_is_down() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), None);
        let st = LauncherStatus {
            pid: 42,
            version: "0.1.0".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            services: vec![ServiceStatus {
                name: "imaged".into(),
                binary: "/x/berth-imaged".into(),
                pid: 7,
                started_at: "2026-01-01T00:00:00Z".into(),
                restarts: 2,
                last_error: "killed by signal 9".into(),
            }],
        };
        write(dir.path(), &st).unwrap();
        assert_eq!(read(dir.path()), Some(st.clone()));
        let live = live(dir.path(), st, Duration::from_millis(200)).await;
        assert_eq!(live.services[0].state, "down");
        assert!(live.services[0].uptime_seconds > 0);
        assert_eq!(live.services[0].launcher.restarts, 2);
    }
}
