//! `docker push`: the image's layer blobs (kept as pulled), its config and a manifest
//! naming them go to the registry, with Docker's progress messages.

use crate::Imaged;
use crate::error::{ImagedError, Result};
use crate::pull::{BLOB_FILE, Platform, ProgressSender, short_id};
use crate::reference::ImageRef;
use crate::store::LayerRow;
use crate::unpack::chain_ids;
use berth_proto::images::{PullProgress, PushRequest};
use futures_util::StreamExt;
use oci_client::RegistryOperation;
use oci_client::errors::OciDistributionError;
use serde_json::json;
use sha2::{Digest, Sha256};

/// Docker v2 media types: a layer pulled with one keeps its family in the manifest.
const DOCKER_LAYER_PREFIX: &str = "application/vnd.docker.";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// The manifest for `config` and `layers` (bottom first): Docker v2 when the layers are
/// Docker's media types, else OCI. Returns its bytes and media type.
pub fn manifest_for(config: &[u8], layers: &[LayerRow]) -> (Vec<u8>, &'static str) {
    let docker = layers
        .iter()
        .all(|l| l.blob_media_type.starts_with(DOCKER_LAYER_PREFIX))
        && !layers.is_empty();
    let (media, config_media) = if docker {
        (DOCKER_MANIFEST, DOCKER_CONFIG)
    } else {
        (OCI_MANIFEST, OCI_CONFIG)
    };
    let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(config)));
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": media,
        "config": {"mediaType": config_media, "digest": config_digest, "size": config.len()},
        "layers": layers.iter().map(|l| json!({
            "mediaType": l.blob_media_type,
            "digest": l.blob_digest,
            "size": l.blob_size,
        })).collect::<Vec<_>>(),
    });
    (serde_json::to_vec(&doc).unwrap_or_default(), media)
}

/// A registry's refusal of a push in Docker's words: credentials it does not accept are
/// "unauthorized" (the CLI prints it), a registry that does not answer is unavailable.
fn push_error(registry: &str, e: OciDistributionError) -> ImagedError {
    let unauthorized =
        || ImagedError::Unauthenticated("unauthorized: authentication required".into());
    match e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => unauthorized(),
        OciDistributionError::RegistryError { ref envelope, .. }
            if envelope.errors.iter().any(|x| {
                serde_json::to_value(&x.code)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .is_some_and(|c| c == "UNAUTHORIZED" || c == "DENIED")
            }) =>
        {
            unauthorized()
        }
        OciDistributionError::RequestError(ref r)
            if matches!(
                r.status(),
                Some(reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN)
            ) =>
        {
            unauthorized()
        }
        OciDistributionError::RequestError(ref r) if r.is_connect() || r.is_timeout() => {
            ImagedError::Unavailable(format!("pushing to {registry}: {e}"))
        }
        other => ImagedError::Registry(format!("pushing to {registry}: {other}")),
    }
}

async fn say(tx: &ProgressSender, status: impl Into<String>, id: &str, cur: i64, total: i64) {
    let _ = tx
        .send(Ok(PullProgress {
            status: status.into(),
            id: id.to_string(),
            current: cur,
            total,
            ..Default::default()
        }))
        .await;
}

impl Imaged {
    /// The image's layers, bottom first, each with its kept blob; `what` ("push",
    /// "save") words the error for a layer stored without one.
    pub(crate) async fn layers_with_blobs(
        &self,
        row: &crate::store::ImageRow,
        what: &str,
    ) -> Result<Vec<LayerRow>> {
        let diff_ids: Vec<String> = serde_json::from_str(&row.diff_ids)
            .map_err(|e| ImagedError::Registry(format!("diff ids: {e}")))?;
        let mut layers = Vec::new();
        for chain in chain_ids(&diff_ids) {
            let l = self.store().layer(&chain).await?.ok_or_else(|| {
                ImagedError::FailedPrecondition(format!("layer {chain} of the image is missing"))
            })?;
            if l.blob_digest.is_empty() {
                return Err(ImagedError::FailedPrecondition(format!(
                    "layer {} was stored without its blob (pulled by an older Berth): pull the image again to {what} it",
                    l.diff_id
                )));
            }
            layers.push(l);
        }
        Ok(layers)
    }

    /// Pushes `req.reference` (a tagged name), or with `all_tags` every local tag of
    /// that repository in turn (as `docker push --all-tags`). Layers the registry has are
    /// skipped.
    pub async fn push(&self, req: PushRequest, tx: ProgressSender) -> Result<()> {
        if !req.all_tags {
            let r = ImageRef::parse(&req.reference)?;
            return self.push_tag(&r, req.auth, &tx, true).await;
        }
        let name = ImageRef::parse(&req.reference)?.familiar_name();
        let tags = self.store().tags_in_repo(&name).await?;
        if tags.is_empty() {
            // Docker's wording.
            return Err(ImagedError::NotFound(format!(
                "An image does not exist locally with the tag: {name}"
            )));
        }
        for (i, t) in tags.iter().enumerate() {
            let r = ImageRef::parse(t)?;
            self.push_tag(&r, req.auth.clone(), &tx, i == 0).await?;
        }
        Ok(())
    }

    /// Pushes one tagged image; `announce` says which repository first (once per push).
    async fn push_tag(
        &self,
        r: &ImageRef,
        auth: Option<berth_proto::images::RegistryAuth>,
        tx: &ProgressSender,
        announce: bool,
    ) -> Result<()> {
        let tx = tx.clone();
        let tag = r
            .tag()
            .map(str::to_string)
            .ok_or_else(|| ImagedError::InvalidArgument("push needs a tag".into()))?;
        let row = self.resolve(&r.familiar()).await.map_err(|e| match e {
            // Docker's wording.
            ImagedError::NotFound(_) => ImagedError::NotFound(format!(
                "An image does not exist locally with the tag: {}",
                r.familiar_name()
            )),
            e => e,
        })?;
        let layers = self.layers_with_blobs(&row, "push").await?;
        let registry = r.oci().resolve_registry().to_string();
        let (client, _) = self.client_for(&registry, &Platform::host());
        let auth = crate::pull::registry_auth(auth);
        let refused = |e| push_error(&registry, e);
        if announce {
            say(
                &tx,
                format!("The push refers to repository [{}]", r.familiar_name()),
                "",
                0,
                0,
            )
            .await;
        }
        client
            .auth(r.oci(), &auth, RegistryOperation::Push)
            .await
            .map_err(refused)?;
        // Docker lists the layers top first.
        for l in layers.iter().rev() {
            say(&tx, "Preparing", &short_id(&l.blob_digest), 0, 0).await;
        }
        for l in layers.iter().rev() {
            let id = short_id(&l.blob_digest);
            if client
                .blob_exists(r.oci(), &l.blob_digest)
                .await
                .map_err(refused)?
            {
                say(&tx, "Layer already exists", &id, 0, 0).await;
                continue;
            }
            let path = self.layout().layer_dir(&l.chain_id).join(BLOB_FILE);
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|e| ImagedError::io(format!("opening {}", path.display()), e))?;
            let total = l.blob_size;
            let (tx2, id2) = (tx.clone(), id.clone());
            let sent = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
            let counter = sent.clone();
            let stream =
                tokio_util::io::ReaderStream::with_capacity(file, 256 << 10).map(move |chunk| {
                    let chunk = chunk.map_err(|e| {
                        oci_client::errors::OciDistributionError::GenericError(Some(e.to_string()))
                    })?;
                    let now = counter
                        .fetch_add(chunk.len() as i64, std::sync::atomic::Ordering::Relaxed)
                        + chunk.len() as i64;
                    let _ = tx2.try_send(Ok(PullProgress {
                        status: "Pushing".into(),
                        id: id2.clone(),
                        current: now,
                        total,
                        ..Default::default()
                    }));
                    Ok(chunk)
                });
            client
                .push_blob_stream(r.oci(), stream, &l.blob_digest, Some(total as u64))
                .await
                .map_err(refused)?;
            say(&tx, "Pushed", &id, 0, 0).await;
        }
        let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(&row.config)));
        if !client
            .blob_exists(r.oci(), &config_digest)
            .await
            .map_err(refused)?
        {
            client
                .push_blob(r.oci(), row.config.clone(), &config_digest)
                .await
                .map_err(refused)?;
        }
        let (manifest, media) = manifest_for(&row.config, &layers);
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&manifest)));
        let size = manifest.len();
        client
            .push_manifest_raw(
                r.oci(),
                manifest,
                reqwest::header::HeaderValue::from_static(media),
            )
            .await
            .map_err(refused)?;
        self.store()
            .add_repo_digest(&r.familiar_digest(&digest), &row.id)
            .await?;
        say(
            &tx,
            format!("{tag}: digest: {digest} size: {size}"),
            "",
            0,
            0,
        )
        .await;
        let _ = tx
            .send(Ok(PullProgress {
                aux_json: json!({"Tag": tag, "Digest": digest, "Size": size}).to_string(),
                ..Default::default()
            }))
            .await;
        tracing::info!(image = %r.familiar(), %digest, "pushed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(media: &str) -> LayerRow {
        LayerRow {
            chain_id: "sha256:c".into(),
            diff_id: "sha256:d".into(),
            size: 1,
            parent: None,
            blob_digest: "sha256:b".into(),
            blob_media_type: media.into(),
            blob_size: 7,
        }
    }

    #[test]
    fn the_manifest_keeps_the_layers_family() {
        let (m, media) = manifest_for(
            b"{}",
            &[layer("application/vnd.docker.image.rootfs.diff.tar.gzip")],
        );
        assert_eq!(media, DOCKER_MANIFEST);
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v["config"]["mediaType"], DOCKER_CONFIG);
        assert_eq!(v["layers"][0]["size"], 7);
        let (_, media) = manifest_for(
            b"{}",
            &[layer("application/vnd.oci.image.layer.v1.tar+gzip")],
        );
        assert_eq!(media, OCI_MANIFEST);
    }
}
