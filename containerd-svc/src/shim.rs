//! Spawning shims and talking to them. Every unary call carries a deadline.

use crate::{Config, Error};
use berth_proto::containers::ContainerSpec;
use berth_proto::shim::shim_client::ShimClient;
use berth_proto::shim::{
    ExecInput, ExecOutput, ExecStateRequest, ExecStateResponse, KillRequest, ShutdownRequest,
    StateRequest, StateResponse, StdinInput, WaitRequest, WaitResponse,
};
use serde::Deserialize;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tonic::transport::Channel;

/// Deadline of State / Kill calls.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of Shutdown (libcontainer delete may kill and wait).
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a shim may take to create and start the container.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `<shim-dir>/exit` as the shim writes it.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct ExitRecord {
    pub exit_code: i32,
    pub exited_at_unix_nano: i64,
    pub pid: i32,
}

/// Reads `<shim-dir>/exit`.
pub fn read_exit_file(shim_dir: &Path) -> Option<ExitRecord> {
    let data = std::fs::read(shim_dir.join("exit")).ok()?;
    serde_json::from_slice(&data).ok()
}

/// A shim's client over `<shim-dir>/shim.sock`.
pub fn client(cfg: &Config, id: &str) -> ShimClient<Channel> {
    ShimClient::new(berth_kit::grpc::channel(
        &cfg.shim_dir(id).join("shim.sock"),
    ))
}

fn status_err(what: &str, s: tonic::Status) -> Error {
    match s.code() {
        tonic::Code::FailedPrecondition => Error::FailedPrecondition(s.message().to_string()),
        tonic::Code::InvalidArgument => Error::InvalidArgument(s.message().to_string()),
        tonic::Code::Unavailable => Error::Unavailable(format!("shim {what}: {}", s.message())),
        tonic::Code::NotFound => Error::NotFound(s.message().to_string()),
        _ => Error::Internal(format!("shim {what}: {}", s.message())),
    }
}

async fn deadline<T>(
    what: &str,
    d: Duration,
    f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, Error> {
    use tracing::Instrument as _;
    let call = tokio::time::timeout(d, f).instrument(tracing::info_span!("shim.call", rpc = what));
    match call.await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(status_err(what, s)),
        Err(_) => Err(Error::Unavailable(format!(
            "shim {what}: timed out after {d:?}"
        ))),
    }
}

/// The shim's State.
pub async fn state(cfg: &Config, id: &str, d: Duration) -> Result<StateResponse, Error> {
    deadline("State", d, client(cfg, id).state(StateRequest {})).await
}

/// Signals the init (`all`: every process of the container).
pub async fn kill(cfg: &Config, id: &str, signal: i32, all: bool) -> Result<(), Error> {
    deadline(
        "Kill",
        CALL_TIMEOUT,
        client(cfg, id).kill(KillRequest { signal, all }),
    )
    .await?;
    Ok(())
}

/// Blocks until the init exited; fails when the shim goes away.
pub async fn wait(cfg: &Config, id: &str) -> Result<WaitResponse, Error> {
    client(cfg, id)
        .wait(WaitRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|s| status_err("Wait", s))
}

/// Deletes the container and stops the shim.
pub async fn shutdown(cfg: &Config, id: &str) -> Result<(), Error> {
    deadline(
        "Shutdown",
        SHUTDOWN_TIMEOUT,
        client(cfg, id).shutdown(ShutdownRequest {}),
    )
    .await?;
    Ok(())
}

/// Opens the shim's Exec stream with `first` (which carries the process); the sender
/// feeds stdin, the stream carries started/failed, output and the exit.
pub async fn exec(
    cfg: &Config,
    id: &str,
    first: ExecInput,
) -> Result<
    (
        tokio::sync::mpsc::Sender<ExecInput>,
        tonic::Streaming<ExecOutput>,
    ),
    Error,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tx.send(first)
        .await
        .map_err(|_| Error::Internal("exec input closed".into()))?;
    let stream = deadline(
        "Exec",
        CALL_TIMEOUT,
        client(cfg, id).exec(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await?;
    Ok((tx, stream))
}

/// Streams `input` to the init's stdin; returns when it ends (or the shim refuses).
pub async fn stdin(
    cfg: &Config,
    id: &str,
    input: tokio::sync::mpsc::Receiver<StdinInput>,
) -> Result<(), Error> {
    client(cfg, id)
        .stdin(tokio_stream::wrappers::ReceiverStream::new(input))
        .await
        .map(|_| ())
        .map_err(|s| status_err("Stdin", s))
}

/// Sets a terminal's window size (`exec_id` empty: the init's).
pub async fn resize(
    cfg: &Config,
    id: &str,
    exec_id: &str,
    height: u32,
    width: u32,
) -> Result<(), Error> {
    deadline(
        "Resize",
        CALL_TIMEOUT,
        client(cfg, id).resize(berth_proto::shim::ResizeRequest {
            exec_id: exec_id.to_string(),
            height,
            width,
        }),
    )
    .await?;
    Ok(())
}

/// An exec's state as the shim knows it.
pub async fn exec_state(
    cfg: &Config,
    id: &str,
    exec_id: &str,
    d: Duration,
) -> Result<ExecStateResponse, Error> {
    deadline(
        "ExecState",
        d,
        client(cfg, id).exec_state(ExecStateRequest {
            exec_id: exec_id.to_string(),
        }),
    )
    .await
}

/// Why a start failed: the runtime's text and Docker's exit code for it.
#[derive(Debug)]
pub struct StartFailure {
    pub code: i32,
    pub message: String,
}

/// Docker's CLI exits 127 when the message says "executable file not found" or "no such
/// file or directory" and 126 for "permission denied"; libcontainer words these
/// differently, so the Docker phrase is appended.
pub fn classify_start_error(text: &str, arg0: &str) -> StartFailure {
    let (code, suffix) = docker_reason(text, arg0).unwrap_or((128, String::new()));
    let mut message = format!(
        "failed to create task for container: OCI runtime create failed: berth-shim: {text}"
    );
    if !suffix.is_empty() {
        message.push_str(": ");
        message.push_str(&suffix);
        message.push_str(": unknown");
    }
    StartFailure { code, message }
}

/// As [`classify_start_error`] for `docker exec`: dockerd records 126 for every exec that
/// could not start, a missing command included (docker-py's suite asserts it), and
/// writes the error into the stream (`OCI runtime exec failed: exec failed: ...:
/// unknown`).
pub fn classify_exec_error(text: &str, arg0: &str) -> StartFailure {
    let suffix = docker_reason(text, arg0)
        .map(|(_, s)| s)
        .unwrap_or_default();
    let code = 126;
    let mut message = format!("OCI runtime exec failed: exec failed: berth-shim: {text}");
    if !suffix.is_empty() {
        message.push_str(": ");
        message.push_str(&suffix);
    }
    message.push_str(": unknown");
    StartFailure { code, message }
}

/// Docker's exit code and phrase for a runtime error text, when it is one the CLI knows.
fn docker_reason(text: &str, arg0: &str) -> Option<(i32, String)> {
    let (code, suffix) = if text.contains("not found in $PATH") || text.contains("No such file") {
        if arg0.contains('/') {
            (
                127,
                format!("exec: \"{arg0}\": stat {arg0}: no such file or directory"),
            )
        } else {
            (
                127,
                format!("exec: \"{arg0}\": executable file not found in $PATH"),
            )
        }
    } else if text.contains("does not have correct permissions")
        || text.contains("ermission denied")
    {
        (126, format!("exec: \"{arg0}\": permission denied"))
    } else {
        return None;
    };
    Some((code, suffix))
}

/// One step the shim reports in its handshake, in unix nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub start: i64,
    pub end: i64,
}

/// A started container: its init's pid and the shim's steps.
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    pub steps: Vec<Step>,
}

/// Reads `prepare=1-2,create=2-5`; malformed items are skipped (timings are best effort).
pub fn parse_steps(text: &str) -> Vec<Step> {
    text.split(',')
        .filter_map(|item| {
            let (name, range) = item.trim().split_once('=')?;
            let (start, end) = range.split_once('-')?;
            Some(Step {
                name: name.to_string(),
                start: start.parse().ok()?,
                end: end.parse().ok()?,
            })
        })
        .collect()
}

/// Spawns `berth-shim run` for `spec` and waits for its handshake: the started container,
/// or the runtime's failure.
pub async fn spawn(
    cfg: &Config,
    spec: &ContainerSpec,
) -> Result<Result<Spawned, StartFailure>, Error> {
    let id = &spec.id;
    let dir = cfg.shim_dir(id);
    let io = |what: String| move |e: std::io::Error| Error::Internal(format!("{what}: {e}"));
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    std::fs::create_dir_all(&cfg.state_root).map_err(io("creating the state root".into()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("shim.log"))
        .map_err(io("opening shim.log".into()))?;
    let mut cmd = tokio::process::Command::new(&cfg.shim_binary);
    cmd.arg("run")
        .arg("--id")
        .arg(id)
        .arg("--bundle")
        .arg(cfg.bundle(id))
        .arg("--state-root")
        .arg(&cfg.state_root)
        .arg("--shim-dir")
        .arg(&dir)
        .arg("--logd-socket")
        .arg(&cfg.logd_socket)
        .arg("--log-driver")
        .arg(if spec.log_driver.is_empty() {
            "json-file"
        } else {
            &spec.log_driver
        });
    if spec.open_stdin {
        cmd.arg("--open-stdin");
    }
    if spec.tty {
        cmd.arg("--tty");
        if let Some((h, w)) = crate::stdio::console_size(&spec.host_config_json) {
            cmd.arg("--console-height")
                .arg(h.min(u16::MAX as u32).to_string())
                .arg("--console-width")
                .arg(w.min(u16::MAX as u32).to_string());
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(false);
    let mut child = cmd
        .spawn()
        .map_err(io(format!("spawning {}", cfg.shim_binary.display())))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::Internal("shim stdout missing".into()))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(START_TIMEOUT, lines.next_line()).await;
    // The first stage exits right after re-executing itself: reap it.
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    let arg0 = spec.args.first().cloned().unwrap_or_default();
    match line {
        Ok(Ok(Some(l))) => {
            if let Some(rest) = l.strip_prefix("started pid ") {
                let (pid, steps) = match rest.trim().split_once(" steps ") {
                    Some((pid, steps)) => (pid, parse_steps(steps)),
                    None => (rest.trim(), Vec::new()),
                };
                pid.parse::<i32>()
                    .map(|pid| Ok(Spawned { pid, steps }))
                    .map_err(|_| Error::Internal(format!("bad shim handshake {l:?}")))
            } else {
                let text = l.strip_prefix("error ").unwrap_or(&l).to_string();
                Ok(Err(classify_start_error(&text, &arg0)))
            }
        }
        Ok(Ok(None)) | Ok(Err(_)) => {
            let tail = std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default();
            let tail: String = tail.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
            Ok(Err(classify_start_error(
                &format!("shim exited without a handshake: {tail}"),
                &arg0,
            )))
        }
        Err(_) => Err(Error::Unavailable(format!(
            "berth-shim did not report within {START_TIMEOUT:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_steps_are_parsed() {
        assert_eq!(
            parse_steps("prepare=1-2,create=2-5,bad,start=x-1"),
            vec![
                Step {
                    name: "prepare".into(),
                    start: 1,
                    end: 2
                },
                Step {
                    name: "create".into(),
                    start: 2,
                    end: 5
                }
            ]
        );
    }

    #[test]
    fn start_errors_map_to_docker_codes() {
        let f = classify_start_error(
            "error in executing process : executable 'nope' not found in $PATH",
            "nope",
        );
        assert_eq!(f.code, 127);
        assert!(f.message.contains("executable file not found"));
        let f = classify_start_error("executable '/x' not found in $PATH", "/x");
        assert_eq!(f.code, 127);
        assert!(f.message.contains("no such file or directory"));
        let f = classify_start_error(
            "executable '/x' at path '\"/x\"' does not have correct permissions",
            "/x",
        );
        assert_eq!(f.code, 126);
        assert!(f.message.contains("permission denied"));
        assert_eq!(classify_start_error("cgroup failed", "sh").code, 128);
    }

    #[test]
    fn exec_errors_map_to_docker_codes() {
        let f = classify_exec_error("executable 'nope' not found in $PATH", "nope");
        assert_eq!(f.code, 126);
        assert!(
            f.message
                .starts_with("OCI runtime exec failed: exec failed: ")
        );
        assert!(
            f.message
                .ends_with("exec: \"nope\": executable file not found in $PATH: unknown")
        );
        let f = classify_exec_error("does not have correct permissions", "/etc");
        assert_eq!(f.code, 126);
        assert_eq!(classify_exec_error("cgroup failed", "sh").code, 126);
    }
}
