//! Starting the shim: detach, create and start the container single-threaded, report on
//! the handshake (stdout), then serve on a current-thread tokio runtime.

use crate::children::Children;
use crate::cli::{Cli, Cmd, RunArgs};
use crate::exec::Execs;
use crate::exitfile::{self, ExitRecord};
use crate::lines::Splitter;
use crate::logfwd::{self, LogTarget, Output};
use crate::pty::Master;
use crate::server::{ShimService, StdinWriter};
use crate::{ShimError, error_chain, now_unix_nano};
use berth_proto::shim::shim_server::ShimServer;
use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// How long an exit waits for the container's output to reach logd before it is told
/// (a process left holding the pipes, or logd away, must not hold the exit back).
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Handshake line prefixes read by berth-containerd.
pub const HANDSHAKE_OK: &str = "started";
/// See [`HANDSHAKE_OK`].
pub const HANDSHAKE_ERR: &str = "error";

/// Dispatches `run` / `daemon`.
pub fn main(cli: Cli) -> ExitCode {
    catch_ignored_signals();
    match cli.cmd {
        Cmd::Run(_) => detach(),
        Cmd::Daemon(args) => daemon(args),
    }
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// An ignored signal stays ignored across exec, so the container's processes would
/// inherit whatever the shim ignores: SIGPIPE (Rust ignores it at start; `yes | head`
/// would then spin forever on EPIPE) and whatever our launcher ignored (SIGHUP under
/// nohup, SIGINT/SIGQUIT in a background job). A do-nothing handler keeps the shim as
/// deaf to them as before while exec resets a handled signal to its default, so the
/// container starts with no signal ignored, as under Docker.
#[allow(unsafe_code)]
fn catch_ignored_signals() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let handled = SigAction::new(
        SigHandler::Handler(ignore_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: probing with SIG_IGN then restoring is immediate; the installed
        // handler does nothing, so it is async-signal-safe.
        let was_ignored = unsafe {
            let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
            match sigaction(sig, &ignore) {
                Ok(old) if matches!(old.handler(), SigHandler::SigIgn) => true,
                Ok(old) => {
                    let _ = sigaction(sig, &old);
                    false
                }
                Err(_) => false,
            }
        };
        if was_ignored || sig == Signal::SIGPIPE {
            // SAFETY: see above.
            if let Err(e) = unsafe { sigaction(sig, &handled) } {
                eprintln!("berth-shim: {sig} handler: {e}");
            }
        }
    }
}

/// `run`: new session (so no signal to the caller's process group reaches us), then
/// re-execute as `daemon` and exit, so the daemon is reparented to pid 1 (or the
/// nearest subreaper) and is never a child of berth-containerd.
fn detach() -> ExitCode {
    if let Err(e) = nix::unistd::setsid() {
        println!("{HANDSHAKE_ERR} setsid: {e}");
        return ExitCode::FAILURE;
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            println!("{HANDSHAKE_ERR} locating berth-shim: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut args: Vec<_> = std::env::args_os().skip(1).collect();
    if let Some(first) = args.first_mut() {
        *first = "daemon".into();
    }
    // stdin/stdout/stderr are inherited: stdout is the handshake pipe.
    match std::process::Command::new(exe).args(args).spawn() {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            println!("{HANDSHAKE_ERR} spawning the shim daemon: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Started {
    pid: i32,
    stdio: InitStdio,
}

/// What the shim holds of the init's stdio.
enum InitStdio {
    Pipes {
        stdout: OwnedFd,
        stderr: OwnedFd,
        /// The write end, for `-i` (attach writes to it); None: /dev/null.
        stdin: Option<OwnedFd>,
    },
    /// `-t`: the pty master (output and input both go through it).
    Terminal(OwnedFd),
}

fn daemon(args: RunArgs) -> ExitCode {
    let level = if args.debug { "debug" } else { "info" };
    let filter =
        tracing_subscriber::EnvFilter::new(format!("{level},h2=info,hyper=info,tower=info"));
    // The log (stderr: shim.log) through a copy of the descriptor: an exec's forked
    // helper puts the exec's pipe on fd 2, and its log lines must not land there.
    let writer = match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(log) => BoxMakeWriter::new(std::sync::Mutex::new(std::fs::File::from(log))),
        Err(_) => BoxMakeWriter::new(std::io::stderr),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .try_init();
    let started_at = now_unix_nano();
    let mut steps = Steps::default();
    // The API socket exists before the handshake says "started": containerd-svc may
    // call it (kill, wait) the moment it reads the line.
    let mut api = None;
    let result = steps
        .time("prepare", || prepare(&args))
        .and_then(|()| {
            api = Some(bind_api(&args.shim_dir)?);
            Ok(())
        })
        .and_then(|()| create(&args, &mut steps));
    let mut out = std::io::stdout();
    let started = match result {
        Ok(s) => {
            // containerd-svc turns the step timings into the shim's spans: the shim itself
            // links no tracing exporter.
            let _ = writeln!(out, "{HANDSHAKE_OK} pid {} steps {}", s.pid, steps.encode());
            let _ = out.flush();
            s
        }
        Err(e) => {
            let text = e.to_string().replace('\n', " ");
            tracing::error!(error = %text, "starting the container failed");
            let _ = writeln!(out, "{HANDSHAKE_ERR} {text}");
            let _ = out.flush();
            return ExitCode::FAILURE;
        }
    };
    // The handshake is done: stdout must not keep berth-containerd's pipe open.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
    }
    tracing::info!(id = %args.id, pid = started.pid, "container started");
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "building the runtime");
            return ExitCode::FAILURE;
        }
    };
    let Some(api) = api else {
        tracing::error!("no API socket");
        return ExitCode::FAILURE;
    };
    match rt.block_on(serve(args, started, started_at, api)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "shim failed");
            ExitCode::FAILURE
        }
    }
}

/// What the shim did before the handshake, with wall-clock bounds (unix nanoseconds).
#[derive(Debug, Default)]
struct Steps(Vec<(&'static str, i64, i64)>);

impl Steps {
    fn record(&mut self, name: &'static str, start: i64, end: i64) {
        self.0.push((name, start, end));
    }
    fn time<T>(&mut self, name: &'static str, f: impl FnOnce() -> T) -> T {
        let start = now_unix_nano();
        let out = f();
        self.record(name, start, now_unix_nano());
        out
    }
    /// `name=start-end,...`, as berth-containerd reads it from the handshake.
    fn encode(&self) -> String {
        self.0
            .iter()
            .map(|(n, s, e)| format!("{n}={s}-{e}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn prepare(args: &RunArgs) -> Result<(), ShimError> {
    nix::sys::prctl::set_child_subreaper(true).map_err(|source| ShimError::Sys {
        what: "PR_SET_CHILD_SUBREAPER",
        source,
    })?;
    std::fs::create_dir_all(&args.shim_dir).map_err(|source| ShimError::Io {
        what: format!("creating {}", args.shim_dir.display()),
        source,
    })?;
    let _ = std::fs::set_permissions(&args.shim_dir, std::fs::Permissions::from_mode(0o700));
    let _ = std::fs::remove_file(args.shim_dir.join(exitfile::EXIT_FILE));
    // A previous run of this id whose shim died leaves libcontainer state behind, which
    // would make build() fail with "container already exists".
    let root = args.state_root.join(&args.id);
    if root.exists() {
        match Container::load(root.clone()) {
            Ok(mut c) => {
                let _ = c.delete(true);
            }
            Err(_) => {
                let _ = std::fs::remove_dir_all(&root);
            }
        }
        let _ = std::fs::remove_dir_all(&root);
    }
    Ok(())
}

fn pipe() -> Result<(OwnedFd, OwnedFd), ShimError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|source| ShimError::Sys {
        what: "pipe2",
        source,
    })
}

/// Builds and starts the container. Must run before any thread exists (libcontainer
/// forks with clone3 and chdirs process-wide).
fn create(args: &RunArgs, steps: &mut Steps) -> Result<Started, ShimError> {
    let rt = |e: libcontainer::error::LibcontainerError| ShimError::Runtime(error_chain(&e));
    let base = ContainerBuilder::new(args.id.clone(), SyscallType::default())
        .with_root_path(&args.state_root)
        .map_err(rt)?;
    // Pipes are made here; a terminal's master arrives on the console socket during
    // build, from the init, which waits for start() before it runs the command.
    let (base, prepared) = if args.tty {
        let (listener, path) = bind_console(&args.shim_dir)?;
        (
            base.with_console_socket(Some(path)),
            Err::<InitStdio, _>(listener),
        )
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (stdin_r, stdin_keep): (OwnedFd, Option<OwnedFd>) = if args.open_stdin {
            let (r, w) = pipe()?;
            (r, Some(w))
        } else {
            let null = std::fs::File::open("/dev/null").map_err(|source| ShimError::Io {
                what: "opening /dev/null".into(),
                source,
            })?;
            (null.into(), None)
        };
        let base = base
            .with_stdin(stdin_r)
            .with_stdout(out_w)
            .with_stderr(err_w);
        let stdio = InitStdio::Pipes {
            stdout: out_r,
            stderr: err_r,
            stdin: stdin_keep,
        };
        (base, Ok(stdio))
    };
    let build_started = now_unix_nano();
    let built = base
        .validate_id()
        .map_err(rt)?
        .as_init(&args.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build();
    steps.record("create", build_started, now_unix_nano());
    let mut container = built.map_err(|e| {
        cleanup_failed(args);
        rt(e)
    })?;
    // Ok: the pipes; Err: the console socket the master arrives on.
    let stdio = match prepared {
        Ok(pipes) => pipes,
        Err(listener) => match receive_terminal(args, &listener) {
            Ok(master) => InitStdio::Terminal(master),
            Err(e) => {
                let _ = container.delete(true);
                cleanup_failed(args);
                return Err(e);
            }
        },
    };
    let start_started = now_unix_nano();
    let start_result = container.start();
    steps.record("start", start_started, now_unix_nano());
    if let Err(e) = start_result {
        let _ = container.delete(true);
        cleanup_failed(args);
        return Err(rt(e));
    }
    let pid = container
        .pid()
        .map(|p| p.as_raw())
        .ok_or_else(|| ShimError::Runtime("container started without a pid".into()))?;
    Ok(Started { pid, stdio })
}

const CONSOLE_SOCKET: &str = "console.sock";

fn bind_console(
    shim_dir: &std::path::Path,
) -> Result<(std::os::unix::net::UnixListener, PathBuf), ShimError> {
    let path = shim_dir.join(CONSOLE_SOCKET);
    let _ = std::fs::remove_file(&path);
    let listener = crate::sockpath::bind(&path).map_err(|source| ShimError::Io {
        what: format!("binding {}", path.display()),
        source,
    })?;
    Ok((listener, path))
}

/// Accepts the runtime's connection (already queued: it connected during build) and
/// takes the master; sets the initial window size before the command runs.
fn receive_terminal(
    args: &RunArgs,
    listener: &std::os::unix::net::UnixListener,
) -> Result<OwnedFd, ShimError> {
    let io = |what: &'static str| {
        move |source| ShimError::Io {
            what: what.into(),
            source,
        }
    };
    let (conn, _) = listener
        .accept()
        .map_err(io("accepting the console socket"))?;
    let master = crate::pty::recv_master(&conn).map_err(io("receiving the terminal"))?;
    let _ = std::fs::remove_file(args.shim_dir.join(CONSOLE_SOCKET));
    if args.console_height > 0 && args.console_width > 0 {
        crate::pty::set_size(&master, args.console_height, args.console_width)
            .map_err(io("setting the terminal size"))?;
    }
    Ok(master)
}

fn cleanup_failed(args: &RunArgs) {
    let root = args.state_root.join(&args.id);
    if let Ok(mut c) = Container::load(root.clone()) {
        let _ = c.delete(true);
    }
    let _ = std::fs::remove_dir_all(root);
    // Reap whatever libcontainer left behind.
    while let Ok(s) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if s == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Reaps every exited child; returns the init's exit code if it was among them. The
/// others (exec helpers, exec processes, orphans) are reported to `children`.
fn reap(init: i32, children: &Children) -> Option<i32> {
    let mut code = None;
    loop {
        let (pid, c) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, c)) => (p, c),
            // Docker reports death by signal as 128+signal.
            Ok(WaitStatus::Signaled(p, s, _)) => (p, 128 + s as i32),
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => continue,
        };
        if pid == Pid::from_raw(init) {
            code = Some(c);
        } else {
            children.exited(pid.as_raw(), c);
        }
    }
    code
}

/// Output -> lines for logd. A terminal's pieces are sent at each read (`flushing`), so
/// a prompt reaches an attached client before its line ends.
async fn read_stream(
    mut rx: impl AsyncRead + Unpin,
    stream: i32,
    flushing: bool,
    tx: mpsc::Sender<Output>,
    drain: watch::Sender<logfwd::Drain>,
) {
    let send = |out: Output| {
        let (tx, drain) = (&tx, &drain);
        async move {
            if tx.send(out).await.is_ok() {
                drain.send_modify(|d| d.produced += 1);
            }
        }
    };
    let mut splitter = Splitter::default();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                let now = now_unix_nano();
                let pieces = if flushing {
                    splitter.push_flushing(&buf[..n])
                } else {
                    splitter.push(&buf[..n])
                };
                for piece in pieces {
                    send(Output {
                        stream,
                        piece,
                        time_unix_nano: now,
                    })
                    .await;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(error = %e, stream, "container output read failed");
                break;
            }
        }
    }
    if let Some(piece) = splitter.finish() {
        send(Output {
            stream,
            piece,
            time_unix_nano: now_unix_nano(),
        })
        .await;
    }
    drain.send_modify(|d| d.readers_open = d.readers_open.saturating_sub(1));
}

/// Binds `<shim-dir>/shim.sock` (owner only).
fn bind_api(shim_dir: &std::path::Path) -> Result<std::os::unix::net::UnixListener, ShimError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |source| ShimError::Io { what, source }
    };
    let sock = shim_dir.join("shim.sock");
    let _ = std::fs::remove_file(&sock);
    let listener = crate::sockpath::bind(&sock).map_err(io("binding shim.sock"))?;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))
        .map_err(io("chmod shim.sock"))?;
    listener
        .set_nonblocking(true)
        .map_err(io("shim.sock non-blocking"))?;
    Ok(listener)
}

async fn serve(
    args: RunArgs,
    started: Started,
    started_at: i64,
    api: std::os::unix::net::UnixListener,
) -> Result<(), ShimError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |source| ShimError::Io { what, source }
    };
    let Started { pid, stdio } = started;

    // Reaper: install the SIGCHLD handler, then reap once for an init that already exited.
    let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
        .map_err(io("watching SIGCHLD"))?;
    let (exit_tx, exit_rx) = watch::channel(None::<ExitRecord>);
    // How far the output has got (see the reaper). Its readers count from here, so an
    // exit reaped before they start still waits for them.
    let readers = match &stdio {
        InitStdio::Pipes { .. } => 2,
        InitStdio::Terminal(_) => 1,
    };
    let (drain_tx, drain_rx) = watch::channel(logfwd::Drain {
        readers_open: readers,
        ..Default::default()
    });
    let shim_dir = args.shim_dir.clone();
    let children = Arc::new(Children::default());
    let reaped = children.clone();
    tokio::spawn(async move {
        let mut exit_tx = Some(exit_tx);
        loop {
            if let Some(code) = reap(pid, &reaped) {
                let rec = ExitRecord {
                    exit_code: code,
                    exited_at_unix_nano: now_unix_nano(),
                    pid,
                };
                tracing::info!(code, "container exited");
                let (shim_dir, exit_tx) = (shim_dir.clone(), exit_tx.take());
                let mut drain = drain_rx.clone();
                tokio::spawn(async move {
                    // As Docker: the exit is told once the output is drained (a bounded
                    // wait), so `docker run` and `docker logs` right after the exit have
                    // every line, and an auto-remove cannot overtake the last ones.
                    let _ = tokio::time::timeout(DRAIN_WAIT, drain.wait_for(|d| d.drained())).await;
                    // On disk before anyone is told, so a crash of berth-containerd right
                    // after our answer cannot lose the code.
                    if let Err(e) = exitfile::write(&shim_dir, &rec) {
                        tracing::error!(error = %e, "writing the exit file");
                    }
                    if let Some(tx) = exit_tx {
                        let _ = tx.send(Some(rec));
                    }
                });
            }
            if sigchld.recv().await.is_none() {
                break;
            }
        }
    });

    // Output -> logd; stdin and the terminal for the API.
    let (out_tx, out_rx) = mpsc::channel(256);
    let (stdin, terminal): (Option<StdinWriter>, Option<Master>) = match stdio {
        InitStdio::Pipes {
            stdout,
            stderr,
            stdin,
        } => {
            let receiver = |fd| {
                tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
                    .map_err(io("reading container output"))
            };
            let reader = |fd, stream, tx| {
                Ok::<_, ShimError>(read_stream(
                    receiver(fd)?,
                    stream,
                    false,
                    tx,
                    drain_tx.clone(),
                ))
            };
            tokio::spawn(reader(stdout, 1, out_tx.clone())?);
            tokio::spawn(reader(stderr, 2, out_tx)?);
            let stdin = match stdin {
                Some(w) => Some(Box::new(
                    tokio::net::unix::pipe::Sender::from_owned_fd(w)
                        .map_err(io("container stdin"))?,
                ) as StdinWriter),
                None => None,
            };
            (stdin, None)
        }
        InitStdio::Terminal(fd) => {
            let master = Master::new(fd).map_err(io("container terminal"))?;
            tokio::spawn(read_stream(
                master.clone(),
                1,
                true,
                out_tx,
                drain_tx.clone(),
            ));
            let stdin = args
                .open_stdin
                .then(|| Box::new(master.clone()) as StdinWriter);
            (stdin, Some(master))
        }
    };
    let channel = logfwd::unix_channel(&args.logd_socket);
    let target = LogTarget {
        container_id: args.id.clone(),
        session: started_at.to_string(),
        driver: args.log_driver.clone(),
    };
    tokio::spawn(logfwd::forward(target, channel, out_rx, drain_tx));

    // Shed the pages of the start-up code once the first calls are answered, then now
    // and then.
    tokio::spawn(async {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        loop {
            let kib = crate::trim::trim();
            tracing::debug!(kib, "dropped clean pages");
            tokio::time::sleep(crate::trim::EVERY).await;
        }
    });

    // API.
    let listener = tokio::net::UnixListener::from_std(api).map_err(io("serving shim.sock"))?;
    let (shutdown_tx, mut shutdown_rx) = mpsc::channel(1);
    let svc = ShimService {
        id: args.id.clone(),
        pid,
        started_at_unix_nano: started_at,
        state_root: args.state_root.clone(),
        shim_dir: args.shim_dir.clone(),
        exit: exit_rx,
        shutdown: shutdown_tx,
        stdin: Arc::new(tokio::sync::Mutex::new(stdin)),
        terminal,
        execs: Arc::new(Execs {
            container_id: args.id.clone(),
            state_root: args.state_root.clone(),
            shim_dir: args.shim_dir.clone(),
            children,
            table: Default::default(),
        }),
    };
    let server = tonic::transport::Server::builder()
        .add_service(ShimServer::new(svc))
        .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener));
    tokio::select! {
        r = server => r.map_err(|e| ShimError::Runtime(format!("serving: {e}")))?,
        _ = shutdown_rx.recv() => {
            // Let the Shutdown answer reach the caller before the process goes away.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            tracing::info!("shut down");
        }
    }
    Ok(())
}
