//! The netd core: startup reconciliation, endpoints, network lookups and teardown.

use crate::error::{NetError, Result};
use crate::ipam::{self, Addressing};
use crate::kernel::{self, Netlink, VethPlan};
use crate::names;
use crate::nft::{self, BridgeRules};
use crate::store::{self, DRIVER_BRIDGE, DRIVER_HOST, DRIVER_NULL, EndpointRow, NetworkRow};
use berth_kit::Roots;
use sqlx::SqlitePool;
use std::collections::HashSet;
use std::path::Path;

/// The name of Docker's default bridge network.
pub const BRIDGE_NETWORK: &str = "bridge";

/// The netd service state. Kernel-changing operations are serialised by `ops`, which
/// keeps undo-on-failure simple (no other create can interleave with a rollback).
pub struct Netd {
    pool: SqlitePool,
    roots: Roots,
    table: String,
    bridge_override: Option<String>,
    nl: Netlink,
    ops: tokio::sync::Mutex<()>,
}

/// Finds a network by name, full id or unique id prefix (Docker's lookup order).
pub fn resolve_network<'a>(rows: &'a [NetworkRow], key: &str) -> Result<&'a NetworkRow> {
    let not_found = || NetError::NotFound(format!("network {key} not found"));
    if key.is_empty() {
        return Err(not_found());
    }
    if let Some(n) = rows.iter().find(|n| n.name == key) {
        return Ok(n);
    }
    if let Some(n) = rows.iter().find(|n| n.id == key) {
        return Ok(n);
    }
    let matches: Vec<_> = rows.iter().filter(|n| n.id.starts_with(key)).collect();
    match matches.as_slice() {
        [] => Err(not_found()),
        [one] => Ok(one),
        many => Err(NetError::InvalidArgument(format!(
            "network {key} is ambiguous ({} matches found based on ID prefix)",
            many.len()
        ))),
    }
}

fn validate_bridge_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > names::IFNAMSIZ_MAX || name.contains(['/', ' ']) {
        return Err(NetError::InvalidArgument(format!(
            "invalid bridge name {name:?}: 1-15 characters, no '/' or spaces"
        )));
    }
    Ok(())
}

fn new_network(name: &str, driver: &str, addr: Option<&Addressing>, bridge: &str) -> NetworkRow {
    NetworkRow {
        id: names::random_id(),
        name: name.to_string(),
        driver: driver.to_string(),
        subnet: addr.map(|a| a.subnet.to_string()).unwrap_or_default(),
        gateway: addr.map(|a| a.gateway.to_string()).unwrap_or_default(),
        bridge: bridge.to_string(),
        created: names::now_rfc3339(),
        labels: "{}".to_string(),
        internal: false,
    }
}

impl Netd {
    /// Connects to the kernel; nothing is changed until [`Netd::reconcile`].
    pub fn new(pool: SqlitePool, roots: Roots, bridge_override: Option<String>) -> Result<Self> {
        if let Some(b) = &bridge_override {
            validate_bridge_name(b)?;
        }
        Ok(Self {
            table: roots.nft_table(),
            pool,
            roots,
            bridge_override,
            nl: Netlink::host()?,
            ops: tokio::sync::Mutex::new(()),
        })
    }

    fn wanted_bridge(&self) -> String {
        self.bridge_override
            .clone()
            .unwrap_or_else(|| self.roots.bridge_name())
    }

    /// Brings the kernel in line with the records before serving: the three Docker
    /// networks exist, the bridge has its address and is up, forwarding is on, the nft
    /// table is rebuilt, and endpoints are checked. Running containers are not touched:
    /// only missing pieces are added and unowned ones removed.
    pub async fn reconcile(&self, bip: Option<&str>) -> Result<()> {
        let _g = self.ops.lock().await;
        let bridge_net = self.ensure_networks(bip).await?;
        let addr = bridge_net.addressing()?;
        let br_idx = self
            .nl
            .ensure_bridge(&bridge_net.bridge, addr.gateway_net())
            .await?;
        kernel::enable_ip_forward().await?;
        self.reconcile_endpoints(br_idx).await?;
        nft::apply(&nft::ruleset(
            &self.table,
            &[BridgeRules {
                bridge: bridge_net.bridge.clone(),
                subnet: addr.subnet,
            }],
        ))
        .await?;
        tracing::info!(
            bridge = %bridge_net.bridge,
            subnet = %addr.subnet,
            gateway = %addr.gateway,
            table = %self.table,
            "network state reconciled"
        );
        Ok(())
    }

    async fn ensure_networks(&self, bip: Option<&str>) -> Result<NetworkRow> {
        let wanted_bridge = self.wanted_bridge();
        validate_bridge_name(&wanted_bridge)?;
        let bip = bip.map(ipam::parse_bip).transpose()?;
        for (name, driver) in [("host", DRIVER_HOST), ("none", DRIVER_NULL)] {
            store::insert_network_if_missing(&self.pool, &new_network(name, driver, None, ""))
                .await?;
        }
        match store::network_by_name(&self.pool, BRIDGE_NETWORK).await? {
            None => {
                let addr = match bip {
                    Some(a) => a,
                    None => {
                        let used = self.nl.used_networks().await?;
                        ipam::choose_subnet(&used).ok_or_else(|| {
                            NetError::FailedPrecondition(
                                "no free /16 in 172.18.0.0-172.31.255.255 for the default bridge; pass --bip"
                                    .into(),
                            )
                        })?
                    }
                };
                let row = new_network(BRIDGE_NETWORK, DRIVER_BRIDGE, Some(&addr), &wanted_bridge);
                store::insert_network_if_missing(&self.pool, &row).await?;
            }
            Some(row) => {
                let stored = row.addressing()?;
                let want = bip.unwrap_or(stored);
                if want != stored || wanted_bridge != row.bridge {
                    if !store::update_bridge_network(&self.pool, &row.id, &want, &wanted_bridge)
                        .await?
                    {
                        return Err(NetError::FailedPrecondition(format!(
                            "the default bridge is configured as {} on {} but {} on {} was requested; \
                             containers still use it: remove them (or pass the old --bip/-b) first",
                            stored.gateway_net(),
                            row.bridge,
                            want.gateway_net(),
                            wanted_bridge
                        )));
                    }
                    tracing::info!(old = %stored.gateway_net(), new = %want.gateway_net(),
                        old_bridge = %row.bridge, bridge = %wanted_bridge, "default bridge reconfigured");
                    if wanted_bridge != row.bridge {
                        self.nl.delete_link(&row.bridge).await?;
                    }
                }
            }
        }
        store::network_by_name(&self.pool, BRIDGE_NETWORK)
            .await?
            .ok_or_else(|| NetError::Corrupt("bridge network vanished".into()))
    }

    async fn reconcile_endpoints(&self, br_idx: u32) -> Result<()> {
        let nets = store::networks(&self.pool).await?;
        let mut owned_veths = HashSet::new();
        let mut owned_netns = HashSet::new();
        for ep in store::endpoints(&self.pool).await? {
            let net = nets.iter().find(|n| n.id == ep.network_id);
            if !ep.netns_path.is_empty() && !kernel::is_netns(Path::new(&ep.netns_path)) {
                tracing::info!(container = %ep.container_id, netns = %ep.netns_path,
                    "netns gone: releasing endpoint");
                self.release(&ep).await;
                continue;
            }
            owned_veths.insert(ep.host_veth.clone());
            owned_netns.insert(ep.netns_path.clone());
            if let Some(net) = net
                && let Err(e) = self.ensure_plumbing(&ep, net, Some(br_idx)).await
            {
                tracing::warn!(container = %ep.container_id, "repairing endpoint failed: {e}");
            }
        }
        for (_, name, ctl) in self.nl.links().await? {
            if ctl == Some(br_idx)
                && names::is_host_veth_name(&name)
                && !owned_veths.contains(&name)
            {
                tracing::info!(veth = %name, "deleting veth no endpoint owns");
                self.nl.delete_link(&name).await?;
            }
        }
        let dir = self.roots.run_root.join("netns");
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let p = e.path();
                if !owned_netns.contains(p.to_string_lossy().as_ref()) {
                    tracing::info!(netns = %p.display(), "deleting netns no endpoint owns");
                    kernel::remove_netns(&p)?;
                }
            }
        }
        Ok(())
    }

    /// Makes the kernel side of `ep` complete: namespace, and for bridge endpoints the
    /// veth attached to the bridge with eth0 configured. Existing pieces are kept as they
    /// are (a running container's interface is never recreated).
    async fn ensure_plumbing(
        &self,
        ep: &EndpointRow,
        net: &NetworkRow,
        br_idx: Option<u32>,
    ) -> Result<()> {
        if net.driver == DRIVER_HOST {
            return Ok(());
        }
        let ns = Path::new(&ep.netns_path);
        kernel::create_netns(ns).await?;
        if net.driver == DRIVER_NULL {
            return Netlink::in_netns(ns).await?.lo_up().await;
        }
        let addr = net.addressing()?;
        let br_idx = match br_idx {
            Some(i) => i,
            None => {
                self.nl
                    .ensure_bridge(&net.bridge, addr.gateway_net())
                    .await?
            }
        };
        if let Some(link) = self.nl.link(&ep.host_veth).await? {
            let attached = link.attributes.iter().any(|a| {
                matches!(a, netlink_packet_route::link::LinkAttribute::Controller(c) if *c == br_idx)
            });
            if !attached {
                self.nl
                    .attach(link.header.index, br_idx, &ep.host_veth)
                    .await?;
            }
            return Ok(());
        }
        let ip = ep
            .ipv4()?
            .ok_or_else(|| NetError::Corrupt(format!("endpoint {} has no ip", ep.container_id)))?;
        let plan = VethPlan {
            host: ep.host_veth.clone(),
            peer: names::peer_veth_name(&ep.container_id),
            bridge_index: br_idx,
            netns: ns.to_path_buf(),
            mac: names::mac_for_ip(ip),
            ip,
            prefix_len: addr.subnet.prefix_len(),
            gateway: addr.gateway,
        };
        if let Err(e) = self.nl.plumb_veth(&plan).await {
            let _ = self.nl.delete_link(&plan.host).await;
            let _ = self.nl.delete_link(&plan.peer).await;
            return Err(e);
        }
        Ok(())
    }

    /// Removes every kernel object of `ep` and its record; best effort, logged.
    async fn release(&self, ep: &EndpointRow) {
        if !ep.host_veth.is_empty()
            && let Err(e) = self.nl.delete_link(&ep.host_veth).await
        {
            tracing::warn!(veth = %ep.host_veth, "deleting veth: {e}");
        }
        let peer = names::peer_veth_name(&ep.container_id);
        if let Err(e) = self.nl.delete_link(&peer).await {
            tracing::warn!(veth = %peer, "deleting veth: {e}");
        }
        if !ep.netns_path.is_empty()
            && let Err(e) = kernel::remove_netns(Path::new(&ep.netns_path))
        {
            tracing::warn!(netns = %ep.netns_path, "removing netns: {e}");
        }
        if let Err(e) = store::delete_endpoint(&self.pool, &ep.container_id).await {
            tracing::warn!(container = %ep.container_id, "deleting endpoint record: {e}");
        }
    }

    async fn network_for_endpoint(&self, network: &str) -> Result<NetworkRow> {
        let key = match network {
            "" | "default" => BRIDGE_NETWORK,
            other => other,
        };
        let rows = store::networks(&self.pool).await?;
        resolve_network(&rows, key).cloned().map_err(|e| match e {
            NetError::NotFound(_) => NetError::NotFound(format!("network {network} not found")),
            other => other,
        })
    }

    /// Creates (idempotently) the endpoint of `container_id` on `network`. On failure
    /// everything done so far is undone.
    #[tracing::instrument(name = "endpoint.create", skip_all, fields(container.id = container_id, network.name = network))]
    pub async fn create_endpoint(
        &self,
        container_id: &str,
        network: &str,
    ) -> Result<(EndpointRow, NetworkRow)> {
        names::validate_container_id(container_id)?;
        let net = self.network_for_endpoint(network).await?;
        let _g = self.ops.lock().await;
        if let Some(ep) = store::endpoint(&self.pool, container_id).await? {
            if ep.network_id != net.id {
                return Err(NetError::AlreadyExists(format!(
                    "container {container_id} already has an endpoint on another network"
                )));
            }
            self.ensure_plumbing(&ep, &net, None).await?;
            return Ok((ep, net));
        }
        let (host_veth, netns_path, addressing) = match net.driver.as_str() {
            DRIVER_HOST => (String::new(), String::new(), None),
            DRIVER_NULL => (
                String::new(),
                self.roots.netns_path(container_id).display().to_string(),
                None,
            ),
            _ => (
                names::host_veth_name(container_id),
                self.roots.netns_path(container_id).display().to_string(),
                Some(net.addressing()?),
            ),
        };
        let ep = store::reserve_endpoint(
            &self.pool,
            &store::NewEndpoint {
                container_id: container_id.to_string(),
                network_id: net.id.clone(),
                host_veth,
                netns_path,
                addressing,
            },
        )
        .await?;
        if let Err(e) = self.ensure_plumbing(&ep, &net, None).await {
            tracing::warn!(container = %container_id, "creating endpoint failed, undoing: {e}");
            self.release(&ep).await;
            return Err(e);
        }
        tracing::info!(container = %container_id, network = %net.name,
            ip = ep.ip.as_deref().unwrap_or(""), veth = %ep.host_veth, "endpoint created");
        Ok((ep, net))
    }

    /// Deletes the endpoint of `container_id`: veth, address, namespace, record. Missing
    /// is success; objects named after the container are removed even without a record.
    pub async fn remove_endpoint(&self, container_id: &str) -> Result<()> {
        names::validate_container_id(container_id)?;
        let _g = self.ops.lock().await;
        let ep = match store::endpoint(&self.pool, container_id).await? {
            Some(ep) => ep,
            None => EndpointRow {
                container_id: container_id.to_string(),
                network_id: String::new(),
                endpoint_id: String::new(),
                ip: None,
                prefix_len: 0,
                mac: String::new(),
                // Another container whose id shares the short prefix may own this name.
                host_veth: {
                    let name = names::host_veth_name(container_id);
                    let taken = store::endpoints(&self.pool)
                        .await?
                        .iter()
                        .any(|e| e.host_veth == name);
                    if taken { String::new() } else { name }
                },
                netns_path: self.roots.netns_path(container_id).display().to_string(),
                created: String::new(),
            },
        };
        if !ep.host_veth.is_empty() {
            self.nl.delete_link(&ep.host_veth).await?;
        }
        if !ep.netns_path.is_empty() {
            kernel::remove_netns(Path::new(&ep.netns_path))?;
        }
        store::delete_endpoint(&self.pool, container_id).await?;
        tracing::info!(container = %container_id, "endpoint removed");
        Ok(())
    }

    /// The endpoint of `container_id` with its network.
    pub async fn get_endpoint(&self, container_id: &str) -> Result<(EndpointRow, NetworkRow)> {
        let ep = store::endpoint(&self.pool, container_id)
            .await?
            .ok_or_else(|| {
                NetError::NotFound(format!("no endpoint for container {container_id}"))
            })?;
        let net = self.network_by_id(&ep.network_id).await?;
        Ok((ep, net))
    }

    async fn network_by_id(&self, id: &str) -> Result<NetworkRow> {
        store::networks(&self.pool)
            .await?
            .into_iter()
            .find(|n| n.id == id)
            .ok_or_else(|| NetError::Corrupt(format!("endpoint refers to unknown network {id}")))
    }

    /// Every network.
    pub async fn list_networks(&self) -> Result<Vec<NetworkRow>> {
        store::networks(&self.pool).await
    }

    /// A network by name, full id or unique id prefix.
    pub async fn get_network(&self, key: &str) -> Result<NetworkRow> {
        let rows = store::networks(&self.pool).await?;
        resolve_network(&rows, key).cloned()
    }

    /// Endpoints, optionally of one network only.
    pub async fn list_endpoints(&self, network: &str) -> Result<Vec<(EndpointRow, NetworkRow)>> {
        let rows = store::networks(&self.pool).await?;
        let only = if network.is_empty() {
            None
        } else {
            Some(resolve_network(&rows, network)?.id.clone())
        };
        Ok(store::endpoints(&self.pool)
            .await?
            .into_iter()
            .filter(|ep| only.as_ref().is_none_or(|id| *id == ep.network_id))
            .filter_map(|ep| {
                let net = rows.iter().find(|n| n.id == ep.network_id)?.clone();
                Some((ep, net))
            })
            .collect())
    }

    /// Deletes every kernel object of this instance: endpoints' veths and namespaces,
    /// the bridge and the nft table. Records of networks are kept; endpoint records go.
    pub async fn teardown(&self) -> Result<()> {
        let _g = self.ops.lock().await;
        for ep in store::endpoints(&self.pool).await? {
            self.release(&ep).await;
        }
        let dir = self.roots.run_root.join("netns");
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                kernel::remove_netns(&e.path())?;
            }
        }
        let mut bridges = vec![self.wanted_bridge()];
        if let Some(row) = store::network_by_name(&self.pool, BRIDGE_NETWORK).await?
            && !bridges.contains(&row.bridge)
        {
            bridges.push(row.bridge);
        }
        for br in &bridges {
            if let Some(idx) = self.nl.link_index(br).await? {
                for (_, name, ctl) in self.nl.links().await? {
                    if ctl == Some(idx) && names::is_host_veth_name(&name) {
                        self.nl.delete_link(&name).await?;
                    }
                }
                self.nl.delete_link(br).await?;
                tracing::info!(bridge = %br, "bridge deleted");
            }
        }
        nft::apply(&nft::delete_table(&self.table)).await?;
        tracing::info!(table = %self.table, "nft table deleted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, name: &str) -> NetworkRow {
        let mut r = new_network(name, DRIVER_BRIDGE, None, "");
        r.id = id.into();
        r
    }

    #[test]
    fn networks_resolve_by_name_id_and_unique_prefix() {
        let rows = vec![
            row("abc111", "bridge"),
            row("abc222", "host"),
            row("def333", "none"),
        ];
        assert_eq!(resolve_network(&rows, "host").unwrap().id, "abc222");
        assert_eq!(resolve_network(&rows, "def333").unwrap().name, "none");
        assert_eq!(resolve_network(&rows, "abc1").unwrap().name, "bridge");
        assert!(matches!(
            resolve_network(&rows, "abc"),
            Err(NetError::InvalidArgument(_))
        ));
        let e = resolve_network(&rows, "zzz").unwrap_err();
        assert_eq!(e.to_string(), "network zzz not found");
        assert!(matches!(
            resolve_network(&rows, ""),
            Err(NetError::NotFound(_))
        ));
    }

    #[test]
    fn bridge_names_are_checked() {
        assert!(validate_bridge_name("berth0").is_ok());
        assert!(validate_bridge_name("").is_err());
        assert!(validate_bridge_name("a-very-long-bridge").is_err());
    }
}
