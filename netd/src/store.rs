//! netd's SQLite records: networks and endpoints. An endpoint row is also its IP
//! reservation, so allocating an address and recording the endpoint are one insert.

use crate::error::{NetError, Result};
use crate::ipam::{self, Addressing};
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
        Ok(Addressing { subnet, gateway })
    }
}

/// An endpoint record (one per container).
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
}

/// Every network, oldest first.
pub async fn networks(pool: &SqlitePool) -> Result<Vec<NetworkRow>> {
    Ok(sqlx::query_as::<_, NetworkRow>(
        "SELECT id, name, driver, subnet, gateway, bridge, created, labels, internal FROM networks ORDER BY created, name",
    )
    .fetch_all(pool)
    .await?)
}

/// The network named `name`.
pub async fn network_by_name(pool: &SqlitePool, name: &str) -> Result<Option<NetworkRow>> {
    Ok(sqlx::query_as::<_, NetworkRow>(
        "SELECT id, name, driver, subnet, gateway, bridge, created, labels, internal FROM networks WHERE name = ?",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?)
}

/// Inserts a network unless one with that name exists already.
pub async fn insert_network_if_missing(pool: &SqlitePool, n: &NetworkRow) -> Result<()> {
    sqlx::query(
        "INSERT OR IGNORE INTO networks (id, name, driver, subnet, gateway, bridge, created, labels, internal)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&n.id)
    .bind(&n.name)
    .bind(&n.driver)
    .bind(&n.subnet)
    .bind(&n.gateway)
    .bind(&n.bridge)
    .bind(&n.created)
    .bind(&n.labels)
    .bind(n.internal)
    .execute(pool)
    .await?;
    Ok(())
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

/// The endpoint of `container_id`.
pub async fn endpoint(pool: &SqlitePool, container_id: &str) -> Result<Option<EndpointRow>> {
    Ok(sqlx::query_as::<_, EndpointRow>(
        "SELECT container_id, network_id, endpoint_id, ip, prefix_len, mac, host_veth, netns_path, created FROM endpoints WHERE container_id = ?",
    )
    .bind(container_id)
    .fetch_optional(pool)
    .await?)
}

/// Every endpoint.
pub async fn endpoints(pool: &SqlitePool) -> Result<Vec<EndpointRow>> {
    Ok(sqlx::query_as::<_, EndpointRow>(
        "SELECT container_id, network_id, endpoint_id, ip, prefix_len, mac, host_veth, netns_path, created FROM endpoints ORDER BY created",
    )
    .fetch_all(pool)
    .await?)
}

/// What a new endpoint needs before its address is known.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub container_id: String,
    pub network_id: String,
    pub host_veth: String,
    pub netns_path: String,
    /// Some for bridge networks: allocate an address from it.
    pub addressing: Option<Addressing>,
}

/// Records an endpoint, allocating the lowest free address of its subnet in the same
/// IMMEDIATE transaction, so two concurrent creations never get one address.
pub async fn reserve_endpoint(pool: &SqlitePool, new: &NewEndpoint) -> Result<EndpointRow> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let exists: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM endpoints WHERE container_id = ?")
        .bind(&new.container_id)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_some() {
        return Err(NetError::AlreadyExists(format!(
            "container {} already has an endpoint",
            new.container_id
        )));
    }
    let (ip, prefix_len, mac) = match &new.addressing {
        Some(addr) => {
            let rows: Vec<(String,)> =
                sqlx::query_as("SELECT ip FROM endpoints WHERE network_id = ? AND ip IS NOT NULL")
                    .bind(&new.network_id)
                    .fetch_all(&mut *tx)
                    .await?;
            let used: HashSet<Ipv4Addr> = rows.iter().filter_map(|(s,)| s.parse().ok()).collect();
            let ip = ipam::next_free(addr, &used).ok_or_else(|| {
                NetError::FailedPrecondition(format!(
                    "no available IPv4 addresses on network {} ({})",
                    new.network_id, addr.subnet
                ))
            })?;
            let mac = crate::names::format_mac(&crate::names::mac_for_ip(ip));
            (
                Some(ip.to_string()),
                i64::from(addr.subnet.prefix_len()),
                mac,
            )
        }
        None => (None, 0, String::new()),
    };
    let row = EndpointRow {
        container_id: new.container_id.clone(),
        network_id: new.network_id.clone(),
        endpoint_id: crate::names::random_id(),
        ip,
        prefix_len,
        mac,
        host_veth: new.host_veth.clone(),
        netns_path: new.netns_path.clone(),
        created: crate::names::now_rfc3339(),
    };
    let res = sqlx::query(
        "INSERT INTO endpoints (container_id, network_id, endpoint_id, ip, prefix_len, mac, host_veth, netns_path, created)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&row.container_id)
    .bind(&row.network_id)
    .bind(&row.endpoint_id)
    .bind(&row.ip)
    .bind(row.prefix_len)
    .bind(&row.mac)
    .bind(&row.host_veth)
    .bind(&row.netns_path)
    .bind(&row.created)
    .execute(&mut *tx)
    .await;
    match res {
        Ok(_) => {}
        Err(e) if berth_kit::db::is_unique_violation(&e) => {
            return Err(NetError::AlreadyExists(format!(
                "container {} conflicts with an existing endpoint (same id or veth name {})",
                new.container_id, new.host_veth
            )));
        }
        Err(e) => return Err(e.into()),
    }
    tx.commit().await?;
    Ok(row)
}

/// Deletes an endpoint record (releasing its address). Missing is success.
pub async fn delete_endpoint(pool: &SqlitePool, container_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM endpoints WHERE container_id = ?")
        .bind(container_id)
        .execute(pool)
        .await?;
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
        }
    }

    fn new_ep(id: &str, addr: Addressing) -> NewEndpoint {
        NewEndpoint {
            container_id: id.into(),
            network_id: "n1".into(),
            host_veth: crate::names::host_veth_name(id),
            netns_path: format!("/run/x/netns/{id}"),
            addressing: Some(addr),
        }
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
        delete_endpoint(&pool, "c2").await.unwrap();
        delete_endpoint(&pool, "c2").await.unwrap();
        let ep = reserve_endpoint(&pool, &new_ep("c9", addr)).await.unwrap();
        assert_eq!(ep.ip.as_deref(), Some("10.7.0.4"));
        // The same container twice is a conflict, not a second address.
        let err = reserve_endpoint(&pool, &new_ep("c9", addr))
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::AlreadyExists(_)), "{err}");
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
