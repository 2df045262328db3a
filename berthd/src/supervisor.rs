//! Running one service as a child process: start it, restart it when it exits, stop it.

use crate::backoff::Backoff;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a service gets to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// What the supervisor knows about a running service, shared with the launcher.
#[derive(Debug, Default)]
pub struct ServiceState {
    pid: AtomicU32,
    restarts: AtomicU32,
    last_exit: Mutex<Option<String>>,
    started_at: Mutex<String>,
}

impl ServiceState {
    /// The current process id, if one runs.
    pub fn pid(&self) -> Option<u32> {
        match self.pid.load(Ordering::SeqCst) {
            0 => None,
            p => Some(p),
        }
    }

    /// How many times the service was restarted after exiting.
    pub fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::SeqCst)
    }

    /// How the last run ended (exit status or spawn error), for error messages.
    pub fn last_exit(&self) -> Option<String> {
        self.last_exit.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// When the current process started (RFC 3339), empty while none runs.
    pub fn started_at(&self) -> String {
        self.started_at
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
    }

    fn set_started_at(&self, at: String) {
        if let Ok(mut g) = self.started_at.lock() {
            *g = at;
        }
    }

    fn set_last_exit(&self, what: String) {
        if let Ok(mut g) = self.last_exit.lock() {
            *g = Some(what);
        }
    }
}

/// One supervised service: a task that keeps its process running until told to stop.
#[derive(Debug)]
pub struct Supervised {
    /// The binary's name, for logs.
    pub name: &'static str,
    /// The binary's path.
    pub binary: PathBuf,
    /// Shared state.
    pub state: Arc<ServiceState>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Supervised {
    /// Starts `binary args...` and keeps it running.
    pub fn start(
        name: &'static str,
        binary: PathBuf,
        args: Vec<OsString>,
        env: Vec<(String, String)>,
    ) -> Self {
        let state = Arc::new(ServiceState::default());
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(keep_running(
            name,
            binary.clone(),
            args,
            env,
            Arc::clone(&state),
            stop_rx,
        ));
        Self {
            name,
            binary,
            state,
            stop,
            task,
        }
    }

    /// Stops the service (SIGTERM, then SIGKILL after [`STOP_GRACE`]) and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(service = self.name, "supervisor task failed: {e}");
        }
    }
}

async fn keep_running(
    name: &'static str,
    binary: PathBuf,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    state: Arc<ServiceState>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::default();
    loop {
        if *stop.borrow() {
            return;
        }
        let started = Instant::now();
        match spawn(&binary, &args, &env) {
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                state.set_started_at(
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                );
                state.pid.store(pid, Ordering::SeqCst);
                tracing::info!(service = name, pid, "started");
                tokio::select! {
                    status = child.wait() => {
                        state.pid.store(0, Ordering::SeqCst);
                        state.set_started_at(String::new());
                        let what = match status {
                            Ok(s) => describe(s),
                            Err(e) => format!("wait failed: {e}"),
                        };
                        state.set_last_exit(what.clone());
                        if *stop.borrow() {
                            return;
                        }
                        tracing::warn!(service = name, pid, "exited unexpectedly ({what})");
                    }
                    () = stopped(&mut stop) => {
                        terminate(name, &mut child).await;
                        state.pid.store(0, Ordering::SeqCst);
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::error!(service = name, binary = %binary.display(), "cannot start: {e}");
                state.set_last_exit(format!("cannot start {}: {e}", binary.display()));
            }
        }
        let delay = backoff.on_exit(started.elapsed());
        let n = state.restarts.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::info!(
            service = name,
            restart = n,
            "restarting in {} ms",
            delay.as_millis()
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            () = stopped(&mut stop) => return,
        }
    }
}

/// Resolves once a stop is requested (or the launcher is gone, which means the same).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// `exited with code 1` / `killed by signal 9`, for logs and errors.
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}

fn spawn(binary: &PathBuf, args: &[OsString], env: &[(String, String)]) -> std::io::Result<Child> {
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        // Services log to berthd's stderr (and stdout), so one stream holds the story.
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        // If berthd's supervisor task is dropped without a stop, the child must not be
        // left orphaned by us either: stop() is the normal path, this is the backstop.
        .kill_on_drop(true);
    detach_from_terminal_and_die_with_parent(&mut cmd);
    cmd.spawn()
}

/// Puts the child in its own process group, so a Ctrl-C at the terminal reaches only
/// berthd (which then stops the services in order), and asks the kernel to SIGTERM the
/// child if berthd dies without stopping it (e.g. SIGKILL), so a new berthd never finds
/// a stale service still holding its socket and database.
#[allow(unsafe_code)]
fn detach_from_terminal_and_die_with_parent(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (setpgid, prctl, getppid); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // berthd may have died between fork and prctl; then nobody would signal us.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other("berthd exited while starting"));
            }
            Ok(())
        });
    }
}

async fn terminate(name: &'static str, child: &mut Child) {
    let Some(pid) = child.id() else {
        return;
    };
    tracing::info!(service = name, pid, "stopping (SIGTERM)");
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM) {
        tracing::warn!(service = name, "SIGTERM failed: {e}");
    }
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(Ok(status)) => tracing::info!(service = name, "stopped ({})", describe(status)),
        Ok(Err(e)) => tracing::warn!(service = name, "wait failed: {e}"),
        Err(_) => {
            tracing::warn!(
                service = name,
                "still running {}s after SIGTERM, killing",
                STOP_GRACE.as_secs()
            );
            if let Err(e) = child.kill().await {
                tracing::error!(service = name, "SIGKILL failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // These use /bin/sh as a stand-in service: they test restart and stop mechanics,
    // not Berth's services (the e2e suite does that).

    #[tokio::test]
    async fn a_service_that_exits_is_restarted_and_counted() {
        // The exit code comes from the environment berthd hands the service.
        let s = Supervised::start(
            "sh",
            "/bin/sh".into(),
            vec!["-c".into(), "exit $BERTH_TEST_CODE".into()],
            vec![("BERTH_TEST_CODE".into(), "7".into())],
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.state.restarts() < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(s.state.restarts() >= 2);
        assert_eq!(s.state.last_exit().as_deref(), Some("exited with code 7"));
        s.stop().await;
    }

    #[tokio::test]
    async fn stop_sends_sigterm_and_waits() {
        let s = Supervised::start(
            "sleep",
            "/bin/sh".into(),
            vec!["-c".into(), "exec sleep 30".into()],
            vec![],
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.state.pid().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pid = s.state.pid().unwrap();
        let state = Arc::clone(&s.state);
        let t = Instant::now();
        s.stop().await;
        assert!(t.elapsed() < STOP_GRACE);
        assert_eq!(state.restarts(), 0);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[tokio::test]
    async fn a_missing_binary_is_reported() {
        let s = Supervised::start("nope", "/nonexistent/berth-nope".into(), vec![], vec![]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.state.last_exit().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(s.state.last_exit().unwrap().contains("cannot start"));
        s.stop().await;
    }
}
