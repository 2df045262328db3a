//! Logs and traces of a service.
//!
//! Logs are human-readable lines on stderr (`RUST_LOG` honoured). Traces are exported over
//! OTLP only when an endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); otherwise no OpenTelemetry layer is installed at
//! all, so tracing costs nothing. The protocol follows `OTEL_EXPORTER_OTLP_PROTOCOL`
//! (`grpc` or `http/protobuf`, the specification's default); the SDK itself reads the
//! sampler (`OTEL_TRACES_SAMPLER`/`_ARG`) and `OTEL_RESOURCE_ATTRIBUTES`.

use opentelemetry::global;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Layer as _, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// How spans leave the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (usually port 4317).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (usually port 4318).
    HttpProtobuf,
}

/// Reads the standard variables through `get`: `None` when no endpoint is set or
/// exporting is switched off (`OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER=none`).
pub fn export_protocol(get: impl Fn(&str) -> Option<String>) -> Option<Protocol> {
    let set = |k: &str| get(k).filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return None;
    }
    set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))?;
    let proto = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_default();
    Some(match proto.trim() {
        "grpc" => Protocol::Grpc,
        _ => Protocol::HttpProtobuf,
    })
}

/// A tracer provider exporting in batches as `service` (the `service.name` resource), to
/// `endpoint` or else where the standard variables say.
fn provider(
    service: &str,
    proto: Protocol,
    endpoint: Option<&str>,
) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
    let exporter = match (proto, endpoint) {
        (Protocol::Grpc, None) => SpanExporter::builder().with_tonic().build(),
        (Protocol::Grpc, Some(e)) => SpanExporter::builder()
            .with_tonic()
            .with_endpoint(e)
            .build(),
        (Protocol::HttpProtobuf, e) => {
            let b = SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
            match e {
                Some(e) => b.with_endpoint(e).build(),
                None => b.build(),
            }
        }
    }
    .map_err(|e| e.to_string())?;
    Ok(SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_string())
                .build(),
        )
        .with_batch_exporter(exporter)
        .build())
}

/// The process's telemetry; call [`Telemetry::shutdown`] before exiting to flush spans.
pub struct Telemetry {
    protocol: Option<Protocol>,
    providers: Mutex<Vec<SdkTracerProvider>>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.protocol.is_some()
    }

    /// A tracer that exports as another service (containerd-svc records the shim's steps
    /// as `berth-shim` spans, as the shim links no OTLP stack). `None` when not exporting.
    pub fn tracer_for(&self, service: &str) -> Option<Tracer> {
        let proto = self.protocol?;
        match provider(service, proto, None) {
            Ok(p) => {
                let tracer = p.tracer(service.to_string());
                self.providers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(p);
                Some(tracer)
            }
            Err(e) => {
                tracing::warn!(error = %e, service, "OTLP exporter");
                None
            }
        }
    }

    /// Flushes and stops every exporter. Blocking: call it once, on the way out.
    pub fn shutdown(&self) {
        let providers =
            std::mem::take(&mut *self.providers.lock().unwrap_or_else(|e| e.into_inner()));
        for p in providers {
            if let Err(e) = p.shutdown() {
                tracing::debug!(error = %e, "tracer provider shutdown");
            }
        }
    }
}

/// Installs the global subscriber for `service` (e.g. "berth-imaged"). Must run inside a
/// tokio runtime (the gRPC exporter spawns its connection there).
pub fn init(service: &str, debug: bool) -> Telemetry {
    crate::metrics::init(service);
    global::set_text_map_propagator(TraceContextPropagator::new());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let protocol = export_protocol(|k| std::env::var(k).ok());
    let mut providers = Vec::new();
    let otel = match protocol.map(|p| provider(service, p, None)) {
        Some(Ok(p)) => {
            // Spans start lazily (not on first entry), so the gateway can still name its
            // request span after the matched route.
            let layer = tracing_opentelemetry::layer()
                .with_tracer(p.tracer(service.to_string()))
                .with_context_activation(false)
                .with_tracked_inactivity(false)
                .with_filter(exported_spans());
            global::set_tracer_provider(p.clone());
            providers.push(p);
            Some(layer)
        }
        Some(Err(e)) => {
            eprintln!("{service}: OTLP exporter disabled: {e}");
            None
        }
        None => None,
    };
    let exporting = otel.is_some();
    if exporting {
        mark_exporting();
    }
    let _ = tracing_subscriber::registry()
        .with(reloadable_filter(debug))
        .with(fmt)
        .with(otel)
        .try_init();
    tracing::debug!(service, exporting, "logging initialised");
    Telemetry {
        protocol: protocol.filter(|_| exporting),
        providers: Mutex::new(providers),
    }
}

/// Which spans are exported: Berth's own at INFO or above (the RPC, HTTP and step spans),
/// never the libraries' internals, whatever `RUST_LOG` says.
pub fn exported_spans() -> tracing_subscriber::filter::FilterFn {
    tracing_subscriber::filter::filter_fn(|m| {
        m.target().starts_with("berth") && *m.level() <= tracing::Level::INFO
    })
}

/// Logs only, never exports (berthd: it serves no requests and runs outside tokio).
pub fn init_logging(service: &str, debug: bool) {
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(reloadable_filter(debug))
        .with(fmt)
        .try_init();
    tracing::debug!(service, "logging initialised");
}

type FilterHandle = tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>;

/// Lets `debug` change while running (SIGHUP reload of daemon.json).
static LEVEL: std::sync::OnceLock<FilterHandle> = std::sync::OnceLock::new();

/// `RUST_LOG` when set, else info (or debug) for Berth with the libraries kept quieter.
fn level_filter(debug: bool) -> EnvFilter {
    let default = if debug { "debug" } else { "info" };
    EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{default},h2=info,hyper=info,tower=info,sqlx=warn,opentelemetry=warn,reqwest=info"
        ))
    })
}

fn reloadable_filter(
    debug: bool,
) -> tracing_subscriber::reload::Layer<EnvFilter, tracing_subscriber::Registry> {
    DEBUG.store(debug, Ordering::Relaxed);
    let (layer, handle) = tracing_subscriber::reload::Layer::new(level_filter(debug));
    let _ = LEVEL.set(handle);
    layer
}

static DEBUG: AtomicBool = AtomicBool::new(false);

/// Whether debug logging is on in this process (`docker info`'s Debug).
pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Switches debug logging on or off in this process (a no-op before [`init`]).
pub fn set_debug(debug: bool) {
    DEBUG.store(debug, Ordering::Relaxed);
    if let Some(h) = LEVEL.get()
        && let Err(e) = h.modify(|f| *f = level_filter(debug))
    {
        tracing::warn!("changing the log level: {e}");
    }
}

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports spans (decides whether servers trace calls at all).
pub fn is_exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Records that spans are exported ([`init`] does this; tests with their own subscriber
/// call it themselves).
pub fn mark_exporting() {
    EXPORTING.store(true, Ordering::Relaxed);
}

/// Makes `span` (and so everything under it) unsampled: work that no API request caused
/// (a shim's log stream, a health check) must not start traces of its own.
pub fn suppress_trace(span: &tracing::Span) {
    use opentelemetry::trace::{SpanContext, TraceContextExt as _, TraceFlags, TraceState};
    use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let ids = RandomIdGenerator::default();
    let unsampled = SpanContext::new(
        ids.new_trace_id(),
        ids.new_span_id(),
        TraceFlags::default(),
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(unsampled));
}

/// The OpenTelemetry context of the current tracing span (empty when not exporting).
pub fn current_context() -> opentelemetry::Context {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    tracing::Span::current().context()
}

/// Makes `span` a child of the W3C trace context found through `extractor`, if any.
pub fn continue_trace(span: &tracing::Span, extractor: &dyn opentelemetry::propagation::Extractor) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let cx = global::get_text_map_propagator(|p| p.extract(extractor));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Whether `extractor` carries a valid W3C trace context.
pub fn has_remote_parent(extractor: &dyn opentelemetry::propagation::Extractor) -> bool {
    use opentelemetry::trace::TraceContextExt as _;
    global::get_text_map_propagator(|p| p.extract(extractor))
        .span()
        .span_context()
        .is_valid()
}

/// Reads W3C headers from an HTTP header map (gRPC metadata travels as HTTP/2 headers).
pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes W3C headers into gRPC request metadata.
pub struct MetadataInjector<'a>(pub &'a mut tonic::metadata::MetadataMap);

impl opentelemetry::propagation::Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    /// OTLP/HTTP really leaves the process: a loopback listener receives a protobuf POST
    /// to /v1/traces carrying the service name and the span.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn http_protobuf_export_reaches_a_receiver() {
        use opentelemetry::trace::{Tracer as _, TracerProvider as _};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            // Read until the headers and the whole body (Content-Length) are in.
            loop {
                let n = s.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len || n == 0 {
                        break;
                    }
                }
            }
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            buf
        });
        let endpoint = format!("http://127.0.0.1:{port}/v1/traces");
        let p = tokio::task::spawn_blocking(move || {
            provider("berth-test", Protocol::HttpProtobuf, Some(&endpoint)).unwrap()
        })
        .await
        .unwrap();
        p.tracer("berth-test").in_span("exported-span", |_| {});
        tokio::task::spawn_blocking(move || p.shutdown().unwrap())
            .await
            .unwrap();
        let req = server.await.unwrap();
        let text = String::from_utf8_lossy(&req);
        assert!(text.starts_with("POST /v1/traces "), "{text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("content-type: application/x-protobuf"),
            "{text}"
        );
        assert!(text.contains("berth-test"), "{text}");
        assert!(text.contains("exported-span"), "{text}");
    }

    #[test]
    fn exporting_needs_an_endpoint_and_follows_the_protocol_variables() {
        assert_eq!(export_protocol(env(&[])), None);
        assert_eq!(
            export_protocol(env(&[(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://127.0.0.1:4318"
            )])),
            Some(Protocol::HttpProtobuf)
        );
        assert_eq!(
            export_protocol(env(&[
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://127.0.0.1:4317"
                ),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ])),
            Some(Protocol::Grpc)
        );
        assert_eq!(
            export_protocol(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ])),
            Some(Protocol::HttpProtobuf)
        );
        assert_eq!(
            export_protocol(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                ("OTEL_TRACES_EXPORTER", "none"),
            ])),
            None
        );
        assert_eq!(
            export_protocol(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                ("OTEL_SDK_DISABLED", "true"),
            ])),
            None
        );
    }
}
