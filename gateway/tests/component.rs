//! The gateway alone, with no services behind it: Docker's ping/version surface works, and
//! every call that needs a service answers 503 naming it, never hanging.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Gateway {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Gateway {
    let dir = tempfile::Builder::new()
        .prefix("bg")
        .tempdir_in("/tmp")
        .unwrap();
    let data = dir.path().join("d");
    let run = dir.path().join("r");
    let child = Command::new(env!("CARGO_BIN_EXE_berth-gateway"))
        .arg("--data-root")
        .arg(&data)
        .arg("--exec-root")
        .arg(&run)
        .spawn()
        .unwrap();
    let socket = run.join("docker.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "gateway never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    Gateway {
        child,
        socket,
        _dir: dir,
    }
}

/// A raw HTTP/1.1 exchange; returns (status, headers lowercased, body).
fn request(socket: &Path, method: &str, path: &str, body: &str) -> (u16, String, String) {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: api.moby.localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), rest.to_string())
}

fn message(body: &str) -> String {
    // Bodies may be chunked; the JSON object is the part between the braces.
    let start = body.find('{').unwrap();
    let end = body.rfind('}').unwrap();
    let v: serde_json::Value = serde_json::from_str(&body[start..=end]).unwrap();
    v["message"].as_str().unwrap().to_string()
}

#[test]
fn ping_version_and_errors_without_services() {
    let gw = start();
    let (code, head, body) = request(&gw.socket, "GET", "/_ping", "");
    assert_eq!(code, 200);
    assert!(body.contains("OK"));
    assert!(head.contains("api-version: 1.50"));
    assert!(head.contains("ostype: linux"));
    assert!(head.contains("docker-experimental: false"));
    assert!(head.contains("cache-control: no-cache"));
    let (code, _, _) = request(&gw.socket, "HEAD", "/_ping", "");
    assert_eq!(code, 200);

    for path in ["/version", "/v1.24/version", "/v1.50/version"] {
        let (code, _, body) = request(&gw.socket, "GET", path, "");
        assert_eq!(code, 200, "{path}");
        assert!(body.contains("\"ApiVersion\":\"1.50\""), "{path}: {body}");
    }
    let (code, head, body) = request(&gw.socket, "GET", "/v1.12/version", "");
    assert_eq!(code, 400);
    assert!(head.contains("content-type: application/json\r\n"));
    assert!(message(&body).contains("too old"));

    // A service that is down: 503 naming it, quickly.
    let t = Instant::now();
    let (code, _, body) = request(&gw.socket, "GET", "/v1.50/containers/json", "");
    assert_eq!(code, 503, "{body}");
    assert!(
        message(&body).starts_with("berth: the containerd service is unavailable"),
        "{body}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    let (code, _, body) = request(&gw.socket, "GET", "/images/json", "");
    assert_eq!(code, 503);
    assert!(message(&body).contains("the imaged service is unavailable"));

    // /info still answers, listing the missing services under Warnings.
    let (code, _, body) = request(&gw.socket, "GET", "/info", "");
    assert_eq!(code, 200);
    assert!(
        body.contains("\"WARNING: berth: the containerd service is unavailable"),
        "{body}"
    );
    assert!(body.contains("\"OSType\":\"linux\""));

    // Bad input is refused before any service is asked.
    let (code, _, body) = request(&gw.socket, "POST", "/containers/create", "{bad");
    assert_eq!(code, 400);
    assert!(message(&body).starts_with("invalid JSON"));
    let (code, _, body) = request(
        &gw.socket,
        "POST",
        "/containers/create?name=a%20b",
        r#"{"Image":"busybox"}"#,
    );
    assert_eq!(code, 400);
    assert!(message(&body).contains("Invalid container name (a b)"));

    // Routes Berth lacks: 501 with "not supported"; unknown paths: 404.
    let (code, _, body) = request(&gw.socket, "POST", "/v1.50/build", "");
    assert_eq!(code, 501);
    assert!(message(&body).contains("not supported yet"));
    let (code, _, body) = request(&gw.socket, "GET", "/nonsense", "");
    assert_eq!(code, 404);
    assert_eq!(message(&body), "page not found");
}

#[test]
fn the_docker_cli_talks_to_it() {
    let gw = start();
    let out = Command::new("docker")
        .env("DOCKER_HOST", format!("unix://{}", gw.socket.display()))
        .env("DOCKER_CONFIG", gw._dir.path())
        .args([
            "version",
            "--format",
            "{{.Server.APIVersion}} {{.Server.Os}}",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1.50 linux");
    let out = Command::new("docker")
        .env("DOCKER_HOST", format!("unix://{}", gw.socket.display()))
        .env("DOCKER_CONFIG", gw._dir.path())
        .args(["ps"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("berth: the containerd service is unavailable"),
        "{err}"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&gw.socket).unwrap().permissions(),
    ) & 0o777;
    assert_eq!(mode, 0o660);
}
