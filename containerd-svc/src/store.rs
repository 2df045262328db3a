//! Container records in SQLite.

use crate::Error;
use berth_proto::containers::{Container, ContainerSpec};
use prost::Message;
use sqlx::SqlitePool;

/// One row of `containers`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Record {
    pub id: String,
    pub name: String,
    pub spec: Vec<u8>,
    pub created: String,
    pub state: String,
    pub pid: i64,
    pub exit_code: i64,
    pub started_at: String,
    pub finished_at: String,
    pub error: String,
    pub restart_count: i64,
    pub has_shim: i64,
    /// Its user stopped or killed it: the restart policy leaves it down.
    pub manually_stopped: i64,
    /// The delay before the last policy restart (the back-off doubles it).
    pub restart_delay_ms: i64,
    /// Docker's Health object as JSON ('' without a healthcheck).
    pub health: String,
    /// The OOM killer struck during the last run.
    pub oom_killed: i64,
}

impl Record {
    /// The stored spec.
    pub fn spec(&self) -> Result<ContainerSpec, Error> {
        ContainerSpec::decode(self.spec.as_slice())
            .map_err(|e| Error::Internal(format!("corrupt spec of {}: {e}", self.id)))
    }

    /// The API view.
    pub fn to_container(&self) -> Result<Container, Error> {
        Ok(Container {
            spec: Some(self.spec()?),
            created: self.created.clone(),
            state: self.state.clone(),
            pid: self.pid as i32,
            exit_code: self.exit_code as i32,
            started_at: self.started_at.clone(),
            finished_at: self.finished_at.clone(),
            error: self.error.clone(),
            oom_killed: self.oom_killed != 0,
            restart_count: self.restart_count as i32,
            health_json: self.health.clone(),
        })
    }
}

/// Inserts a new record; a UNIQUE violation comes back as the sqlx error.
pub async fn insert(
    pool: &SqlitePool,
    spec: &ContainerSpec,
    created: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO containers (id, name, spec, created, state) VALUES (?, ?, ?, ?, 'created')",
    )
    .bind(&spec.id)
    .bind(&spec.name)
    .bind(spec.encode_to_vec())
    .bind(created)
    .execute(pool)
    .await?;
    Ok(())
}

/// `SELECT <every Record column> FROM containers <rest>`, as a static string.
macro_rules! select_records {
    ($rest:literal) => {
        concat!(
            "SELECT id, name, spec, created, state, pid, exit_code, started_at, finished_at, error, restart_count, has_shim, manually_stopped, restart_delay_ms, health, oom_killed FROM containers ",
            $rest
        )
    };
}

/// Stores the container's health (Docker's Health object as JSON).
pub async fn set_health(pool: &SqlitePool, id: &str, health_json: &str) -> Result<(), Error> {
    sqlx::query("UPDATE containers SET health = ? WHERE id = ?")
        .bind(health_json)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// By exact id.
pub async fn get(pool: &SqlitePool, id: &str) -> Result<Option<Record>, Error> {
    Ok(sqlx::query_as::<_, Record>(select_records!("WHERE id = ?"))
        .bind(id)
        .fetch_optional(pool)
        .await?)
}

/// By exact name.
pub async fn get_by_name(pool: &SqlitePool, name: &str) -> Result<Option<Record>, Error> {
    Ok(
        sqlx::query_as::<_, Record>(select_records!("WHERE name = ?"))
            .bind(name)
            .fetch_optional(pool)
            .await?,
    )
}

/// Ids starting with `prefix` (at most 2: enough to detect ambiguity).
pub async fn by_prefix(pool: &SqlitePool, prefix: &str) -> Result<Vec<Record>, Error> {
    // Only hex reaches here, so no LIKE metacharacters.
    Ok(
        sqlx::query_as::<_, Record>(select_records!("WHERE id LIKE ? || '%' LIMIT 2"))
            .bind(prefix)
            .fetch_all(pool)
            .await?,
    )
}

/// All records, newest first.
pub async fn list(pool: &SqlitePool) -> Result<Vec<Record>, Error> {
    Ok(
        sqlx::query_as::<_, Record>(select_records!("ORDER BY created DESC"))
            .fetch_all(pool)
            .await?,
    )
}

/// The shim reported the container started.
pub async fn set_running(
    pool: &SqlitePool,
    id: &str,
    pid: i32,
    started_at: &str,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE containers SET state = 'running', pid = ?, started_at = ?, finished_at = '', exit_code = 0, error = '', oom_killed = 0, has_shim = 1 WHERE id = ?",
    )
    .bind(pid)
    .bind(started_at)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Start failed: the state stays as it was, the code and reason are kept (Docker shows
/// them in inspect).
pub async fn set_start_failed(
    pool: &SqlitePool,
    id: &str,
    code: i32,
    error: &str,
) -> Result<(), Error> {
    sqlx::query("UPDATE containers SET exit_code = ?, error = ? WHERE id = ?")
        .bind(code)
        .bind(error)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Records an exit if the container is still recorded as running with `pid`. Returns
/// whether this call made the transition (so "die" is emitted exactly once).
pub async fn set_exited(
    pool: &SqlitePool,
    id: &str,
    pid: i32,
    code: i32,
    finished_at: &str,
    error: &str,
    oom_killed: bool,
) -> Result<bool, Error> {
    let r = sqlx::query(
        "UPDATE containers SET state = 'exited', exit_code = ?, finished_at = ?, error = ?, oom_killed = ?, pid = 0 WHERE id = ? AND state IN ('running', 'paused') AND pid = ?",
    )
    .bind(code)
    .bind(finished_at)
    .bind(error)
    .bind(oom_killed)
    .bind(id)
    .bind(pid)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// A shim is about to be spawned: marked first, so a crash of berth-containerd during
/// Start still leads reconcile to the shim.
pub async fn mark_shim(pool: &SqlitePool, id: &str) -> Result<(), Error> {
    sqlx::query("UPDATE containers SET has_shim = 1 WHERE id = ?")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// The shim is gone (shut down or dead).
pub async fn clear_shim(pool: &SqlitePool, id: &str) -> Result<(), Error> {
    sqlx::query("UPDATE containers SET has_shim = 0 WHERE id = ?")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Sets the state without other changes (e.g. "removing").
pub async fn set_state(pool: &SqlitePool, id: &str, state: &str) -> Result<(), Error> {
    sqlx::query("UPDATE containers SET state = ? WHERE id = ?")
        .bind(state)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Records whether its user stopped the container (start clears it).
pub async fn set_manually_stopped(pool: &SqlitePool, id: &str, stopped: bool) -> Result<(), Error> {
    sqlx::query("UPDATE containers SET manually_stopped = ? WHERE id = ?")
        .bind(stopped)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// An exited container waits for its policy restart. Returns whether it was exited.
pub async fn set_restarting(pool: &SqlitePool, id: &str, delay_ms: i64) -> Result<bool, Error> {
    let r = sqlx::query(
        "UPDATE containers SET state = 'restarting', restart_delay_ms = ? WHERE id = ? AND state = 'exited'",
    )
    .bind(delay_ms)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// A pending policy restart is called off (stop, kill): the container stays exited.
pub async fn cancel_restart(pool: &SqlitePool, id: &str) -> Result<bool, Error> {
    let r = sqlx::query(
        "UPDATE containers SET state = 'exited', manually_stopped = 1 WHERE id = ? AND state = 'restarting'",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// One more policy restart.
pub async fn count_restart(pool: &SqlitePool, id: &str) -> Result<(), Error> {
    sqlx::query("UPDATE containers SET restart_count = restart_count + 1 WHERE id = ?")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// A new name (and the spec that carries it); a UNIQUE violation comes back as is.
pub async fn rename(pool: &SqlitePool, id: &str, spec: &ContainerSpec) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE containers SET name = ?, spec = ? WHERE id = ?")
        .bind(&spec.name)
        .bind(spec.encode_to_vec())
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// The spec changed (`docker update`).
pub async fn set_spec(pool: &SqlitePool, id: &str, spec: &ContainerSpec) -> Result<(), Error> {
    sqlx::query("UPDATE containers SET spec = ? WHERE id = ?")
        .bind(spec.encode_to_vec())
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes the record.
pub async fn delete(pool: &SqlitePool, id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM containers WHERE id = ?")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}
