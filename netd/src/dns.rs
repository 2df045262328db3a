//! The embedded DNS of user-defined networks: one server per container namespace on
//! 127.0.0.11:53 (served by netd's runtime through sockets bound inside the namespace),
//! answering the names of the containers that share a network with the asker and
//! forwarding everything else from the host's namespace to the upstream resolvers.

use crate::error::{NetError, Result};
use crate::store;
use sqlx::SqlitePool;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

/// Where the server listens inside each namespace (Docker's address).
pub const LISTEN: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 11), 53);

/// Who resolves what, rebuilt from SQLite after every endpoint change; queries only read.
#[derive(Debug, Default)]
struct Snapshot {
    /// container -> the user-defined networks it is on.
    networks_of: HashMap<String, Vec<String>>,
    /// network -> lower-cased name -> addresses.
    names: HashMap<String, HashMap<String, Vec<Ipv4Addr>>>,
    /// network -> address -> name.
    reverse: HashMap<String, HashMap<Ipv4Addr, String>>,
    /// container -> its own `--dns` servers.
    upstreams_of: HashMap<String, Vec<SocketAddr>>,
    /// Containers on `--internal` networks only: nothing is forwarded for them (a query
    /// relayed from the host's namespace would carry data out of a network that has no
    /// way out, as Docker's embedded DNS refuses too).
    enclosed: std::collections::HashSet<String>,
    /// container -> its links on user-defined networks (`EndpointSettings.Links`,
    /// `name:alias`): (network, alias, linked container's name), lower-cased. Only that
    /// container resolves the alias, to the linked one's address on that network.
    links_of: HashMap<String, Vec<(String, String, String)>>,
}

/// The `Links` of an endpoint's settings as given (`name:alias`, or `name` alone),
/// lower-cased, without a leading `/`.
fn links_in(settings_json: &str) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(settings_json).unwrap_or_default();
    v.get("Links")
        .and_then(serde_json::Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(serde_json::Value::as_str)
                .map(|l| {
                    let (name, alias) = l.split_once(':').unwrap_or((l, l));
                    let name = name.trim_start_matches('/');
                    (alias.to_lowercase(), name.to_lowercase())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The names every container on a network answers to: its name, short id, and aliases.
pub fn dns_names(container_id: &str, container_name: &str, aliases: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    if !container_name.is_empty() {
        out.push(container_name.to_string());
    }
    out.push(container_id[..container_id.len().min(12)].to_string());
    for a in aliases {
        if !a.is_empty() && !out.contains(a) {
            out.push(a.clone());
        }
    }
    out
}

struct NameTable {
    snapshot: RwLock<Snapshot>,
    default_upstreams: Vec<SocketAddr>,
}

impl berth_dns::Names for NameTable {
    fn lookup_v4(&self, scope: &str, name: &str) -> Option<Vec<Ipv4Addr>> {
        let snap = self.snapshot.read().ok()?;
        let mut found: Vec<Ipv4Addr> = Vec::new();
        for (net, alias, target) in snap.links_of.get(scope).into_iter().flatten() {
            if alias == name {
                for ip in snap
                    .names
                    .get(net)
                    .and_then(|m| m.get(target))
                    .into_iter()
                    .flatten()
                {
                    if !found.contains(ip) {
                        found.push(*ip);
                    }
                }
            }
        }
        for net in snap.networks_of.get(scope)? {
            for ip in snap
                .names
                .get(net)
                .and_then(|m| m.get(name))
                .into_iter()
                .flatten()
            {
                if !found.contains(ip) {
                    found.push(*ip);
                }
            }
        }
        (!found.is_empty()).then_some(found)
    }

    fn lookup_ptr(&self, scope: &str, ip: Ipv4Addr) -> Option<String> {
        let snap = self.snapshot.read().ok()?;
        snap.networks_of
            .get(scope)?
            .iter()
            .find_map(|net| snap.reverse.get(net)?.get(&ip).cloned())
    }

    fn upstreams(&self, scope: &str) -> Vec<SocketAddr> {
        let Ok(snap) = self.snapshot.read() else {
            return Vec::new();
        };
        if snap.enclosed.contains(scope) {
            return Vec::new();
        }
        let own = snap.upstreams_of.get(scope).cloned().unwrap_or_default();
        if own.is_empty() {
            self.default_upstreams.clone()
        } else {
            own
        }
    }
}

/// Parses resolver addresses (`1.2.3.4` or `1.2.3.4:5353`), skipping what is not one.
pub fn parse_servers<'a>(list: impl IntoIterator<Item = &'a str>) -> Vec<SocketAddr> {
    list.into_iter()
        .filter_map(|s| {
            s.parse::<SocketAddr>().ok().or_else(|| {
                s.parse::<std::net::IpAddr>()
                    .ok()
                    .map(|ip| SocketAddr::new(ip, 53))
            })
        })
        .collect()
}

/// The host's resolvers from a resolv.conf text (loopback ones included: netd forwards
/// from the host's namespace, where they are reachable).
pub fn resolv_conf_servers(text: &str) -> Vec<SocketAddr> {
    parse_servers(text.lines().filter_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some("nameserver")).then(|| w.next()).flatten()
    }))
}

/// The DNS servers netd runs, keyed by container.
pub struct Dns {
    pool: SqlitePool,
    table: Arc<NameTable>,
    servers: Mutex<HashMap<String, berth_dns::ServerHandle>>,
}

impl Dns {
    /// `upstreams` empty = the host's resolv.conf nameservers.
    pub fn new(pool: SqlitePool, upstreams: Vec<SocketAddr>) -> Self {
        let default_upstreams = if upstreams.is_empty() {
            resolv_conf_servers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
        } else {
            upstreams
        };
        Self {
            pool,
            table: Arc::new(NameTable {
                snapshot: RwLock::new(Snapshot::default()),
                default_upstreams,
            }),
            servers: Mutex::new(HashMap::new()),
        }
    }

    /// Rebuilds the name table from the records.
    pub async fn refresh(&self) -> Result<()> {
        let nets = store::networks(&self.pool).await?;
        let sandboxes = store::sandboxes(&self.pool).await?;
        let mut snap = Snapshot::default();
        for sb in &sandboxes {
            let own = parse_servers(sb.dns_server_list().iter().map(String::as_str));
            if !own.is_empty() {
                snap.upstreams_of.insert(sb.container_id.clone(), own);
            }
        }
        let endpoints = store::endpoints(&self.pool).await?;
        let mut with_a_way_out = std::collections::HashSet::new();
        for ep in &endpoints {
            if nets.iter().any(|n| n.id == ep.network_id && !n.internal) {
                with_a_way_out.insert(ep.container_id.clone());
            }
        }
        for ep in &endpoints {
            if !with_a_way_out.contains(&ep.container_id) {
                snap.enclosed.insert(ep.container_id.clone());
            }
        }
        for ep in endpoints {
            let Some(net) = nets.iter().find(|n| n.id == ep.network_id) else {
                continue;
            };
            if !net.is_user_defined_bridge() {
                continue;
            }
            for (alias, target) in links_in(&ep.settings) {
                snap.links_of
                    .entry(ep.container_id.clone())
                    .or_default()
                    .push((net.id.clone(), alias, target));
            }
            let Some(ip) = ep.ipv4()? else { continue };
            snap.networks_of
                .entry(ep.container_id.clone())
                .or_default()
                .push(net.id.clone());
            let name = sandboxes
                .iter()
                .find(|s| s.container_id == ep.container_id)
                .map(|s| s.container_name.as_str())
                .unwrap_or("");
            let names = dns_names(&ep.container_id, name, &ep.alias_list());
            if let Some(first) = names.first() {
                snap.reverse
                    .entry(net.id.clone())
                    .or_default()
                    .insert(ip, format!("{first}.{}", net.name));
            }
            let by_name = snap.names.entry(net.id.clone()).or_default();
            for n in names {
                let ips = by_name.entry(n.to_lowercase()).or_default();
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
        *self
            .table
            .snapshot
            .write()
            .map_err(|_| NetError::Corrupt("DNS table lock poisoned".into()))? = snap;
        Ok(())
    }

    /// Starts the server in the container's namespace unless it runs already.
    pub async fn ensure_server(&self, container_id: &str) -> Result<()> {
        if self
            .servers
            .lock()
            .is_ok_and(|m| m.contains_key(container_id))
        {
            return Ok(());
        }
        let Some(sb) = store::sandbox(&self.pool, container_id).await? else {
            return Ok(());
        };
        let (udp, tcp) = berth_dns::bind_in_netns(Path::new(&sb.netns_path), LISTEN)
            .await
            .map_err(NetError::io(format!(
                "binding the DNS server in {}",
                sb.netns_path
            )))?;
        let handle = berth_dns::serve(container_id.to_string(), udp, tcp, self.table.clone());
        if let Ok(mut m) = self.servers.lock() {
            m.insert(container_id.to_string(), handle);
        }
        Ok(())
    }

    /// Stops the container's server (its sockets close with it).
    pub fn stop(&self, container_id: &str) {
        if let Ok(mut m) = self.servers.lock() {
            m.remove(container_id);
        }
    }

    /// At start: the table, and a server for every container on a user-defined network.
    pub async fn reconcile(&self) {
        if let Err(e) = self.refresh().await {
            tracing::warn!("building the DNS table: {e}");
        }
        let wanted: Vec<String> = self
            .table
            .snapshot
            .read()
            .map(|s| s.networks_of.keys().cloned().collect())
            .unwrap_or_default();
        for id in wanted {
            if let Err(e) = self.ensure_server(&id).await {
                tracing::warn!(container = %id, "starting the DNS server: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_name_short_id_and_aliases_once() {
        let id = "3f9a1c0b2d4e5f60718293a4b5c6d7e8";
        assert_eq!(
            dns_names(id, "web", &["api".into(), "web".into(), String::new()]),
            ["web", "3f9a1c0b2d4e", "api"]
        );
        assert_eq!(dns_names(id, "", &[]), ["3f9a1c0b2d4e"]);
    }

    #[test]
    fn servers_parse_with_and_without_ports() {
        assert_eq!(
            parse_servers(["127.0.0.1", "10.0.0.2:5353", "bogus"]),
            vec![
                "127.0.0.1:53".parse::<SocketAddr>().unwrap(),
                "10.0.0.2:5353".parse().unwrap()
            ]
        );
        let conf = "# x\nsearch example.org\nnameserver 192.0.2.53\nnameserver 127.0.0.53\noptions ndots:1\n";
        assert_eq!(
            resolv_conf_servers(conf),
            vec![
                "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
                "127.0.0.53:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn lookups_see_only_shared_networks() {
        let mut snap = Snapshot::default();
        snap.networks_of.insert("a".into(), vec!["n1".into()]);
        snap.networks_of.insert("b".into(), vec!["n2".into()]);
        snap.names
            .entry("n1".into())
            .or_default()
            .insert("web".into(), vec![Ipv4Addr::new(10, 1, 0, 2)]);
        snap.names
            .entry("n2".into())
            .or_default()
            .insert("db".into(), vec![Ipv4Addr::new(10, 2, 0, 2)]);
        snap.upstreams_of
            .insert("b".into(), vec!["127.0.0.1:5300".parse().unwrap()]);
        snap.enclosed.insert("c".into());
        snap.links_of
            .insert("a".into(), vec![("n1".into(), "bar".into(), "web".into())]);
        let t = NameTable {
            snapshot: RwLock::new(snap),
            default_upstreams: vec!["127.0.0.1:53".parse().unwrap()],
        };
        use berth_dns::Names;
        assert_eq!(
            t.lookup_v4("a", "web"),
            Some(vec![Ipv4Addr::new(10, 1, 0, 2)])
        );
        assert_eq!(t.lookup_v4("a", "db"), None);
        assert_eq!(
            t.lookup_v4("b", "db"),
            Some(vec![Ipv4Addr::new(10, 2, 0, 2)])
        );
        assert_eq!(t.lookup_v4("nobody", "web"), None);
        assert_eq!(
            t.upstreams("a"),
            vec!["127.0.0.1:53".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            t.upstreams("b"),
            vec!["127.0.0.1:5300".parse::<SocketAddr>().unwrap()]
        );
        assert!(
            t.upstreams("c").is_empty(),
            "internal networks only: no forwarding"
        );
        // A link's alias: for the linking container only.
        assert_eq!(
            t.lookup_v4("a", "bar"),
            Some(vec![Ipv4Addr::new(10, 1, 0, 2)])
        );
        assert_eq!(t.lookup_v4("b", "bar"), None);
        assert_eq!(
            links_in(r#"{"Links": ["/Upstream:Bar", "plain"]}"#),
            [
                ("bar".to_string(), "upstream".to_string()),
                ("plain".to_string(), "plain".to_string())
            ]
        );
    }
}
