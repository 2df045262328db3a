//! `docker login`: checks credentials against a registry the way Docker's login does —
//! `GET /v2/`, then the challenge it answers with: Basic (the same request with the
//! credentials) or Bearer (a token from the realm, then `/v2/` with it).

use crate::Imaged;
use crate::error::{ImagedError, Result};
use crate::reference::is_loopback_registry;
use std::time::Duration;

/// Docker's name for Docker Hub in `docker login` (`https://index.docker.io/v1/`).
const HUB_LOGIN: &str = "index.docker.io";
const HUB_REGISTRY: &str = "registry-1.docker.io";

/// `host[:port]` of a login server as the CLI sends it (`https://host/v1/`, `host:5000`).
pub fn login_host(server: &str) -> String {
    let rest = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or(server);
    let host = rest.split('/').next().unwrap_or(rest);
    match host {
        "" | HUB_LOGIN | "docker.io" => HUB_REGISTRY.to_string(),
        h => h.to_string(),
    }
}

/// The realm and service of a `Bearer` challenge, or None for a `Basic` one.
#[derive(Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer { realm: String, service: String },
}

/// Reads the first challenge Docker understands from a `WWW-Authenticate` value.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    for c in http_auth::ChallengeParser::new(header).flatten() {
        if c.scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if c.scheme.eq_ignore_ascii_case("bearer") {
            let param = |name: &str| {
                c.params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.to_unescaped())
                    .unwrap_or_default()
            };
            return Some(Challenge::Bearer {
                realm: param("realm"),
                service: param("service"),
            });
        }
    }
    None
}

impl Imaged {
    /// Checks `username`/`password` at `server`; Ok is Docker's "Login Succeeded".
    pub async fn check_auth(&self, server: &str, username: &str, password: &str) -> Result<()> {
        let host = login_host(server);
        let insecure = is_loopback_registry(&host) || self.is_insecure(&host);
        let scheme = if insecure { "http" } else { "https" };
        let base = format!("{scheme}://{host}/v2/");
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ImagedError::Registry(format!("HTTP client: {e}")))?;
        let unreachable = |e: reqwest::Error| {
            // Docker's wording for a registry that does not answer.
            ImagedError::Unavailable(format!("Get \"{base}\": {}", root_cause(&e)))
        };
        let first = http.get(&base).send().await.map_err(unreachable)?;
        if first.status().is_success() {
            return Ok(());
        }
        let failed = |status: reqwest::StatusCode| {
            // Docker's wording.
            ImagedError::Unauthenticated(format!(
                "login attempt to {base} failed with status: {status}"
            ))
        };
        if first.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Err(failed(first.status()));
        }
        let challenge = first
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge);
        // The same `/v2/` request with the credentials the challenge asks for.
        let retry = |req: reqwest::RequestBuilder| async {
            let r = req.send().await.map_err(unreachable)?;
            if r.status().is_success() {
                Ok(())
            } else {
                Err(failed(r.status()))
            }
        };
        match challenge {
            Some(Challenge::Basic) | None => {
                retry(http.get(&base).basic_auth(username, Some(password))).await
            }
            Some(Challenge::Bearer { realm, service }) => {
                let r = http
                    .get(&realm)
                    .query(&[("service", service.as_str()), ("account", username)])
                    .basic_auth(username, Some(password))
                    .send()
                    .await
                    .map_err(unreachable)?;
                if !r.status().is_success() {
                    return Err(ImagedError::Unauthenticated(
                        "unauthorized: incorrect username or password".into(),
                    ));
                }
                let body: serde_json::Value = r
                    .json()
                    .await
                    .map_err(|e| ImagedError::Registry(format!("token response: {e}")))?;
                let token = body
                    .get("token")
                    .or_else(|| body.get("access_token"))
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                retry(http.get(&base).bearer_auth(token)).await
            }
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_and_challenges() {
        assert_eq!(login_host("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(login_host("https://index.docker.io/v1/"), HUB_REGISTRY);
        assert_eq!(login_host("http://reg.local:5000/v2/"), "reg.local:5000");
        assert_eq!(
            parse_challenge(r#"Basic realm="basic-realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: "registry.example".into()
            })
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }
}
