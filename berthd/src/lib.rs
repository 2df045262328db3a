//! berthd: the launcher. One command that starts Berth's six services as separate
//! processes, waits for each to be ready, restarts one that dies, and stops them all in
//! order on SIGTERM/SIGINT. For machines without systemd; with systemd, the units in
//! `deploy/systemd/` do the same job and berthd is not used.
//!
//! Containers never depend on berthd: their shims are detached from every service, so
//! stopping berthd leaves them running (live-restore).

pub mod backoff;
pub mod config;
pub mod pidfile;
pub mod services;
pub mod supervisor;

use config::Settings;
use services::{Health, ServiceSpec};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use supervisor::Supervised;
use tokio::signal::unix::{SignalKind, signal};

/// How often berthd refreshes `<run-root>/berthd-status.json` (written only on change).
pub const STATUS_EVERY: Duration = Duration::from_millis(250);

/// Keeps `<run-root>/berthd-status.json` up to date for `berthd status` and the gateway.
struct StatusWriter {
    run_root: PathBuf,
    started_at: String,
    last: std::cell::RefCell<Option<berth_kit::status::LauncherStatus>>,
}

impl StatusWriter {
    fn new(run_root: &Path) -> Self {
        Self {
            run_root: run_root.to_path_buf(),
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            last: std::cell::RefCell::new(None),
        }
    }

    fn write(&self, running: &[Supervised]) {
        use berth_kit::status::{LauncherStatus, ServiceStatus};
        let status = LauncherStatus {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: self.started_at.clone(),
            services: running
                .iter()
                .map(|s| ServiceStatus {
                    name: s.name.trim_start_matches("berth-").to_string(),
                    binary: s.binary.display().to_string(),
                    pid: s.state.pid().unwrap_or(0),
                    started_at: s.state.started_at(),
                    restarts: s.state.restarts(),
                    last_error: s.state.last_exit().unwrap_or_default(),
                })
                .collect(),
        };
        if self.last.borrow().as_ref() == Some(&status) {
            return;
        }
        match berth_kit::status::write(&self.run_root, &status) {
            Ok(()) => *self.last.borrow_mut() = Some(status),
            Err(e) => tracing::warn!(error = %e, "writing the status file"),
        }
    }

    fn remove(&self) {
        let _ = std::fs::remove_file(berth_kit::status::path(&self.run_root));
    }
}

/// Prints the live status of the Berth whose run root is `exec_root` (as `berthd status`):
/// a table, or JSON with `json`. Err when no berthd runs there.
pub async fn print_status(exec_root: &Path, json: bool) -> Result<(), String> {
    let Some(status) = berth_kit::status::read(exec_root) else {
        return Err(format!(
            "no berthd is running with exec root {} ({} is missing)",
            exec_root.display(),
            berth_kit::status::path(exec_root).display()
        ));
    };
    let live = berth_kit::status::live(exec_root, status, Duration::from_secs(1)).await;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&live).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    println!(
        "berthd {} (pid {}, since {})",
        live.version, live.pid, live.started_at
    );
    println!(
        "{:<12} {:<6} {:>8} {:>10} {:>9}  LAST ERROR",
        "SERVICE", "STATE", "PID", "UPTIME", "RESTARTS"
    );
    for s in &live.services {
        println!(
            "{:<12} {:<6} {:>8} {:>9}s {:>9}  {}",
            s.launcher.name,
            s.state,
            s.launcher.pid,
            s.uptime_seconds,
            s.launcher.restarts,
            s.launcher.last_error
        );
    }
    Ok(())
}

/// How long a service gets to become ready at startup.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why berthd could not run.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// A flag or the configuration file is wrong.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// Another berthd owns the exec root, or the pid file cannot be written.
    #[error(transparent)]
    PidFile(#[from] pidfile::PidFileError),
    /// A root directory could not be created.
    #[error("cannot create {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A service binary is neither beside berthd nor on PATH.
    #[error(
        "cannot find {binary} beside {exe_dir} or on PATH (build it with `cargo build --bins`)"
    )]
    MissingBinary {
        /// The binary's name.
        binary: String,
        /// berthd's own directory.
        exe_dir: String,
    },
    /// A service did not become ready in time.
    #[error("{binary} did not become ready within {secs}s ({detail})")]
    NotReady {
        /// The binary's name.
        binary: String,
        /// The timeout.
        secs: u64,
        /// What is known: restarts and the last exit.
        detail: String,
    },
    /// Signal handlers could not be installed.
    #[error("cannot watch signals: {0}")]
    Signals(std::io::Error),
}

/// Runs Berth until SIGTERM/SIGINT, then stops the services (gateway first) and returns.
/// Re-reads and validates the configuration (flags and daemon.json) for a SIGHUP.
pub type Reload = Box<dyn Fn() -> Result<Settings, String>>;

/// SIGHUP: a configuration that does not validate changes nothing (dockerd's wording);
/// a valid one sets berthd's own level and is passed on: each service re-reads the file.
fn reload_all(reload: &Reload, running: &[Supervised]) {
    match reload() {
        Err(e) => tracing::error!("Error reconfiguring the daemon: {e}"),
        Ok(settings) => {
            berth_kit::telemetry::set_debug(settings.debug);
            for svc in running {
                if let Some(pid) = svc.state.pid() {
                    let pid = nix::unistd::Pid::from_raw(pid as i32);
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP);
                }
            }
            tracing::info!("configuration reloaded (debug={})", settings.debug);
        }
    }
}

pub async fn run(settings: Settings, reload: Reload) -> Result<(), LaunchError> {
    // Installed first: a signal during startup must stop what was started, not kill
    // berthd and orphan half the services.
    let mut term = signal(SignalKind::terminate()).map_err(LaunchError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(LaunchError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(LaunchError::Signals)?;

    for (dir, mode) in [
        (&settings.data_root, berth_kit::paths::DATA_ROOT_MODE),
        (&settings.exec_root, berth_kit::paths::RUN_ROOT_MODE),
    ] {
        berth_kit::paths::ensure_dir_mode(dir, mode).map_err(|source| LaunchError::CreateDir {
            path: dir.clone(),
            source,
        })?;
    }
    let _pid_file = pidfile::PidFile::acquire(&settings.exec_root)?;
    if !settings.live_restore {
        tracing::warn!(
            "live-restore=false is not supported yet: containers keep running when Berth stops"
        );
    }

    let specs = resolve_binaries(services::specs(&settings))?;
    let status = StatusWriter::new(&settings.exec_root);
    let mut running: Vec<Supervised> = Vec::new();
    for (spec, binary) in specs {
        let name = spec.binary;
        let svc = Supervised::start(name, binary, spec.args.clone(), spec.env.clone());
        let ready = tokio::select! {
            r = wait_ready(&spec.health, &svc) => r,
            _ = term.recv() => Err(None),
            _ = int.recv() => Err(None),
        };
        running.push(svc);
        status.write(&running);
        match ready {
            Ok(()) => {}
            Err(failure) => {
                stop_all(running).await;
                return match failure {
                    None => {
                        tracing::info!("signal received during startup; services stopped");
                        Ok(())
                    }
                    Some(detail) => Err(LaunchError::NotReady {
                        binary: name.to_string(),
                        secs: READY_TIMEOUT.as_secs(),
                        detail,
                    }),
                };
            }
        }
    }
    let apis: Vec<String> = settings
        .hosts
        .iter()
        .map(|h| format!("unix://{}", h.display()))
        .collect();
    tracing::info!("Berth is ready: Docker API on {}", apis.join(", "));

    let mut tick = tokio::time::interval(STATUS_EVERY);
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM received, stopping Berth"); break; }
            _ = int.recv() => { tracing::info!("SIGINT received, stopping Berth"); break; }
            _ = tick.tick() => status.write(&running),
            _ = hup.recv() => reload_all(&reload, &running),
        }
    }
    stop_all(running).await;
    status.remove();
    tracing::info!("Berth stopped; containers keep running");
    Ok(())
}

fn resolve_binaries(specs: Vec<ServiceSpec>) -> Result<Vec<(ServiceSpec, PathBuf)>, LaunchError> {
    let exe = std::env::current_exe().ok();
    let exe_dir = exe.as_deref().and_then(Path::parent);
    let path_var = std::env::var_os("PATH");
    specs
        .into_iter()
        .map(
            |spec| match services::find_binary(spec.binary, exe_dir, path_var.as_deref()) {
                Some(b) => Ok((spec, b)),
                None => Err(LaunchError::MissingBinary {
                    binary: spec.binary.to_string(),
                    exe_dir: exe_dir.map_or("berthd".into(), |d| d.display().to_string()),
                }),
            },
        )
        .collect()
}

/// Polls the service's health until it is ready or [`READY_TIMEOUT`] passes; the error
/// says what is known (restarts, last exit).
async fn wait_ready(health: &Health, svc: &Supervised) -> Result<(), Option<String>> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if svc.state.pid().is_some() && services::is_healthy(health, Duration::from_secs(1)).await {
            tracing::info!(
                service = svc.name,
                pid = svc.state.pid().unwrap_or(0),
                "ready"
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            let mut detail = format!("restarted {} times", svc.state.restarts());
            if let Some(last) = svc.state.last_exit() {
                detail.push_str(&format!("; last: {last}"));
            } else {
                detail.push_str("; still running but not answering its health check");
            }
            return Err(Some(detail));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops the gateway first (so no new request reaches a stopping backend), then the
/// others in reverse start order.
async fn stop_all(mut running: Vec<Supervised>) {
    while let Some(svc) = running.pop() {
        let restarts = svc.state.restarts();
        if restarts > 0 {
            tracing::info!(service = svc.name, restarts, "had been restarted");
        }
        svc.stop().await;
    }
}
