//! `docker exec` inside the shim.
//!
//! libcontainer may only be called from a single-threaded process. The shim is one (a
//! current-thread runtime and no other thread), so each exec forks the shim: the child,
//! a copy with no lock held by anyone, puts the exec's pipes on its stdin/stdout/stderr,
//! starts the process with the tenant builder (`as_sibling(true)`, so the process is the
//! shim's own child), writes the pid (or the runtime's error) to a result file and
//! `_exit`s without ever returning to the runtime. Forking instead of executing a helper
//! binary spares loading and relocating the whole shim on every exec. The shim streams
//! the output, forwards stdin, reaps the process and writes `<shim-dir>/exec-<id>` (exit
//! code) before it reports the exit to anyone.

use crate::children::Children;
use crate::exitfile;
use crate::pty::{self, Master};
use crate::{ShimError, error_chain, now_unix_nano};
use berth_proto::shim::{
    ExecChunk, ExecExited, ExecInput, ExecOutput, ExecProcess, ExecStarted, exec_output,
};
use nix::fcntl::OFlag;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

/// How long the forked helper may take to start an exec's process.
const HELPER_DEADLINE: Duration = Duration::from_secs(60);

/// How long output may keep flowing after the exec process exited (a background child
/// may hold the pipes open for ever; Docker stops streaming at some point too).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// The process the helper starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperProcess {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    /// Added to the container's capabilities (exec --privileged).
    pub capabilities: Vec<String>,
    /// Run on a terminal (the console socket receives its master).
    pub tty: bool,
}

/// What the helper writes to its result file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelperResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An exec's exit, as kept in memory and in `<shim-dir>/exec-<id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecExit {
    pub exit_code: i32,
    pub exited_at_unix_nano: i64,
    pub pid: i32,
}

/// Name of an exec's exit file inside the shim dir.
pub fn exit_file_name(exec_id: &str) -> String {
    format!("exec-{exec_id}")
}

/// Reads `<shim-dir>/exec-<id>`.
pub fn read_exit(dir: &Path, exec_id: &str) -> Option<ExecExit> {
    let data = std::fs::read(dir.join(exit_file_name(exec_id))).ok()?;
    serde_json::from_slice(&data).ok()
}

/// Exec ids name files: only hex digits, as containerd-svc makes them.
pub fn valid_exec_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `KEY=VALUE` list to the map the tenant builder takes (later entries win).
pub fn env_map(env: &[String]) -> HashMap<String, String> {
    env.iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The forked helper.

/// What the forked child needs to start the process.
pub struct HelperArgs {
    pub id: String,
    pub state_root: PathBuf,
    /// Where the outcome goes (JSON [`HelperResult`]).
    pub result: PathBuf,
    pub process: HelperProcess,
    /// Console socket for a terminal exec (the shim listens on it).
    pub console_socket: Option<PathBuf>,
}

/// The number of threads of this process (`None` if /proc cannot tell).
pub fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task")
        .ok()
        .map(|d| d.filter(|e| e.is_ok()).count())
}

/// Forks the helper; returns its pid in the parent. `stdio` become the child's 0, 1, 2.
#[allow(unsafe_code)]
fn fork_helper(args: &HelperArgs, stdio: [OwnedFd; 3]) -> Result<i32, Status> {
    // A fork of a multi-threaded process could inherit a lock another thread held (the
    // allocator's, a logger's) and hang the child: refuse rather than risk it.
    match thread_count() {
        Some(1) => {}
        n => {
            return Err(Status::internal(format!(
                "the shim is not single-threaded ({n:?} threads): cannot start an exec"
            )));
        }
    }
    // SAFETY: the process is single-threaded (checked just above, and nothing here
    // starts a thread), so the child is a consistent copy. It runs only the helper and
    // leaves through `_exit`: no destructor and no task of the runtime runs in it.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(child.as_raw()),
        Ok(nix::unistd::ForkResult::Child) => {
            // A panic must not unwind into the copy of the shim's runtime: a second shim
            // would run, sharing the parent's socket and epoll instance.
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                helper_child(args, stdio)
            }))
            .unwrap_or(101);
            unsafe { libc::_exit(code) }
        }
        Err(e) => Err(Status::internal(format!("forking the exec helper: {e}"))),
    }
}

/// The forked child: stdio in place, the process started, the outcome written.
fn helper_child(args: &HelperArgs, stdio: [OwnedFd; 3]) -> i32 {
    let outcome = match install_stdio(stdio).and_then(|()| helper_start(args)) {
        Ok(pid) => HelperResult {
            pid: Some(pid),
            error: None,
        },
        Err(e) => {
            tracing::warn!(error = %e, "exec failed to start");
            HelperResult {
                pid: None,
                error: Some(e.to_string().replace('\n', " ")),
            }
        }
    };
    let (dir, name) = match (args.result.parent(), args.result.file_name()) {
        (Some(d), Some(n)) => (d.to_path_buf(), n.to_string_lossy().to_string()),
        _ => return 1,
    };
    if exitfile::write_json(&dir, &name, &outcome).is_err() || outcome.pid.is_none() {
        return 1;
    }
    0
}

/// Makes `stdio` the process's fds 0, 1 and 2 (inherited by the exec'd command).
#[allow(unsafe_code)]
fn install_stdio(stdio: [OwnedFd; 3]) -> Result<(), ShimError> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let fail = |what: &str| ShimError::Io {
        what: what.into(),
        source: std::io::Error::last_os_error(),
    };
    // Moved above 2 first: a pipe may itself have been given fd 0, 1 or 2, and must not
    // be overwritten before it is copied to its place.
    let mut high = Vec::with_capacity(3);
    for fd in &stdio {
        // SAFETY: F_DUPFD_CLOEXEC on a valid fd; the copy is owned right after.
        let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
        if copy < 0 {
            return Err(fail("copying the exec's stdio"));
        }
        high.push(unsafe { OwnedFd::from_raw_fd(copy) });
    }
    drop(stdio);
    for (target, fd) in high.iter().enumerate() {
        // SAFETY: dup2 onto 0..2 of this (single-threaded) child; the copy is not
        // close-on-exec, so the command inherits it.
        if unsafe { libc::dup2(fd.as_raw_fd(), target as i32) } < 0 {
            return Err(fail("installing the exec's stdio"));
        }
    }
    Ok(())
}

fn helper_start(args: &HelperArgs) -> Result<i32, ShimError> {
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::syscall::syscall::SyscallType;
    let p = &args.process;
    let rt = |e: libcontainer::error::LibcontainerError| ShimError::Runtime(error_chain(&e));
    let base = ContainerBuilder::new(args.id.clone(), SyscallType::default())
        .with_root_path(&args.state_root)
        .map_err(rt)?
        .validate_id()
        .map_err(rt)?;
    if p.tty {
        let socket = args
            .console_socket
            .clone()
            .ok_or_else(|| ShimError::Runtime("a terminal exec needs a console socket".into()))?;
        // The tenant builder sets `terminal` only through a whole process file.
        let process = terminal_process(args, p)?;
        let pid = base
            .with_console_socket(Some(socket))
            .as_tenant()
            .with_process(Some(&process))
            .with_detach(true)
            .as_sibling(true)
            .build();
        let _ = std::fs::remove_file(&process);
        return Ok(pid.map_err(rt)?.as_raw());
    }
    // stdio is inherited: the helper's own 0/1/2 are the exec's pipes.
    let pid = base
        .as_tenant()
        .with_container_args(p.args.clone())
        .with_env(env_map(&p.env))
        .with_cwd(Some(PathBuf::from(&p.cwd)))
        .with_user(Some(p.uid))
        .with_group(Some(p.gid))
        .with_capabilities(p.capabilities.clone())
        .with_detach(true)
        // The process becomes the shim's child, so the shim reaps it.
        .as_sibling(true)
        .build()
        .map_err(rt)?;
    Ok(pid.as_raw())
}

/// Writes the process file of a terminal exec: the container's own process (so limits,
/// no-new-privileges and capabilities carry over, as for a pipe exec) with this exec's
/// command, environment on top of the container's, directory, user and added
/// capabilities.
fn terminal_process(args: &HelperArgs, p: &HelperProcess) -> Result<PathBuf, ShimError> {
    use libcontainer::container::Container;
    use oci_spec::runtime::{Capability, Spec};
    let rt = |what: String| ShimError::Runtime(what);
    let container =
        Container::load(args.state_root.join(&args.id)).map_err(|e| rt(error_chain(&e)))?;
    let config = container.bundle().join("config.json");
    let spec = Spec::load(&config).map_err(|e| rt(format!("reading {}: {e}", config.display())))?;
    let mut process = spec
        .process()
        .clone()
        .ok_or_else(|| rt("the container's spec has no process".into()))?;
    process.set_terminal(Some(true));
    process.set_args(Some(p.args.clone()));
    let baseline = process.env().clone().unwrap_or_default();
    process.set_env(Some(merge_env(&baseline, &p.env)));
    process.set_cwd(PathBuf::from(&p.cwd));
    let mut user = process.user().clone();
    user.set_uid(p.uid);
    user.set_gid(p.gid);
    user.set_additional_gids(None);
    process.set_user(user);
    if !p.capabilities.is_empty()
        && let Some(mut caps) = process.capabilities().clone()
    {
        let mut added = std::collections::HashSet::new();
        for c in &p.capabilities {
            let cap: Capability = serde_json::from_value(serde_json::Value::String(c.clone()))
                .map_err(|_| rt(format!("unknown capability {c:?}")))?;
            added.insert(cap);
        }
        let union = |set: &Option<std::collections::HashSet<Capability>>| {
            let mut s = set.clone().unwrap_or_default();
            s.extend(added.iter().copied());
            Some(s)
        };
        caps.set_bounding(union(caps.bounding()));
        caps.set_effective(union(caps.effective()));
        caps.set_permitted(union(caps.permitted()));
        process.set_capabilities(Some(caps));
    }
    let path = args.result.with_extension("process.json");
    let data = serde_json::to_vec(&process).map_err(|e| rt(e.to_string()))?;
    std::fs::write(&path, data).map_err(|source| ShimError::Io {
        what: format!("writing {}", path.display()),
        source,
    })?;
    Ok(path)
}

/// The container's environment with `overrides` applied: a key keeps its place when
/// overridden, new keys follow in order.
pub fn merge_env(baseline: &[String], overrides: &[String]) -> Vec<String> {
    let key = |kv: &str| kv.split_once('=').map_or(kv, |(k, _)| k).to_string();
    let over = env_map(overrides);
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(baseline.len() + overrides.len());
    for kv in baseline {
        let k = key(kv);
        match over.get(&k) {
            Some(v) => out.push(format!("{k}={v}")),
            None => out.push(kv.clone()),
        }
        seen.insert(k);
    }
    for kv in overrides {
        let k = key(kv);
        if kv.contains('=') && seen.insert(k.clone()) {
            out.push(format!("{k}={}", over[&k]));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The shim side.

/// One exec the shim started.
pub struct ExecEntry {
    pub pid: i32,
    pub exit: watch::Receiver<Option<ExecExit>>,
    /// The master of a terminal exec (for resizing).
    pub terminal: Option<Master>,
}

/// What running execs needs from the shim.
pub struct Execs {
    pub container_id: String,
    pub state_root: PathBuf,
    pub shim_dir: PathBuf,
    pub children: Arc<Children>,
    pub table: Mutex<HashMap<String, ExecEntry>>,
}

type Tx = mpsc::Sender<Result<ExecOutput, Status>>;

fn out(event: exec_output::Event) -> Result<ExecOutput, Status> {
    Ok(ExecOutput { event: Some(event) })
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Status> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Status::internal(format!("pipe2: {e}")))
}

impl Execs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ExecEntry>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state of exec `id`: `(pid, exit)`, from memory or the exit file.
    pub fn state(&self, id: &str) -> Option<(i32, Option<ExecExit>)> {
        if let Some(e) = self.lock().get(id) {
            return Some((e.pid, *e.exit.borrow()));
        }
        read_exit(&self.shim_dir, id).map(|x| (x.pid, Some(x)))
    }

    /// Sets the window size of a terminal exec.
    pub fn resize(&self, id: &str, height: u16, width: u16) -> Result<(), Status> {
        let table = self.lock();
        let entry = table
            .get(id)
            .ok_or_else(|| Status::not_found(format!("No such exec instance: {id}")))?;
        if entry.exit.borrow().is_some() {
            return Err(Status::failed_precondition(format!(
                "exec {id} is not running"
            )));
        }
        let master = entry
            .terminal
            .as_ref()
            .ok_or_else(|| Status::failed_precondition(format!("exec {id} has no terminal")))?;
        master
            .resize(height, width)
            .map_err(|e| Status::internal(format!("resizing the terminal: {e}")))
    }

    /// Spawns the helper and returns the exec's pid, or the runtime's failure text (Ok(Err)).
    async fn spawn_helper(
        &self,
        p: &ExecProcess,
        [stdin, stdout, stderr]: [OwnedFd; 3],
        console_socket: Option<&Path>,
    ) -> Result<Result<i32, String>, Status> {
        let result = self
            .shim_dir
            .join(format!("{}.start", exit_file_name(&p.exec_id)));
        let _ = std::fs::remove_file(&result);
        let process = HelperProcess {
            args: p.args.clone(),
            env: p.env.clone(),
            cwd: if p.cwd.is_empty() {
                "/".into()
            } else {
                p.cwd.clone()
            },
            uid: p.uid,
            gid: p.gid,
            capabilities: p.capabilities.clone(),
            tty: p.tty,
        };
        let args = HelperArgs {
            id: self.container_id.clone(),
            state_root: self.state_root.clone(),
            result: result.clone(),
            process,
            console_socket: console_socket.map(Path::to_path_buf),
        };
        // The child has its copies of the exec's ends; the shim's go when `stdio` drops
        // here, or the output would never reach EOF.
        let helper_pid = fork_helper(&args, [stdin, stdout, stderr])?;
        let mut exited = self.children.wait(helper_pid);
        let code = match tokio::time::timeout(HELPER_DEADLINE, &mut exited).await {
            Ok(code) => code.map_err(|_| Status::internal("exec helper status lost"))?,
            Err(_) => {
                // A wedged helper holds copies of the shim's descriptors (other execs'
                // pipes among them): it goes, and the exec fails.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(helper_pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = exited.await;
                return Ok(Err(format!(
                    "the exec helper did not start the process within {HELPER_DEADLINE:?}"
                )));
            }
        };
        let outcome = std::fs::read(&result)
            .ok()
            .and_then(|d| serde_json::from_slice::<HelperResult>(&d).ok());
        let _ = std::fs::remove_file(&result);
        Ok(match outcome {
            Some(HelperResult { pid: Some(pid), .. }) => Ok(pid),
            Some(HelperResult {
                error: Some(e),
                pid: None,
            }) => Err(e),
            _ => Err(format!(
                "the exec helper exited with code {code} without a result"
            )),
        })
    }

    /// Runs exec `p` to completion, streaming to `tx`; `input` feeds its stdin.
    pub async fn run(self: Arc<Self>, p: ExecProcess, input: Streaming<ExecInput>, tx: Tx) {
        let id = p.exec_id.clone();
        if let Err(s) = self.clone().run_inner(p, input, &tx).await {
            tracing::warn!(exec = %id, error = %s.message(), "exec failed");
            let _ = tx.send(Err(s)).await;
        }
    }

    async fn run_inner(
        self: Arc<Self>,
        p: ExecProcess,
        input: Streaming<ExecInput>,
        tx: &Tx,
    ) -> Result<(), Status> {
        if !valid_exec_id(&p.exec_id) {
            return Err(Status::invalid_argument(format!(
                "invalid exec id {:?}",
                p.exec_id
            )));
        }
        if self.state(&p.exec_id).is_some() {
            return Err(Status::already_exists(format!(
                "exec {} was already started",
                p.exec_id
            )));
        }
        if p.args.is_empty() {
            return Err(Status::invalid_argument("no command specified"));
        }
        let started = if p.tty {
            self.start_on_terminal(&p).await?
        } else {
            self.start_on_pipes(&p).await?
        };
        let (pid, io) = match started {
            Ok(s) => s,
            Err(text) => {
                let _ = tx.send(out(exec_output::Event::Failed(text))).await;
                return Ok(());
            }
        };
        // Registered at once: the process may already have exited (its status is kept).
        let exited = self.children.wait(pid);
        let (exit_tx, exit_rx) = watch::channel(None);
        let terminal = match &io {
            ExecIo::Terminal(m) => Some(m.clone()),
            ExecIo::Pipes { .. } => None,
        };
        self.lock().insert(
            p.exec_id.clone(),
            ExecEntry {
                pid,
                exit: exit_rx,
                terminal,
            },
        );
        tracing::info!(exec = %p.exec_id, pid, "exec started");
        let _ = tx
            .send(out(exec_output::Event::Started(ExecStarted { pid })))
            .await;

        let (stdin_task, readers) = match io {
            ExecIo::Pipes {
                stdin,
                stdout,
                stderr,
            } => {
                let stdin_task = match stdin {
                    Some(w) => Some(tokio::spawn(forward_stdin(pipe_sender(w)?, input))),
                    None => None,
                };
                let readers = vec![
                    tokio::spawn(read_output(pipe_receiver(stdout)?, 1, tx.clone())),
                    tokio::spawn(read_output(pipe_receiver(stderr)?, 2, tx.clone())),
                ];
                (stdin_task, readers)
            }
            ExecIo::Terminal(master) => {
                let stdin_task = p
                    .stdin
                    .then(|| tokio::spawn(forward_stdin(master.clone(), input)));
                (
                    stdin_task,
                    vec![tokio::spawn(read_output(master, 1, tx.clone()))],
                )
            }
        };
        // A process with a deadline (a healthcheck probe) is killed when it passes: one
        // that hangs must not pile up a new copy every interval.
        let code = if p.timeout_ms > 0 {
            tokio::pin!(exited);
            let deadline = Duration::from_millis(u64::from(p.timeout_ms));
            match tokio::time::timeout(deadline, &mut exited).await {
                Ok(r) => r.unwrap_or(255),
                Err(_) => {
                    tracing::info!(exec = %p.exec_id, pid, "past its deadline: killing it");
                    // Not reaped yet (its status is still to come), so the pid is its own.
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    exited.await.unwrap_or(255)
                }
            }
        } else {
            exited.await.unwrap_or(255)
        };
        let drained = async {
            for r in readers {
                let _ = r.await;
            }
        };
        if tokio::time::timeout(DRAIN_AFTER_EXIT, drained)
            .await
            .is_err()
        {
            tracing::debug!(exec = %p.exec_id, "output still open after the exec exited");
        }
        if let Some(t) = stdin_task {
            t.abort();
        }
        let rec = ExecExit {
            exit_code: code,
            exited_at_unix_nano: now_unix_nano(),
            pid,
        };
        // On disk before anyone is told; a probe's result lives only in its answer, and
        // the table forgets it (a healthcheck runs every interval for the container's life).
        if p.transient {
            self.lock().remove(&p.exec_id);
        } else if let Err(e) =
            exitfile::write_json(&self.shim_dir, &exit_file_name(&p.exec_id), &rec)
        {
            tracing::error!(exec = %p.exec_id, error = %e, "writing the exec exit file");
        }
        let _ = exit_tx.send(Some(rec));
        tracing::info!(exec = %p.exec_id, code, "exec exited");
        let _ = tx
            .send(out(exec_output::Event::Exited(ExecExited {
                exit_code: code,
                exited_at_unix_nano: rec.exited_at_unix_nano,
            })))
            .await;
        Ok(())
    }
}

/// How an exec's stdio is held by the shim.
enum ExecIo {
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    Terminal(Master),
}

type Started = Result<(i32, ExecIo), String>;

impl Execs {
    async fn start_on_pipes(&self, p: &ExecProcess) -> Result<Started, Status> {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (stdin_r, stdin_w): (OwnedFd, Option<OwnedFd>) = if p.stdin {
            let (r, w) = pipe()?;
            (r, Some(w))
        } else {
            (dev_null()?, None)
        };
        let started = self.spawn_helper(p, [stdin_r, out_w, err_w], None).await?;
        Ok(started.map(|pid| {
            let io = ExecIo::Pipes {
                stdin: stdin_w,
                stdout: out_r,
                stderr: err_r,
            };
            (pid, io)
        }))
    }

    /// The helper connects to a console socket the shim listens on; the process's init
    /// sends the pty master there before it execs the command.
    async fn start_on_terminal(&self, p: &ExecProcess) -> Result<Started, Status> {
        let sock = self
            .shim_dir
            .join(format!("tty-{}", &p.exec_id[..p.exec_id.len().min(12)]));
        let _ = std::fs::remove_file(&sock);
        let listener = crate::sockpath::bind(&sock)
            .and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::UnixListener::from_std(l)
            })
            .map_err(|e| Status::internal(format!("binding {}: {e}", sock.display())))?;
        let receive = tokio::spawn(async move {
            let (conn, _) = tokio::time::timeout(pty::RECV_TIMEOUT, listener.accept())
                .await
                .map_err(|_| std::io::Error::other("the runtime never connected"))??;
            // Received on the runtime, not on a blocking thread: the shim must stay
            // single-threaded to fork the next exec's helper.
            tokio::time::timeout(pty::RECV_TIMEOUT, pty::recv_master_async(&conn))
                .await
                .map_err(|_| std::io::Error::other("the runtime never sent the terminal"))?
        });
        let nulls = [dev_null()?, dev_null()?, dev_null()?];
        let started = self.spawn_helper(p, nulls, Some(&sock)).await;
        let _ = std::fs::remove_file(&sock);
        let pid = match started? {
            Ok(pid) => pid,
            Err(text) => {
                receive.abort();
                return Ok(Err(text));
            }
        };
        let master = receive
            .await
            .map_err(|e| Status::internal(format!("receiving the terminal: {e}")))?
            .and_then(Master::new)
            .map_err(|e| Status::internal(format!("receiving the terminal: {e}")))?;
        if p.console_height > 0 && p.console_width > 0 {
            let (h, w) = (clamp16(p.console_height), clamp16(p.console_width));
            if let Err(e) = master.resize(h, w) {
                tracing::warn!(exec = %p.exec_id, error = %e, "initial terminal size");
            }
        }
        Ok(Ok((pid, ExecIo::Terminal(master))))
    }
}

/// A window dimension from the API (u32) as the kernel takes it.
pub fn clamp16(v: u32) -> u16 {
    v.min(u16::MAX as u32) as u16
}

fn dev_null() -> Result<OwnedFd, Status> {
    std::fs::File::open("/dev/null")
        .map(Into::into)
        .map_err(|e| Status::internal(format!("opening /dev/null: {e}")))
}

fn pipe_sender(fd: OwnedFd) -> Result<tokio::net::unix::pipe::Sender, Status> {
    tokio::net::unix::pipe::Sender::from_owned_fd(fd)
        .map_err(|e| Status::internal(format!("exec stdin: {e}")))
}

fn pipe_receiver(fd: OwnedFd) -> Result<tokio::net::unix::pipe::Receiver, Status> {
    tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
        .map_err(|e| Status::internal(format!("exec output: {e}")))
}

/// Copies stdin messages to the process until `close_stdin`, the end of the input or an
/// error; dropping a pipe closes the process's stdin (a terminal stays open).
async fn forward_stdin(mut pipe: impl AsyncWrite + Unpin, mut input: Streaming<ExecInput>) {
    while let Ok(Some(msg)) = input.message().await {
        if !msg.stdin.is_empty() && pipe.write_all(&msg.stdin).await.is_err() {
            break;
        }
        if msg.close_stdin {
            break;
        }
    }
}

/// Sends output chunks as they come; keeps draining when nobody listens any more.
async fn read_output(mut rx: impl AsyncRead + Unpin, stream: i32, tx: Tx) {
    let mut listening = true;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if listening {
                    let chunk = ExecChunk {
                        stream,
                        data: buf[..n].to_vec(),
                    };
                    listening = tx.send(out(exec_output::Event::Chunk(chunk))).await.is_ok();
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_env_and_files() {
        assert!(valid_exec_id("abc123"));
        assert!(!valid_exec_id("../x"));
        assert!(!valid_exec_id(""));
        let m = env_map(&["A=1".into(), "B=x=y".into(), "A=2".into(), "junk".into()]);
        assert_eq!(m["A"], "2");
        assert_eq!(m["B"], "x=y");
        assert_eq!(m.len(), 2);
        let d = tempfile::tempdir().unwrap();
        assert!(read_exit(d.path(), "ab").is_none());
        let rec = ExecExit {
            exit_code: 3,
            exited_at_unix_nano: 5,
            pid: 9,
        };
        exitfile::write_json(d.path(), &exit_file_name("ab"), &rec).unwrap();
        assert_eq!(read_exit(d.path(), "ab"), Some(rec));
    }

    #[test]
    fn a_single_threaded_process_counts_one_thread() {
        // The test harness runs tests on threads of its own, so only a lower bound here;
        // a forked child of this process has exactly one.
        assert!(thread_count().unwrap() >= 1);
        let (r, w) = nix::unistd::pipe().unwrap();
        #[allow(unsafe_code)]
        // SAFETY: the child only reads /proc, writes one byte and `_exit`s.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let one = [u8::from(thread_count() == Some(1))];
                let _ = nix::unistd::write(&w, &one);
                #[allow(unsafe_code)]
                unsafe {
                    libc::_exit(0)
                }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(w);
                let mut got = [0u8; 1];
                assert_eq!(nix::unistd::read(&r, &mut got).unwrap(), 1);
                assert_eq!(got[0], 1);
                nix::sys::wait::waitpid(child, None).unwrap();
            }
        }
    }

    #[test]
    fn helper_result_json() {
        let ok = HelperResult {
            pid: Some(4),
            error: None,
        };
        assert_eq!(serde_json::to_string(&ok).unwrap(), r#"{"pid":4}"#);
        let bad: HelperResult = serde_json::from_str(r#"{"error":"nope"}"#).unwrap();
        assert_eq!(bad.error.as_deref(), Some("nope"));
    }
}
