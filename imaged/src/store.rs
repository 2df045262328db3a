//! imaged's SQLite records: images, tags, repo digests, layers, snapshots.

use crate::error::Result;
use sqlx::SqlitePool;

/// The embedded migrations of imaged's database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// One image row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ImageRow {
    /// `sha256:<hex>` of the config blob.
    pub id: String,
    /// The raw config blob.
    pub config: Vec<u8>,
    /// The digest of the platform manifest.
    pub manifest_digest: String,
    /// JSON array of diff IDs, bottom first.
    pub diff_ids: String,
    /// Unpacked bytes of all layers.
    pub size: i64,
    /// The config's `created`.
    pub created: String,
    /// The config's `os`.
    pub os: String,
    /// The config's `architecture`.
    pub architecture: String,
    /// The local image this one was made from ('' when pulled or loaded).
    pub parent: String,
}

/// One layer row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LayerRow {
    /// `sha256:<hex>` chain ID.
    pub chain_id: String,
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// Unpacked bytes.
    pub size: i64,
    /// The chain ID of the layer below, if any.
    pub parent: Option<String>,
    /// The compressed blob kept at `layers/<chain>/blob` ('' when none was kept).
    pub blob_digest: String,
    pub blob_media_type: String,
    pub blob_size: i64,
}

/// One snapshot row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SnapshotRow {
    /// The container the snapshot belongs to.
    pub container_id: String,
    /// The image it was made from.
    pub image_id: String,
    /// The merged overlay mount point.
    pub rootfs_path: String,
    /// The writable upper dir.
    pub upper_dir: String,
    /// The overlay work dir.
    pub work_dir: String,
    /// JSON array of lower dirs, topmost first.
    pub lower_dirs: String,
}

/// Typed access to the database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Wraps an opened (and migrated) pool.
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// The pool, for multi-statement work elsewhere in the crate.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The layer with this chain ID, if committed.
    pub async fn layer(&self, chain_id: &str) -> Result<Option<LayerRow>> {
        Ok(sqlx::query_as::<_, LayerRow>(
            "SELECT chain_id, diff_id, size, parent, blob_digest, blob_media_type, blob_size FROM layers WHERE chain_id = ?",
        )
        .bind(chain_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// All committed layers.
    pub async fn layers(&self) -> Result<Vec<LayerRow>> {
        Ok(
            sqlx::query_as::<_, LayerRow>(
                "SELECT chain_id, diff_id, size, parent, blob_digest, blob_media_type, blob_size FROM layers",
            )
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Records a layer whose directory is in place.
    pub async fn insert_layer(&self, row: &LayerRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO layers (chain_id, diff_id, size, parent, blob_digest, blob_media_type, blob_size)
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(chain_id) DO NOTHING",
        )
        .bind(&row.chain_id)
        .bind(&row.diff_id)
        .bind(row.size)
        .bind(&row.parent)
        .bind(&row.blob_digest)
        .bind(&row.blob_media_type)
        .bind(row.blob_size)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records an image made here (loaded, committed) and points `tag` (if any) at it,
    /// in one transaction.
    pub async fn commit_local_image(&self, row: &ImageRow, tag: Option<&str>) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        insert_image(&mut tx, row).await?;
        if let Some(tag) = tag {
            point_tag(&mut tx, tag, &row.id).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records `repo_digest` (`name@sha256:...`, a push's result) for `image_id`.
    pub async fn add_repo_digest(&self, repo_digest: &str, image_id: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO repo_digests (repo_digest, image_id) VALUES (?, ?)
             ON CONFLICT(repo_digest) DO UPDATE SET image_id = excluded.image_id",
        )
        .bind(repo_digest)
        .bind(image_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets a layer (its directory is gone).
    pub async fn delete_layer(&self, chain_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM layers WHERE chain_id = ?")
            .bind(chain_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a pulled image, pointing `tag` (if any) and `repo_digest` at it, in one
    /// transaction. Returns the image the tag pointed to before, if any.
    pub async fn commit_image(
        &self,
        row: &ImageRow,
        tag: Option<&str>,
        repo_digest: &str,
    ) -> Result<Option<String>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        insert_image(&mut tx, row).await?;
        let mut previous = None;
        if let Some(tag) = tag {
            previous =
                sqlx::query_scalar::<_, String>("SELECT image_id FROM tags WHERE repo_tag = ?")
                    .bind(tag)
                    .fetch_optional(&mut *tx)
                    .await?;
            point_tag(&mut tx, tag, &row.id).await?;
        }
        sqlx::query(
            "INSERT INTO repo_digests (repo_digest, image_id) VALUES (?, ?)
             ON CONFLICT(repo_digest) DO UPDATE SET image_id = excluded.image_id",
        )
        .bind(repo_digest)
        .bind(&row.id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(previous)
    }

    /// The image a familiar tag points to.
    pub async fn image_id_by_tag(&self, tag: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar::<_, String>("SELECT image_id FROM tags WHERE repo_tag = ?")
                .bind(tag)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The image a familiar repo digest points to.
    pub async fn image_id_by_repo_digest(&self, repo_digest: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar::<_, String>(
            "SELECT image_id FROM repo_digests WHERE repo_digest = ?",
        )
        .bind(repo_digest)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Image IDs starting with `prefix` (a full `sha256:` prefix), at most `limit`.
    pub async fn image_ids_with_prefix(&self, prefix: &str, limit: i64) -> Result<Vec<String>> {
        // substr, not LIKE: no wildcard in the prefix can widen the match.
        Ok(sqlx::query_scalar::<_, String>(
            "SELECT id FROM images WHERE substr(id, 1, length(?1)) = ?1 ORDER BY id LIMIT ?2",
        )
        .bind(prefix)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The image row by exact ID.
    pub async fn image(&self, id: &str) -> Result<Option<ImageRow>> {
        Ok(sqlx::query_as::<_, ImageRow>(
            "SELECT id, config, manifest_digest, diff_ids, size, created, os, architecture, parent
             FROM images WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Every image row, newest pull first.
    pub async fn images(&self) -> Result<Vec<ImageRow>> {
        Ok(sqlx::query_as::<_, ImageRow>(
            "SELECT id, config, manifest_digest, diff_ids, size, created, os, architecture, parent
             FROM images ORDER BY pulled_at DESC",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The familiar tags pointing at an image, sorted.
    pub async fn tags_of(&self, image_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar::<_, String>(
            "SELECT repo_tag FROM tags WHERE image_id = ? ORDER BY repo_tag",
        )
        .bind(image_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The tags of repository `name` (familiar form), sorted: "name:v1", "name:v2"...
    pub async fn tags_in_repo(&self, name: &str) -> Result<Vec<String>> {
        let all = sqlx::query_scalar::<_, String>("SELECT repo_tag FROM tags ORDER BY repo_tag")
            .fetch_all(&self.pool)
            .await?;
        Ok(all
            .into_iter()
            .filter(|t| t.rsplit_once(':').is_some_and(|(n, _)| n == name))
            .collect())
    }

    /// The familiar repo digests of an image, sorted.
    pub async fn repo_digests_of(&self, image_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar::<_, String>(
            "SELECT repo_digest FROM repo_digests WHERE image_id = ? ORDER BY repo_digest",
        )
        .bind(image_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The snapshot of a container, if recorded.
    pub async fn snapshot(&self, container_id: &str) -> Result<Option<SnapshotRow>> {
        Ok(sqlx::query_as::<_, SnapshotRow>(
            "SELECT container_id, image_id, rootfs_path, upper_dir, work_dir, lower_dirs
             FROM snapshots WHERE container_id = ?",
        )
        .bind(container_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Every recorded snapshot.
    pub async fn snapshots(&self) -> Result<Vec<SnapshotRow>> {
        Ok(sqlx::query_as::<_, SnapshotRow>(
            "SELECT container_id, image_id, rootfs_path, upper_dir, work_dir, lower_dirs
             FROM snapshots",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records a mounted snapshot (idempotent for the same row).
    pub async fn insert_snapshot(&self, row: &SnapshotRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO snapshots (container_id, image_id, rootfs_path, upper_dir, work_dir,
                                    lower_dirs)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT(container_id) DO NOTHING",
        )
        .bind(&row.container_id)
        .bind(&row.image_id)
        .bind(&row.rootfs_path)
        .bind(&row.upper_dir)
        .bind(&row.work_dir)
        .bind(&row.lower_dirs)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets a snapshot.
    pub async fn delete_snapshot(&self, container_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM snapshots WHERE container_id = ?")
            .bind(container_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Inserts an image row (kept if it exists) inside `tx`.
async fn insert_image(tx: &mut sqlx::SqliteConnection, row: &ImageRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO images (id, config, manifest_digest, diff_ids, size, created, os,
                             architecture, pulled_at, parent)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(id) DO NOTHING",
    )
    .bind(&row.id)
    .bind(&row.config)
    .bind(&row.manifest_digest)
    .bind(&row.diff_ids)
    .bind(row.size)
    .bind(&row.created)
    .bind(&row.os)
    .bind(&row.architecture)
    .bind(chrono::Utc::now().to_rfc3339())
    .bind(&row.parent)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Points `tag` at `image_id` inside `tx`.
async fn point_tag(tx: &mut sqlx::SqliteConnection, tag: &str, image_id: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO tags (repo_tag, image_id) VALUES (?, ?)
         ON CONFLICT(repo_tag) DO UPDATE SET image_id = excluded.image_id",
    )
    .bind(tag)
    .bind(image_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
