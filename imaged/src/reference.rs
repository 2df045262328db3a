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

/// Docker's reference grammar (distribution's `reference` package), ASCII as Go's
/// regexps are: name (optional domain, lowercase path components), `:tag`, `@digest`.
/// Compiled here rather than through oci-spec's parser, whose Unicode `\w` in the
/// 128-times-repeated tag class built a 7 MB automaton on the first pull (and accepted
/// tags Docker refuses).
const REFERENCE_GRAMMAR: &str = concat!(
    r"^(?-u)(",
    // domain: components joined by dots or a bracketed IPv6 address, an optional port,
    // then a slash
    r"(?:(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])",
    r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[a-fA-F0-9:]+\])",
    r"(?::[0-9]+)?/)?",
    // path components: lowercase alphanumerics joined by separators
    r"[a-z0-9]+(?:(?:[._]|__|-*)[a-z0-9]+)*",
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-*)[a-z0-9]+)*)*",
    r")(?::([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?",
    r"(?:@([A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?$",
);

/// The longest repository path Docker accepts.
const NAME_MAX: usize = 255;

fn grammar() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    // A constant pattern: it compiles or no test passes.
    #[allow(clippy::expect_used)]
    RE.get_or_init(|| regex::Regex::new(REFERENCE_GRAMMAR).expect("the reference grammar"))
}

/// `name[:tag][@digest]` normalised as Docker does (`docker.io`, `library/`, `latest`).
fn parse_reference(s: &str) -> Option<Reference> {
    let caps = grammar().captures(s)?;
    let name = caps.get(1)?.as_str();
    let tag = caps.get(2).map(|m| m.as_str().to_string());
    let digest = caps.get(3).map(|m| m.as_str().to_string());
    let (registry, repository) = split_domain(name);
    if repository.len() > NAME_MAX {
        return None;
    }
    if let Some(d) = &digest {
        let expected = match d.split_once(':') {
            Some(("sha256", _)) => 64,
            Some(("sha384", _)) => 96,
            Some(("sha512", _)) => 128,
            _ => return None,
        };
        let hex = &d[d.find(':')? + 1..];
        // As go-digest: the known algorithms' hex is lowercase.
        if hex.len() != expected || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
    }
    Some(match (tag, digest) {
        (Some(t), Some(d)) => Reference::with_tag_and_digest(registry, repository, t, d),
        (None, Some(d)) => Reference::with_digest(registry, repository, d),
        (t, None) => {
            Reference::with_tag(registry, repository, t.unwrap_or_else(|| "latest".into()))
        }
    })
}

/// Docker's split of a name into registry and repository: the first component is a
/// registry when it has a dot or a port, is `localhost`, or is not all lowercase.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut rest) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    if domain == "index.docker.io" {
        domain = "docker.io".into();
    }
    if domain == "docker.io" && !rest.contains('/') {
        rest = format!("library/{rest}");
    }
    (domain, rest)
}

impl ImageRef {
    /// Parses `s` as Docker does; a reference with neither tag nor digest gets `latest`.
    pub fn parse(s: &str) -> Result<Self, ImagedError> {
        match parse_reference(s) {
            Some(inner) => Ok(Self { inner }),
            None => Err(ImagedError::InvalidArgument(invalid_message(s))),
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
        if let Some(r) = parse_reference(&lowered) {
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
    fn the_grammar_is_dockers() {
        let d = format!("sha256:{}", "b".repeat(64));
        let r = ImageRef::parse(&format!("index.docker.io/foo:v1@{d}")).unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag(), r.digest()),
            ("docker.io", "library/foo", Some("v1"), Some(d.as_str()))
        );
        let r = ImageRef::parse("my-reg.example.com:5000/a/b__c/d-e.f:1.2_3-x").unwrap();
        assert_eq!(r.registry(), "my-reg.example.com:5000");
        assert_eq!(r.repository(), "a/b__c/d-e.f");
        assert_eq!(r.tag(), Some("1.2_3-x"));
        // A first component without dot, port or localhost is a Hub user.
        assert_eq!(ImageRef::parse("user/app").unwrap().registry(), "docker.io");
        // ...unless it has capitals: then it is a registry, as Docker splits it.
        let r = ImageRef::parse("Reg/app").unwrap();
        assert_eq!((r.registry(), r.repository()), ("Reg", "app"));
        let r = ImageRef::parse("[::1]:5000/app:v1").unwrap();
        assert_eq!((r.registry(), r.repository()), ("[::1]:5000", "app"));
        assert!(ImageRef::parse(&format!("b@sha256:{}", "A".repeat(64))).is_err());
        for bad in [
            "busybox:",
            "busybox:-tag",
            "busybox:t\u{e9}g",
            "a//b",
            "a/",
            "/a",
            "a..b",
            "-a",
            "busybox@sha256:abc",
            "busybox@md5:0123456789abcdef0123456789abcdef",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(ImageRef::parse(&format!("b:{}", "t".repeat(128))).is_ok());
        assert!(ImageRef::parse(&format!("b:{}", "t".repeat(129))).is_err());
        assert!(ImageRef::parse(&format!("r.io/{}", "a".repeat(255))).is_ok());
        assert!(ImageRef::parse(&format!("r.io/{}", "a".repeat(256))).is_err());
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
