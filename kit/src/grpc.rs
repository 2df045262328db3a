//! gRPC over unix sockets: serving a service with health checks, and connecting to one.

use crate::telemetry::{HeaderExtractor, MetadataInjector};
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Server};
use tracing::Instrument as _;

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
    let routes = routes.add_service(health).add_service(
        berth_proto::telemetry::telemetry_server::TelemetryServer::new(
            crate::metrics::TelemetryService,
        ),
    );
    tracing::info!(socket = %shown, "serving gRPC");
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let serve = Server::builder()
        .layer(ServerTraceLayer)
        .add_routes(routes)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
            shutdown.await;
            let _ = stopping_tx.send(());
        });
    // Long-lived streams (event feeds, waits, follows) would hold a graceful shutdown
    // forever: after the grace period they are cut, and their clients reconnect.
    let grace = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(DRAIN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = serve => r.map_err(|source| ServeError::Serve {
            path: shown,
            source,
        }),
        () = grace => {
            tracing::warn!("calls still open {DRAIN_GRACE:?} after shutdown began; exiting");
            Ok(())
        }
    }
}

/// How long in-flight calls may run on after shutdown begins.
pub const DRAIN_GRACE: Duration = Duration::from_secs(3);

/// Binds a unix socket in place of a stale one, with mode 0600 from the moment it can
/// be reached: it is bound under a temporary name, given its mode, then renamed (a
/// client never sees it with the umask's mode).
pub fn bind_unix(socket: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut name = socket.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let temp = socket.with_file_name(name);
    match std::fs::remove_file(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = crate::unix::bind(&temp)?;
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&temp, socket)?;
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener)
}

/// A lazily connecting channel to the service listening on `socket`. It reconnects after
/// the peer restarts; a call while nobody listens fails fast with `Unavailable`.
pub fn channel(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    // The URI is only a placeholder: the connector below dials the socket (at any path
    // length, which tonic's own `unix:` URIs cannot).
    Endpoint::from_static("http://berth.sock")
        .connect_timeout(Duration::from_secs(2))
        .connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
            let socket = socket.clone();
            async move {
                crate::unix::connect(&socket)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
}

/// The interceptor of [`TracedChannel`].
pub type InjectFn = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;

/// A channel whose calls carry the caller's trace context (W3C `traceparent` metadata).
pub type TracedChannel = InterceptedService<Channel, InjectFn>;

/// [`channel`] with the current span's trace context injected into every call.
pub fn traced_channel(socket: &Path) -> TracedChannel {
    InterceptedService::new(channel(socket), inject_trace_context as InjectFn)
}

fn inject_trace_context(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    let cx = crate::telemetry::current_context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MetadataInjector(req.metadata_mut()))
    });
    Ok(req)
}

/// Counts every gRPC call in the metrics and gives it a server span (`rpc.*` attributes; an error status marks it)
/// continuing the caller's trace. Calls that arrive without a trace context (health
/// checks, shims' log streams, background watchers) are left unsampled, so they never
/// start traces of their own. Without an exporter, only the metrics are kept.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerTraceLayer;

impl<S> tower::Layer<S> for ServerTraceLayer {
    type Service = ServerTrace<S>;
    fn layer(&self, inner: S) -> ServerTrace<S> {
        ServerTrace(inner)
    }
}

/// The service of [`ServerTraceLayer`].
#[derive(Debug, Clone)]
pub struct ServerTrace<S>(S);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for ServerTrace<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    RB: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        let started = std::time::Instant::now();
        let span = if crate::telemetry::is_exporting() {
            server_span(&req)
        } else {
            tracing::Span::none()
        };
        let fut = {
            let _entered = span.enter();
            self.0.call(req)
        };
        Box::pin(async move {
            let result = fut.instrument(span.clone()).await;
            // Unary failures come back "trailers-only": the status is in the headers.
            // A transport error never reached a handler: count it as UNAVAILABLE (14).
            let (code, message) = match &result {
                Ok(resp) => (
                    resp.headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i64>().ok())
                        .unwrap_or(0),
                    resp.headers()
                        .get("grpc-message")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string),
                ),
                Err(_) => (14, None),
            };
            crate::metrics::observe_rpc(&path, code, started.elapsed());
            if !span.is_none() {
                span.record("rpc.grpc.status_code", code);
                if code != 0 {
                    span.record("otel.status_code", "ERROR");
                    if let Some(m) = message {
                        span.record("otel.status_description", m.as_str());
                    }
                }
            }
            result
        })
    }
}

/// The server span of one call: the child of the caller's trace context, or unsampled
/// when the call carries none.
fn server_span<B>(req: &http::Request<B>) -> tracing::Span {
    let headers = HeaderExtractor(req.headers());
    let (service, method) = rpc_names(req.uri().path());
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = format!("{service}/{method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    if crate::telemetry::has_remote_parent(&headers) {
        crate::telemetry::continue_trace(&span, &headers);
    } else {
        crate::telemetry::suppress_trace(&span);
    }
    span
}

/// `("berth.containers.v1.Containers", "Create")` from `/berth.containers.v1.Containers/Create`.
pub fn rpc_names(path: &str) -> (&str, &str) {
    let p = path.trim_start_matches('/');
    p.split_once('/').unwrap_or((p, ""))
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

    #[test]
    fn rpc_names_split_service_and_method() {
        assert_eq!(
            rpc_names("/berth.containers.v1.Containers/Create"),
            ("berth.containers.v1.Containers", "Create")
        );
        assert_eq!(rpc_names("/odd"), ("odd", ""));
    }

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

    #[tokio::test]
    async fn a_socket_appears_with_its_mode_and_replaces_a_stale_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("x.sock");
        std::fs::write(&sock, b"stale").unwrap();
        let listener = bind_unix(&sock).unwrap();
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.path().join("x.sock.tmp").exists());
        let _client = tokio::net::UnixStream::connect(&sock).await.unwrap();
        listener.accept().await.unwrap();
    }
}
