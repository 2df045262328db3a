//! Output lines -> logd, surviving logd restarts.
//!
//! Every line gets the next sequence number of this shim run's session and stays in the
//! unacked queue until logd acks it. When the stream breaks, the forwarder reconnects
//! with backoff, asks logd for the session's cursor, drops what logd already has and
//! resends the rest in order: no line is lost or duplicated. The queue is in memory, so
//! lines survive a logd restart but not a shim crash. When it holds more than
//! [`MAX_PENDING_BYTES`] the forwarder stops reading output, so the container blocks on its
//! pipe (Docker's default "blocking" log mode) instead of the shim growing without bound.

use crate::lines::Piece;
use berth_proto::logs::logs_client::LogsClient;
use berth_proto::logs::{CloseRequest, GetCursorRequest, LogEntry, OpenRequest};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// A piece of output from one stream (1 = stdout, 2 = stderr).
#[derive(Debug)]
pub struct Output {
    pub stream: i32,
    pub piece: Piece,
    pub time_unix_nano: i64,
}

/// How far the container's output has got: pieces read, pieces logd has, and readers
/// still open. Drained once every reader ended and logd has every piece.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drain {
    pub readers_open: usize,
    pub produced: u64,
    pub acked: u64,
}

impl Drain {
    pub fn drained(&self) -> bool {
        self.readers_open == 0 && self.acked >= self.produced
    }
}

/// Where and as what to log.
#[derive(Debug, Clone)]
pub struct LogTarget {
    pub container_id: String,
    pub session: String,
    pub driver: String,
}

/// Unacked bytes above which no more output is taken in.
pub const MAX_PENDING_BYTES: usize = 64 << 20;

const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A lazily connecting channel to a unix socket.
pub fn unix_channel(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    // The URI is a placeholder: the connector dials the socket, at any path length.
    Endpoint::from_static("http://logd.sock")
        .connect_timeout(Duration::from_secs(2))
        .connect_with_connector_lazy(tower::service_fn(move |_: tonic::transport::Uri| {
            std::future::ready(crate::sockpath::connect(&socket).map(hyper_util::rt::TokioIo::new))
        }))
}

struct Forwarder {
    target: LogTarget,
    drain: tokio::sync::watch::Sender<Drain>,
    client: LogsClient<Channel>,
    pending: VecDeque<LogEntry>,
    pending_bytes: usize,
    next_seq: u64,
    input_open: bool,
    opened: bool,
}

impl Forwarder {
    fn accept(&mut self, out: Output) -> LogEntry {
        let e = LogEntry {
            container_id: self.target.container_id.clone(),
            session: self.target.session.clone(),
            seq: self.next_seq,
            stream: out.stream,
            line: out.piece.bytes.into(),
            time_unix_nano: out.time_unix_nano,
            partial: out.piece.partial,
        };
        self.next_seq += 1;
        self.pending_bytes += e.line.len();
        self.pending.push_back(e.clone());
        e
    }

    /// One connection's life: Open (once), GetCursor, resend, then stream until the input
    /// ended and everything is acked (Ok) or the connection broke (Err).
    async fn session(&mut self, rx: &mut mpsc::Receiver<Output>) -> Result<(), String> {
        if !self.opened {
            let req = OpenRequest {
                container_id: self.target.container_id.clone(),
                driver: self.target.driver.clone(),
                options: HashMap::new(),
            };
            tokio::time::timeout(CALL_TIMEOUT, self.client.open(req))
                .await
                .map_err(|_| "Open timed out".to_string())?
                .map_err(|s| format!("Open: {}", s.message()))?;
            self.opened = true;
        }
        let req = GetCursorRequest {
            container_id: self.target.container_id.clone(),
            session: self.target.session.clone(),
        };
        let cursor = tokio::time::timeout(CALL_TIMEOUT, self.client.get_cursor(req))
            .await
            .map_err(|_| "GetCursor timed out".to_string())?
            .map_err(|s| format!("GetCursor: {}", s.message()))?
            .into_inner()
            .seq;
        self.drop_acked(cursor);
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        for e in &self.pending {
            let _ = out_tx.send(e.clone());
        }
        let mut acks = tokio::time::timeout(
            CALL_TIMEOUT,
            self.client.write(UnboundedReceiverStream::new(out_rx)),
        )
        .await
        .map_err(|_| "Write timed out".to_string())?
        .map_err(|s| format!("Write: {}", s.message()))?
        .into_inner();
        loop {
            if !self.input_open && self.pending.is_empty() {
                return Ok(());
            }
            tokio::select! {
                out = rx.recv(), if self.can_take() => match out {
                    Some(out) => {
                        let e = self.accept(out);
                        let _ = out_tx.send(e);
                    }
                    None => self.input_open = false,
                },
                ack = acks.message() => match ack {
                    Ok(Some(ack)) => self.drop_acked(ack.seq),
                    Ok(None) => return Err("logd ended the write stream".into()),
                    Err(s) => return Err(format!("Write stream: {}", s.message())),
                },
            }
        }
    }

    fn drop_acked(&mut self, upto: u64) {
        self.drain.send_modify(|d| d.acked = d.acked.max(upto));
        while let Some(e) = self.pending.front() {
            if e.seq > upto {
                break;
            }
            self.pending_bytes -= e.line.len();
            self.pending.pop_front();
        }
    }

    fn can_take(&self) -> bool {
        self.input_open && self.pending_bytes < MAX_PENDING_BYTES
    }

    async fn close(&mut self) -> Result<(), String> {
        let req = CloseRequest {
            container_id: self.target.container_id.clone(),
            session: self.target.session.clone(),
        };
        tokio::time::timeout(CALL_TIMEOUT, self.client.close(req))
            .await
            .map_err(|_| "Close timed out".to_string())?
            .map_err(|s| format!("Close: {}", s.message()))?;
        Ok(())
    }

    /// Sleeps `d` while still queueing new output, so the container never blocks on a
    /// full pipe while logd is away.
    async fn backoff(&mut self, rx: &mut mpsc::Receiver<Output>, d: Duration) {
        let sleep = tokio::time::sleep(d);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return,
                out = rx.recv(), if self.can_take() => match out {
                    Some(out) => { self.accept(out); }
                    None => self.input_open = false,
                },
            }
        }
    }
}

/// Runs until all output was delivered and the log closed; `drain` learns each ack
/// (the sequence numbers count pieces from 1).
pub async fn forward(
    target: LogTarget,
    channel: Channel,
    mut rx: mpsc::Receiver<Output>,
    drain: tokio::sync::watch::Sender<Drain>,
) {
    let mut f = Forwarder {
        target,
        drain,
        client: LogsClient::new(channel),
        pending: VecDeque::new(),
        pending_bytes: 0,
        next_seq: 1,
        input_open: true,
        opened: false,
    };
    let mut delay = Duration::from_millis(100);
    loop {
        match f.session(&mut rx).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, unacked = f.pending.len(), "logd unreachable, retrying");
                f.backoff(&mut rx, delay).await;
                delay = (delay * 2).min(MAX_BACKOFF);
            }
        }
    }
    delay = Duration::from_millis(100);
    while let Err(e) = f.close().await {
        tracing::warn!(error = %e, "closing the log failed, retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_BACKOFF);
    }
    tracing::debug!("log closed");
}
