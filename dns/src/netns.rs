//! Creating the server's sockets inside a container's network namespace.

use std::{
    fs::File,
    io,
    net::SocketAddrV4,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use nix::{
    sched::{CloneFlags, setns},
    sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, listen, setsockopt, socket,
        sockopt,
    },
};
use tokio::net::{TcpListener, UdpSocket};

/// Pending TCP connections the kernel queues for the listener.
const TCP_BACKLOG: i32 = 128;

/// Creates a UDP socket and a TCP listener bound to `addr` inside the network namespace
/// bind-mounted at `netns` (a file such as `/run/berth/netns/<id>`).
///
/// A socket belongs to the namespace it was created in for its whole life, so a
/// throwaway `std::thread` joins the namespace, creates and binds both, hands them back
/// and exits; no tokio worker ever changes namespace. The TCP listener has SO_REUSEADDR
/// so that a restarted netd can bind again at once.
pub async fn bind_in_netns(
    netns: &Path,
    addr: SocketAddrV4,
) -> io::Result<(UdpSocket, TcpListener)> {
    let netns = netns.to_path_buf();
    let (sockets_tx, sockets_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-dns-bind".into())
        .spawn(move || {
            // The receiver only goes away if the caller gave up; the sockets then close.
            let _ = sockets_tx.send(bind_std_in_netns(&netns, addr));
        })?;
    let (udp, tcp) = sockets_rx
        .await
        .map_err(|_| io::Error::other("the netns bind thread ended without a result"))??;
    Ok((UdpSocket::from_std(udp)?, TcpListener::from_std(tcp)?))
}

/// Runs on the throwaway thread only: it leaves that thread in the target namespace.
fn bind_std_in_netns(
    netns: &PathBuf,
    addr: SocketAddrV4,
) -> io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    let with_context = |what: &str, error: io::Error| {
        io::Error::new(
            error.kind(),
            format!("{what} in network namespace {}: {error}", netns.display()),
        )
    };
    let namespace = File::open(netns).map_err(|error| with_context("open", error))?;
    setns(&namespace, CloneFlags::CLONE_NEWNET)
        .map_err(|errno| with_context("setns", errno.into()))?;

    let udp = std::net::UdpSocket::bind(addr)
        .map_err(|error| with_context(&format!("bind UDP {addr}"), error))?;
    udp.set_nonblocking(true)?;
    let tcp = reusable_tcp_listener(addr)
        .map_err(|error| with_context(&format!("listen on TCP {addr}"), error))?;
    Ok((udp, tcp))
}

fn reusable_tcp_listener(addr: SocketAddrV4) -> io::Result<std::net::TcpListener> {
    let socket = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&socket, sockopt::ReuseAddr, &true)?;
    bind(socket.as_raw_fd(), &SockaddrIn::from(addr))?;
    listen(&socket, Backlog::new(TCP_BACKLOG)?)?;
    Ok(std::net::TcpListener::from(socket))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::addresses;
    use crate::{Names, serve};
    use hickory_proto::{
        op::{Message, MessageType, OpCode, Query, ResponseCode},
        rr::{Name, RecordType},
    };
    use nix::{
        mount::{MntFlags, MsFlags, mount, umount2},
        sched::unshare,
    };
    use std::{
        io::{Read, Write},
        net::{Ipv4Addr, SocketAddr, TcpStream},
        process::Command,
        sync::Arc,
        time::Duration,
    };

    const EMBEDDED_DNS: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 11), 53);
    const WEB: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);

    /// A fresh network namespace with `lo` up, bind-mounted on a file in a temporary
    /// directory; unmounted and removed on drop, also when a test fails.
    struct TestNetns {
        path: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl TestNetns {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("net");
            File::create(&path).unwrap();
            let netns = Self { path, _dir: dir };
            let target = netns.path.clone();
            std::thread::spawn(move || {
                unshare(CloneFlags::CLONE_NEWNET).unwrap();
                // Children inherit the spawning thread's namespace.
                let status = Command::new("ip")
                    .args(["link", "set", "lo", "up"])
                    .status()
                    .unwrap();
                assert!(status.success(), "ip link set lo up: {status}");
                mount(
                    Some("/proc/thread-self/ns/net"),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .unwrap();
            })
            .join()
            .unwrap();
            netns
        }

        /// Starts `work` on a thread inside the namespace, off the runtime's threads.
        fn spawn_inside<T: Send + 'static>(
            &self,
            work: impl FnOnce() -> T + Send + 'static,
        ) -> tokio::sync::oneshot::Receiver<T> {
            let path = self.path.clone();
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                setns(File::open(&path).unwrap(), CloneFlags::CLONE_NEWNET).unwrap();
                let _ = done_tx.send(work());
            });
            done_rx
        }

        async fn run_inside<T: Send + 'static>(
            &self,
            work: impl FnOnce() -> T + Send + 'static,
        ) -> T {
            self.spawn_inside(work)
                .await
                .expect("the thread inside the namespace panicked")
        }
    }

    impl Drop for TestNetns {
        fn drop(&mut self) {
            let _ = umount2(&self.path, MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(&self.path);
        }
    }

    struct OneName;

    impl Names for OneName {
        fn lookup_v4(&self, _scope: &str, name: &str) -> Option<Vec<Ipv4Addr>> {
            (name == "web").then(|| vec![WEB])
        }

        fn lookup_ptr(&self, _scope: &str, _ip: Ipv4Addr) -> Option<String> {
            None
        }

        fn upstreams(&self, _scope: &str) -> Vec<SocketAddr> {
            Vec::new()
        }
    }

    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut message = Message::new(id, MessageType::Query, OpCode::Query);
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        message.to_vec().unwrap()
    }

    fn ask_udp_blocking(bytes: &[u8]) -> Message {
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.send_to(bytes, EMBEDDED_DNS).unwrap();
        let mut buffer = [0u8; 4096];
        let len = client.recv(&mut buffer).unwrap();
        Message::from_vec(&buffer[..len]).unwrap()
    }

    fn ask_tcp_blocking(bytes: &[u8]) -> Message {
        let mut stream =
            TcpStream::connect_timeout(&EMBEDDED_DNS.into(), Duration::from_secs(5)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let len = u16::try_from(bytes.len()).unwrap().to_be_bytes();
        stream.write_all(&[&len[..], bytes].concat()).unwrap();
        let mut prefix = [0u8; 2];
        stream.read_exact(&mut prefix).unwrap();
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        stream.read_exact(&mut reply).unwrap();
        Message::from_vec(&reply).unwrap()
    }

    fn current_netns() -> PathBuf {
        std::fs::read_link("/proc/thread-self/ns/net").unwrap()
    }

    #[tokio::test]
    async fn server_bound_in_a_netns_answers_clients_inside_it() {
        let netns = TestNetns::new();
        let before = current_netns();
        let (udp, tcp) = bind_in_netns(&netns.path, EMBEDDED_DNS).await.unwrap();
        assert_eq!(
            current_netns(),
            before,
            "the runtime thread changed namespace"
        );

        let _server = serve("c1".into(), udp, tcp, Arc::new(OneName));
        let (over_udp, over_tcp, forwarded) = netns
            .run_inside(|| {
                (
                    ask_udp_blocking(&query(1, "web.")),
                    ask_tcp_blocking(&query(2, "web.")),
                    ask_udp_blocking(&query(3, "example.com.")),
                )
            })
            .await;
        assert_eq!((over_udp.metadata.id, addresses(&over_udp)), (1, vec![WEB]));
        assert_eq!((over_tcp.metadata.id, addresses(&over_tcp)), (2, vec![WEB]));
        assert_eq!(forwarded.metadata.response_code, ResponseCode::ServFail);
    }

    #[tokio::test]
    async fn the_address_can_be_bound_again_right_after_a_server_stops() {
        let netns = TestNetns::new();
        let (udp, tcp) = bind_in_netns(&netns.path, EMBEDDED_DNS).await.unwrap();
        let server = serve("c1".into(), udp, tcp, Arc::new(OneName));

        // A client still connected when the server stops makes the server close first,
        // leaving its side in TIME_WAIT as a restarting netd would: without SO_REUSEADDR
        // the address stays taken for a minute.
        let (answered_tx, answered_rx) = tokio::sync::oneshot::channel();
        let client = netns.spawn_inside(move || {
            let mut stream =
                TcpStream::connect_timeout(&EMBEDDED_DNS.into(), Duration::from_secs(5)).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let bytes = query(1, "web.");
            let len = u16::try_from(bytes.len()).unwrap().to_be_bytes();
            stream.write_all(&[&len[..], &bytes].concat()).unwrap();
            let mut reply = [0u8; 512];
            let got = stream.read(&mut reply).unwrap();
            answered_tx.send(got).unwrap();
            // Wait for the server to hang up.
            while stream.read(&mut reply).unwrap() > 0 {}
        });
        assert!(answered_rx.await.unwrap() > 0);
        drop(server);
        client.await.unwrap();

        let mut rebound = None;
        for _ in 0..50 {
            match bind_in_netns(&netns.path, EMBEDDED_DNS).await {
                Ok(sockets) => {
                    rebound = Some(sockets);
                    break;
                }
                // The aborted UDP task releases its socket on its next poll.
                Err(error) if error.kind() == io::ErrorKind::AddrInUse => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => panic!("rebind failed: {error}"),
            }
        }
        assert!(rebound.is_some(), "127.0.0.11:53 stayed in use");
    }

    #[tokio::test]
    async fn a_missing_namespace_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent");
        let error = bind_in_netns(&missing, EMBEDDED_DNS).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert!(error.to_string().contains("absent"), "{error}");
    }
}
