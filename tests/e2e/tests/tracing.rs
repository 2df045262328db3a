//! One trace per API request across the services. A real OTLP/gRPC receiver (built here
//! from the OTLP protos) listens on loopback; Berth exports to it; `docker run --rm` of an
//! image that is not pulled yet (so the CLI also pulls) must give traces that are each
//! rooted at a single gateway span with no orphans, and whose spans together come from
//! every service and from the shim.

#![allow(clippy::unwrap_used)]

use berth_e2e::otlp::{Received, start_receiver};
use berth_e2e::{Berth, registry_with_busybox, step, wait_until};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// Everything wrong with the traces that contain a gateway span: a trace whose root is not
/// one gateway span, or a span whose parent never arrived.
fn problems(spans: &[Received]) -> Vec<String> {
    let mut by_trace: HashMap<&[u8], Vec<&Received>> = HashMap::new();
    for s in spans {
        by_trace.entry(&s.trace_id).or_default().push(s);
    }
    let mut out = Vec::new();
    for (trace, members) in by_trace {
        let ids: BTreeSet<&[u8]> = members.iter().map(|s| s.span_id.as_slice()).collect();
        let roots: Vec<_> = members
            .iter()
            .filter(|s| s.parent_span_id.is_empty())
            .collect();
        let trace = hex::encode(trace);
        if roots.len() != 1 || roots[0].service != "berth-gateway" {
            out.push(format!(
                "trace {trace}: roots {:?}",
                roots
                    .iter()
                    .map(|s| format!("{}:{}", s.service, s.name))
                    .collect::<Vec<_>>()
            ));
        }
        for s in &members {
            if !s.parent_span_id.is_empty() && !ids.contains(s.parent_span_id.as_slice()) {
                out.push(format!(
                    "trace {trace}: orphan {}:{} (parent {})",
                    s.service,
                    s.name,
                    hex::encode(&s.parent_span_id)
                ));
            }
        }
    }
    out
}

const SERVICES: [&str; 7] = [
    "berth-gateway",
    "berth-imaged",
    "berth-netd",
    "berth-volumed",
    "berth-containerd",
    "berth-shim",
    "berth-logd",
];

#[test]
fn docker_run_is_traced_across_every_service() {
    let (_registry, _image, img) = registry_with_busybox().unwrap();
    let (receiver, port, _rt) = start_receiver().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    // The exporter is configured in daemon.json; berthd hands it to every service.
    let berth = Berth::start_full(
        "tracing",
        &[],
        // Export every 200 ms instead of 5 s, so the test need not wait long.
        &[("OTEL_BSP_SCHEDULE_DELAY", "200")],
        &format!(r#"{{"tracing": {{"endpoint": "{endpoint}", "protocol": "grpc"}}}}"#),
    )
    .unwrap();

    step!("docker run --rm of an image not pulled yet");
    let out = berth.docker(&["run", "--rm", &img, "echo", "traced"]);
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout.lines().last(), Some("traced"));

    step!("every service's spans arrive, in traces rooted at the gateway");
    let services = || -> BTreeSet<String> {
        receiver
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.service.clone())
            .collect()
    };
    let complete = wait_until(Duration::from_secs(30), || {
        let seen = services();
        SERVICES.iter().all(|s| seen.contains(*s))
            && problems(&receiver.0.lock().unwrap()).is_empty()
    });
    let spans = receiver.0.lock().unwrap().clone();
    let listing: Vec<String> = spans
        .iter()
        .map(|s| {
            format!(
                "{} {} {}:{}",
                hex::encode(&s.trace_id),
                hex::encode(&s.parent_span_id),
                s.service,
                s.name
            )
        })
        .collect();
    assert!(
        complete,
        "services seen {:?}, problems {:?}\nspans:\n{}",
        services(),
        problems(&spans),
        listing.join("\n")
    );

    step!("the spans carry the semantic-convention and container attributes");
    let http = spans
        .iter()
        .find(|s| s.name == "POST /containers/create")
        .unwrap_or_else(|| panic!("no create span:\n{}", listing.join("\n")));
    assert_eq!(http.attributes["http.request.method"], "POST");
    assert_eq!(http.attributes["http.route"], "/containers/create");
    assert!(http.attributes.contains_key("http.response.status_code"));
    let rpc = spans
        .iter()
        .find(|s| s.service == "berth-containerd" && s.name.ends_with("/Start"))
        .unwrap_or_else(|| panic!("no containerd Start span:\n{}", listing.join("\n")));
    assert_eq!(rpc.attributes["rpc.system"], "grpc");
    assert_eq!(rpc.attributes["rpc.method"], "Start");
    let shim = spans
        .iter()
        .find(|s| s.service == "berth-shim" && s.name == "shim start")
        .unwrap_or_else(|| panic!("no shim start span:\n{}", listing.join("\n")));
    assert_eq!(shim.attributes["container.id"].len(), 64);
    // The shim's run hangs under containerd's Start, in the same trace.
    assert!(spans.iter().any(|s| s.service == "berth-shim"
        && s.name == "berth-shim run"
        && s.trace_id == rpc.trace_id));
    for name in [
        "image.pull",
        "layer.unpack",
        "snapshot.prepare",
        "endpoint.create",
    ] {
        assert!(
            spans.iter().any(|s| s.name == name),
            "no {name} span:\n{}",
            listing.join("\n")
        );
    }

    step!("an incoming W3C traceparent is continued, not replaced");
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let r = berth_e2e::http::unix_request_with_headers(
        berth.socket(),
        "GET",
        "/v1.50/containers/json?all=1",
        &[("traceparent", &format!("00-{trace_id}-{parent_id}-01"))],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let continued = wait_until(Duration::from_secs(15), || {
        receiver.0.lock().unwrap().iter().any(|s| {
            s.service == "berth-gateway"
                && hex::encode(&s.trace_id) == trace_id
                && hex::encode(&s.parent_span_id) == parent_id
                && s.name == "GET /containers/json"
        })
    });
    assert!(continued, "no gateway span continued the client's trace");
    // The call to containerd-svc it made is in the same trace.
    assert!(wait_until(Duration::from_secs(15), || {
        receiver
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.service == "berth-containerd" && hex::encode(&s.trace_id) == trace_id)
    }));
}
