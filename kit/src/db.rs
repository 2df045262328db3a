//! SQLite: each service's source of truth, opened in WAL mode with embedded migrations.

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::Path;
use std::time::Duration;

/// Opening or migrating a database failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("creating {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("opening {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("migrating {path}: {source}")]
    Migrate {
        path: String,
        source: sqlx::migrate::MigrateError,
    },
}

/// The service's database, for the latency probe of the metrics.
static OPENED: std::sync::OnceLock<SqlitePool> = std::sync::OnceLock::new();

/// Times one small read of the service's database (`None`: no database opened yet, or
/// the read failed).
pub async fn probe_latency() -> Option<Duration> {
    let pool = OPENED.get()?;
    let started = std::time::Instant::now();
    sqlx::query("SELECT count(*) FROM sqlite_master")
        .fetch_one(pool)
        .await
        .ok()?;
    Some(started.elapsed())
}

/// How much a committed transaction survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A power cut: every commit waits for the disk.
    PowerCut,
    /// A crash of the process, not of the machine: commits reach the OS, not the disk
    /// (WAL with `synchronous=NORMAL`; a power cut may lose the last ones, never corrupt).
    ProcessCrash,
}

/// Opens (creating if needed) the database at `path` and applies `migrator`; commits
/// survive a power cut.
pub async fn open(path: &Path, migrator: &Migrator) -> Result<SqlitePool, DbError> {
    open_with(path, migrator, Durability::PowerCut).await
}

/// [`open`] with the durability the data needs.
pub async fn open_with(
    path: &Path,
    migrator: &Migrator,
    durability: Durability,
) -> Result<SqlitePool, DbError> {
    let shown = path.display().to_string();
    if let Some(dir) = path.parent() {
        // The service's own directory: nobody but root reads its database.
        crate::paths::ensure_dir_mode(dir, crate::paths::PRIVATE_DIR_MODE).map_err(|source| {
            DbError::Dir {
                path: dir.display().to_string(),
                source,
            }
        })?;
    }
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match durability {
            Durability::PowerCut => SqliteSynchronous::Full,
            Durability::ProcessCrash => SqliteSynchronous::Normal,
        })
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await
        .map_err(|source| DbError::Open {
            path: shown.clone(),
            source,
        })?;
    migrator
        .run(&pool)
        .await
        .map_err(|source| DbError::Migrate {
            path: shown,
            source,
        })?;
    let _ = OPENED.set(pool.clone());
    Ok(pool)
}

/// True when `err` is a UNIQUE constraint violation (a name already in use).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    static NO_MIGRATIONS: Migrator = Migrator::DEFAULT;

    async fn synchronous_of(pool: &SqlitePool) -> i64 {
        sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(pool)
            .await
            .expect("PRAGMA synchronous")
    }

    #[test]
    fn durability_sets_how_commits_are_synced() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let full = open(&dir.path().join("a.db"), &NO_MIGRATIONS)
                .await
                .unwrap();
            // SQLite: 2 = FULL, 1 = NORMAL.
            assert_eq!(synchronous_of(&full).await, 2);
            let normal = open_with(
                &dir.path().join("b.db"),
                &NO_MIGRATIONS,
                Durability::ProcessCrash,
            )
            .await
            .unwrap();
            assert_eq!(synchronous_of(&normal).await, 1);
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&normal)
                .await
                .unwrap();
            assert_eq!(mode, "wal");
        });
    }
}
