//! The sweep of orphans. A `docker create` cut short by a crash of the gateway (or a
//! `docker rm` whose later steps failed) can leave a snapshot, a network endpoint, volume
//! usage records or a log behind for a container containerd-svc no longer has. The sweep
//! lists what each service holds per container and releases what belongs to no container.
//! It runs exclusively of creates (see [`crate::AppState::create_lock`]), when the reaper
//! (re)connects to containerd-svc and then periodically.

use crate::AppState;
use berth_proto::{containers as cpb, images as ipb, logs as lpb, networks as npb, volumes as vpb};
use std::collections::HashSet;
use std::time::Duration;

/// How often the sweep runs besides at (re)connect.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Deadline of each call the sweep makes.
const CALL_DEADLINE: Duration = Duration::from_secs(5);

async fn within<T>(
    f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Option<T> {
    match tokio::time::timeout(CALL_DEADLINE, f).await {
        Ok(Ok(r)) => Some(r.into_inner()),
        _ => None,
    }
}

/// Releases every resource held for a container that does not exist. Returns how many
/// were released. Does nothing unless containerd-svc answers (its list is the truth).
pub async fn sweep(st: &AppState) -> usize {
    let _exclusive = st.create_lock.write().await;
    let mut s = st.services.clone();
    let Some(list) = within(s.containers.list(cpb::ListRequest { all: true })).await else {
        return 0;
    };
    let live: HashSet<String> = list
        .containers
        .into_iter()
        .filter_map(|c| c.spec.map(|sp| sp.id))
        .collect();
    let mut released = 0;
    if let Some(snaps) = within(s.images.list_snapshots(ipb::ListSnapshotsRequest {})).await {
        for id in snaps
            .container_ids
            .into_iter()
            .filter(|id| !live.contains(id))
        {
            let r = within(s.images.remove_snapshot(ipb::RemoveSnapshotRequest {
                container_id: id.clone(),
            }))
            .await;
            released += usize::from(r.is_some());
            tracing::info!(container = %id, ok = r.is_some(), "released an orphaned snapshot");
        }
    }
    if let Some(eps) = within(
        s.networks
            .list_endpoints(npb::ListEndpointsRequest::default()),
    )
    .await
    {
        // A container on several networks has one endpoint each.
        let ids: std::collections::BTreeSet<String> =
            eps.endpoints.into_iter().map(|e| e.container_id).collect();
        for id in ids.into_iter().filter(|id| !live.contains(id)) {
            let r = within(s.networks.remove_endpoint(npb::RemoveEndpointRequest {
                container_id: id.clone(),
                network: String::new(),
            }))
            .await;
            released += usize::from(r.is_some());
            tracing::info!(container = %id, ok = r.is_some(), "released an orphaned endpoint");
        }
    }
    if let Some(att) = within(
        s.volumes
            .list_attached_containers(vpb::ListAttachedContainersRequest {}),
    )
    .await
    {
        for id in att
            .container_ids
            .into_iter()
            .filter(|id| !live.contains(id))
        {
            // Anonymous volumes go with their container, as `docker rm -v` / `--rm` do.
            let r = within(s.volumes.detach_container(vpb::DetachContainerRequest {
                container_id: id.clone(),
                remove_anonymous: true,
            }))
            .await;
            released += usize::from(r.is_some());
            tracing::info!(container = %id, ok = r.is_some(), "released orphaned volume usage");
        }
    }
    if let Some(logs) = within(s.logs.list_logs(lpb::ListLogsRequest {})).await {
        for id in logs
            .container_ids
            .into_iter()
            .filter(|id| !live.contains(id))
        {
            let r = within(s.logs.remove(lpb::RemoveRequest {
                container_id: id.clone(),
            }))
            .await;
            released += usize::from(r.is_some());
            tracing::info!(container = %id, ok = r.is_some(), "released an orphaned log");
        }
    }
    released
}
