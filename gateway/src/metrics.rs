//! The gateway's own metrics (API requests by route) and the metrics address, where the
//! metrics of every service are gathered into one scrape (like dockerd's `metrics-addr`).

use crate::AppState;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_kit::metrics::{self, CONTENT_TYPE};
use berth_proto::telemetry::MetricsRequest;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;
use std::sync::OnceLock;
use std::time::Duration;

/// How long one service may take to hand over its metrics before it counts as down.
const SCRAPE_DEADLINE: Duration = Duration::from_secs(2);

/// Labels of an API request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub code: String,
}

/// Labels of an API request's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

struct ApiMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
}

fn api_metrics() -> &'static ApiMetrics {
    static M: OnceLock<ApiMetrics> = OnceLock::new();
    M.get_or_init(|| {
        let m = ApiMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(metrics::latency_histogram),
        };
        metrics::register(
            "http_requests",
            "Docker API requests, by method, route and status code",
            m.requests.clone(),
        );
        metrics::register_with_unit(
            "http_request_duration",
            "Time to answer a Docker API request (to the response head for streams)",
            Unit::Seconds,
            m.duration.clone(),
        );
        m
    })
}

/// Counts one API request. `route` is the matched route (`/containers/{id}/start`).
pub fn observe_request(method: &str, route: &str, status: u16, took: Duration) {
    let m = api_metrics();
    m.requests
        .get_or_create(&RequestLabels {
            method: method.to_string(),
            route: route.to_string(),
            code: status.to_string(),
        })
        .inc();
    m.duration
        .get_or_create(&RouteLabels {
            method: method.to_string(),
            route: route.to_string(),
        })
        .observe(took.as_secs_f64());
}

/// Every service's metrics and the gateway's, merged; plus `berth_service_up`, 1 for each
/// service that answered within the deadline and 0 for one that did not.
pub async fn gather(st: &AppState) -> String {
    let _ = api_metrics();
    let mut texts = vec![metrics::encode()];
    let mut up = String::from(
        "# HELP berth_service_up Whether the service answered the metrics scrape.\n# TYPE berth_service_up gauge\n",
    );
    for (name, client) in st.services.telemetry.iter() {
        let mut c = client.clone();
        let r = tokio::time::timeout(SCRAPE_DEADLINE, c.metrics(MetricsRequest {})).await;
        let ok = match r {
            Ok(Ok(resp)) => {
                texts.push(resp.into_inner().text);
                1
            }
            _ => 0,
        };
        up.push_str(&format!("berth_service_up{{service=\"{name}\"}} {ok}\n"));
    }
    texts.push(up);
    if let Some(status) = berth_kit::status::read(&st.info.roots.run_root) {
        let mut restarts = String::from(
            "# HELP berth_service_restarts Times berthd restarted the service.\n# TYPE berth_service_restarts counter\n",
        );
        for s in status.services {
            restarts.push_str(&format!(
                "berth_service_restarts_total{{service=\"{}\"}} {}\n",
                s.name, s.restarts
            ));
        }
        texts.push(restarts);
    }
    metrics::merge(&texts)
}

/// `GET /metrics` on the metrics address.
pub async fn metrics_handler(axum::extract::State(st): axum::extract::State<AppState>) -> Response {
    let mut resp = (StatusCode::OK, gather(&st).await).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}

/// `GET /status` on the metrics address: berthd's view of each service plus a live health
/// check, as `berthd status --json` prints it. 503 when no berthd status is found.
pub async fn status_handler(axum::extract::State(st): axum::extract::State<AppState>) -> Response {
    let run_root = &st.info.roots.run_root;
    match berth_kit::status::read(run_root) {
        Some(status) => {
            let live = berth_kit::status::live(run_root, status, SCRAPE_DEADLINE).await;
            axum::Json(live).into_response()
        }
        None => crate::error::ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "berth: no launcher status (is Berth running under berthd?)",
        )
        .into_response(),
    }
}

/// The metrics address's routes.
pub fn routes(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(metrics_handler))
        .route("/status", axum::routing::get(status_handler))
        .with_state(state)
}

/// `metrics-addr` from daemon.json, if the file sets it.
pub fn metrics_addr_from(config_file: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    Ok(crate::util::daemon_json(config_file)?
        .get("metrics-addr")
        .and_then(|v| v.as_str())
        .map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route() {
        observe_request(
            "POST",
            "/containers/{id}/start",
            204,
            Duration::from_millis(5),
        );
        let text = metrics::encode();
        assert!(
            text.contains("berth_http_requests_total{")
                && text.contains("route=\"/containers/{id}/start\""),
            "{text}"
        );
        assert!(
            text.contains("berth_http_request_duration_seconds_bucket"),
            "{text}"
        );
    }

    #[test]
    fn metrics_addr_is_read_from_daemon_json() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("daemon.json");
        std::fs::write(&f, r#"{"metrics-addr": "127.0.0.1:9999"}"#).unwrap();
        assert_eq!(
            metrics_addr_from(Some(&f)).unwrap().as_deref(),
            Some("127.0.0.1:9999")
        );
        std::fs::write(&f, "{}").unwrap();
        assert_eq!(metrics_addr_from(Some(&f)).unwrap(), None);
        assert_eq!(
            metrics_addr_from(Some(&dir.path().join("missing"))).unwrap(),
            None
        );
    }
}
