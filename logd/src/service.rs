//! The Logs gRPC service: durable ingestion, reads, follows.

use crate::error::LogError;
use crate::format;
use crate::rotate::{self, Rotation};
use crate::store;
use berth_proto::logs::logs_server::Logs;
use berth_proto::logs::{
    CloseRequest, CloseResponse, GetCursorRequest, GetCursorResponse, LogBatch, LogEntry,
    OpenRequest, OpenResponse, ReadRequest, RemoveRequest, RemoveResponse, WriteAck,
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
/// Most entries in one Read message.
const BATCH_ENTRIES: usize = 2048;
/// Bytes read per step by a reader.
const READ_CHUNK: usize = 256 * 1024;

/// A logging driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// Docker's json-file format on disk.
    JsonFile,
    /// Docker's `local` driver: its defaults (rotation at 20 MiB, 5 files, compressed)
    /// and options, stored with the same durable line records as json-file.
    Local,
    /// Lines are accepted and dropped.
    None,
}

impl Driver {
    /// Parses a driver name; empty means the default, json-file.
    pub fn parse(name: &str) -> Result<Self, LogError> {
        match name {
            "" | "json-file" => Ok(Self::JsonFile),
            "local" => Ok(Self::Local),
            "none" => Ok(Self::None),
            other => Err(LogError::UnknownDriver(other.to_string())),
        }
    }

    /// The name Docker uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::JsonFile => "json-file",
            Self::Local => "local",
            Self::None => "none",
        }
    }

    /// The driver keeps lines in a file logd can read back.
    pub fn on_disk(self) -> bool {
        self != Self::None
    }
}

/// What followers watch: how far the file is durable, and whether more may come.
#[derive(Debug, Clone, Copy)]
struct LogState {
    driver: Driver,
    committed: u64,
    live: bool,
    removed: bool,
    /// Bumped by every rotation; a follower on an older generation finishes the old
    /// file (up to `rotated_at`) and moves to the new one.
    generation: u64,
    /// The committed size of the file the last rotation moved away.
    rotated_at: u64,
}

/// The writer side of one container's log, serialised by a tokio mutex because a batch
/// must write the file, fsync and commit its cursor before the next batch starts (else a
/// later batch could commit a size covering bytes of an earlier one not yet durable).
struct Writer {
    file: Option<Arc<File>>,
    cursors: HashMap<String, u64>,
    size: u64,
    removed: bool,
    rotation: Rotation,
}

struct ContainerLog {
    id: String,
    path: PathBuf,
    writer: tokio::sync::Mutex<Writer>,
    state: watch::Sender<LogState>,
    /// Lines of a log that keeps none (the none driver), passed to attached readers.
    passthrough: tokio::sync::broadcast::Sender<Arc<Vec<LogEntry>>>,
}

/// Batches a slow attached reader of a none-driver log may lag behind before it skips.
const PASSTHROUGH_BATCHES: usize = 256;

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
            let mut committed = u64::try_from(rec.committed_size).unwrap_or(0);
            let options: HashMap<String, String> =
                serde_json::from_str(&rec.options).unwrap_or_default();
            let rotation = Rotation::from_options(driver.name(), &options).unwrap_or_default();
            if driver.on_disk() {
                if rec.rotating {
                    finish_interrupted_rotation(&path, committed, rotation).await?;
                    store::finish_rotation(&pool, &rec.container_id).await?;
                    committed = 0;
                }
                let p = path.clone();
                let keep = rotation.keep();
                let _ = tokio::task::spawn_blocking(move || rotate::tidy(&p, keep)).await;
            }
            let (file, size) = if driver.on_disk() {
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
                generation: 0,
                rotated_at: 0,
            });
            let log = ContainerLog {
                id: rec.container_id.clone(),
                path,
                writer: tokio::sync::Mutex::new(Writer {
                    file,
                    cursors,
                    size,
                    removed: false,
                    rotation,
                }),
                state,
                passthrough: tokio::sync::broadcast::channel(PASSTHROUGH_BATCHES).0,
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

    fn log_path(&self, id: &str, driver: Driver) -> PathBuf {
        let dir = self.inner.root.join("containers").join(id);
        match driver {
            // Where Docker keeps each driver's file, under logd's own root.
            Driver::Local => dir.join("local-logs").join("container.log"),
            _ => dir.join(format!("{id}-json.log")),
        }
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
        if requested.on_disk() {
            Rotation::from_options(requested.name(), options)?;
        }
        let _guard = self.inner.lifecycle.lock().await;
        let existing = self.get(id);
        // The shim re-opens without knowing the options, maybe without the driver: an
        // unnamed driver keeps the one the log already has.
        let driver = match &existing {
            Some(log) if driver.is_empty() => log.state.borrow().driver,
            _ => requested,
        };
        // Options given (or a new log: the driver's defaults) set the rotation; none keep it.
        let rotation = if driver.on_disk() && (!options.is_empty() || existing.is_none()) {
            Some(Rotation::from_options(driver.name(), options)?)
        } else {
            None
        };
        let path = self.log_path(id, driver);
        let shown_path = if driver.on_disk() {
            path.display().to_string()
        } else {
            String::new()
        };
        // A log file whose size the database does not know yet starts empty.
        let file = match &existing {
            // No record: anything on disk is a leftover of a failed Open.
            None if driver.on_disk() => Some(create_file(path.clone(), true).await?),
            _ => None,
        };
        let opts = serde_json::to_string(options).unwrap_or_else(|_| "{}".to_string());
        store::upsert_open(&self.inner.pool, id, driver.name(), &shown_path, &opts).await?;
        let log = match existing {
            Some(log) => {
                let mut w = log.writer.lock().await;
                if let Some(r) = rotation {
                    w.rotation = r;
                }
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
                    generation: 0,
                    rotated_at: 0,
                });
                let log = Arc::new(ContainerLog {
                    id: id.to_string(),
                    path,
                    writer: tokio::sync::Mutex::new(Writer {
                        file,
                        cursors: HashMap::new(),
                        size: 0,
                        removed: false,
                        rotation: rotation.unwrap_or_default(),
                    }),
                    state,
                    passthrough: tokio::sync::broadcast::channel(PASSTHROUGH_BATCHES).0,
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
        if w.file.is_none() {
            // The none driver: nothing is kept, attached readers see the lines.
            if log.passthrough.receiver_count() > 0 {
                let _ = log.passthrough.send(Arc::new(entries));
            }
            return Ok(());
        }
        // Encode what is new; each item keeps its session and seq for the cursors.
        let mut items: Vec<(Vec<u8>, String, u64, i32, u64)> = Vec::new();
        let mut latest: HashMap<String, u64> = HashMap::new();
        for e in entries {
            let cur = latest
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
            latest.insert(e.session.clone(), e.seq);
            let encoded = format::encode(&e.line, e.stream, time);
            items.push((encoded, e.session, e.seq, e.stream, e.line.len() as u64));
        }
        // With max-size, the batch goes in segments that fit the current file; each
        // segment is written, synced and committed before a rotation moves its file, so
        // a rotated file never holds a line whose cursor was not committed.
        let mut rest = items.as_slice();
        while !rest.is_empty() {
            let max = w.rotation.max_size;
            if max > 0 && w.size > 0 && w.size + rest[0].0.len() as u64 > max {
                self.rotate(log, &mut w).await?;
            }
            let mut take = 0;
            let mut bytes = 0u64;
            while take < rest.len() {
                let len = rest[take].0.len() as u64;
                if max > 0 && take > 0 && w.size + bytes + len > max {
                    break;
                }
                bytes += len;
                take += 1;
            }
            let (segment, later) = rest.split_at(take);
            rest = later;
            self.write_segment(log, &mut w, segment).await?;
        }
        Ok(())
    }

    /// Writes one segment at the committed size, syncs it and commits the new size with
    /// the segment's cursors; then wakes followers.
    async fn write_segment(
        &self,
        log: &ContainerLog,
        w: &mut Writer,
        segment: &[(Vec<u8>, String, u64, i32, u64)],
    ) -> Result<(), LogError> {
        let Some(file) = w.file.clone() else {
            return Ok(());
        };
        let mut buf = Vec::new();
        let mut cursors: HashMap<String, u64> = HashMap::new();
        let mut counted = [(0u64, 0u64); 2];
        for (encoded, session, seq, stream, line_len) in segment {
            buf.extend_from_slice(encoded);
            cursors.insert(session.clone(), *seq);
            let c = &mut counted[usize::from(*stream == 2)];
            c.0 += 1;
            c.1 += line_len;
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
        let list: Vec<(String, u64)> = cursors.into_iter().collect();
        store::commit_batch(&self.inner.pool, &log.id, size, &list).await?;
        w.size = size;
        w.cursors.extend(list);
        for (stream, (lines, bytes)) in ["stdout", "stderr"].into_iter().zip(counted) {
            crate::metrics::written(stream, lines, bytes);
        }
        log.state.send_modify(|s| s.committed = size);
        Ok(())
    }

    /// Moves the current file away (max-size reached) and starts an empty one. The
    /// database marks the rotation first, so a crash in the middle is finished at start.
    async fn rotate(&self, log: &ContainerLog, w: &mut Writer) -> Result<(), LogError> {
        store::begin_rotation(&self.inner.pool, &log.id).await?;
        let path = log.path.clone();
        let rotation = w.rotation;
        let shown = path.display().to_string();
        let file = tokio::task::spawn_blocking(move || -> std::io::Result<File> {
            let f = rotate::rotate_files(&path, rotation.keep())?;
            if rotation.compress {
                rotate::compress_newest(&path)?;
            }
            Ok(f)
        })
        .await
        .map_err(|e| LogError::io(format!("rotating {shown}"), std::io::Error::other(e)))?
        .map_err(|e| LogError::io(format!("rotating {shown}"), e))?;
        store::finish_rotation(&self.inner.pool, &log.id).await?;
        let old = w.size;
        w.file = Some(Arc::new(file));
        w.size = 0;
        log.state.send_modify(|s| {
            s.generation += 1;
            s.rotated_at = old;
            s.committed = 0;
        });
        tracing::debug!(container = %log.id, size = old, "log rotated");
        Ok(())
    }

    /// Starts a reader: sends matching entries into the returned channel, following the
    /// log if asked.
    pub async fn read(
        &self,
        req: ReadRequest,
    ) -> Result<mpsc::Receiver<Result<LogBatch, Status>>, LogError> {
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
            if !req.live_only {
                return Err(LogError::ReadUnsupported);
            }
            return Ok(pass_through(
                &log,
                req,
                state_rx,
                self.inner.shutdown.subscribe(),
            ));
        }
        let rotation = log.writer.lock().await.rotation;
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
        let history = if start == 0 && req.tail != 0 {
            let (path, f, tail, end) = (log.path.clone(), file.clone(), req.tail, state.committed);
            tokio::task::spawn_blocking(move || rotated_history(&path, &f, end, rotation, tail))
                .await
                .map_err(|e| LogError::io("reading rotated logs", std::io::Error::other(e)))?
                .map_err(|e| {
                    LogError::io(format!("reading rotated logs of {}", log.path.display()), e)
                })?
        } else {
            Vec::new()
        };
        let (tx, rx) = mpsc::channel(256);
        let shutdown = self.inner.shutdown.subscribe();
        tokio::spawn(follow(
            FollowCtx {
                path: log.path.clone(),
                file,
                generation: state.generation,
                req,
                state_rx,
                shutdown,
                tx,
            },
            history,
            start,
        ));
        Ok(rx)
    }
}

/// Lines of the rotated files a read starting at the current file's beginning also
/// needs: all of them (`tail < 0`), or the `tail` minus the current file's line count
/// newest ones.
fn rotated_history(
    path: &Path,
    current: &File,
    end: u64,
    rotation: Rotation,
    tail: i64,
) -> std::io::Result<Vec<format::LogLine>> {
    let files = rotate::rotated_files(path, rotation.keep());
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let need = if tail < 0 {
        usize::MAX
    } else {
        let (lines, _) = format::read_lines(current, 0, end, usize::MAX >> 1)?;
        usize::try_from(tail)
            .unwrap_or(usize::MAX)
            .saturating_sub(lines.len())
    };
    if need == 0 {
        return Ok(Vec::new());
    }
    let mut out: Vec<format::LogLine> = Vec::new();
    for f in files.iter().rev() {
        let mut lines = rotate::read_file_lines(f)?;
        lines.append(&mut out);
        out = lines;
        if out.len() >= need {
            break;
        }
    }
    if out.len() > need {
        out.drain(..out.len() - need);
    }
    Ok(out)
}

struct FollowCtx {
    path: PathBuf,
    generation: u64,
    file: Arc<File>,
    req: ReadRequest,
    state_rx: watch::Receiver<LogState>,
    shutdown: watch::Receiver<bool>,
    tx: mpsc::Sender<Result<LogBatch, Status>>,
}

/// What a reader does after handing over some lines.
enum Flow {
    More,
    Stop,
}

/// Hands matching lines to the reader; Stop when it went away or `until` passed while
/// following.
/// An attached reader of a none-driver log: the lines written from now until the run
/// ends (Close) or the log is removed.
fn pass_through(
    log: &ContainerLog,
    req: ReadRequest,
    mut state_rx: watch::Receiver<LogState>,
    mut shutdown: watch::Receiver<bool>,
) -> mpsc::Receiver<Result<LogBatch, Status>> {
    let mut lines = log.passthrough.subscribe();
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let s = *state_rx.borrow_and_update();
            if !s.live || s.removed {
                break;
            }
            tokio::select! {
                got = lines.recv() => match got {
                    Ok(entries) => {
                        let batch: Vec<LogEntry> = entries
                            .iter()
                            .filter(|e| if e.stream == format::STDERR { req.stderr } else { req.stdout })
                            .cloned()
                            .collect();
                        if !batch.is_empty() && tx.send(Ok(LogBatch { entries: batch })).await.is_err() {
                            break;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(batches = n, "attached reader lagged; batches skipped");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                changed = state_rx.changed() => if changed.is_err() { break },
                _ = shutdown.changed() => break,
            }
        }
    });
    rx
}

async fn deliver(cx: &FollowCtx, lines: Vec<format::LogLine>) -> Flow {
    let (since, until) = (cx.req.since_unix_nano, cx.req.until_unix_nano);
    let mut batch = Vec::with_capacity(lines.len().min(BATCH_ENTRIES));
    let mut flow = Flow::More;
    for l in lines {
        if until > 0 && l.time_unix_nano > until {
            if cx.req.follow {
                flow = Flow::Stop;
                break;
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
            // The reader asked for this container: repeating its id on every line
            // would cost more than many lines themselves.
            container_id: String::new(),
            session: String::new(),
            seq: 0,
            stream: l.stream,
            line: l.line.into(),
            time_unix_nano: l.time_unix_nano,
            partial: l.partial,
        };
        batch.push(entry);
        if batch.len() >= BATCH_ENTRIES && !send_batch(cx, &mut batch).await {
            return Flow::Stop;
        }
    }
    if !send_batch(cx, &mut batch).await {
        return Flow::Stop;
    }
    flow
}

/// Sends the entries gathered so far (if any); false when the reader went away.
async fn send_batch(cx: &FollowCtx, batch: &mut Vec<LogEntry>) -> bool {
    if batch.is_empty() {
        return true;
    }
    let entries = std::mem::take(batch);
    cx.tx.send(Ok(LogBatch { entries })).await.is_ok()
}

/// Reads `file[offset..end]` in chunks, handing lines over; the new offset, or None when
/// the reader is done (gone, failed, or `until` passed).
async fn drain(cx: &FollowCtx, file: &Arc<File>, mut offset: u64, end: u64) -> Option<u64> {
    while offset < end {
        let f = file.clone();
        let res =
            tokio::task::spawn_blocking(move || format::read_lines(&f, offset, end, READ_CHUNK))
                .await;
        let (lines, next) = match res {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                let _ = cx
                    .tx
                    .send(Err(Status::internal(format!("reading log: {e}"))))
                    .await;
                return None;
            }
            Err(e) => {
                let _ = cx
                    .tx
                    .send(Err(Status::internal(format!("reading log: {e}"))))
                    .await;
                return None;
            }
        };
        offset = next;
        if let Flow::Stop = deliver(cx, lines).await {
            return None;
        }
    }
    Some(offset)
}

/// Sends the rotated-file `history`, then lines from `offset` up to the committed size;
/// with follow, waits for more until the log is closed, removed, `until` passes, the
/// client goes away or logd stops. A rotation while following: the rest of the old file
/// is read through the descriptor still open on it, then the new file from its start.
async fn follow(mut cx: FollowCtx, history: Vec<format::LogLine>, mut offset: u64) {
    if let Flow::Stop = deliver(&cx, history).await {
        return;
    }
    let until = cx.req.until_unix_nano;
    loop {
        let state = *cx.state_rx.borrow_and_update();
        if state.generation != cx.generation {
            if state.generation == cx.generation + 1 {
                let old = cx.file.clone();
                if drain(&cx, &old, offset, state.rotated_at).await.is_none() {
                    return;
                }
            }
            match open_read(cx.path.clone()).await {
                Ok(f) => cx.file = f,
                Err(e) => {
                    let _ = cx.tx.send(Err(Status::internal(e.to_string()))).await;
                    return;
                }
            }
            cx.generation = state.generation;
            offset = 0;
            continue;
        }
        let file = cx.file.clone();
        match drain(&cx, &file, offset, state.committed).await {
            Some(o) => offset = o,
            None => return,
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

/// Finishes a rotation a crash interrupted: if the current file still holds the
/// committed bytes it was not moved yet, so the (idempotent) rotation runs again;
/// otherwise only the empty current file may be missing.
async fn finish_interrupted_rotation(
    path: &Path,
    committed: u64,
    rotation: Rotation,
) -> Result<(), LogError> {
    let p = path.to_path_buf();
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        if committed > 0 && len >= committed {
            // Bytes past the committed size were never acknowledged.
            OpenOptions::new()
                .write(true)
                .open(&p)?
                .set_len(committed)?;
            rotate::rotate_files(&p, rotation.keep())?;
        } else if !p.exists() {
            rotate::rotate_files(&p, 0)?;
        }
        if rotation.compress {
            rotate::compress_newest(&p)?;
        }
        Ok(())
    })
    .await
    .map_err(|e| {
        LogError::io(
            format!("finishing rotation of {shown}"),
            std::io::Error::other(e),
        )
    })?
    .map_err(|e| LogError::io(format!("finishing rotation of {shown}"), e))
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

    type ReadStream = BoxStream<LogBatch>;

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
