//! `docker commit`: a container's writable layer becomes a new image layer on top of its
//! image, with the container's config (plus `--change` instructions), author and message;
//! `docker import`: a tarball becomes a one-layer image.

use crate::Imaged;
use crate::changes::{RUNTIME_PATHS, is_opaque};
use crate::error::{ImagedError, Result};
use crate::pull::{LayerBlob, TempPath, random_name};
use crate::store::ImageRow;
use crate::unpack::chain_ids;
use berth_proto::images::CommitRequest;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// The keys of a container config that belong in an image config.
const IMAGE_CONFIG_KEYS: &[&str] = &[
    "User",
    "ExposedPorts",
    "Env",
    "Cmd",
    "Healthcheck",
    "ArgsEscaped",
    "Volumes",
    "WorkingDir",
    "Entrypoint",
    "OnBuild",
    "Labels",
    "StopSignal",
    "Shell",
];

/// Counts and hashes what is written through it.
struct HashWrite<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashWrite<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hasher.update(&data[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// An empty regular file entry (a whiteout marker).
fn marker<W: Write>(b: &mut tar::Builder<W>, path: &str) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, path, io::empty())
}

/// Writes the overlay upper dir `upper` as an OCI layer tar: overlay whiteouts (0:0
/// character devices) become `.wh.<name>`, opaque directories get `.wh..wh..opq`; what
/// the runtime put there (mount points) is left out, as in `docker diff`.
pub fn layer_from_upper<W: Write>(upper: &Path, out: W) -> io::Result<W> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let mut stack = vec![(upper.to_path_buf(), String::new())];
    while let Some((dir, rel_dir)) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let name = name.to_string_lossy().into_owned();
            let rel = if rel_dir.is_empty() {
                name.clone()
            } else {
                format!("{rel_dir}/{name}")
            };
            if RUNTIME_PATHS.contains(&format!("/{rel}").as_str()) {
                continue;
            }
            let md = std::fs::symlink_metadata(&path)?;
            if md.file_type().is_char_device() && md.rdev() == 0 {
                let parent = Path::new(&rel)
                    .parent()
                    .map(|p| p.display().to_string())
                    .filter(|p| !p.is_empty());
                let wh = match parent {
                    Some(p) => format!("{p}/.wh.{name}"),
                    None => format!(".wh.{name}"),
                };
                marker(&mut b, &wh)?;
                continue;
            }
            if md.is_dir() {
                b.append_dir(&rel, &path)?;
                if is_opaque(&path) {
                    marker(&mut b, &format!("{rel}/.wh..wh..opq"))?;
                }
                stack.push((path, rel));
            } else {
                b.append_path_with_name(&path, &rel)?;
            }
        }
    }
    b.into_inner()
}

/// Applies one `--change` instruction (Dockerfile syntax) to an image `config` object.
pub fn apply_change(config: &mut Map<String, Value>, change: &str) -> Result<()> {
    let change = change.trim();
    let (word, rest) = change
        .split_once(char::is_whitespace)
        .map(|(w, r)| (w, r.trim()))
        .unwrap_or((change, ""));
    let instr = word.to_ascii_uppercase();
    let invalid = || {
        // Docker's wording.
        ImagedError::InvalidArgument(format!("{instr} is not a valid change command"))
    };
    let list = |rest: &str, shell: bool| -> Result<Value> {
        if rest.starts_with('[') {
            let v: Vec<String> = serde_json::from_str(rest).map_err(|e| {
                ImagedError::InvalidArgument(format!("{instr}: not a JSON array of strings: {e}"))
            })?;
            Ok(json!(v))
        } else if shell {
            Ok(json!(["/bin/sh", "-c", rest]))
        } else {
            Ok(json!(rest.split_whitespace().collect::<Vec<_>>()))
        }
    };
    let unquote = |s: &str| s.trim_matches('"').to_string();
    let pairs = |rest: &str| -> Vec<(String, String)> {
        if rest
            .split_whitespace()
            .next()
            .is_some_and(|w| w.contains('='))
        {
            rest.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (unquote(k), unquote(v)))
                .collect()
        } else {
            match rest.split_once(char::is_whitespace) {
                Some((k, v)) => vec![(unquote(k), unquote(v.trim()))],
                None => Vec::new(),
            }
        }
    };
    match instr.as_str() {
        "CMD" => {
            config.insert("Cmd".into(), list(rest, true)?);
        }
        "ENTRYPOINT" => {
            config.insert("Entrypoint".into(), list(rest, true)?);
        }
        "ENV" => {
            let mut env: Vec<String> = config
                .get("Env")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            for (k, v) in pairs(rest) {
                env.retain(|e| e.split_once('=').map_or(e.as_str(), |(ek, _)| ek) != k);
                env.push(format!("{k}={v}"));
            }
            config.insert("Env".into(), json!(env));
        }
        "LABEL" => {
            let labels = config.entry("Labels").or_insert_with(|| json!({}));
            if !labels.is_object() {
                *labels = json!({});
            }
            for (k, v) in pairs(rest) {
                labels[k] = json!(v);
            }
        }
        "EXPOSE" => {
            let ports = config.entry("ExposedPorts").or_insert_with(|| json!({}));
            if !ports.is_object() {
                *ports = json!({});
            }
            for p in rest.split_whitespace() {
                let key = if p.contains('/') {
                    p.to_string()
                } else {
                    format!("{p}/tcp")
                };
                ports[key] = json!({});
            }
        }
        "VOLUME" => {
            let vols = config.entry("Volumes").or_insert_with(|| json!({}));
            if !vols.is_object() {
                *vols = json!({});
            }
            for v in list(rest, false)?.as_array().into_iter().flatten() {
                if let Some(v) = v.as_str() {
                    vols[v] = json!({});
                }
            }
        }
        "USER" => {
            config.insert("User".into(), json!(rest));
        }
        "WORKDIR" => {
            config.insert("WorkingDir".into(), json!(rest));
        }
        "STOPSIGNAL" => {
            config.insert("StopSignal".into(), json!(rest));
        }
        "ONBUILD" => {
            let on = config.entry("OnBuild").or_insert_with(|| json!([]));
            if let Some(a) = on.as_array_mut() {
                a.push(json!(rest));
            } else {
                *on = json!([rest]);
            }
        }
        _ => return Err(invalid()),
    }
    Ok(())
}

impl Imaged {
    /// Commits the container's writable layer; returns the new image's ID.
    pub async fn commit(&self, req: CommitRequest) -> Result<String> {
        let snap = self
            .store()
            .snapshot(&req.container_id)
            .await?
            .ok_or_else(|| {
                ImagedError::NotFound(format!("No such container: {}", req.container_id))
            })?;
        let parent = self.resolve(&snap.image_id).await?;
        let mut config: Value = serde_json::from_slice(&parent.config)
            .map_err(|e| ImagedError::Registry(format!("the image's config: {e}")))?;
        // The container's settings become the image's, then the changes apply.
        let container: Value =
            serde_json::from_slice(&req.container_config_json).unwrap_or(Value::Null);
        let mut image_config = Map::new();
        for k in IMAGE_CONFIG_KEYS {
            if let Some(v) = container.get(*k).filter(|v| !v.is_null()) {
                image_config.insert((*k).to_string(), v.clone());
            }
        }
        for change in &req.changes {
            apply_change(&mut image_config, change)?;
        }
        let reference = if req.reference.is_empty() {
            None
        } else {
            let r = crate::reference::ImageRef::parse(&req.reference)?;
            Some(r.familiar_tag().unwrap_or_else(|| r.familiar()))
        };

        let tmp = self.layout().tmp();
        let blob = TempPath::new(tmp.join(random_name("commit.tar.gz")));
        let (upper, blob_path) = (std::path::PathBuf::from(&snap.upper_dir), blob.path.clone());
        let (diff_id, digest, size) = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::create(&blob_path)?;
            let compressed = HashWrite {
                inner: file,
                hasher: Sha256::new(),
                written: 0,
            };
            let gz = flate2::write::GzEncoder::new(compressed, flate2::Compression::fast());
            let plain = HashWrite {
                inner: gz,
                hasher: Sha256::new(),
                written: 0,
            };
            let plain = layer_from_upper(&upper, plain)?;
            let diff_id = format!("sha256:{}", hex::encode(plain.hasher.finalize()));
            let mut compressed = plain.inner.finish()?;
            compressed.flush()?;
            compressed.inner.sync_all()?;
            let digest = format!("sha256:{}", hex::encode(compressed.hasher.finalize()));
            Ok::<_, io::Error>((diff_id, digest, compressed.written as i64))
        })
        .await
        .map_err(|e| ImagedError::Registry(e.to_string()))?
        .map_err(|e| ImagedError::io(format!("writing the layer of {}", req.container_id), e))?;

        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let mut diff_ids: Vec<String> = serde_json::from_str(&parent.diff_ids)
            .map_err(|e| ImagedError::Registry(format!("diff ids: {e}")))?;
        diff_ids.push(diff_id);
        config["config"] = Value::Object(image_config);
        config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
        config["created"] = json!(now);
        config["container"] = json!(req.container_id);
        if !req.author.is_empty() {
            config["author"] = json!(req.author);
        }
        if !req.comment.is_empty() {
            config["comment"] = json!(req.comment);
        }
        let mut history = config["history"].as_array().cloned().unwrap_or_default();
        let mut entry = json!({"created": now});
        if !req.author.is_empty() {
            entry["author"] = json!(req.author);
        }
        if !req.comment.is_empty() {
            entry["comment"] = json!(req.comment);
        }
        history.push(entry);
        config["history"] = json!(history);
        let config_bytes = serde_json::to_vec(&config)
            .map_err(|e| ImagedError::Registry(format!("encoding the config: {e}")))?;
        let id = format!("sha256:{}", hex::encode(Sha256::digest(&config_bytes)));

        let layer = LayerBlob {
            digest,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            size,
        };
        let layer_size = self.ensure_top_layer(&blob.path, &layer, &diff_ids).await?;
        let row = ImageRow {
            id: id.clone(),
            config: config_bytes,
            manifest_digest: String::new(),
            diff_ids: serde_json::to_string(&diff_ids).unwrap_or_default(),
            size: parent.size + layer_size,
            created: now,
            os: parent.os,
            architecture: parent.architecture,
            parent: parent.id,
        };
        self.store()
            .commit_local_image(&row, reference.as_deref())
            .await?;
        tracing::info!(container = %req.container_id, %id, "committed");
        Ok(id)
    }
}

impl Imaged {
    /// Installs the blob at `path` as the top layer of `diff_ids` unless the store has it
    /// (one install per chain at a time); returns that layer's size.
    async fn ensure_top_layer(
        &self,
        path: &Path,
        blob: &LayerBlob,
        diff_ids: &[String],
    ) -> Result<i64> {
        let chains = chain_ids(diff_ids);
        let top = chains.len() - 1;
        let lock = self.layer_lock(&chains[top]);
        let _guard = lock.lock().await;
        if !self.layer_present(&chains[top]).await? {
            self.install_layer(path, blob, top, diff_ids, &chains)
                .await?;
        }
        Ok(self
            .store()
            .layer(&chains[top])
            .await?
            .map(|l| l.size)
            .unwrap_or_default())
    }
}

/// The sha256 of the uncompressed stream of a (possibly compressed) layer file.
fn diff_id_of(path: &Path) -> io::Result<String> {
    let mut magic = [0u8; 4];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(path)?;
        let mut got = 0;
        while got < magic.len() {
            match f.read(&mut magic[got..])? {
                0 => break,
                k => got += k,
            }
        }
        got
    };
    let file = io::BufReader::new(std::fs::File::open(path)?);
    let mut reader: Box<dyn io::Read> = match crate::unpack::detect("", &magic[..n]) {
        crate::unpack::Compression::Gzip => Box::new(flate2::read::GzDecoder::new(file)),
        crate::unpack::Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(file)?),
        crate::unpack::Compression::None => Box::new(file),
    };
    let mut h = HashWrite {
        inner: io::sink(),
        hasher: Sha256::new(),
        written: 0,
    };
    io::copy(&mut reader, &mut h)?;
    Ok(format!("sha256:{}", hex::encode(h.hasher.finalize())))
}

impl Imaged {
    /// `docker import URL`: what an http(s) URL serves, spooled under `tmp/` as it comes
    /// (bounded waits: 10 s to connect, 60 s between reads). An HTTP error or a download
    /// that breaks off fails the import, which then adds nothing.
    pub(crate) async fn download(&self, url: &str) -> Result<crate::pull::TempPath> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| ImagedError::InvalidArgument(format!("invalid URL {url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ImagedError::InvalidArgument(format!(
                "invalid URL {url:?}: only http and https can be imported from"
            )));
        }
        let failed = |e: reqwest::Error| ImagedError::Registry(format!("Get {url:?}: {e}"));
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .read_timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(failed)?;
        let resp = client.get(parsed).send().await.map_err(failed)?;
        if !resp.status().is_success() {
            return Err(ImagedError::Registry(format!(
                "Get {url:?}: {}",
                resp.status()
            )));
        }
        let chunks = futures_util::stream::unfold(Some(resp), |state| async move {
            let mut resp = state?;
            match resp.chunk().await {
                Ok(Some(b)) => Some((Ok(b.to_vec()), Some(resp))),
                Ok(None) => None,
                Err(e) => Some((Err(format!("downloading: {e}")), None)),
            }
        });
        self.spool(Box::pin(chunks), "import").await
    }

    /// `docker import`: the tarball (plain, gzip or zstd) at `path` as a one-layer image
    /// with `changes` applied and `message` as its history comment. Returns its ID.
    pub async fn import(
        &self,
        path: &Path,
        changes: &[String],
        message: &str,
        reference: &str,
    ) -> Result<String> {
        let mut image_config = Map::new();
        for change in changes {
            apply_change(&mut image_config, change)?;
        }
        let reference = if reference.is_empty() {
            None
        } else {
            let r = crate::reference::ImageRef::parse(reference)?;
            Some(r.familiar_tag().unwrap_or_else(|| r.familiar()))
        };
        let src = path.to_path_buf();
        let (diff_id, facts) = tokio::task::spawn_blocking(move || {
            let diff_id = diff_id_of(&src)
                .map_err(|e| ImagedError::BadLayer(format!("reading the tarball: {e}")))?;
            Ok::<_, ImagedError>((diff_id, crate::saveload::blob_facts(&src)?))
        })
        .await
        .map_err(|e| ImagedError::Registry(e.to_string()))??;
        let (digest, media_type, size) = facts;
        let diff_ids = vec![diff_id];
        let layer_size = self
            .ensure_top_layer(
                path,
                &LayerBlob {
                    digest,
                    media_type,
                    size,
                },
                &diff_ids,
            )
            .await?;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let platform = crate::pull::Platform::host();
        let comment = if message.is_empty() {
            "Imported from -"
        } else {
            message
        };
        let config = json!({
            "architecture": platform.arch,
            "os": platform.os,
            "created": now,
            "config": Value::Object(image_config),
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": now, "comment": comment}],
        });
        let config_bytes = serde_json::to_vec(&config)
            .map_err(|e| ImagedError::Registry(format!("encoding the config: {e}")))?;
        let id = format!("sha256:{}", hex::encode(Sha256::digest(&config_bytes)));
        let row = ImageRow {
            id: id.clone(),
            config: config_bytes,
            manifest_digest: String::new(),
            diff_ids: serde_json::to_string(&diff_ids).unwrap_or_default(),
            size: layer_size,
            created: now,
            os: platform.os,
            architecture: platform.arch,
            parent: String::new(),
        };
        self.store()
            .commit_local_image(&row, reference.as_deref())
            .await?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_instructions_as_docker_reads_them() {
        let mut c = Map::new();
        c.insert("Env".into(), json!(["PATH=/bin", "FOO=old"]));
        for ch in [
            r#"CMD ["cat", "/hello"]"#,
            "entrypoint /bin/run --fast",
            "ENV FOO=bar BAZ=\"q\"",
            "ENV SINGLE value with spaces",
            "EXPOSE 80 53/udp",
            "LABEL a=b",
            "USER 1000:1000",
            "WORKDIR /srv",
            "VOLUME [\"/data\"]",
            "STOPSIGNAL SIGINT",
        ] {
            apply_change(&mut c, ch).unwrap();
        }
        assert_eq!(c["Cmd"], json!(["cat", "/hello"]));
        assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "/bin/run --fast"]));
        assert_eq!(
            c["Env"],
            json!(["PATH=/bin", "FOO=bar", "BAZ=q", "SINGLE=value with spaces"])
        );
        assert_eq!(c["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!(c["Labels"]["a"], "b");
        assert_eq!(c["User"], "1000:1000");
        assert_eq!(c["WorkingDir"], "/srv");
        assert_eq!(c["Volumes"], json!({"/data": {}}));
        assert_eq!(c["StopSignal"], "SIGINT");
        let e = apply_change(&mut c, "RUN rm -rf /").unwrap_err();
        assert_eq!(e.to_string(), "RUN is not a valid change command");
        assert!(apply_change(&mut c, "CMD [not json").is_err());
    }

    #[test]
    fn the_upper_dir_becomes_a_layer_with_oci_whiteouts() {
        let d = tempfile::tempdir().unwrap();
        let u = d.path();
        std::fs::create_dir_all(u.join("etc/app")).unwrap();
        std::fs::write(u.join("etc/app/conf"), "x").unwrap();
        std::fs::write(u.join("etc/hosts"), "runtime").unwrap();
        nix::sys::stat::mknod(
            &u.join("etc/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        std::fs::create_dir(u.join("opaque")).unwrap();
        xattr::set(u.join("opaque"), "trusted.overlay.opaque", b"y").unwrap();
        let tar = layer_from_upper(u, Vec::new()).unwrap();
        let names: Vec<String> = tar::Archive::new(&tar[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(names.contains(&"etc/app/conf".to_string()), "{names:?}");
        assert!(names.contains(&"etc/.wh.gone".to_string()), "{names:?}");
        assert!(
            names.contains(&"opaque/.wh..wh..opq".to_string()),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n == "etc/hosts"), "{names:?}");
    }
}
