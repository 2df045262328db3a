//! netd's SQLite records: networks and endpoints. An endpoint row is also its IP
//! reservation, so allocating an address and recording the endpoint are one insert.

use crate::error::{NetError, Result};
use crate::ipam::{self, Addressing};
use crate::names;
use ipnet::Ipv4Net;
use sqlx::SqlitePool;
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// Embedded migrations of `netd/migrations`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Docker's driver names.
pub const DRIVER_BRIDGE: &str = "bridge";
pub const DRIVER_HOST: &str = "host";
pub const DRIVER_NULL: &str = "null";

/// A network record.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NetworkRow {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub subnet: String,
    pub gateway: String,
    pub bridge: String,
    pub created: String,
    pub labels: String,
    pub internal: bool,
    pub ip_range: String,
    pub options: String,
    /// The IPAM JSON the client gave ('' when none).
    pub ipam: String,
}

impl NetworkRow {
    /// The parsed subnet and gateway of a bridge network.
    pub fn addressing(&self) -> Result<Addressing> {
        let subnet = self.subnet.parse().map_err(|_| {
            NetError::Corrupt(format!("network {}: subnet {:?}", self.name, self.subnet))
        })?;
        let gateway = self.gateway.parse().map_err(|_| {
            NetError::Corrupt(format!("network {}: gateway {:?}", self.name, self.gateway))
        })?;
        let ip_range = if self.ip_range.is_empty() {
            None
        } else {
            Some(self.ip_range.parse().map_err(|_| {
                NetError::Corrupt(format!(
                    "network {}: ip range {:?}",
                    self.name, self.ip_range
                ))
            })?)
        };
        Ok(Addressing {
            subnet,
            gateway,
            ip_range,
        })
    }

    /// True for bridge networks other than the default one: they get DNS by name.
    pub fn is_user_defined_bridge(&self) -> bool {
        self.driver == DRIVER_BRIDGE && self.name != crate::service::BRIDGE_NETWORK
    }
}

/// An endpoint record: one container on one network.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EndpointRow {
    pub container_id: String,
    pub network_id: String,
    pub endpoint_id: String,
    pub ip: Option<String>,
    pub prefix_len: i64,
    pub mac: String,
    pub host_veth: String,
    pub netns_path: String,
    pub created: String,
    pub ifname: String,
    pub aliases: String,
    /// The EndpointSettings JSON the client gave ('' when none).
    pub settings: String,
}

impl EndpointRow {
    /// The parsed address, if the endpoint has one.
    pub fn ipv4(&self) -> Result<Option<Ipv4Addr>> {
        self.ip
            .as_deref()
            .map(|s| {
                s.parse().map_err(|_| {
                    NetError::Corrupt(format!("endpoint {}: ip {s:?}", self.container_id))
                })
            })
            .transpose()
    }

    /// The network-scoped aliases.
    pub fn alias_list(&self) -> Vec<String> {
        serde_json::from_str(&self.aliases).unwrap_or_default()
    }
}

/// A container's network namespace and what its DNS server needs.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SandboxRow {
    pub container_id: String,
    pub container_name: String,
    pub netns_path: String,
    pub dns_servers: String,
    pub created: String,
}

impl SandboxRow {
    /// The container's own upstream resolvers (`--dns`).
    pub fn dns_server_list(&self) -> Vec<String> {
        serde_json::from_str(&self.dns_servers).unwrap_or_default()
    }
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, sqlx::FromRow)]
pub struct PortRow {
    pub container_id: String,
    pub network_id: String,
    pub protocol: String,
    pub host_ip: String,
    pub host_port: i64,
    pub container_port: i64,
}

// Macros, not consts, so `concat!` keeps every query a static string (sqlx refuses
// formatted SQL).
macro_rules! network_columns {
    () => {
        "id, name, driver, subnet, gateway, bridge, created, labels, internal, ip_range, options, ipam"
    };
}
macro_rules! endpoint_columns {
    () => {
        "container_id, network_id, endpoint_id, ip, prefix_len, mac, host_veth, netns_path, created, ifname, aliases, settings"
    };
}

/// Every network, oldest first.
pub async fn networks(pool: &SqlitePool) -> Result<Vec<NetworkRow>> {
    Ok(sqlx::query_as::<_, NetworkRow>(concat!(
        "SELECT ",
        network_columns!(),
        " FROM networks ORDER BY created, name"
    ))
    .fetch_all(pool)
    .await?)
}

/// The network named `name`.
pub async fn network_by_name(pool: &SqlitePool, name: &str) -> Result<Option<NetworkRow>> {
    Ok(sqlx::query_as::<_, NetworkRow>(concat!(
        "SELECT ",
        network_columns!(),
        " FROM networks WHERE name = ?"
    ))
    .bind(name)
    .fetch_optional(pool)
    .await?)
}

/// Inserts a network unless one with that name exists already.
pub async fn insert_network_if_missing(pool: &SqlitePool, n: &NetworkRow) -> Result<()> {
    let mut conn = pool.acquire().await?;
    insert_network(&mut conn, n, true).await
}

async fn insert_network(
    conn: &mut sqlx::SqliteConnection,
    n: &NetworkRow,
    or_ignore: bool,
) -> Result<()> {
    let sql = if or_ignore {
        concat!(
            "INSERT OR IGNORE INTO networks (",
            network_columns!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
    } else {
        concat!(
            "INSERT INTO networks (",
            network_columns!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
    };
    let res = sqlx::query(sql)
        .bind(&n.id)
        .bind(&n.name)
        .bind(&n.driver)
        .bind(&n.subnet)
        .bind(&n.gateway)
        .bind(&n.bridge)
        .bind(&n.created)
        .bind(&n.labels)
        .bind(n.internal)
        .bind(&n.ip_range)
        .bind(&n.options)
        .bind(&n.ipam)
        .execute(&mut *conn)
        .await;
    match res {
        Ok(_) => Ok(()),
        Err(e) if berth_kit::db::is_unique_violation(&e) => Err(NetError::AlreadyExists(format!(
            "network with name {} already exists",
            n.name
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Records a user-defined network. In the same IMMEDIATE transaction: the name must be
/// free and the subnet must overlap no other network's (`pick` chooses one when the
/// request names none, given the subnets in use).
pub async fn create_network(
    pool: &SqlitePool,
    mut row: NetworkRow,
    pick: impl FnOnce(&[Ipv4Net]) -> Result<Addressing>,
) -> Result<NetworkRow> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let taken: Option<(String,)> = sqlx::query_as("SELECT id FROM networks WHERE name = ?")
        .bind(&row.name)
        .fetch_optional(&mut *tx)
        .await?;
    if taken.is_some() {
        return Err(NetError::AlreadyExists(format!(
            "network with name {} already exists",
            row.name
        )));
    }
    let subnets: Vec<(String,)> = sqlx::query_as("SELECT subnet FROM networks WHERE subnet != ''")
        .fetch_all(&mut *tx)
        .await?;
    let used: Vec<Ipv4Net> = subnets.iter().filter_map(|(s,)| s.parse().ok()).collect();
    let addr = pick(&used)?;
    if used.iter().any(|u| ipam::overlaps(u, &addr.subnet)) {
        return Err(NetError::Forbidden(format!(
            "invalid pool request: Pool overlaps with other one on this address space ({})",
            addr.subnet
        )));
    }
    row.subnet = addr.subnet.to_string();
    row.gateway = addr.gateway.to_string();
    row.ip_range = addr.ip_range.map(|r| r.to_string()).unwrap_or_default();
    insert_network(&mut tx, &row, false).await?;
    tx.commit().await?;
    Ok(row)
}

/// Deletes a network record only while no endpoint uses it (same transaction). Returns
/// the containers still attached when it refuses.
pub async fn delete_network(pool: &SqlitePool, id: &str) -> Result<Vec<String>> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let users: Vec<(String,)> =
        sqlx::query_as("SELECT container_id FROM endpoints WHERE network_id = ? ORDER BY created")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
    if !users.is_empty() {
        return Ok(users.into_iter().map(|(c,)| c).collect());
    }
    sqlx::query("DELETE FROM networks WHERE id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Vec::new())
}

/// Changes a bridge network's addressing and bridge name, only while no endpoint uses it
/// (checked in the same transaction). Returns false if endpoints exist.
pub async fn update_bridge_network(
    pool: &SqlitePool,
    id: &str,
    addr: &Addressing,
    bridge: &str,
) -> Result<bool> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM endpoints WHERE network_id = ?")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    if n > 0 {
        return Ok(false);
    }
    sqlx::query("UPDATE networks SET subnet = ?, gateway = ?, bridge = ? WHERE id = ?")
        .bind(addr.subnet.to_string())
        .bind(addr.gateway.to_string())
        .bind(bridge)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// The endpoint of `container_id` on `network_id`.
pub async fn endpoint(
    pool: &SqlitePool,
    container_id: &str,
    network_id: &str,
) -> Result<Option<EndpointRow>> {
    Ok(sqlx::query_as::<_, EndpointRow>(concat!(
        "SELECT ",
        endpoint_columns!(),
        " FROM endpoints WHERE container_id = ? AND network_id = ?"
    ))
    .bind(container_id)
    .bind(network_id)
    .fetch_optional(pool)
    .await?)
}

/// The endpoints of `container_id`, in interface order (eth0 first).
pub async fn container_endpoints(
    pool: &SqlitePool,
    container_id: &str,
) -> Result<Vec<EndpointRow>> {
    let mut rows = sqlx::query_as::<_, EndpointRow>(concat!(
        "SELECT ",
        endpoint_columns!(),
        " FROM endpoints WHERE container_id = ?"
    ))
    .bind(container_id)
    .fetch_all(pool)
    .await?;
    rows.sort_by_key(|e| names::ifname_index(&e.ifname).unwrap_or(u32::MAX));
    Ok(rows)
}

/// The containers with an endpoint on `network_id`.
pub async fn container_ids_on(pool: &SqlitePool, network_id: &str) -> Result<Vec<String>> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT container_id FROM endpoints WHERE network_id = ? ORDER BY created")
            .bind(network_id)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(|(c,)| c).collect())
}

/// Every endpoint.
pub async fn endpoints(pool: &SqlitePool) -> Result<Vec<EndpointRow>> {
    Ok(sqlx::query_as::<_, EndpointRow>(concat!(
        "SELECT ",
        endpoint_columns!(),
        " FROM endpoints ORDER BY created"
    ))
    .fetch_all(pool)
    .await?)
}

/// The sandbox of `container_id`.
pub async fn sandbox(pool: &SqlitePool, container_id: &str) -> Result<Option<SandboxRow>> {
    Ok(sqlx::query_as::<_, SandboxRow>(
        "SELECT container_id, container_name, netns_path, dns_servers, created FROM sandboxes WHERE container_id = ?",
    )
    .bind(container_id)
    .fetch_optional(pool)
    .await?)
}

/// Every sandbox.
pub async fn sandboxes(pool: &SqlitePool) -> Result<Vec<SandboxRow>> {
    Ok(sqlx::query_as::<_, SandboxRow>(
        "SELECT container_id, container_name, netns_path, dns_servers, created FROM sandboxes ORDER BY created",
    )
    .fetch_all(pool)
    .await?)
}

/// Every published port.
pub async fn ports(pool: &SqlitePool) -> Result<Vec<PortRow>> {
    Ok(sqlx::query_as::<_, PortRow>(
        "SELECT container_id, network_id, protocol, host_ip, host_port, container_port FROM ports ORDER BY container_id, container_port",
    )
    .fetch_all(pool)
    .await?)
}

/// A port to publish, before its host port is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRequest {
    pub protocol: String,
    pub container_port: u16,
    /// None = every host address.
    pub host_ip: Option<Ipv4Addr>,
    /// 0 = choose one from `port_range`.
    pub host_port: u16,
}

/// What a new endpoint needs before its address is known.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub container_id: String,
    pub container_name: String,
    pub network_id: String,
    /// Empty for --network host.
    pub netns_path: String,
    /// Some for bridge networks: allocate an address from it.
    pub addressing: Option<Addressing>,
    pub requested_ip: Option<Ipv4Addr>,
    pub aliases: Vec<String>,
    pub dns_servers: Vec<String>,
    pub ports: Vec<PortRequest>,
    /// Where host ports for `host_port = 0` come from.
    pub port_range: (u16, u16),
    /// A MAC address the client chose (else derived from the address).
    pub mac: Option<[u8; 6]>,
    /// The EndpointSettings JSON the client gave.
    pub settings: String,
    /// Addresses never to allocate (the network's auxiliary addresses).
    pub reserved: Vec<Ipv4Addr>,
}

/// True if a port published as (`a_ip`, `a_port`) clashes with (`b_ip`, `b_port`): same
/// port and either the same address or one of them on every address.
fn ports_clash(a_ip: &str, b_ip: &str) -> bool {
    a_ip.is_empty() || b_ip.is_empty() || a_ip == b_ip
}

/// Whether the host itself lets us have the port (nothing else listens on it).
fn host_port_free(protocol: &str, ip: Option<Ipv4Addr>, port: u16) -> bool {
    let addr = std::net::SocketAddrV4::new(ip.unwrap_or(Ipv4Addr::UNSPECIFIED), port);
    match protocol {
        "udp" => std::net::UdpSocket::bind(addr).is_ok(),
        "tcp" => std::net::TcpListener::bind(addr).is_ok(),
        _ => true,
    }
}

/// Records an endpoint (and the container's sandbox when it is the first), allocating
/// the address, the interface name and the published ports in the same IMMEDIATE
/// transaction, so concurrent creations never share an address or a host port.
pub async fn reserve_endpoint(pool: &SqlitePool, new: &NewEndpoint) -> Result<EndpointRow> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let exists: Option<(i64,)> =
        sqlx::query_as("SELECT 1 FROM endpoints WHERE container_id = ? AND network_id = ?")
            .bind(&new.container_id)
            .bind(&new.network_id)
            .fetch_optional(&mut *tx)
            .await?;
    if exists.is_some() {
        return Err(NetError::Forbidden(format!(
            "endpoint with name {} already exists in network {}",
            new.container_name, new.network_id
        )));
    }
    if !new.netns_path.is_empty() {
        sqlx::query(
            "INSERT OR IGNORE INTO sandboxes (container_id, container_name, netns_path, dns_servers, created)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&new.container_id)
        .bind(&new.container_name)
        .bind(&new.netns_path)
        .bind(serde_json::to_string(&new.dns_servers).unwrap_or_else(|_| "[]".into()))
        .bind(names::now_rfc3339())
        .execute(&mut *tx)
        .await?;
    }
    let (ip, prefix_len, mac, ifname, host_veth) = match &new.addressing {
        Some(addr) => {
            let rows: Vec<(String,)> =
                sqlx::query_as("SELECT ip FROM endpoints WHERE network_id = ? AND ip IS NOT NULL")
                    .bind(&new.network_id)
                    .fetch_all(&mut *tx)
                    .await?;
            let mut used: HashSet<Ipv4Addr> =
                rows.iter().filter_map(|(s,)| s.parse().ok()).collect();
            used.extend(new.reserved.iter().copied());
            let ip = match new.requested_ip {
                Some(ip) => {
                    ipam::check_requested(addr, ip)?;
                    if used.contains(&ip) {
                        return Err(NetError::Forbidden("Address already in use".into()));
                    }
                    ip
                }
                None => ipam::next_free(addr, &used).ok_or_else(|| {
                    NetError::FailedPrecondition(format!(
                        "no available IPv4 addresses on network {} ({})",
                        new.network_id, addr.subnet
                    ))
                })?,
            };
            let taken: Vec<(String,)> =
                sqlx::query_as("SELECT ifname FROM endpoints WHERE container_id = ?")
                    .bind(&new.container_id)
                    .fetch_all(&mut *tx)
                    .await?;
            let taken: HashSet<u32> = taken
                .iter()
                .filter_map(|(n,)| names::ifname_index(n))
                .collect();
            let index = (0u32..).find(|i| !taken.contains(i)).unwrap_or(0);
            let mac = names::format_mac(&new.mac.unwrap_or_else(|| names::mac_for_ip(ip)));
            (
                Some(ip.to_string()),
                i64::from(addr.subnet.prefix_len()),
                mac,
                format!("eth{index}"),
                names::host_veth_name(&new.container_id, index),
            )
        }
        None => (None, 0, String::new(), String::new(), String::new()),
    };
    let row = EndpointRow {
        container_id: new.container_id.clone(),
        network_id: new.network_id.clone(),
        endpoint_id: names::random_id(),
        ip,
        prefix_len,
        mac,
        host_veth,
        netns_path: new.netns_path.clone(),
        created: names::now_rfc3339(),
        ifname,
        aliases: serde_json::to_string(&new.aliases).unwrap_or_else(|_| "[]".into()),
        settings: new.settings.clone(),
    };
    let res = sqlx::query(concat!(
        "INSERT INTO endpoints (",
        endpoint_columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(&row.container_id)
    .bind(&row.network_id)
    .bind(&row.endpoint_id)
    .bind(&row.ip)
    .bind(row.prefix_len)
    .bind(&row.mac)
    .bind(&row.host_veth)
    .bind(&row.netns_path)
    .bind(&row.created)
    .bind(&row.ifname)
    .bind(&row.aliases)
    .bind(&row.settings)
    .execute(&mut *tx)
    .await;
    match res {
        Ok(_) => {}
        Err(e) if berth_kit::db::is_unique_violation(&e) => {
            return Err(NetError::AlreadyExists(format!(
                "container {} conflicts with an existing endpoint (same id or veth name {})",
                new.container_id, row.host_veth
            )));
        }
        Err(e) => return Err(e.into()),
    }
    if !new.ports.is_empty() {
        let existing: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT protocol, host_ip, host_port FROM ports")
                .fetch_all(&mut *tx)
                .await?;
        let mut taken: Vec<(String, String, i64)> = existing;
        for p in &new.ports {
            let ip_text = p.host_ip.map(|i| i.to_string()).unwrap_or_default();
            let clash = |port: u16, taken: &[(String, String, i64)]| {
                taken.iter().any(|(proto, ip, hp)| {
                    *proto == p.protocol && *hp == i64::from(port) && ports_clash(ip, &ip_text)
                })
            };
            let host_port = if p.host_port != 0 {
                if clash(p.host_port, &taken)
                    || !host_port_free(&p.protocol, p.host_ip, p.host_port)
                {
                    return Err(NetError::FailedPrecondition(format!(
                        "Bind for {}:{} failed: port is already allocated",
                        p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
                        p.host_port
                    )));
                }
                p.host_port
            } else {
                (new.port_range.0..=new.port_range.1)
                    .find(|port| {
                        !clash(*port, &taken) && host_port_free(&p.protocol, p.host_ip, *port)
                    })
                    .ok_or_else(|| {
                        NetError::FailedPrecondition(format!(
                            "Bind for {}:0 failed: no free port in {}-{}",
                            p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
                            new.port_range.0,
                            new.port_range.1
                        ))
                    })?
            };
            taken.push((p.protocol.clone(), ip_text.clone(), i64::from(host_port)));
            sqlx::query(
                "INSERT OR IGNORE INTO ports (container_id, network_id, protocol, host_ip, host_port, container_port)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&new.container_id)
            .bind(&new.network_id)
            .bind(&p.protocol)
            .bind(&ip_text)
            .bind(i64::from(host_port))
            .bind(i64::from(p.container_port))
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(row)
}

/// Deletes one endpoint record (releasing its address and ports). Missing is success.
pub async fn delete_endpoint(
    pool: &SqlitePool,
    container_id: &str,
    network_id: &str,
) -> Result<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query("DELETE FROM ports WHERE container_id = ? AND network_id = ?")
        .bind(container_id)
        .bind(network_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM endpoints WHERE container_id = ? AND network_id = ?")
        .bind(container_id)
        .bind(network_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A container's new name (`docker rename`): what its DNS answers to. Missing is success.
pub async fn rename_sandbox(pool: &SqlitePool, container_id: &str, name: &str) -> Result<()> {
    sqlx::query("UPDATE sandboxes SET container_name = ? WHERE container_id = ?")
        .bind(name)
        .bind(container_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes everything of a container: endpoints, ports, sandbox. Missing is success.
pub async fn delete_sandbox(pool: &SqlitePool, container_id: &str) -> Result<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    for sql in [
        "DELETE FROM ports WHERE container_id = ?",
        "DELETE FROM endpoints WHERE container_id = ?",
        "DELETE FROM sandboxes WHERE container_id = ?",
    ] {
        sqlx::query(sql)
            .bind(container_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pool() -> (tempfile::TempDir, SqlitePool) {
        let dir = tempfile::tempdir().unwrap();
        let pool = berth_kit::db::open(&dir.path().join("state.db"), &MIGRATOR)
            .await
            .unwrap();
        (dir, pool)
    }

    fn bridge_row(subnet: &str, gateway: &str) -> NetworkRow {
        NetworkRow {
            id: "n1".into(),
            name: "bridge".into(),
            driver: DRIVER_BRIDGE.into(),
            subnet: subnet.into(),
            gateway: gateway.into(),
            bridge: "bxtest".into(),
            created: crate::names::now_rfc3339(),
            labels: "{}".into(),
            internal: false,
            ip_range: String::new(),
            options: "{}".into(),
            ipam: String::new(),
        }
    }

    fn new_ep(id: &str, addr: Addressing) -> NewEndpoint {
        NewEndpoint {
            container_id: id.into(),
            container_name: String::new(),
            network_id: "n1".into(),
            netns_path: format!("/run/x/netns/{id}"),
            addressing: Some(addr),
            requested_ip: None,
            aliases: Vec::new(),
            dns_servers: Vec::new(),
            ports: Vec::new(),
            port_range: (40000, 40010),
            mac: None,
            settings: String::new(),
            reserved: Vec::new(),
        }
    }

    #[tokio::test]
    async fn reserved_addresses_and_a_chosen_mac() {
        let (_d, pool) = pool().await;
        let net = bridge_row("10.7.0.0/29", "10.7.0.1");
        insert_network_if_missing(&pool, &net).await.unwrap();
        let addr = net.addressing().unwrap();
        let mut ep = new_ep("c1", addr);
        ep.reserved = vec!["10.7.0.2".parse().unwrap()];
        ep.mac = Some([0x02, 0x42, 0xac, 0x11, 0x00, 0x0a]);
        ep.settings = r#"{"DriverOpts":{"a":"b"}}"#.into();
        let row = reserve_endpoint(&pool, &ep).await.unwrap();
        assert_eq!(row.ip.as_deref(), Some("10.7.0.3"));
        assert_eq!(row.mac, "02:42:ac:11:00:0a");
        let again = endpoint(&pool, "c1", "n1").await.unwrap().unwrap();
        assert_eq!(again.settings, r#"{"DriverOpts":{"a":"b"}}"#);
        let mut taken = new_ep("c2", addr);
        taken.reserved = vec!["10.7.0.2".parse().unwrap()];
        taken.requested_ip = Some("10.7.0.2".parse().unwrap());
        assert!(reserve_endpoint(&pool, &taken).await.is_err());
    }

    #[tokio::test]
    async fn ipam_allocates_releases_and_exhausts() {
        let (_d, pool) = pool().await;
        let net = bridge_row("10.7.0.0/29", "10.7.0.1");
        insert_network_if_missing(&pool, &net).await.unwrap();
        let addr = net.addressing().unwrap();
        let mut ips = Vec::new();
        for i in 0..5 {
            let ep = reserve_endpoint(&pool, &new_ep(&format!("c{i}"), addr))
                .await
                .unwrap();
            ips.push(ep.ip.clone().unwrap());
            assert_eq!(ep.prefix_len, 29);
            assert_eq!(
                ep.mac,
                crate::names::format_mac(&crate::names::mac_for_ip(
                    ep.ip.unwrap().parse().unwrap()
                ))
            );
        }
        assert_eq!(
            ips,
            ["10.7.0.2", "10.7.0.3", "10.7.0.4", "10.7.0.5", "10.7.0.6"]
        );
        let err = reserve_endpoint(&pool, &new_ep("c9", addr))
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::FailedPrecondition(_)), "{err}");
        delete_endpoint(&pool, "c2", "n1").await.unwrap();
        delete_endpoint(&pool, "c2", "n1").await.unwrap();
        let ep = reserve_endpoint(&pool, &new_ep("c9", addr)).await.unwrap();
        assert_eq!(ep.ip.as_deref(), Some("10.7.0.4"));
        // The same container twice is a conflict, not a second address.
        let err = reserve_endpoint(&pool, &new_ep("c9", addr))
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::Forbidden(_)), "{err}");
    }

    #[tokio::test]
    async fn second_networks_get_next_interfaces_and_requested_addresses() {
        let (_d, pool) = pool().await;
        let n1 = bridge_row("10.7.0.0/24", "10.7.0.1");
        let mut n2 = bridge_row("10.8.0.0/24", "10.8.0.1");
        n2.id = "n2".into();
        n2.name = "other".into();
        insert_network_if_missing(&pool, &n1).await.unwrap();
        insert_network_if_missing(&pool, &n2).await.unwrap();
        let a = reserve_endpoint(&pool, &new_ep("c1", n1.addressing().unwrap()))
            .await
            .unwrap();
        assert_eq!(a.ifname, "eth0");
        let mut second = new_ep("c1", n2.addressing().unwrap());
        second.network_id = "n2".into();
        second.requested_ip = Some("10.8.0.77".parse().unwrap());
        let b = reserve_endpoint(&pool, &second).await.unwrap();
        assert_eq!(b.ifname, "eth1");
        assert_eq!(b.ip.as_deref(), Some("10.8.0.77"));
        assert_ne!(a.host_veth, b.host_veth);
        // The requested address is taken now; the gateway never was available.
        let mut again = new_ep("c2", n2.addressing().unwrap());
        again.network_id = "n2".into();
        again.requested_ip = Some("10.8.0.77".parse().unwrap());
        assert!(matches!(
            reserve_endpoint(&pool, &again).await,
            Err(NetError::Forbidden(_))
        ));
        again.requested_ip = Some("10.8.0.1".parse().unwrap());
        assert!(matches!(
            reserve_endpoint(&pool, &again).await,
            Err(NetError::Forbidden(_))
        ));
        assert_eq!(container_endpoints(&pool, "c1").await.unwrap().len(), 2);
        delete_sandbox(&pool, "c1").await.unwrap();
        assert!(container_endpoints(&pool, "c1").await.unwrap().is_empty());
        assert!(sandbox(&pool, "c1").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn host_ports_are_reserved_once_and_chosen_from_the_range() {
        let (_d, pool) = pool().await;
        let net = bridge_row("10.7.0.0/24", "10.7.0.1");
        insert_network_if_missing(&pool, &net).await.unwrap();
        let addr = net.addressing().unwrap();
        let port = |host_ip: Option<&str>, host_port: u16| PortRequest {
            protocol: "tcp".into(),
            container_port: 80,
            host_ip: host_ip.map(|s| s.parse().unwrap()),
            host_port,
        };
        let mut a = new_ep("c1", addr);
        a.ports = vec![port(None, 0), port(Some("127.0.0.1"), 0)];
        reserve_endpoint(&pool, &a).await.unwrap();
        let got: Vec<i64> = ports(&pool)
            .await
            .unwrap()
            .iter()
            .map(|p| p.host_port)
            .collect();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|p| (40000..=40010).contains(p)));
        assert_ne!(got[0], got[1], "0.0.0.0 and 127.0.0.1 clash on one port");
        let mut b = new_ep("c2", addr);
        b.ports = vec![port(Some("127.0.0.1"), u16::try_from(got[0]).unwrap())];
        let err = reserve_endpoint(&pool, &b).await.unwrap_err();
        assert!(
            err.to_string().contains("port is already allocated"),
            "{err}"
        );
        // Nothing of the refused endpoint was kept.
        assert!(container_endpoints(&pool, "c2").await.unwrap().is_empty());
        delete_endpoint(&pool, "c1", "n1").await.unwrap();
        assert!(ports(&pool).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn concurrent_reservations_get_distinct_addresses() {
        let (_d, pool) = pool().await;
        let net = bridge_row("10.8.0.0/24", "10.8.0.1");
        insert_network_if_missing(&pool, &net).await.unwrap();
        let addr = net.addressing().unwrap();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                reserve_endpoint(&pool, &new_ep(&format!("k{i}"), addr))
                    .await
                    .unwrap()
                    .ip
                    .unwrap()
            }));
        }
        let mut ips = HashSet::new();
        for t in tasks {
            assert!(ips.insert(t.await.unwrap()));
        }
        assert_eq!(ips.len(), 8);
    }

    #[tokio::test]
    async fn bridge_network_changes_only_without_endpoints() {
        let (_d, pool) = pool().await;
        let net = bridge_row("10.7.0.0/24", "10.7.0.1");
        insert_network_if_missing(&pool, &net).await.unwrap();
        let new = ipam::parse_bip("10.9.0.1/24").unwrap();
        assert!(
            update_bridge_network(&pool, "n1", &new, "bxtest")
                .await
                .unwrap()
        );
        let got = network_by_name(&pool, "bridge").await.unwrap().unwrap();
        assert_eq!(got.subnet, "10.9.0.0/24");
        assert_eq!(got.gateway, "10.9.0.1");
        reserve_endpoint(&pool, &new_ep("c1", new)).await.unwrap();
        let other = ipam::parse_bip("10.10.0.1/24").unwrap();
        assert!(
            !update_bridge_network(&pool, "n1", &other, "bxtest")
                .await
                .unwrap()
        );
    }
}
