//! The `berth.images.v1.Images` gRPC service over [`Imaged`].

use crate::Imaged;
use berth_proto::images::images_server::Images;
use berth_proto::images::{
    GetImageRequest, Image, ListImagesRequest, ListImagesResponse, PrepareSnapshotRequest,
    PullProgress, PullRequest, RemoveSnapshotRequest, RemoveSnapshotResponse, Snapshot,
};
use futures_util::Stream;
use std::pin::Pin;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

/// The gRPC face of the image store.
#[derive(Clone)]
pub struct ImagesService {
    imaged: Imaged,
}

impl ImagesService {
    /// Serves `imaged`.
    pub fn new(imaged: Imaged) -> Self {
        Self { imaged }
    }

    /// The container's snapshot, or Docker's "No such container".
    async fn snapshot_of(&self, id: &str) -> Result<crate::store::SnapshotRow, Status> {
        self.imaged
            .store()
            .snapshot(id)
            .await
            .map_err(Status::from)?
            .ok_or_else(|| Status::not_found(format!("No such container: {id}")))
    }
}

/// The Pull response stream.
pub type PullStream = Pin<Box<dyn Stream<Item = Result<PullProgress, Status>> + Send>>;

/// The Export response stream.
pub type ExportStream =
    Pin<Box<dyn Stream<Item = Result<berth_proto::images::ExportChunk, Status>> + Send>>;

/// The progress of a pull or push. An error before any progress is the call's own
/// status, so callers can answer with a plain HTTP error as dockerd does.
async fn progress_stream(
    mut rx: tokio::sync::mpsc::Receiver<Result<PullProgress, Status>>,
) -> Result<Response<PullStream>, Status> {
    match rx.recv().await {
        Some(Ok(first)) => {
            let rest = ReceiverStream::new(rx);
            let stream = futures_util::stream::once(async move { Ok(first) });
            Ok(Response::new(Box::pin(futures_util::StreamExt::chain(
                stream, rest,
            ))))
        }
        Some(Err(status)) => Err(status),
        None => Err(Status::internal("the operation ended without a result")),
    }
}

#[tonic::async_trait]
impl Images for ImagesService {
    type PullStream = PullStream;
    type PushStream = PullStream;
    type ExportStream = ExportStream;

    async fn export(
        &self,
        request: Request<berth_proto::images::ExportRequest>,
    ) -> Result<Response<ExportStream>, Status> {
        let id = request.into_inner().container_id;
        let row = self.snapshot_of(&id).await?;
        let root = std::path::PathBuf::from(&row.rootfs_path);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || crate::export::export_tree(&root, tx));
        let stream = futures_util::StreamExt::map(ReceiverStream::new(rx), |r| match r {
            Ok(data) => Ok(berth_proto::images::ExportChunk {
                data: data.to_vec(),
            }),
            Err(e) => Err(Status::internal(e)),
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn pull(&self, request: Request<PullRequest>) -> Result<Response<PullStream>, Status> {
        let req = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let imaged = self.imaged.clone();
        // The pull runs to completion even if the client goes away: it leaves either a
        // committed layer or nothing, and the next pull reuses what was done.
        tokio::spawn(
            async move {
                let result = imaged.pull(req, tx.clone()).await;
                crate::metrics::pulled(result.is_ok());
                if let Err(e) = result {
                    tracing::warn!("pull failed: {e}");
                    let _ = tx.send(Err(Status::from(e))).await;
                }
            }
            .instrument(tracing::Span::current()),
        );
        progress_stream(rx).await
    }

    type SaveStream =
        Pin<Box<dyn Stream<Item = Result<berth_proto::images::ArchiveData, Status>> + Send>>;

    async fn save(
        &self,
        request: Request<berth_proto::images::SaveRequest>,
    ) -> Result<Response<Self::SaveStream>, Status> {
        let refs = request.into_inner().references;
        let plan = self.imaged.save_plan(&refs).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::task::spawn_blocking(move || {
            let mut w = berth_kit::chunks::ChunkSender::new(tx.clone(), 256 << 10, |data| {
                berth_proto::images::ArchiveData { data }
            });
            let r = crate::saveload::write_archive(&plan, &mut w)
                .and_then(|()| std::io::Write::flush(&mut w));
            if let Err(e) = r {
                let _ =
                    tx.blocking_send(Err(Status::internal(format!("writing the archive: {e}"))));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn commit(
        &self,
        request: Request<berth_proto::images::CommitRequest>,
    ) -> Result<Response<berth_proto::images::CommitResponse>, Status> {
        let id = self.imaged.commit(request.into_inner()).await?;
        Ok(Response::new(berth_proto::images::CommitResponse { id }))
    }

    async fn import(
        &self,
        request: Request<tonic::Streaming<berth_proto::images::ImportInput>>,
    ) -> Result<Response<berth_proto::images::CommitResponse>, Status> {
        let mut input = request.into_inner();
        let first = input
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("Import needs a first message"))?;
        // A URL is fetched here (the request then carries no data); else the data is
        // the tarball.
        let spool = if first.source.is_empty() {
            let head = futures_util::stream::iter([Ok(first.data.clone())]);
            let rest = futures_util::StreamExt::map(input, |r| {
                r.map(|m| m.data).map_err(|s| s.message().to_string())
            });
            self.imaged
                .spool(futures_util::StreamExt::chain(head, rest), "import")
                .await?
        } else {
            self.imaged.download(&first.source).await?
        };
        // Docker's history comment without -m: where the tarball came from.
        let message = match (first.message.is_empty(), first.source.is_empty()) {
            (false, _) => first.message.clone(),
            (true, false) => format!("Imported from {}", first.source),
            (true, true) => String::new(),
        };
        let id = self
            .imaged
            .import(&spool.path, &first.changes, &message, &first.reference)
            .await?;
        Ok(Response::new(berth_proto::images::CommitResponse { id }))
    }

    async fn load(
        &self,
        request: Request<tonic::Streaming<berth_proto::images::ArchiveData>>,
    ) -> Result<Response<berth_proto::images::LoadResponse>, Status> {
        let chunks = futures_util::StreamExt::map(request.into_inner(), |r| {
            r.map(|d| d.data).map_err(|s| s.message().to_string())
        });
        let loaded = self.imaged.load(chunks).await?;
        Ok(Response::new(berth_proto::images::LoadResponse { loaded }))
    }

    async fn push(
        &self,
        request: Request<berth_proto::images::PushRequest>,
    ) -> Result<Response<PullStream>, Status> {
        let req = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let imaged = self.imaged.clone();
        tokio::spawn(
            async move {
                if let Err(e) = imaged.push(req, tx.clone()).await {
                    tracing::warn!("push failed: {e}");
                    let _ = tx.send(Err(Status::from(e))).await;
                }
            }
            .instrument(tracing::Span::current()),
        );
        progress_stream(rx).await
    }

    async fn get_image(
        &self,
        request: Request<GetImageRequest>,
    ) -> Result<Response<Image>, Status> {
        let row = self.imaged.resolve(&request.into_inner().reference).await?;
        Ok(Response::new(self.imaged.image_proto(row).await?))
    }

    async fn list_images(
        &self,
        _request: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let mut images = Vec::new();
        for row in self.imaged.store().images().await.map_err(Status::from)? {
            images.push(self.imaged.image_proto(row).await?);
        }
        Ok(Response::new(ListImagesResponse { images }))
    }

    async fn prepare_snapshot(
        &self,
        request: Request<PrepareSnapshotRequest>,
    ) -> Result<Response<Snapshot>, Status> {
        let req = request.into_inner();
        Ok(Response::new(
            self.imaged
                .prepare_snapshot(&req.container_id, &req.image_id)
                .await?,
        ))
    }

    async fn list_snapshots(
        &self,
        _request: Request<berth_proto::images::ListSnapshotsRequest>,
    ) -> Result<Response<berth_proto::images::ListSnapshotsResponse>, Status> {
        let rows = self
            .imaged
            .store()
            .snapshots()
            .await
            .map_err(Status::from)?;
        Ok(Response::new(berth_proto::images::ListSnapshotsResponse {
            container_ids: rows.into_iter().map(|r| r.container_id).collect(),
        }))
    }

    async fn tag(
        &self,
        request: Request<berth_proto::images::TagRequest>,
    ) -> Result<Response<berth_proto::images::TagResponse>, Status> {
        let r = request.into_inner();
        let repo_tag = self.imaged.tag(&r.source, &r.target).await?;
        Ok(Response::new(berth_proto::images::TagResponse { repo_tag }))
    }

    async fn remove_image(
        &self,
        request: Request<berth_proto::images::RemoveImageRequest>,
    ) -> Result<Response<berth_proto::images::RemoveImageResponse>, Status> {
        let r = request.into_inner();
        let items = self.imaged.remove_image(&r.reference, r.force).await?;
        Ok(Response::new(berth_proto::images::RemoveImageResponse {
            items,
        }))
    }

    async fn distribution(
        &self,
        request: Request<berth_proto::images::DistributionRequest>,
    ) -> Result<Response<berth_proto::images::DistributionResponse>, Status> {
        Ok(Response::new(
            self.imaged.distribution(request.into_inner()).await?,
        ))
    }

    async fn check_auth(
        &self,
        request: Request<berth_proto::images::CheckAuthRequest>,
    ) -> Result<Response<berth_proto::images::CheckAuthResponse>, Status> {
        let r = request.into_inner();
        self.imaged
            .check_auth(&r.server, &r.username, &r.password)
            .await?;
        Ok(Response::new(berth_proto::images::CheckAuthResponse {}))
    }

    async fn history(
        &self,
        request: Request<berth_proto::images::HistoryRequest>,
    ) -> Result<Response<berth_proto::images::HistoryResponse>, Status> {
        let entries = self.imaged.history(&request.into_inner().reference).await?;
        Ok(Response::new(berth_proto::images::HistoryResponse {
            entries,
        }))
    }

    async fn changes(
        &self,
        request: Request<berth_proto::images::ChangesRequest>,
    ) -> Result<Response<berth_proto::images::ChangesResponse>, Status> {
        let id = request.into_inner().container_id;
        let row = self.snapshot_of(&id).await?;
        let lowers: Vec<std::path::PathBuf> = serde_json::from_str::<Vec<String>>(&row.lower_dirs)
            .unwrap_or_default()
            .into_iter()
            .map(std::path::PathBuf::from)
            .collect();
        let upper = std::path::PathBuf::from(&row.upper_dir);
        let changes = tokio::task::spawn_blocking(move || crate::changes::changes(&upper, &lowers))
            .await
            .map_err(|e| Status::internal(format!("reading changes: {e}")))?
            .map_err(|e| Status::internal(format!("reading changes: {e}")))?;
        Ok(Response::new(berth_proto::images::ChangesResponse {
            changes: changes
                .into_iter()
                .map(|(path, kind)| berth_proto::images::Change { path, kind })
                .collect(),
        }))
    }

    async fn disk_usage(
        &self,
        request: Request<berth_proto::images::DiskUsageRequest>,
    ) -> Result<Response<berth_proto::images::DiskUsageResponse>, Status> {
        let usage = self
            .imaged
            .disk_usage(request.into_inner().snapshots)
            .await?;
        Ok(Response::new(usage))
    }

    async fn remove_snapshot(
        &self,
        request: Request<RemoveSnapshotRequest>,
    ) -> Result<Response<RemoveSnapshotResponse>, Status> {
        self.imaged
            .remove_snapshot(&request.into_inner().container_id)
            .await?;
        Ok(Response::new(RemoveSnapshotResponse {}))
    }
}
