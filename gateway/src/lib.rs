//! berth-gateway: the Docker Engine REST API. It parses requests, coordinates the
//! services over gRPC (create = snapshot + volumes + network endpoint + log + container,
//! undone in reverse on failure) and speaks Docker's wire formats back. It keeps no
//! container state of its own.

#![recursion_limit = "256"]

pub mod archive;
pub mod containers;
pub mod detach;
pub mod df;
pub mod error;
pub mod events;
pub mod exec;
pub mod image_archive;
pub mod images;
pub mod metrics;
pub mod mounts;
pub mod networks;
pub mod orphans;
pub mod reaper;
pub mod services;
pub mod stats;
pub mod streams;
pub mod system;
pub mod top;
pub mod upload;
pub mod util;
pub mod volumes;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use berth_kit::Roots;
use error::ApiError;
use services::Services;
use std::sync::Arc;

/// The newest API version Berth speaks (Docker CLI 28.2).
pub const API_VERSION: &str = "1.50";
/// The oldest version accepted, as moby 28's default minimum.
pub const MIN_API_VERSION: &str = "1.24";
/// Berth's own version.
pub const BERTH_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Shared by all handlers.
#[derive(Clone)]
pub struct AppState {
    pub services: Services,
    pub info: Arc<DaemonInfo>,
    /// Creates hold it shared; the orphan sweep holds it exclusively, so it never takes
    /// a create in progress for the leftovers of one cut short.
    pub create_lock: Arc<tokio::sync::RwLock<()>>,
    /// `docker events`' store and live feed.
    pub events: events::Events,
    /// Container removals under way (ids), so `wait?condition=removed` answers only when
    /// every service has let go of the container, not just containerd-svc.
    pub removing: Arc<crate::containers::Removals>,
}

/// Facts about this daemon instance that `/info` and `/version` report.
#[derive(Debug, Clone)]
pub struct DaemonInfo {
    pub roots: Roots,
    pub started: std::time::Instant,
    /// The configured default logging driver (daemon.json `log-driver`).
    pub log_driver: String,
    /// Its options (daemon.json `log-opts`).
    pub log_opts: std::collections::HashMap<String, String>,
    /// daemon.json `labels` (`docker info`); reloaded on SIGHUP.
    pub labels: Arc<std::sync::RwLock<Vec<String>>>,
    /// daemon.json `registry-mirrors` as written (`docker info`; imaged uses them).
    pub registry_mirrors: Vec<String>,
}

impl AppState {
    pub fn new(roots: Roots, events: events::Events) -> Self {
        let services = Services::connect(&roots);
        Self {
            services,
            create_lock: Arc::default(),
            events,
            removing: Arc::default(),
            info: Arc::new(DaemonInfo {
                roots,
                started: std::time::Instant::now(),
                log_driver: "json-file".into(),
                log_opts: Default::default(),
                labels: Arc::default(),
                registry_mirrors: Vec::new(),
            }),
        }
    }
}

/// The Docker API routes (unversioned paths; see [`app`] for the version prefix).
impl AppState {
    /// Takes daemon.json's `labels` (at start and on SIGHUP; absent keeps them).
    pub fn set_labels(&self, doc: &serde_json::Value) {
        let Some(list) = doc.get("labels").and_then(|v| v.as_array()) else {
            return;
        };
        let labels = list
            .iter()
            .filter_map(|l| l.as_str().map(str::to_string))
            .collect();
        *self
            .info
            .labels
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = labels;
    }

    /// Takes daemon.json's `registry-mirrors` for `docker info`.
    pub fn with_registry_mirrors(mut self, doc: &serde_json::Value) -> Self {
        Arc::make_mut(&mut self.info).registry_mirrors = doc
            .get("registry-mirrors")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        self
    }

    /// Sets the default logging driver and its options (from daemon.json).
    pub fn with_log_defaults(
        mut self,
        driver: String,
        opts: std::collections::HashMap<String, String>,
    ) -> Self {
        let info = Arc::make_mut(&mut self.info);
        info.log_driver = driver;
        info.log_opts = opts;
        self
    }
}

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/_ping", get(system::ping))
        .route("/events", get(events::stream))
        .route("/version", get(system::version))
        .route("/info", get(system::info))
        .route("/system/df", get(df::system_df))
        .route("/plugins", get(system::plugins))
        .route("/build/prune", post(system::build_prune))
        .route("/auth", post(images::login))
        .route("/commit", post(image_archive::commit))
        .route("/images/create", post(images::create))
        .route("/distribution/{*rest}", get(images::distribution))
        .route("/images/json", get(images::list))
        .route(
            "/images/{*rest}",
            get(images::get_by_path)
                .delete(images::delete_by_path)
                .post(images::post_by_path),
        )
        .route("/containers/create", post(containers::create))
        .route("/containers/json", get(containers::list))
        .route("/containers/prune", post(containers::prune))
        .route("/containers/{id}/json", get(containers::inspect))
        .route("/containers/{id}/start", post(containers::start))
        .route("/containers/{id}/stop", post(containers::stop))
        .route("/containers/{id}/restart", post(containers::restart))
        .route("/containers/{id}/kill", post(containers::kill))
        .route("/containers/{id}/wait", post(containers::wait))
        .route("/containers/{id}/stats", get(stats::stats))
        .route("/containers/{id}/pause", post(containers::pause))
        .route("/containers/{id}/rename", post(containers::rename))
        .route("/containers/{id}/update", post(containers::update))
        .route("/containers/{id}/top", get(top::top))
        .route("/containers/{id}/changes", get(top::changes))
        .route("/containers/{id}/export", get(top::export))
        .route("/containers/{id}/unpause", post(containers::unpause))
        .route("/containers/{id}/attach", post(streams::attach))
        .route("/containers/{id}/resize", post(streams::resize))
        .route(
            "/containers/{id}/archive",
            get(archive::get).head(archive::head).put(archive::put),
        )
        .route("/containers/{id}/logs", get(streams::logs))
        .route("/containers/{id}", delete(containers::remove))
        .route("/containers/{id}/exec", post(exec::create))
        .route("/exec/{id}/start", post(exec::start))
        .route("/exec/{id}/json", get(exec::inspect))
        .route("/exec/{id}/resize", post(exec::resize))
        .route("/networks", get(networks::list))
        .route("/networks/create", post(networks::create))
        .route("/networks/prune", post(networks::prune))
        .route(
            "/networks/{id}",
            get(networks::inspect).delete(networks::remove),
        )
        .route("/networks/{id}/connect", post(networks::connect))
        .route("/networks/{id}/disconnect", post(networks::disconnect))
        .route("/volumes", get(volumes::list))
        .route("/volumes/create", post(volumes::create))
        .route("/volumes/prune", post(volumes::prune))
        .route(
            "/volumes/{name}",
            get(volumes::inspect).delete(volumes::remove),
        )
        .route_layer(axum::middleware::from_fn(name_span_after_route))
        .fallback(fallback)
        .with_state(state)
}

/// Serves the Docker API on `listener` until `shutdown` resolves: version-prefix handling
/// and Docker's headers wrap [`routes`] (outside routing, so the prefix can be stripped).
pub async fn serve(
    listener: tokio::net::UnixListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use tower::Layer;
    let svc = axum::middleware::from_fn(trace_middleware)
        .layer(axum::middleware::from_fn(version_middleware).layer(routes(state)));
    axum::serve(
        listener,
        axum::ServiceExt::<Request>::into_make_service(svc),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// The route a request matched, passed out to [`trace_middleware`] for the metrics.
#[derive(Debug, Clone)]
struct MatchedRoute(String);

/// One server span per API request (and its count in the metrics), the root of its trace (or the child of an incoming
/// W3C `traceparent`, which SDK clients and curl may send). Every gRPC call made while
/// handling the request carries its context to the service.
pub async fn trace_middleware(req: Request, next: Next) -> Response {
    use tracing::Instrument as _;
    let method = req.method().clone();
    let span = tracing::info_span!(
        "http.server",
        otel.name = %method,
        otel.kind = "server",
        http.request.method = %method,
        url.path = req.uri().path(),
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        user_agent.original = req
            .headers()
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    );
    berth_kit::telemetry::continue_trace(
        &span,
        &berth_kit::telemetry::HeaderExtractor(req.headers()),
    );
    let started = std::time::Instant::now();
    let resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status();
    let route = resp
        .extensions()
        .get::<MatchedRoute>()
        .map(|r| r.0.as_str())
        .unwrap_or("unmatched");
    metrics::observe_request(method.as_str(), route, status.as_u16(), started.elapsed());
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    resp
}

/// Names the request's span after the matched route (`POST /containers/{id}/start`): the
/// version prefix is already stripped, so one route is one name.
async fn name_span_after_route(
    matched: axum::extract::MatchedPath,
    req: Request,
    next: Next,
) -> Response {
    let span = tracing::Span::current();
    span.record("http.route", matched.as_str());
    span.record(
        "otel.name",
        format!("{} {}", req.method(), matched.as_str()).as_str(),
    );
    let route = MatchedRoute(matched.as_str().to_string());
    let mut resp = next.run(req).await;
    resp.extensions_mut().insert(route);
    resp
}

/// Strips `/v1.NN` (as moby registers every route with and without it), refuses versions
/// outside what Berth speaks, and sets Docker's headers on every response.
pub async fn version_middleware(mut req: Request, next: Next) -> Response {
    let asked = req
        .uri()
        .path()
        .strip_prefix("/v")
        .and_then(|rest| rest.split('/').next())
        .and_then(parse_version)
        .or_else(|| parse_version(API_VERSION))
        .unwrap_or((1, 50));
    req.extensions_mut().insert(RequestedApi(asked));
    let mut resp = match strip_version(req.uri()) {
        Err(e) => e.into_response(),
        Ok(None) => next.run(req).await,
        Ok(Some(uri)) => {
            *req.uri_mut() = uri;
            next.run(req).await
        }
    };
    let h = resp.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    if let Ok(v) = HeaderValue::from_str(&format!("Berth/{BERTH_VERSION} (linux)")) {
        h.insert("Server", v);
    }
    resp
}

/// The API version a request asked for (its `/v1.NN` prefix; the newest without one):
/// answers whose shape changed between versions follow it, as dockerd's do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequestedApi(pub (u32, u32));

/// `Ok(Some(uri))` when the path had a version prefix that is in range.
fn strip_version(uri: &Uri) -> Result<Option<Uri>, ApiError> {
    let path = uri.path();
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok(None);
    };
    let (ver, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => return Ok(None),
    };
    let Some(parsed) = parse_version(ver) else {
        return Ok(None);
    };
    if parsed < parse_version(MIN_API_VERSION).unwrap_or((1, 24)) {
        return Err(ApiError::bad_request(format!(
            "client version {ver} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        )));
    }
    if parsed > parse_version(API_VERSION).unwrap_or((1, 50)) {
        return Err(ApiError::bad_request(format!(
            "client version {ver} is too new. Maximum supported API version is {API_VERSION}"
        )));
    }
    let pq = match uri.query() {
        Some(q) => format!("{tail}?{q}"),
        None => tail.to_string(),
    };
    pq.parse::<Uri>()
        .map(Some)
        .map_err(|e| ApiError::bad_request(format!("invalid request path: {e}")))
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Unknown routes: Docker API routes Berth does not have yet answer 501 with a clear
/// message; swarm routes answer as moby does when swarm is inactive; the rest 404.
async fn fallback(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "swarm" | "services" | "nodes" | "tasks" | "secrets" | "configs" => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.",
        )
        .into_response(),
        "containers" | "images" | "exec" | "networks" | "volumes" | "build" | "system" | "events"
        | "auth" | "commit" | "session" | "grpc" | "distribution" | "plugins" => {
            ApiError::not_supported(format!("{method} {path}")).into_response()
        }
        _ => ApiError::not_found("page not found").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_prefix_is_stripped_within_range() {
        let u: Uri = "/v1.50/containers/json?all=1".parse().unwrap();
        assert_eq!(
            strip_version(&u).unwrap().unwrap(),
            "/containers/json?all=1"
        );
        let u: Uri = "/v1.24/info".parse().unwrap();
        assert_eq!(strip_version(&u).unwrap().unwrap(), "/info");
        let u: Uri = "/containers/json".parse().unwrap();
        assert!(strip_version(&u).unwrap().is_none());
        let u: Uri = "/volumes/v1.2x/foo".parse().unwrap();
        assert!(strip_version(&u).unwrap().is_none());
    }

    #[test]
    fn versions_out_of_range_are_refused_with_docker_wording() {
        let e = strip_version(&"/v1.12/info".parse().unwrap()).unwrap_err();
        assert!(e.message.contains("client version 1.12 is too old"));
        let e = strip_version(&"/v1.99/info".parse().unwrap()).unwrap_err();
        assert!(
            e.message
                .contains("is too new. Maximum supported API version is 1.50")
        );
    }
}
