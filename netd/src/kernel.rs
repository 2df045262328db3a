//! The kernel side: network namespaces (bind-mounted files), links, addresses and routes
//! through rtnetlink. Namespace switches happen only on short-lived `std::thread`s, never
//! on a tokio worker (a worker would carry the namespace into unrelated tasks).

use crate::error::{NetError, Result};
use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use tokio::task::JoinHandle;

/// Negated netlink error code (an errno), if the error is a kernel NACK.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// A netlink connection bound to one network namespace. Its connection task is aborted
/// when this is dropped.
pub struct Netlink {
    handle: Handle,
    task: JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a container-side interface is configured.
#[derive(Debug, Clone)]
pub struct VethPlan {
    pub host: String,
    pub peer: String,
    pub bridge_index: u32,
    pub netns: PathBuf,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// The name inside the namespace (`eth0`, `eth1`, ...).
    pub ifname: String,
    /// Only the container's first interface carries the default route.
    pub default_route: bool,
    /// `--link-local-ip` addresses, added to the interface as /16 (as Docker).
    pub link_local: Vec<Ipv4Addr>,
}

impl Netlink {
    /// A connection in netd's own (the host's) namespace.
    pub fn host() -> Result<Self> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(NetError::io("netlink socket"))?;
        Ok(Self {
            handle,
            task: tokio::spawn(conn),
        })
    }

    /// A connection inside the namespace bind-mounted at `netns`. The socket is created on
    /// a throwaway thread that entered the namespace; the socket stays in it for good.
    pub async fn in_netns(netns: &Path) -> Result<Self> {
        let path = netns.to_path_buf();
        let rt = tokio::runtime::Handle::current();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let res = (|| {
                let f = File::open(&path)
                    .map_err(NetError::io(format!("opening {}", path.display())))?;
                nix::sched::setns(&f, CloneFlags::CLONE_NEWNET)
                    .map_err(NetError::sys(format!("entering {}", path.display())))?;
                // netlink-sys registers the socket with the reactor when it is created.
                let _guard = rt.enter();
                rtnetlink::new_connection().map_err(NetError::io("netlink socket in netns"))
            })();
            let _ = tx.send(res);
        });
        let (conn, handle, _) = rx
            .await
            .map_err(|_| NetError::Corrupt("netns helper thread vanished".into()))??;
        Ok(Self {
            handle,
            task: tokio::spawn(conn),
        })
    }

    /// The link called `name`, if any.
    pub async fn link(&self, name: &str) -> Result<Option<LinkMessage>> {
        link_via(&self.handle, name).await
    }

    /// The index of the link called `name`, if any.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>> {
        Ok(self.link(name).await?.map(|m| m.header.index))
    }

    /// Every link: (index, name, controller index).
    pub async fn links(&self) -> Result<Vec<(u32, String, Option<u32>)>> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(NetError::netlink("list links"))?;
        Ok(msgs
            .into_iter()
            .map(|m| {
                let mut name = String::new();
                let mut ctl = None;
                for a in &m.attributes {
                    match a {
                        LinkAttribute::IfName(n) => name = n.clone(),
                        LinkAttribute::Controller(c) => ctl = Some(*c),
                        _ => {}
                    }
                }
                (m.header.index, name, ctl)
            })
            .collect())
    }

    /// Deletes the link called `name`; true if it existed. Deleting one end of a veth
    /// pair removes both.
    pub async fn delete_link(&self, name: &str) -> Result<bool> {
        delete_link_via(&self.handle, name).await
    }

    /// A handle on this connection, for work that outlives the caller's borrow.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    async fn set_up(&self, index: u32, what: &str) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(NetError::netlink(format!("set {what} up")))
    }

    /// IPv4 addresses (with prefix) on link `index`, with their raw messages for deletion.
    async fn v4_addresses(
        &self,
        index: u32,
    ) -> Result<Vec<(Ipv4Net, netlink_packet_route::address::AddressMessage)>> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(NetError::netlink("list addresses"))?;
        Ok(msgs
            .into_iter()
            .filter(|m| m.header.index == index && m.header.family == AddressFamily::Inet)
            .filter_map(|m| {
                let ip = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                })?;
                let net = Ipv4Net::new(ip, m.header.prefix_len).ok()?;
                Some((net, m))
            })
            .collect())
    }

    /// Makes sure bridge `name` exists, carries exactly `gateway` as its IPv4 address and
    /// is up; returns its index. Only what is missing or stale is changed.
    pub async fn ensure_bridge(&self, name: &str, gateway: Ipv4Net) -> Result<u32> {
        let idx = match self.link_index(name).await? {
            Some(i) => i,
            None => {
                self.handle
                    .link()
                    .add(LinkBridge::new(name).up().build())
                    .execute()
                    .await
                    .map_err(NetError::netlink(format!("create bridge {name}")))?;
                self.link_index(name).await?.ok_or_else(|| {
                    NetError::Corrupt(format!("bridge {name} vanished after creation"))
                })?
            }
        };
        let mut have = false;
        for (net, msg) in self.v4_addresses(idx).await? {
            if net == gateway {
                have = true;
            } else {
                // A stale address from an earlier --bip: the bridge is ours alone.
                tracing::info!(bridge = name, address = %net, "removing stale bridge address");
                self.handle
                    .address()
                    .del(msg)
                    .execute()
                    .await
                    .map_err(NetError::netlink(format!("delete {net} from {name}")))?;
            }
        }
        if !have {
            self.handle
                .address()
                .add(idx, IpAddr::V4(gateway.addr()), gateway.prefix_len())
                .execute()
                .await
                .map_err(NetError::netlink(format!("add {gateway} to {name}")))?;
        }
        self.set_up(idx, name).await?;
        Ok(idx)
    }

    /// Attaches link `index` to bridge `bridge_index` and brings it up.
    pub async fn attach(&self, index: u32, bridge_index: u32, what: &str) -> Result<()> {
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .controller(bridge_index)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(NetError::netlink(format!("attach {what} to bridge")))
    }

    /// Every IPv4 network the host uses: route destinations and interface addresses.
    pub async fn used_networks(&self) -> Result<Vec<Ipv4Net>> {
        let mut out = Vec::new();
        let routes: Vec<_> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(NetError::netlink("list routes"))?;
        for r in routes {
            for a in &r.attributes {
                if let RouteAttribute::Destination(RouteAddress::Inet(ip)) = a
                    && let Ok(n) = Ipv4Net::new(*ip, r.header.destination_prefix_length)
                {
                    out.push(n);
                }
            }
        }
        let addrs: Vec<_> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(NetError::netlink("list addresses"))?;
        for m in addrs {
            for a in &m.attributes {
                if let AddressAttribute::Local(IpAddr::V4(ip)) = a
                    && let Ok(n) = Ipv4Net::new(*ip, m.header.prefix_len)
                {
                    out.push(n.trunc());
                }
            }
        }
        Ok(out)
    }

    /// Creates the veth pair of `plan` with its container end born inside the namespace
    /// as `eth0` (with its MAC) and the host end already on the bridge, then gives the
    /// container end its address and default route.
    /// Creating the peer in place matters: moving a link between namespaces waits for an
    /// RCU grace period in the kernel (about 25 ms here, on every `docker run`).
    /// On error the caller deletes `plan.host` (which removes both ends).
    pub async fn plumb_veth(&self, plan: &VethPlan) -> Result<()> {
        // Leftovers of an interrupted attempt would make the add fail.
        self.delete_link(&plan.host).await?;
        self.delete_link(&plan.peer).await?;
        let ns = File::open(&plan.netns)
            .map_err(NetError::io(format!("opening {}", plan.netns.display())))?;
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(plan.ifname.clone())
            .address(plan.mac.to_vec())
            .setns_by_fd(ns.as_raw_fd())
            .build();
        self.handle
            .link()
            .add(
                LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
                    .name(plan.host.clone())
                    .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                    .controller(plan.bridge_index)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(NetError::netlink(format!("create veth {}", plan.host)))?;
        drop(ns);
        // Hairpin mode, as Docker sets it: a container reaching its own published port
        // through the host's address is DNAT'd back to itself, so the reply leaves by
        // the bridge port it came in on (refused by a bridge port without it; with
        // br_netfilter loaded every such packet takes this path).
        let host_idx = self
            .link_index(&plan.host)
            .await?
            .ok_or_else(|| NetError::Corrupt(format!("{} vanished after creation", plan.host)))?;
        self.handle
            .link()
            // RTM_NEWLINK without CREATE (`ip link set ... type bridge_slave`):
            // RTM_SETLINK ignores bridge-port data.
            .change(LinkBridgePort::new(host_idx).hairpin(true).build())
            .execute()
            .await
            .map_err(NetError::netlink(format!("hairpin on {}", plan.host)))?;

        let inner = Netlink::in_netns(&plan.netns).await?;
        let idx = inner
            .link_index(&plan.ifname)
            .await?
            .ok_or_else(|| NetError::Corrupt(format!("{} not found in netns", plan.ifname)))?;
        inner
            .handle
            .address()
            .add(idx, IpAddr::V4(plan.ip), plan.prefix_len)
            .execute()
            .await
            .map_err(NetError::netlink(format!(
                "add {}/{} to {}",
                plan.ip, plan.prefix_len, plan.ifname
            )))?;
        for ll in &plan.link_local {
            inner
                .handle
                .address()
                .add(idx, IpAddr::V4(*ll), 16)
                .execute()
                .await
                .map_err(NetError::netlink(format!(
                    "add link-local {ll} to {}",
                    plan.ifname
                )))?;
        }
        inner.set_up(idx, &plan.ifname).await?;
        inner.lo_up().await?;
        if !plan.default_route {
            return Ok(());
        }
        inner
            .handle
            .route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(plan.gateway)
                    .output_interface(idx)
                    .build(),
            )
            .execute()
            .await
            .map_err(NetError::netlink(format!(
                "default route via {}",
                plan.gateway
            )))?;
        Ok(())
    }

    /// Brings `lo` up (in the namespace this connection lives in).
    pub async fn lo_up(&self) -> Result<()> {
        let lo = self
            .link_index("lo")
            .await?
            .ok_or_else(|| NetError::Corrupt("no lo in netns".into()))?;
        self.set_up(lo, "lo").await
    }
}

/// The link called `name` seen through `handle`, if any.
async fn link_via(handle: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    let res = handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await;
    match res {
        Ok(m) => Ok(m),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(NetError::netlink(format!("get link {name}"))(e)),
    }
}

/// Deletes link `name` through `handle`; false if there was none.
pub async fn delete_link_via(handle: &Handle, name: &str) -> Result<bool> {
    let Some(idx) = link_via(handle, name).await?.map(|m| m.header.index) else {
        return Ok(false);
    };
    match handle.link().del(idx).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(NetError::netlink(format!("delete link {name}"))(e)),
    }
}

/// True if `path` is a bind-mounted network namespace (an nsfs file).
pub fn is_netns(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
        .unwrap_or(false)
}

/// Creates a new network namespace kept alive by a bind mount at `path` (idempotent).
/// The `unshare` happens on a throwaway thread that exits right after.
pub async fn create_netns(path: &Path) -> Result<()> {
    if is_netns(path) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(NetError::io(format!("creating {}", dir.display())))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(NetError::io(format!("creating {}", path.display())))?;
    let target = path.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let res = (|| {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                .map_err(NetError::sys("unshare(CLONE_NEWNET)"))?;
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(NetError::sys(format!(
                "bind-mounting netns on {}",
                target.display()
            )))
        })();
        let _ = tx.send(res);
    });
    let res = rx
        .await
        .unwrap_or_else(|_| Err(NetError::Corrupt("netns helper thread vanished".into())));
    if res.is_err() {
        let _ = std::fs::remove_file(path);
    }
    res
}

/// Unmounts (lazily) and deletes a namespace file. Missing is success.
pub fn remove_netns(path: &Path) -> Result<()> {
    // A file may carry stacked mounts if something mounted it twice; peel them all.
    for _ in 0..8 {
        match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => break,
            Err(e) => return Err(NetError::sys(format!("unmounting {}", path.display()))(e)),
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::io(format!("removing {}", path.display()))(e)),
    }
}

/// Sets `net.ipv4.conf.<bridge>.route_localnet=1`: connections to a published port on
/// 127.0.0.1 are DNATed to a container and leave through the bridge with a loopback
/// source (masqueraded on the way out), which the kernel otherwise drops as martian.
pub async fn enable_route_localnet(bridge: &str) -> Result<()> {
    let path = format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet");
    tokio::fs::write(&path, b"1")
        .await
        .map_err(NetError::io(format!("setting {path}")))
}

/// Sets `net.ipv4.ip_forward=1` (containers reach the outside through the host).
pub async fn enable_ip_forward() -> Result<()> {
    tokio::fs::write("/proc/sys/net/ipv4/ip_forward", b"1")
        .await
        .map_err(NetError::io("setting net.ipv4.ip_forward=1"))
}
