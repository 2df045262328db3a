//! Finding an image by reference, digest, full ID or ID prefix, as Docker does.

use crate::Imaged;
use crate::error::{ImagedError, Result};
use crate::reference::ImageRef;
use crate::store::ImageRow;

fn is_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Imaged {
    /// Resolves `reference` to an image row. Order (Docker's): a 64-hex string or
    /// `sha256:<hex>` is an ID (prefix); otherwise the normalised reference's tag or
    /// digest; a bare name that matches nothing and is hex is tried as an ID prefix.
    #[tracing::instrument(name = "image.resolve", skip_all, fields(image.name = reference))]
    pub async fn resolve(&self, reference: &str) -> Result<ImageRow> {
        let s = reference.trim();
        if s.is_empty() {
            return Err(ImagedError::InvalidArgument(
                "invalid reference format".to_string(),
            ));
        }
        if let Some(hex) = s.strip_prefix("sha256:")
            && is_hex(hex)
        {
            return self.by_id_prefix(hex, s).await;
        }
        if s.len() == 64 && is_hex(s) {
            return self.by_id_prefix(s, s).await;
        }
        let r = ImageRef::parse(s)?;
        let found = match (r.digest(), r.familiar_tag()) {
            (Some(d), _) => {
                self.store()
                    .image_id_by_repo_digest(&r.familiar_digest(d))
                    .await?
            }
            (None, Some(tag)) => self.store().image_id_by_tag(&tag).await?,
            (None, None) => None,
        };
        if let Some(id) = found
            && let Some(row) = self.store().image(&id).await?
        {
            return Ok(row);
        }
        if ImageRef::name_only(s) && is_hex(s) {
            return self.by_id_prefix(s, &r.familiar()).await;
        }
        Err(not_found(&r.familiar()))
    }

    async fn by_id_prefix(&self, hex: &str, shown: &str) -> Result<ImageRow> {
        let ids = self
            .store()
            .image_ids_with_prefix(&format!("sha256:{hex}"), 2)
            .await?;
        match ids.as_slice() {
            [id] => self
                .store()
                .image(id)
                .await?
                .ok_or_else(|| not_found(shown)),
            [] => Err(not_found(shown)),
            _ => Err(ImagedError::InvalidArgument(format!(
                "multiple IDs found with provided prefix: {hex}"
            ))),
        }
    }
}

/// Docker's message: `No such image: busybox:latest`.
fn not_found(shown: &str) -> ImagedError {
    ImagedError::NotFound(format!("No such image: {shown}"))
}
