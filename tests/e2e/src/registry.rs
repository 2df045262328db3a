//! A private registry for one test: Debian's `docker-registry` (the real distribution
//! registry) on a free loopback port, with its own storage, and no auth unless asked
//! for a password (htpasswd).
//!
//! Debian's packaged config enables auth and listens on all interfaces, so each test
//! writes its own.

use crate::{cmd, http};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The registry binary from Debian's docker-registry package.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A running registry, killed (by its PID) when dropped.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

/// How a registry wants its clients to authenticate.
enum Auth<'a> {
    /// htpasswd: HTTP Basic with this user and password.
    Password(&'a str, &'a str),
    /// Bearer tokens: the registry config's `auth:` section.
    Tokens(String),
}

/// A loopback TCP port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).context("binding a free port")?;
    Ok(l.local_addr()?.port())
}

impl Registry {
    /// Starts a registry and waits until `GET /v2/` answers 200.
    pub fn start() -> Result<Self> {
        Self::start_inner(None)
    }

    /// Starts a registry that requires `user`/`password` (htpasswd, HTTP Basic) and waits
    /// until `GET /v2/` answers 401.
    pub fn start_with_password(user: &str, password: &str) -> Result<Self> {
        Self::start_inner(Some(Auth::Password(user, password)))
    }

    /// Starts a registry that takes only Bearer tokens from `server` (the flow of Docker
    /// Hub) and waits until `GET /v2/` answers 401.
    pub fn start_with_tokens(server: &crate::token_server::TokenServer) -> Result<Self> {
        Self::start_inner(Some(Auth::Tokens(
            crate::token_server::registry_auth_config(server),
        )))
    }

    fn start_inner(login: Option<Auth<'_>>) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("berth-reg")
            .tempdir_in("/tmp")?;
        // A port can be taken between free_port() and the registry's bind: retry.
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let storage = dir.path().join("storage");
            std::fs::create_dir_all(&storage)?;
            let config = dir.path().join("config.yml");
            let mut yml = format!(
                "version: 0.1\n\
                 log:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                storage.display()
            );
            match &login {
                Some(Auth::Password(user, password)) => {
                    let htpasswd = dir.path().join("htpasswd");
                    let hash = bcrypt::hash(password, 4).context("hashing the password")?;
                    std::fs::write(&htpasswd, format!("{user}:{hash}\n"))?;
                    yml.push_str(&format!(
                        "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                        htpasswd.display()
                    ));
                }
                Some(Auth::Tokens(section)) => yml.push_str(section),
                None => {}
            }
            std::fs::write(&config, yml)?;
            let ready = if login.is_some() { 401 } else { 200 };
            let log = std::fs::File::create(dir.path().join("registry.log"))?;
            let child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {REGISTRY_BIN} (install docker-registry)"))?;
            let mut child = child;
            let exited = |c: &mut Child| !matches!(c.try_wait(), Ok(None));
            let up = cmd::wait_until(Duration::from_secs(20), || {
                exited(&mut child)
                    || matches!(http::tcp_request(port, "GET", "/v2/", None), Ok(r) if r.status == ready)
            });
            if up && !exited(&mut child) {
                return Ok(Self { child, port, dir });
            }
            let _ = child.kill();
            let _ = child.wait();
            last_err = std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default();
        }
        bail!("docker-registry never answered GET /v2/; its log:\n{last_err}")
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- docker-registry log ---\n{}", self.log());
        }
    }
}
