//! `docker exec`: exec records (in memory: an exec lives no longer than its container's
//! run, and its exit code is also kept by the shim in `<shim-dir>/exec-<id>`), resolving
//! the process (user, env, working dir) and relaying the stream between the gateway and
//! the container's shim.

use crate::service::Service;
use crate::shim;
use crate::spec;
use crate::store::Record;
use crate::{Error, names};
use berth_proto::containers::{
    ContainerSpec, ExecConfig, ExecInfo, ExecStartInput, ExecStartOutput,
};
use berth_proto::shim::{ExecInput, ExecProcess, exec_output};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Status;

/// How long the shim may take to start an exec (the helper runs libcontainer).
const EXEC_START_TIMEOUT: Duration = Duration::from_secs(30);

/// One exec instance.
#[derive(Debug, Clone)]
pub struct ExecRecord {
    pub id: String,
    pub container_id: String,
    pub config: ExecConfig,
    pub started: bool,
    pub running: bool,
    pub pid: i32,
    pub exit_code: Option<i32>,
}

impl ExecRecord {
    /// The record as the API reports it.
    pub fn info(&self) -> ExecInfo {
        ExecInfo {
            id: self.id.clone(),
            container_id: self.container_id.clone(),
            config: Some(self.config.clone()),
            running: self.running,
            exit_code: self.exit_code.unwrap_or(0),
            exited: self.exit_code.is_some(),
            pid: self.pid,
        }
    }
}

/// The exec records, by id.
#[derive(Debug, Default)]
pub struct ExecTable(Mutex<HashMap<String, ExecRecord>>);

impl ExecTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ExecRecord>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of exec `id`'s record.
    pub fn get(&self, id: &str) -> Option<ExecRecord> {
        self.lock().get(id).cloned()
    }

    /// Adds a record.
    pub fn insert(&self, rec: ExecRecord) {
        self.lock().insert(rec.id.clone(), rec);
    }

    /// Changes exec `id`'s record, if it exists.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut ExecRecord)) {
        if let Some(r) = self.lock().get_mut(id) {
            f(r);
        }
    }

    /// Marks exec `id` started; Docker's error when it was already.
    pub fn claim(&self, id: &str) -> Result<ExecRecord, Error> {
        let mut g = self.lock();
        let r = g
            .get_mut(id)
            .ok_or_else(|| Error::NoSuchExec(id.to_string()))?;
        if r.started {
            // Docker's wording.
            return Err(Error::FailedPrecondition(if r.running {
                format!("Error: Exec command {id} is already running")
            } else {
                format!("Error: Exec command {id} has already run")
            }));
        }
        r.started = true;
        r.running = true;
        Ok(r.clone())
    }

    /// Records the end of exec `id`.
    pub fn finish(&self, id: &str, code: i32) {
        self.update(id, |r| {
            r.running = false;
            r.exit_code = Some(code);
        });
    }

    /// Forgets the execs of a removed container.
    pub fn forget_container(&self, container_id: &str) {
        self.lock().retain(|_, r| r.container_id != container_id);
    }
}

/// A fresh exec id: 64 hex digits, as Docker's.
pub fn new_exec_id() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The process to run for `cfg` in a container with `spec`: the exec's user, else the
/// container's; its working dir, else the container's, else "/". Env is only the exec's
/// additions: the shim's runtime takes the container's environment as the baseline.
pub fn resolve_process(
    exec_id: &str,
    cfg: &ExecConfig,
    container: &berth_proto::containers::ContainerSpec,
    stdin: bool,
) -> Result<ExecProcess, Error> {
    let user = if cfg.user.is_empty() {
        &container.user
    } else {
        &cfg.user
    };
    let u = spec::resolve_user(user, Path::new(&container.rootfs_path))?;
    let cwd = [&cfg.working_dir, &container.working_dir]
        .into_iter()
        .find(|d| !d.is_empty())
        .cloned()
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "the working directory '{cwd}' is invalid, it needs to be an absolute path"
        )));
    }
    Ok(ExecProcess {
        exec_id: exec_id.to_string(),
        args: cfg.cmd.clone(),
        env: cfg.env.clone(),
        cwd,
        uid: u.uid,
        gid: u.gid,
        stdin,
        // `docker exec --privileged`: every capability the host grants.
        capabilities: if cfg.privileged {
            crate::hostconfig::grantable()
        } else {
            Vec::new()
        },
        tty: cfg.tty,
        console_height: 0,
        console_width: 0,
        transient: false,
        timeout_ms: 0,
    })
}

type Tx = mpsc::Sender<Result<ExecStartOutput, Status>>;

/// dockerd's exit code for an exec whose start failed.
const START_FAILED: i32 = 126;

/// Sends to the caller, if one listens (a detached exec has none; a gone caller is fine).
async fn send(tx: &Option<Tx>, m: ExecStartOutput) {
    if let Some(t) = tx {
        let _ = t.send(Ok(m)).await;
    }
}

fn exited_msg(code: i32, error: String) -> ExecStartOutput {
    ExecStartOutput {
        started: true,
        exited: true,
        exit_code: code,
        error,
        ..Default::default()
    }
}

impl Service {
    /// `POST /containers/{id}/exec`.
    pub async fn exec_create(&self, container: &str, cfg: ExecConfig) -> Result<String, Error> {
        // Its start follows: the exec joins the container's cgroups (see cgroup_warmup).
        crate::cgroup_warmup::warm_up();
        let rec = self.resolve(container).await?;
        if rec.state == "paused" {
            // Docker's wording.
            return Err(Error::FailedPrecondition(format!(
                "Container {} is paused, unpause the container before exec",
                rec.id
            )));
        }
        if rec.state != "running" {
            // Docker's wording.
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                rec.id
            )));
        }
        if cfg.cmd.is_empty() {
            // Docker's wording.
            return Err(Error::InvalidArgument("No exec command specified".into()));
        }
        let id = new_exec_id();
        debug_assert!(names::is_valid_id(&id));
        let spec = rec.spec()?;
        let action = format!("exec_create: {}", cfg.cmd.join(" "));
        self.emit_with(&rec, &spec, &action, 0, &[("execID", id.clone())]);
        self.inner.execs.insert(ExecRecord {
            id: id.clone(),
            container_id: rec.id,
            config: cfg,
            started: false,
            running: false,
            pid: 0,
            exit_code: None,
        });
        Ok(id)
    }

    /// `GET /exec/{id}/json`: a running exec's state is refreshed from its shim, in case
    /// the stream that would have reported its exit was cut.
    pub async fn exec_inspect(&self, id: &str) -> Result<ExecInfo, Error> {
        let rec = self
            .inner
            .execs
            .get(id)
            .ok_or_else(|| Error::NoSuchExec(id.to_string()))?;
        if rec.running
            && let Ok(st) =
                shim::exec_state(&self.inner.cfg, &rec.container_id, id, shim::CALL_TIMEOUT).await
            && !st.running
        {
            self.inner.execs.finish(id, st.exit_code);
        }
        self.inner
            .execs
            .get(id)
            .map(|r| r.info())
            .ok_or_else(|| Error::NoSuchExec(id.to_string()))
    }

    /// `POST /exec/{id}/start`: starts the process in the container's shim and returns
    /// the receiver of its output. The relay runs on after the caller leaves, so the exit
    /// code is always recorded.
    pub async fn exec_start(
        &self,
        mut input: tonic::Streaming<ExecStartInput>,
    ) -> Result<mpsc::Receiver<Result<ExecStartOutput, Status>>, Error> {
        let first = input
            .message()
            .await
            .map_err(|s| Error::InvalidArgument(s.message().to_string()))?
            .ok_or_else(|| Error::InvalidArgument("ExecStart needs a first message".into()))?;
        let exec_id = first.exec_id.clone();
        let detach = first.detach;
        let execs = &self.inner.execs;
        let rec = execs.claim(&exec_id)?;
        let (tx, rx) = mpsc::channel(64);
        let container = match self.resolve(&rec.container_id).await {
            Ok(c) if c.state == "running" => c,
            Ok(c) => {
                execs.update(&exec_id, |r| r.running = false);
                // Docker's wording.
                return Err(Error::FailedPrecondition(format!(
                    "container {} is not running",
                    c.id
                )));
            }
            Err(e) => {
                execs.update(&exec_id, |r| r.running = false);
                return Err(e);
            }
        };
        let spec = container.spec()?;
        // As dockerd: exec_start before the process runs, exec_die once it is over
        // (also when it could not start).
        let action = format!("exec_start: {}", rec.config.cmd.join(" "));
        self.emit_with(
            &container,
            &spec,
            &action,
            0,
            &[("execID", exec_id.clone())],
        );
        let arg0 = rec.config.cmd.first().cloned().unwrap_or_default();
        let stdin = rec.config.attach_stdin && !detach;
        let process = match resolve_process(&exec_id, &rec.config, &spec, stdin) {
            Ok(p) => ExecProcess {
                console_height: first.console_height,
                console_width: first.console_width,
                ..p
            },
            Err(e) => {
                // Like a runtime failure: the reason goes into the stream, exit 126.
                let f = shim::classify_exec_error(&e.to_string(), &arg0);
                return self
                    .fail_start(&exec_id, (&container, &spec), f, detach, tx, rx)
                    .await;
            }
        };
        let opened = shim::exec(
            &self.inner.cfg,
            &container.id,
            ExecInput {
                start: Some(process),
                ..Default::default()
            },
        )
        .await;
        let (shim_in, mut shim_out) = match opened {
            Ok(x) => x,
            Err(e) => {
                self.start_failed(&exec_id, &container, &spec);
                return Err(e);
            }
        };
        let first_out = tokio::time::timeout(EXEC_START_TIMEOUT, shim_out.message()).await;
        let pid = match first_out {
            Ok(Ok(Some(o))) => match o.event {
                Some(exec_output::Event::Started(s)) => s.pid,
                Some(exec_output::Event::Failed(text)) => {
                    let f = shim::classify_exec_error(&text, &arg0);
                    return self
                        .fail_start(&exec_id, (&container, &spec), f, detach, tx, rx)
                        .await;
                }
                other => {
                    self.start_failed(&exec_id, &container, &spec);
                    return Err(Error::Internal(format!(
                        "unexpected first exec message {other:?}"
                    )));
                }
            },
            Ok(Ok(None)) => {
                self.start_failed(&exec_id, &container, &spec);
                return Err(Error::Internal("the shim ended the exec stream".into()));
            }
            Ok(Err(s)) => {
                self.start_failed(&exec_id, &container, &spec);
                return Err(match s.code() {
                    tonic::Code::FailedPrecondition => {
                        Error::FailedPrecondition(s.message().to_string())
                    }
                    tonic::Code::Unavailable => {
                        Error::Unavailable(format!("shim Exec: {}", s.message()))
                    }
                    _ => Error::Internal(format!("shim Exec: {}", s.message())),
                });
            }
            Err(_) => {
                self.start_failed(&exec_id, &container, &spec);
                return Err(Error::Unavailable(format!(
                    "the shim did not start the exec within {EXEC_START_TIMEOUT:?}"
                )));
            }
        };
        execs.update(&exec_id, |r| r.pid = pid);
        tracing::info!(exec = %exec_id, container = %container.id, pid, "exec started");
        let _ = tx
            .send(Ok(ExecStartOutput {
                started: true,
                tty: rec.config.tty,
                ..Default::default()
            }))
            .await;

        // stdin: gateway -> shim. Dropping `shim_in` closes the process's stdin.
        if stdin {
            tokio::spawn(async move {
                while let Ok(Some(m)) = input.message().await {
                    let close = m.close_stdin;
                    let msg = ExecInput {
                        start: None,
                        stdin: m.stdin,
                        close_stdin: close,
                    };
                    if shim_in.send(msg).await.is_err() || close {
                        break;
                    }
                }
            });
        } else {
            drop(shim_in);
        }

        // Output: shim -> gateway (nobody, once detached), and the exit into the record.
        let svc = self.clone();
        let out_tx = if detach { None } else { Some(tx) };
        tokio::spawn(async move {
            loop {
                match shim_out.message().await {
                    Ok(Some(o)) => match o.event {
                        Some(exec_output::Event::Chunk(c)) => {
                            send(
                                &out_tx,
                                ExecStartOutput {
                                    started: true,
                                    stream: c.stream,
                                    data: c.data,
                                    ..Default::default()
                                },
                            )
                            .await
                        }
                        Some(exec_output::Event::Exited(x)) => {
                            // Recorded before the caller learns that the stream ended.
                            svc.inner.execs.finish(&exec_id, x.exit_code);
                            svc.exec_died(&container, &spec, &exec_id, x.exit_code);
                            tracing::info!(exec = %exec_id, code = x.exit_code, "exec exited");
                            send(&out_tx, exited_msg(x.exit_code, String::new())).await;
                            break;
                        }
                        _ => {}
                    },
                    Ok(None) | Err(_) => {
                        // The shim went away mid-exec; ask it (or its exit file) later.
                        let cfg = &svc.inner.cfg;
                        let cid = &container.id;
                        if let Ok(st) =
                            shim::exec_state(cfg, cid, &exec_id, Duration::from_secs(2)).await
                            && !st.running
                        {
                            svc.inner.execs.finish(&exec_id, st.exit_code);
                            svc.exec_died(&container, &spec, &exec_id, st.exit_code);
                            send(&out_tx, exited_msg(st.exit_code, String::new())).await;
                        } else {
                            tracing::warn!(exec = %exec_id, "lost the exec's stream");
                        }
                        break;
                    }
                }
            }
        });
        Ok(rx)
    }

    /// Records a start failure and answers with one message that carries it.
    async fn fail_start(
        &self,
        exec_id: &str,
        (container, spec): (&Record, &ContainerSpec),
        f: shim::StartFailure,
        detach: bool,
        tx: Tx,
        rx: mpsc::Receiver<Result<ExecStartOutput, Status>>,
    ) -> Result<mpsc::Receiver<Result<ExecStartOutput, Status>>, Error> {
        self.inner.execs.finish(exec_id, f.code);
        self.exec_died(container, spec, exec_id, f.code);
        tracing::info!(exec = %exec_id, code = f.code, error = %f.message, "exec failed to start");
        if detach {
            // Nobody reads a detached stream: the caller gets the error itself.
            return Err(Error::Internal(f.message));
        }
        let _ = tx.send(Ok(exited_msg(f.code, f.message))).await;
        Ok(rx)
    }

    /// The shim could not start the exec (unreachable, refused, no answer): Docker's
    /// exit code for a start that failed, and its exec_die.
    fn start_failed(&self, exec_id: &str, container: &Record, spec: &ContainerSpec) {
        self.inner.execs.finish(exec_id, START_FAILED);
        self.exec_died(container, spec, exec_id, START_FAILED);
    }

    fn exec_died(&self, container: &Record, spec: &ContainerSpec, exec_id: &str, code: i32) {
        let attrs = [
            ("execID", exec_id.to_string()),
            ("exitCode", code.to_string()),
        ];
        self.emit_with(container, spec, "exec_die", code, &attrs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::containers::ContainerSpec;

    fn cfg(cmd: &[&str]) -> ExecConfig {
        ExecConfig {
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn records_are_claimed_once_with_docker_wording() {
        let t = ExecTable::default();
        assert!(matches!(t.claim("x"), Err(Error::NoSuchExec(_))));
        t.insert(ExecRecord {
            id: "e1".into(),
            container_id: "c1".into(),
            config: cfg(&["true"]),
            started: false,
            running: false,
            pid: 0,
            exit_code: None,
        });
        assert!(t.claim("e1").unwrap().running);
        let e = t.claim("e1").unwrap_err();
        assert_eq!(e.to_string(), "Error: Exec command e1 is already running");
        t.finish("e1", 3);
        let info = t.get("e1").unwrap().info();
        assert!(!info.running && info.exited && info.exit_code == 3);
        assert_eq!(
            t.claim("e1").unwrap_err().to_string(),
            "Error: Exec command e1 has already run"
        );
        t.forget_container("c1");
        assert!(t.get("e1").is_none());
        assert_eq!(new_exec_id().len(), 64);
    }

    #[test]
    fn process_takes_exec_then_container_settings() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
        )
        .unwrap();
        let spec = ContainerSpec {
            rootfs_path: d.path().display().to_string(),
            working_dir: "/srv".into(),
            user: "nobody".into(),
            ..Default::default()
        };
        let p = resolve_process("e", &cfg(&["id"]), &spec, false).unwrap();
        assert_eq!((p.uid, p.gid, p.cwd.as_str()), (65534, 65534, "/srv"));
        let mut c = cfg(&["id"]);
        c.user = "1000:10".into();
        c.working_dir = "/tmp".into();
        c.env = vec!["A=1".into()];
        let p = resolve_process("e", &c, &spec, true).unwrap();
        assert_eq!((p.uid, p.gid, p.cwd.as_str()), (1000, 10, "/tmp"));
        assert_eq!(p.env, vec!["A=1".to_string()]);
        assert!(p.stdin);
        c.user = "nosuch".into();
        let e = resolve_process("e", &c, &spec, false).unwrap_err();
        assert!(e.to_string().contains("unable to find user nosuch"));
        c.user = String::new();
        c.working_dir = "rel".into();
        assert!(resolve_process("e", &c, &spec, false).is_err());
        let bare = ContainerSpec {
            rootfs_path: d.path().display().to_string(),
            ..Default::default()
        };
        assert_eq!(
            resolve_process("e", &cfg(&["x"]), &bare, false)
                .unwrap()
                .cwd,
            "/"
        );
    }
}
