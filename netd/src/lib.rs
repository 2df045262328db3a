//! berth-netd: networks and IPAM, per-container network namespaces, the default bridge
//! with veth pairs (rtnetlink), and NAT in Berth's own nftables table.
//!
//! Restart safety: SQLite is the source of truth; on start [`Netd::reconcile`] only adds
//! what is missing and removes what no record owns, so a running container's veth,
//! address and routes survive a netd restart (even `kill -9`).

pub mod config;
pub mod dns;
pub mod error;
pub mod grpc;
pub mod ipam;
pub mod iptables;
pub mod kernel;
pub mod names;
pub mod nft;
pub mod service;
pub mod store;

pub use error::NetError;
pub use grpc::NetworksService;
pub use service::{EndpointRequest, Netd, NetdConfig, NetworkRequest};
