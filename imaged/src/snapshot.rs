//! Per-container rootfs snapshots: an overlay of the image's layers with a private
//! writable upper dir.

use crate::error::{ImagedError, Result};
use crate::mounts::{is_mounted, mount_overlay, unmount};
use crate::store::SnapshotRow;
use crate::unpack::chain_ids;
use crate::{Imaged, Layout, blocking, digest_hex};
use berth_proto::images::Snapshot;
use std::path::{Path, PathBuf};

/// Container IDs become directory names: keep them to Docker's character set.
pub fn validate_container_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ImagedError::InvalidArgument(format!(
            "invalid container ID {id:?}"
        )))
    }
}

/// The three dirs of a snapshot.
struct Dirs {
    upper: PathBuf,
    work: PathBuf,
    merged: PathBuf,
}

fn dirs(layout: &Layout, container_id: &str) -> Dirs {
    let base = layout.snapshot_dir(container_id);
    Dirs {
        upper: base.join("upper"),
        work: base.join("work"),
        merged: base.join("merged"),
    }
}

/// Ensures `l/<16 hex>` points at the layer's diff dir and returns the short path.
fn short_link(layout: &Layout, chain_id: &str) -> Result<PathBuf> {
    let hex = digest_hex(chain_id);
    let link = layout.links().join(&hex[..hex.len().min(16)]);
    let target = PathBuf::from("../layers").join(hex).join("diff");
    match std::fs::read_link(&link) {
        Ok(existing) if existing == target => return Ok(link),
        Ok(_) => std::fs::remove_file(&link)
            .map_err(|e| ImagedError::io(format!("replacing {}", link.display()), e))?,
        Err(_) => {}
    }
    std::os::unix::fs::symlink(&target, &link)
        .map_err(|e| ImagedError::io(format!("linking {}", link.display()), e))?;
    Ok(link)
}

/// Creates the dirs and mounts the overlay unless already mounted (blocking).
fn mount_snapshot(row: &SnapshotRow) -> Result<()> {
    let lower: Vec<PathBuf> = serde_json::from_str::<Vec<String>>(&row.lower_dirs)
        .map_err(|e| ImagedError::FailedPrecondition(format!("snapshot lower dirs: {e}")))?
        .into_iter()
        .map(PathBuf::from)
        .collect();
    let merged = Path::new(&row.rootfs_path);
    for d in [Path::new(&row.upper_dir), Path::new(&row.work_dir), merged] {
        std::fs::create_dir_all(d)
            .map_err(|e| ImagedError::io(format!("creating {}", d.display()), e))?;
    }
    if is_mounted(merged)? {
        return Ok(());
    }
    mount_overlay(
        &lower,
        Path::new(&row.upper_dir),
        Path::new(&row.work_dir),
        merged,
    )
}

/// Unmounts and deletes a snapshot directory (blocking). Never deletes through a mount.
pub(crate) fn destroy_snapshot_dir(layout: &Layout, container_id: &str) -> Result<()> {
    let base = layout.snapshot_dir(container_id);
    let merged = base.join("merged");
    unmount(&merged)?;
    if is_mounted(&merged)? {
        return Err(ImagedError::FailedPrecondition(format!(
            "{} is still mounted",
            merged.display()
        )));
    }
    match std::fs::remove_dir_all(&base) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImagedError::io(format!("removing {}", base.display()), e)),
    }
}

fn to_proto(row: &SnapshotRow) -> Snapshot {
    Snapshot {
        container_id: row.container_id.clone(),
        rootfs_path: row.rootfs_path.clone(),
        upper_dir: row.upper_dir.clone(),
    }
}

impl Imaged {
    /// Creates (idempotently) the container's rootfs overlay of `image_ref`'s layers.
    #[tracing::instrument(name = "snapshot.prepare", skip_all, fields(container.id = container_id, image.name = image_ref))]
    pub async fn prepare_snapshot(&self, container_id: &str, image_ref: &str) -> Result<Snapshot> {
        validate_container_id(container_id)?;
        let _guard = self.inner.snapshot_lock.lock().await;
        let image = self.resolve(image_ref).await?;
        if let Some(row) = self.store().snapshot(container_id).await? {
            if row.image_id != image.id {
                return Err(ImagedError::AlreadyExists(format!(
                    "container {container_id} already has a snapshot of image {}",
                    row.image_id
                )));
            }
            let r = row.clone();
            blocking(move || mount_snapshot(&r)).await?;
            return Ok(to_proto(&row));
        }
        let diff_ids: Vec<String> = serde_json::from_str(&image.diff_ids).unwrap_or_default();
        let chains = chain_ids(&diff_ids);
        for chain in &chains {
            let present = self.store().layer(chain).await?.is_some()
                && tokio::fs::metadata(self.layout().layer_dir(chain).join("diff"))
                    .await
                    .is_ok();
            if !present {
                return Err(ImagedError::FailedPrecondition(format!(
                    "layer {chain} of image {} is missing: pull the image again",
                    image.id
                )));
            }
        }
        let layout = self.layout().clone();
        let d = dirs(&layout, container_id);
        let row = SnapshotRow {
            container_id: container_id.to_string(),
            image_id: image.id.clone(),
            rootfs_path: d.merged.display().to_string(),
            upper_dir: d.upper.display().to_string(),
            work_dir: d.work.display().to_string(),
            lower_dirs: String::new(),
        };
        let row = blocking(move || {
            // Overlay wants the topmost layer first.
            let mut lower = Vec::with_capacity(chains.len());
            for chain in chains.iter().rev() {
                lower.push(short_link(&layout, chain)?.display().to_string());
            }
            if lower.is_empty() {
                lower.push(layout.empty().display().to_string());
            }
            let row = SnapshotRow {
                lower_dirs: serde_json::to_string(&lower)
                    .map_err(|e| ImagedError::FailedPrecondition(e.to_string()))?,
                ..row
            };
            if let Err(e) = mount_snapshot(&row) {
                let _ = destroy_snapshot_dir(&layout, &row.container_id);
                return Err(e);
            }
            Ok(row)
        })
        .await?;
        // Recorded after the mount: a crash in between leaves an unrecorded dir, which
        // reconcile unmounts and removes.
        self.store().insert_snapshot(&row).await?;
        tracing::info!(container_id, image = %image.id, rootfs = %row.rootfs_path, "snapshot prepared");
        Ok(to_proto(&row))
    }

    /// Unmounts and deletes the container's snapshot. Missing is success.
    pub async fn remove_snapshot(&self, container_id: &str) -> Result<()> {
        validate_container_id(container_id)?;
        let _guard = self.inner.snapshot_lock.lock().await;
        let layout = self.layout().clone();
        let id = container_id.to_string();
        blocking(move || destroy_snapshot_dir(&layout, &id)).await?;
        self.store().delete_snapshot(container_id).await?;
        tracing::info!(container_id, "snapshot removed");
        Ok(())
    }

    /// Re-mounts a recorded snapshot (after a reboot) — used by reconcile.
    pub(crate) async fn remount(&self, row: &SnapshotRow) -> Result<()> {
        let r = row.clone();
        blocking(move || mount_snapshot(&r)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_checked() {
        assert!(validate_container_id("abc123").is_ok());
        assert!(validate_container_id("").is_err());
        assert!(validate_container_id("../x").is_err());
        assert!(validate_container_id("a/b").is_err());
        assert!(validate_container_id(".hidden").is_err());
    }
}
