//! Generated gRPC code for every Berth service. Nothing else lives here.

/// `berth.images.v1`: the image store (imaged).
pub mod images {
    tonic::include_proto!("berth.images.v1");
}
/// `berth.containers.v1`: container records and lifecycle (containerd-svc).
pub mod containers {
    tonic::include_proto!("berth.containers.v1");
}
/// `berth.shim.v1`: the per-container shim, spoken only by containerd-svc.
pub mod shim {
    tonic::include_proto!("berth.shim.v1");
}
/// `berth.networks.v1`: networks, endpoints, IPAM (netd).
pub mod networks {
    tonic::include_proto!("berth.networks.v1");
}
/// `berth.volumes.v1`: volumes and their use by containers (volumed).
pub mod volumes {
    tonic::include_proto!("berth.volumes.v1");
}
/// `berth.logs.v1`: container log streams (logd).
pub mod logs {
    tonic::include_proto!("berth.logs.v1");
}
/// `berth.telemetry.v1`: metrics every service serves beside its own API (berth-kit).
pub mod telemetry {
    tonic::include_proto!("berth.telemetry.v1");
}
