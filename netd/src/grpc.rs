//! The `berth.networks.v1.Networks` gRPC surface over [`Netd`].

use crate::service::{EndpointRequest, EndpointView, Netd, NetworkRequest};
use crate::store::{NetworkRow, PortRequest, PortRow};
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

fn port_pb(p: &PortRow) -> pb::PortBinding {
    pb::PortBinding {
        protocol: p.protocol.clone(),
        container_port: u32::try_from(p.container_port).unwrap_or(0),
        host_ip: p.host_ip.clone(),
        host_port: u32::try_from(p.host_port).unwrap_or(0),
    }
}

/// The Endpoint message the gateway turns into Docker's NetworkSettings.
pub fn endpoint_pb(v: &EndpointView) -> pb::Endpoint {
    let (ep, net) = (&v.endpoint, &v.network);
    let bridged = ep.ip.is_some();
    let aliases = ep.alias_list();
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
        dns_names: if net.is_user_defined_bridge() {
            crate::dns::dns_names(&ep.container_id, &v.container_name, &aliases)
        } else {
            Vec::new()
        },
        aliases,
        ports: v.ports.iter().map(port_pb).collect(),
        interface_name: ep.ifname.clone(),
        container_name: v.container_name.clone(),
        settings_json: ep.settings.clone(),
    }
}

/// The Network message.
pub fn network_pb(n: &NetworkRow) -> pb::Network {
    let labels: HashMap<String, String> = serde_json::from_str(&n.labels).unwrap_or_default();
    let options: HashMap<String, String> = serde_json::from_str(&n.options).unwrap_or_default();
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
        ip_range: n.ip_range.clone(),
        options,
        ipam_json: n.ipam.clone(),
    }
}

fn port_request(p: &pb::PortBinding) -> Result<PortRequest, Status> {
    if !matches!(p.protocol.as_str(), "tcp" | "udp" | "sctp") {
        return Err(Status::invalid_argument(format!(
            "invalid proto: {}",
            p.protocol
        )));
    }
    let container_port = u16::try_from(p.container_port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| Status::invalid_argument(format!("invalid port: {}", p.container_port)))?;
    let host_port = u16::try_from(p.host_port)
        .map_err(|_| Status::invalid_argument(format!("invalid port: {}", p.host_port)))?;
    let host_ip = match p.host_ip.as_str() {
        "" | "0.0.0.0" => None,
        ip => Some(ip.parse::<std::net::Ipv4Addr>().map_err(|_| {
            Status::invalid_argument(format!("invalid IP address: {ip} (only IPv4 is supported)"))
        })?),
    };
    Ok(PortRequest {
        protocol: p.protocol.clone(),
        container_port,
        host_ip,
        host_port,
    })
}

#[tonic::async_trait]
impl Networks for NetworksService {
    async fn create_endpoint(
        &self,
        req: Request<pb::CreateEndpointRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let r = req.into_inner();
        let ports = r.ports.iter().map(port_request).collect::<Result<_, _>>()?;
        let (ep, net) = self
            .netd
            .create_endpoint(&EndpointRequest {
                container_id: r.container_id,
                network: r.network,
                container_name: r.container_name,
                aliases: r.aliases,
                ipv4_address: r.ipv4_address,
                ports,
                dns_servers: r.dns_servers,
                mac_address: r.mac_address,
                settings_json: r.settings_json,
            })
            .await?;
        let view = self.netd.endpoint_view(&ep.container_id, &net.id).await?;
        Ok(Response::new(endpoint_pb(&view)))
    }

    async fn rename_container(
        &self,
        req: Request<pb::RenameContainerRequest>,
    ) -> Result<Response<pb::RenameContainerResponse>, Status> {
        let r = req.into_inner();
        self.netd.rename_container(&r.container_id, &r.name).await?;
        Ok(Response::new(pb::RenameContainerResponse {}))
    }

    async fn remove_endpoint(
        &self,
        req: Request<pb::RemoveEndpointRequest>,
    ) -> Result<Response<pb::RemoveEndpointResponse>, Status> {
        let r = req.into_inner();
        self.netd
            .remove_endpoint(&r.container_id, &r.network)
            .await?;
        Ok(Response::new(pb::RemoveEndpointResponse {}))
    }

    async fn get_endpoint(
        &self,
        req: Request<pb::GetEndpointRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let id = req.into_inner().container_id;
        let (ep, net) = self.netd.get_endpoint(&id).await?;
        let view = self.netd.endpoint_view(&ep.container_id, &net.id).await?;
        Ok(Response::new(endpoint_pb(&view)))
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
        let r = req.into_inner();
        let eps = self
            .netd
            .list_endpoints(&r.network, &r.container_id)
            .await?;
        Ok(Response::new(pb::ListEndpointsResponse {
            endpoints: eps.iter().map(endpoint_pb).collect(),
        }))
    }

    async fn create_network(
        &self,
        req: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let r = req.into_inner();
        let n = self
            .netd
            .create_network(&NetworkRequest {
                name: r.name,
                driver: r.driver,
                subnet: r.subnet,
                gateway: r.gateway,
                ip_range: r.ip_range,
                internal: r.internal,
                labels: r.labels,
                options: r.options,
                ipam_json: r.ipam_json,
            })
            .await?;
        Ok(Response::new(network_pb(&n)))
    }

    async fn remove_network(
        &self,
        req: Request<pb::RemoveNetworkRequest>,
    ) -> Result<Response<pb::RemoveNetworkResponse>, Status> {
        self.netd
            .remove_network(&req.into_inner().name_or_id)
            .await?;
        Ok(Response::new(pb::RemoveNetworkResponse {}))
    }
}
