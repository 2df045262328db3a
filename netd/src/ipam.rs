//! Address management: choosing the default subnet and the next free address. Pure
//! functions; the reservation itself is a row in SQLite (see `store`).

use crate::error::{NetError, Result};
use ipnet::Ipv4Net;
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// The bridge network's addressing: subnet and gateway (the bridge's own address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addressing {
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// Containers get addresses from here only (`--ip-range`); None = the whole subnet.
    pub ip_range: Option<Ipv4Net>,
}

/// The `AuxiliaryAddresses` of the first `Config` of an IPAM object as given.
pub fn auxiliary_addresses(ipam_json: &str) -> Vec<Ipv4Addr> {
    let v: serde_json::Value = serde_json::from_str(ipam_json).unwrap_or_default();
    v.pointer("/Config/0/AuxiliaryAddresses")
        .and_then(serde_json::Value::as_object)
        .map(|m| {
            m.values()
                .filter_map(|a| a.as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl Addressing {
    /// The gateway with the subnet's prefix, as configured on the bridge.
    pub fn gateway_net(&self) -> Ipv4Net {
        // The prefix comes from a valid Ipv4Net, so this cannot fail.
        Ipv4Net::new(self.gateway, self.subnet.prefix_len()).unwrap_or(self.subnet)
    }
}

/// Parses dockerd's `--bip` value: the bridge address with its prefix (`172.29.3.1/24`).
pub fn parse_bip(bip: &str) -> Result<Addressing> {
    let net: Ipv4Net = bip
        .parse()
        .map_err(|_| NetError::InvalidArgument(format!("invalid --bip {bip:?}: want A.B.C.D/N")))?;
    let subnet = net.trunc();
    if net.prefix_len() > 30 {
        return Err(NetError::InvalidArgument(format!(
            "invalid --bip {bip}: prefix /{} leaves no room for containers",
            net.prefix_len()
        )));
    }
    if net.addr() == subnet.network() || net.addr() == subnet.broadcast() {
        return Err(NetError::InvalidArgument(format!(
            "invalid --bip {bip}: the bridge address must be a host address of the subnet"
        )));
    }
    Ok(Addressing {
        subnet,
        gateway: net.addr(),
        ip_range: None,
    })
}

/// One of dockerd's `default-address-pools`: `base` split into subnets of `size` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPool {
    pub base: Ipv4Net,
    pub size: u8,
}

/// Docker's built-in pools: 172.17-31.0.0/16 each, then 192.168.0.0/16 in /20s.
pub fn default_pools() -> Vec<AddressPool> {
    let mut pools: Vec<AddressPool> = (17u8..=31)
        .filter_map(|b| {
            Some(AddressPool {
                base: Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).ok()?,
                size: 16,
            })
        })
        .collect();
    if let Ok(base) = Ipv4Net::new(Ipv4Addr::new(192, 168, 0, 0), 16) {
        pools.push(AddressPool { base, size: 20 });
    }
    pools
}

/// Parses dockerd's `--default-address-pool base=10.10.0.0/16,size=24`.
pub fn parse_pool(s: &str) -> Result<AddressPool> {
    let bad = |why: &str| NetError::InvalidArgument(format!("invalid address pool {s:?}: {why}"));
    let (mut base, mut size) = (None, None);
    for part in s.split(',') {
        match part.split_once('=') {
            Some(("base", v)) => {
                base = Some(
                    v.parse::<Ipv4Net>()
                        .map_err(|_| bad("base is not A.B.C.D/N"))?
                        .trunc(),
                )
            }
            Some(("size", v)) => {
                size = Some(v.parse::<u8>().map_err(|_| bad("size is not a number"))?)
            }
            _ => return Err(bad("want base=A.B.C.D/N,size=N")),
        }
    }
    let (base, size) = base
        .zip(size)
        .ok_or_else(|| bad("want base=A.B.C.D/N,size=N"))?;
    if size < base.prefix_len() || size > 30 {
        return Err(bad("size must be between the base's prefix and 30"));
    }
    Ok(AddressPool { base, size })
}

/// The first subnet of `pools` that overlaps nothing in `used` (other networks' subnets
/// and the host's routes); its gateway is its first address.
pub fn choose_from_pools(pools: &[AddressPool], used: &[Ipv4Net]) -> Option<Addressing> {
    pools.iter().find_map(|p| {
        p.base.subnets(p.size).ok()?.find_map(|subnet| {
            let clash = used
                .iter()
                .filter(|u| u.prefix_len() > 0)
                .any(|u| overlaps(&subnet, u));
            if clash {
                return None;
            }
            Some(Addressing {
                subnet,
                gateway: subnet.hosts().next()?,
                ip_range: None,
            })
        })
    })
}

/// The addressing of `docker network create --subnet --gateway --ip-range`.
pub fn parse_user_addressing(subnet: &str, gateway: &str, ip_range: &str) -> Result<Addressing> {
    let net: Ipv4Net = subnet.parse().map_err(|_| {
        NetError::InvalidArgument(format!("invalid subnet {subnet}: want A.B.C.D/N"))
    })?;
    if net.trunc() != net {
        return Err(NetError::InvalidArgument(format!(
            "invalid subnet {subnet}: it should be {}",
            net.trunc()
        )));
    }
    if net.prefix_len() > 30 {
        return Err(NetError::InvalidArgument(format!(
            "invalid subnet {subnet}: prefix /{} leaves no room for containers",
            net.prefix_len()
        )));
    }
    let gateway = if gateway.is_empty() {
        net.hosts().next().ok_or_else(|| {
            NetError::InvalidArgument(format!("invalid subnet {subnet}: no host addresses"))
        })?
    } else {
        let g: Ipv4Addr = gateway
            .parse()
            .map_err(|_| NetError::InvalidArgument(format!("invalid gateway {gateway}")))?;
        if !net.contains(&g) || g == net.network() || g == net.broadcast() {
            return Err(NetError::InvalidArgument(format!(
                "no matching subnet for gateway {gateway}"
            )));
        }
        g
    };
    let ip_range = if ip_range.is_empty() {
        None
    } else {
        let r: Ipv4Net = ip_range
            .parse()
            .map_err(|_| NetError::InvalidArgument(format!("invalid ip-range {ip_range}")))?;
        if !net.contains(&r) {
            return Err(NetError::InvalidArgument(format!(
                "no matching subnet for range {ip_range}"
            )));
        }
        Some(r.trunc())
    };
    Ok(Addressing {
        subnet: net,
        gateway,
        ip_range,
    })
}

/// Checks a requested container address (`--ip`) against the network's addressing.
pub fn check_requested(addr: &Addressing, ip: Ipv4Addr) -> Result<()> {
    if !addr.subnet.contains(&ip) || ip == addr.subnet.network() || ip == addr.subnet.broadcast() {
        return Err(NetError::InvalidArgument(format!(
            "invalid endpoint settings: no configured subnet contains IP address {ip}"
        )));
    }
    if ip == addr.gateway {
        return Err(NetError::Forbidden("Address already in use".into()));
    }
    Ok(())
}

/// Picks the default bridge subnet as dockerd does: the first /16 from 172.18.0.0/16 up
/// to 172.31.0.0/16 that overlaps no host route or address in `used`. The gateway is the
/// subnet's first address. Default routes (prefix 0) are ignored.
pub fn choose_subnet(used: &[Ipv4Net]) -> Option<Addressing> {
    (18u8..=31).find_map(|b| {
        let subnet = Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).ok()?;
        let clash = used
            .iter()
            .filter(|u| u.prefix_len() > 0)
            .any(|u| overlaps(&subnet, u));
        if clash {
            return None;
        }
        let gateway = subnet.hosts().next()?;
        Some(Addressing {
            subnet,
            gateway,
            ip_range: None,
        })
    })
}

/// True if one network contains the other's first address.
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The lowest host address of `addr.subnet` (within its ip range, if any) that is
/// neither the gateway nor in `used` (network and broadcast addresses are never handed out).
pub fn next_free(addr: &Addressing, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    addr.subnet.hosts().find(|ip| {
        *ip != addr.gateway && !used.contains(ip) && addr.ip_range.is_none_or(|r| r.contains(ip))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn bip_gives_gateway_and_subnet() {
        let a = parse_bip("172.29.3.1/24").unwrap();
        assert_eq!(a.subnet, net("172.29.3.0/24"));
        assert_eq!(a.gateway, Ipv4Addr::new(172, 29, 3, 1));
        assert_eq!(a.gateway_net().to_string(), "172.29.3.1/24");
        assert!(parse_bip("172.29.3.0/24").is_err());
        assert!(parse_bip("172.29.3.255/24").is_err());
        assert!(parse_bip("172.29.3.1/31").is_err());
        assert!(parse_bip("nonsense").is_err());
    }

    #[test]
    fn subnet_choice_skips_used_ranges() {
        let a = choose_subnet(&[]).unwrap();
        assert_eq!(a.subnet, net("172.18.0.0/16"));
        assert_eq!(a.gateway, Ipv4Addr::new(172, 18, 0, 1));
        // A default route and unrelated networks do not count.
        let a = choose_subnet(&[net("0.0.0.0/0"), net("192.0.2.0/24")]).unwrap();
        assert_eq!(a.subnet, net("172.18.0.0/16"));
        // A smaller route inside 172.18/16 and an address in 172.19/16 both block theirs.
        let a = choose_subnet(&[net("172.18.5.0/24"), net("172.19.0.7/32")]).unwrap();
        assert_eq!(a.subnet, net("172.20.0.0/16"));
        // A larger route covering several candidates blocks them all.
        let a = choose_subnet(&[net("172.16.0.0/13")]).unwrap();
        assert_eq!(a.subnet, net("172.24.0.0/16"));
        assert!(choose_subnet(&[net("172.16.0.0/12")]).is_none());
    }

    #[test]
    fn allocation_skips_gateway_and_used_and_reuses_released() {
        let a = parse_bip("10.9.0.1/29").unwrap(); // hosts .1 - .6
        let mut used = HashSet::new();
        let mut got = Vec::new();
        while let Some(ip) = next_free(&a, &used) {
            used.insert(ip);
            got.push(ip.octets()[3]);
        }
        assert_eq!(got, vec![2, 3, 4, 5, 6]);
        used.remove(&Ipv4Addr::new(10, 9, 0, 4));
        assert_eq!(next_free(&a, &used), Some(Ipv4Addr::new(10, 9, 0, 4)));
    }

    #[test]
    fn pools_skip_used_subnets_and_parse_like_dockerd() {
        let pools = default_pools();
        let a = choose_from_pools(&pools, &[]).unwrap();
        assert_eq!(a.subnet, net("172.17.0.0/16"));
        assert_eq!(a.gateway, Ipv4Addr::new(172, 17, 0, 1));
        let a = choose_from_pools(&pools, &[net("172.17.0.0/16"), net("172.18.3.0/24")]).unwrap();
        assert_eq!(a.subnet, net("172.19.0.0/16"));
        let a = choose_from_pools(&pools, &[net("172.16.0.0/12")]).unwrap();
        assert_eq!(a.subnet, net("192.168.0.0/20"));
        let p = parse_pool("base=10.10.0.0/16,size=24").unwrap();
        let a = choose_from_pools(&[p], &[net("10.10.0.0/24")]).unwrap();
        assert_eq!(a.subnet, net("10.10.1.0/24"));
        assert!(parse_pool("base=10.10.0.0/16").is_err());
        assert!(parse_pool("base=10.10.0.0/16,size=8").is_err());
        assert!(parse_pool("size=24,base=x").is_err());
        assert!(choose_from_pools(&[p], &[net("10.10.0.0/16")]).is_none());
    }

    #[test]
    fn user_addressing_is_validated_and_ranges_limit_allocation() {
        let a = parse_user_addressing("10.50.0.0/24", "", "10.50.0.128/25").unwrap();
        assert_eq!(a.gateway, Ipv4Addr::new(10, 50, 0, 1));
        // The range's first address is a host address of the subnet: it is used.
        assert_eq!(
            next_free(&a, &HashSet::new()),
            Some(Ipv4Addr::new(10, 50, 0, 128))
        );
        let a = parse_user_addressing("10.50.0.0/24", "10.50.0.254", "").unwrap();
        assert_eq!(
            next_free(&a, &HashSet::new()),
            Some(Ipv4Addr::new(10, 50, 0, 1))
        );
        assert!(parse_user_addressing("10.50.0.1/24", "", "").is_err());
        assert!(parse_user_addressing("10.50.0.0/24", "10.51.0.1", "").is_err());
        assert!(parse_user_addressing("10.50.0.0/24", "", "10.60.0.0/25").is_err());
        assert!(parse_user_addressing("bogus", "", "").is_err());
        assert!(check_requested(&a, Ipv4Addr::new(10, 50, 0, 7)).is_ok());
        assert!(check_requested(&a, Ipv4Addr::new(10, 50, 0, 254)).is_err());
        assert!(check_requested(&a, Ipv4Addr::new(10, 51, 0, 7)).is_err());
        assert!(check_requested(&a, Ipv4Addr::new(10, 50, 0, 255)).is_err());
    }

    #[test]
    fn gateway_in_the_middle_is_skipped() {
        let a = parse_bip("10.9.0.3/29").unwrap();
        let used: HashSet<_> = [Ipv4Addr::new(10, 9, 0, 1), Ipv4Addr::new(10, 9, 0, 2)].into();
        assert_eq!(next_free(&a, &used), Some(Ipv4Addr::new(10, 9, 0, 4)));
    }
}
