//! The `berth.containers.v1` service: records, lifecycle, watchers, reconcile.

use crate::names;
use crate::restart;
use crate::shim;
use crate::spec;
use crate::state::State;
use crate::store::{self, Record};
use crate::{Config, Error, now_unix_nano, parse_rfc3339, rfc3339_nanos};
use berth_proto::containers::containers_server::Containers;
use berth_proto::containers::*;
use sqlx::SqlitePool;
use std::collections::HashMap;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

/// How long Remove(force) / Stop wait for the init to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Shared state of the service.
pub struct Inner {
    pub pool: SqlitePool,
    pub cfg: Config,
    events: broadcast::Sender<ContainerEvent>,
    /// Events go through the journal (in order) before they are broadcast.
    journal: tokio::sync::mpsc::UnboundedSender<ContainerEvent>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// `docker exec` instances.
    pub(crate) execs: crate::exec::ExecTable,
    /// Exports the shims' steps as `berth-shim` spans (None: not tracing).
    shim_tracer: Option<opentelemetry_sdk::trace::Tracer>,
}

/// The service; cheap to clone.
#[derive(Clone)]
pub struct Service {
    pub(crate) inner: Arc<Inner>,
}

/// Parses "SIGTERM", "TERM", "term" or "15".
pub fn parse_signal(s: &str) -> Result<i32, Error> {
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .map(|s| s as i32)
            .map_err(|_| Error::InvalidArgument(format!("Invalid signal: {s}")));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    nix::sys::signal::Signal::from_str(&name)
        .map(|s| s as i32)
        .map_err(|_| Error::InvalidArgument(format!("Invalid signal: {s}")))
}

impl Service {
    /// A service over an opened database; `shim_tracer` records the shims' spans.
    pub fn new(
        pool: SqlitePool,
        cfg: Config,
        shim_tracer: Option<opentelemetry_sdk::trace::Tracer>,
    ) -> Self {
        let (events, _) = broadcast::channel(1024);
        let (journal, pending) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(journal_events(pool.clone(), pending, events.clone()));
        Self {
            inner: Arc::new(Inner {
                pool,
                cfg,
                events,
                journal,
                locks: Mutex::new(HashMap::new()),
                execs: Default::default(),
                shim_tracer,
            }),
        }
    }

    /// Keeps `berth_containers{state=...}` equal to the records: recounted at start and
    /// after every lifecycle event.
    pub fn spawn_state_metrics(&self) {
        let gauge = berth_kit::metrics::gauge_family("containers", "Containers, by state");
        let mut rx = self.inner.events.subscribe();
        let pool = self.inner.pool.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(records) = store::list(&pool).await {
                    let mut counts: HashMap<String, i64> = [
                        "created",
                        "running",
                        "paused",
                        "restarting",
                        "removing",
                        "exited",
                        "dead",
                    ]
                    .into_iter()
                    .map(|s| (s.to_string(), 0))
                    .collect();
                    for r in records {
                        *counts.entry(r.state).or_default() += 1;
                    }
                    for (state, n) in counts {
                        gauge
                            .get_or_create(&berth_kit::metrics::label("state", &state))
                            .set(n);
                    }
                }
                match rx.recv().await {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Records what the shim reported as spans of the `berth-shim` service under the
    /// current span: one for the shim's run, one per step.
    fn record_shim_spans(&self, id: &str, steps: &[shim::Step]) {
        use opentelemetry::KeyValue;
        use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _};
        let (Some(tracer), Some(first), Some(last)) =
            (&self.inner.shim_tracer, steps.first(), steps.last())
        else {
            return;
        };
        let at = |ns: i64| std::time::UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64);
        let parent = berth_kit::telemetry::current_context();
        let run = tracer
            .span_builder("berth-shim run")
            .with_start_time(at(first.start))
            .with_attributes([KeyValue::new("container.id", id.to_string())])
            .start_with_context(tracer, &parent);
        let run_cx = parent.with_span(run);
        for step in steps {
            let mut span = tracer
                .span_builder(format!("shim {}", step.name))
                .with_start_time(at(step.start))
                .with_attributes([KeyValue::new("container.id", id.to_string())])
                .start_with_context(tracer, &run_cx);
            span.end_with_timestamp(at(step.end));
        }
        run_cx.span().end_with_timestamp(at(last.end));
    }

    /// Container events as they happen (lifecycle changes wake waiters).
    pub(crate) fn subscribe_events(&self) -> broadcast::Receiver<ContainerEvent> {
        self.inner.events.subscribe()
    }

    fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.inner.locks.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(id.to_string()).or_default().clone()
    }

    pub(crate) fn emit(&self, rec: &Record, spec: &ContainerSpec, action: &str, exit_code: i32) {
        self.emit_with(rec, spec, action, exit_code, &[]);
    }

    /// [`Service::emit`] with attributes of the event's own (an exec's id).
    pub(crate) fn emit_with(
        &self,
        rec: &Record,
        spec: &ContainerSpec,
        action: &str,
        exit_code: i32,
        attributes: &[(&str, String)],
    ) {
        let _ = self.inner.journal.send(ContainerEvent {
            id: rec.id.clone(),
            action: action.to_string(),
            exit_code,
            time_unix_nano: now_unix_nano(),
            auto_remove: spec.auto_remove,
            name: spec.name.clone(),
            image_ref: spec.image_ref.clone(),
            labels: spec.labels.clone(),
            seq: 0,
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        });
    }

    /// Finds a record by full id, unique id prefix, or name (with or without "/").
    pub async fn resolve(&self, key: &str) -> Result<Record, Error> {
        let pool = &self.inner.pool;
        if key.is_empty() {
            return Err(Error::NotFound(key.to_string()));
        }
        if let Some(r) = store::get(pool, key).await? {
            return Ok(r);
        }
        let name = key.strip_prefix('/').unwrap_or(key);
        if let Some(r) = store::get_by_name(pool, name).await? {
            return Ok(r);
        }
        if key.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut found = store::by_prefix(pool, &key.to_ascii_lowercase()).await?;
            match found.len() {
                1 => return Ok(found.remove(0)),
                0 => {}
                // Docker's wording.
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "multiple IDs found with provided prefix: {key}"
                    )));
                }
            }
        }
        Err(Error::NotFound(key.to_string()))
    }

    /// Records an exit once and emits "die".
    async fn record_exit(
        &self,
        id: &str,
        pid: i32,
        code: i32,
        at: i64,
        error: &str,
    ) -> Result<(), Error> {
        let at = if at > 0 { at } else { now_unix_nano() };
        let oom = oom_killed(&self.inner.cfg.cgroup_parent, id);
        if store::set_exited(
            &self.inner.pool,
            id,
            pid,
            code,
            &rfc3339_nanos(at),
            error,
            oom,
        )
        .await?
            && let Some(rec) = store::get(&self.inner.pool, id).await?
        {
            let spec = rec.spec()?;
            tracing::info!(id, code, "container exited");
            self.emit(&rec, &spec, "die", code);
            self.apply_restart_policy(&rec, &spec).await?;
        }
        Ok(())
    }

    /// After an exit: schedules the restart the container's policy asks for, after
    /// Docker's back-off (the delay is recorded, so it survives our own restart).
    async fn apply_restart_policy(&self, rec: &Record, spec: &ContainerSpec) -> Result<(), Error> {
        let policy = restart::Policy::new(&spec.restart_policy, spec.restart_max_retries);
        let restarts = u32::try_from(rec.restart_count).unwrap_or(u32::MAX);
        if !policy.restarts_after(rec.exit_code as i32, restarts, rec.manually_stopped != 0) {
            return Ok(());
        }
        let ran_for = match (
            parse_rfc3339(&rec.started_at),
            parse_rfc3339(&rec.finished_at),
        ) {
            (Some(a), Some(b)) if b > a => Duration::from_nanos((b - a) as u64),
            _ => Duration::ZERO,
        };
        let last = Duration::from_millis(u64::try_from(rec.restart_delay_ms).unwrap_or(0));
        let delay = restart::next_delay(last, ran_for);
        if store::set_restarting(&self.inner.pool, &rec.id, delay.as_millis() as i64).await? {
            tracing::info!(id = rec.id, ?delay, "restart policy: restarting");
            self.schedule_restart(rec.id.clone(), delay);
        }
        Ok(())
    }

    /// Starts a `restarting` container after `delay`, unless it was stopped, removed or
    /// started meanwhile.
    fn schedule_restart(&self, id: String, delay: Duration) {
        let svc = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            match svc.start_with(&id, true).await {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(id, error = %e, "restart policy: start failed");
                    // Docker keeps the container exited, with the reason.
                    let _ = store::set_state(&svc.inner.pool, &id, "exited").await;
                }
            }
        });
    }

    /// Watches one running container until it exits (or its shim vanishes).
    fn spawn_watcher(&self, id: String, pid: i32) {
        self.spawn_health_monitor(id.clone(), pid);
        let svc = self.clone();
        tokio::spawn(async move {
            let cfg = &svc.inner.cfg;
            loop {
                match shim::wait(cfg, &id).await {
                    Ok(w) => {
                        if let Err(e) = svc
                            .record_exit(&id, pid, w.exit_code, w.exited_at_unix_nano, "")
                            .await
                        {
                            tracing::error!(id, error = %e, "recording exit");
                        }
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(id, error = %e, "shim Wait failed");
                        match store::get(&svc.inner.pool, &id).await {
                            Ok(Some(r))
                                if (r.state == "running" || r.state == "paused")
                                    && r.pid == pid as i64 => {}
                            _ => return,
                        }
                        if let Some(x) = shim::read_exit_file(&cfg.shim_dir(&id)) {
                            let _ = svc
                                .record_exit(&id, pid, x.exit_code, x.exited_at_unix_nano, "")
                                .await;
                            return;
                        }
                        if shim::state(cfg, &id, Duration::from_secs(2)).await.is_err() {
                            // Unreachable twice in a row (Wait and State): the shim is gone.
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            if shim::state(cfg, &id, Duration::from_secs(2)).await.is_err() {
                                if let Some(x) = shim::read_exit_file(&cfg.shim_dir(&id)) {
                                    let _ = svc
                                        .record_exit(
                                            &id,
                                            pid,
                                            x.exit_code,
                                            x.exited_at_unix_nano,
                                            "",
                                        )
                                        .await;
                                } else {
                                    let _ = svc
                                        .record_exit(&id, pid, 255, 0, "the container's shim died")
                                        .await;
                                }
                                let _ = store::clear_shim(&svc.inner.pool, &id).await;
                                return;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
    }

    /// Reconnects to every shim (before serving): restores watchers and collects exits that
    /// happened while we were down.
    pub async fn reconcile(&self) -> Result<(), Error> {
        let cfg = &self.inner.cfg;
        for rec in store::list(&self.inner.pool).await? {
            if rec.state == "restarting" {
                // Its back-off was under way when we went down: it resumes.
                let delay = Duration::from_millis(u64::try_from(rec.restart_delay_ms).unwrap_or(0));
                self.schedule_restart(rec.id.clone(), delay);
            }
            if rec.has_shim == 0 {
                continue;
            }
            let id = rec.id.clone();
            let pid = rec.pid as i32;
            match shim::state(cfg, &id, Duration::from_secs(2)).await {
                Ok(st) if rec.state != "running" && st.status == "running" && st.pid != pid => {
                    // We died between spawning the shim and recording the start: adopt it.
                    tracing::info!(
                        id,
                        pid = st.pid,
                        "adopting a container started before a crash"
                    );
                    let started = rfc3339_nanos(st.started_at_unix_nano);
                    store::set_running(&self.inner.pool, &id, st.pid, &started).await?;
                    self.spawn_watcher(id, st.pid);
                }
                Ok(st) => {
                    if rec.state == "running" || rec.state == "paused" {
                        if st.status == "exited" {
                            self.record_exit(&id, pid, st.exit_code, st.exited_at_unix_nano, "")
                                .await?;
                        } else {
                            tracing::info!(id, pid, "reattached to running container");
                            self.spawn_watcher(id, pid);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(id, error = %e, "shim unreachable");
                    if rec.state == "running" || rec.state == "paused" {
                        match shim::read_exit_file(&cfg.shim_dir(&id)) {
                            Some(x) => {
                                self.record_exit(&id, pid, x.exit_code, x.exited_at_unix_nano, "")
                                    .await?
                            }
                            None => {
                                self.record_exit(&id, pid, 255, 0, "the container's shim died")
                                    .await?
                            }
                        }
                    }
                    store::clear_shim(&self.inner.pool, &id).await?;
                }
            }
        }
        Ok(())
    }

    /// Waits until the container is no longer running (`rx` subscribed before the check).
    async fn wait_stopped(
        &self,
        id: &str,
        rx: &mut broadcast::Receiver<ContainerEvent>,
        d: Duration,
    ) -> Result<bool, Error> {
        let fut = async {
            loop {
                match store::get(&self.inner.pool, id).await? {
                    Some(r) if r.state == "running" => {}
                    _ => return Ok::<_, Error>(()),
                }
                match rx.recv().await {
                    Ok(e) if e.id == id && e.action == "die" => return Ok(()),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
            }
        };
        match tokio::time::timeout(d, fut).await {
            Ok(r) => r.map(|()| true),
            Err(_) => Ok(false),
        }
    }

    #[tracing::instrument(name = "container.create", skip_all, fields(container.id = %spec.id, container.image.name = %spec.image_ref))]
    async fn create(&self, spec: ContainerSpec) -> Result<Container, Error> {
        // `docker run` starts right after: see cgroup_warmup.
        crate::cgroup_warmup::warm_up();
        let mut spec = spec;
        if !names::is_valid_id(&spec.id) {
            return Err(Error::InvalidArgument(format!(
                "invalid container id {:?}",
                spec.id
            )));
        }
        let generated = spec.name.is_empty();
        if !generated {
            spec.name = spec.name.trim_start_matches('/').to_string();
            if !names::is_valid_name(&spec.name) {
                // Docker's wording.
                return Err(Error::InvalidArgument(format!(
                    "Invalid container name ({}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                    spec.name
                )));
            }
        }
        let pool = &self.inner.pool;
        if store::get(pool, &spec.id).await?.is_some() {
            return Err(Error::AlreadyExists(format!(
                "container id {} is already in use",
                spec.id
            )));
        }
        let bundle = self.inner.cfg.bundle(&spec.id);
        let created = rfc3339_nanos(now_unix_nano());
        let mut retry = 0;
        loop {
            if generated {
                spec.name = names::random_name(retry);
            }
            // Validates the spec and writes the bundle before the record exists, so a bad
            // spec leaves nothing behind.
            spec::write_bundle(
                &spec,
                &bundle,
                &self.inner.cfg.cgroup_parent,
                self.inner.cfg.init_binary.as_deref(),
            )
            .inspect_err(|_| {
                let _ = std::fs::remove_dir_all(&bundle);
            })?;
            match store::insert(pool, &spec, &created).await {
                Ok(()) => break,
                Err(e) if berth_kit::db::is_unique_violation(&e) => {
                    if generated && retry < 10 {
                        retry += 1;
                        continue;
                    }
                    let _ = std::fs::remove_dir_all(&bundle);
                    let holder = store::get_by_name(pool, &spec.name).await?;
                    return Err(match holder {
                        // Docker's wording.
                        Some(h) => Error::AlreadyExists(format!(
                            "Conflict. The container name \"/{}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                            spec.name, h.id
                        )),
                        None => Error::AlreadyExists(format!(
                            "container id {} is already in use",
                            spec.id
                        )),
                    });
                }
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&bundle);
                    return Err(e.into());
                }
            }
        }
        let rec = store::get(pool, &spec.id)
            .await?
            .ok_or_else(|| Error::Internal("record vanished".into()))?;
        self.emit(&rec, &spec, "create", 0);
        rec.to_container()
    }

    #[tracing::instrument(name = "container.start", skip_all, fields(container.id = %key))]
    async fn start(&self, key: &str) -> Result<StartResponse, Error> {
        self.start_with(key, false).await
    }

    /// Starts the container; `by_policy` is a restart policy's start: only of a container
    /// still `restarting` (not stopped or started meanwhile), and it counts as a restart.
    async fn start_with(&self, key: &str, by_policy: bool) -> Result<StartResponse, Error> {
        crate::cgroup_warmup::warm_up();
        let rec = self.resolve(key).await?;
        let lock = self.lock_for(&rec.id);
        let _g = lock.lock().await;
        let rec = self.resolve(&rec.id).await?;
        let cfg = &self.inner.cfg;
        if by_policy {
            if rec.state != "restarting" || rec.manually_stopped != 0 {
                return Ok(StartResponse {
                    container: Some(rec.to_container()?),
                    already_running: rec.state == "running",
                });
            }
            store::count_restart(&self.inner.pool, &rec.id).await?;
        } else if rec.manually_stopped != 0 {
            store::set_manually_stopped(&self.inner.pool, &rec.id, false).await?;
        }
        if !State::parse(&rec.state).check_start()? {
            return Ok(StartResponse {
                container: Some(rec.to_container()?),
                already_running: true,
            });
        }
        let spec = rec.spec()?;
        if rec.has_shim != 0 {
            // The previous run's shim keeps the old exit status until shut down.
            if let Err(e) = shim::shutdown(cfg, &rec.id).await {
                tracing::warn!(id = rec.id, error = %e, "shutting down the old shim");
            }
            store::clear_shim(&self.inner.pool, &rec.id).await?;
        }
        let _ = std::fs::remove_dir_all(cfg.shim_dir(&rec.id));
        store::mark_shim(&self.inner.pool, &rec.id).await?;
        let spawned = match shim::spawn(cfg, &spec).await {
            Ok(s) => s,
            Err(e) => {
                store::clear_shim(&self.inner.pool, &rec.id).await?;
                return Err(e);
            }
        };
        match spawned {
            Ok(shim::Spawned { pid, steps }) => {
                self.record_shim_spans(&rec.id, &steps);
                let started = rfc3339_nanos(now_unix_nano());
                self.reset_health(&rec.id, &spec).await?;
                store::set_running(&self.inner.pool, &rec.id, pid, &started).await?;
                self.spawn_watcher(rec.id.clone(), pid);
                let rec = self.resolve(&rec.id).await?;
                self.emit(&rec, &spec, "start", 0);
                Ok(StartResponse {
                    container: Some(rec.to_container()?),
                    already_running: false,
                })
            }
            Err(f) => {
                store::set_start_failed(&self.inner.pool, &rec.id, f.code, &f.message).await?;
                store::clear_shim(&self.inner.pool, &rec.id).await?;
                let _ = std::fs::remove_dir_all(cfg.shim_dir(&rec.id));
                if f.code == 126 || f.code == 127 {
                    Err(Error::InvalidArgument(f.message))
                } else {
                    Err(Error::Internal(f.message))
                }
            }
        }
    }

    #[tracing::instrument(name = "container.stop", skip_all, fields(container.id = %req.id))]
    async fn stop(&self, req: StopRequest) -> Result<StopResponse, Error> {
        let rec = self.resolve(&req.id).await?;
        let spec = rec.spec()?;
        // Stopped by its user: the restart policy leaves it down (a pending restart is
        // called off).
        store::set_manually_stopped(&self.inner.pool, &rec.id, true).await?;
        if store::cancel_restart(&self.inner.pool, &rec.id).await? {
            return Ok(StopResponse {
                already_stopped: false,
            });
        }
        self.thaw_if_paused(&rec).await?;
        let rec = self.resolve(&rec.id).await?;
        if rec.state != "running" {
            return Ok(StopResponse {
                already_stopped: true,
            });
        }
        let sig = if !req.signal.is_empty() {
            parse_signal(&req.signal)?
        } else if !spec.stop_signal.is_empty() {
            parse_signal(&spec.stop_signal)?
        } else {
            libc::SIGTERM
        };
        let timeout = if req.timeout_seconds >= 0 {
            req.timeout_seconds
        } else if spec.stop_timeout > 0 {
            spec.stop_timeout
        } else {
            10
        };
        let mut rx = self.inner.events.subscribe();
        let cfg = &self.inner.cfg;
        match shim::kill(cfg, &rec.id, sig, false).await {
            Ok(()) | Err(Error::FailedPrecondition(_)) => {}
            Err(e) => return Err(e),
        }
        if self
            .wait_stopped(&rec.id, &mut rx, Duration::from_secs(timeout as u64))
            .await?
        {
            return Ok(StopResponse {
                already_stopped: false,
            });
        }
        tracing::info!(id = rec.id, "stop timeout, sending SIGKILL");
        match shim::kill(cfg, &rec.id, libc::SIGKILL, true).await {
            Ok(()) | Err(Error::FailedPrecondition(_)) => {}
            Err(e) => return Err(e),
        }
        if self.wait_stopped(&rec.id, &mut rx, KILL_WAIT).await? {
            Ok(StopResponse {
                already_stopped: false,
            })
        } else {
            Err(Error::Internal(format!(
                "container {} did not stop after SIGKILL",
                rec.id
            )))
        }
    }

    async fn kill(&self, req: KillRequest) -> Result<(), Error> {
        let rec = self.resolve(&req.id).await?;
        let sig = if req.signal.is_empty() {
            libc::SIGKILL
        } else {
            parse_signal(&req.signal)?
        };
        if rec.state == "running" || rec.state == "paused" {
            // As dockerd: a container its user killed is not restarted by its policy.
            store::set_manually_stopped(&self.inner.pool, &rec.id, true).await?;
        }
        self.thaw_if_paused(&rec).await?;
        let rec = self.resolve(&rec.id).await?;
        if rec.state != "running" {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                rec.id
            )));
        }
        shim::kill(&self.inner.cfg, &rec.id, sig, false).await
    }

    async fn wait(&self, req: WaitRequest) -> Result<WaitResponse, Error> {
        let mut rx = self.inner.events.subscribe();
        let rec = self.resolve(&req.id).await?;
        let id = rec.id.clone();
        let condition = if req.condition.is_empty() {
            "not-running"
        } else {
            req.condition.as_str()
        };
        let mut last = WaitResponse {
            exit_code: rec.exit_code as i32,
            error: rec.error.clone(),
        };
        match condition {
            "not-running" if rec.state != "running" => return Ok(last),
            "not-running" | "next-exit" | "removed" => {}
            other => {
                return Err(Error::InvalidArgument(format!(
                    "invalid condition {other:?}"
                )));
            }
        }
        loop {
            match rx.recv().await {
                Ok(e) if e.id == id && e.action == "die" => {
                    last = WaitResponse {
                        exit_code: e.exit_code,
                        error: String::new(),
                    };
                    if condition != "removed" {
                        return Ok(last);
                    }
                }
                Ok(e) if e.id == id && e.action == "destroy" => return Ok(last),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    match store::get(&self.inner.pool, &id).await? {
                        None => return Ok(last),
                        Some(r) if r.state != "running" && condition == "not-running" => {
                            return Ok(WaitResponse {
                                exit_code: r.exit_code as i32,
                                error: r.error,
                            });
                        }
                        Some(_) => {}
                    }
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(Error::Unavailable("shutting down".into()));
                }
            }
        }
    }

    async fn remove(&self, req: RemoveRequest) -> Result<Container, Error> {
        let rec = self.resolve(&req.id).await?;
        let lock = self.lock_for(&rec.id);
        let _g = lock.lock().await;
        let rec = self.resolve(&rec.id).await?;
        let spec = rec.spec()?;
        let cfg = &self.inner.cfg;
        State::parse(&rec.state).check_remove(req.force, &spec.name)?;
        self.thaw_if_paused(&rec).await?;
        let rec = self.resolve(&rec.id).await?;
        if rec.state == "running" {
            let mut rx = self.inner.events.subscribe();
            match shim::kill(cfg, &rec.id, libc::SIGKILL, true).await {
                Ok(()) | Err(Error::FailedPrecondition(_)) => {}
                Err(e) => tracing::warn!(id = rec.id, error = %e, "force kill"),
            }
            if !self.wait_stopped(&rec.id, &mut rx, KILL_WAIT).await? {
                return Err(Error::Internal(format!(
                    "container {} did not die after SIGKILL",
                    rec.id
                )));
            }
        }
        let final_rec = self.resolve(&rec.id).await?;
        store::set_state(&self.inner.pool, &rec.id, "removing").await?;
        if rec.has_shim != 0
            && let Err(e) = shim::shutdown(cfg, &rec.id).await
        {
            tracing::warn!(id = rec.id, error = %e, "shim shutdown failed; cleaning up myself");
        }
        self.cleanup_runtime(&rec.id);
        let bundle = cfg.bundle(&rec.id);
        if let Err(e) = std::fs::remove_dir_all(&bundle)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(id = rec.id, error = %e, "removing bundle");
        }
        store::delete(&self.inner.pool, &rec.id).await?;
        self.inner.execs.forget_container(&rec.id);
        self.emit(&final_rec, &spec, "destroy", final_rec.exit_code as i32);
        let mut c = final_rec.to_container()?;
        c.state = "removing".into();
        Ok(c)
    }

    /// `docker rename`: Docker's errors for the same name and a taken one; emits
    /// "rename" (with the old name, as Docker's event attributes carry it).
    async fn rename(&self, key: &str, name: &str) -> Result<Container, Error> {
        let rec = self.resolve(key).await?;
        let lock = self.lock_for(&rec.id);
        let _g = lock.lock().await;
        let rec = self.resolve(&rec.id).await?;
        let name = name.trim_start_matches('/');
        if !names::is_valid_name(name) {
            return Err(Error::InvalidArgument(format!(
                "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        if rec.name == name {
            return Err(Error::InvalidArgument(
                "Renaming a container with the same name as its current name".into(),
            ));
        }
        let mut spec = rec.spec()?;
        let old = std::mem::replace(&mut spec.name, name.to_string());
        match store::rename(&self.inner.pool, &rec.id, &spec).await {
            Ok(()) => {}
            Err(e) if berth_kit::db::is_unique_violation(&e) => {
                let holder = store::get_by_name(&self.inner.pool, name)
                    .await?
                    .map(|h| h.id)
                    .unwrap_or_default();
                // Docker's wording.
                return Err(Error::AlreadyExists(format!(
                    "Error when allocating new name: Conflict. The container name \"/{name}\" is already in use by container \"{holder}\". You have to remove (or rename) that container to be able to reuse that name."
                )));
            }
            Err(e) => return Err(e.into()),
        }
        let rec = self.resolve(&rec.id).await?;
        let mut spec_for_event = spec.clone();
        spec_for_event
            .labels
            .insert("oldName".into(), format!("/{old}"));
        self.emit(&rec, &spec_for_event, "rename", 0);
        rec.to_container()
    }

    /// `docker update`: merges the new limits into the stored HostConfig (and the bundle
    /// the next start uses) and, for a running container, into its cgroup.
    async fn update(&self, key: &str, update_json: &[u8]) -> Result<Vec<String>, Error> {
        let rec = self.resolve(key).await?;
        let lock = self.lock_for(&rec.id);
        let _g = lock.lock().await;
        let rec = self.resolve(&rec.id).await?;
        let update: serde_json::Value = serde_json::from_slice(update_json)
            .map_err(|e| Error::InvalidArgument(format!("invalid update: {e}")))?;
        let mut spec = rec.spec()?;
        let mut hc: serde_json::Value =
            serde_json::from_slice(&spec.host_config_json).unwrap_or(serde_json::json!({}));
        let changed = crate::update::merge(&mut hc, &update)?;
        if changed.is_empty() {
            return Ok(Vec::new());
        }
        if changed.iter().any(|k| k == "RestartPolicy") {
            if spec.auto_remove {
                // Docker's wording.
                return Err(Error::InvalidArgument(
                    "Restart policy cannot be updated because AutoRemove is enabled for the container".into(),
                ));
            }
            spec.restart_policy = hc["RestartPolicy"]["Name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            spec.restart_max_retries = hc["RestartPolicy"]["MaximumRetryCount"]
                .as_i64()
                .unwrap_or(0) as i32;
        }
        // Stored first (record and bundle), then the running cgroup; if the cgroup
        // refuses, the old spec goes back, so inspect never shows limits not in force.
        let old_spec = rec.spec()?;
        spec.memory_bytes = hc["Memory"].as_i64().unwrap_or(0);
        spec.pids_limit = hc["PidsLimit"].as_i64().unwrap_or(0);
        spec.host_config_json = serde_json::to_vec(&hc)
            .map_err(|e| Error::Internal(format!("encoding HostConfig: {e}")))?;
        let bundle = self.inner.cfg.bundle(&rec.id);
        let cgroup_parent = &self.inner.cfg.cgroup_parent;
        let init = self.inner.cfg.init_binary.as_deref();
        spec::write_bundle(&spec, &bundle, cgroup_parent, init)?;
        store::set_spec(&self.inner.pool, &rec.id, &spec).await?;
        if rec.state == "running" || rec.state == "paused" {
            let rel = format!("/{cgroup_parent}/{}", rec.id);
            let applied = tokio::task::spawn_blocking(move || {
                crate::update::apply_to_cgroup(
                    std::path::Path::new("/sys/fs/cgroup"),
                    &rel,
                    &hc,
                    &changed,
                )
            })
            .await
            .map_err(|e| Error::Internal(format!("updating the cgroup: {e}")))
            .and_then(|r| r);
            if let Err(e) = applied {
                spec::write_bundle(&old_spec, &bundle, cgroup_parent, init)?;
                store::set_spec(&self.inner.pool, &rec.id, &old_spec).await?;
                return Err(e);
            }
        }
        Ok(Vec::new())
    }

    /// Freezes (`pause`) or thaws a running container; Docker's errors otherwise.
    async fn set_paused(&self, key: &str, pause: bool) -> Result<(), Error> {
        let rec = self.resolve(key).await?;
        let lock = self.lock_for(&rec.id);
        let _g = lock.lock().await;
        let rec = self.resolve(&rec.id).await?;
        match (pause, rec.state.as_str()) {
            (true, "running") | (false, "paused") => {}
            (true, "paused") => {
                return Err(Error::FailedPrecondition(format!(
                    "Container {} is already paused",
                    rec.id
                )));
            }
            (true, _) => {
                return Err(Error::FailedPrecondition(format!(
                    "Container {} is not running",
                    rec.id
                )));
            }
            (false, _) => {
                return Err(Error::FailedPrecondition(format!(
                    "Container {} is not paused",
                    rec.id
                )));
            }
        }
        self.freeze(&rec.id, pause).await?;
        store::set_state(
            &self.inner.pool,
            &rec.id,
            if pause { "paused" } else { "running" },
        )
        .await?;
        let rec = self.resolve(&rec.id).await?;
        self.emit(
            &rec,
            &rec.spec()?,
            if pause { "pause" } else { "unpause" },
            0,
        );
        Ok(())
    }

    async fn freeze(&self, id: &str, frozen: bool) -> Result<(), Error> {
        let rel = format!("/{}/{}", self.inner.cfg.cgroup_parent, id);
        tokio::task::spawn_blocking(move || {
            crate::freezer::set_frozen(std::path::Path::new("/sys/fs/cgroup"), &rel, frozen)
        })
        .await
        .map_err(|e| Error::Internal(format!("freezer: {e}")))?
        .map_err(|e| Error::Internal(format!("freezing the container's cgroup: {e}")))
    }

    /// Before a signal or removal: a paused container is thawed first (as dockerd does),
    /// or frozen tasks would never act on it.
    async fn thaw_if_paused(&self, rec: &Record) -> Result<(), Error> {
        if rec.state == "paused" {
            self.freeze(&rec.id, false).await?;
            store::set_state(&self.inner.pool, &rec.id, "running").await?;
        }
        Ok(())
    }

    /// Removes what a dead shim may have left: its dir, libcontainer state and the
    /// container's cgroup leaves (already gone after a clean shim Shutdown).
    #[tracing::instrument(name = "container.cleanup", skip_all)]
    fn cleanup_runtime(&self, id: &str) {
        let cfg = &self.inner.cfg;
        let _ = std::fs::remove_dir_all(cfg.shim_dir(id));
        let _ = std::fs::remove_dir_all(cfg.state_root.join(id));
        for leaf in cgroup_leaves(&cfg.cgroup_parent, id) {
            let _ = std::fs::remove_dir(&leaf);
        }
    }
}

/// Events kept in the journal: enough for any gateway outage, bounded on disk.
const JOURNAL_KEEP: i64 = 10_000;

/// Writes each event to the journal, numbers it, then broadcasts it. An event that
/// cannot be stored is still broadcast (seq 0): live listeners must not miss it.
async fn journal_events(
    pool: SqlitePool,
    mut pending: tokio::sync::mpsc::UnboundedReceiver<ContainerEvent>,
    events: broadcast::Sender<ContainerEvent>,
) {
    use prost::Message as _;
    while let Some(mut ev) = pending.recv().await {
        let stored =
            sqlx::query_scalar::<_, i64>("INSERT INTO events (event) VALUES (?) RETURNING seq")
                .bind(ev.encode_to_vec())
                .fetch_one(&pool)
                .await;
        match stored {
            Ok(seq) => {
                ev.seq = seq as u64;
                if seq % 1000 == 0 {
                    let _ = sqlx::query("DELETE FROM events WHERE seq <= ?")
                        .bind(seq - JOURNAL_KEEP)
                        .execute(&pool)
                        .await;
                }
            }
            Err(e) => {
                tracing::warn!(container = %ev.id, action = %ev.action, "journaling an event: {e}")
            }
        }
        let _ = events.send(ev);
    }
}

/// The journal's events after `after_seq`, oldest first.
async fn journal_since(pool: &SqlitePool, after_seq: u64) -> Result<Vec<ContainerEvent>, Error> {
    use prost::Message as _;
    let rows: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT seq, event FROM events WHERE seq > ? ORDER BY seq")
            .bind(after_seq as i64)
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(seq, blob)| {
            let mut ev = ContainerEvent::decode(blob.as_slice()).ok()?;
            ev.seq = seq as u64;
            Some(ev)
        })
        .collect())
}

/// Whether the OOM killer struck in the container's cgroup (v1 `memory.oom_control`, v2
/// `memory.events`: an `oom_kill` count above zero). Read at the exit, before the cgroup
/// goes; a new run gets a new cgroup.
fn oom_killed(parent: &str, id: &str) -> bool {
    cgroup_leaves(parent, id).iter().any(|dir| {
        ["memory.oom_control", "memory.events"].iter().any(|f| {
            std::fs::read_to_string(dir.join(f)).is_ok_and(|text| oom_kill_count(&text) > 0)
        })
    })
}

/// The `oom_kill N` figure of a memory controller file.
fn oom_kill_count(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Every existing cgroup directory of container `id` (v1: one per controller; v2: one).
pub fn cgroup_leaves(parent: &str, id: &str) -> Vec<std::path::PathBuf> {
    let root = std::path::Path::new("/sys/fs/cgroup");
    let mut out = Vec::new();
    let direct = root.join(parent).join(id);
    if direct.is_dir() {
        out.push(direct);
    }
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            let p = e.path().join(parent).join(id);
            if p.is_dir() {
                out.push(p);
            }
        }
    }
    out
}

type EventStream = Pin<Box<dyn Stream<Item = Result<ContainerEvent, Status>> + Send>>;
type ExecOutputStream = Pin<Box<dyn Stream<Item = Result<ExecStartOutput, Status>> + Send>>;
type ArchiveStream = Pin<Box<dyn Stream<Item = Result<ArchiveChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Containers for Service {
    async fn create(&self, req: Request<CreateRequest>) -> Result<Response<Container>, Status> {
        let spec = req
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("spec is required"))?;
        Ok(Response::new(Service::create(self, spec).await?))
    }

    async fn start(&self, req: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
        Ok(Response::new(
            Service::start(self, &req.into_inner().id).await?,
        ))
    }

    async fn stop(&self, req: Request<StopRequest>) -> Result<Response<StopResponse>, Status> {
        Ok(Response::new(Service::stop(self, req.into_inner()).await?))
    }

    async fn kill(&self, req: Request<KillRequest>) -> Result<Response<KillResponse>, Status> {
        Service::kill(self, req.into_inner()).await?;
        Ok(Response::new(KillResponse {}))
    }

    async fn wait(&self, req: Request<WaitRequest>) -> Result<Response<WaitResponse>, Status> {
        Ok(Response::new(Service::wait(self, req.into_inner()).await?))
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<Container>, Status> {
        let rec = self.resolve(&req.into_inner().id).await?;
        Ok(Response::new(rec.to_container()?))
    }

    async fn stats(
        &self,
        req: Request<berth_proto::containers::StatsRequest>,
    ) -> Result<Response<berth_proto::containers::ContainerStats>, Status> {
        let rec = self.resolve(&req.into_inner().id).await?;
        if !(rec.state == "running" || rec.state == "paused") || rec.pid <= 0 {
            return Ok(Response::new(Default::default()));
        }
        let cgroups_path = format!("/{}/{}", self.inner.cfg.cgroup_parent, rec.id);
        let pid = rec.pid as i32;
        let sample = tokio::task::spawn_blocking(move || crate::stats::sample(&cgroups_path, pid))
            .await
            .map_err(|e| Status::internal(format!("reading stats: {e}")))?;
        Ok(Response::new(sample))
    }

    async fn rename(&self, req: Request<RenameRequest>) -> Result<Response<Container>, Status> {
        let r = req.into_inner();
        Ok(Response::new(Service::rename(self, &r.id, &r.name).await?))
    }

    async fn update(
        &self,
        req: Request<UpdateRequest>,
    ) -> Result<Response<UpdateResponse>, Status> {
        let r = req.into_inner();
        let warnings = Service::update(self, &r.id, &r.host_config_json).await?;
        Ok(Response::new(UpdateResponse { warnings }))
    }

    async fn pids(&self, req: Request<PidsRequest>) -> Result<Response<PidsResponse>, Status> {
        let rec = self.resolve(&req.into_inner().id).await?;
        if !(rec.state == "running" || rec.state == "paused") {
            // Docker's wording.
            return Err(
                Error::FailedPrecondition(format!("Container {} is not running", rec.id)).into(),
            );
        }
        let path = format!("/{}/{}", self.inner.cfg.cgroup_parent, rec.id);
        let pids = crate::stats::cgroup_pids(std::path::Path::new("/sys/fs/cgroup"), &path);
        Ok(Response::new(PidsResponse { pids }))
    }

    async fn pause(&self, req: Request<PauseRequest>) -> Result<Response<PauseResponse>, Status> {
        self.set_paused(&req.into_inner().id, true).await?;
        Ok(Response::new(PauseResponse {}))
    }

    async fn unpause(&self, req: Request<PauseRequest>) -> Result<Response<PauseResponse>, Status> {
        self.set_paused(&req.into_inner().id, false).await?;
        Ok(Response::new(PauseResponse {}))
    }

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let all = req.into_inner().all;
        let mut containers = Vec::new();
        for r in store::list(&self.inner.pool).await.map_err(Status::from)? {
            // Docker lists paused containers with the running ones.
            if all || r.state == "running" || r.state == "paused" {
                containers.push(r.to_container()?);
            }
        }
        Ok(Response::new(ListResponse { containers }))
    }

    async fn remove(
        &self,
        req: Request<RemoveRequest>,
    ) -> Result<Response<RemoveResponse>, Status> {
        let c = Service::remove(self, req.into_inner()).await?;
        Ok(Response::new(RemoveResponse { container: Some(c) }))
    }

    type EventsStream = EventStream;

    async fn events(
        &self,
        req: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        // Subscribed before reading the journal, so nothing falls between the two; live
        // events the replay already sent are skipped by seq.
        let rx = self.inner.events.subscribe();
        let after = req.into_inner().after_seq;
        let replay = journal_since(&self.inner.pool, after).await?;
        let last = replay.last().map_or(after, |e| e.seq);
        let live = tokio_stream::wrappers::BroadcastStream::new(rx)
            .filter_map(move |r| r.ok().filter(|e| e.seq == 0 || e.seq > last).map(Ok));
        let s = tokio_stream::iter(replay.into_iter().map(Ok)).chain(live);
        Ok(Response::new(Box::pin(s)))
    }

    async fn exec_create(
        &self,
        req: Request<ExecCreateRequest>,
    ) -> Result<Response<ExecCreateResponse>, Status> {
        let req = req.into_inner();
        let id =
            Service::exec_create(self, &req.container_id, req.config.unwrap_or_default()).await?;
        Ok(Response::new(ExecCreateResponse { id }))
    }

    type ExecStartStream = ExecOutputStream;

    async fn exec_start(
        &self,
        req: Request<tonic::Streaming<ExecStartInput>>,
    ) -> Result<Response<Self::ExecStartStream>, Status> {
        let rx = Service::exec_start(self, req.into_inner()).await?;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn exec_inspect(
        &self,
        req: Request<ExecInspectRequest>,
    ) -> Result<Response<ExecInfo>, Status> {
        Ok(Response::new(
            Service::exec_inspect(self, &req.into_inner().id).await?,
        ))
    }

    async fn attach(
        &self,
        req: Request<tonic::Streaming<AttachInput>>,
    ) -> Result<Response<AttachResponse>, Status> {
        let mut input = req.into_inner();
        let first = input
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("Attach needs a first message"))?;
        self.attach_stdin(first, input).await?;
        Ok(Response::new(AttachResponse {}))
    }

    async fn resize(
        &self,
        req: Request<ResizeRequest>,
    ) -> Result<Response<ResizeResponse>, Status> {
        Service::resize(self, req.into_inner()).await?;
        Ok(Response::new(ResizeResponse {}))
    }

    async fn archive_stat(
        &self,
        req: Request<ArchiveRequest>,
    ) -> Result<Response<PathStat>, Status> {
        Ok(Response::new(
            Service::archive_stat(self, req.into_inner()).await?,
        ))
    }

    type ArchiveGetStream = ArchiveStream;

    async fn archive_get(
        &self,
        req: Request<ArchiveRequest>,
    ) -> Result<Response<Self::ArchiveGetStream>, Status> {
        let rx = Service::archive_get(self, req.into_inner()).await?;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn archive_put(
        &self,
        req: Request<tonic::Streaming<ArchivePutInput>>,
    ) -> Result<Response<ArchivePutResponse>, Status> {
        Service::archive_put(self, req.into_inner()).await?;
        Ok(Response::new(ArchivePutResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGTERM").unwrap(), 15);
        assert_eq!(parse_signal("kill").unwrap(), 9);
        assert_eq!(parse_signal("2").unwrap(), 2);
        assert!(parse_signal("SIGNOPE").is_err());
    }

    #[test]
    fn oom_kill_counts() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        let v2 = "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(oom_kill_count(v1), 2);
        assert_eq!(oom_kill_count(v2), 1);
        assert_eq!(oom_kill_count("oom_kill_disable 0\n"), 0);
    }
}
