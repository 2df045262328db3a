//! gRPC over unix sockets: serving a service with health checks, and connecting to one.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::service::Routes;
use tonic::transport::{Channel, Endpoint, Server};

/// Serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding {path}: {source}")]
    Bind {
        path: String,
        source: std::io::Error,
    },
    #[error("serving {path}: {source}")]
    Serve {
        path: String,
        source: tonic::transport::Error,
    },
}

/// Binds `socket` (mode 0600: only root may drive a service), adds the standard gRPC
/// health service reporting SERVING for the whole server, and serves `routes` until
/// `shutdown` resolves. In-flight calls are drained before returning.
pub async fn serve_unix(
    socket: &Path,
    routes: Routes,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let shown = socket.display().to_string();
    let listener = bind_unix(socket).map_err(|source| ServeError::Bind {
        path: shown.clone(),
        source,
    })?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let routes = routes.add_service(health);
    tracing::info!(socket = %shown, "serving gRPC");
    Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .map_err(|source| ServeError::Serve {
            path: shown,
            source,
        })
}

/// Binds a unix socket after removing a stale one, with mode 0600.
pub fn bind_unix(socket: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// A lazily connecting channel to the service listening on `socket`. It reconnects after
/// the peer restarts; a call while nobody listens fails fast with `Unavailable`.
pub fn channel(socket: &Path) -> Channel {
    let uri = format!("unix://{}", socket.display());
    // The URI is built from a path we control; from_shared only rejects invalid URIs.
    #[allow(clippy::expect_used)]
    Endpoint::from_shared(uri)
        .expect("unix socket URI")
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy()
}

/// Asks the health service on `socket` whether the server is SERVING.
pub async fn is_serving(socket: &Path, timeout: Duration) -> bool {
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel(socket));
    let req = tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    match tokio::time::timeout(timeout, client.check(req)).await {
        Ok(Ok(resp)) => {
            resp.into_inner().status
                == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        }
        _ => false,
    }
}

/// `<run-root>/<service>.sock` for a known service name.
pub fn socket_for(run_root: &Path, service: &str) -> PathBuf {
    run_root.join(format!("{service}.sock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn health_reports_serving_and_unavailable_fails_fast() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("svc.sock");
        assert!(!is_serving(&sock, Duration::from_millis(500)).await);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let path = sock.clone();
        let server = tokio::spawn(async move {
            serve_unix(&path, Routes::default(), async {
                let _ = rx.await;
            })
            .await
        });
        let mut ok = false;
        for _ in 0..50 {
            if is_serving(&sock, Duration::from_millis(200)).await {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ok, "health check never answered SERVING");
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
