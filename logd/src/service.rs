//! The Logs gRPC service: durable ingestion, reads, follows.

use crate::error::LogError;
use crate::format;
use crate::store;
use berth_proto::logs::logs_server::Logs;
use berth_proto::logs::{
    CloseRequest, CloseResponse, GetCursorRequest, GetCursorResponse, LogEntry, OpenRequest,
    OpenResponse, ReadRequest, RemoveRequest, RemoveResponse, WriteAck,
};
use futures_util::{FutureExt, StreamExt};
use sqlx::SqlitePool;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Most entries taken from a Write stream into one batch (one fsync, one commit).
const MAX_BATCH_ENTRIES: usize = 4096;
/// Most line bytes in one batch.
const MAX_BATCH_BYTES: usize = 4 << 20;
/// Bytes read per step by a reader.
const READ_CHUNK: usize = 256 * 1024;

/// A logging driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// Docker's json-file format on disk.
    JsonFile,
    /// Lines are accepted and dropped.
    None,
}

impl Driver {
    /// Parses a driver name; empty means the default, json-file.
    pub fn parse(name: &str) -> Result<Self, LogError> {
        match name {
            "" | "json-file" => Ok(Self::JsonFile),
            "none" => Ok(Self::None),
            other => Err(LogError::UnknownDriver(other.to_string())),
        }
    }

    /// The name Docker uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::JsonFile => "json-file",
            Self::None => "none",
        }
    }
}

/// What followers watch: how far the file is durable, and whether more may come.
#[derive(Debug, Clone, Copy)]
struct LogState {
    driver: Driver,
    committed: u64,
    live: bool,
    removed: bool,
}

/// The writer side of one container's log, serialised by a tokio mutex because a batch
/// must write the file, fsync and commit its cursor before the next batch starts (else a
/// later batch could commit a size covering bytes of an earlier one not yet durable).
struct Writer {
    file: Option<Arc<File>>,
    cursors: HashMap<String, u64>,
    size: u64,
    removed: bool,
}

struct ContainerLog {
    id: String,
    path: PathBuf,
    writer: tokio::sync::Mutex<Writer>,
    state: watch::Sender<LogState>,
}

struct Inner {
    pool: SqlitePool,
    /// `<data-root>/logd`.
    root: PathBuf,
    logs: Mutex<HashMap<String, Arc<ContainerLog>>>,
    /// Serialises Open and Remove (they create and delete files and records).
    lifecycle: tokio::sync::Mutex<()>,
    shutdown: watch::Sender<bool>,
}

/// The logd service. Cheap to clone.
#[derive(Clone)]
pub struct LogService {
    inner: Arc<Inner>,
}

impl LogService {
    /// Loads every record and reconciles it with the disk before serving: a log file
    /// longer than its committed size is cut back (those bytes were never acknowledged,
    /// and their shim will resend them), a missing one is re-created empty. Live flags
    /// are kept: the shim closes its log itself.
    pub async fn start(pool: SqlitePool, root: PathBuf) -> Result<Self, LogError> {
        let mut logs = HashMap::new();
        for rec in store::all_logs(&pool).await? {
            let driver = Driver::parse(&rec.driver)?;
            let path = PathBuf::from(&rec.log_path);
            let committed = u64::try_from(rec.committed_size).unwrap_or(0);
            let (file, size) = if driver == Driver::JsonFile {
                let (file, size) = reconcile_file(path.clone(), committed).await?;
                if size != committed {
                    store::set_committed_size(&pool, &rec.container_id, size).await?;
                }
                (Some(file), size)
            } else {
                (None, 0)
            };
            let cursors = store::cursors(&pool, &rec.container_id)
                .await?
                .into_iter()
                .map(|(s, q)| (s, u64::try_from(q).unwrap_or(0)))
                .collect();
            let (state, _) = watch::channel(LogState {
                driver,
                committed: size,
                live: rec.live,
                removed: false,
            });
            let log = ContainerLog {
                id: rec.container_id.clone(),
                path,
                writer: tokio::sync::Mutex::new(Writer {
                    file,
                    cursors,
                    size,
                    removed: false,
                }),
                state,
            };
            logs.insert(rec.container_id, Arc::new(log));
        }
        tracing::info!(logs = logs.len(), "reconciled container logs");
        let (shutdown, _) = watch::channel(false);
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                root,
                logs: Mutex::new(logs),
                lifecycle: tokio::sync::Mutex::new(()),
                shutdown,
            }),
        })
    }

    /// Ends every follow and Write stream so the server can drain and exit.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    fn get(&self, id: &str) -> Option<Arc<ContainerLog>> {
        self.inner
            .logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.inner
            .root
            .join("containers")
            .join(id)
            .join(format!("{id}-json.log"))
    }

    /// Prepares the log (idempotent) and marks it live. Returns the log path ("" for
    /// the none driver, as Docker reports it). Re-opening with an empty driver or empty
    /// options keeps the recorded ones.
    #[tracing::instrument(name = "log.open", skip_all, fields(container.id = id, log.driver = driver))]
    pub async fn open(
        &self,
        id: &str,
        driver: &str,
        options: &HashMap<String, String>,
    ) -> Result<String, LogError> {
        check_id(id)?;
        let requested = Driver::parse(driver)?;
        let _guard = self.inner.lifecycle.lock().await;
        let existing = self.get(id);
        // The shim re-opens without knowing the options, maybe without the driver: an
        // unnamed driver keeps the one the log already has.
        let driver = match &existing {
            Some(log) if driver.is_empty() => log.state.borrow().driver,
            _ => requested,
        };
        let path = self.log_path(id);
        let shown_path = match driver {
            Driver::JsonFile => path.display().to_string(),
            Driver::None => String::new(),
        };
        // A json-file log whose size the database does not know yet starts empty.
        let file = match (driver, &existing) {
            // No record: anything on disk is a leftover of a failed Open.
            (Driver::JsonFile, None) => Some(create_file(path.clone(), true).await?),
            _ => None,
        };
        let opts = serde_json::to_string(options).unwrap_or_else(|_| "{}".to_string());
        store::upsert_open(&self.inner.pool, id, driver.name(), &shown_path, &opts).await?;
        let log = match existing {
            Some(log) => {
                let mut w = log.writer.lock().await;
                if driver == Driver::None {
                    w.file = None;
                } else if w.file.is_none() {
                    // Switched from "none": keep whatever is on disk up to its size.
                    let (f, size) = reconcile_file(path.clone(), w.size).await?;
                    w.file = Some(f);
                    w.size = size;
                }
                drop(w);
                log
            }
            None => {
                let (state, _) = watch::channel(LogState {
                    driver,
                    committed: 0,
                    live: true,
                    removed: false,
                });
                let log = Arc::new(ContainerLog {
                    id: id.to_string(),
                    path,
                    writer: tokio::sync::Mutex::new(Writer {
                        file,
                        cursors: HashMap::new(),
                        size: 0,
                        removed: false,
                    }),
                    state,
                });
                self.inner
                    .logs
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(id.to_string(), log.clone());
                log
            }
        };
        log.state.send_modify(|s| {
            s.driver = driver;
            s.live = true;
        });
        Ok(shown_path)
    }

    /// Marks the log not live: followers drain what is stored and finish. Missing is
    /// success (the container may already be removed).
    pub async fn close(&self, id: &str) -> Result<(), LogError> {
        let Some(log) = self.get(id) else {
            return Ok(());
        };
        store::set_live(&self.inner.pool, id, false).await?;
        log.state.send_modify(|s| s.live = false);
        Ok(())
    }

    /// The highest stored seq of (container, session); 0 when none (or no such log).
    pub async fn cursor(&self, id: &str, session: &str) -> u64 {
        match self.get(id) {
            Some(log) => log
                .writer
                .lock()
                .await
                .cursors
                .get(session)
                .copied()
                .unwrap_or(0),
            None => 0,
        }
    }

    /// Deletes the file and the records, and ends followers. Missing is success.
    pub async fn remove(&self, id: &str) -> Result<(), LogError> {
        check_id(id)?;
        let _guard = self.inner.lifecycle.lock().await;
        let log = self
            .inner
            .logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        if let Some(log) = &log {
            // Waits for an in-flight batch, and stops later ones touching the file.
            let mut w = log.writer.lock().await;
            w.removed = true;
            w.file = None;
        }
        let dir = self.inner.root.join("containers").join(id);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LogError::io(format!("removing {}", dir.display()), e)),
        }
        store::delete(&self.inner.pool, id).await?;
        if let Some(log) = log {
            log.state.send_modify(|s| s.removed = true);
        }
        Ok(())
    }

    /// Stores a batch of entries durably and returns one ack per entry (in order).
    /// Entries at or below their session's cursor, of a "none" log, or of an unknown
    /// (removed) container are acknowledged and dropped.
    pub async fn write_batch(&self, batch: Vec<LogEntry>) -> Result<Vec<WriteAck>, LogError> {
        let acks = batch
            .iter()
            .map(|e| WriteAck {
                container_id: e.container_id.clone(),
                session: e.session.clone(),
                seq: e.seq,
            })
            .collect();
        // Group by container keeping order; a shim's stream carries one container.
        let mut groups: Vec<(String, Vec<LogEntry>)> = Vec::new();
        for e in batch {
            match groups.iter_mut().find(|(id, _)| *id == e.container_id) {
                Some((_, v)) => v.push(e),
                None => groups.push((e.container_id.clone(), vec![e])),
            }
        }
        for (id, entries) in groups {
            match self.get(&id) {
                Some(log) => self.append(&log, entries).await?,
                None => {
                    tracing::warn!(container = %id, "dropping log lines of an unknown container")
                }
            }
        }
        Ok(acks)
    }

    async fn append(&self, log: &ContainerLog, entries: Vec<LogEntry>) -> Result<(), LogError> {
        let mut w = log.writer.lock().await;
        if w.removed {
            return Ok(());
        }
        let Some(file) = w.file.clone() else {
            // The none driver.
            return Ok(());
        };
        let mut new_cursors: HashMap<String, u64> = HashMap::new();
        let mut buf = Vec::new();
        let mut counted = [(0u64, 0u64); 2];
        for e in entries {
            let cur = new_cursors
                .get(&e.session)
                .or_else(|| w.cursors.get(&e.session))
                .copied()
                .unwrap_or(0);
            if e.seq <= cur {
                continue;
            }
            let time = if e.time_unix_nano == 0 {
                chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
            } else {
                e.time_unix_nano
            };
            buf.extend_from_slice(&format::encode(&e.line, e.stream, time));
            let c = &mut counted[usize::from(e.stream == 2)];
            c.0 += 1;
            c.1 += e.line.len() as u64;
            new_cursors.insert(e.session, e.seq);
        }
        if new_cursors.is_empty() {
            return Ok(());
        }
        let offset = w.size;
        let len = buf.len() as u64;
        let path = log.path.clone();
        // Written at the committed size (not appended): bytes of a batch that failed
        // before its commit are simply overwritten.
        tokio::task::spawn_blocking(move || {
            file.write_all_at(&buf, offset)?;
            file.sync_data()
        })
        .await
        .map_err(|e| {
            LogError::io(
                format!("writing {}", path.display()),
                std::io::Error::other(e),
            )
        })?
        .map_err(|e| LogError::io(format!("writing {}", path.display()), e))?;
        let size = offset + len;
        let list: Vec<(String, u64)> = new_cursors.into_iter().collect();
        store::commit_batch(&self.inner.pool, &log.id, size, &list).await?;
        w.size = size;
        w.cursors.extend(list);
        drop(w);
        for (stream, (lines, bytes)) in ["stdout", "stderr"].into_iter().zip(counted) {
            crate::metrics::written(stream, lines, bytes);
        }
        log.state.send_modify(|s| s.committed = size);
        Ok(())
    }

    /// Starts a reader: sends matching entries into the returned channel, following the
    /// log if asked.
    pub async fn read(
        &self,
        req: ReadRequest,
    ) -> Result<mpsc::Receiver<Result<LogEntry, Status>>, LogError> {
        let id = req.container_id.clone();
        let log = self
            .get(&id)
            .ok_or_else(|| LogError::NotFound(id.clone()))?;
        if !req.stdout && !req.stderr {
            return Err(LogError::NoStream);
        }
        let mut state_rx = log.state.subscribe();
        let state = *state_rx.borrow_and_update();
        if state.driver == Driver::None {
            return Err(LogError::ReadUnsupported);
        }
        let file = open_read(log.path.clone()).await?;
        let start = if req.tail < 0 {
            0
        } else {
            let f = file.clone();
            let n = req.tail.unsigned_abs();
            let end = state.committed;
            tokio::task::spawn_blocking(move || format::tail_offset(&f, end, n))
                .await
                .map_err(|e| LogError::io("seeking log tail", std::io::Error::other(e)))?
                .map_err(|e| LogError::io(format!("seeking {}", log.path.display()), e))?
        };
        let (tx, rx) = mpsc::channel(256);
        let shutdown = self.inner.shutdown.subscribe();
        tokio::spawn(follow(
            FollowCtx {
                id,
                file,
                req,
                state_rx,
                shutdown,
                tx,
            },
            start,
        ));
        Ok(rx)
    }
}

struct FollowCtx {
    id: String,
    file: Arc<File>,
    req: ReadRequest,
    state_rx: watch::Receiver<LogState>,
    shutdown: watch::Receiver<bool>,
    tx: mpsc::Sender<Result<LogEntry, Status>>,
}

/// Sends lines from `offset` up to the committed size; with follow, waits for more until
/// the log is closed, removed, `until` passes, the client goes away or logd stops.
async fn follow(mut cx: FollowCtx, mut offset: u64) {
    let since = cx.req.since_unix_nano;
    let until = cx.req.until_unix_nano;
    loop {
        let state = *cx.state_rx.borrow_and_update();
        while offset < state.committed {
            let f = cx.file.clone();
            let end = state.committed;
            let res = tokio::task::spawn_blocking(move || {
                format::read_lines(&f, offset, end, READ_CHUNK)
            })
            .await;
            let (lines, next) = match res {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    let _ = cx
                        .tx
                        .send(Err(Status::internal(format!("reading log: {e}"))))
                        .await;
                    return;
                }
                Err(e) => {
                    let _ = cx
                        .tx
                        .send(Err(Status::internal(format!("reading log: {e}"))))
                        .await;
                    return;
                }
            };
            offset = next;
            for l in lines {
                if until > 0 && l.time_unix_nano > until {
                    if cx.req.follow {
                        return;
                    }
                    continue;
                }
                if since > 0 && l.time_unix_nano < since {
                    continue;
                }
                let wanted = match l.stream {
                    format::STDERR => cx.req.stderr,
                    _ => cx.req.stdout,
                };
                if !wanted {
                    continue;
                }
                let entry = LogEntry {
                    container_id: cx.id.clone(),
                    session: String::new(),
                    seq: 0,
                    stream: l.stream,
                    line: l.line,
                    time_unix_nano: l.time_unix_nano,
                    partial: l.partial,
                };
                if cx.tx.send(Ok(entry)).await.is_err() {
                    return;
                }
            }
        }
        if !cx.req.follow || state.removed || !state.live {
            return;
        }
        if *cx.shutdown.borrow() {
            // Not the end of the log: tell the reader to come back after the restart.
            let _ = cx
                .tx
                .send(Err(Status::unavailable("logd is shutting down")))
                .await;
            return;
        }
        let until_passed = async {
            if until > 0 {
                let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
                let wait = u64::try_from(until.saturating_sub(now)).unwrap_or(0);
                tokio::time::sleep(Duration::from_nanos(wait)).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            changed = cx.state_rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = cx.shutdown.changed() => {
                let _ = cx.tx.send(Err(Status::unavailable("logd is shutting down"))).await;
                return;
            }
            _ = cx.tx.closed() => return,
            _ = until_passed => return,
        }
    }
}

fn check_id(id: &str) -> Result<(), LogError> {
    if id.is_empty() || id == "." || id == ".." || id.contains('/') || id.contains('\0') {
        return Err(LogError::InvalidId(id.to_string()));
    }
    Ok(())
}

/// Creates the log's directory and empty file (if missing), durably.
async fn create_file(path: PathBuf, truncate: bool) -> Result<Arc<File>, LogError> {
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || -> std::io::Result<Arc<File>> {
        let dir = path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir)?;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(truncate)
            .open(&path)?;
        f.sync_all()?;
        File::open(dir)?.sync_all()?;
        Ok(Arc::new(f))
    })
    .await
    .map_err(|e| LogError::io(format!("creating {shown}"), std::io::Error::other(e)))?
    .map_err(|e| LogError::io(format!("creating {shown}"), e))
}

/// Opens a json-file log at start-up: bytes past the committed size were never acked
/// and are cut off; a file shorter than recorded (lost outside logd's control) is taken
/// as it is. Returns the file and its agreed size.
async fn reconcile_file(path: PathBuf, committed: u64) -> Result<(Arc<File>, u64), LogError> {
    let file = create_file(path.clone(), false).await?;
    let f = file.clone();
    let shown = path.display().to_string();
    let size = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        let len = f.metadata()?.len();
        if len > committed {
            tracing::info!(path = %path.display(), len, committed, "cutting unacknowledged log tail");
            f.set_len(committed)?;
            f.sync_all()?;
            Ok(committed)
        } else {
            if len < committed {
                tracing::warn!(path = %path.display(), len, committed, "log file shorter than recorded");
            }
            Ok(len)
        }
    })
    .await
    .map_err(|e| LogError::io(format!("reconciling {shown}"), std::io::Error::other(e)))?
    .map_err(|e| LogError::io(format!("reconciling {shown}"), e))?;
    Ok((file, size))
}

async fn open_read(path: PathBuf) -> Result<Arc<File>, LogError> {
    let shown = path.display().to_string();
    match tokio::task::spawn_blocking(move || File::open(path)).await {
        Ok(Ok(f)) => Ok(Arc::new(f)),
        Ok(Err(e)) => Err(LogError::io(format!("opening {shown}"), e)),
        Err(e) => Err(LogError::io(
            format!("opening {shown}"),
            std::io::Error::other(e),
        )),
    }
}

type BoxStream<T> = Pin<Box<dyn futures_util::Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Logs for LogService {
    async fn open(&self, request: Request<OpenRequest>) -> Result<Response<OpenResponse>, Status> {
        let r = request.into_inner();
        let log_path = LogService::open(self, &r.container_id, &r.driver, &r.options).await?;
        Ok(Response::new(OpenResponse { log_path }))
    }

    type WriteStream = BoxStream<WriteAck>;

    async fn write(
        &self,
        request: Request<Streaming<LogEntry>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel::<Result<WriteAck, Status>>(MAX_BATCH_ENTRIES);
        let svc = self.clone();
        let mut shutdown = self.inner.shutdown.subscribe();
        tokio::spawn(async move {
            loop {
                let first = tokio::select! {
                    m = inbound.next() => m,
                    _ = tx.closed() => return,
                    _ = shutdown.wait_for(|s| *s) => return,
                };
                let first = match first {
                    None => return,
                    Some(Err(status)) => {
                        tracing::debug!("write stream ended: {status}");
                        return;
                    }
                    Some(Ok(e)) => e,
                };
                // Take whatever else is already buffered: one fsync for many lines.
                let mut bytes = first.line.len();
                let mut batch = vec![first];
                let mut ended = false;
                while batch.len() < MAX_BATCH_ENTRIES && bytes < MAX_BATCH_BYTES {
                    match inbound.next().now_or_never() {
                        Some(Some(Ok(e))) => {
                            bytes += e.line.len();
                            batch.push(e);
                        }
                        Some(Some(Err(_)) | None) => {
                            ended = true;
                            break;
                        }
                        None => break,
                    }
                }
                match svc.write_batch(batch).await {
                    Ok(acks) => {
                        for a in acks {
                            if tx.send(Ok(a)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!("log write failed: {e}");
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
                if ended {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_cursor(
        &self,
        request: Request<GetCursorRequest>,
    ) -> Result<Response<GetCursorResponse>, Status> {
        let r = request.into_inner();
        let seq = self.cursor(&r.container_id, &r.session).await;
        Ok(Response::new(GetCursorResponse { seq }))
    }

    async fn close(
        &self,
        request: Request<CloseRequest>,
    ) -> Result<Response<CloseResponse>, Status> {
        LogService::close(self, &request.into_inner().container_id).await?;
        Ok(Response::new(CloseResponse {}))
    }

    type ReadStream = BoxStream<LogEntry>;

    async fn read(
        &self,
        request: Request<ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let rx = LogService::read(self, request.into_inner()).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn remove(
        &self,
        request: Request<RemoveRequest>,
    ) -> Result<Response<RemoveResponse>, Status> {
        LogService::remove(self, &request.into_inner().container_id).await?;
        Ok(Response::new(RemoveResponse {}))
    }

    async fn list_logs(
        &self,
        _request: Request<berth_proto::logs::ListLogsRequest>,
    ) -> Result<Response<berth_proto::logs::ListLogsResponse>, Status> {
        let logs = store::all_logs(&self.inner.pool)
            .await
            .map_err(LogError::from)?;
        Ok(Response::new(berth_proto::logs::ListLogsResponse {
            container_ids: logs.into_iter().map(|l| l.container_id).collect(),
        }))
    }
}
