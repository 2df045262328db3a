//! Names and identifiers derived from container ids and addresses.

use crate::error::{NetError, Result};
use std::net::Ipv4Addr;

/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
pub const IFNAMSIZ_MAX: usize = 15;

/// Checks that a container id is safe to use in a file name and an interface name.
pub fn validate_container_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(NetError::InvalidArgument(format!(
            "invalid container id {id:?}"
        )))
    }
}

fn short(id: &str) -> &str {
    // Ids are validated ASCII, so byte slicing stays on char boundaries.
    &id[..id.len().min(12)]
}

fn veth_name(prefix: &str, container_id: &str, index: u32) -> String {
    if index == 0 {
        format!("{prefix}{}", short(container_id))
    } else {
        let id = &container_id[..container_id.len().min(9)];
        format!("{prefix}{id}n{index}")
    }
}

/// The host side of a container's veth pair for its `eth<index>`: `vb` + the short
/// (12 char) container id for eth0, `vb` + 9 chars + `n<index>` for the others (at most
/// 14 bytes), so `ip link` on the host tells which container a veth belongs to.
pub fn host_veth_name(container_id: &str, index: u32) -> String {
    veth_name("vb", container_id, index)
}

/// The temporary name of the container side while it is still in the host namespace
/// (it is renamed to `eth<index>` once moved).
pub fn peer_veth_name(container_id: &str, index: u32) -> String {
    veth_name("vp", container_id, index)
}

/// 3 for `eth3`.
pub fn ifname_index(ifname: &str) -> Option<u32> {
    ifname.strip_prefix("eth")?.parse().ok()
}

/// A user-defined network's bridge: `br-` + 12 chars of its id, as Docker names them.
pub fn user_bridge_name(network_id: &str) -> String {
    format!("br-{}", &network_id[..network_id.len().min(12)])
}

/// True for names netd gives host-side veths (used to find orphans on our bridge).
pub fn is_host_veth_name(name: &str) -> bool {
    name.starts_with("vb") && name.len() > 2 && name.len() <= IFNAMSIZ_MAX
}

/// The container's MAC address, derived from its IPv4 address as Docker does
/// (02:42 followed by the four address bytes), so it is stable across re-creation.
pub fn mac_for_ip(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// Parses `aa:bb:cc:dd:ee:ff` (Docker's --mac-address); a multicast address is refused,
/// as no interface may have one.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    if parts.next().is_some() || mac[0] & 1 == 1 {
        return None;
    }
    Some(mac)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A new random 64-hex identifier (network and endpoint ids, as Docker's).
pub fn random_id() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Now, RFC 3339 with nanoseconds (Docker's `Created` format).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_as_docker_takes_them() {
        assert_eq!(
            parse_mac("02:42:AC:11:00:0a"),
            Some([0x02, 0x42, 0xac, 0x11, 0x00, 0x0a])
        );
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:0a:01",
            "01:00:5e:00:00:01",
            "zz:42:ac:11:00:0a",
            "2:42:ac:11:00:0a",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    const ID: &str = "3f9a1c0b2d4e5f60718293a4b5c6d7e8f90123456789abcdef0123456789abcd";

    #[test]
    fn veth_names_fit_ifnamsiz_and_are_recognised() {
        let h = host_veth_name(ID, 0);
        let p = peer_veth_name(ID, 0);
        assert_eq!(h, "vb3f9a1c0b2d4e");
        assert_eq!(p, "vp3f9a1c0b2d4e");
        assert_eq!(host_veth_name(ID, 12), "vb3f9a1c0b2n12");
        assert!(host_veth_name(ID, 99).len() <= IFNAMSIZ_MAX);
        assert!(is_host_veth_name(&host_veth_name(ID, 3)));
        assert_eq!(ifname_index("eth3"), Some(3));
        assert_eq!(ifname_index("lo"), None);
        assert_eq!(user_bridge_name(ID), "br-3f9a1c0b2d4e");
        assert!(h.len() <= IFNAMSIZ_MAX && p.len() <= IFNAMSIZ_MAX);
        assert!(is_host_veth_name(&h));
        assert!(!is_host_veth_name(&p));
        assert!(!is_host_veth_name("eth0"));
        assert_eq!(host_veth_name("abc", 0), "vbabc");
    }

    #[test]
    fn mac_is_derived_from_ip_like_docker() {
        let mac = mac_for_ip(Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(format_mac(&mac), "02:42:ac:11:00:02");
    }

    #[test]
    fn container_ids_are_validated() {
        assert!(validate_container_id(ID).is_ok());
        assert!(validate_container_id("my_ctr-1.x").is_ok());
        assert!(validate_container_id("").is_err());
        assert!(validate_container_id("../etc").is_err());
        assert!(validate_container_id("a/b").is_err());
        assert!(validate_container_id(".hidden").is_err());
    }

    #[test]
    fn random_ids_are_64_hex() {
        let a = random_id();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, random_id());
    }
}
