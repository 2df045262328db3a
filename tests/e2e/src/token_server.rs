//! A registry token server for one test: the Bearer-token flow of Docker Hub and most
//! private registries (`WWW-Authenticate: Bearer realm=...`), on a loopback port.
//!
//! `GET /token?service=..&scope=repository:NAME:pull,push` with HTTP Basic credentials
//! answers a JWT granting the asked actions; without credentials, a token granting
//! nothing (the registry then refuses, as Docker Hub does for a private repository);
//! with wrong ones, 401. Tokens are RS256, signed with the `openssl` CLI by a key whose
//! self-signed certificate travels in the token's `x5c` header and is the registry's
//! `rootcertbundle`.

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// The `service` and `issuer` the registry is configured with.
pub const SERVICE: &str = "berth-test-registry";
/// See [`SERVICE`].
pub const ISSUER: &str = "berth-test-issuer";

/// A running token server; stopped when dropped.
pub struct TokenServer {
    port: u16,
    dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    granted: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Signer {
    key: PathBuf,
    cert_der_b64: String,
    user: String,
    password: String,
    granted: Arc<AtomicUsize>,
}

impl TokenServer {
    /// Generates the signing key and certificate and starts serving.
    pub fn start(user: &str, password: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("berth-token")
            .tempdir_in("/tmp")?;
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=berth-test-token-signer",
            "-keyout",
            &key.display().to_string(),
            "-out",
            &cert.display().to_string(),
        ])?;
        let der = dir.path().join("cert.der");
        openssl(&[
            "x509",
            "-in",
            &cert.display().to_string(),
            "-outform",
            "DER",
            "-out",
            &der.display().to_string(),
        ])?;
        let cert_der_b64 = STANDARD.encode(std::fs::read(&der)?);
        let listener = TcpListener::bind(("127.0.0.1", 0)).context("binding the token server")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let granted = Arc::new(AtomicUsize::new(0));
        let signer = Signer {
            key,
            cert_der_b64,
            user: user.to_string(),
            password: password.to_string(),
            granted: granted.clone(),
        };
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::Acquire) {
                    break;
                }
                if let Ok(c) = conn {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
                    if let Err(e) = signer.answer(c) {
                        eprintln!("token server: {e:#}");
                    }
                }
            }
        });
        Ok(Self {
            port,
            dir,
            stop,
            granted,
            thread: Some(thread),
        })
    }

    /// The realm for the registry's config.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The certificate the registry trusts tokens from.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// How many tokens granting some access were issued so far.
    pub fn granted(&self) -> usize {
        self.granted.load(Ordering::Acquire)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn openssl(args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .context("running openssl (install the openssl package)")?;
    if !out.status.success() {
        bail!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

impl Signer {
    fn answer(&self, conn: TcpStream) -> Result<()> {
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut request_line = String::new();
        reader.read_line(&mut request_line)?;
        let mut authorization = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.trim().eq_ignore_ascii_case("authorization")
            {
                authorization = Some(v.trim().to_string());
            }
        }
        let target = request_line.split(' ').nth(1).unwrap_or("");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if path != "/token" {
            return respond(conn, 404, &json!({"details": "not found"}));
        }
        let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let user = match authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Basic "))
        {
            None => None,
            Some(b64) => {
                let decoded = STANDARD.decode(b64.trim()).unwrap_or_default();
                let text = String::from_utf8_lossy(&decoded).into_owned();
                if text != format!("{}:{}", self.user, self.password) {
                    return respond(
                        conn,
                        401,
                        &json!({"details": "incorrect username or password"}),
                    );
                }
                Some(self.user.clone())
            }
        };
        // Granted as asked to the user; nothing to an anonymous caller.
        let access: Vec<serde_json::Value> = match &user {
            None => Vec::new(),
            Some(_) => params
                .iter()
                .filter(|(k, _)| k == "scope")
                .filter_map(|(_, scope)| {
                    let mut parts = scope.splitn(3, ':');
                    let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                    Some(json!({
                        "type": kind,
                        "name": name,
                        "actions": actions.split(',').collect::<Vec<_>>(),
                    }))
                })
                .collect(),
        };
        if !access.is_empty() {
            self.granted.fetch_add(1, Ordering::AcqRel);
        }
        let token = self.sign(user.as_deref().unwrap_or(""), &access)?;
        respond(
            conn,
            200,
            &json!({"token": token, "access_token": token, "expires_in": 300}),
        )
    }

    fn sign(&self, subject: &str, access: &[serde_json::Value]) -> Result<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let header = json!({"alg": "RS256", "typ": "JWT", "x5c": [self.cert_der_b64]});
        let claims = json!({
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": format!("{now}-{}", self.granted.load(Ordering::Acquire)),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let input = tempfile::NamedTempFile::new()?;
        std::fs::write(input.path(), &signing_input)?;
        let signature = openssl(&[
            "dgst",
            "-sha256",
            "-sign",
            &self.key.display().to_string(),
            &input.path().display().to_string(),
        ])?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

fn respond(mut conn: TcpStream, status: u16, body: &serde_json::Value) -> Result<()> {
    let body = body.to_string();
    let reason = if status == 200 { "OK" } else { "Error" };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status == 401 {
        head.push_str("WWW-Authenticate: Basic realm=\"berth-test-token\"\r\n");
    }
    conn.write_all(format!("{head}\r\n{body}").as_bytes())?;
    Ok(())
}

/// The `auth:` section of a registry config that trusts `server`'s tokens.
pub fn registry_auth_config(server: &TokenServer) -> String {
    format!(
        "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        server.realm(),
        server.cert_path().display()
    )
}
