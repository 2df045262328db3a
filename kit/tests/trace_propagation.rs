//! A call through `traced_channel` to a server behind `serve_unix` continues the caller's
//! trace: the server span has the client's span as parent and the same trace id; a call
//! made outside any trace starts no server span.
#![allow(clippy::unwrap_used)]

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use std::time::Duration;
use tonic::service::Routes;
use tracing_subscriber::layer::{Layer as _, SubscriberExt};

#[tokio::test]
async fn server_span_continues_the_callers_trace() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry().with(
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("test"))
            .with_context_activation(false)
            .with_filter(berth_kit::telemetry::exported_spans()),
    );
    let _guard = tracing::subscriber::set_default(subscriber);
    berth_kit::telemetry::mark_exporting();

    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("svc.sock");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let path = sock.clone();
    let server = tokio::spawn(async move {
        berth_kit::grpc::serve_unix(&path, Routes::default(), async {
            let _ = rx.await;
        })
        .await
    });
    let check = || async {
        let mut c = tonic_health::pb::health_client::HealthClient::new(
            berth_kit::grpc::traced_channel(&sock),
        );
        c.check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
    };
    let mut up = false;
    for _ in 0..100 {
        if check().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(up, "server never answered");
    provider.force_flush().unwrap();
    let stray: Vec<_> = exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert!(
        stray.is_empty(),
        "calls outside a trace must not start server spans: {stray:?}"
    );

    {
        use tracing::Instrument as _;
        // The filter exports Berth's spans only: this one must look like one.
        let span = tracing::info_span!(target: "berth_test", "client.request");
        check().instrument(span).await.unwrap();
    }
    tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let client = spans.iter().find(|s| s.name == "client.request").unwrap();
    let server_span = spans
        .iter()
        .find(|s| s.name == "grpc.health.v1.Health/Check")
        .unwrap_or_else(|| panic!("no server span in {spans:?}"));
    assert_eq!(
        server_span.span_context.trace_id(),
        client.span_context.trace_id()
    );
    assert_eq!(server_span.parent_span_id, client.span_context.span_id());
    assert_eq!(
        server_span.span_kind,
        opentelemetry::trace::SpanKind::Server
    );
    assert!(
        server_span
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "rpc.system" && kv.value.as_str() == "grpc"),
        "{:?}",
        server_span.attributes
    );
}
