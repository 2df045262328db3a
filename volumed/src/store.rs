//! Volume records (SQLite) and their directories, kept in step.
//!
//! Directories are made under a temporary name (`.creating-<rand>`) and renamed into
//! place inside the transaction that inserts the record; removals rename the directory
//! away (`.removing-<rand>-<name>`) inside the transaction that deletes the record. Volume
//! names cannot start with '.', so temporary names never clash with volumes, and start-up
//! reconciliation knows what every leftover means.

use crate::error::VolumeError;
use sqlx::{SqliteConnection, SqlitePool};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

const CREATING: &str = ".creating-";
const REMOVING: &str = ".removing-";
/// Docker (23+) marks anonymous volumes with this label; `volume prune` relies on it.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";
/// Options Docker's local driver accepts.
const LOCAL_OPTIONS: [&str; 4] = ["type", "device", "o", "size"];

/// A volume record with the containers using it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Unique name.
    pub name: String,
    /// Always "local".
    pub driver: String,
    /// `<data-root>/volumed/volumes/<name>/_data`.
    pub mountpoint: String,
    /// RFC 3339.
    pub created_at: String,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// Driver options.
    pub options: BTreeMap<String, String>,
    /// Created for a container's anonymous mount.
    pub anonymous: bool,
    /// Containers using it, sorted.
    pub used_by: Vec<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct VolumeRow {
    name: String,
    driver: String,
    mountpoint: String,
    created_at: String,
    labels: String,
    options: String,
    anonymous: bool,
}

impl VolumeRow {
    fn into_volume(self, used_by: Vec<String>) -> Volume {
        Volume {
            name: self.name,
            driver: self.driver,
            mountpoint: self.mountpoint,
            created_at: self.created_at,
            labels: serde_json::from_str(&self.labels).unwrap_or_default(),
            options: serde_json::from_str(&self.options).unwrap_or_default(),
            anonymous: self.anonymous,
            used_by,
        }
    }
}

/// A container's requested volume mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRequest {
    /// Empty: a new anonymous volume.
    pub name: String,
    /// Path inside the container.
    pub destination: String,
    /// Mount read-only.
    pub read_only: bool,
}

/// A resolved mount: which host directory to bind where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The volume.
    pub name: String,
    /// Host path to bind-mount (the volume's mountpoint).
    pub source: String,
    /// Path inside the container.
    pub destination: String,
    /// Mount read-only.
    pub read_only: bool,
    /// The volume is anonymous.
    pub anonymous: bool,
}

/// The volume store: `<data-root>/volumed/` and its database.
#[derive(Clone)]
pub struct VolumeStore {
    pool: SqlitePool,
    root: PathBuf,
}

/// Docker's local-driver name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn validate_name(name: &str) -> Result<(), VolumeError> {
    if name.len() == 1 {
        return Err(VolumeError::NameTooShort(name.to_string()));
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(VolumeError::InvalidName(name.to_string()))
    }
}

/// `n` random bytes as lowercase hex.
fn random_hex(n: usize) -> Result<String, VolumeError> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| VolumeError::io("reading /dev/urandom", e))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn exists(p: &Path) -> bool {
    tokio::fs::try_exists(p).await.unwrap_or(false)
}

async fn remove_tree(p: &Path) -> Result<(), VolumeError> {
    match tokio::fs::remove_dir_all(p).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(VolumeError::io(format!("removing {}", p.display()), e)),
    }
}

async fn fetch_volume(
    conn: &mut SqliteConnection,
    name: &str,
) -> Result<Option<VolumeRow>, sqlx::Error> {
    sqlx::query_as::<_, VolumeRow>(
        "SELECT name, driver, mountpoint, created_at, labels, options, anonymous
         FROM volumes WHERE name = ?",
    )
    .bind(name)
    .fetch_optional(conn)
    .await
}

async fn users(conn: &mut SqliteConnection, name: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar::<_, String>(
        "SELECT DISTINCT container_id FROM usage WHERE volume_name = ? ORDER BY container_id",
    )
    .bind(name)
    .fetch_all(conn)
    .await
}

/// Directories created by a transaction still open, removed if it does not commit.
#[derive(Default)]
struct Created(Vec<PathBuf>);

impl Created {
    async fn undo(self) {
        for d in self.0 {
            if let Err(e) = remove_tree(&d).await {
                tracing::warn!("undoing volume directory: {e}");
            }
        }
    }
}

impl VolumeStore {
    /// Every container with a usage record.
    pub async fn attached_containers(&self) -> Result<Vec<String>, VolumeError> {
        Ok(
            sqlx::query_scalar::<_, String>("SELECT DISTINCT container_id FROM usage")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// A store over `pool` keeping volumes under `root` (`<data-root>/volumed`).
    pub fn new(pool: SqlitePool, root: PathBuf) -> Self {
        Self { pool, root }
    }

    fn volumes_dir(&self) -> PathBuf {
        self.root.join("volumes")
    }

    fn volume_dir(&self, name: &str) -> PathBuf {
        self.volumes_dir().join(name)
    }

    /// The mountpoint of `name`.
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        self.volume_dir(name).join("_data")
    }

    /// Start-up reconciliation: finishes removals cut short by a crash, drops half-made
    /// directories, and re-creates the directory of every record that lacks one (e.g. a
    /// new, empty data-root mount).
    pub async fn reconcile(&self) -> Result<(), VolumeError> {
        let vdir = self.volumes_dir();
        tokio::fs::create_dir_all(&vdir)
            .await
            .map_err(|e| VolumeError::io(format!("creating {}", vdir.display()), e))?;
        let mut leftovers = Vec::new();
        let mut rd = tokio::fs::read_dir(&vdir)
            .await
            .map_err(|e| VolumeError::io(format!("listing {}", vdir.display()), e))?;
        while let Some(ent) = rd
            .next_entry()
            .await
            .map_err(|e| VolumeError::io(format!("listing {}", vdir.display()), e))?
        {
            let fname = ent.file_name().to_string_lossy().into_owned();
            if fname.starts_with(CREATING) {
                leftovers.push((ent.path(), None));
            } else if let Some(rest) = fname.strip_prefix(REMOVING) {
                // `.removing-<16 hex>-<name>`.
                let name = rest.get(17..).map(str::to_string);
                leftovers.push((ent.path(), name));
            }
        }
        for (path, removing) in leftovers {
            if let Some(name) = removing
                && !exists(&self.volume_dir(&name)).await
            {
                // The record's deletion may not have committed: finish the removal.
                let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
                sqlx::query("DELETE FROM usage WHERE volume_name = ?")
                    .bind(&name)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM volumes WHERE name = ?")
                    .bind(&name)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                tracing::info!(volume = %name, "finished an interrupted volume removal");
            }
            tracing::info!(path = %path.display(), "removing leftover volume directory");
            remove_tree(&path).await?;
        }
        let names: Vec<String> = sqlx::query_scalar("SELECT name FROM volumes")
            .fetch_all(&self.pool)
            .await?;
        for name in &names {
            let mp = self.mountpoint(name);
            if !exists(&mp).await {
                tracing::warn!(volume = %name, "volume directory missing, re-creating it");
                tokio::fs::create_dir_all(&mp)
                    .await
                    .map_err(|e| VolumeError::io(format!("creating {}", mp.display()), e))?;
            }
        }
        tracing::info!(volumes = names.len(), "reconciled volumes");
        Ok(())
    }

    /// Creates a volume, or returns the existing one of that name (as Docker does).
    /// An empty name gets a random 64-hex name.
    pub async fn create(
        &self,
        name: &str,
        driver: &str,
        labels: BTreeMap<String, String>,
        options: BTreeMap<String, String>,
    ) -> Result<Volume, VolumeError> {
        if !driver.is_empty() && driver != "local" {
            return Err(VolumeError::UnknownDriver(driver.to_string()));
        }
        let name = if name.is_empty() {
            random_hex(32)?
        } else {
            validate_name(name)?;
            name.to_string()
        };
        if let Some(opt) = options
            .keys()
            .find(|k| !LOCAL_OPTIONS.contains(&k.as_str()))
        {
            return Err(VolumeError::InvalidOption {
                name,
                option: opt.clone(),
            });
        }
        let mut created = Created::default();
        let res = async {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let row = self
                .create_locked(&mut tx, &name, &labels, &options, false, &mut created)
                .await?;
            let used_by = users(&mut tx, &name).await?;
            tx.commit().await?;
            Ok::<_, VolumeError>(row.into_volume(used_by))
        }
        .await;
        if res.is_err() {
            created.undo().await;
        }
        res
    }

    /// Returns the record of `name`, creating it and its directory if missing. Runs in
    /// the caller's transaction; directories it made are pushed to `created` so the
    /// caller can remove them if the transaction does not commit.
    async fn create_locked(
        &self,
        conn: &mut SqliteConnection,
        name: &str,
        labels: &BTreeMap<String, String>,
        options: &BTreeMap<String, String>,
        anonymous: bool,
        created: &mut Created,
    ) -> Result<VolumeRow, VolumeError> {
        if let Some(row) = fetch_volume(conn, name).await? {
            return Ok(row);
        }
        let tmp = self
            .volumes_dir()
            .join(format!("{CREATING}{}", random_hex(8)?));
        tokio::fs::create_dir_all(tmp.join("_data"))
            .await
            .map_err(|e| VolumeError::io(format!("creating {}", tmp.display()), e))?;
        let row = VolumeRow {
            name: name.to_string(),
            driver: "local".to_string(),
            mountpoint: self.mountpoint(name).display().to_string(),
            created_at: now_rfc3339(),
            labels: serde_json::to_string(labels).unwrap_or_else(|_| "{}".into()),
            options: serde_json::to_string(options).unwrap_or_else(|_| "{}".into()),
            anonymous,
        };
        let inserted = sqlx::query(
            "INSERT INTO volumes (name, driver, mountpoint, created_at, labels, options, anonymous)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&row.name)
        .bind(&row.driver)
        .bind(&row.mountpoint)
        .bind(&row.created_at)
        .bind(&row.labels)
        .bind(&row.options)
        .bind(row.anonymous)
        .execute(&mut *conn)
        .await;
        if let Err(e) = inserted {
            remove_tree(&tmp).await?;
            return Err(e.into());
        }
        let dest = self.volume_dir(name);
        match tokio::fs::rename(&tmp, &dest).await {
            Ok(()) => created.0.push(dest),
            Err(e) if exists(&dest).await => {
                // A directory without a record (e.g. state.db lost): adopt it and its
                // data, as Docker's local driver does.
                tracing::warn!(volume = %name, "adopting existing volume directory ({e})");
                remove_tree(&tmp).await?;
                let mp = dest.join("_data");
                tokio::fs::create_dir_all(&mp)
                    .await
                    .map_err(|e| VolumeError::io(format!("creating {}", mp.display()), e))?;
            }
            Err(e) => {
                remove_tree(&tmp).await?;
                return Err(VolumeError::io(format!("creating {}", dest.display()), e));
            }
        }
        Ok(row)
    }

    /// The volume `name` with its users.
    pub async fn get(&self, name: &str) -> Result<Volume, VolumeError> {
        let mut conn = self.pool.acquire().await?;
        let row = fetch_volume(&mut conn, name)
            .await?
            .ok_or_else(|| VolumeError::NotFound(name.to_string()))?;
        let used_by = users(&mut conn, name).await?;
        Ok(row.into_volume(used_by))
    }

    /// Every volume with its users, by name.
    pub async fn list(&self) -> Result<Vec<Volume>, VolumeError> {
        let rows = sqlx::query_as::<_, VolumeRow>(
            "SELECT name, driver, mountpoint, created_at, labels, options, anonymous
             FROM volumes ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        let uses: Vec<(String, String)> = sqlx::query_as(
            "SELECT DISTINCT volume_name, container_id FROM usage
             WHERE volume_name IS NOT NULL ORDER BY container_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut by_volume: HashMap<String, Vec<String>> = HashMap::new();
        for (v, c) in uses {
            by_volume.entry(v).or_default().push(c);
        }
        Ok(rows
            .into_iter()
            .map(|r| {
                let used = by_volume.remove(&r.name).unwrap_or_default();
                r.into_volume(used)
            })
            .collect())
    }

    /// Removes an unused volume and its directory. With `force`, a missing volume is
    /// success (Docker's `volume rm -f`); a volume in use is refused either way.
    pub async fn remove(&self, name: &str, force: bool) -> Result<(), VolumeError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if fetch_volume(&mut tx, name).await?.is_none() {
            return if force {
                Ok(())
            } else {
                Err(VolumeError::NotFound(name.to_string()))
            };
        }
        let containers = users(&mut tx, name).await?;
        if !containers.is_empty() {
            return Err(VolumeError::InUse {
                name: name.to_string(),
                containers,
            });
        }
        let doomed = self.retire_locked(&mut tx, name).await?;
        self.commit_removal(tx, doomed).await
    }

    /// Moves the volume's directory aside and deletes its record, in the caller's
    /// transaction. Returns (moved-aside path, original path) if there was a directory.
    async fn retire_locked(
        &self,
        conn: &mut SqliteConnection,
        name: &str,
    ) -> Result<Option<(PathBuf, PathBuf)>, VolumeError> {
        let dir = self.volume_dir(name);
        let aside = self
            .volumes_dir()
            .join(format!("{REMOVING}{}-{name}", random_hex(8)?));
        let moved = match tokio::fs::rename(&dir, &aside).await {
            Ok(()) => Some((aside, dir)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(VolumeError::io(format!("removing {}", dir.display()), e)),
        };
        let deleted = sqlx::query("DELETE FROM volumes WHERE name = ?")
            .bind(name)
            .execute(&mut *conn)
            .await;
        if let Err(e) = deleted {
            if let Some((aside, dir)) = &moved {
                let _ = tokio::fs::rename(aside, dir).await;
            }
            return Err(e.into());
        }
        Ok(moved)
    }

    /// Commits a transaction that retired volumes, then deletes their directories (or
    /// puts them back if the commit failed).
    async fn commit_removal(
        &self,
        tx: sqlx::Transaction<'static, sqlx::Sqlite>,
        doomed: impl IntoIterator<Item = (PathBuf, PathBuf)>,
    ) -> Result<(), VolumeError> {
        let doomed: Vec<_> = doomed.into_iter().collect();
        if let Err(e) = tx.commit().await {
            for (aside, dir) in &doomed {
                let _ = tokio::fs::rename(aside, dir).await;
            }
            return Err(e.into());
        }
        for (aside, _) in doomed {
            remove_tree(&aside).await?;
        }
        Ok(())
    }

    /// Records the container's use of volumes, creating missing named and anonymous
    /// ones, all or nothing. A container already attached gets its recorded mounts back
    /// unchanged (so a retry creates no second anonymous volume).
    #[tracing::instrument(name = "volumes.attach", skip_all, fields(container.id = container_id))]
    pub async fn attach(
        &self,
        container_id: &str,
        mounts: &[MountRequest],
    ) -> Result<Vec<Mount>, VolumeError> {
        if container_id.is_empty() {
            return Err(VolumeError::InvalidArgument(
                "container id is empty".to_string(),
            ));
        }
        for m in mounts {
            if !m.name.is_empty() {
                validate_name(&m.name)?;
            }
            if m.destination.is_empty() {
                return Err(VolumeError::InvalidArgument(format!(
                    "invalid mount config for volume {:?}: destination is empty",
                    m.name
                )));
            }
        }
        let mut created = Created::default();
        let res = async {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let attached: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM usage WHERE container_id = ?")
                    .bind(container_id)
                    .fetch_one(&mut *tx)
                    .await?;
            if attached == 0 {
                for m in mounts {
                    let anonymous = m.name.is_empty();
                    let (name, labels) = if anonymous {
                        let labels = BTreeMap::from([(ANONYMOUS_LABEL.to_string(), String::new())]);
                        (random_hex(32)?, labels)
                    } else {
                        (m.name.clone(), BTreeMap::new())
                    };
                    self.create_locked(
                        &mut tx,
                        &name,
                        &labels,
                        &BTreeMap::new(),
                        anonymous,
                        &mut created,
                    )
                    .await?;
                    sqlx::query(
                        "INSERT INTO usage (container_id, volume_name, destination, read_only)
                         VALUES (?, ?, ?, ?)",
                    )
                    .bind(container_id)
                    .bind(&name)
                    .bind(&m.destination)
                    .bind(m.read_only)
                    .execute(&mut *tx)
                    .await?;
                }
                if mounts.is_empty() {
                    sqlx::query("INSERT INTO usage (container_id, volume_name) VALUES (?, NULL)")
                        .bind(container_id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            let out = self.mounts_of(&mut tx, container_id).await?;
            tx.commit().await?;
            Ok::<_, VolumeError>(out)
        }
        .await;
        if res.is_err() {
            created.undo().await;
        }
        res
    }

    async fn mounts_of(
        &self,
        conn: &mut SqliteConnection,
        container_id: &str,
    ) -> Result<Vec<Mount>, VolumeError> {
        let rows: Vec<(String, String, bool, String, bool)> = sqlx::query_as(
            "SELECT u.volume_name, u.destination, u.read_only, v.mountpoint, v.anonymous
             FROM usage u JOIN volumes v ON v.name = u.volume_name
             WHERE u.container_id = ? ORDER BY u.id",
        )
        .bind(container_id)
        .fetch_all(conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, destination, read_only, source, anonymous)| Mount {
                name,
                source,
                destination,
                read_only,
                anonymous,
            })
            .collect())
    }

    /// Drops the container's usage records; with `remove_anonymous`, also deletes its
    /// anonymous volumes that no other container uses. Missing is success.
    pub async fn detach(
        &self,
        container_id: &str,
        remove_anonymous: bool,
    ) -> Result<(), VolumeError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let anon: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT v.name FROM usage u JOIN volumes v ON v.name = u.volume_name
             WHERE u.container_id = ? AND v.anonymous = 1",
        )
        .bind(container_id)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM usage WHERE container_id = ?")
            .bind(container_id)
            .execute(&mut *tx)
            .await?;
        let mut doomed = Vec::new();
        if remove_anonymous {
            for name in anon {
                if !users(&mut tx, &name).await?.is_empty() {
                    continue;
                }
                match self.retire_locked(&mut tx, &name).await {
                    Ok(moved) => doomed.extend(moved),
                    Err(e) => {
                        for (aside, dir) in &doomed {
                            let _ = tokio::fs::rename(aside, dir).await;
                        }
                        return Err(e);
                    }
                }
            }
        }
        self.commit_removal(tx, doomed).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_local_driver_rule() {
        for ok in ["ab", "my-vol", "A.b_c-1", "0x"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        assert!(matches!(
            validate_name("a"),
            Err(VolumeError::NameTooShort(_))
        ));
        for bad in ["-ab", ".ab", "_ab", "a/b", "a b", "/abs/path", "ünï", ""] {
            assert!(
                matches!(validate_name(bad), Err(VolumeError::InvalidName(_))),
                "{bad}"
            );
        }
        assert_eq!(
            validate_name("a/b").unwrap_err().to_string(),
            "create a/b: \"a/b\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
        );
    }

    #[test]
    fn in_use_message_matches_docker() {
        let e = VolumeError::InUse {
            name: "v".into(),
            containers: vec!["a".into(), "b".into()],
        };
        assert_eq!(e.to_string(), "remove v: volume is in use - [a, b]");
    }

    async fn store() -> (tempfile::TempDir, VolumeStore) {
        let dir = tempfile::tempdir().unwrap();
        let pool = berth_kit::db::open(&dir.path().join("state.db"), &crate::MIGRATOR)
            .await
            .unwrap();
        let s = VolumeStore::new(pool, dir.path().to_path_buf());
        s.reconcile().await.unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn failed_attach_leaves_nothing_behind() {
        let (_d, s) = store().await;
        // A file where the second volume's directory must go makes its creation fail
        // after the first volume was made in the same transaction.
        std::fs::write(s.volume_dir("blocked"), b"x").unwrap();
        let req = |name: &str| MountRequest {
            name: name.into(),
            destination: format!("/{name}"),
            read_only: false,
        };
        assert!(
            s.attach("c2", &[req("fresh"), req("blocked")])
                .await
                .is_err()
        );
        assert!(!s.volume_dir("fresh").exists());
        assert!(matches!(
            s.get("fresh").await,
            Err(VolumeError::NotFound(_))
        ));
        assert!(s.list().await.unwrap().is_empty());
        let mut names: Vec<String> = std::fs::read_dir(s.volumes_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec!["blocked".to_string()]);
    }

    #[tokio::test]
    async fn attach_is_idempotent_and_reconcile_cleans_leftovers() {
        let (_d, s) = store().await;
        let ok = MountRequest {
            name: "keep".into(),
            destination: "/a".into(),
            read_only: false,
        };
        let mounts = s.attach("c1", std::slice::from_ref(&ok)).await.unwrap();
        assert_eq!(mounts.len(), 1);
        // Idempotent: no second volume.
        assert_eq!(s.attach("c1", &[ok]).await.unwrap(), mounts);
        // Reconcile removes half-made directories and completes interrupted removals.
        let vd = s.volumes_dir();
        std::fs::create_dir_all(vd.join(".creating-0011223344556677/_data")).unwrap();
        std::fs::create_dir_all(vd.join(".removing-0011223344556677-gone/_data")).unwrap();
        sqlx::query(
            "INSERT INTO volumes (name, mountpoint, created_at) VALUES ('gone', 'x', 'now')",
        )
        .execute(&s.pool)
        .await
        .unwrap();
        std::fs::remove_dir_all(s.volume_dir("keep")).unwrap();
        s.reconcile().await.unwrap();
        let names: Vec<String> = std::fs::read_dir(&vd)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["keep".to_string()]);
        assert!(s.mountpoint("keep").is_dir());
        assert!(matches!(s.get("gone").await, Err(VolumeError::NotFound(_))));
    }
}
