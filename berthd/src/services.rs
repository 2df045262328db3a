//! The six services berthd runs: their binaries, their arguments, and how to tell they
//! are up.

use crate::config::Settings;
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How berthd knows a service is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The gRPC health service on this socket answers SERVING.
    Grpc(PathBuf),
    /// `GET /_ping` answers 200 on every one of these Docker API sockets.
    Ping(Vec<PathBuf>),
}

/// One service as berthd starts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// The binary's name, e.g. `berth-imaged`.
    pub binary: &'static str,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Its readiness check.
    pub health: Health,
    /// Extra environment (tracing settings from daemon.json).
    pub env: Vec<(String, String)>,
}

/// Start order: the services others call come first, the gateway (the only one users
/// talk to) last, so it never serves a request before its backends exist.
pub const START_ORDER: [(&str, &str); 6] = [
    ("logd", "berth-logd"),
    ("volumed", "berth-volumed"),
    ("netd", "berth-netd"),
    ("imaged", "berth-imaged"),
    ("containerd", "berth-containerd"),
    ("gateway", "berth-gateway"),
];

/// The services to run for `settings`, in start order.
pub fn specs(settings: &Settings) -> Vec<ServiceSpec> {
    let roots = berth_kit::Roots::new(&settings.data_root, &settings.exec_root);
    START_ORDER
        .iter()
        .map(|&(name, binary)| {
            let mut args = common_args(settings);
            let health = match name {
                "gateway" => {
                    for h in &settings.hosts {
                        args.push("-H".into());
                        let mut a = OsString::from("unix://");
                        a.push(h);
                        args.push(a);
                    }
                    Health::Ping(settings.hosts.clone())
                }
                _ => {
                    if name == "netd" {
                        if let Some(bip) = &settings.bip {
                            args.extend(["--bip".into(), bip.into()]);
                        }
                        if let Some(bridge) = &settings.bridge {
                            args.extend(["--bridge".into(), bridge.into()]);
                        }
                    }
                    Health::Grpc(roots.socket(name))
                }
            };
            ServiceSpec {
                binary,
                args,
                health,
                env: settings.service_env.clone(),
            }
        })
        .collect()
}

fn common_args(settings: &Settings) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--data-root".into(),
        settings.data_root.clone().into(),
        "--exec-root".into(),
        settings.exec_root.clone().into(),
    ];
    if settings.debug {
        args.push("--debug".into());
    }
    if let Some(f) = &settings.config_file {
        args.extend(["--config-file".into(), f.clone().into()]);
    }
    args
}

/// Finds `name` beside berthd's own executable (`exe_dir`), then on `path` (`$PATH`).
pub fn find_binary(name: &str, exe_dir: Option<&Path>, path: Option<&OsStr>) -> Option<PathBuf> {
    let beside = exe_dir.map(|d| d.join(name));
    let on_path = path
        .into_iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name));
    beside.into_iter().chain(on_path).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Asks once whether the service is ready, giving up after `timeout`.
pub async fn is_healthy(health: &Health, timeout: Duration) -> bool {
    match health {
        Health::Grpc(socket) => berth_kit::grpc::is_serving(socket, timeout).await,
        Health::Ping(sockets) => {
            for s in sockets {
                if !matches!(tokio::time::timeout(timeout, ping(s)).await, Ok(Ok(true))) {
                    return false;
                }
            }
            true
        }
    }
}

/// `GET /_ping` over the Docker API socket with a raw HTTP/1.1 request: true on 200.
pub async fn ping(socket: &Path) -> std::io::Result<bool> {
    let mut stream = berth_kit::unix::connect(socket).await?;
    stream
        .write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
        .await?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(status_is_ok(&head))
}

fn status_is_ok(head: &[u8]) -> bool {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    matches!(parts.next(), Some(v) if v.starts_with(b"HTTP/1.")) && parts.next() == Some(b"200")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cli, Settings};
    use clap::Parser;

    fn settings(args: &[&str]) -> Settings {
        let mut all = vec!["berthd"];
        all.extend_from_slice(args);
        Settings::resolve(&Cli::try_parse_from(all).unwrap(), None).unwrap()
    }

    fn strs(spec: &ServiceSpec) -> Vec<String> {
        spec.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn services_start_in_dependency_order_with_their_flags() {
        let s = settings(&[
            "--data-root",
            "/d",
            "--exec-root",
            "/r",
            "-D",
            "--bip",
            "172.29.4.1/24",
            "-b",
            "br9",
            "-H",
            "unix:///r/a.sock",
        ]);
        let specs = specs(&s);
        let names: Vec<&str> = specs.iter().map(|s| s.binary).collect();
        assert_eq!(
            names,
            [
                "berth-logd",
                "berth-volumed",
                "berth-netd",
                "berth-imaged",
                "berth-containerd",
                "berth-gateway"
            ]
        );
        let base = ["--data-root", "/d", "--exec-root", "/r", "--debug"];
        assert_eq!(strs(&specs[0]), base);
        assert_eq!(specs[0].health, Health::Grpc("/r/logd.sock".into()));
        let mut netd = base.to_vec();
        netd.extend(["--bip", "172.29.4.1/24", "--bridge", "br9"]);
        assert_eq!(strs(&specs[2]), netd);
        assert_eq!(specs[4].health, Health::Grpc("/r/containerd.sock".into()));
        let mut gw = base.to_vec();
        gw.extend(["-H", "unix:///r/a.sock"]);
        assert_eq!(strs(&specs[5]), gw);
        assert_eq!(specs[5].health, Health::Ping(vec!["/r/a.sock".into()]));
    }

    #[test]
    fn binaries_are_found_beside_the_launcher_first() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let make = |dir: &Path, mode: u32| {
            let p = dir.join("berth-x");
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let in_b = make(b.path(), 0o755);
        let path = std::env::join_paths([b.path()]).unwrap();
        assert_eq!(
            find_binary("berth-x", Some(a.path()), Some(&path)),
            Some(in_b)
        );
        let in_a = make(a.path(), 0o755);
        assert_eq!(
            find_binary("berth-x", Some(a.path()), Some(&path)),
            Some(in_a.clone())
        );
        std::fs::set_permissions(&in_a, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(find_binary("berth-y", Some(a.path()), Some(&path)), None);
        assert_ne!(
            find_binary("berth-x", Some(a.path()), Some(&path)),
            Some(in_a)
        );
    }

    #[test]
    fn only_a_200_status_line_counts() {
        assert!(status_is_ok(b"HTTP/1.1 200 OK\r\nApi-Version: 1.50\r\n"));
        assert!(status_is_ok(b"HTTP/1.0 200 OK\r\n"));
        assert!(!status_is_ok(b"HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(!status_is_ok(b""));
        assert!(!status_is_ok(b"garbage 200"));
    }

    #[tokio::test]
    async fn ping_reads_the_status_of_a_real_socket() {
        let dir = tempfile::Builder::new()
            .prefix("b")
            .tempdir_in("/tmp")
            .unwrap();
        let sock = dir.path().join("d.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"GET /_ping HTTP/1.1\r\n"));
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
                .await
                .unwrap();
        });
        assert!(ping(&sock).await.unwrap());
        server.await.unwrap();
        drop(dir);
        assert!(!is_healthy(&Health::Ping(vec![sock]), Duration::from_millis(200)).await);
    }
}
