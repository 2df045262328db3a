//! daemon.json's registry settings — `registry-mirrors` (pull-through mirrors of Docker
//! Hub) and `max-concurrent-downloads` — parsed once for berthd (which refuses a bad
//! value at start, as dockerd does) and imaged (which acts on them).

/// One mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// `host[:port]`.
    pub host: String,
    /// Plain HTTP (`http://...`) rather than TLS.
    pub plain_http: bool,
}

impl Mirror {
    /// Parses one entry as Docker accepts it: an http(s) URL of a host, without a path,
    /// query, fragment or user info (a trailing slash is fine).
    pub fn parse(url: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid mirror: {url:?}: {why}");
        let (plain_http, rest) = if let Some(r) = url.strip_prefix("http://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (false, r)
        } else {
            return Err(bad("unsupported scheme (http or https)"));
        };
        let host = rest.strip_suffix('/').unwrap_or(rest);
        if host.is_empty() || host.contains(['/', '?', '#', '@']) {
            return Err(bad("path, query, fragment or user info not allowed"));
        }
        Ok(Self {
            host: host.to_string(),
            plain_http,
        })
    }
}

/// The `registry-mirrors` of a daemon.json document, in order (none when absent).
pub fn from_daemon_json(doc: &serde_json::Value) -> Result<Vec<Mirror>, String> {
    let Some(list) = doc.get("registry-mirrors") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or("registry-mirrors must be a list of URLs")?;
    list.iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| "registry-mirrors must be a list of URLs".to_string())
                .and_then(Mirror::parse)
        })
        .collect()
}

/// Docker's default `max-concurrent-downloads`.
pub const DEFAULT_CONCURRENT_DOWNLOADS: usize = 3;

/// `max-concurrent-downloads`: layers one pull downloads at once (a positive integer).
pub fn max_concurrent_downloads(doc: &serde_json::Value) -> Result<usize, String> {
    match doc.get("max-concurrent-downloads") {
        None => Ok(DEFAULT_CONCURRENT_DOWNLOADS),
        Some(v) => v
            .as_u64()
            .filter(|n| *n > 0)
            .map(|n| n as usize)
            .ok_or_else(|| format!("invalid max-concurrent-downloads {v}: a positive integer")),
    }
}

/// Everything of daemon.json's registry settings that can be wrong, checked at once.
pub fn validate(doc: &serde_json::Value) -> Result<(), String> {
    from_daemon_json(doc)?;
    max_concurrent_downloads(doc)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_are_parsed_as_docker_accepts_them() {
        assert_eq!(
            Mirror::parse("http://127.0.0.1:5000/").unwrap(),
            Mirror {
                host: "127.0.0.1:5000".into(),
                plain_http: true
            }
        );
        assert!(!Mirror::parse("https://mirror.example").unwrap().plain_http);
        for bad in [
            "ftp://m",
            "mirror.example",
            "https://m/path",
            "https://m?x",
            "http://",
        ] {
            assert!(Mirror::parse(bad).is_err(), "{bad}");
        }
        let doc = serde_json::json!({"registry-mirrors": ["http://127.0.0.1:1"]});
        assert_eq!(from_daemon_json(&doc).unwrap().len(), 1);
        assert!(from_daemon_json(&serde_json::json!({})).unwrap().is_empty());
        for bad in [
            serde_json::json!({"registry-mirrors": ["m/x"]}),
            serde_json::json!({"registry-mirrors": "http://m"}),
            serde_json::json!({"registry-mirrors": [1]}),
        ] {
            assert!(from_daemon_json(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn concurrent_downloads_default_to_dockers_and_must_be_positive() {
        assert_eq!(max_concurrent_downloads(&serde_json::json!({})).unwrap(), 3);
        let doc = serde_json::json!({"max-concurrent-downloads": 1});
        assert_eq!(max_concurrent_downloads(&doc).unwrap(), 1);
        for bad in [0.into(), (-2).into(), "3".into(), serde_json::Value::Null] {
            let doc = serde_json::json!({ "max-concurrent-downloads": bad });
            assert!(max_concurrent_downloads(&doc).is_err(), "{doc}");
            assert!(validate(&doc).is_err(), "{doc}");
        }
    }
}
