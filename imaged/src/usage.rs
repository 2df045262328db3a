//! `docker system df` figures: layers counted once, the bytes each image shares with
//! others, and what each container wrote.

use crate::Imaged;
use crate::error::{ImagedError, Result};
use crate::unpack::chain_ids;
use berth_proto::images::{DiskUsageResponse, ImageUsage, SnapshotUsage};
use std::collections::HashMap;

impl Imaged {
    /// Sizes from the layer records (measured at unpack); snapshot upper dirs are walked
    /// when `snapshots` is set.
    pub async fn disk_usage(&self, snapshots: bool) -> Result<DiskUsageResponse> {
        let layers: HashMap<String, i64> = self
            .store()
            .layers()
            .await?
            .into_iter()
            .map(|l| (l.chain_id, l.size))
            .collect();
        let images = self.store().images().await?;
        let chains: Vec<(String, i64, Vec<String>)> = images
            .into_iter()
            .map(|row| {
                let diff_ids: Vec<String> = serde_json::from_str(&row.diff_ids).unwrap_or_default();
                (row.id, row.size, chain_ids(&diff_ids))
            })
            .collect();
        let mut users: HashMap<&str, usize> = HashMap::new();
        for (_, _, cs) in &chains {
            for c in cs {
                *users.entry(c.as_str()).or_default() += 1;
            }
        }
        let images = chains
            .iter()
            .map(|(id, size, cs)| ImageUsage {
                id: id.clone(),
                size: *size,
                shared_size: cs
                    .iter()
                    .filter(|c| users.get(c.as_str()).is_some_and(|n| *n > 1))
                    .filter_map(|c| layers.get(c))
                    .sum(),
            })
            .collect();
        let mut out = DiskUsageResponse {
            layers_size: layers.values().sum(),
            images,
            snapshots: Vec::new(),
        };
        if snapshots {
            let rows = self.store().snapshots().await?;
            out.snapshots = tokio::task::spawn_blocking(move || {
                rows.into_iter()
                    .map(|r| SnapshotUsage {
                        size_rw: berth_kit::disk::dir_size(std::path::Path::new(&r.upper_dir))
                            .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)),
                        container_id: r.container_id,
                        image_id: r.image_id,
                    })
                    .collect()
            })
            .await
            .map_err(|e| ImagedError::Io {
                context: "measuring snapshots".into(),
                source: std::io::Error::other(e),
            })?;
        }
        Ok(out)
    }
}
