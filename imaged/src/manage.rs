//! `docker tag`, `docker rmi` and `docker history` over the store.
//!
//! Deleting an image removes its records in one transaction, then the layer records no
//! other image needs, then their directories: a crash in between leaves directories
//! without records, which the start-up reconcile removes.

use crate::Imaged;
use crate::error::{ImagedError, Result};
use crate::reference::ImageRef;
use crate::unpack::chain_ids;
use berth_proto::images::{HistoryEntry, RemovedItem};
use std::collections::HashSet;

/// The short form Docker prints: 12 hex digits, no `sha256:`.
pub fn short_id(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex[..hex.len().min(12)].to_string()
}

fn item(kind: &str, value: impl Into<String>) -> RemovedItem {
    RemovedItem {
        kind: kind.to_string(),
        value: value.into(),
    }
}

/// The tag or digest form `reference` names, if it is a name rather than an ID.
fn named(reference: &str) -> Option<String> {
    let s = reference.trim();
    if s.starts_with("sha256:") {
        return None;
    }
    let r = ImageRef::parse(s).ok()?;
    match r.digest() {
        Some(d) => Some(r.familiar_digest(d)),
        None => r.familiar_tag(),
    }
}

impl Imaged {
    /// Points `target` at the image `source` resolves to; returns the familiar tag.
    pub async fn tag(&self, source: &str, target: &str) -> Result<String> {
        let row = self.resolve(source).await?;
        let r = ImageRef::parse(target)?;
        if r.digest().is_some() {
            return Err(ImagedError::InvalidArgument(
                "refusing to create a tag with a digest reference".to_string(),
            ));
        }
        let tag = r
            .familiar_tag()
            .ok_or_else(|| ImagedError::InvalidArgument("invalid reference format".into()))?;
        sqlx::query(
            "INSERT INTO tags (repo_tag, image_id) VALUES (?1, ?2)
             ON CONFLICT(repo_tag) DO UPDATE SET image_id = excluded.image_id",
        )
        .bind(&tag)
        .bind(&row.id)
        .execute(self.store().pool())
        .await?;
        tracing::info!(tag, id = %row.id, "tagged");
        Ok(tag)
    }

    /// `docker rmi [-f] reference`: what was untagged and deleted, in Docker's order.
    pub async fn remove_image(&self, reference: &str, force: bool) -> Result<Vec<RemovedItem>> {
        let row = self.resolve(reference).await?;
        let id = row.id.clone();
        let tags = self.store().tags_of(&id).await?;
        let digests = self.store().repo_digests_of(&id).await?;
        let users: Vec<String> = self
            .store()
            .snapshots()
            .await?
            .into_iter()
            .filter(|s| s.image_id == id)
            .map(|s| s.container_id)
            .collect();
        let name = named(reference).filter(|n| tags.contains(n) || digests.contains(n));
        let pool = self.store().pool();

        // Removing one name while another tag remains only untags it.
        if let Some(name) = &name
            && tags.iter().any(|t| t != name)
        {
            sqlx::query("DELETE FROM tags WHERE repo_tag = ?1")
                .bind(name)
                .execute(pool)
                .await?;
            sqlx::query("DELETE FROM repo_digests WHERE repo_digest = ?1")
                .bind(name)
                .execute(pool)
                .await?;
            return Ok(vec![item("Untagged", name.clone())]);
        }
        if name.is_none() && tags.len() > 1 && !force {
            return Err(ImagedError::FailedPrecondition(format!(
                "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                short_id(&id)
            )));
        }
        if let Some(user) = users.first() {
            if !force {
                return Err(ImagedError::FailedPrecondition(match &name {
                    Some(n) => format!(
                        "conflict: unable to remove repository reference \"{n}\" (must force) - container {} is using its referenced image {}",
                        short_id(user),
                        short_id(&id)
                    ),
                    None => format!(
                        "conflict: unable to delete {} (must be forced) - image is being used by container {}",
                        short_id(&id),
                        short_id(user)
                    ),
                }));
            }
            // Forced while a container uses it: the names go, the image stays (dangling)
            // under the container's snapshot.
            let mut out = Vec::new();
            let mut tx = pool.begin().await?;
            for t in tags.iter().chain(digests.iter()) {
                out.push(item("Untagged", t.clone()));
            }
            sqlx::query("DELETE FROM tags WHERE image_id = ?1")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM repo_digests WHERE image_id = ?1")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(out);
        }
        self.delete_image(&row.id, &row.diff_ids, tags, digests)
            .await
    }

    async fn delete_image(
        &self,
        id: &str,
        diff_ids_json: &str,
        tags: Vec<String>,
        digests: Vec<String>,
    ) -> Result<Vec<RemovedItem>> {
        let pool = self.store().pool();
        let mut out: Vec<RemovedItem> = tags
            .into_iter()
            .chain(digests)
            .map(|t| item("Untagged", t))
            .collect();
        let diff_ids: Vec<String> = serde_json::from_str(diff_ids_json)
            .map_err(|e| ImagedError::BadLayer(format!("bad diff IDs of {id}: {e}")))?;
        let mine = chain_ids(&diff_ids);
        let mut tx = pool.begin().await?;
        sqlx::query("DELETE FROM images WHERE id = ?1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        // Chains every remaining image needs.
        let others: Vec<String> = sqlx::query_scalar("SELECT diff_ids FROM images")
            .fetch_all(&mut *tx)
            .await?;
        let mut needed: HashSet<String> = HashSet::new();
        for d in others {
            let ids: Vec<String> = serde_json::from_str(&d).unwrap_or_default();
            needed.extend(chain_ids(&ids));
        }
        let doomed: Vec<String> = mine.into_iter().filter(|c| !needed.contains(c)).collect();
        for chain in &doomed {
            sqlx::query("DELETE FROM layers WHERE chain_id = ?1")
                .bind(chain)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        out.push(item("Deleted", id));
        let layout = self.layout().clone();
        for chain in doomed.iter().rev() {
            let dir = layout.layer_dir(chain);
            let hex = chain.strip_prefix("sha256:").unwrap_or(chain);
            let link = layout.links().join(&hex[..hex.len().min(16)]);
            let _ = std::fs::remove_file(&link);
            if let Err(e) = crate::blocking({
                let dir = dir.clone();
                move || {
                    std::fs::remove_dir_all(&dir)
                        .or_else(|e| {
                            if e.kind() == std::io::ErrorKind::NotFound {
                                Ok(())
                            } else {
                                Err(e)
                            }
                        })
                        .map_err(|e| ImagedError::io(format!("removing {}", dir.display()), e))
                }
            })
            .await
            {
                // Left for the next start-up reconcile (a directory without a record).
                tracing::warn!(error = %e, "removing a layer directory");
            }
            out.push(item("Deleted", chain.clone()));
        }
        tracing::info!(id, layers = doomed.len(), "image deleted");
        Ok(out)
    }

    /// `docker history`: the config's history, newest first, with layer sizes.
    pub async fn history(&self, reference: &str) -> Result<Vec<HistoryEntry>> {
        let row = self.resolve(reference).await?;
        let config: serde_json::Value = serde_json::from_slice(&row.config)
            .map_err(|e| ImagedError::BadLayer(format!("bad config of {}: {e}", row.id)))?;
        let diff_ids: Vec<String> = serde_json::from_str(&row.diff_ids).unwrap_or_default();
        let chains = chain_ids(&diff_ids);
        let mut sizes = Vec::with_capacity(chains.len());
        for c in &chains {
            sizes.push(self.store().layer(c).await?.map(|l| l.size).unwrap_or(0));
        }
        let tags = self.store().tags_of(&row.id).await?;
        let history = config["history"].as_array().cloned().unwrap_or_default();
        let mut entries = Vec::new();
        let mut layer = 0usize;
        for h in &history {
            let empty = h["empty_layer"].as_bool().unwrap_or(false);
            let size = if empty {
                0
            } else {
                let s = sizes.get(layer).copied().unwrap_or(0);
                layer += 1;
                s
            };
            entries.push(HistoryEntry {
                id: "<missing>".into(),
                created_unix: h["created"]
                    .as_str()
                    .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                    .map(|t| t.timestamp())
                    .unwrap_or(0),
                created_by: h["created_by"].as_str().unwrap_or("").to_string(),
                tags: Vec::new(),
                size,
                comment: h["comment"].as_str().unwrap_or("").to_string(),
            });
        }
        // Without a history (e.g. an image built by hand), one entry per layer.
        if entries.is_empty() {
            for s in &sizes {
                entries.push(HistoryEntry {
                    id: "<missing>".into(),
                    size: *s,
                    ..Default::default()
                });
            }
        }
        entries.reverse();
        if let Some(top) = entries.first_mut() {
            top.id = row.id.clone();
            top.tags = tags;
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_are_told_apart() {
        assert_eq!(named("busybox").as_deref(), Some("busybox:latest"));
        assert_eq!(
            named("127.0.0.1:5000/busybox:two").as_deref(),
            Some("127.0.0.1:5000/busybox:two")
        );
        assert_eq!(named("sha256:abcd"), None);
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
    }
}
