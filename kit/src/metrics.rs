//! Prometheus (OpenMetrics text) metrics of a service.
//!
//! Each process has one registry; every metric in it carries the constant label
//! `service="<name>"` and the prefix `berth_`. berth-kit counts every gRPC call it serves;
//! services register their own metrics with [`register`]. The registry is served over
//! gRPC (`berth.telemetry.v1.Telemetry/Metrics`, added by [`crate::grpc::serve_unix`]) and
//! the gateway merges all of them with [`merge`] on its metrics address.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry, Unit};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of a served gRPC call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub method: String,
    pub code: String,
}

/// Labels of a served gRPC call's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcMethod {
    pub method: String,
}

struct Common {
    rpc_requests: Family<RpcLabels, Counter>,
    rpc_duration: Family<RpcMethod, Histogram>,
    sqlite_probe: Histogram,
}

static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
static COMMON: OnceLock<Common> = OnceLock::new();

/// Latency buckets from 0.5 ms to about 65 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// Creates the process's registry for `service` ("imaged", "gateway", ...). Only the
/// first call counts; [`register`] before it uses the name "unknown".
pub fn init(service: &str) {
    let _ = REGISTRY.get_or_init(|| {
        Mutex::new(Registry::with_prefix_and_labels(
            "berth",
            [(
                Cow::Borrowed("service"),
                Cow::Owned(service.trim_start_matches("berth-").to_string()),
            )]
            .into_iter(),
        ))
    });
}

fn registry() -> &'static Mutex<Registry> {
    init("unknown");
    REGISTRY.get_or_init(|| Mutex::new(Registry::default()))
}

fn common() -> &'static Common {
    COMMON.get_or_init(|| {
        let c = Common {
            rpc_requests: Family::default(),
            rpc_duration: Family::new_with_constructor(latency_histogram),
            sqlite_probe: latency_histogram(),
        };
        register_with_unit(
            "sqlite_probe_duration",
            "Time of a small read of the service's SQLite database, measured at each scrape",
            Unit::Seconds,
            c.sqlite_probe.clone(),
        );
        register(
            "grpc_server_requests",
            "gRPC calls served, by method and status code",
            c.rpc_requests.clone(),
        );
        register_with_unit(
            "grpc_server_duration",
            "Time to answer a gRPC call (to the end of headers for streams)",
            Unit::Seconds,
            c.rpc_duration.clone(),
        );
        c
    })
}

/// Adds a metric (`name` without the `berth_` prefix or a type suffix).
pub fn register(name: &str, help: &str, metric: impl Metric) {
    registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .register(name, help, metric);
}

/// As [`register`], with a unit appended to the name (`_seconds`, `_bytes`).
pub fn register_with_unit(name: &str, help: &str, unit: Unit, metric: impl Metric) {
    registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .register_with_unit(name, help, unit, metric);
}

/// Label pairs, for metrics whose labels a service picks freely.
pub type Labels = Vec<(String, String)>;

/// A counter family, registered under `name` (exposed as `berth_<name>_total`).
pub fn counter_family(name: &str, help: &str) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    register(name, help, f.clone());
    f
}

/// A gauge family, registered under `name` (exposed as `berth_<name>`).
pub fn gauge_family(
    name: &str,
    help: &str,
) -> Family<Labels, prometheus_client::metrics::gauge::Gauge> {
    let f = Family::<Labels, prometheus_client::metrics::gauge::Gauge>::default();
    register(name, help, f.clone());
    f
}

/// One label pair.
pub fn label(key: &str, value: &str) -> Labels {
    vec![(key.to_string(), value.to_string())]
}

/// Counts one served gRPC call (`path` is `/package.Service/Method`).
pub fn observe_rpc(path: &str, code: i64, took: Duration) {
    let c = common();
    let method = path.trim_start_matches('/').to_string();
    c.rpc_requests
        .get_or_create(&RpcLabels {
            method: method.clone(),
            code: code.to_string(),
        })
        .inc();
    c.rpc_duration
        .get_or_create(&RpcMethod { method })
        .observe(took.as_secs_f64());
}

/// The registry in the OpenMetrics text format.
pub fn encode() -> String {
    let _ = common();
    let mut out = String::new();
    let reg = registry().lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &reg) {
        tracing::warn!(error = %e, "encoding metrics");
    }
    out
}

/// Merges several OpenMetrics texts into one: a family that appears in several (every
/// service has `berth_grpc_server_requests`) is described once with all its samples,
/// which differ by their `service` label. One `# EOF` ends the result.
pub fn merge(texts: &[String]) -> String {
    #[derive(Default)]
    struct FamilyText {
        meta: Vec<String>,
        samples: Vec<String>,
    }
    let mut order: Vec<String> = Vec::new();
    let mut families: BTreeMap<String, FamilyText> = BTreeMap::new();
    for text in texts {
        let mut current = String::new();
        for line in text.lines() {
            if line.is_empty() || line == "# EOF" {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let (_kind, name) = (parts.next(), parts.next().unwrap_or(""));
                if name != current {
                    current = name.to_string();
                }
                let fam = families.entry(current.clone()).or_insert_with(|| {
                    order.push(current.clone());
                    FamilyText::default()
                });
                // The first text's description wins; the others describe the same family.
                if !fam.meta.iter().any(|m| m == line) && fam.samples.is_empty() {
                    fam.meta.push(line.to_string());
                }
                continue;
            }
            let fam = families.entry(current.clone()).or_insert_with(|| {
                order.push(current.clone());
                FamilyText::default()
            });
            fam.samples.push(line.to_string());
        }
    }
    let mut out = String::new();
    for name in order {
        if let Some(f) = families.get(&name) {
            for l in f.meta.iter().chain(f.samples.iter()) {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

/// `berth.telemetry.v1.Telemetry`: serves [`encode`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TelemetryService;

#[tonic::async_trait]
impl berth_proto::telemetry::telemetry_server::Telemetry for TelemetryService {
    async fn metrics(
        &self,
        _: tonic::Request<berth_proto::telemetry::MetricsRequest>,
    ) -> Result<tonic::Response<berth_proto::telemetry::MetricsResponse>, tonic::Status> {
        if let Some(took) = crate::db::probe_latency().await {
            common().sqlite_probe.observe(took.as_secs_f64());
        }
        Ok(tonic::Response::new(
            berth_proto::telemetry::MetricsResponse { text: encode() },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_shared_by_services_are_described_once() {
        let a = "# HELP berth_grpc_server_requests gRPC calls.\n# TYPE berth_grpc_server_requests counter\nberth_grpc_server_requests_total{service=\"imaged\",method=\"x\",code=\"0\"} 2\n# HELP berth_pulls Pulls.\n# TYPE berth_pulls counter\nberth_pulls_total{service=\"imaged\"} 1\n# EOF\n".to_string();
        let b = "# HELP berth_grpc_server_requests gRPC calls.\n# TYPE berth_grpc_server_requests counter\nberth_grpc_server_requests_total{service=\"netd\",method=\"y\",code=\"0\"} 3\n# EOF\n".to_string();
        let m = merge(&[a, b]);
        assert_eq!(
            m.matches("# TYPE berth_grpc_server_requests counter")
                .count(),
            1
        );
        assert_eq!(m.matches("# EOF").count(), 1);
        assert!(m.ends_with("# EOF\n"));
        let fam_start = m.find("# TYPE berth_grpc_server_requests").unwrap();
        let pulls = m.find("# HELP berth_pulls").unwrap();
        let netd = m.find("service=\"netd\"").unwrap();
        assert!(
            fam_start < netd && netd < pulls,
            "samples stay with their family:\n{m}"
        );
    }

    #[test]
    fn served_calls_are_counted_with_the_service_label() {
        init("berth-testsvc");
        observe_rpc("/berth.x.v1.X/Do", 5, Duration::from_millis(3));
        let text = encode();
        assert!(
            text.contains(
                "berth_grpc_server_requests_total{service=\"testsvc\",method=\"berth.x.v1.X/Do\",code=\"5\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("berth_grpc_server_duration_seconds_bucket"),
            "{text}"
        );
    }
}
