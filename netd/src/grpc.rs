//! The `berth.networks.v1.Networks` gRPC surface over [`Netd`].

use crate::service::Netd;
use crate::store::{EndpointRow, NetworkRow};
use berth_proto::networks as pb;
use pb::networks_server::Networks;
use std::collections::HashMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The gRPC service; cheap to clone.
#[derive(Clone)]
pub struct NetworksService {
    netd: Arc<Netd>,
}

impl NetworksService {
    /// Wraps a reconciled [`Netd`].
    pub fn new(netd: Arc<Netd>) -> Self {
        Self { netd }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> pb::networks_server::NetworksServer<Self> {
        pb::networks_server::NetworksServer::new(self)
    }
}

/// The Endpoint message the gateway turns into Docker's NetworkSettings.
pub fn endpoint_pb(ep: &EndpointRow, net: &NetworkRow) -> pb::Endpoint {
    let bridged = ep.ip.is_some();
    pb::Endpoint {
        container_id: ep.container_id.clone(),
        network_id: net.id.clone(),
        network_name: net.name.clone(),
        endpoint_id: ep.endpoint_id.clone(),
        netns_path: ep.netns_path.clone(),
        ip_address: ep.ip.clone().unwrap_or_default(),
        prefix_len: i32::try_from(ep.prefix_len).unwrap_or(0),
        gateway: if bridged {
            net.gateway.clone()
        } else {
            String::new()
        },
        mac_address: ep.mac.clone(),
        host_veth: ep.host_veth.clone(),
    }
}

/// The Network message.
pub fn network_pb(n: &NetworkRow) -> pb::Network {
    let labels: HashMap<String, String> = serde_json::from_str(&n.labels).unwrap_or_default();
    pb::Network {
        id: n.id.clone(),
        name: n.name.clone(),
        driver: n.driver.clone(),
        subnet: n.subnet.clone(),
        gateway: n.gateway.clone(),
        bridge: n.bridge.clone(),
        created: n.created.clone(),
        labels,
        internal: n.internal,
    }
}

#[tonic::async_trait]
impl Networks for NetworksService {
    async fn create_endpoint(
        &self,
        req: Request<pb::CreateEndpointRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let r = req.into_inner();
        let (ep, net) = self
            .netd
            .create_endpoint(&r.container_id, &r.network)
            .await?;
        Ok(Response::new(endpoint_pb(&ep, &net)))
    }

    async fn remove_endpoint(
        &self,
        req: Request<pb::RemoveEndpointRequest>,
    ) -> Result<Response<pb::RemoveEndpointResponse>, Status> {
        self.netd
            .remove_endpoint(&req.into_inner().container_id)
            .await?;
        Ok(Response::new(pb::RemoveEndpointResponse {}))
    }

    async fn get_endpoint(
        &self,
        req: Request<pb::GetEndpointRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let (ep, net) = self
            .netd
            .get_endpoint(&req.into_inner().container_id)
            .await?;
        Ok(Response::new(endpoint_pb(&ep, &net)))
    }

    async fn list_networks(
        &self,
        _req: Request<pb::ListNetworksRequest>,
    ) -> Result<Response<pb::ListNetworksResponse>, Status> {
        let networks = self.netd.list_networks().await?;
        Ok(Response::new(pb::ListNetworksResponse {
            networks: networks.iter().map(network_pb).collect(),
        }))
    }

    async fn get_network(
        &self,
        req: Request<pb::GetNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let n = self.netd.get_network(&req.into_inner().name_or_id).await?;
        Ok(Response::new(network_pb(&n)))
    }

    async fn list_endpoints(
        &self,
        req: Request<pb::ListEndpointsRequest>,
    ) -> Result<Response<pb::ListEndpointsResponse>, Status> {
        let eps = self.netd.list_endpoints(&req.into_inner().network).await?;
        Ok(Response::new(pb::ListEndpointsResponse {
            endpoints: eps.iter().map(|(e, n)| endpoint_pb(e, n)).collect(),
        }))
    }
}
