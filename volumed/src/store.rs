//! Volume records (SQLite) and their directories, kept in step.
//!
//! Directories are made under a temporary name (`.creating-<rand>`) and renamed into
//! place inside the transaction that inserts the record; removals rename the directory
//! away (`.removing-<rand>-<name>`) inside the transaction that deletes the record. Volume
//! names cannot start with '.', so temporary names never clash with volumes, and start-up
//! reconciliation knows what every leftover means.
//!
//! A volume with `type`/`device` options is mounted on its `_data` while containers use
//! it (from the first attach to the last detach). Every deletion of a volume directory
//! first detaches whatever is mounted below it, and gives up if that fails.

use crate::copyup::{self, Outcome};
use crate::error::VolumeError;
use crate::mounts::{self, LocalMount};
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
    fn options(&self) -> BTreeMap<String, String> {
        serde_json::from_str(&self.options).unwrap_or_default()
    }

    fn into_volume(self, used_by: Vec<String>) -> Volume {
        Volume {
            options: self.options(),
            name: self.name,
            driver: self.driver,
            mountpoint: self.mountpoint,
            created_at: self.created_at,
            labels: serde_json::from_str(&self.labels).unwrap_or_default(),
            anonymous: self.anonymous,
            used_by,
        }
    }
}

/// A container's requested volume mount.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountRequest {
    /// Empty: a new anonymous volume.
    pub name: String,
    /// Path inside the container.
    pub destination: String,
    /// Mount read-only.
    pub read_only: bool,
    /// Docker's `nocopy`: leave the volume as it is even if empty.
    pub no_copy: bool,
    /// Labels for a volume this attach creates.
    pub labels: BTreeMap<String, String>,
    /// Driver options for a volume this attach creates.
    pub options: BTreeMap<String, String>,
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
    /// This attach created the volume (Docker reports a `volume create` event).
    pub created: bool,
}

/// Docker's volume filters (`docker volume ls --filter`, `volume prune --filter`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Regular expressions, any may match the name.
    pub names: Vec<String>,
    /// Any may equal the driver.
    pub drivers: Vec<String>,
    /// `key` or `key=value`, all must match.
    pub labels: Vec<String>,
    /// Volumes matching all of these are left out.
    pub not_labels: Vec<String>,
    /// Some(true): unused volumes only; Some(false): used ones only.
    pub dangling: Option<bool>,
}

/// Docker's `filters.Args.MatchKVList`: no conditions match everything; otherwise every
/// `key` must be present (with `value`, if given).
fn match_kv_list(conditions: &[String], labels: &BTreeMap<String, String>) -> bool {
    if conditions.is_empty() {
        return true;
    }
    if labels.is_empty() {
        return false;
    }
    conditions.iter().all(|c| match c.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(c),
    })
}

impl Filter {
    /// Whether `v` passes every filter.
    pub fn matches(&self, v: &Volume) -> bool {
        // Docker's `Args.Match`: an exact name, or any regular expression found in it
        // (an invalid expression matches nothing).
        let name_ok = self.names.is_empty()
            || self
                .names
                .iter()
                .any(|n| *n == v.name || regex::Regex::new(n).is_ok_and(|re| re.is_match(&v.name)));
        let driver_ok = self.drivers.is_empty() || self.drivers.contains(&v.driver);
        let labels_ok = match_kv_list(&self.labels, &v.labels)
            && (self.not_labels.is_empty() || !match_kv_list(&self.not_labels, &v.labels));
        let dangling_ok = self.dangling.is_none_or(|d| d == v.used_by.is_empty());
        name_ok && driver_ok && labels_ok && dangling_ok
    }
}

/// What a prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Removed volumes, by name.
    pub deleted: Vec<String>,
    /// Bytes their files took.
    pub space_reclaimed: u64,
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

/// go-units' `RAMInBytes` (binary multipliers: `64m` is 64 MiB); None if malformed.
fn ram_in_bytes(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let t = t.strip_suffix('i').unwrap_or(t);
    let (num, mult) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1u64 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        't' => (&t[..t.len() - 1], 1 << 40),
        'p' => (&t[..t.len() - 1], 1 << 50),
        _ => (t, 1),
    };
    let n: f64 = num.trim().parse().ok().filter(|n: &f64| *n >= 0.0)?;
    Some((n * mult as f64) as u64)
}

/// Docker's local-driver option check (`validateOpts`): known keys only, `type`,
/// `device` and `o` together, and no `size` (it needs quota support).
pub fn validate_options(name: &str, options: &BTreeMap<String, String>) -> Result<(), VolumeError> {
    if let Some(opt) = options
        .keys()
        .find(|k| !LOCAL_OPTIONS.contains(&k.as_str()))
    {
        return Err(VolumeError::InvalidOption {
            name: name.to_string(),
            option: opt.clone(),
        });
    }
    if let Some(size) = options.get("size") {
        match ram_in_bytes(size) {
            None => {
                return Err(VolumeError::InvalidArgument(format!(
                    "create {name}: invalid size: '{size}'"
                )));
            }
            Some(n) if n > 0 => return Err(VolumeError::QuotaUnsupported(name.to_string())),
            Some(_) => {}
        }
    }
    let required: [(&str, &[&str]); 3] = [
        ("device", &["type"]),
        ("type", &["device"]),
        ("o", &["device", "type"]),
    ];
    for (opt, needs) in required {
        if options.contains_key(opt) {
            for need in needs {
                if !options.contains_key(*need) {
                    return Err(VolumeError::MissingOption {
                        name: name.to_string(),
                        option: need.to_string(),
                    });
                }
            }
        }
    }
    Ok(())
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

/// Runs file-system or mount work off the async workers.
async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, VolumeError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| VolumeError::io(what.to_string(), e)),
        Err(e) => Err(VolumeError::io(what.to_string(), std::io::Error::other(e))),
    }
}

/// Deletes a volume directory (or a leftover of one), after detaching anything mounted
/// below it: the delete must never reach through a mount into other files.
async fn remove_tree(p: &Path) -> Result<(), VolumeError> {
    if !exists(p).await {
        return Ok(());
    }
    let dir = p.to_path_buf();
    blocking(&format!("unmounting under {}", p.display()), move || {
        mounts::unmount_all_under(&dir)
    })
    .await?;
    match tokio::fs::remove_dir_all(p).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(VolumeError::io(format!("removing {}", p.display()), e)),
    }
}

async fn is_mounted(p: &Path) -> Result<bool, VolumeError> {
    let p2 = p.to_path_buf();
    blocking(
        &format!("reading the mount table for {}", p.display()),
        move || mounts::is_mounted(&p2),
    )
    .await
}

/// Mounts a volume's filesystem on its `_data`.
async fn mount_volume(m: LocalMount, mountpoint: &Path) -> Result<(), VolumeError> {
    let mp = mountpoint.to_path_buf();
    let res = tokio::task::spawn_blocking(move || mounts::mount(&m, &mp))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    res.map_err(|message| VolumeError::Mount {
        path: mountpoint.display().to_string(),
        message,
    })
}

async fn unmount_volume(mountpoint: &Path) -> Result<(), VolumeError> {
    let mp = mountpoint.to_path_buf();
    blocking(&format!("unmounting {}", mountpoint.display()), move || {
        mounts::unmount_all_under(&mp)
    })
    .await
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

/// Every volume with its users, by name.
async fn list_all(conn: &mut SqliteConnection) -> Result<Vec<Volume>, sqlx::Error> {
    let rows = sqlx::query_as::<_, VolumeRow>(
        "SELECT name, driver, mountpoint, created_at, labels, options, anonymous
         FROM volumes ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await?;
    let uses: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT volume_name, container_id FROM usage
         WHERE volume_name IS NOT NULL ORDER BY container_id",
    )
    .fetch_all(&mut *conn)
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

/// What a transaction still open did on disk, undone if it does not commit: volume
/// directories it created and filesystems it mounted.
#[derive(Default)]
struct Created {
    dirs: Vec<PathBuf>,
    mounted: Vec<PathBuf>,
}

impl Created {
    async fn undo(self) {
        for m in self.mounted {
            if let Err(e) = unmount_volume(&m).await {
                tracing::warn!("undoing a volume mount: {e}");
            }
        }
        for d in self.dirs {
            if let Err(e) = remove_tree(&d).await {
                tracing::warn!("undoing volume directory: {e}");
            }
        }
    }
}

/// Volumes moved aside by a transaction still open: (aside, original) paths.
type Doomed = Vec<(PathBuf, PathBuf)>;

async fn put_back(doomed: &Doomed) {
    for (aside, dir) in doomed {
        let _ = tokio::fs::rename(aside, dir).await;
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
    /// directories, re-creates the directory of every record that lacks one (e.g. a new,
    /// empty data-root mount), and mounts exactly the option volumes containers use.
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
        let mut conn = self.pool.acquire().await?;
        let volumes = list_all(&mut conn).await?;
        drop(conn);
        for v in &volumes {
            let mp = self.mountpoint(&v.name);
            if !exists(&mp).await {
                tracing::warn!(volume = %v.name, "volume directory missing, re-creating it");
                tokio::fs::create_dir_all(&mp)
                    .await
                    .map_err(|e| VolumeError::io(format!("creating {}", mp.display()), e))?;
            }
            let Some(m) = LocalMount::from_options(&v.options) else {
                continue;
            };
            // A crash between a mount and its commit (or a host reboot under running
            // containers) leaves the mount state off; the records are the truth. A volume
            // that cannot be mounted must not keep the others from being served.
            let mounted = is_mounted(&mp).await?;
            let res = if !v.used_by.is_empty() && !mounted {
                tracing::info!(volume = %v.name, "mounting a volume in use");
                mount_volume(m, &mp).await
            } else if v.used_by.is_empty() && mounted {
                tracing::info!(volume = %v.name, "unmounting a volume nobody uses");
                unmount_volume(&mp).await
            } else {
                Ok(())
            };
            if let Err(e) = res {
                tracing::error!(volume = %v.name, "reconciling the volume's mount: {e}");
            }
        }
        tracing::info!(volumes = volumes.len(), "reconciled volumes");
        Ok(())
    }

    /// Creates a volume, or returns the existing one of that name (as Docker does).
    /// An empty name gets a random 64-hex name and Docker's anonymous label (so that
    /// `volume prune` takes it), but is not anonymous for `rm -v`.
    pub async fn create(
        &self,
        name: &str,
        driver: &str,
        mut labels: BTreeMap<String, String>,
        options: BTreeMap<String, String>,
    ) -> Result<Volume, VolumeError> {
        if !driver.is_empty() && driver != "local" {
            return Err(VolumeError::UnknownDriver(driver.to_string()));
        }
        let name = if name.is_empty() {
            labels.insert(ANONYMOUS_LABEL.to_string(), String::new());
            random_hex(32)?
        } else {
            validate_name(name)?;
            name.to_string()
        };
        validate_options(&name, &options)?;
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
            Ok(()) => created.dirs.push(dest),
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

    /// The volumes `filter` selects, with their users, by name.
    pub async fn list(&self, filter: &Filter) -> Result<Vec<Volume>, VolumeError> {
        let mut conn = self.pool.acquire().await?;
        Ok(list_all(&mut conn)
            .await?
            .into_iter()
            .filter(|v| filter.matches(v))
            .collect())
    }

    /// Removes the unused volumes `filter` selects, in one transaction (a volume a
    /// container attaches meanwhile is never taken). As Docker: only anonymous ones
    /// unless `all`, and never volumes with mount options (nothing to reclaim).
    pub async fn prune(&self, filter: &Filter, all: bool) -> Result<Pruned, VolumeError> {
        let mut filter = filter.clone();
        if !all {
            filter.labels.push(ANONYMOUS_LABEL.to_string());
        }
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let doomed_volumes: Vec<Volume> = list_all(&mut tx)
            .await?
            .into_iter()
            .filter(|v| {
                v.driver == "local"
                    && v.used_by.is_empty()
                    && v.options.is_empty()
                    && filter.matches(v)
            })
            .collect();
        let mut pruned = Pruned::default();
        let mut doomed = Doomed::new();
        for v in doomed_volumes {
            let mp = self.mountpoint(&v.name);
            let size = blocking("measuring a volume", move || berth_kit::disk::dir_size(&mp))
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(volume = %v.name, "could not determine the volume's size: {e}");
                    0
                });
            match self.retire_locked(&mut tx, &v.name).await {
                Ok(moved) => doomed.extend(moved),
                Err(e) => {
                    put_back(&doomed).await;
                    return Err(e);
                }
            }
            pruned.space_reclaimed += size;
            pruned.deleted.push(v.name);
        }
        self.commit_removal(tx, doomed).await?;
        Ok(pruned)
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
        let doomed: Doomed = doomed.into_iter().collect();
        if let Err(e) = tx.commit().await {
            put_back(&doomed).await;
            return Err(e.into());
        }
        for (aside, _) in doomed {
            remove_tree(&aside).await?;
        }
        Ok(())
    }

    /// Records the container's use of volumes, creating missing named and anonymous
    /// ones, mounting option volumes and copying the image's content (under `rootfs`)
    /// into empty volumes, all or nothing. A container already attached gets its
    /// recorded mounts back unchanged (so a retry creates no second anonymous volume).
    #[tracing::instrument(name = "volumes.attach", skip_all, fields(container.id = container_id))]
    pub async fn attach(
        &self,
        container_id: &str,
        mounts: &[MountRequest],
        rootfs: Option<&Path>,
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
                    self.attach_one(&mut tx, container_id, m, rootfs, &mut created)
                        .await?;
                }
                if mounts.is_empty() {
                    sqlx::query("INSERT INTO usage (container_id, volume_name) VALUES (?, NULL)")
                        .bind(container_id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            let mut out = self.mounts_of(&mut tx, container_id).await?;
            for m in &mut out {
                m.created = created.dirs.contains(&self.volume_dir(&m.name));
            }
            tx.commit().await?;
            Ok::<_, VolumeError>(out)
        }
        .await;
        if res.is_err() {
            created.undo().await;
        }
        res
    }

    /// One mount of [`Self::attach`], in its transaction.
    async fn attach_one(
        &self,
        conn: &mut SqliteConnection,
        container_id: &str,
        m: &MountRequest,
        rootfs: Option<&Path>,
        created: &mut Created,
    ) -> Result<(), VolumeError> {
        let anonymous = m.name.is_empty();
        let mut labels = m.labels.clone();
        let name = if anonymous {
            labels.insert(ANONYMOUS_LABEL.to_string(), String::new());
            random_hex(32)?
        } else {
            m.name.clone()
        };
        validate_options(&name, &m.options)?;
        let row = self
            .create_locked(&mut *conn, &name, &labels, &m.options, anonymous, created)
            .await?;
        sqlx::query(
            "INSERT INTO usage (container_id, volume_name, destination, read_only)
             VALUES (?, ?, ?, ?)",
        )
        .bind(container_id)
        .bind(&name)
        .bind(&m.destination)
        .bind(m.read_only)
        .execute(&mut *conn)
        .await?;
        let mountpoint = self.mountpoint(&name);
        if let Some(lm) = LocalMount::from_options(&row.options())
            && !is_mounted(&mountpoint).await?
        {
            mount_volume(lm, &mountpoint).await?;
            created.mounted.push(mountpoint.clone());
        }
        if let Some(root) = rootfs
            && !m.no_copy
        {
            let (root, dest, mp) = (root.to_path_buf(), m.destination.clone(), mountpoint);
            let what = format!("copying the image's {} into volume {name}", m.destination);
            let outcome = blocking(&what, move || copyup::copy_up(&root, &dest, &mp)).await?;
            if let Outcome::NotADirectory(p) = outcome
                && anonymous
            {
                return Err(VolumeError::FileExists(p.display().to_string()));
            }
        }
        Ok(())
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
                created: false,
                name,
                source,
                destination,
                read_only,
                anonymous,
            })
            .collect())
    }

    /// Drops the container's usage records, unmounts option volumes nobody uses any
    /// more (Docker unmounts when the last user lets go); with `remove_anonymous`, also
    /// deletes its anonymous volumes that no other container uses. Missing is success.
    pub async fn detach(
        &self,
        container_id: &str,
        remove_anonymous: bool,
    ) -> Result<(), VolumeError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let used: Vec<(String, bool)> = sqlx::query_as(
            "SELECT DISTINCT v.name, v.anonymous FROM usage u JOIN volumes v ON v.name = u.volume_name
             WHERE u.container_id = ?",
        )
        .bind(container_id)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM usage WHERE container_id = ?")
            .bind(container_id)
            .execute(&mut *tx)
            .await?;
        let mut unmounted: Vec<(PathBuf, LocalMount)> = Vec::new();
        let mut doomed = Doomed::new();
        let res = async {
            for (name, anonymous) in &used {
                if !users(&mut tx, name).await?.is_empty() {
                    continue;
                }
                let mp = self.mountpoint(name);
                if let Some(row) = fetch_volume(&mut tx, name).await?
                    && let Some(lm) = LocalMount::from_options(&row.options())
                    && is_mounted(&mp).await?
                {
                    unmount_volume(&mp).await?;
                    unmounted.push((mp, lm));
                }
                if remove_anonymous && *anonymous {
                    doomed.extend(self.retire_locked(&mut tx, name).await?);
                }
            }
            Ok::<_, VolumeError>(())
        }
        .await;
        let committed = match res {
            Ok(()) => tx.commit().await.map_err(VolumeError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = committed {
            // The usage records stay: so must the volumes and their mounts.
            put_back(&doomed).await;
            for (mp, lm) in unmounted {
                if let Err(e) = mount_volume(lm, &mp).await {
                    tracing::warn!("re-mounting {} after a failed detach: {e}", mp.display());
                }
            }
            return Err(e);
        }
        for (aside, _) in doomed {
            remove_tree(&aside).await?;
        }
        Ok(())
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

    fn opts(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_are_checked_as_dockers_local_driver() {
        let err = |kv: &[(&str, &str)]| validate_options("v", &opts(kv)).unwrap_err().to_string();
        assert!(validate_options("v", &opts(&[])).is_ok());
        assert!(
            validate_options(
                "v",
                &opts(&[("type", "tmpfs"), ("device", "tmpfs"), ("o", "size=1m")])
            )
            .is_ok()
        );
        assert_eq!(err(&[("foo", "bar")]), "create v: invalid option: \"foo\"");
        assert_eq!(
            err(&[("type", "tmpfs")]),
            "create v: missing required option: \"device\""
        );
        assert_eq!(
            err(&[("device", "/x")]),
            "create v: missing required option: \"type\""
        );
        assert_eq!(
            err(&[("o", "bind"), ("device", "/x")]),
            "create v: missing required option: \"type\""
        );
        assert_eq!(
            err(&[("size", "10m")]),
            "create v: quota size requested but no quota support"
        );
        assert_eq!(err(&[("size", "ten")]), "create v: invalid size: 'ten'");
        assert!(validate_options("v", &opts(&[("size", "0")])).is_ok());
        assert_eq!(ram_in_bytes("64m"), Some(64 << 20));
        assert_eq!(ram_in_bytes("1.5KiB"), Some(1536));
        assert_eq!(ram_in_bytes("12"), Some(12));
    }

    fn vol(name: &str, labels: &[(&str, &str)], used: bool) -> Volume {
        Volume {
            name: name.into(),
            driver: "local".into(),
            mountpoint: String::new(),
            created_at: String::new(),
            labels: opts(labels),
            options: BTreeMap::new(),
            anonymous: false,
            used_by: if used { vec!["c".into()] } else { vec![] },
        }
    }

    #[test]
    fn filters_match_as_dockers() {
        let a = vol("app-data", &[("team", "a"), ("env", "prod")], true);
        let b = vol("cache.1", &[("team", "b")], false);
        let none = vol("bare", &[], false);
        let f = |f: Filter, v: &Volume| f.matches(v);
        assert!(f(Filter::default(), &a));
        // name: substring or regular expression.
        let by_name = |n: &str| Filter {
            names: vec![n.into()],
            ..Default::default()
        };
        assert!(f(by_name("data"), &a));
        assert!(f(by_name("^app-"), &a));
        assert!(!f(by_name("^data"), &a));
        assert!(f(by_name("cache.1"), &b));
        assert!(!f(by_name("[unclosed"), &a));
        // label: every condition, key or key=value.
        let by_label = |l: &[&str]| Filter {
            labels: l.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert!(f(by_label(&["team"]), &a));
        assert!(f(by_label(&["team=a", "env=prod"]), &a));
        assert!(!f(by_label(&["team=a", "env=dev"]), &a));
        assert!(!f(by_label(&["team"]), &none));
        // label!: leaves out what matches.
        let not = Filter {
            not_labels: vec!["team=a".into()],
            ..Default::default()
        };
        assert!(!f(not.clone(), &a));
        assert!(f(not.clone(), &b));
        assert!(f(not, &none));
        // dangling and driver.
        let dangling = |d: bool| Filter {
            dangling: Some(d),
            ..Default::default()
        };
        assert!(!f(dangling(true), &a));
        assert!(f(dangling(true), &b));
        assert!(f(dangling(false), &a));
        let driver = |d: &str| Filter {
            drivers: vec![d.into()],
            ..Default::default()
        };
        assert!(f(driver("local"), &a));
        assert!(!f(driver("nfs"), &a));
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

    fn req(name: &str, dest: &str) -> MountRequest {
        MountRequest {
            name: name.into(),
            destination: dest.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn failed_attach_leaves_nothing_behind() {
        let (_d, s) = store().await;
        // A file where the second volume's directory must go makes its creation fail
        // after the first volume was made in the same transaction.
        std::fs::write(s.volume_dir("blocked"), b"x").unwrap();
        assert!(
            s.attach(
                "c2",
                &[req("fresh", "/fresh"), req("blocked", "/blocked")],
                None
            )
            .await
            .is_err()
        );
        assert!(!s.volume_dir("fresh").exists());
        assert!(matches!(
            s.get("fresh").await,
            Err(VolumeError::NotFound(_))
        ));
        assert!(s.list(&Filter::default()).await.unwrap().is_empty());
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
        let ok = req("keep", "/a");
        let mounts = s
            .attach("c1", std::slice::from_ref(&ok), None)
            .await
            .unwrap();
        assert_eq!(mounts.len(), 1);
        assert!(mounts[0].created, "the first attach made the volume");
        // Idempotent: no second volume, and this time nothing was created.
        let again = s.attach("c1", &[ok], None).await.unwrap();
        assert!(!again[0].created);
        let mut mounts = mounts;
        mounts[0].created = false;
        assert_eq!(again, mounts);
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

    #[tokio::test]
    async fn prune_takes_unused_anonymous_volumes_unless_all() {
        let (_d, s) = store().await;
        let none = BTreeMap::new();
        s.create("named", "", opts(&[("keep", "no")]), none.clone())
            .await
            .unwrap();
        let unnamed = s.create("", "", none.clone(), none.clone()).await.unwrap();
        assert!(unnamed.labels.contains_key(ANONYMOUS_LABEL));
        assert!(!unnamed.anonymous);
        let used = s.attach("c1", &[req("", "/x")], None).await.unwrap();
        std::fs::write(Path::new(&unnamed.mountpoint).join("f"), b"12345").unwrap();
        let p = s.prune(&Filter::default(), false).await.unwrap();
        assert_eq!(p.deleted, vec![unnamed.name.clone()]);
        assert_eq!(p.space_reclaimed, 5);
        assert!(!Path::new(&unnamed.mountpoint).exists());
        // The anonymous volume in use stays; `all` with a label filter takes only
        // matching named ones.
        assert!(s.get(&used[0].name).await.is_ok());
        let f = Filter {
            labels: vec!["keep=yes".into()],
            ..Default::default()
        };
        assert!(s.prune(&f, true).await.unwrap().deleted.is_empty());
        let p = s.prune(&Filter::default(), true).await.unwrap();
        assert_eq!(p.deleted, vec!["named".to_string()]);
        assert!(s.get(&used[0].name).await.is_ok());
    }

    #[tokio::test]
    async fn removing_a_volume_never_deletes_through_a_mount() {
        let (d, s) = store().await;
        let host = d.path().join("host");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("precious"), b"keep me").unwrap();
        let v = s
            .create("stray", "", BTreeMap::new(), BTreeMap::new())
            .await
            .unwrap();
        // A bind left on the volume (a crash, an operator): removal must detach it
        // before deleting, or it would delete the host's files.
        nix::mount::mount(
            Some(&host),
            Path::new(&v.mountpoint),
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        s.remove("stray", false).await.unwrap();
        assert!(!s.volume_dir("stray").exists());
        assert_eq!(std::fs::read(host.join("precious")).unwrap(), b"keep me");
        assert!(!mounts::is_mounted(Path::new(&v.mountpoint)).unwrap());
    }

    #[tokio::test]
    async fn attach_copies_image_content_into_new_volumes_only_when_asked() {
        let (d, s) = store().await;
        let rootfs = d.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::write(rootfs.join("etc/passwd"), b"root:x:0:0").unwrap();
        std::fs::write(rootfs.join("file"), b"x").unwrap();
        let mut nocopy = req("quiet", "/etc");
        nocopy.no_copy = true;
        let m = s
            .attach("c1", &[req("conf", "/etc"), nocopy], Some(&rootfs))
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(Path::new(&m[0].source).join("passwd")).unwrap(),
            b"root:x:0:0"
        );
        assert_eq!(std::fs::read_dir(&m[1].source).unwrap().count(), 0);
        // An anonymous volume over a file in the image is refused, and rolled back.
        let err = s
            .attach(
                "c2",
                &[req("fresh", "/data"), req("", "/file")],
                Some(&rootfs),
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot mount volume over existing file, file exists {}",
                rootfs.join("file").display()
            )
        );
        assert!(s.get("fresh").await.is_err());
    }
}
