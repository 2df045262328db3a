//! `docker exec`: create, start (a hijacked connection in Docker's multiplexed framing,
//! stdin forwarded), inspect and resize. containerd-svc keeps the exec records and runs
//! the process through the container's shim; TTY execs are not built yet.

use crate::AppState;
use crate::error::ApiError;
use crate::services::{CONTAINERD, call};
use crate::streams::{STDERR, STDOUT, frame, stream_content_type, upgrade_response, wants_upgrade};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_proto::containers as cpb;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::HashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// A field of a request object, matched as dockerd's Go decoder matches it: exactly, or
/// else ignoring case (docker-py sends `detachKeys`).
fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).or_else(|| {
        v.as_object()?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, x)| x)
    })
}

fn bool_field(v: &Value, key: &str) -> bool {
    field(v, key).and_then(Value::as_bool).unwrap_or(false)
}

fn str_field(v: &Value, key: &str) -> String {
    field(v, key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn strings_field(v: &Value, key: &str) -> Vec<String> {
    match field(v, key) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("invalid JSON: expected an object"));
    }
    Ok(v)
}

/// The exec config of a create request; refuses what Berth cannot do yet.
pub fn exec_config(v: &Value) -> Result<cpb::ExecConfig, ApiError> {
    let cmd = strings_field(v, "Cmd");
    if cmd.is_empty() {
        // Docker's wording.
        return Err(ApiError::bad_request("No exec command specified"));
    }
    Ok(cpb::ExecConfig {
        cmd,
        env: strings_field(v, "Env"),
        working_dir: str_field(v, "WorkingDir"),
        user: str_field(v, "User"),
        privileged: bool_field(v, "Privileged"),
        tty: bool_field(v, "Tty"),
        attach_stdin: bool_field(v, "AttachStdin"),
        attach_stdout: bool_field(v, "AttachStdout"),
        attach_stderr: bool_field(v, "AttachStderr"),
        detach_keys: str_field(v, "DetachKeys"),
    })
}

/// `POST /containers/{id}/exec` → 201 `{"Id": ...}`.
pub async fn create(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let config = exec_config(&parse_body(&body)?)?;
    // containerd-svc journals the exec_create event with the exec's own.
    let mut c = st.services.containers.clone();
    let r = call(
        CONTAINERD,
        c.exec_create(cpb::ExecCreateRequest {
            container_id: id.clone(),
            config: Some(config),
        }),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(json!({ "Id": r.id }))).into_response())
}

/// Docker's exec inspect JSON.
pub fn inspect_json(e: &cpb::ExecInfo) -> Value {
    let cfg = e.config.clone().unwrap_or_default();
    let (entrypoint, arguments) = match cfg.cmd.split_first() {
        Some((first, rest)) => (first.clone(), rest.to_vec()),
        None => (String::new(), Vec::new()),
    };
    json!({
        "ID": e.id,
        "Running": e.running,
        "ExitCode": if e.exited { json!(e.exit_code) } else { Value::Null },
        "ProcessConfig": {
            "tty": cfg.tty,
            "entrypoint": entrypoint,
            "arguments": arguments,
            "privileged": cfg.privileged,
            "user": cfg.user,
        },
        "OpenStdin": cfg.attach_stdin,
        "OpenStderr": cfg.attach_stderr,
        "OpenStdout": cfg.attach_stdout,
        "CanRemove": false,
        "ContainerID": e.container_id,
        "DetachKeys": "",
        "Pid": e.pid,
    })
}

/// `GET /exec/{id}/json`.
pub async fn inspect(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut c = st.services.containers.clone();
    let e = call(CONTAINERD, c.exec_inspect(cpb::ExecInspectRequest { id })).await?;
    Ok(Json(inspect_json(&e)))
}

/// `POST /exec/{id}/resize?h=&w=`: the window size of a TTY exec.
pub async fn resize(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (height, width) = crate::streams::resize_query(&q)?;
    let mut c = st.services.containers.clone();
    let req = cpb::ResizeRequest {
        id: String::new(),
        exec_id: id,
        height,
        width,
    };
    call(CONTAINERD, c.resize(req)).await?;
    Ok(StatusCode::OK.into_response())
}

/// One output message as the client reads it: Docker's multiplexed framing, or the raw
/// bytes of a terminal (the start error, like moby, as text ending in "\r\n" on stdout).
pub fn render_output(o: &cpb::ExecStartOutput, tty: bool) -> Bytes {
    let mut out = Vec::new();
    let mut put = |stream: u8, data: &[u8]| {
        if tty {
            out.extend_from_slice(data);
        } else {
            out.extend_from_slice(&frame(stream, data));
        }
    };
    if !o.data.is_empty() {
        put(if o.stream == 2 { STDERR } else { STDOUT }, &o.data);
    }
    if !o.error.is_empty() {
        put(STDOUT, format!("{}\r\n", o.error).as_bytes());
    }
    Bytes::from(out)
}

/// `POST /exec/{id}/start`: `{"Detach": true}` answers 200 and the process runs on;
/// otherwise the connection is hijacked (101), output is framed as stdcopy and the
/// client's input is the process's stdin (closed when the client half-closes).
pub async fn start(
    State(st): State<AppState>,
    Path(id): Path<String>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let body = axum::body::to_bytes(std::mem::take(req.body_mut()), 1 << 20)
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
    let v = parse_body(&body)?;
    let detach = bool_field(&v, "Detach");
    // The output is framed unless the *start* request says Tty, as dockerd decides it
    // (docker-py starts a terminal exec without it and reads frames of the pty's bytes).
    let tty = bool_field(&v, "Tty");
    let size = |i: usize| {
        v.get("ConsoleSize")
            .and_then(|s| s.get(i))
            .and_then(Value::as_u64)
            .map_or(0, |n| n.min(u32::MAX as u64) as u32)
    };
    let opening = cpb::ExecStartInput {
        exec_id: id.clone(),
        detach,
        console_height: size(0),
        console_width: size(1),
        ..Default::default()
    };
    let (in_tx, in_rx) = mpsc::channel::<cpb::ExecStartInput>(16);
    let _ = in_tx.send(opening).await;
    let mut c = st.services.containers.clone();

    if detach || !wants_upgrade(&req) {
        let mut stream = call(
            CONTAINERD,
            c.exec_start(tokio_stream::wrappers::ReceiverStream::new(in_rx)),
        )
        .await?;
        // The first message says the process started (or could not: it then carries
        // the error); a refusal (no such exec, container stopped) is a status instead.
        let first = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return Err(ApiError::internal("the exec stream ended at once")),
            Err(s) => return Err(ApiError::from_status(CONTAINERD, s)),
        };
        if detach {
            if !first.error.is_empty() {
                return Err(ApiError::internal(first.error));
            }
            return Ok(StatusCode::OK.into_response());
        }
        // Old clients: a plain 200 with the framed output as the body.
        let body = futures_util::stream::unfold(
            (Some(first), Some(stream)),
            move |(pending, state)| async move {
                if let Some(o) = pending {
                    return Some((
                        Ok::<_, std::io::Error>(render_output(&o, tty)),
                        (None, state),
                    ));
                }
                let mut s = state?;
                match s.message().await {
                    Ok(Some(o)) => Some((Ok(render_output(&o, tty)), (None, Some(s)))),
                    _ => None,
                }
            },
        );
        let body = Body::from_stream(body);
        let mut resp = (StatusCode::OK, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, stream_content_type(tty));
        return Ok(resp);
    }

    // Hijacked: as dockerd, the connection is switched before the process starts, so no
    // output can arrive together with the response's headers (a client that reads them
    // through a buffered reader and then takes the raw socket, as docker-py does, would
    // lose it). An unknown exec is still a 404 before the switch.
    let info = call(
        CONTAINERD,
        c.exec_inspect(cpb::ExecInspectRequest { id: id.clone() }),
    )
    .await?;
    let cfg = info.config.unwrap_or_default();
    // As dockerd: the detach keys act on a terminal's input only (piped input passes
    // through whole).
    let detector = if cfg.tty && cfg.attach_stdin {
        Some(crate::detach::Detector::new(crate::detach::parse(
            &cfg.detach_keys,
        )?))
    } else {
        None
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(exec = %id, "exec upgrade failed: {e}");
                return;
            }
        };
        let (rd, mut wr) = tokio::io::split(TokioIo::new(upgraded));
        // Under the same deadline as every call: a silent containerd-svc must not hold
        // the client's connection for ever.
        let started = call(
            CONTAINERD,
            c.exec_start(tokio_stream::wrappers::ReceiverStream::new(in_rx)),
        )
        .await;
        let mut stream = match started {
            Ok(s) => s,
            Err(e) => {
                let _ = wr.write_all(&render_error(&e.message, tty)).await;
                let _ = wr.shutdown().await;
                return;
            }
        };
        let (detached_tx, detached) = tokio::sync::oneshot::channel::<()>();
        let mut stdin = tokio::spawn(forward_stdin(rd, in_tx, detector, detached_tx));
        let detached = tokio::select! {
            () = relay_output(&mut stream, &mut wr, tty) => false,
            Ok(()) = detached => true,
        };
        let _ = wr.flush().await;
        let _ = wr.shutdown().await;
        if detached {
            // The connection ends; the process runs on with its stdin open (as dockerd),
            // its output read and dropped until it exits.
            let keep = (&mut stdin).await.ok().flatten();
            tokio::spawn(async move {
                let _stdin = keep;
                while let Ok(Some(_)) = stream.message().await {}
            });
        } else {
            stdin.abort();
        }
    });
    Ok(upgrade_response(tty))
}

/// The client's bytes become the process's stdin until it half-closes (or goes away), or
/// types the detach keys (`detector`): then `detached` is told and the stdin stays open.
async fn forward_stdin(
    mut rd: tokio::io::ReadHalf<TokioIo<hyper::upgrade::Upgraded>>,
    in_tx: mpsc::Sender<cpb::ExecStartInput>,
    mut detector: Option<crate::detach::Detector>,
    detached: tokio::sync::oneshot::Sender<()>,
) -> Option<mpsc::Sender<cpb::ExecStartInput>> {
    let mut buf = vec![0u8; 32 * 1024];
    let mut detached = Some(detached);
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = in_tx
                    .send(cpb::ExecStartInput {
                        close_stdin: true,
                        ..Default::default()
                    })
                    .await;
                break;
            }
            Ok(n) => {
                let (stdin, detaching) = match detector.as_mut() {
                    Some(d) => {
                        let s = d.scan(&buf[..n]);
                        (s.forward, s.detached)
                    }
                    None => (buf[..n].to_vec(), false),
                };
                if !stdin.is_empty() {
                    let m = cpb::ExecStartInput {
                        stdin,
                        ..Default::default()
                    };
                    if in_tx.send(m).await.is_err() {
                        break;
                    }
                }
                if detaching {
                    if let Some(tx) = detached.take() {
                        let _ = tx.send(());
                    }
                    return Some(in_tx);
                }
            }
        }
    }
    // Keep the read half (and the request stream) until the output is done; the task
    // is aborted then.
    let _keep = (rd, in_tx);
    std::future::pending().await
}

/// The process's output to the client until it exits, the stream ends or the client
/// goes away.
async fn relay_output(
    stream: &mut tonic::Streaming<cpb::ExecStartOutput>,
    wr: &mut (impl tokio::io::AsyncWrite + Unpin),
    tty: bool,
) {
    loop {
        let o = match stream.message().await {
            Ok(Some(o)) => o,
            Ok(None) => break,
            Err(status) => {
                let msg = ApiError::from_status(CONTAINERD, status).message;
                let _ = wr.write_all(&render_error(&msg, tty)).await;
                break;
            }
        };
        if wr.write_all(&render_output(&o, tty)).await.is_err() || o.exited {
            break;
        }
    }
}

/// An error after the switch, as text on stdout (moby writes it into the stream).
fn render_error(msg: &str, tty: bool) -> Bytes {
    render_output(
        &cpb::ExecStartOutput {
            error: msg.to_string(),
            ..Default::default()
        },
        tty,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_maps_to_config() {
        let v = json!({"Cmd": ["sh", "-c", "x"], "Env": ["A=1"], "WorkingDir": "/tmp",
            "User": "1000", "AttachStdin": true, "AttachStdout": true, "Tty": false});
        let c = exec_config(&v).unwrap();
        assert_eq!(c.cmd, vec!["sh", "-c", "x"]);
        assert_eq!(c.env, vec!["A=1"]);
        assert_eq!((c.working_dir.as_str(), c.user.as_str()), ("/tmp", "1000"));
        assert!(c.attach_stdin && c.attach_stdout && !c.attach_stderr);
        assert!(!c.tty);
        // Any case, as dockerd's decoder (docker-py sends detachKeys).
        let c = exec_config(&json!({"cmd": ["true"], "detachKeys": "ctrl-p"})).unwrap();
        assert_eq!(
            (c.cmd.as_slice(), c.detach_keys.as_str()),
            (&["true".to_string()][..], "ctrl-p")
        );
        assert!(
            exec_config(&json!({"Cmd": ["sh"], "Tty": true}))
                .unwrap()
                .tty
        );
        let e = exec_config(&json!({"Cmd": null})).unwrap_err();
        assert_eq!(e.status, 400);
    }

    #[test]
    fn inspect_has_docker_fields() {
        let mut e = cpb::ExecInfo {
            id: "e".into(),
            container_id: "c".into(),
            config: Some(cpb::ExecConfig {
                cmd: vec!["sh".into(), "-c".into(), "exit 3".into()],
                ..Default::default()
            }),
            running: true,
            ..Default::default()
        };
        let v = inspect_json(&e);
        assert!(v["ExitCode"].is_null());
        assert_eq!(v["ProcessConfig"]["entrypoint"], "sh");
        assert_eq!(v["ProcessConfig"]["arguments"], json!(["-c", "exit 3"]));
        assert_eq!(v["CanRemove"], false);
        assert_eq!(v["DetachKeys"], "");
        e.running = false;
        e.exited = true;
        e.exit_code = 3;
        assert_eq!(inspect_json(&e)["ExitCode"], 3);
    }

    #[test]
    fn output_is_framed_and_errors_go_to_stdout() {
        let o = cpb::ExecStartOutput {
            stream: 2,
            data: b"e".to_vec(),
            ..Default::default()
        };
        assert_eq!(render_output(&o, false)[0], STDERR);
        assert_eq!(&render_output(&o, true)[..], &o.data[..]);
        let o = cpb::ExecStartOutput {
            exited: true,
            error: "boom".into(),
            ..Default::default()
        };
        let f = render_output(&o, false);
        assert_eq!(f[0], STDOUT);
        assert_eq!(&f[8..], b"boom\r\n");
    }
}
