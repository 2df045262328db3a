//! Start-up reconciliation: make disk and kernel agree with the records before serving.

use crate::error::{ImagedError, Result};
use crate::snapshot::destroy_snapshot_dir;
use crate::{Imaged, blocking, digest_hex};
use std::collections::HashSet;
use std::path::Path;

fn entries(dir: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| ImagedError::io(format!("reading {}", dir.display()), e))?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| ImagedError::io(format!("reading {}", dir.display()), e))?;
        out.push(e.file_name().to_string_lossy().into_owned());
    }
    Ok(out)
}

fn remove_any(path: &Path) -> Result<()> {
    let res = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    };
    res.map_err(|e| ImagedError::io(format!("removing {}", path.display()), e))
}

/// What reconciliation did (for logs and tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Entries removed from tmp/.
    pub tmp_removed: usize,
    /// Layer dirs without a record, removed.
    pub orphan_layers_removed: usize,
    /// Layer records whose dir was gone, dropped.
    pub layer_records_dropped: usize,
    /// Snapshots mounted again.
    pub snapshots_remounted: usize,
    /// Snapshot records whose dir was gone, dropped.
    pub snapshot_records_dropped: usize,
    /// Snapshot dirs without a record, unmounted and removed.
    pub orphan_snapshots_removed: usize,
}

impl Imaged {
    /// Cleans up after a crash or reboot: empties tmp/, removes uncommitted layer dirs,
    /// drops records of vanished layers and snapshots, re-mounts recorded snapshots that
    /// are not mounted, and removes unrecorded snapshot dirs.
    pub async fn reconcile(&self) -> Result<Reconciled> {
        let layout = self.layout().clone();
        let mut done = Reconciled::default();
        {
            let layout = layout.clone();
            blocking(move || layout.create()).await?;
        }

        let tmp = layout.tmp();
        done.tmp_removed = blocking(move || {
            let names = entries(&tmp)?;
            for n in &names {
                remove_any(&tmp.join(n))?;
            }
            Ok(names.len())
        })
        .await?;

        let records = self.store().layers().await?;
        let known: HashSet<String> = records
            .iter()
            .map(|l| digest_hex(&l.chain_id).to_string())
            .collect();
        let layers_dir = layout.layers();
        let (removed, present) = blocking(move || {
            let mut removed = 0;
            let mut present = HashSet::new();
            for n in entries(&layers_dir)? {
                let p = layers_dir.join(&n);
                if known.contains(&n) && p.join("diff").is_dir() {
                    present.insert(n);
                } else {
                    remove_any(&p)?;
                    removed += 1;
                }
            }
            Ok((removed, present))
        })
        .await?;
        done.orphan_layers_removed = removed;
        for l in &records {
            if !present.contains(digest_hex(&l.chain_id)) {
                self.store().delete_layer(&l.chain_id).await?;
                done.layer_records_dropped += 1;
            }
        }

        let snapshots = self.store().snapshots().await?;
        let mut recorded = HashSet::new();
        for s in &snapshots {
            recorded.insert(s.container_id.clone());
            if !layout.snapshot_dir(&s.container_id).join("upper").is_dir() {
                self.store().delete_snapshot(&s.container_id).await?;
                done.snapshot_records_dropped += 1;
                continue;
            }
            let was_mounted = crate::mounts::is_mounted(Path::new(&s.rootfs_path))?;
            if !was_mounted {
                match self.remount(s).await {
                    Ok(()) => done.snapshots_remounted += 1,
                    // One broken snapshot must not keep the image store down.
                    Err(e) => {
                        tracing::warn!(container_id = %s.container_id, "re-mounting snapshot: {e}")
                    }
                }
            }
        }
        let snap_dir = layout.snapshots();
        let layout2 = layout.clone();
        done.orphan_snapshots_removed = blocking(move || {
            let mut n = 0;
            for name in entries(&snap_dir)? {
                if !recorded.contains(&name) {
                    destroy_snapshot_dir(&layout2, &name)?;
                    n += 1;
                }
            }
            Ok(n)
        })
        .await?;
        tracing::info!(?done, "reconciled");
        Ok(done)
    }
}
