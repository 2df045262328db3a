//! Healthchecks as Docker runs them: a probe command executed in the running container
//! every interval; its results kept in Docker's `State.Health` shape, in the container's
//! record, so the streak survives a restart of containerd-svc.

use crate::exec::{new_exec_id, resolve_process};
use crate::service::Service;
use crate::{Error, now_unix_nano, rfc3339_nanos, shim, store};
use berth_proto::containers::{ContainerSpec, ExecConfig};
use berth_proto::shim::{ExecInput, exec_output};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// Docker's defaults.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RETRIES: u32 = 3;
/// Log entries kept, and output bytes kept per entry (Docker's).
const MAX_LOG: usize = 5;
const MAX_OUTPUT: usize = 4096;

/// A container's healthcheck, from `Config.Healthcheck` (the gateway merged the image's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The probe's argv.
    pub argv: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    /// The interval during the start period (zero: `interval`).
    pub start_interval: Duration,
    pub retries: u32,
}

fn nanos(v: &Value, key: &str) -> Duration {
    Duration::from_nanos(v.get(key).and_then(Value::as_u64).unwrap_or(0))
}

impl Check {
    /// None when there is no healthcheck (absent, empty or `["NONE"]`).
    pub fn from_config(config_json: &[u8]) -> Option<Self> {
        let config: Value = serde_json::from_slice(config_json).ok()?;
        let hc = config.get("Healthcheck")?;
        let test: Vec<String> = hc
            .get("Test")?
            .as_array()?
            .iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect();
        let argv = match test.split_first() {
            Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => rest.to_vec(),
            Some((kind, [cmd])) if kind == "CMD-SHELL" => {
                vec!["/bin/sh".into(), "-c".into(), cmd.clone()]
            }
            _ => return None,
        };
        let or = |d: Duration, default: Duration| if d.is_zero() { default } else { d };
        Some(Self {
            argv,
            interval: or(nanos(hc, "Interval"), DEFAULT_INTERVAL),
            timeout: or(nanos(hc, "Timeout"), DEFAULT_TIMEOUT),
            start_period: nanos(hc, "StartPeriod"),
            start_interval: nanos(hc, "StartInterval"),
            retries: match hc.get("Retries").and_then(Value::as_u64) {
                Some(n) if n > 0 => n.min(u32::MAX as u64) as u32,
                _ => DEFAULT_RETRIES,
            },
        })
    }
}

/// One probe, as `docker inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Probe {
    pub start: String,
    pub end: String,
    pub exit_code: i32,
    pub output: String,
}

/// Docker's `State.Health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// "starting", "healthy" or "unhealthy".
    pub status: String,
    pub failing_streak: u32,
    pub log: Vec<Probe>,
}

impl Health {
    /// A fresh run's health.
    pub fn starting() -> Self {
        Self {
            status: "starting".into(),
            failing_streak: 0,
            log: Vec::new(),
        }
    }

    /// From the stored JSON; a fresh one when there is none.
    pub fn load(json: &str) -> Self {
        serde_json::from_str(json).unwrap_or_else(|_| Self::starting())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Applies a probe's result as Docker does: success makes it healthy; a failure in
    /// the start period (while not yet healthy) does not count; `retries` failures in a
    /// row make it unhealthy. Returns whether the status changed.
    pub fn record(&mut self, probe: Probe, in_start_period: bool, retries: u32) -> bool {
        let before = self.status.clone();
        if probe.exit_code == 0 {
            self.failing_streak = 0;
            self.status = "healthy".into();
        } else if !(in_start_period && self.status != "healthy") {
            self.failing_streak += 1;
            if self.failing_streak >= retries {
                self.status = "unhealthy".into();
            }
        }
        self.log.push(probe);
        if self.log.len() > MAX_LOG {
            let extra = self.log.len() - MAX_LOG;
            self.log.drain(..extra);
        }
        self.status != before
    }
}

/// Go's rendering of a whole-second or sub-second duration ("30s", "1.5s", "500ms"), as
/// in Docker's timeout message.
fn go_duration(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

impl Service {
    /// Runs the healthcheck of container `id` while its run `pid` lasts. Started with the
    /// run's watcher (at start and when containerd-svc comes back), it picks up the
    /// stored streak.
    pub(crate) fn spawn_health_monitor(&self, id: String, pid: i32) {
        let svc = self.clone();
        tokio::spawn(async move {
            let check = match store::get(&svc.inner.pool, &id).await {
                Ok(Some(rec)) => match rec.spec().map(|s| Check::from_config(&s.config_json)) {
                    Ok(Some(c)) => c,
                    _ => return,
                },
                _ => return,
            };
            loop {
                let Ok(Some(rec)) = store::get(&svc.inner.pool, &id).await else {
                    return;
                };
                let running = |r: &store::Record| {
                    (r.state == "running" || r.state == "paused") && r.pid == pid as i64
                };
                if !running(&rec) {
                    return;
                }
                let started = crate::parse_rfc3339(&rec.started_at).unwrap_or(0);
                let start_period_ends = started + check.start_period.as_nanos() as i64;
                let wait = if now_unix_nano() < start_period_ends && !check.start_interval.is_zero()
                {
                    check.start_interval
                } else {
                    check.interval
                };
                tokio::time::sleep(wait).await;
                let rec = match store::get(&svc.inner.pool, &id).await {
                    Ok(Some(r)) if running(&r) => r,
                    _ => return,
                };
                if rec.state == "paused" {
                    continue;
                }
                let Ok(spec) = rec.spec() else { return };
                let start = now_unix_nano();
                let probe = svc.probe(&id, &spec, &check).await;
                let in_start_period = start < start_period_ends;
                // Re-read: the run may have ended while the probe ran.
                let rec = match store::get(&svc.inner.pool, &id).await {
                    Ok(Some(r)) if running(&r) => r,
                    _ => return,
                };
                let mut health = Health::load(&rec.health);
                let changed = health.record(probe, in_start_period, check.retries);
                if let Err(e) = store::set_health(&svc.inner.pool, &id, &health.to_json()).await {
                    tracing::warn!(id, error = %e, "storing the health");
                }
                if changed {
                    tracing::info!(id, status = %health.status, "health status changed");
                    svc.emit(&rec, &spec, &format!("health_status: {}", health.status), 0);
                }
            }
        });
    }

    /// Runs the probe once through the shim (a transient exec).
    async fn probe(&self, id: &str, spec: &ContainerSpec, check: &Check) -> Probe {
        let start = now_unix_nano();
        let done = |exit_code: i32, output: String| Probe {
            start: rfc3339_nanos(start),
            end: rfc3339_nanos(now_unix_nano()),
            exit_code,
            output,
        };
        let cfg = ExecConfig {
            cmd: check.argv.clone(),
            ..Default::default()
        };
        let process = match resolve_process(&new_exec_id(), &cfg, spec, false) {
            Ok(p) => berth_proto::shim::ExecProcess {
                transient: true,
                timeout_ms: check.timeout.as_millis().min(u32::MAX as u128) as u32,
                ..p
            },
            Err(e) => return done(-1, e.to_string()),
        };
        let run = async {
            let first = ExecInput {
                start: Some(process),
                ..Default::default()
            };
            let (_stdin, mut out) = shim::exec(&self.inner.cfg, id, first).await?;
            let mut output = Vec::new();
            while let Some(o) = out
                .message()
                .await
                .map_err(|s| Error::Unavailable(s.message().to_string()))?
            {
                match o.event {
                    Some(exec_output::Event::Chunk(c)) => {
                        let room = MAX_OUTPUT.saturating_sub(output.len());
                        output.extend_from_slice(&c.data[..c.data.len().min(room)]);
                    }
                    Some(exec_output::Event::Failed(text)) => {
                        let arg0 = check.argv.first().cloned().unwrap_or_default();
                        let f = shim::classify_exec_error(&text, &arg0);
                        return Ok((f.code, f.message));
                    }
                    Some(exec_output::Event::Exited(x)) => {
                        return Ok((x.exit_code, String::from_utf8_lossy(&output).into_owned()));
                    }
                    _ => {}
                }
            }
            Err(Error::Unavailable("the probe's stream ended".into()))
        };
        match tokio::time::timeout(check.timeout, run).await {
            Ok(Ok((code, output))) => done(code, output),
            Ok(Err(e)) => done(-1, e.to_string()),
            // Docker's wording.
            Err(_) => done(
                -1,
                format!(
                    "Health check exceeded timeout ({})",
                    go_duration(check.timeout)
                ),
            ),
        }
    }

    /// A new run starts "starting" with an empty log; a container without a healthcheck
    /// has no health.
    pub(crate) async fn reset_health(&self, id: &str, spec: &ContainerSpec) -> Result<(), Error> {
        let json = match Check::from_config(&spec.config_json) {
            Some(_) => Health::starting().to_json(),
            None => String::new(),
        };
        store::set_health(&self.inner.pool, id, &json).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_forms() {
        let c = Check::from_config(
            br#"{"Healthcheck":{"Test":["CMD-SHELL","test -f /ok"],"Interval":1000000000,"Retries":2}}"#,
        )
        .unwrap();
        assert_eq!(c.argv, vec!["/bin/sh", "-c", "test -f /ok"]);
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.retries, 2);
        let c = Check::from_config(br#"{"Healthcheck":{"Test":["CMD","true","x"]}}"#).unwrap();
        assert_eq!(c.argv, vec!["true", "x"]);
        assert_eq!((c.interval, c.retries), (DEFAULT_INTERVAL, DEFAULT_RETRIES));
        for none in [
            &br#"{"Healthcheck":{"Test":["NONE"]}}"#[..],
            br#"{"Healthcheck":{"Test":[]}}"#,
            br#"{"Healthcheck":null}"#,
            br#"{}"#,
            br#"{"Healthcheck":{"Test":["CMD"]}}"#,
        ] {
            assert!(Check::from_config(none).is_none());
        }
    }

    fn probe(code: i32) -> Probe {
        Probe {
            start: String::new(),
            end: String::new(),
            exit_code: code,
            output: String::new(),
        }
    }

    #[test]
    fn status_follows_dockers_rules() {
        let mut h = Health::starting();
        // Failures in the start period do not count.
        assert!(!h.record(probe(1), true, 2));
        assert_eq!((h.status.as_str(), h.failing_streak), ("starting", 0));
        assert!(h.record(probe(0), true, 2));
        assert_eq!(h.status, "healthy");
        assert!(!h.record(probe(1), false, 2));
        assert_eq!(h.failing_streak, 1);
        assert!(h.record(probe(1), false, 2));
        assert_eq!((h.status.as_str(), h.failing_streak), ("unhealthy", 2));
        for _ in 0..10 {
            h.record(probe(0), false, 2);
        }
        assert_eq!(h.log.len(), MAX_LOG);
        assert_eq!(h.failing_streak, 0);
        let back = Health::load(&h.to_json());
        assert_eq!(back, h);
        assert!(h.to_json().contains("\"FailingStreak\":0"));
    }

    #[test]
    fn timeouts_are_worded_as_go_durations() {
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(200)), "200ms");
    }
}
