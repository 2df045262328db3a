//! logd's SQLite records: one row per container log, one cursor per (container, session).

use sqlx::SqlitePool;

/// A container log's record.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LogRecord {
    /// The container's ID.
    pub container_id: String,
    /// "json-file" or "none".
    pub driver: String,
    /// The json-file path ("" for "none").
    pub log_path: String,
    /// Driver options as a JSON object.
    pub options: String,
    /// A run is producing output (between Open and Close).
    pub live: bool,
    /// Durable, acknowledged length of the log file.
    pub committed_size: i64,
    /// A rotation was under way.
    pub rotating: bool,
}

/// All log records.
pub async fn all_logs(pool: &SqlitePool) -> Result<Vec<LogRecord>, sqlx::Error> {
    sqlx::query_as::<_, LogRecord>(
        "SELECT container_id, driver, log_path, options, live, committed_size, rotating FROM logs",
    )
    .fetch_all(pool)
    .await
}

/// All cursors of one container: (session, seq).
pub async fn cursors(pool: &SqlitePool, id: &str) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as::<_, (String, i64)>("SELECT session, seq FROM cursors WHERE container_id = ?")
        .bind(id)
        .fetch_all(pool)
        .await
}

/// Creates the record, or updates driver/path (and options unless empty) of an existing
/// one; marks it live.
pub async fn upsert_open(
    pool: &SqlitePool,
    id: &str,
    driver: &str,
    log_path: &str,
    options: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO logs (container_id, driver, log_path, options, live, committed_size, created_at)
         VALUES (?, ?, ?, ?, 1, 0, ?)
         ON CONFLICT(container_id) DO UPDATE SET
           driver = excluded.driver, log_path = excluded.log_path,
           options = CASE WHEN excluded.options = '{}' THEN logs.options ELSE excluded.options END,
           live = 1",
    )
    .bind(id)
    .bind(driver)
    .bind(log_path)
    .bind(options)
    .bind(chrono::Utc::now().to_rfc3339())
    .execute(pool)
    .await?;
    Ok(())
}

/// Sets the live flag.
pub async fn set_live(pool: &SqlitePool, id: &str, live: bool) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE logs SET live = ? WHERE container_id = ?")
        .bind(live)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Sets the committed size (used by start-up reconciliation when the file is shorter).
pub async fn set_committed_size(pool: &SqlitePool, id: &str, size: u64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE logs SET committed_size = ? WHERE container_id = ?")
        .bind(to_i64(size))
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Records a durable batch: the new file size and the sessions' new cursors, in one
/// transaction, so after a crash the cursor and the committed file length agree.
pub async fn commit_batch(
    pool: &SqlitePool,
    id: &str,
    size: u64,
    cursors: &[(String, u64)],
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query("UPDATE logs SET committed_size = ? WHERE container_id = ?")
        .bind(to_i64(size))
        .bind(id)
        .execute(&mut *tx)
        .await?;
    for (session, seq) in cursors {
        sqlx::query(
            "INSERT INTO cursors (container_id, session, seq) VALUES (?, ?, ?)
             ON CONFLICT(container_id, session) DO UPDATE SET seq = excluded.seq",
        )
        .bind(id)
        .bind(session)
        .bind(to_i64(*seq))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Marks a rotation as started (before any file moves).
pub async fn begin_rotation(pool: &SqlitePool, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE logs SET rotating = 1 WHERE container_id = ?")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Marks a rotation as done: the new current file is empty.
pub async fn finish_rotation(pool: &SqlitePool, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE logs SET rotating = 0, committed_size = 0 WHERE container_id = ?")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes the record and its cursors.
pub async fn delete(pool: &SqlitePool, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM logs WHERE container_id = ?")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// SQLite integers are signed; sizes and seqs never reach 2^63.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
