//! Image references, normalised as Docker does, and their familiar (displayed) forms.

use crate::error::ImagedError;
use oci_client::Reference;

/// Docker's word for every malformed reference.
const INVALID: &str = "invalid reference format";

/// A parsed, normalised image reference (`busybox` = `docker.io/library/busybox:latest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    inner: Reference,
}

impl ImageRef {
    /// Parses `s` as Docker does; a reference with neither tag nor digest gets `latest`.
    pub fn parse(s: &str) -> Result<Self, ImagedError> {
        match s.parse::<Reference>() {
            Ok(inner) => Ok(Self { inner }),
            Err(_) => Err(ImagedError::InvalidArgument(invalid_message(s))),
        }
    }

    /// The reference as oci-client wants it.
    pub fn oci(&self) -> &Reference {
        &self.inner
    }

    /// `docker.io`, `127.0.0.1:5000`, ...
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The repository path inside the registry (`library/busybox`).
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag, if the reference has one (a digest-only reference has none).
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// The digest, if the reference has one.
    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// Docker's familiar repository name: `busybox`, `user/app`, `127.0.0.1:5000/busybox`.
    pub fn familiar_name(&self) -> String {
        familiar_name(self.registry(), self.repository())
    }

    /// `busybox:latest`: how Docker stores and shows a tag.
    pub fn familiar_tag(&self) -> Option<String> {
        self.tag()
            .map(|t| format!("{}:{}", self.familiar_name(), t))
    }

    /// `busybox@sha256:...` for a digest reference.
    pub fn familiar_digest(&self, digest: &str) -> String {
        format!("{}@{}", self.familiar_name(), digest)
    }

    /// How Docker prints this reference: the tag form if tagged, else the digest form.
    pub fn familiar(&self) -> String {
        match (self.tag(), self.digest()) {
            (_, Some(d)) => self.familiar_digest(d),
            (Some(t), None) => format!("{}:{}", self.familiar_name(), t),
            (None, None) => self.familiar_name(),
        }
    }

    /// True when the caller wrote only a name (no tag, no digest): such a string may be
    /// an image ID prefix instead.
    pub fn name_only(raw: &str) -> bool {
        let last = raw.rsplit('/').next().unwrap_or(raw);
        !raw.contains('@') && !last.contains(':')
    }
}

/// Docker's familiar form of `registry/repository`.
pub fn familiar_name(registry: &str, repository: &str) -> String {
    if registry == "docker.io" {
        match repository.strip_prefix("library/") {
            Some(rest) if !rest.contains('/') => rest.to_string(),
            _ => repository.to_string(),
        }
    } else {
        format!("{registry}/{repository}")
    }
}

/// Docker's message for a reference that does not parse. Uppercase in the repository is
/// named explicitly, as Docker does (`repository name (library/Busybox) must be lowercase`).
fn invalid_message(s: &str) -> String {
    let name = name_part(s);
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        let lowered = format!("{}{}", name.to_ascii_lowercase(), &s[name.len()..]);
        if let Ok(r) = lowered.parse::<Reference>() {
            let repo_len = r.repository().len();
            let original = if !name.contains('/') && r.repository().starts_with("library/") {
                format!("library/{name}")
            } else if name.len() >= repo_len {
                name[name.len() - repo_len..].to_string()
            } else {
                r.repository().to_string()
            };
            return format!("{INVALID}: repository name ({original}) must be lowercase");
        }
    }
    INVALID.to_string()
}

/// The name of a reference string, without `:tag` and `@digest`.
fn name_part(s: &str) -> &str {
    let no_digest = s.split('@').next().unwrap_or(s);
    match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

/// The host part of a `host[:port]` registry name (brackets of IPv6 literals removed).
pub fn registry_host(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match registry.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => registry,
    }
}

/// Docker treats registries on loopback as insecure (plain HTTP) by default.
pub fn is_loopback_registry(registry: &str) -> bool {
    let host = registry_host(registry);
    if host == "localhost" {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.oci().whole(), "docker.io/library/busybox:latest");
        assert_eq!(r.familiar_tag().unwrap(), "busybox:latest");
        assert_eq!(r.familiar(), "busybox:latest");

        let r = ImageRef::parse("docker.io/library/busybox:1.36").unwrap();
        assert_eq!(r.familiar(), "busybox:1.36");

        let r = ImageRef::parse("user/app").unwrap();
        assert_eq!(r.familiar(), "user/app:latest");

        let r = ImageRef::parse("127.0.0.1:5000/busybox").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "busybox");
        assert_eq!(r.familiar_tag().unwrap(), "127.0.0.1:5000/busybox:latest");
        assert_eq!(r.familiar_name(), "127.0.0.1:5000/busybox");

        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("127.0.0.1:5000/busybox@{d}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.familiar(), format!("127.0.0.1:5000/busybox@{d}"));

        let r = ImageRef::parse("localhost/foo").unwrap();
        assert_eq!(r.registry(), "localhost");
        assert_eq!(r.familiar(), "localhost/foo:latest");
    }

    #[test]
    fn invalid_references_use_dockers_wording() {
        let e = ImageRef::parse("Busybox").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid reference format: repository name (library/Busybox) must be lowercase"
        );
        let e = ImageRef::parse("127.0.0.1:5000/Foo:v1")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid reference format: repository name (Foo) must be lowercase"
        );
        assert_eq!(
            ImageRef::parse("bad name").unwrap_err().to_string(),
            "invalid reference format"
        );
        assert_eq!(
            ImageRef::parse("").unwrap_err().to_string(),
            "invalid reference format"
        );
        assert_eq!(
            ImageRef::parse(":tag").unwrap_err().to_string(),
            "invalid reference format"
        );
    }

    #[test]
    fn name_only_detection() {
        assert!(ImageRef::name_only("abc123"));
        assert!(ImageRef::name_only("127.0.0.1:5000/busybox"));
        assert!(!ImageRef::name_only("busybox:latest"));
        assert!(!ImageRef::name_only("busybox@sha256:00"));
    }

    #[test]
    fn loopback_registries_are_insecure() {
        assert!(is_loopback_registry("127.0.0.1:5000"));
        assert!(is_loopback_registry("127.3.2.1"));
        assert!(is_loopback_registry("localhost:5000"));
        assert!(is_loopback_registry("[::1]:5000"));
        assert!(!is_loopback_registry("docker.io"));
        assert!(!is_loopback_registry("10.0.0.1:5000"));
        assert_eq!(registry_host("[::1]:5000"), "::1");
        assert_eq!(registry_host("example.com:443"), "example.com");
    }
}
