//! `docker save` and `docker load`: image archives in the layout Docker writes — an OCI
//! image layout (`oci-layout`, `index.json`, `blobs/sha256/...`) plus Docker's
//! `manifest.json` — with each layer's blob as it was pulled.
//!
//! Loading spools the archive, takes only regular files with plain relative names from
//! it, and installs each layer through the same checked unpacker as a pull (its diff ID
//! must match the config); a layer the store has is not unpacked again.

use crate::Imaged;
use crate::error::{ImagedError, Result};
use crate::pull::{BLOB_FILE, LayerBlob};
use crate::reference::ImageRef;
use crate::store::ImageRow;
use crate::unpack::chain_ids;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

/// Where an archive file's bytes come from.
#[derive(Debug, Clone)]
pub enum Source {
    Bytes(Vec<u8>),
    File(PathBuf),
}

/// The files of an archive to write, by path inside it (each once).
#[derive(Debug, Default)]
pub struct SavePlan {
    pub files: BTreeMap<String, Source>,
}

fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Writes the plan as a tar (fixed owner, modes and times: the same images give the same
/// bytes).
pub fn write_archive(plan: &SavePlan, out: impl Write) -> std::io::Result<()> {
    let mut b = tar::Builder::new(out);
    let mut dirs = std::collections::BTreeSet::new();
    for path in plan.files.keys() {
        let mut p = Path::new(path).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(format!("{}/", d.display()));
            p = d.parent();
        }
    }
    for d in dirs {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(0);
        b.append_data(&mut h, d, std::io::empty())?;
    }
    for (path, src) in &plan.files {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_mtime(0);
        match src {
            Source::Bytes(data) => {
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, data.as_slice())?;
            }
            Source::File(f) => {
                let file = std::fs::File::open(f)?;
                h.set_size(file.metadata()?.len());
                b.append_data(&mut h, path, file)?;
            }
        }
    }
    b.finish()
}

/// One entry of Docker's `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// A name from inside an archive, if it is a plain relative path.
fn safe_name(raw: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Where a symlink at `name` pointing to `target` lands, relative to the archive root
/// (None when it leaves the archive or is absolute).
fn link_target(name: &Path, target: &Path) -> Option<PathBuf> {
    if target.is_absolute() {
        return None;
    }
    let mut out = name.parent().map(Path::to_path_buf).unwrap_or_default();
    for c in target.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Copies the regular files of the tar `archive` into `dir`. Symlinks between its own
/// files (Docker's legacy `<id>/layer.tar` links) become hard links to the file they
/// name; a link that leaves the archive, devices, and names with `..` or a root are
/// refused. No symlink is ever created, so reading the extracted files follows none.
pub fn extract_files(archive: impl Read, dir: &Path) -> Result<()> {
    let bad = |e: std::io::Error| ImagedError::InvalidArgument(format!("invalid archive: {e}"));
    let mut a = tar::Archive::new(archive);
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    for entry in a.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        let raw = entry.path().map_err(bad)?.into_owned();
        let Some(name) = safe_name(&raw) else {
            return Err(ImagedError::InvalidArgument(format!(
                "invalid archive: entry {:?} leaves the archive",
                raw.display().to_string()
            )));
        };
        if kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(bad)?
                .unwrap_or_default()
                .into_owned();
            let Some(resolved) = link_target(&name, &target) else {
                return Err(ImagedError::InvalidArgument(format!(
                    "invalid archive: link {} leaves the archive",
                    name.display()
                )));
            };
            links.push((name, resolved));
            continue;
        }
        if !kind.is_file() {
            return Err(ImagedError::InvalidArgument(format!(
                "invalid archive: {} is not a regular file",
                name.display()
            )));
        }
        let dest = dir.join(&name);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| ImagedError::io(format!("creating {}", parent.display()), e))?;
        }
        let mut f = std::fs::File::create(&dest)
            .map_err(|e| ImagedError::io(format!("creating {}", dest.display()), e))?;
        std::io::copy(&mut entry, &mut f)
            .map_err(|e| ImagedError::io(format!("writing {}", dest.display()), e))?;
    }
    // Links to links resolve over several passes; a dangling one is only an error if a
    // manifest uses it.
    loop {
        let before = links.len();
        links.retain(|(name, target)| {
            let (src, dest) = (dir.join(target), dir.join(name));
            let is_file = std::fs::symlink_metadata(&src).is_ok_and(|m| m.is_file());
            if !is_file {
                return true;
            }
            if let Some(parent) = dest.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            std::fs::hard_link(&src, &dest).is_err()
        });
        if links.len() == before {
            break;
        }
    }
    Ok(())
}

fn read_in(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let Some(rel) = safe_name(Path::new(name)) else {
        return Err(ImagedError::InvalidArgument(format!(
            "invalid archive: {name:?} leaves the archive"
        )));
    };
    std::fs::read(dir.join(rel))
        .map_err(|_| ImagedError::InvalidArgument(format!("invalid archive: {name} is missing")))
}

/// The images of a plain OCI layout archive (no `manifest.json`): each manifest its
/// `index.json` names, tagged by its `io.containerd.image.name` or
/// `org.opencontainers.image.ref.name` annotation when that is a whole reference.
fn entries_from_oci_index(dir: &Path) -> Result<Vec<ArchiveManifest>> {
    let bad = |what: &str, e: serde_json::Error| {
        ImagedError::InvalidArgument(format!("invalid archive: {what}: {e}"))
    };
    let index: serde_json::Value =
        serde_json::from_slice(&read_in(dir, "index.json")?).map_err(|e| bad("index.json", e))?;
    let mut out = Vec::new();
    for m in index["manifests"].as_array().into_iter().flatten() {
        let digest = m["digest"].as_str().unwrap_or_default();
        let media = m["mediaType"].as_str().unwrap_or_default();
        if media.contains("index") || media.contains("manifest.list") {
            return Err(ImagedError::Unimplemented(
                "loading a multi-platform index".into(),
            ));
        }
        let manifest: serde_json::Value =
            serde_json::from_slice(&read_in(dir, &blob_path(digest))?)
                .map_err(|e| bad("manifest", e))?;
        let name = m["annotations"]["io.containerd.image.name"]
            .as_str()
            .or_else(|| {
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .filter(|n| n.contains(':') || n.contains('/'))
            })
            .map(str::to_string);
        out.push(ArchiveManifest {
            config: blob_path(manifest["config"]["digest"].as_str().unwrap_or_default()),
            repo_tags: name.map(|n| vec![n]),
            layers: manifest["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| blob_path(l["digest"].as_str().unwrap_or_default()))
                .collect(),
        });
    }
    Ok(out)
}

/// The file's sha256 and the layer media type its first bytes say.
pub(crate) fn blob_facts(path: &Path) -> Result<(String, String, i64)> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| ImagedError::io(format!("opening {}", path.display()), e))?;
    let mut hasher = Sha256::new();
    let mut magic = Vec::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut size = 0i64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| ImagedError::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        if magic.len() < 4 {
            magic.extend_from_slice(&buf[..n.min(4 - magic.len())]);
        }
        hasher.update(&buf[..n]);
        size += n as i64;
    }
    let media = match crate::unpack::detect("", &magic) {
        crate::unpack::Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        crate::unpack::Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        crate::unpack::Compression::None => "application/vnd.oci.image.layer.v1.tar",
    };
    Ok((
        format!("sha256:{}", hex::encode(hasher.finalize())),
        media.to_string(),
        size,
    ))
}

impl Imaged {
    /// What `docker save` writes for `references` (tags, names, IDs).
    pub async fn save_plan(&self, references: &[String]) -> Result<SavePlan> {
        let mut plan = SavePlan::default();
        let mut index = Vec::new();
        let mut docker_manifest = Vec::new();
        for reference in references {
            let row = self.resolve(reference).await?;
            let layers = self.layers_with_blobs(&row, "save").await?;
            for l in &layers {
                plan.files.insert(
                    blob_path(&l.blob_digest),
                    Source::File(self.layout().layer_dir(&l.chain_id).join(BLOB_FILE)),
                );
            }
            let config_digest = sha256(&row.config);
            plan.files
                .insert(blob_path(&config_digest), Source::Bytes(row.config.clone()));
            let (manifest, media) = crate::push::manifest_for(&row.config, &layers);
            let manifest_digest = sha256(&manifest);
            let manifest_size = manifest.len();
            plan.files
                .insert(blob_path(&manifest_digest), Source::Bytes(manifest));
            // A name (not an ID) is saved with its tag, as Docker does: the tag it parses
            // to must be one that names this image.
            let mut tag = None;
            if let Some(t) = ImageRef::parse(reference)
                .ok()
                .and_then(|r| r.familiar_tag())
                && self.store().image_id_by_tag(&t).await?.as_deref() == Some(row.id.as_str())
            {
                tag = Some(t);
            }
            let mut desc = json!({
                "mediaType": media,
                "digest": manifest_digest,
                "size": manifest_size,
            });
            if let Some(t) = &tag {
                let full = ImageRef::parse(t)
                    .map(|r| r.oci().whole())
                    .unwrap_or_default();
                let short = t.rsplit_once(':').map_or("latest", |(_, t)| t);
                desc["annotations"] = json!({
                    "io.containerd.image.name": full,
                    "org.opencontainers.image.ref.name": short,
                });
            }
            index.push(desc);
            docker_manifest.push(json!({
                "Config": blob_path(&config_digest),
                "RepoTags": tag.map(|t| vec![t]),
                "Layers": layers.iter().map(|l| blob_path(&l.blob_digest)).collect::<Vec<_>>(),
            }));
        }
        plan.files.insert(
            "oci-layout".into(),
            Source::Bytes(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        );
        plan.files.insert(
            "index.json".into(),
            Source::Bytes(
                json!({
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": index,
                })
                .to_string()
                .into_bytes(),
            ),
        );
        plan.files.insert(
            "manifest.json".into(),
            Source::Bytes(json!(docker_manifest).to_string().into_bytes()),
        );
        Ok(plan)
    }

    /// Loads the images of the archive extracted in `dir` (Docker's `manifest.json`).
    /// Returns Docker's lines ("Loaded image: busybox:latest", "Loaded image ID: ...").
    pub async fn load_extracted(&self, dir: &Path) -> Result<Vec<String>> {
        let entries = if dir.join("manifest.json").is_file() {
            let manifest = read_in(dir, "manifest.json")?;
            serde_json::from_slice::<Vec<ArchiveManifest>>(&manifest).map_err(|e| {
                ImagedError::InvalidArgument(format!("invalid archive: manifest.json: {e}"))
            })?
        } else {
            entries_from_oci_index(dir)?
        };
        let mut loaded = Vec::new();
        for entry in entries {
            let config = read_in(dir, &entry.config)?;
            let id = sha256(&config);
            let doc: crate::pull::ConfigDoc = serde_json::from_slice(&config).map_err(|e| {
                ImagedError::InvalidArgument(format!("invalid archive: image config: {e}"))
            })?;
            let diff_ids = doc.rootfs.diff_ids;
            if diff_ids.len() != entry.layers.len() {
                return Err(ImagedError::InvalidArgument(format!(
                    "invalid archive: {} layers for {} diff IDs",
                    entry.layers.len(),
                    diff_ids.len()
                )));
            }
            let chains = chain_ids(&diff_ids);
            let mut size = 0i64;
            for (i, layer) in entry.layers.iter().enumerate() {
                let lock = self.layer_lock(&chains[i]);
                let _guard = lock.lock().await;
                if !self.layer_present(&chains[i]).await? {
                    let Some(rel) = safe_name(Path::new(layer)) else {
                        return Err(ImagedError::InvalidArgument(format!(
                            "invalid archive: {layer:?} leaves the archive"
                        )));
                    };
                    let path = dir.join(rel);
                    let facts_path = path.clone();
                    let (digest, media_type, blob_size) =
                        tokio::task::spawn_blocking(move || blob_facts(&facts_path))
                            .await
                            .map_err(|e| ImagedError::Registry(e.to_string()))??;
                    let blob = LayerBlob {
                        digest,
                        media_type,
                        size: blob_size,
                    };
                    self.install_layer(&path, &blob, i, &diff_ids, &chains)
                        .await?;
                }
                size += self
                    .store()
                    .layer(&chains[i])
                    .await?
                    .map(|l| l.size)
                    .unwrap_or_default();
            }
            let row = ImageRow {
                id: id.clone(),
                config: config.clone(),
                manifest_digest: String::new(),
                diff_ids: serde_json::to_string(&diff_ids).unwrap_or_default(),
                size,
                created: doc.created.unwrap_or_default(),
                os: doc.os,
                architecture: doc.architecture,
                parent: String::new(),
            };
            let tags = entry.repo_tags.unwrap_or_default();
            if tags.is_empty() {
                self.store().commit_local_image(&row, None).await?;
                loaded.push(format!("Loaded image ID: {id}"));
            }
            for t in tags {
                let r = ImageRef::parse(&t)?;
                let tag = r.familiar_tag().unwrap_or_else(|| r.familiar());
                self.store().commit_local_image(&row, Some(&tag)).await?;
                loaded.push(format!("Loaded image: {tag}"));
            }
        }
        Ok(loaded)
    }
}

impl Imaged {
    /// Writes an uploaded stream to a temp file under `tmp/` (removed when dropped).
    pub(crate) async fn spool(
        &self,
        mut chunks: impl futures_util::Stream<Item = std::result::Result<Vec<u8>, String>> + Unpin,
        suffix: &str,
    ) -> Result<crate::pull::TempPath> {
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;
        let spool =
            crate::pull::TempPath::new(self.layout().tmp().join(crate::pull::random_name(suffix)));
        let mut f = tokio::fs::File::create(&spool.path)
            .await
            .map_err(|e| ImagedError::io(format!("creating {}", spool.path.display()), e))?;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk
                .map_err(|e| ImagedError::InvalidArgument(format!("reading the upload: {e}")))?;
            f.write_all(&chunk)
                .await
                .map_err(|e| ImagedError::io(format!("writing {}", spool.path.display()), e))?;
        }
        f.flush()
            .await
            .map_err(|e| ImagedError::io(format!("writing {}", spool.path.display()), e))?;
        Ok(spool)
    }

    /// `docker load` of an archive arriving in `chunks`: spooled and extracted under
    /// `tmp/` (removed whatever happens), then loaded.
    pub async fn load(
        &self,
        chunks: impl futures_util::Stream<Item = std::result::Result<Vec<u8>, String>> + Unpin,
    ) -> Result<Vec<String>> {
        let spool = self.spool(chunks, "load.tar").await?;
        let dir =
            crate::pull::TempPath::new(self.layout().tmp().join(crate::pull::random_name("load")));
        let (src, dest) = (spool.path.clone(), dir.path.clone());
        tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&src)
                .map_err(|e| ImagedError::io(format!("opening {}", src.display()), e))?;
            extract_files(std::io::BufReader::new(file), &dest)
        })
        .await
        .map_err(|e| ImagedError::Registry(e.to_string()))??;
        self.load_extracted(&dir.path).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn extraction_takes_plain_files_only() {
        let d = tempfile::tempdir().unwrap();
        extract_files(
            &tar_with(&[
                ("manifest.json", tar::EntryType::Regular, b"[]"),
                ("blobs/sha256/ab", tar::EntryType::Regular, b"x"),
            ])[..],
            d.path(),
        )
        .unwrap();
        assert_eq!(
            std::fs::read(d.path().join("blobs/sha256/ab")).unwrap(),
            b"x"
        );
        for bad in [
            tar_with(&[("../escape", tar::EntryType::Regular, b"x")]),
            tar_with(&[("/abs", tar::EntryType::Regular, b"x")]),
            tar_with(&[("link", tar::EntryType::Link, b"")]),
            // A symlink out of the archive.
            {
                let mut b = tar::Builder::new(Vec::new());
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, "layer.tar", "../../etc/shadow")
                    .unwrap();
                b.into_inner().unwrap()
            },
        ] {
            let d2 = tempfile::tempdir().unwrap();
            assert!(extract_files(&bad[..], d2.path()).is_err());
        }
        assert!(read_in(d.path(), "../etc/passwd").is_err());
        assert_eq!(
            link_target(Path::new("a/layer.tar"), Path::new("../b.tar")),
            Some(PathBuf::from("b.tar"))
        );
        assert_eq!(
            link_target(Path::new("a/x"), Path::new("../../etc/passwd")),
            None
        );
        assert_eq!(link_target(Path::new("x"), Path::new("/etc/passwd")), None);
        assert!(read_in(d.path(), "missing").is_err());
    }

    #[test]
    fn archives_are_deterministic_with_their_directories() {
        let mut plan = SavePlan::default();
        plan.files
            .insert("blobs/sha256/aa".into(), Source::Bytes(b"one".to_vec()));
        plan.files
            .insert("index.json".into(), Source::Bytes(b"{}".to_vec()));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_archive(&plan, &mut a).unwrap();
        write_archive(&plan, &mut b).unwrap();
        assert_eq!(a, b);
        let names: Vec<String> = tar::Archive::new(&a[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            vec!["blobs/", "blobs/sha256/", "blobs/sha256/aa", "index.json"]
        );
    }
}
