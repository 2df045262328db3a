//! The Volumes gRPC service over [`VolumeStore`].

use crate::store::{Filter, Mount, MountRequest, Volume, VolumeStore};
use berth_proto::volumes as pb;
use berth_proto::volumes::volumes_server::Volumes;
use tonic::{Request, Response, Status};

/// The volumed gRPC service.
#[derive(Clone)]
pub struct VolumeService {
    store: VolumeStore,
}

impl VolumeService {
    /// Serves `store`.
    pub fn new(store: VolumeStore) -> Self {
        Self { store }
    }
}

fn to_pb(v: Volume) -> pb::Volume {
    pb::Volume {
        name: v.name,
        driver: v.driver,
        mountpoint: v.mountpoint,
        created_at: v.created_at,
        labels: v.labels.into_iter().collect(),
        options: v.options.into_iter().collect(),
        anonymous: v.anonymous,
        used_by: v.used_by,
        size: -1,
    }
}

fn filter_from_pb(f: Option<pb::VolumeFilter>) -> Filter {
    let f = f.unwrap_or_default();
    Filter {
        names: f.names,
        drivers: f.drivers,
        labels: f.labels,
        not_labels: f.not_labels,
        dangling: f.dangling,
    }
}

fn mount_to_pb(m: Mount) -> pb::VolumeMount {
    pb::VolumeMount {
        name: m.name,
        source: m.source,
        destination: m.destination,
        read_only: m.read_only,
        anonymous: m.anonymous,
        created: m.created,
    }
}

#[tonic::async_trait]
impl Volumes for VolumeService {
    async fn create_volume(
        &self,
        request: Request<pb::CreateVolumeRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        let r = request.into_inner();
        let v = self
            .store
            .create(
                &r.name,
                &r.driver,
                r.labels.into_iter().collect(),
                r.options.into_iter().collect(),
            )
            .await?;
        Ok(Response::new(to_pb(v)))
    }

    async fn get_volume(
        &self,
        request: Request<pb::GetVolumeRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        let v = self.store.get(&request.into_inner().name).await?;
        Ok(Response::new(to_pb(v)))
    }

    async fn list_volumes(
        &self,
        request: Request<pb::ListVolumesRequest>,
    ) -> Result<Response<pb::ListVolumesResponse>, Status> {
        let req = request.into_inner();
        let filter = filter_from_pb(req.filter);
        let mut volumes: Vec<pb::Volume> = self
            .store
            .list(&filter)
            .await?
            .into_iter()
            .map(to_pb)
            .collect();
        if req.with_size {
            volumes = tokio::task::spawn_blocking(move || {
                for v in &mut volumes {
                    // A volume being removed meanwhile measures 0; other errors -1.
                    v.size = berth_kit::disk::dir_size(std::path::Path::new(&v.mountpoint))
                        .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
                }
                volumes
            })
            .await
            .map_err(|e| Status::internal(format!("measuring volumes: {e}")))?;
        }
        Ok(Response::new(pb::ListVolumesResponse { volumes }))
    }

    async fn prune_volumes(
        &self,
        request: Request<pb::PruneVolumesRequest>,
    ) -> Result<Response<pb::PruneVolumesResponse>, Status> {
        let r = request.into_inner();
        let pruned = self.store.prune(&filter_from_pb(r.filter), r.all).await?;
        Ok(Response::new(pb::PruneVolumesResponse {
            deleted: pruned.deleted,
            space_reclaimed: pruned.space_reclaimed,
        }))
    }

    async fn remove_volume(
        &self,
        request: Request<pb::RemoveVolumeRequest>,
    ) -> Result<Response<pb::RemoveVolumeResponse>, Status> {
        let r = request.into_inner();
        self.store.remove(&r.name, r.force).await?;
        Ok(Response::new(pb::RemoveVolumeResponse {}))
    }

    async fn attach_container(
        &self,
        request: Request<pb::AttachContainerRequest>,
    ) -> Result<Response<pb::AttachContainerResponse>, Status> {
        let r = request.into_inner();
        let mounts: Vec<MountRequest> = r
            .mounts
            .into_iter()
            .map(|m| MountRequest {
                name: m.name,
                destination: m.destination,
                read_only: m.read_only,
                no_copy: m.no_copy,
                labels: m.labels.into_iter().collect(),
                options: m.driver_options.into_iter().collect(),
            })
            .collect();
        let rootfs =
            Some(std::path::Path::new(&r.rootfs_path)).filter(|p| !p.as_os_str().is_empty());
        let out = self.store.attach(&r.container_id, &mounts, rootfs).await?;
        Ok(Response::new(pb::AttachContainerResponse {
            mounts: out.into_iter().map(mount_to_pb).collect(),
        }))
    }

    async fn detach_container(
        &self,
        request: Request<pb::DetachContainerRequest>,
    ) -> Result<Response<pb::DetachContainerResponse>, Status> {
        let r = request.into_inner();
        self.store
            .detach(&r.container_id, r.remove_anonymous)
            .await?;
        Ok(Response::new(pb::DetachContainerResponse {}))
    }

    async fn list_attached_containers(
        &self,
        _request: Request<pb::ListAttachedContainersRequest>,
    ) -> Result<Response<pb::ListAttachedContainersResponse>, Status> {
        Ok(Response::new(pb::ListAttachedContainersResponse {
            container_ids: self.store.attached_containers().await?,
        }))
    }
}
