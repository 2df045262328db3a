//! The netd core: startup reconciliation, endpoints, network lookups and teardown.

use crate::error::{NetError, Result};
use crate::ipam::{self, Addressing};
use crate::kernel::{self, Netlink, VethPlan};
use crate::names;
use crate::nft::{self, BridgeRules, PortRule};
use crate::store::{self, DRIVER_BRIDGE, DRIVER_HOST, DRIVER_NULL, EndpointRow, NetworkRow};
use berth_kit::Roots;
use sqlx::SqlitePool;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

/// The name of Docker's default bridge network.
pub const BRIDGE_NETWORK: &str = "bridge";

/// What netd is configured with besides its roots.
#[derive(Debug, Clone)]
pub struct NetdConfig {
    /// The default bridge's kernel name override (`-b`).
    pub bridge_override: Option<String>,
    /// Where user-defined networks without `--subnet` get theirs.
    pub address_pools: Vec<ipam::AddressPool>,
    /// Upstream resolvers for the embedded DNS (daemon.json `dns`); empty = the host's.
    pub dns_upstreams: Vec<std::net::SocketAddr>,
}

impl Default for NetdConfig {
    fn default() -> Self {
        Self {
            bridge_override: None,
            address_pools: ipam::default_pools(),
            dns_upstreams: Vec::new(),
        }
    }
}

/// The netd service state. Kernel-changing operations are serialised by `ops`, which
/// keeps undo-on-failure simple (no other create can interleave with a rollback).
pub struct Netd {
    pool: SqlitePool,
    roots: Roots,
    table: String,
    config: NetdConfig,
    port_range: (u16, u16),
    nl: Netlink,
    dns: crate::dns::Dns,
    ops: Arc<tokio::sync::Mutex<()>>,
}

/// How long a removed namespace's veths get to vanish with it before netd deletes them.
const LINK_REAP_DELAY: std::time::Duration = std::time::Duration::from_secs(2);

/// What a container asks of its endpoint on one network.
#[derive(Debug, Clone, Default)]
pub struct EndpointRequest {
    pub container_id: String,
    pub network: String,
    pub container_name: String,
    pub aliases: Vec<String>,
    pub ipv4_address: String,
    pub ports: Vec<store::PortRequest>,
    pub dns_servers: Vec<String>,
    /// `--mac-address`; empty = derived from the IP.
    pub mac_address: String,
    /// The EndpointSettings JSON the client gave.
    pub settings_json: String,
}

/// What `docker network create` asks for.
#[derive(Debug, Clone, Default)]
pub struct NetworkRequest {
    pub name: String,
    pub driver: String,
    pub subnet: String,
    pub gateway: String,
    pub ip_range: String,
    pub internal: bool,
    pub labels: std::collections::HashMap<String, String>,
    pub options: std::collections::HashMap<String, String>,
    /// The IPAM object as given (JSON).
    pub ipam_json: String,
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

/// Linux's rule for interface names (`dev_valid_name`): 1-15 bytes, not `.` or `..`, no
/// `/`, `:` or white space; Berth also keeps to printable ASCII, as the name reaches
/// nftables rules and iptables arguments.
fn validate_bridge_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= names::IFNAMSIZ_MAX
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if ok {
        Ok(())
    } else {
        Err(NetError::InvalidArgument(format!(
            "invalid bridge name {name:?}: 1-15 printable characters, not . or .., no '/', ':' or spaces"
        )))
    }
}

/// The `IPAMConfig.LinkLocalIPs` of an endpoint's settings as given: IPv4 link-local
/// addresses only (IPv6 is not supported yet).
pub fn link_local_ips(settings_json: &str) -> Result<Vec<Ipv4Addr>> {
    let v: serde_json::Value = serde_json::from_str(settings_json).unwrap_or_default();
    let Some(list) = v
        .pointer("/IPAMConfig/LinkLocalIPs")
        .and_then(serde_json::Value::as_array)
    else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|x| {
            let text = x.as_str().unwrap_or_default();
            match text.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) if ip.is_link_local() => Ok(ip),
                Ok(IpAddr::V6(_)) => Err(NetError::Unimplemented(
                    "IPv6 link-local addresses (--link-local-ip) are not supported yet".into(),
                )),
                _ => Err(NetError::InvalidArgument(format!(
                    "invalid link-local IP address: {text}"
                ))),
            }
        })
        .collect()
}

/// dockerd takes any name ("test 01" included): only an empty one, or one with control
/// characters (which would corrupt listings and logs), is refused.
fn validate_network_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.chars().any(char::is_control) || name.len() > 255 {
        return Err(NetError::InvalidArgument(format!(
            "invalid network name {name:?}"
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
        ip_range: addr
            .and_then(|a| a.ip_range)
            .map(|r| r.to_string())
            .unwrap_or_default(),
        options: "{}".to_string(),
        ipam: String::new(),
    }
}

/// The kernel's ephemeral port range, where Docker takes `-P` ports from.
fn ephemeral_port_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .filter(|(lo, hi)| lo <= hi && *lo > 0)
        .unwrap_or((32768, 60999))
}

impl Netd {
    /// Connects to the kernel; nothing is changed until [`Netd::reconcile`].
    pub fn new(pool: SqlitePool, roots: Roots, config: NetdConfig) -> Result<Self> {
        if let Some(b) = &config.bridge_override {
            validate_bridge_name(b)?;
        }
        let dns = crate::dns::Dns::new(pool.clone(), config.dns_upstreams.clone());
        Ok(Self {
            table: roots.nft_table(),
            pool,
            roots,
            config,
            port_range: ephemeral_port_range(),
            nl: Netlink::host()?,
            dns,
            ops: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    fn wanted_bridge(&self) -> String {
        self.config
            .bridge_override
            .clone()
            .unwrap_or_else(|| self.roots.bridge_name())
    }

    /// Brings the kernel in line with the records before serving: the three Docker
    /// networks exist, every bridge has its address and is up, forwarding is on, the nft
    /// table is rebuilt, endpoints are checked and DNS servers started. Running
    /// containers are not touched: only missing pieces are added and unowned ones removed.
    pub async fn reconcile(&self, bip: Option<&str>) -> Result<()> {
        let _g = self.ops.lock().await;
        let bridge_net = self.ensure_networks(bip).await?;
        let mut bridges = HashMap::new();
        for net in store::networks(&self.pool).await? {
            if net.driver == DRIVER_BRIDGE {
                let idx = self.ensure_bridge(&net).await?;
                bridges.insert(net.id.clone(), idx);
            }
        }
        kernel::enable_ip_forward().await?;
        self.reconcile_endpoints(&bridges).await?;
        self.apply_rules().await?;
        self.dns.reconcile().await;
        let addr = bridge_net.addressing()?;
        tracing::info!(
            bridge = %bridge_net.bridge,
            subnet = %addr.subnet,
            gateway = %addr.gateway,
            table = %self.table,
            "network state reconciled"
        );
        Ok(())
    }

    async fn ensure_bridge(&self, net: &NetworkRow) -> Result<u32> {
        let addr = net.addressing()?;
        let idx = self
            .nl
            .ensure_bridge(&net.bridge, addr.gateway_net())
            .await?;
        kernel::enable_route_localnet(&net.bridge).await?;
        Ok(idx)
    }

    /// Whether the container publishes ports (on `network_id`, or on any network).
    async fn publishes(&self, container_id: &str, network_id: Option<&str>) -> Result<bool> {
        Ok(store::ports(&self.pool).await?.iter().any(|p| {
            p.container_id == container_id && network_id.is_none_or(|n| p.network_id == n)
        }))
    }

    /// Rebuilds the nft table from the records (bridges, published ports).
    async fn apply_rules(&self) -> Result<()> {
        let nets = store::networks(&self.pool).await?;
        let bridges: Vec<BridgeRules> = nets
            .iter()
            .filter(|n| n.driver == DRIVER_BRIDGE)
            .map(|n| {
                Ok(BridgeRules {
                    bridge: n.bridge.clone(),
                    subnet: n.addressing()?.subnet,
                    internal: n.internal,
                })
            })
            .collect::<Result<_>>()?;
        let eps = store::endpoints(&self.pool).await?;
        let mut ports = Vec::new();
        for p in store::ports(&self.pool).await? {
            let Some(ip) = eps
                .iter()
                .find(|e| e.container_id == p.container_id && e.network_id == p.network_id)
                .and_then(|e| e.ipv4().ok().flatten())
            else {
                continue;
            };
            ports.push(PortRule {
                protocol: p.protocol.clone(),
                host_ip: p.host_ip.parse().ok(),
                host_port: u16::try_from(p.host_port).unwrap_or(0),
                container_ip: ip,
                container_port: u16::try_from(p.container_port).unwrap_or(0),
            });
        }
        nft::apply(&nft::ruleset(&self.table, &bridges, &ports)?).await?;
        let names: Vec<String> = bridges.iter().map(|b| b.bridge.clone()).collect();
        crate::iptables::ensure(&crate::iptables::chain_name(&self.table), &names).await;
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

    async fn reconcile_endpoints(&self, bridges: &HashMap<String, u32>) -> Result<()> {
        let nets = store::networks(&self.pool).await?;
        let mut owned_veths = HashSet::new();
        let mut owned_netns = HashSet::new();
        for sb in store::sandboxes(&self.pool).await? {
            if !kernel::is_netns(Path::new(&sb.netns_path)) {
                tracing::info!(container = %sb.container_id, netns = %sb.netns_path,
                    "netns gone: releasing the container's endpoints");
                self.release_container(&sb.container_id).await;
                continue;
            }
            owned_netns.insert(sb.netns_path.clone());
        }
        for ep in store::endpoints(&self.pool).await? {
            owned_veths.insert(ep.host_veth.clone());
            let Some(net) = nets.iter().find(|n| n.id == ep.network_id) else {
                continue;
            };
            if let Err(e) = self
                .ensure_plumbing(&ep, net, bridges.get(&net.id).copied())
                .await
            {
                tracing::warn!(container = %ep.container_id, "repairing endpoint failed: {e}");
            }
        }
        let bridge_indices: HashSet<u32> = bridges.values().copied().collect();
        for (_, name, ctl) in self.nl.links().await? {
            if ctl.is_some_and(|c| bridge_indices.contains(&c))
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
                    tracing::info!(netns = %p.display(), "deleting netns no container owns");
                    kernel::remove_netns(&p)?;
                }
            }
        }
        Ok(())
    }

    /// Makes the kernel side of `ep` complete: namespace, and for bridge endpoints the
    /// veth attached to the bridge with its interface configured. Existing pieces are
    /// kept as they are (a running container's interface is never recreated).
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
            None => self.ensure_bridge(net).await?,
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
        let index = names::ifname_index(&ep.ifname).unwrap_or(0);
        let plan = VethPlan {
            host: ep.host_veth.clone(),
            peer: names::peer_veth_name(&ep.container_id, index),
            bridge_index: br_idx,
            netns: ns.to_path_buf(),
            mac: names::parse_mac(&ep.mac).unwrap_or_else(|| names::mac_for_ip(ip)),
            ip,
            prefix_len: addr.subnet.prefix_len(),
            gateway: addr.gateway,
            ifname: ep.ifname.clone(),
            // Internal networks lead nowhere: no default route through them (as Docker).
            default_route: index == 0 && !net.internal,
            link_local: link_local_ips(&ep.settings)?,
        };
        if let Err(e) = self.nl.plumb_veth(&plan).await {
            let _ = self.nl.delete_link(&plan.host).await;
            let _ = self.nl.delete_link(&plan.peer).await;
            return Err(e);
        }
        Ok(())
    }

    /// Removes the kernel objects of one endpoint and its record; best effort, logged.
    async fn release_endpoint(&self, ep: &EndpointRow) {
        if !ep.host_veth.is_empty() {
            if let Err(e) = self.nl.delete_link(&ep.host_veth).await {
                tracing::warn!(veth = %ep.host_veth, "deleting veth: {e}");
            }
            let index = names::ifname_index(&ep.ifname).unwrap_or(0);
            let peer = names::peer_veth_name(&ep.container_id, index);
            if let Err(e) = self.nl.delete_link(&peer).await {
                tracing::warn!(veth = %peer, "deleting veth: {e}");
            }
        }
        if let Err(e) = store::delete_endpoint(&self.pool, &ep.container_id, &ep.network_id).await {
            tracing::warn!(container = %ep.container_id, "deleting endpoint record: {e}");
        }
    }

    /// Removes everything of a container: endpoints, namespace, DNS server, records;
    /// best effort, logged.
    async fn release_container(&self, container_id: &str) {
        self.dns.stop(container_id);
        if let Ok(eps) = store::container_endpoints(&self.pool, container_id).await {
            for ep in eps {
                self.release_endpoint(&ep).await;
            }
        }
        if let Ok(Some(sb)) = store::sandbox(&self.pool, container_id).await
            && let Err(e) = kernel::remove_netns(Path::new(&sb.netns_path))
        {
            tracing::warn!(netns = %sb.netns_path, "removing netns: {e}");
        }
        if let Err(e) = store::delete_sandbox(&self.pool, container_id).await {
            tracing::warn!(container = %container_id, "deleting sandbox record: {e}");
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

    /// Creates (idempotently) the endpoint of a container on a network: its namespace
    /// when it is the first, an interface, an address, published ports and DNS. On
    /// failure everything done for this endpoint is undone.
    #[tracing::instrument(name = "endpoint.create", skip_all, fields(container.id = %req.container_id, network.name = %req.network))]
    pub async fn create_endpoint(
        &self,
        req: &EndpointRequest,
    ) -> Result<(EndpointRow, NetworkRow)> {
        let container_id = req.container_id.as_str();
        names::validate_container_id(container_id)?;
        let net = self.network_for_endpoint(&req.network).await?;
        let requested_ip = if req.ipv4_address.is_empty() {
            None
        } else {
            Some(req.ipv4_address.parse().map_err(|_| {
                NetError::InvalidArgument(format!("invalid IPv4 address: {}", req.ipv4_address))
            })?)
        };
        // Checked before anything is reserved: a bad request changes nothing.
        link_local_ips(&req.settings_json)?;
        let requested_mac = if req.mac_address.is_empty() {
            None
        } else {
            // Docker's wording.
            Some(names::parse_mac(&req.mac_address).ok_or_else(|| {
                NetError::InvalidArgument(format!("invalid MAC address: {}", req.mac_address))
            })?)
        };
        if requested_ip.is_some() && !net.is_user_defined_bridge() {
            return Err(NetError::InvalidArgument(
                "user specified IP address is supported on user defined networks only".into(),
            ));
        }
        let _g = self.ops.lock().await;
        if let Some(ep) = store::endpoint(&self.pool, container_id, &net.id).await? {
            self.ensure_plumbing(&ep, &net, None).await?;
            return Ok((ep, net));
        }
        let existing = store::container_endpoints(&self.pool, container_id).await?;
        if !existing.is_empty() {
            let nets = store::networks(&self.pool).await?;
            let driver_of = |id: &str| {
                nets.iter()
                    .find(|n| n.id == id)
                    .map(|n| n.driver.clone())
                    .unwrap_or_default()
            };
            let has = |driver: &str| existing.iter().any(|e| driver_of(&e.network_id) == driver);
            if net.driver == DRIVER_HOST || has(DRIVER_HOST) {
                return Err(NetError::Forbidden(
                    "container sharing network namespace with host cannot be connected to network"
                        .into(),
                ));
            }
            if net.driver == DRIVER_NULL || has(DRIVER_NULL) {
                return Err(NetError::Forbidden(
                    "container cannot be connected to multiple networks with one of the networks in private (none) mode"
                        .into(),
                ));
            }
        }
        let (netns_path, addressing) = match net.driver.as_str() {
            DRIVER_HOST => (String::new(), None),
            DRIVER_NULL => (
                self.roots.netns_path(container_id).display().to_string(),
                None,
            ),
            _ => (
                self.roots.netns_path(container_id).display().to_string(),
                Some(net.addressing()?),
            ),
        };
        let ep = store::reserve_endpoint(
            &self.pool,
            &store::NewEndpoint {
                container_id: container_id.to_string(),
                container_name: req.container_name.clone(),
                network_id: net.id.clone(),
                netns_path,
                addressing,
                requested_ip,
                aliases: req.aliases.clone(),
                dns_servers: req.dns_servers.clone(),
                ports: if net.driver == DRIVER_BRIDGE {
                    req.ports.clone()
                } else {
                    Vec::new()
                },
                port_range: self.port_range,
                mac: requested_mac,
                settings: req.settings_json.clone(),
                reserved: ipam::auxiliary_addresses(&net.ipam),
            },
        )
        .await?;
        let first = existing.is_empty();
        let done = async {
            self.ensure_plumbing(&ep, &net, None).await?;
            // The table depends on bridges and published ports only.
            if self.publishes(container_id, Some(&net.id)).await? {
                self.apply_rules().await?;
            }
            self.dns.refresh().await?;
            if net.is_user_defined_bridge() {
                self.dns.ensure_server(container_id).await?;
            }
            Ok::<_, NetError>(())
        }
        .await;
        if let Err(e) = done {
            tracing::warn!(container = %container_id, "creating endpoint failed, undoing: {e}");
            if first {
                self.release_container(container_id).await;
            } else {
                self.release_endpoint(&ep).await;
            }
            if let Err(e2) = self.apply_rules().await {
                tracing::warn!("restoring nft rules after a failed endpoint: {e2}");
            }
            let _ = self.dns.refresh().await;
            return Err(e);
        }
        tracing::info!(container = %container_id, network = %net.name,
            ip = ep.ip.as_deref().unwrap_or(""), veth = %ep.host_veth, "endpoint created");
        Ok((ep, net))
    }

    /// Deletes the endpoint of `container_id` on `network` (docker network disconnect),
    /// or with an empty `network` every endpoint and the namespace (container removal).
    /// Missing is success; objects named after the container are removed even without
    /// a record.
    /// `docker rename`: the embedded DNS answers to the new name only.
    pub async fn rename_container(&self, container_id: &str, name: &str) -> Result<()> {
        let _ops = self.ops.lock().await;
        store::rename_sandbox(&self.pool, container_id, name).await?;
        self.dns.refresh().await
    }

    pub async fn remove_endpoint(&self, container_id: &str, network: &str) -> Result<()> {
        names::validate_container_id(container_id)?;
        let _g = self.ops.lock().await;
        if !network.is_empty() {
            let net = self.network_for_endpoint(network).await?;
            let Some(ep) = store::endpoint(&self.pool, container_id, &net.id).await? else {
                return Err(NetError::Forbidden(format!(
                    "container {container_id} is not connected to network {}",
                    net.name
                )));
            };
            if net.driver == DRIVER_HOST {
                return Err(NetError::Forbidden(
                    "container cannot be disconnected from host network or connected to host network".into(),
                ));
            }
            if !ep.host_veth.is_empty() {
                self.nl.delete_link(&ep.host_veth).await?;
            }
            let had_ports = self.publishes(container_id, Some(&net.id)).await?;
            store::delete_endpoint(&self.pool, container_id, &net.id).await?;
            if had_ports {
                self.apply_rules().await?;
            }
            self.dns.refresh().await?;
            tracing::info!(container = %container_id, network = %net.name, "endpoint removed");
            return Ok(());
        }
        let eps = store::container_endpoints(&self.pool, container_id).await?;
        let all = store::endpoints(&self.pool).await?;
        self.dns.stop(container_id);
        // Another container whose id shares the short prefix may own this name.
        let guessed = names::host_veth_name(container_id, 0);
        let mut veths: Vec<String> = eps.iter().map(|e| e.host_veth.clone()).collect();
        if eps.is_empty() && !all.iter().any(|e| e.host_veth == guessed) {
            veths.push(guessed);
        }
        let netns = match store::sandbox(&self.pool, container_id).await? {
            Some(sb) => sb.netns_path,
            None => self.roots.netns_path(container_id).display().to_string(),
        };
        let had_netns = kernel::is_netns(Path::new(&netns));
        kernel::remove_netns(Path::new(&netns))?;
        veths.retain(|v| !v.is_empty());
        if had_netns {
            // The kernel takes each pair down with the namespace, off our caller's path
            // (deleting a link here waits for an RCU grace period: ~20 ms a link).
            self.delete_links_later(veths);
        } else {
            for v in &veths {
                self.nl.delete_link(v).await?;
            }
        }
        let had_ports = self.publishes(container_id, None).await?;
        store::delete_sandbox(&self.pool, container_id).await?;
        if had_ports {
            self.apply_rules().await?;
        }
        if !eps.is_empty() {
            self.dns.refresh().await?;
        }
        tracing::info!(container = %container_id, "endpoints removed");
        Ok(())
    }

    /// Deletes, a moment from now, whichever of `veths` is still there and owned by no
    /// endpoint: a namespace kept alive by something else would keep its pair.
    fn delete_links_later(&self, veths: Vec<String>) {
        if veths.is_empty() {
            return;
        }
        let handle = self.nl.handle();
        let pool = self.pool.clone();
        let ops = self.ops.clone();
        tokio::spawn(async move {
            tokio::time::sleep(LINK_REAP_DELAY).await;
            let _g = ops.lock().await;
            let owned: Vec<String> = match store::endpoints(&pool).await {
                Ok(all) => all.into_iter().map(|e| e.host_veth).collect(),
                Err(e) => {
                    tracing::warn!("listing endpoints before deleting veths: {e}");
                    return;
                }
            };
            for v in veths.iter().filter(|v| !owned.contains(v)) {
                match kernel::delete_link_via(&handle, v).await {
                    Ok(true) => tracing::info!(veth = %v, "deleted a veth its namespace kept"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(veth = %v, "deleting veth: {e}"),
                }
            }
        });
    }

    /// The container's first endpoint (eth0, or its only one) with its network.
    pub async fn get_endpoint(&self, container_id: &str) -> Result<(EndpointRow, NetworkRow)> {
        let ep = store::container_endpoints(&self.pool, container_id)
            .await?
            .into_iter()
            .next()
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

    /// Endpoints, optionally of one network and/or one container only, with their
    /// networks, sandboxes' names and published ports.
    pub async fn list_endpoints(
        &self,
        network: &str,
        container_id: &str,
    ) -> Result<Vec<EndpointView>> {
        let rows = store::networks(&self.pool).await?;
        let only = if network.is_empty() {
            None
        } else {
            Some(resolve_network(&rows, network)?.id.clone())
        };
        let sandboxes = store::sandboxes(&self.pool).await?;
        let ports = store::ports(&self.pool).await?;
        Ok(store::endpoints(&self.pool)
            .await?
            .into_iter()
            .filter(|ep| only.as_ref().is_none_or(|id| *id == ep.network_id))
            .filter(|ep| container_id.is_empty() || ep.container_id == container_id)
            .filter_map(|ep| {
                let net = rows.iter().find(|n| n.id == ep.network_id)?.clone();
                let name = sandboxes
                    .iter()
                    .find(|s| s.container_id == ep.container_id)
                    .map(|s| s.container_name.clone())
                    .unwrap_or_default();
                let ports = ports
                    .iter()
                    .filter(|p| p.container_id == ep.container_id && p.network_id == ep.network_id)
                    .cloned()
                    .collect();
                Some(EndpointView {
                    endpoint: ep,
                    network: net,
                    container_name: name,
                    ports,
                })
            })
            .collect())
    }

    /// The endpoint view of one container on one network.
    pub async fn endpoint_view(
        &self,
        container_id: &str,
        network_id: &str,
    ) -> Result<EndpointView> {
        self.list_endpoints(network_id, container_id)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| NetError::NotFound(format!("no endpoint for container {container_id}")))
    }

    /// `docker network create`: a record, a bridge, rules. Undone on failure.
    pub async fn create_network(&self, req: &NetworkRequest) -> Result<NetworkRow> {
        validate_network_name(&req.name)?;
        if !matches!(req.driver.as_str(), "" | DRIVER_BRIDGE) {
            return Err(NetError::NotFound(format!(
                "could not find plugin {} in v1 plugin registry: plugin not found",
                req.driver
            )));
        }
        if matches!(req.name.as_str(), "bridge" | "host" | "none") {
            return Err(NetError::Forbidden(format!(
                "{} is a pre-defined network and cannot be created",
                req.name
            )));
        }
        let requested = if req.subnet.is_empty() {
            if !req.gateway.is_empty() || !req.ip_range.is_empty() {
                return Err(NetError::InvalidArgument(
                    "invalid pool request: a gateway or ip-range needs a subnet".into(),
                ));
            }
            None
        } else {
            Some(ipam::parse_user_addressing(
                &req.subnet,
                &req.gateway,
                &req.ip_range,
            )?)
        };
        let _g = self.ops.lock().await;
        let host_used = self.nl.used_networks().await?;
        let id = names::random_id();
        // Docker's option naming the kernel bridge; else br-<12 of id>.
        let bridge = match req.options.get("com.docker.network.bridge.name") {
            Some(b) => {
                validate_bridge_name(b)?;
                if self.nl.link_index(b).await?.is_some() {
                    return Err(NetError::AlreadyExists(format!(
                        "bridge {b} already exists on the host"
                    )));
                }
                b.clone()
            }
            None => names::user_bridge_name(&id),
        };
        let mut row = new_network(&req.name, DRIVER_BRIDGE, None, &bridge);
        row.id = id;
        row.internal = req.internal;
        row.labels = serde_json::to_string(&req.labels).unwrap_or_else(|_| "{}".into());
        row.options = serde_json::to_string(&req.options).unwrap_or_else(|_| "{}".into());
        row.ipam = req.ipam_json.clone();
        if let Some(a) = &requested {
            // Docker's wording for an auxiliary address outside the subnet.
            for aux in ipam::auxiliary_addresses(&row.ipam) {
                if !a.subnet.contains(&aux) {
                    return Err(NetError::InvalidArgument(format!(
                        "no matching subnet for aux-address {aux}"
                    )));
                }
            }
        }
        let pools = self.config.address_pools.clone();
        let row = store::create_network(&self.pool, row, |used| match requested {
            Some(a) => Ok(a),
            None => {
                let mut all = used.to_vec();
                all.extend(host_used.iter().copied());
                ipam::choose_from_pools(&pools, &all).ok_or_else(|| {
                    NetError::Forbidden(
                        "all predefined address pools have been fully subnetted".into(),
                    )
                })
            }
        })
        .await?;
        let done = async {
            self.ensure_bridge(&row).await?;
            self.apply_rules().await
        }
        .await;
        if let Err(e) = done {
            tracing::warn!(network = %row.name, "creating network failed, undoing: {e}");
            let _ = self.nl.delete_link(&row.bridge).await;
            let _ = store::delete_network(&self.pool, &row.id).await;
            let _ = self.apply_rules().await;
            return Err(e);
        }
        tracing::info!(network = %row.name, subnet = %row.subnet, bridge = %row.bridge, "network created");
        Ok(row)
    }

    /// `docker network rm`: refused while containers are attached.
    pub async fn remove_network(&self, key: &str) -> Result<()> {
        let _g = self.ops.lock().await;
        let rows = store::networks(&self.pool).await?;
        let net = resolve_network(&rows, key)?.clone();
        if matches!(net.name.as_str(), "bridge" | "host" | "none") {
            return Err(NetError::Forbidden(format!(
                "{} is a pre-defined network and cannot be removed",
                net.name
            )));
        }
        let users = store::container_ids_on(&self.pool, &net.id).await?;
        if !users.is_empty() {
            return Err(NetError::Forbidden(format!(
                "error while removing network: network {} id {} has active endpoints",
                net.name, net.id
            )));
        }
        // The bridge goes first: a crash after this leaves a record whose bridge the next
        // start recreates, never a bridge without a record.
        self.nl.delete_link(&net.bridge).await?;
        let users = store::delete_network(&self.pool, &net.id).await?;
        if !users.is_empty() {
            self.ensure_bridge(&net).await?;
            return Err(NetError::Forbidden(format!(
                "error while removing network: network {} id {} has active endpoints",
                net.name, net.id
            )));
        }
        self.apply_rules().await?;
        tracing::info!(network = %net.name, "network removed");
        Ok(())
    }

    /// Deletes every kernel object of this instance: endpoints' veths and namespaces,
    /// the bridges and the nft table. Network records are kept; endpoint records go.
    pub async fn teardown(&self) -> Result<()> {
        let _g = self.ops.lock().await;
        for sb in store::sandboxes(&self.pool).await? {
            self.release_container(&sb.container_id).await;
        }
        for ep in store::endpoints(&self.pool).await? {
            self.release_endpoint(&ep).await;
        }
        let dir = self.roots.run_root.join("netns");
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                kernel::remove_netns(&e.path())?;
            }
        }
        let mut bridges = vec![self.wanted_bridge()];
        for n in store::networks(&self.pool).await? {
            if n.driver == DRIVER_BRIDGE && !bridges.contains(&n.bridge) {
                bridges.push(n.bridge);
            }
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
        nft::apply(&nft::delete_table(&self.table)?).await?;
        crate::iptables::remove(&crate::iptables::chain_name(&self.table)).await;
        crate::iptables::remove_user(&crate::iptables::chain_name(&self.table)).await;
        tracing::info!(table = %self.table, "nft table and iptables chain deleted");
        Ok(())
    }
}

/// An endpoint with what the gateway shows next to it.
#[derive(Debug, Clone)]
pub struct EndpointView {
    pub endpoint: EndpointRow,
    pub network: NetworkRow,
    pub container_name: String,
    pub ports: Vec<store::PortRow>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_names_follow_linux_rules() {
        for good in ["berth0", "br-1.a_b", "x"] {
            assert!(validate_bridge_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "abcdefghijklmnop",
            "é",
        ] {
            assert!(validate_bridge_name(bad).is_err(), "{bad:?}");
        }
    }

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
