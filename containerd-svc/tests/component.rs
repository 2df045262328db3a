//! Component test: the real berth-containerd + berth-shim running busybox containers,
//! with an in-process logd double. Needs root.
#![allow(clippy::unwrap_used)]

use berth_proto::containers::containers_client::ContainersClient;
use berth_proto::containers::*;
use berth_proto::logs::logs_server::{Logs, LogsServer};
use berth_proto::logs::{self as lp, LogEntry, WriteAck};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

#[derive(Default)]
struct LogdState {
    entries: Vec<LogEntry>,
    opened: Vec<String>,
    closed: Vec<String>,
    cursor: HashMap<(String, String), u64>,
}

#[derive(Clone, Default)]
struct LogdDouble(Arc<Mutex<LogdState>>);

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Logs for LogdDouble {
    async fn open(
        &self,
        r: Request<lp::OpenRequest>,
    ) -> Result<Response<lp::OpenResponse>, Status> {
        self.0
            .lock()
            .unwrap()
            .opened
            .push(r.into_inner().container_id);
        Ok(Response::new(lp::OpenResponse {
            log_path: String::new(),
        }))
    }
    type WriteStream = BoxStream<WriteAck>;
    async fn write(
        &self,
        r: Request<Streaming<LogEntry>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        Ok(Response::new(acks(self.0.clone(), r.into_inner())))
    }
    async fn get_cursor(
        &self,
        r: Request<lp::GetCursorRequest>,
    ) -> Result<Response<lp::GetCursorResponse>, Status> {
        let r = r.into_inner();
        let seq = *self
            .0
            .lock()
            .unwrap()
            .cursor
            .get(&(r.container_id, r.session))
            .unwrap_or(&0);
        Ok(Response::new(lp::GetCursorResponse { seq }))
    }
    async fn close(
        &self,
        r: Request<lp::CloseRequest>,
    ) -> Result<Response<lp::CloseResponse>, Status> {
        self.0
            .lock()
            .unwrap()
            .closed
            .push(r.into_inner().container_id);
        Ok(Response::new(lp::CloseResponse {}))
    }
    async fn list_logs(
        &self,
        _: Request<lp::ListLogsRequest>,
    ) -> Result<Response<lp::ListLogsResponse>, Status> {
        let mut ids = self.0.lock().unwrap().opened.clone();
        ids.sort();
        ids.dedup();
        Ok(Response::new(lp::ListLogsResponse { container_ids: ids }))
    }
    type ReadStream = BoxStream<lp::LogBatch>;
    async fn read(
        &self,
        _: Request<lp::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        Err(Status::unimplemented("double"))
    }
    async fn remove(
        &self,
        _: Request<lp::RemoveRequest>,
    ) -> Result<Response<lp::RemoveResponse>, Status> {
        Ok(Response::new(lp::RemoveResponse {}))
    }
}

/// Stores each entry above the cursor and acks it, as logd does.
fn acks(state: Arc<Mutex<LogdState>>, mut input: Streaming<LogEntry>) -> BoxStream<WriteAck> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(e)) = input.next().await {
            let ack = {
                let mut s = state.lock().unwrap();
                let key = (e.container_id.clone(), e.session.clone());
                let cur = s.cursor.get(&key).copied().unwrap_or(0);
                if e.seq > cur {
                    s.cursor.insert(key, e.seq);
                    s.entries.push(e.clone());
                }
                WriteAck {
                    container_id: e.container_id,
                    session: e.session,
                    seq: e.seq,
                }
            };
            if tx.send(Ok(ack)).is_err() {
                break;
            }
        }
    });
    Box::pin(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
}

struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Env {
    tmp: tempfile::TempDir,
    shim: PathBuf,
}

/// A failed run must not leave shims, their containers or cgroups behind: everything
/// whose command line names this test's temp dir is killed (children first), then the
/// instance's cgroups are removed.
impl Drop for Env {
    fn drop(&mut self) {
        let marker = self.tmp.path().display().to_string();
        let procs: Vec<(i32, i32, String)> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let ppid = stat
                    .rsplit(')')
                    .next()?
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                Some((pid, ppid, String::from_utf8_lossy(&cmd).into_owned()))
            })
            .collect();
        let mut doomed: Vec<i32> = procs
            .iter()
            .filter(|(_, _, cmd)| cmd.contains("berth-shim") && cmd.contains(&marker))
            .map(|(pid, _, _)| *pid)
            .collect();
        let mut i = 0;
        while i < doomed.len() {
            let parent = doomed[i];
            doomed.extend(
                procs
                    .iter()
                    .filter(|(_, pp, _)| *pp == parent)
                    .map(|(p, _, _)| *p),
            );
            i += 1;
        }
        for pid in doomed.iter().rev() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(200));
        let parent = berth_kit::Roots::new(self.data(), self.run()).cgroup_parent();
        for ctl in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let dir = ctl.path().join(&parent);
            if let Ok(subs) = std::fs::read_dir(&dir) {
                for sub in subs.flatten().filter(|s| s.path().is_dir()) {
                    let _ = std::fs::remove_dir(sub.path());
                }
                let _ = std::fs::remove_dir(&dir);
            }
        }
    }
}

impl Env {
    fn data(&self) -> PathBuf {
        self.tmp.path().join("d")
    }
    fn run(&self) -> PathBuf {
        self.tmp.path().join("r")
    }
    fn logd(&self) -> PathBuf {
        self.tmp.path().join("logd.sock")
    }
    fn rootfs(&self) -> PathBuf {
        self.tmp.path().join("rootfs")
    }

    async fn start_daemon(&self) -> Daemon {
        let child = Command::new(env!("CARGO_BIN_EXE_berth-containerd"))
            .arg("--data-root")
            .arg(self.data())
            .arg("--exec-root")
            .arg(self.run())
            .arg("--shim-binary")
            .arg(&self.shim)
            .arg("--logd-socket")
            .arg(self.logd())
            .arg("-D")
            .spawn()
            .unwrap();
        let d = Daemon { child };
        let sock = self.run().join("containerd.sock");
        for _ in 0..100 {
            if berth_kit::grpc::is_serving(&sock, Duration::from_millis(200)).await {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("berth-containerd never became healthy");
    }

    fn client(&self) -> ContainersClient<Channel> {
        ContainersClient::new(berth_kit::grpc::channel(
            &self.run().join("containerd.sock"),
        ))
    }

    fn spec(&self, id_byte: &str, name: &str, args: &[&str]) -> ContainerSpec {
        ContainerSpec {
            id: id_byte.repeat(64),
            name: name.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            rootfs_path: self.rootfs().display().to_string(),
            env: vec!["PATH=/bin".into()],
            ..Default::default()
        }
    }
}

fn build_shim() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_berth-containerd"));
    let shim = exe.parent().unwrap().join("berth-shim");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "berth-shim"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "building berth-shim failed");
    assert!(shim.is_file());
    shim
}

fn make_rootfs(root: &Path) {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    for l in ["sh", "echo", "sleep", "cat", "stty"] {
        std::os::unix::fs::symlink("busybox", bin.join(l)).unwrap();
    }
    for d in ["proc", "dev", "sys", "etc", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
}

/// A logd double on its own runtime, so stopping it really drops every connection (as a
/// logd crash would).
struct LogdServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LogdServer {
    fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for LogdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn start_logd(svc: LogdDouble, path: PathBuf) -> LogdServer {
    let _ = std::fs::remove_file(&path);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::UnixListener::bind(&path).unwrap();
            ready_tx.send(()).unwrap();
            let server = tonic::transport::Server::builder()
                .add_service(LogsServer::new(svc))
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener));
            tokio::select! {
                _ = server => {}
                _ = rx => {}
            }
        });
        // Dropping the runtime drops every connection task.
        drop(rt);
    });
    ready_rx.recv().unwrap();
    LogdServer {
        stop: Some(tx),
        thread: Some(thread),
    }
}

fn vm_rss_kb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn lines_of(logd: &LogdDouble, id: &str) -> Vec<LogEntry> {
    logd.0
        .lock()
        .unwrap()
        .entries
        .iter()
        .filter(|e| e.container_id == id)
        .cloned()
        .collect()
}

async fn wait_closed(logd: &LogdDouble, id: &str) {
    for _ in 0..200 {
        if logd.0.lock().unwrap().closed.iter().any(|c| c == id) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("log of {id} never closed");
}

/// What one exec printed and how it ended.
#[derive(Debug, Default)]
struct ExecRun {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit_code: i32,
    error: String,
}

/// Creates and starts an exec in `container`, feeding `stdin` (then closing it).
async fn run_exec(
    c: &mut ContainersClient<Channel>,
    container: &str,
    config: ExecConfig,
    stdin: Option<&[u8]>,
) -> (String, ExecRun) {
    let id = c
        .exec_create(ExecCreateRequest {
            container_id: container.into(),
            config: Some(config),
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(ExecStartInput {
        exec_id: id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    if let Some(data) = stdin {
        tx.send(ExecStartInput {
            stdin: data.to_vec(),
            close_stdin: true,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let mut stream = c
        .exec_start(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut run = ExecRun::default();
    while let Some(m) = stream.message().await.unwrap() {
        match m.stream {
            1 => run.stdout.extend_from_slice(&m.data),
            2 => run.stderr.extend_from_slice(&m.data),
            _ => {}
        }
        if m.exited {
            run.exit_code = m.exit_code;
            run.error = m.error;
        }
    }
    drop(tx);
    (id, run)
}

fn exec_cfg(cmd: &[&str]) -> ExecConfig {
    ExecConfig {
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        attach_stdout: true,
        attach_stderr: true,
        ..Default::default()
    }
}

fn ppid_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(1).unwrap().parse().unwrap()
}

fn cmdline(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .replace('\0', " ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_logs_and_restart() {
    let shim = build_shim();
    let tmp = tempfile::Builder::new()
        .prefix("b")
        .tempdir_in("/tmp")
        .unwrap();
    let env = Env { tmp, shim };
    make_rootfs(&env.rootfs());

    // logd double.
    let logd = LogdDouble::default();
    let mut logd_server = start_logd(logd.clone(), env.logd());
    let mut daemon = env.start_daemon().await;
    let mut c = env.client();

    // 1. exit code + output line reaches logd.
    let s1 = env.spec("1", "c1", &["sh", "-c", "echo hello; exit 3"]);
    let id1 = s1.id.clone();
    c.create(CreateRequest { spec: Some(s1) }).await.unwrap();
    let mut events = c
        .events(EventsRequest { after_seq: 0 })
        .await
        .unwrap()
        .into_inner();
    let started = c
        .start(StartRequest { id: "c1".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(!started.already_running);
    let w = c
        .wait(WaitRequest {
            id: id1.clone(),
            condition: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.exit_code, 3);
    let got = c
        .get(GetRequest { id: "/c1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.state, "exited");
    assert_eq!(got.exit_code, 3);
    assert!(!got.finished_at.is_empty());
    let mut ok = false;
    for _ in 0..100 {
        {
            let s = logd.0.lock().unwrap();
            if s.closed.contains(&id1) {
                let lines: Vec<_> = s.entries.iter().filter(|e| e.container_id == id1).collect();
                assert_eq!(lines.len(), 1, "{lines:?}");
                assert_eq!(&lines[0].line[..], b"hello\n");
                assert_eq!(lines[0].stream, 1);
                assert_eq!(lines[0].seq, 1);
                assert!(s.opened.contains(&id1));
                ok = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "log never closed");
    // The journal replays the create (before the subscription), then the live events.
    let mut actions = Vec::new();
    let mut seqs = Vec::new();
    while actions.len() < 3 {
        let e = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if e.id == id1 {
            seqs.push(e.seq);
            actions.push((e.action, e.exit_code, e.name));
        }
    }
    assert_eq!(actions[0].0, "create");
    assert_eq!(actions[1].0, "start");
    assert_eq!(actions[2], ("die".to_string(), 3, "c1".to_string()));
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // A reader that saw up to the start resumes with the die.
    let mut resumed = c
        .events(EventsRequest { after_seq: seqs[1] })
        .await
        .unwrap()
        .into_inner();
    let e = tokio::time::timeout(Duration::from_secs(5), resumed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((e.action.as_str(), e.seq), ("die", seqs[2]));

    // 1b. an exited container starts again (new shim, new log session).
    let r = c
        .start(StartRequest { id: "c1".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.already_running);
    let w = c
        .wait(WaitRequest {
            id: id1.clone(),
            condition: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.exit_code, 3);
    for _ in 0..100 {
        if lines_of(&logd, &id1).len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let l = lines_of(&logd, &id1);
    assert_eq!(l.len(), 2);
    assert_ne!(l[0].session, l[1].session);
    assert_eq!(&l[1].line[..], b"hello\n");

    // 2. names.
    let e = c
        .create(CreateRequest {
            spec: Some(env.spec("2", "bad name", &["sh"])),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("Invalid container name (bad name)"));
    let e = c
        .create(CreateRequest {
            spec: Some(env.spec("2", "c1", &["sh"])),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists);
    assert!(e.message().contains(&format!(
        "The container name \"/c1\" is already in use by container \"{id1}\""
    )));

    // 2a. an attach to a container that never starts ends when its client leaves (no
    // waiter is left polling for a start that will not come).
    let mut idle = env.spec("6", "idle", &["cat"]);
    idle.open_stdin = true;
    c.create(CreateRequest { spec: Some(idle) }).await.unwrap();
    let (idle_tx, idle_rx) = tokio::sync::mpsc::channel(2);
    idle_tx
        .send(AttachInput {
            id: "idle".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut idle_client = env.client();
    let idle_attach = tokio::spawn(async move {
        idle_client
            .attach(tokio_stream::wrappers::ReceiverStream::new(idle_rx))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(idle_tx);
    tokio::time::timeout(Duration::from_secs(5), idle_attach)
        .await
        .expect("the attach outlived its client")
        .unwrap()
        .unwrap();
    c.remove(RemoveRequest {
        id: "idle".into(),
        force: false,
    })
    .await
    .unwrap();

    // 2b. a terminal: input sent before the start waits for it, the pty has the
    // HostConfig's size, typed input comes back through the line discipline, Resize
    // reaches it.
    let tty_spec = ContainerSpec {
        tty: true,
        open_stdin: true,
        host_config_json: br#"{"ConsoleSize":[12,34]}"#.to_vec(),
        ..env.spec(
            "2",
            "term",
            &["sh", "-c", "stty size; read x; echo got:$x; stty size"],
        )
    };
    let id2 = tty_spec.id.clone();
    c.create(CreateRequest {
        spec: Some(tty_spec),
    })
    .await
    .unwrap();
    let (stdin_tx, stdin_rx) = tokio::sync::mpsc::channel(4);
    stdin_tx
        .send(AttachInput {
            id: "term".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut attach_client = env.client();
    let attach = tokio::spawn(async move {
        attach_client
            .attach(tokio_stream::wrappers::ReceiverStream::new(stdin_rx))
            .await
    });
    c.start(StartRequest { id: "term".into() }).await.unwrap();
    let text_of = |id: &str| {
        lines_of(&logd, id)
            .iter()
            .map(|e| String::from_utf8_lossy(&e.line).into_owned())
            .collect::<String>()
    };
    for _ in 0..200 {
        if text_of(&id2).contains("12 34") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(text_of(&id2).contains("12 34\r\n"), "{:?}", text_of(&id2));
    c.resize(ResizeRequest {
        id: "term".into(),
        exec_id: String::new(),
        height: 50,
        width: 60,
    })
    .await
    .unwrap();
    stdin_tx
        .send(AttachInput {
            stdin: b"hello\r".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    let w = c
        .wait(WaitRequest {
            id: id2.clone(),
            condition: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.exit_code, 0);
    wait_closed(&logd, &id2).await;
    let shown = text_of(&id2);
    assert!(shown.contains("got:hello\r\n"), "{shown:?}");
    assert!(shown.contains("50 60\r\n"), "{shown:?}");
    drop(stdin_tx);
    attach.await.unwrap().unwrap();
    let e = c
        .resize(ResizeRequest {
            id: String::new(),
            exec_id: "ab".repeat(32),
            height: 1,
            width: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = c
        .resize(ResizeRequest {
            id: "term".into(),
            exec_id: String::new(),
            height: 1,
            width: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "not running");
    c.remove(RemoveRequest {
        id: "term".into(),
        force: false,
    })
    .await
    .unwrap();

    // 3. a missing executable fails synchronously with Docker's words; state stays created.
    let generated = c
        .create(CreateRequest {
            spec: Some(env.spec("3", "", &["nonexistent-cmd"])),
        })
        .await
        .unwrap()
        .into_inner();
    let gen_name = generated.spec.unwrap().name;
    assert!(gen_name.contains('_'), "{gen_name}");
    let e = c
        .start(StartRequest { id: "333".into() })
        .await
        .unwrap_err();
    assert!(
        e.message().contains("executable file not found"),
        "{}",
        e.message()
    );
    let got = c
        .get(GetRequest {
            id: gen_name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((got.state.as_str(), got.exit_code), ("created", 127));
    c.remove(RemoveRequest {
        id: gen_name,
        force: false,
    })
    .await
    .unwrap();

    // 4. a long-running container in its own pid namespace, child of its shim.
    let s2 = env.spec("4", "c2", &["sleep", "1000"]);
    let id2 = s2.id.clone();
    c.create(CreateRequest { spec: Some(s2) }).await.unwrap();
    let r = c
        .start(StartRequest { id: id2.clone() })
        .await
        .unwrap()
        .into_inner();
    let pid = r.container.unwrap().pid;
    assert!(pid > 0);
    let again = c
        .start(StartRequest { id: id2.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(again.already_running);
    let ours = std::fs::read_link("/proc/self/ns/pid").unwrap();
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    assert_ne!(ours, theirs);
    let shim_pid = ppid_of(pid);
    assert!(
        cmdline(shim_pid).contains("berth-shim"),
        "{}",
        cmdline(shim_pid)
    );
    let st = std::fs::read_to_string(format!("/proc/{shim_pid}/status")).unwrap();
    let rss: Vec<_> = st
        .lines()
        .filter(|l| l.starts_with("Rss") || l.starts_with("VmRSS"))
        .collect();
    eprintln!("idle shim memory: {rss:?}");
    assert!(vm_rss_kb(shim_pid) > 0);
    assert_ne!(
        ppid_of(shim_pid),
        daemon.child.id() as i32,
        "the shim must not be our child"
    );
    let parent = berth_kit::Roots::new(env.data(), env.run()).cgroup_parent();
    let cg = PathBuf::from("/sys/fs/cgroup/pids")
        .join(&parent)
        .join(&id2);
    let cg_exists = Path::new("/sys/fs/cgroup/pids").is_dir();
    assert_eq!(cg.exists(), cg_exists, "container cgroup {cg:?}");
    let e = c
        .kill(KillRequest {
            id: id1.clone(),
            signal: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    let e = c
        .remove(RemoveRequest {
            id: "c2".into(),
            force: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("container is running"));

    // 4b. docker exec: output per stream, exit code, env/cwd/user, stdin, a missing
    // command, and the exit recorded by the shim in <shim-dir>/exec-<id>.
    let (eid, run) = run_exec(
        &mut c,
        "c2",
        exec_cfg(&["sh", "-c", "echo out; echo err >&2; exit 3"]),
        None,
    )
    .await;
    assert_eq!(
        (run.stdout.as_slice(), run.stderr.as_slice(), run.exit_code),
        (&b"out\n"[..], &b"err\n"[..], 3),
        "{run:?}"
    );
    let info = c
        .exec_inspect(ExecInspectRequest { id: eid.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(info.exited && !info.running && info.exit_code == 3 && info.pid > 0);
    assert_eq!(info.container_id, id2);
    let shim_dir = env.run().join("shims").join(&id2);
    assert!(shim_dir.join(format!("exec-{eid}")).is_file());
    assert!(!shim_dir.join(format!("exec-{eid}.start")).exists());
    let mut cfg = exec_cfg(&[
        "sh",
        "-c",
        "echo $A $(pwd) $(busybox id -u):$(busybox id -g)",
    ]);
    cfg.env = vec!["A=1".into()];
    cfg.working_dir = "/tmp".into();
    cfg.user = "1234:1234".into();
    let (_, run) = run_exec(&mut c, "c2", cfg, None).await;
    assert_eq!(run.exit_code, 0, "{run:?}");
    assert_eq!(run.stdout, b"1 /tmp 1234:1234\n", "{run:?}");
    let mut cfg = exec_cfg(&["cat"]);
    cfg.attach_stdin = true;
    let (_, run) = run_exec(&mut c, "c2", cfg, Some(b"piped\n")).await;
    assert_eq!((run.stdout.as_slice(), run.exit_code), (&b"piped\n"[..], 0));
    let (eid, run) = run_exec(&mut c, "c2", exec_cfg(&["nosuchcmd"]), None).await;
    // dockerd records 126 for every exec that could not start.
    assert_eq!(run.exit_code, 126, "{run:?}");
    assert!(
        run.error
            .contains("exec: \"nosuchcmd\": executable file not found in $PATH"),
        "{run:?}"
    );
    let e = c
        .exec_start(tokio_stream::iter(vec![ExecStartInput {
            exec_id: eid,
            ..Default::default()
        }]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    let e = c
        .exec_inspect(ExecInspectRequest { id: "ff".into() })
        .await
        .unwrap_err();
    assert_eq!(e.message(), "No such exec instance: ff");
    let e = c
        .exec_create(ExecCreateRequest {
            container_id: "c1".into(),
            config: Some(exec_cfg(&["true"])),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert_eq!(e.message(), format!("container {id1} is not running"));

    // 5. kill -9 berth-containerd; the container survives and is found again.
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    drop(daemon);
    let _daemon = env.start_daemon().await;
    let mut c = env.client();
    let got = c
        .get(GetRequest { id: "c2".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((got.state.as_str(), got.pid), ("running", pid));
    let list = c
        .list(ListRequest { all: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.containers.len(), 1);
    // Exec still works through the restarted service.
    let (_, run) = run_exec(&mut c, "c2", exec_cfg(&["echo", "again"]), None).await;
    assert_eq!((run.stdout.as_slice(), run.exit_code), (&b"again\n"[..], 0));
    // pid 1 ignores SIGTERM: the stop timeout then SIGKILL path runs.
    let stop = c
        .stop(StopRequest {
            id: "c2".into(),
            timeout_seconds: 1,
            signal: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!stop.already_stopped);
    let w = c
        .wait(WaitRequest {
            id: id2.clone(),
            condition: "not-running".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.exit_code, 137);
    let stop = c
        .stop(StopRequest {
            id: "c2".into(),
            timeout_seconds: 1,
            signal: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stop.already_stopped);

    // 6. remove cleans bundle, shim dir and cgroup.
    c.remove(RemoveRequest {
        id: "c2".into(),
        force: false,
    })
    .await
    .unwrap();
    assert!(!env.data().join("containerd/bundles").join(&id2).exists());
    assert!(!env.run().join("shims").join(&id2).exists());
    if cg_exists {
        assert!(!cg.exists(), "cgroup {cg:?} left behind");
    }
    let e = c.get(GetRequest { id: id2.clone() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert_eq!(e.message(), format!("No such container: {id2}"));

    // 7. seccomp and Docker's capabilities are applied.
    let s6 = env.spec("6", "c6", &["cat", "/proc/self/status"]);
    let id6 = s6.id.clone();
    c.create(CreateRequest { spec: Some(s6) }).await.unwrap();
    c.start(StartRequest { id: "c6".into() }).await.unwrap();
    assert_eq!(
        c.wait(WaitRequest {
            id: "c6".into(),
            condition: String::new()
        })
        .await
        .unwrap()
        .into_inner()
        .exit_code,
        0
    );
    wait_closed(&logd, &id6).await;
    let status: String = lines_of(&logd, &id6)
        .iter()
        .map(|e| String::from_utf8_lossy(&e.line).into_owned())
        .collect();
    assert!(status.contains("Seccomp:\t2"), "{status}");
    // Docker's default set is 0xa80425fb.
    assert!(status.contains("CapEff:\t00000000a80425fb"), "{status}");
    c.remove(RemoveRequest {
        id: "c6".into(),
        force: false,
    })
    .await
    .unwrap();

    // 8. logd goes away mid-run and comes back: no line lost or duplicated.
    let s7 = env.spec(
        "7",
        "c7",
        &[
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8; do echo line$i; sleep 0.2; done",
        ],
    );
    let id7 = s7.id.clone();
    c.create(CreateRequest { spec: Some(s7) }).await.unwrap();
    c.start(StartRequest { id: "c7".into() }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    logd_server.stop();
    tokio::time::sleep(Duration::from_millis(700)).await;
    logd_server = start_logd(logd.clone(), env.logd());
    assert_eq!(
        c.wait(WaitRequest {
            id: "c7".into(),
            condition: String::new()
        })
        .await
        .unwrap()
        .into_inner()
        .exit_code,
        0
    );
    wait_closed(&logd, &id7).await;
    let got: Vec<_> = lines_of(&logd, &id7)
        .iter()
        .map(|e| (e.seq, String::from_utf8_lossy(&e.line).into_owned()))
        .collect();
    let want: Vec<_> = (1..=8u64).map(|i| (i, format!("line{i}\n"))).collect();
    assert_eq!(got, want);
    c.remove(RemoveRequest {
        id: "c7".into(),
        force: false,
    })
    .await
    .unwrap();

    // 9. force remove of a running container.
    let s5 = env.spec("5", "c5", &["sleep", "1000"]);
    c.create(CreateRequest { spec: Some(s5) }).await.unwrap();
    c.start(StartRequest { id: "c5".into() }).await.unwrap();
    c.remove(RemoveRequest {
        id: "c5".into(),
        force: true,
    })
    .await
    .unwrap();
    c.remove(RemoveRequest {
        id: "c1".into(),
        force: false,
    })
    .await
    .unwrap();
    let list = c
        .list(ListRequest { all: true })
        .await
        .unwrap()
        .into_inner();
    assert!(list.containers.is_empty());
    assert!(
        std::fs::read_dir(env.run().join("shims"))
            .unwrap()
            .next()
            .is_none()
    );
    logd_server.stop();
    for ctl in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(ctl.path().join(&parent));
    }
}
