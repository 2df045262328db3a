//! Auto-remove (`docker run --rm`): when a container with AutoRemove exits, the gateway
//! removes it across the services, as dockerd does. It follows containerd-svc's event
//! stream and, on every (re)connect, sweeps for exited auto-remove containers it may have
//! missed while either side was down.

use crate::AppState;
use crate::containers::remove_container;
use berth_proto::containers as cpb;
use std::time::Duration;

/// Runs until the process exits.
pub async fn run(st: AppState) {
    let periodic = st.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(crate::orphans::SWEEP_EVERY).await;
            crate::orphans::sweep(&periodic).await;
        }
    });
    loop {
        let mut client = st.services.containers.clone();
        let after_seq = st.events.cursor(CONTAINERD_JOURNAL).await;
        match client.events(cpb::EventsRequest { after_seq }).await {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                sweep(&st).await;
                crate::orphans::sweep(&st).await;
                // The stream ends (Ok(None)) or fails when containerd-svc goes away.
                while let Ok(Some(ev)) = stream.message().await {
                    record(&st, &ev).await;
                    if ev.action == "die" && ev.auto_remove {
                        let st = st.clone();
                        tokio::spawn(async move { remove_exited(&st, &ev.id).await });
                    }
                }
            }
            Err(e) => tracing::debug!("containerd events unavailable: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The cursor name of containerd-svc's event journal in the gateway's store.
const CONTAINERD_JOURNAL: &str = "containerd";

/// containerd-svc's lifecycle events (create, start, die, destroy) become Docker events;
/// journaled ones (seq > 0) move the cursor, so a restart neither loses nor repeats them.
async fn record(st: &AppState, ev: &cpb::ContainerEvent) {
    // dockerd's order: the network is connected before the start is reported.
    if ev.action == "start" {
        crate::networks::lifecycle_events(st, ev).await;
    }
    let mut attrs = crate::events::container_attributes(&ev.name, &ev.image_ref, &ev.labels);
    if ev.action == "die" {
        attrs.insert("exitCode".into(), ev.exit_code.to_string());
    }
    attrs.extend(ev.attributes.clone());
    if ev.seq == 0 {
        st.events
            .emit_at(ev.time_unix_nano, "container", &ev.action, &ev.id, attrs)
            .await;
    } else {
        st.events
            .emit_journaled(
                CONTAINERD_JOURNAL,
                ev.seq,
                ev.time_unix_nano,
                "container",
                &ev.action,
                &ev.id,
                attrs,
            )
            .await;
    }
    if matches!(ev.action.as_str(), "start" | "die") {
        crate::volumes::mount_events(st, ev).await;
    }
    if ev.action == "die" {
        crate::networks::lifecycle_events(st, ev).await;
    }
}

async fn sweep(st: &AppState) {
    let mut client = st.services.containers.clone();
    let Ok(list) = client.list(cpb::ListRequest { all: true }).await else {
        return;
    };
    for c in list.into_inner().containers {
        let Some(spec) = c.spec else { continue };
        if spec.auto_remove && c.state == "exited" {
            remove_exited(st, &spec.id).await;
        }
    }
}

#[tracing::instrument(name = "container.autoremove", skip_all, fields(container.id = %id))]
async fn remove_exited(st: &AppState, id: &str) {
    // Retried: a service may be restarting at this moment.
    for attempt in 0..20 {
        match remove_container(st, id, true, true).await {
            Ok(()) => return,
            Err(e) if e.status == axum::http::StatusCode::NOT_FOUND && attempt > 0 => return,
            Err(e) => {
                tracing::debug!(container = %id, "auto-remove attempt {attempt}: {e}");
                tokio::time::sleep(Duration::from_millis(250 * (attempt + 1))).await;
            }
        }
    }
    tracing::warn!(container = %id, "auto-remove gave up");
}
