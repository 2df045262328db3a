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
    })
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
        Some(Addressing { subnet, gateway })
    })
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The lowest host address of `addr.subnet` that is neither the gateway nor in `used`
/// (the network and broadcast addresses are never handed out).
pub fn next_free(addr: &Addressing, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    addr.subnet
        .hosts()
        .find(|ip| *ip != addr.gateway && !used.contains(ip))
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
    fn gateway_in_the_middle_is_skipped() {
        let a = parse_bip("10.9.0.3/29").unwrap();
        let used: HashSet<_> = [Ipv4Addr::new(10, 9, 0, 1), Ipv4Addr::new(10, 9, 0, 2)].into();
        assert_eq!(next_free(&a, &used), Some(Ipv4Addr::new(10, 9, 0, 4)));
    }
}
