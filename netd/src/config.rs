//! netd's part of daemon.json (`dns`, `default-address-pools`), merged under its flags.

use crate::dns::parse_servers;
use crate::ipam::{self, AddressPool};
use crate::service::NetdConfig;
use anyhow::Context;
use std::path::Path;

/// One `default-address-pools` entry as daemon.json spells it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct PoolEntry {
    pub base: String,
    pub size: u8,
}

/// The daemon.json keys netd reads; every other key belongs to someone else.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DaemonNetConfig {
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub default_address_pools: Vec<PoolEntry>,
}

impl DaemonNetConfig {
    /// Reads the file berthd passed on (missing path = defaults).
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Flags win over the file; the built-in pools apply when neither names any.
pub fn merge(
    mut base: NetdConfig,
    dns_flags: &[String],
    pool_flags: &[String],
    file: &DaemonNetConfig,
) -> anyhow::Result<NetdConfig> {
    let dns: Vec<&str> = if dns_flags.is_empty() {
        file.dns.iter().map(String::as_str).collect()
    } else {
        dns_flags.iter().map(String::as_str).collect()
    };
    let servers = parse_servers(dns.iter().copied());
    if servers.len() != dns.len() {
        anyhow::bail!("invalid dns server in {dns:?}: want an IP address");
    }
    base.dns_upstreams = servers;
    let pools: Vec<AddressPool> = if !pool_flags.is_empty() {
        pool_flags
            .iter()
            .map(|p| ipam::parse_pool(p))
            .collect::<Result<_, _>>()?
    } else {
        file.default_address_pools
            .iter()
            .map(|p| ipam::parse_pool(&format!("base={},size={}", p.base, p.size)))
            .collect::<Result<_, _>>()?
    };
    if !pools.is_empty() {
        base.address_pools = pools;
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_bad_values_are_refused() {
        let file: DaemonNetConfig = serde_json::from_str(
            r#"{"dns": ["10.0.0.53"], "default-address-pools": [{"base": "10.20.0.0/16", "size": 24}], "debug": true}"#,
        )
        .unwrap();
        let c = merge(NetdConfig::default(), &[], &[], &file).unwrap();
        assert_eq!(c.dns_upstreams, vec!["10.0.0.53:53".parse().unwrap()]);
        assert_eq!(c.address_pools[0].base.to_string(), "10.20.0.0/16");
        let c = merge(
            NetdConfig::default(),
            &["127.0.0.1".into()],
            &["base=10.30.0.0/16,size=20".into()],
            &file,
        )
        .unwrap();
        assert_eq!(c.dns_upstreams, vec!["127.0.0.1:53".parse().unwrap()]);
        assert_eq!(c.address_pools[0].size, 20);
        let c = merge(NetdConfig::default(), &[], &[], &DaemonNetConfig::default()).unwrap();
        assert_eq!(c.address_pools, ipam::default_pools());
        assert!(merge(NetdConfig::default(), &["nope".into()], &[], &file).is_err());
        assert!(merge(NetdConfig::default(), &[], &["base=x".into()], &file).is_err());
    }
}
