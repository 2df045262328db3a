//! `docker events`: every event is stored in the gateway's own SQLite (so `--since`
//! replays across restarts) and then broadcast to the streams that follow.

use crate::AppState;
use crate::error::ApiError;
use crate::util::{parse_filters, parse_unix_time_param};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::Response;
use serde_json::{Value, json};
use sqlx::SqlitePool;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use tokio::sync::broadcast;

/// Embedded migrations of `gateway/migrations`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How many events are kept for replay (dockerd keeps 256 in memory).
const KEEP: i64 = 10_000;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: i64,
    pub time_nano: i64,
    pub kind: String,
    pub action: String,
    pub actor_id: String,
    pub attributes: BTreeMap<String, String>,
}

impl Event {
    /// Docker's JSON message (the legacy status/id/from fields for containers and
    /// images, which older clients read).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "Type": self.kind,
            "Action": self.action,
            "Actor": {"ID": self.actor_id, "Attributes": self.attributes},
            "scope": "local",
            "time": self.time_nano / 1_000_000_000,
            "timeNano": self.time_nano,
        });
        if self.kind == "container" || self.kind == "image" {
            v["status"] = json!(self.action);
            v["id"] = json!(self.actor_id);
            if let Some(img) = self.attributes.get("image") {
                v["from"] = json!(img);
            }
        }
        v
    }

    /// Whether the event passes `docker events --filter`s (each key: any of its values).
    pub fn matches(&self, filters: &BTreeMap<String, BTreeSet<String>>) -> bool {
        let attr = |k: &str| self.attributes.get(k).map(String::as_str).unwrap_or("");
        filters.iter().all(|(key, vals)| {
            vals.is_empty()
                || vals.iter().any(|v| match key.as_str() {
                    "type" => self.kind == *v,
                    "event" => {
                        self.action == *v || self.action.split(':').next().is_some_and(|a| a == v)
                    }
                    "container" => {
                        self.kind == "container"
                            && (self.actor_id.starts_with(v.as_str()) || attr("name") == v)
                    }
                    "image" => {
                        (self.kind == "image" && (self.actor_id == *v || attr("name") == v))
                            || attr("image") == v
                    }
                    "network" => {
                        self.kind == "network"
                            && (self.actor_id.starts_with(v.as_str()) || attr("name") == v)
                    }
                    "volume" => self.kind == "volume" && self.actor_id == *v,
                    "label" => match v.split_once('=') {
                        Some((k, val)) => attr(k) == val,
                        None => self.attributes.contains_key(v),
                    },
                    "scope" => v == "local",
                    _ => false,
                })
        })
    }
}

/// The event store and its live feed; cheap to clone.
#[derive(Clone)]
pub struct Events {
    pool: SqlitePool,
    feed: broadcast::Sender<Event>,
}

fn now_nano() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

impl Events {
    /// Opens (creating) the store at `path`. Events are notices, not state (dockerd
    /// keeps them in memory only): they survive a crash of the gateway, but a commit
    /// does not wait for the disk, which would put a sync on every API call that reports
    /// one. The journal cursor shares each event's transaction, so a power cut that loses
    /// the last ones also rewinds the cursor and containerd-svc's journal replays them.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        let pool =
            berth_kit::db::open_with(path, &MIGRATOR, berth_kit::db::Durability::ProcessCrash)
                .await?;
        let (feed, _) = broadcast::channel(4096);
        Ok(Self { pool, feed })
    }

    /// Stores and broadcasts an event. Failing to store one never fails the operation
    /// it reports: it is logged.
    pub async fn emit(
        &self,
        kind: &str,
        action: &str,
        actor_id: &str,
        attributes: BTreeMap<String, String>,
    ) {
        self.emit_at(now_nano(), kind, action, actor_id, attributes)
            .await;
    }

    /// As [`Events::emit`], at a time the source reported.
    pub async fn emit_at(
        &self,
        time_nano: i64,
        kind: &str,
        action: &str,
        actor_id: &str,
        attributes: BTreeMap<String, String>,
    ) {
        self.store(None, time_nano, kind, action, actor_id, attributes)
            .await;
    }

    /// How far the journal of `source` has been recorded (0: nothing yet).
    pub async fn cursor(&self, source: &str) -> u64 {
        sqlx::query_scalar::<_, i64>("SELECT seq FROM cursors WHERE source = ?")
            .bind(source)
            .fetch_optional(&self.pool)
            .await
            .ok()
            .flatten()
            .map_or(0, |s| s as u64)
    }

    /// Records an event taken from `source`'s journal at `source_seq`, and the cursor
    /// with it in one transaction: after a crash it is recorded exactly once.
    #[allow(clippy::too_many_arguments)]
    pub async fn emit_journaled(
        &self,
        source: &str,
        source_seq: u64,
        time_nano: i64,
        kind: &str,
        action: &str,
        actor_id: &str,
        attributes: BTreeMap<String, String>,
    ) {
        self.store(
            Some((source, source_seq)),
            time_nano,
            kind,
            action,
            actor_id,
            attributes,
        )
        .await;
    }

    async fn store(
        &self,
        cursor: Option<(&str, u64)>,
        time_nano: i64,
        kind: &str,
        action: &str,
        actor_id: &str,
        attributes: BTreeMap<String, String>,
    ) {
        let attrs = serde_json::to_string(&attributes).unwrap_or_else(|_| "{}".into());
        let res = async {
            let mut tx = self.pool.begin().await?;
            let seq = sqlx::query_scalar::<_, i64>(
                "INSERT INTO events (time_nano, type, action, actor_id, attributes) VALUES (?, ?, ?, ?, ?) RETURNING seq",
            )
            .bind(time_nano)
            .bind(kind)
            .bind(action)
            .bind(actor_id)
            .bind(&attrs)
            .fetch_one(&mut *tx)
            .await?;
            if let Some((source, at)) = cursor {
                sqlx::query(
                    "INSERT INTO cursors (source, seq) VALUES (?, ?)
                     ON CONFLICT(source) DO UPDATE SET seq = excluded.seq",
                )
                .bind(source)
                .bind(at as i64)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok::<i64, sqlx::Error>(seq)
        }
        .await;
        let seq = match res {
            Ok(seq) => seq,
            Err(e) => {
                tracing::warn!(kind, action, actor_id, "storing an event: {e}");
                return;
            }
        };
        if seq % 1000 == 0 {
            let _ = sqlx::query("DELETE FROM events WHERE seq <= ?")
                .bind(seq - KEEP)
                .execute(&self.pool)
                .await;
        }
        let _ = self.feed.send(Event {
            seq,
            time_nano,
            kind: kind.to_string(),
            action: action.to_string(),
            actor_id: actor_id.to_string(),
            attributes,
        });
    }

    /// Stored events from `since` (and up to `until`, 0 = no bound), in order.
    pub async fn replay(&self, since: i64, until: i64) -> Result<Vec<Event>, sqlx::Error> {
        let rows: Vec<(i64, i64, String, String, String, String)> = sqlx::query_as(
            "SELECT seq, time_nano, type, action, actor_id, attributes FROM events
             WHERE time_nano >= ? AND (? = 0 OR time_nano <= ?) ORDER BY seq",
        )
        .bind(since)
        .bind(until)
        .bind(until)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, time_nano, kind, action, actor_id, attrs)| Event {
                seq,
                time_nano,
                kind,
                action,
                actor_id,
                attributes: serde_json::from_str(&attrs).unwrap_or_default(),
            })
            .collect())
    }

    /// The live feed (events emitted from now on).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.feed.subscribe()
    }
}

/// Attributes of a container event: image, name, and the container's labels.
pub fn container_attributes(
    name: &str,
    image: &str,
    labels: &HashMap<String, String>,
) -> BTreeMap<String, String> {
    let mut a: BTreeMap<String, String> = labels.clone().into_iter().collect();
    a.insert("image".into(), image.to_string());
    a.insert("name".into(), name.trim_start_matches('/').to_string());
    a
}

const VALID_FILTERS: &[&str] = &[
    "type",
    "event",
    "container",
    "image",
    "network",
    "volume",
    "label",
    "scope",
    "daemon",
    "node",
    "plugin",
    "service",
    "secret",
    "config",
];

/// `GET /events?since=&until=&filters=`: stored events from `since`, then live ones until
/// `until` (or forever), one JSON object per line.
pub async fn stream(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let filters = parse_filters(&q)?;
    if let Some(k) = filters
        .keys()
        .find(|k| !VALID_FILTERS.contains(&k.as_str()))
    {
        return Err(ApiError::bad_request(format!("invalid filter '{k}'")));
    }
    let since = parse_unix_time_param(q.get("since"))?;
    let until = parse_unix_time_param(q.get("until"))?;
    if until > 0 && since > until {
        return Err(ApiError::bad_request(
            "`since` time must be before `until` time",
        ));
    }
    let events = st.events.clone();
    // Subscribe before replaying so nothing falls between the two.
    let mut live = events.subscribe();
    let replayed = if since > 0 || until > 0 {
        let from = if since > 0 { since } else { now_nano() };
        events
            .replay(from, until)
            .await
            .map_err(|e| ApiError::internal(format!("reading events: {e}")))?
    } else {
        Vec::new()
    };
    let last_seq = replayed.last().map(|e| e.seq).unwrap_or(0);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(64);
    let line = |e: &Event| {
        let mut s = e.to_json().to_string();
        s.push('\n');
        bytes::Bytes::from(s)
    };
    tokio::spawn(async move {
        for e in replayed.iter().filter(|e| e.matches(&filters)) {
            if tx.send(Ok(line(e))).await.is_err() {
                return;
            }
        }
        if until > 0 && until <= now_nano() {
            return;
        }
        let deadline = async {
            if until > 0 {
                let wait = (until - now_nano()).max(0) as u64;
                tokio::time::sleep(std::time::Duration::from_nanos(wait)).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                got = live.recv() => match got {
                    Ok(e) if e.seq > last_seq && e.matches(&filters) => {
                        if until > 0 && e.time_nano > until {
                            return;
                        }
                        if tx.send(Ok(line(&e))).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(crate::util::json_stream(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, action: &str, id: &str, attrs: &[(&str, &str)]) -> Event {
        Event {
            seq: 1,
            time_nano: 1_700_000_000_123_456_789,
            kind: kind.into(),
            action: action.into(),
            actor_id: id.into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn f(pairs: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<String>> {
        let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (k, v) in pairs {
            m.entry(k.to_string()).or_default().insert(v.to_string());
        }
        m
    }

    #[test]
    fn json_is_dockers_message() {
        let e = ev(
            "container",
            "die",
            "abc",
            &[("image", "busybox"), ("name", "x"), ("exitCode", "3")],
        );
        let v = e.to_json();
        assert_eq!(v["Type"], "container");
        assert_eq!(v["Action"], "die");
        assert_eq!(v["status"], "die");
        assert_eq!(v["from"], "busybox");
        assert_eq!(v["Actor"]["Attributes"]["exitCode"], "3");
        assert_eq!(v["time"], 1_700_000_000);
        assert_eq!(v["timeNano"], 1_700_000_000_123_456_789i64);
        let n = ev("network", "create", "n1", &[("name", "front")]).to_json();
        assert!(n.get("status").is_none());
    }

    #[test]
    fn filters_select_like_docker() {
        let e = ev(
            "container",
            "exec_start: sh -c true",
            "abc123",
            &[("image", "busybox"), ("name", "web"), ("tier", "front")],
        );
        assert!(e.matches(&f(&[])));
        assert!(e.matches(&f(&[("type", "container")])));
        assert!(!e.matches(&f(&[("type", "image")])));
        assert!(e.matches(&f(&[("event", "exec_start")])));
        assert!(e.matches(&f(&[("event", "die"), ("event", "exec_start")])));
        assert!(e.matches(&f(&[("container", "web")])));
        assert!(e.matches(&f(&[("container", "abc")])));
        assert!(!e.matches(&f(&[("container", "db")])));
        assert!(e.matches(&f(&[("image", "busybox")])));
        assert!(e.matches(&f(&[("label", "tier=front")])));
        assert!(e.matches(&f(&[("label", "tier")])));
        assert!(!e.matches(&f(&[("label", "tier=back")])));
        assert!(!e.matches(&f(&[("type", "container"), ("event", "die")])));
        let v = ev("volume", "create", "data", &[("driver", "local")]);
        assert!(v.matches(&f(&[("volume", "data")])));
        assert!(!v.matches(&f(&[("container", "data")])));
    }

    #[tokio::test]
    async fn stored_events_replay_in_order_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let events = Events::open(&path).await.unwrap();
        let mut live = events.subscribe();
        events
            .emit_at(100, "container", "create", "a", BTreeMap::new())
            .await;
        events
            .emit_at(200, "container", "start", "a", BTreeMap::new())
            .await;
        events
            .emit_at(300, "container", "die", "a", BTreeMap::new())
            .await;
        assert_eq!(live.recv().await.unwrap().action, "create");
        drop(events);
        let events = Events::open(&path).await.unwrap();
        let all: Vec<String> = events
            .replay(1, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(all, ["create", "start", "die"]);
        let window: Vec<String> = events
            .replay(150, 250)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(window, ["start"]);
    }
}
