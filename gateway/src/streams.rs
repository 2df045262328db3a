//! Output streams: `attach` (a hijacked connection, HTTP 101) and `logs`, in Docker's
//! multiplexed framing when the container has no TTY.

use crate::AppState;
use crate::containers::get_container;
use crate::error::ApiError;
use crate::services::{LOGD, call};
use crate::util::{parse_unix_time_param, query_bool, query_bool_or};
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_kit::grpc::TracedChannel;
use berth_proto::containers as cpb;
use berth_proto::containers::containers_client::ContainersClient;
use berth_proto::logs as lpb;
use bytes::{BufMut, Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Docker's stream type bytes in the multiplexed framing (`stdcopy`).
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
/// A "system error" frame: the client stops and prints it.
pub const SYSERR: u8 = 3;

/// One stdcopy frame: stream byte, three zero bytes, big-endian u32 length, payload.
pub fn frame(stream: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + payload.len());
    b.put_u8(stream);
    b.put_bytes(0, 3);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

fn timestamp_prefix(nanos: i64) -> String {
    let t = chrono::DateTime::from_timestamp_nanos(nanos);
    // Docker prints a fixed 9-digit fraction (`2006-01-02T15:04:05.000000000Z07:00`).
    format!("{} ", t.format("%Y-%m-%dT%H:%M:%S%.9fZ"))
}

/// The largest payload of a merged frame: the CLI's demultiplexer starts with a 32 KiB
/// buffer and moves what follows each frame to its front, so per-line frames cost it a
/// 32 KiB copy and a write per line, while frames of this size fit without growing it.
const MERGED_FRAME_MAX: usize = 32 * 1024 - 8;

/// How log entries reach the client.
#[derive(Debug, Clone, Default)]
struct Render {
    /// Docker's fixed 9-digit timestamp before each line (`--timestamps`).
    timestamps: bool,
    /// `--details`: the line's attributes (`k=v,...`), then a space, before each line.
    details: Option<String>,
    /// Raw bytes, no stdcopy frames.
    tty: bool,
    /// Consecutive entries of one stream share a frame (up to [`MERGED_FRAME_MAX`]): the
    /// same bytes per stream for any client, several times faster for a whole-log read.
    /// Followed logs keep a frame per line, which clients that iterate frames expect.
    merge: bool,
}

impl Render {
    /// What attach sends: each line as written.
    fn plain(tty: bool) -> Self {
        Self {
            tty,
            ..Self::default()
        }
    }

    fn prefix(&self, e: &lpb::LogEntry) -> String {
        let mut p = if self.timestamps {
            timestamp_prefix(e.time_unix_nano)
        } else {
            String::new()
        };
        if let Some(d) = &self.details {
            p.push_str(d);
            p.push(' ');
        }
        p
    }
}

/// Renders entries as the client sees them: stdcopy frames, or raw with a TTY.
fn render_entries(out: &mut BytesMut, entries: &[lpb::LogEntry], how: &Render) {
    // (stream byte, offset of the open frame's header) while a frame is open.
    let mut open: Option<(u8, usize)> = None;
    let close = |out: &mut BytesMut, at: usize| {
        let len = (out.len() - at - 8) as u32;
        out[at + 4..at + 8].copy_from_slice(&len.to_be_bytes());
    };
    for e in entries {
        let prefix = how.prefix(e);
        if !how.tty {
            let stream = if e.stream == 2 { STDERR } else { STDOUT };
            let size = prefix.len() + e.line.len();
            let fits = matches!(open, Some((s, at)) if how.merge && s == stream
                && out.len() - at - 8 + size <= MERGED_FRAME_MAX);
            if !fits {
                if let Some((_, at)) = open.take() {
                    close(out, at);
                }
                open = Some((stream, out.len()));
                out.put_u8(stream);
                out.put_bytes(0, 7);
            }
        }
        out.put_slice(prefix.as_bytes());
        out.put_slice(&e.line);
    }
    if let Some((_, at)) = open {
        close(out, at);
    }
}

/// A whole Read batch as one chunk of the response.
fn render_batch(b: &lpb::LogBatch, how: &Render) -> Bytes {
    let mut out = BytesMut::with_capacity(b.entries.iter().map(|e| e.line.len() + 48).sum());
    render_entries(&mut out, &b.entries, how);
    out.freeze()
}

/// The `--details` attributes of a container's lines, as Docker's json-file driver
/// records them: the labels and environment variables its log options name (`labels`,
/// `labels-regex`, `env`, `env-regex`), sorted by key, `k=v` query-escaped, joined by
/// commas. They are fixed at create, so they are derived here rather than stored per line.
fn log_details(spec: &berth_proto::containers::ContainerSpec) -> String {
    let opts: HashMap<String, String> =
        serde_json::from_slice::<serde_json::Value>(&spec.host_config_json)
            .ok()
            .and_then(|hc| hc.pointer("/LogConfig/Config").cloned())
            .and_then(|c| serde_json::from_value(c).ok())
            .unwrap_or_default();
    let env: HashMap<&str, &str> = spec
        .env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let mut attrs: std::collections::BTreeMap<String, String> = Default::default();
    let mut pick = |names: Option<&String>,
                    pattern: Option<&String>,
                    from: &mut dyn Iterator<Item = (&str, &str)>| {
        let names: Vec<&str> = names.map(|n| n.split(',').collect()).unwrap_or_default();
        let re = pattern.and_then(|p| regex::Regex::new(p).ok());
        for (k, v) in from {
            if names.contains(&k) || re.as_ref().is_some_and(|r| r.is_match(k)) {
                attrs.insert(k.to_string(), v.to_string());
            }
        }
    };
    pick(
        opts.get("labels"),
        opts.get("labels-regex"),
        &mut spec.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    pick(
        opts.get("env"),
        opts.get("env-regex"),
        &mut env.iter().map(|(k, v)| (*k, *v)),
    );
    let escape = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    attrs
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Docker's content type for an output stream: raw with a TTY, multiplexed without.
pub fn stream_content_type(tty: bool) -> HeaderValue {
    if tty {
        HeaderValue::from_static("application/vnd.docker.raw-stream")
    } else {
        HeaderValue::from_static("application/vnd.docker.multiplexed-stream")
    }
}

/// `GET /containers/{id}/logs`.
pub async fn logs(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let stdout = query_bool(&q, "stdout");
    let stderr = query_bool(&q, "stderr");
    if !stdout && !stderr {
        return Err(ApiError::bad_request(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let c = get_container(&st, &id).await?;
    let spec = c.spec.clone().unwrap_or_default();
    let details = query_bool(&q, "details").then(|| log_details(&spec));
    let tail = match q.get("tail").map(String::as_str) {
        None | Some("") | Some("all") => -1,
        Some(n) => n
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid tail value: {n}")))?,
    };
    let follow_asked = query_bool(&q, "follow");
    let follow =
        follow_asked && (c.state == "running" || c.state == "paused" || c.state == "restarting");
    let timestamps = query_bool(&q, "timestamps");
    let req = lpb::ReadRequest {
        container_id: spec.id,
        follow,
        tail,
        since_unix_nano: parse_unix_time_param(q.get("since"))?,
        until_unix_nano: parse_unix_time_param(q.get("until"))?,
        stdout,
        stderr,
        live_only: false,
    };
    let mut client = st.services.logs.clone();
    let stream = call(LOGD, client.read(req)).await?;
    let tty = spec.tty;
    let how = std::sync::Arc::new(Render {
        timestamps,
        details,
        tty,
        // A client that asked to follow iterates frames (docker-py's run(stream=True)),
        // whether or not the container still runs.
        merge: !follow_asked,
    });
    let body = futures_util::stream::unfold(Some(stream), move |state| {
        let how = how.clone();
        async move {
            let mut s = state?;
            match s.message().await {
                Ok(Some(b)) => Some((Ok::<_, std::io::Error>(render_batch(&b, &how)), Some(s))),
                Ok(None) => None,
                Err(status) => {
                    let e = ApiError::from_status(LOGD, status);
                    Some((
                        Ok(frame(
                            SYSERR,
                            format!("Error grabbing logs: {}", e.message).as_bytes(),
                        )),
                        None,
                    ))
                }
            }
        }
    });
    let mut resp = (StatusCode::OK, Body::from_stream(body)).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, stream_content_type(tty));
    Ok(resp)
}

/// `POST /containers/{id}/attach?stream=1&stdin=1&stdout=1&stderr=1`. Output comes from
/// logd, followed from the current end, so the CLI's attach-before-start sees every line.
/// Input goes to containerd-svc, which relays it to the shim once the container runs;
/// the detach keys (`detachKeys`, default ctrl-p,ctrl-q) end the attachment.
pub async fn attach(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let c = get_container(&st, &id).await?;
    let spec = c.spec.clone().unwrap_or_default();
    let detach_keys = crate::detach::parse(q.get("detachKeys").map_or("", String::as_str))?;
    let stdout = query_bool_or(&q, "stdout", false);
    let stderr = query_bool_or(&q, "stderr", false);
    let stream_output = query_bool(&q, "stream") && (stdout || stderr);
    // logs=1: everything logged so far first (then the live output when streaming).
    let replay = query_bool(&q, "logs") && (stdout || stderr);
    // Docker ignores stdin=1 for a container created without -i.
    let stream_input = query_bool(&q, "stdin") && spec.open_stdin;
    let stdin_once = serde_json::from_slice::<serde_json::Value>(&spec.config_json)
        .ok()
        .and_then(|v| v.get("StdinOnce").and_then(serde_json::Value::as_bool))
        .unwrap_or(false);
    let tty = spec.tty;

    let read = lpb::ReadRequest {
        container_id: spec.id.clone(),
        follow: stream_output,
        tail: if replay { -1 } else { 0 },
        since_unix_nano: 0,
        until_unix_nano: 0,
        stdout,
        stderr,
        live_only: !replay,
    };
    // Live output only: subscribe before answering, so nothing written after this point
    // is missed. A replay reads from the start whenever it begins: on a hijacked
    // connection, after the switch (as dockerd), so the history does not arrive with
    // the response's headers, where a client reading them buffered would lose it.
    let subscribed_at = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let read_now = (stream_output && !replay) || (replay && !wants_upgrade(&req));
    let follower = if read_now {
        let mut client = st.services.logs.clone();
        Some(call(LOGD, client.read(read.clone())).await?)
    } else {
        None
    };
    let read_after_switch = (replay && follower.is_none()).then_some(read);
    let mut resume = Resume {
        client: st.services.logs.clone(),
        container_id: spec.id.clone(),
        stdout,
        stderr,
        sent: Sent {
            last_time: if replay { 0 } else { subscribed_at },
            ..Default::default()
        },
    };

    if !wants_upgrade(&req) && stream_input {
        return Err(ApiError::bad_request(
            "attaching stdin needs a connection upgrade (Upgrade: tcp)",
        ));
    }
    // Docker's "attach" event, and "detach" when the detach keys end the attachment.
    crate::containers::container_event(&st, &c, "attach", &[]).await;
    if !wants_upgrade(&req) {
        // Old clients: a plain 200 with the raw stream as the body.
        let body = futures_util::stream::unfold(follower, move |state| async move {
            let mut s = state?;
            match s.message().await {
                Ok(Some(b)) => Some((
                    Ok::<_, std::io::Error>(render_batch(&b, &Render::plain(tty))),
                    Some(s),
                )),
                _ => None,
            }
        });
        let mut resp = (StatusCode::OK, Body::from_stream(body)).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, stream_content_type(tty));
        return Ok(resp);
    }

    let on_upgrade = hyper::upgrade::on(&mut req);
    let container_id = spec.id.clone();
    let containers = st.services.containers.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(container = %container_id, "attach upgrade failed: {e}");
                return;
            }
        };
        let (reader, mut io) = tokio::io::split(TokioIo::new(upgraded));
        let mut follower = follower;
        if let Some(r) = read_after_switch {
            let mut client = resume.client.clone();
            match client.read(r).await {
                Ok(s) => follower = Some(s.into_inner()),
                Err(status) => {
                    let msg = ApiError::from_status(LOGD, status).message;
                    let _ = io.write_all(&frame(SYSERR, msg.as_bytes())).await;
                }
            }
        }
        let (input_tx, mut input) = tokio::sync::watch::channel(InputState::Open);
        let input_state = input.clone();
        let mut client_left = false;
        if stream_input {
            let pump = StdinPump {
                containers,
                container_id: container_id.clone(),
                // As dockerd: the detach keys act on a terminal's input only.
                detector: crate::detach::Detector::new(if tty { detach_keys } else { Vec::new() }),
                stdin_once,
            };
            tokio::spawn(pump.run(reader, input_tx));
        } else {
            drop(reader);
        }
        if let Some(mut s) = follower {
            // Completes only on a detach: a pump that ended (or never ran) leaves output on.
            let detached = async move {
                if input
                    .wait_for(|s| *s == InputState::Detached)
                    .await
                    .is_err()
                {
                    std::future::pending::<()>().await;
                }
            };
            tokio::pin!(detached);
            loop {
                let msg = tokio::select! {
                    m = s.message() => m,
                    _ = &mut detached => break,
                };
                match msg {
                    Ok(Some(b)) => {
                        let b = resume.fresh(b);
                        if b.entries.is_empty() {
                            continue;
                        }
                        if io
                            .write_all(&render_batch(&b, &Render::plain(tty)))
                            .await
                            .is_err()
                        {
                            client_left = true;
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        // logd went away (a crash, a restart): follow again from the
                        // last line sent once it is back, so the attached client misses
                        // nothing and sees nothing twice.
                        if let Some(again) = resume.reconnect().await {
                            s = again;
                            continue;
                        }
                        let msg = ApiError::from_status(LOGD, status).message;
                        let _ = io.write_all(&frame(SYSERR, msg.as_bytes())).await;
                        break;
                    }
                }
            }
        } else if stream_input {
            // Input only: the connection lives until the client leaves or detaches.
            let _ = input.wait_for(|s| *s != InputState::Open).await;
            client_left = true;
        }
        let _ = io.flush().await;
        let _ = io.shutdown().await;
        // As Docker: an attachment the client ended (detach keys, or gone while the
        // container still ran) is a "detach"; one the container's exit ended is not.
        if client_left || *input_state.borrow() == InputState::Detached {
            crate::containers::container_event(&st, &c, "detach", &[]).await;
        }
    });
    Ok(upgrade_response(tty))
}

/// How far an attachment's output got: the time of the last line sent and how many sent
/// lines carry that time (a new read from that time repeats them: they are skipped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sent {
    last_time: i64,
    at_last_time: usize,
    /// Lines at `last_time` still to drop from a new read.
    skip: usize,
}

impl Sent {
    /// The entries of `b` not sent yet, noted as sent.
    fn fresh(&mut self, mut b: lpb::LogBatch) -> lpb::LogBatch {
        b.entries.retain(|e| {
            if self.skip > 0 && e.time_unix_nano == self.last_time {
                self.skip -= 1;
                return false;
            }
            true
        });
        for e in &b.entries {
            if e.time_unix_nano == self.last_time {
                self.at_last_time += 1;
            } else if e.time_unix_nano > self.last_time {
                self.last_time = e.time_unix_nano;
                self.at_last_time = 1;
            }
        }
        b
    }

    /// A new read starts at `last_time`: what was sent at that time comes again.
    fn reread(&mut self) {
        self.skip = self.at_last_time;
    }
}

/// Follows an attachment's output again after logd went away (a crash, a restart).
struct Resume {
    client: berth_proto::logs::logs_client::LogsClient<TracedChannel>,
    container_id: String,
    stdout: bool,
    stderr: bool,
    sent: Sent,
}

/// How long an attachment waits for logd to come back.
const LOGD_RETURN_WAIT: Duration = Duration::from_secs(15);

impl Resume {
    fn fresh(&mut self, b: lpb::LogBatch) -> lpb::LogBatch {
        self.sent.fresh(b)
    }

    /// A new follow from the last line sent, once logd answers again (None: it did not
    /// within [`LOGD_RETURN_WAIT`]).
    async fn reconnect(&mut self) -> Option<tonic::Streaming<lpb::LogBatch>> {
        let deadline = tokio::time::Instant::now() + LOGD_RETURN_WAIT;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let r = lpb::ReadRequest {
                container_id: self.container_id.clone(),
                follow: true,
                tail: -1,
                since_unix_nano: self.sent.last_time,
                until_unix_nano: 0,
                stdout: self.stdout,
                stderr: self.stderr,
                live_only: false,
            };
            if let Ok(s) = self.client.read(r).await {
                self.sent.reread();
                return Some(s.into_inner());
            }
        }
        None
    }
}

/// Whether the client asked to hijack the connection (`Upgrade: tcp`), as the CLI does.
pub fn wants_upgrade(req: &Request) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("tcp"))
}

/// The 101 that hands the connection over (the CLI requires exactly 101 and reads the
/// content type on API >= 1.42).
/// `?h=<rows>&w=<columns>` of a resize request.
pub fn resize_query(q: &HashMap<String, String>) -> Result<(u32, u32), ApiError> {
    let dim = |k: &str| -> Result<u32, ApiError> {
        let v = q.get(k).map_or("", String::as_str);
        v.parse::<u32>().map_err(|_| {
            // Docker's wording for a bad dimension.
            ApiError::bad_request(format!("strconv.Atoi: parsing {v:?}: invalid syntax"))
        })
    };
    Ok((dim("h")?, dim("w")?))
}

/// `POST /containers/{id}/resize?h=&w=`: the window size of a TTY container.
pub async fn resize(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (height, width) = resize_query(&q)?;
    let c = get_container(&st, &id).await?;
    let mut client = st.services.containers.clone();
    let req = cpb::ResizeRequest {
        id: c.spec.map(|s| s.id).unwrap_or(id),
        exec_id: String::new(),
        height,
        width,
    };
    call(crate::services::CONTAINERD, client.resize(req)).await?;
    Ok(StatusCode::OK.into_response())
}

pub fn upgrade_response(tty: bool) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    h.insert(header::CONTENT_TYPE, stream_content_type(tty));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(times: &[i64]) -> lpb::LogBatch {
        lpb::LogBatch {
            entries: times
                .iter()
                .enumerate()
                .map(|(i, t)| lpb::LogEntry {
                    line: format!("line {i} at {t}\n").into_bytes().into(),
                    time_unix_nano: *t,
                    stream: 1,
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn times(b: &lpb::LogBatch) -> Vec<i64> {
        b.entries.iter().map(|e| e.time_unix_nano).collect()
    }

    #[test]
    fn a_reread_after_logd_returns_repeats_nothing_and_loses_nothing() {
        let mut sent = Sent {
            last_time: 100,
            ..Default::default()
        };
        assert_eq!(times(&sent.fresh(batch(&[100, 105, 105]))), [100, 105, 105]);
        // logd restarts; the new read starts at 105 and holds a third line at 105 that
        // was never sent, then newer ones.
        sent.reread();
        assert_eq!(times(&sent.fresh(batch(&[105, 105, 105, 107]))), [105, 107]);
        assert_eq!(times(&sent.fresh(batch(&[107, 109]))), [107, 109]);
        // Nothing sent at all before the outage: everything from the subscription on.
        let mut empty = Sent {
            last_time: 50,
            ..Default::default()
        };
        empty.reread();
        assert_eq!(times(&empty.fresh(batch(&[60, 61]))), [60, 61]);
    }

    #[test]
    fn frames_follow_stdcopy() {
        let f = frame(STDERR, b"hi\n");
        assert_eq!(&f[..8], &[2, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(&f[8..], b"hi\n");
    }

    #[test]
    fn timestamps_have_nine_digits() {
        let p = timestamp_prefix(1_700_000_000_000_000_123);
        assert_eq!(p, "2023-11-14T22:13:20.000000123Z ");
    }

    #[test]
    fn entries_render_per_stream() {
        let b = lpb::LogBatch {
            entries: vec![
                lpb::LogEntry {
                    stream: 2,
                    line: Bytes::from_static(b"x\n"),
                    ..Default::default()
                },
                lpb::LogEntry {
                    stream: 1,
                    line: Bytes::from_static(b"yz\n"),
                    time_unix_nano: 1_700_000_000_000_000_123,
                    ..Default::default()
                },
            ],
        };
        let expected = b"\x02\0\0\0\0\0\0\x02x\n\x01\0\0\0\0\0\0\x03yz\n";
        let merged = |tty| Render {
            tty,
            merge: true,
            ..Render::default()
        };
        assert_eq!(&render_batch(&b, &Render::plain(false))[..], expected);
        // Different streams never share a frame.
        assert_eq!(&render_batch(&b, &merged(false))[..], expected);
        assert_eq!(&render_batch(&b, &merged(true))[..], b"x\nyz\n");
        let stamped = render_batch(
            &b,
            &Render {
                timestamps: true,
                details: Some("a=1".into()),
                tty: true,
                merge: false,
            },
        );
        assert!(stamped.ends_with(b"2023-11-14T22:13:20.000000123Z a=1 yz\n"));
    }

    #[test]
    fn details_name_the_chosen_labels_and_env() {
        let spec = berth_proto::containers::ContainerSpec {
            env: vec!["A=1".into(), "B=two words".into(), "SECRET=x".into()],
            labels: [("team", "x/y"), ("app", "web"), ("other", "z")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            host_config_json: serde_json::to_vec(&serde_json::json!({
                "LogConfig": {"Type": "json-file", "Config": {
                    "labels": "team,missing", "labels-regex": "^ap", "env": "B", "env-regex": "^A$"
                }}
            }))
            .unwrap(),
            ..Default::default()
        };
        assert_eq!(log_details(&spec), "A=1,B=two+words,app=web,team=x%2Fy");
        assert_eq!(log_details(&Default::default()), "");
    }

    /// Parses stdcopy frames back into (stream, payload) pairs.
    fn frames_of(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut v = Vec::new();
        while !b.is_empty() {
            let len = u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as usize;
            v.push((b[0], b[8..8 + len].to_vec()));
            b = &b[8 + len..];
        }
        v
    }

    #[test]
    fn merged_frames_keep_streams_apart_and_bounded() {
        let line = vec![b'a'; 999];
        let mut entries: Vec<lpb::LogEntry> = (0..100)
            .map(|_| lpb::LogEntry {
                stream: 1,
                line: [line.as_slice(), b"\n"].concat().into(),
                ..Default::default()
            })
            .collect();
        entries.insert(
            50,
            lpb::LogEntry {
                stream: 2,
                line: Bytes::from_static(b"err\n"),
                ..Default::default()
            },
        );
        let b = lpb::LogBatch { entries };
        let how = Render {
            merge: true,
            ..Render::default()
        };
        let merged = frames_of(&render_batch(&b, &how));
        let single = frames_of(&render_batch(&b, &Render::plain(false)));
        assert_eq!(single.len(), 101);
        // 50 lines of 1000 bytes (32 + 18 to a frame), the stderr line, 50 lines again.
        assert_eq!(
            merged.len(),
            5,
            "{:?}",
            merged.iter().map(|f| f.1.len()).collect::<Vec<_>>()
        );
        assert!(merged.iter().all(|(_, p)| p.len() <= MERGED_FRAME_MAX));
        for stream in [1, 2] {
            let cat = |fs: &[(u8, Vec<u8>)]| -> Vec<u8> {
                fs.iter()
                    .filter(|f| f.0 == stream)
                    .flat_map(|f| f.1.clone())
                    .collect()
            };
            assert_eq!(cat(&merged), cat(&single));
        }
    }
}

/// Where an attached client's input stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputState {
    Open,
    /// The client half-closed or went away: output goes on.
    Ended,
    /// The detach keys were typed: the attachment ends, output too.
    Detached,
}

/// An attached client's input, on its way to the container's stdin.
struct StdinPump {
    containers: ContainersClient<TracedChannel>,
    container_id: String,
    detector: crate::detach::Detector,
    /// Docker's StdinOnce: the client's end of input closes the container's stdin.
    stdin_once: bool,
}

impl StdinPump {
    /// Reads the client until it ends or detaches, and says which in `state`.
    async fn run(
        mut self,
        mut reader: impl tokio::io::AsyncRead + Unpin,
        state: tokio::sync::watch::Sender<InputState>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel::<cpb::AttachInput>(16);
        let first = cpb::AttachInput {
            id: self.container_id.clone(),
            ..Default::default()
        };
        let _ = tx.send(first).await;
        let mut client = self.containers.clone();
        let call = tokio::spawn(async move {
            client
                .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        });
        let mut buf = vec![0u8; 8192];
        let mut client_left = false;
        let mut detached = false;
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    client_left = true;
                    break;
                }
                Ok(n) => n,
            };
            let scanned = self.detector.scan(&buf[..n]);
            if !scanned.forward.is_empty() {
                let m = cpb::AttachInput {
                    stdin: scanned.forward,
                    ..Default::default()
                };
                if tx.send(m).await.is_err() {
                    break;
                }
            }
            if scanned.detached {
                tracing::debug!(container = %self.container_id, "client detached");
                detached = true;
                break;
            }
        }
        if client_left && self.stdin_once {
            let m = cpb::AttachInput {
                close_stdin: true,
                ..Default::default()
            };
            let _ = tx.send(m).await;
        }
        drop(tx);
        match call.await {
            Ok(Err(status)) if client_left => {
                tracing::debug!(container = %self.container_id, error = %status.message(), "stdin relay ended");
            }
            Ok(Err(status)) => {
                tracing::warn!(container = %self.container_id, error = %status.message(), "stdin relay failed");
            }
            _ => {}
        }
        let _ = state.send(if detached {
            InputState::Detached
        } else {
            InputState::Ended
        });
    }
}
