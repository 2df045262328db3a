//! Clients for the five services, and the deadline every call carries.

use crate::error::ApiError;
use berth_kit::Roots;
use berth_kit::grpc::TracedChannel;
use berth_proto::containers::containers_client::ContainersClient;
use berth_proto::images::images_client::ImagesClient;
use berth_proto::logs::logs_client::LogsClient;
use berth_proto::networks::networks_client::NetworksClient;
use berth_proto::telemetry::telemetry_client::TelemetryClient;
use berth_proto::volumes::volumes_client::VolumesClient;
use std::future::Future;
use std::time::Duration;

/// How long an ordinary call may take before the caller gets a 503.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(15);

/// Service names as they appear in error messages.
pub const IMAGED: &str = "imaged";
pub const CONTAINERD: &str = "containerd";
pub const NETD: &str = "netd";
pub const VOLUMED: &str = "volumed";
pub const LOGD: &str = "logd";

/// One lazily-connected client per service; cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub images: ImagesClient<TracedChannel>,
    pub containers: ContainersClient<TracedChannel>,
    pub networks: NetworksClient<TracedChannel>,
    pub volumes: VolumesClient<TracedChannel>,
    pub logs: LogsClient<TracedChannel>,
    /// Each service's metrics endpoint, by service name.
    pub telemetry: Vec<(&'static str, TelemetryClient<TracedChannel>)>,
}

impl Services {
    /// Clients for the services of the instance at `roots`. Nothing connects until used.
    pub fn connect(roots: &Roots) -> Self {
        let ch = |svc: &str| berth_kit::grpc::traced_channel(&roots.socket(svc));
        Self {
            images: ImagesClient::new(ch(IMAGED)).max_decoding_message_size(64 << 20),
            containers: ContainersClient::new(ch(CONTAINERD)).max_decoding_message_size(64 << 20),
            networks: NetworksClient::new(ch(NETD)),
            volumes: VolumesClient::new(ch(VOLUMED)),
            logs: LogsClient::new(ch(LOGD)),
            telemetry: [IMAGED, CONTAINERD, NETD, VOLUMED, LOGD]
                .into_iter()
                .map(|s| (s, TelemetryClient::new(ch(s))))
                .collect(),
        }
    }
}

/// Runs one call to `service` with the default deadline, mapping failures once.
pub async fn call<T>(
    service: &str,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, ApiError> {
    call_within(service, DEFAULT_DEADLINE, fut).await
}

/// As [`call`], with an explicit deadline (stop with a long timeout, waits).
pub async fn call_within<T>(
    service: &str,
    deadline: Duration,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(deadline, fut).await {
        Ok(Ok(resp)) => Ok(resp.into_inner()),
        Ok(Err(status)) => Err(ApiError::from_status(service, status)),
        Err(_) => Err(ApiError::unavailable(
            service,
            format!("no answer within {} s", deadline.as_secs()),
        )),
    }
}
