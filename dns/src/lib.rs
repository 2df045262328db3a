//! Berth's embedded DNS server: what netd runs on 127.0.0.11:53 inside each container's
//! network namespace, like Docker's embedded DNS on user-defined networks.
//!
//! The pieces, from pure to effectful:
//!
//! - [`answer_locally`] decides one query from its wire bytes: a local answer, "forward
//!   it", or drop. It never does I/O.
//! - [`forward`] relays a query to the container's upstream resolvers (UDP, TCP retry on
//!   truncation) and always yields a reply, SERVFAIL when none answers.
//! - [`serve`] runs both over a UDP socket and a TCP listener until its [`ServerHandle`]
//!   is dropped.
//! - [`bind_in_netns`] creates those sockets inside a container's network namespace
//!   without ever moving a tokio worker into it.
//!
//! netd supplies what containers can see through [`Names`].
//!
//! ```no_run
//! # use std::{net::{Ipv4Addr, SocketAddr, SocketAddrV4}, path::Path, sync::Arc};
//! # struct NetdNames;
//! # impl berth_dns::Names for NetdNames {
//! #     fn lookup_v4(&self, _: &str, _: &str) -> Option<Vec<Ipv4Addr>> { None }
//! #     fn lookup_ptr(&self, _: &str, _: Ipv4Addr) -> Option<String> { None }
//! #     fn upstreams(&self, _: &str) -> Vec<SocketAddr> { Vec::new() }
//! # }
//! # async fn run() -> std::io::Result<()> {
//! let (udp, tcp) = berth_dns::bind_in_netns(
//!     Path::new("/run/berth/netns/abc123"),
//!     SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 11), 53),
//! )
//! .await?;
//! let server = berth_dns::serve("abc123".to_owned(), udp, tcp, Arc::new(NetdNames));
//! // ... keep `server` for as long as the container's network lives.
//! drop(server);
//! # Ok(())
//! # }
//! ```

use std::net::{Ipv4Addr, SocketAddr};

mod local;
mod netns;
mod server;
#[cfg(test)]
mod testutil;
mod upstream;
mod wire;

pub use local::{Decision, LOCAL_TTL, Transport, answer_locally};
pub use netns::bind_in_netns;
pub use server::{ServerHandle, serve};
pub use upstream::{UPSTREAM_TIMEOUT, forward};

/// What one container can resolve: netd's view of the networks it is attached to.
///
/// `scope` identifies the asking container (whatever string netd passed to [`serve`]).
/// The server calls these on tokio workers for every query, so they must answer from
/// memory: no I/O, no waiting on a lock held across anything slow.
pub trait Names: Send + Sync + 'static {
    /// IPv4 addresses of `name` as seen from the container `scope`.
    ///
    /// `name` is already lower-cased and has no trailing dot. `None` means "not a local
    /// name" and the query is forwarded upstream; `Some` (even empty) makes the name local,
    /// so queries of other types for it get an empty answer instead of being forwarded.
    fn lookup_v4(&self, scope: &str, name: &str) -> Option<Vec<Ipv4Addr>>;

    /// The name of a container address as seen from `scope`, for PTR answers (with or
    /// without a trailing dot). `None` forwards the query upstream.
    fn lookup_ptr(&self, scope: &str, ip: Ipv4Addr) -> Option<String>;

    /// Upstream resolvers for `scope`, tried in order. Empty means non-local names get
    /// SERVFAIL.
    fn upstreams(&self, scope: &str) -> Vec<SocketAddr>;
}
