//! Serving queries over a UDP socket and a TCP listener.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    task::JoinSet,
    time::{sleep, timeout},
};

use crate::{
    Names,
    local::{Decision, Transport, answer_locally},
    upstream::forward,
    wire,
};

/// UDP queries being forwarded at once; beyond this new ones are dropped (the client
/// retries) so that a flood cannot grow memory without bound.
const MAX_UDP_FORWARDS_IN_FLIGHT: usize = 256;

/// Open TCP connections at once; beyond this new ones are closed at once.
const MAX_TCP_CONNECTIONS: usize = 64;

/// How long a TCP connection may sit between queries (RFC 7766 suggests seconds).
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long reading the rest of a started TCP query, or writing a reply, may take.
const TCP_IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause after a failed accept or receive, so a persistent error (say EMFILE) does not
/// spin a worker.
const ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Keeps a server started by [`serve`] running. Dropping it aborts its tasks, which
/// closes the sockets and every connection and forward in flight.
#[derive(Debug)]
#[must_use = "the server stops when its handle is dropped"]
pub struct ServerHandle {
    tasks: JoinSet<()>,
}

/// Serves DNS on `udp` and `tcp` (2-byte length-prefixed messages, several queries per
/// connection, answered in order, closed after [`TCP_IDLE_TIMEOUT`] idle) for the
/// container `scope`, until the returned handle is dropped.
///
/// Local answers come from [`answer_locally`]; everything else goes to
/// `names.upstreams(scope)` through [`forward`]. A forwarded reply too large for a UDP
/// client is cut down to its header and question with TC set, so the client retries over
/// TCP. Must be called within a tokio runtime.
pub fn serve(
    scope: String,
    udp: UdpSocket,
    tcp: TcpListener,
    names: Arc<dyn Names>,
) -> ServerHandle {
    let scope: Arc<str> = scope.into();
    let mut tasks = JoinSet::new();
    tasks.spawn(serve_udp(scope.clone(), Arc::new(udp), names.clone()));
    tasks.spawn(serve_tcp(scope, tcp, names));
    ServerHandle { tasks }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

async fn serve_udp(scope: Arc<str>, socket: Arc<UdpSocket>, names: Arc<dyn Names>) {
    // Forwards live in this set so that aborting this task aborts them too.
    let mut forwards = JoinSet::new();
    let mut buffer = vec![0u8; usize::from(u16::MAX)];
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buffer) => {
                let (len, client) = match received {
                    Ok(received) => received,
                    Err(error) => {
                        tracing::warn!(%scope, %error, "DNS UDP receive failed");
                        sleep(ERROR_BACKOFF).await;
                        continue;
                    }
                };
                let query = &buffer[..len];
                match answer_locally(query, Transport::Udp, &scope, &*names) {
                    None => {}
                    Some(Decision::Reply(reply)) => send_reply(&socket, &reply, client).await,
                    Some(Decision::Forward) if forwards.len() >= MAX_UDP_FORWARDS_IN_FLIGHT => {
                        tracing::debug!(%scope, %client, "too many forwards in flight, dropping query");
                    }
                    Some(Decision::Forward) => {
                        let upstreams = names.upstreams(&scope);
                        let query = query.to_vec();
                        let socket = socket.clone();
                        forwards.spawn(async move {
                            let reply = forward(&query, &upstreams).await;
                            let reply = wire::fit_forwarded_reply(reply, wire::client_udp_limit(&query));
                            send_reply(&socket, &reply, client).await;
                        });
                    }
                }
            }
            Some(_) = forwards.join_next(), if !forwards.is_empty() => {}
        }
    }
}

async fn send_reply(socket: &UdpSocket, reply: &[u8], client: SocketAddr) {
    if reply.is_empty() {
        return;
    }
    if let Err(error) = socket.send_to(reply, client).await {
        tracing::debug!(%client, %error, "DNS UDP reply not sent");
    }
}

async fn serve_tcp(scope: Arc<str>, listener: TcpListener, names: Arc<dyn Names>) {
    // Connections live in this set so that aborting this task closes them too.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, client)) if connections.len() < MAX_TCP_CONNECTIONS => {
                    let (scope, names) = (scope.clone(), names.clone());
                    connections.spawn(async move {
                        if let Err(error) = serve_tcp_connection(stream, &scope, &*names).await {
                            tracing::debug!(%scope, %client, %error, "DNS TCP connection ended");
                        }
                    });
                }
                Ok((_, client)) => {
                    tracing::debug!(%scope, %client, "too many DNS TCP connections, closing");
                }
                Err(error) => {
                    tracing::warn!(%scope, %error, "DNS TCP accept failed");
                    sleep(ERROR_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_tcp_connection(
    mut stream: TcpStream,
    scope: &str,
    names: &dyn Names,
) -> io::Result<()> {
    loop {
        let mut prefix = [0u8; 2];
        match timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut prefix)).await {
            Err(_idle) => return Ok(()),
            Ok(Err(error)) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(result) => result?,
        };
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        io_within(stream.read_exact(&mut query)).await?;

        let reply = match answer_locally(&query, Transport::Tcp, scope, names) {
            // Nothing sane to say to a client sending such messages: hang up.
            None => return Ok(()),
            Some(Decision::Reply(reply)) => reply,
            Some(Decision::Forward) => forward(&query, &names.upstreams(scope)).await,
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "reply too long for TCP",
            ));
        };
        if reply.is_empty() {
            return Ok(());
        }
        let mut framed = Vec::with_capacity(2 + reply.len());
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        io_within(stream.write_all(&framed)).await?;
    }
}

async fn io_within<T>(operation: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    timeout(TCP_IO_TIMEOUT, operation)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "DNS TCP client too slow"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::addresses;
    use hickory_proto::{
        op::{Message, MessageType, OpCode, Query, ResponseCode},
        rr::{Name, RData, Record, RecordType, rdata::A},
    };
    use std::net::Ipv4Addr;

    const WEB: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
    const REMOTE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 80);

    struct TestNames {
        upstreams: Vec<SocketAddr>,
    }

    impl Names for TestNames {
        fn lookup_v4(&self, scope: &str, name: &str) -> Option<Vec<Ipv4Addr>> {
            (scope == "c1" && name == "web").then(|| vec![WEB])
        }

        fn lookup_ptr(&self, _scope: &str, _ip: Ipv4Addr) -> Option<String> {
            None
        }

        fn upstreams(&self, _scope: &str) -> Vec<SocketAddr> {
            self.upstreams.clone()
        }
    }

    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut message = Message::new(id, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        message.to_vec().unwrap()
    }

    /// A fake upstream on loopback answering every A query with `answers`.
    async fn fake_upstream(answers: Vec<Ipv4Addr>) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 65535];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buffer).await else {
                    return;
                };
                let asked = Message::from_vec(&buffer[..len]).unwrap();
                let mut reply =
                    Message::new(asked.metadata.id, MessageType::Response, OpCode::Query);
                reply.add_queries(asked.queries.iter().cloned());
                let name = asked.queries[0].name().clone();
                for &ip in &answers {
                    reply.add_answer(Record::from_rdata(name.clone(), 30, RData::A(A(ip))));
                }
                let _ = socket.send_to(&reply.to_vec().unwrap(), from).await;
            }
        });
        addr
    }

    async fn start(upstreams: Vec<SocketAddr>) -> (ServerHandle, SocketAddr, SocketAddr) {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (udp_addr, tcp_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        let handle = serve("c1".into(), udp, tcp, Arc::new(TestNames { upstreams }));
        (handle, udp_addr, tcp_addr)
    }

    async fn ask_udp(server: SocketAddr, bytes: &[u8]) -> Message {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(server).await.unwrap();
        client.send(bytes).await.unwrap();
        let mut buffer = vec![0u8; 65535];
        let len = timeout(Duration::from_secs(5), client.recv(&mut buffer))
            .await
            .expect("no UDP reply")
            .unwrap();
        Message::from_vec(&buffer[..len]).unwrap()
    }

    async fn ask_tcp(stream: &mut TcpStream, bytes: &[u8]) -> Message {
        let len = u16::try_from(bytes.len()).unwrap().to_be_bytes();
        stream.write_all(&[&len[..], bytes].concat()).await.unwrap();
        let mut prefix = [0u8; 2];
        timeout(Duration::from_secs(5), stream.read_exact(&mut prefix))
            .await
            .expect("no TCP reply")
            .unwrap();
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        stream.read_exact(&mut reply).await.unwrap();
        Message::from_vec(&reply).unwrap()
    }

    #[tokio::test]
    async fn udp_clients_get_local_and_forwarded_answers() {
        let upstream = fake_upstream(vec![REMOTE]).await;
        let (_server, udp, _) = start(vec![upstream]).await;

        let local = ask_udp(udp, &query(1, "web.")).await;
        assert_eq!((local.metadata.id, addresses(&local)), (1, vec![WEB]));

        let forwarded = ask_udp(udp, &query(2, "example.com.")).await;
        assert_eq!(
            (forwarded.metadata.id, addresses(&forwarded)),
            (2, vec![REMOTE])
        );
    }

    #[tokio::test]
    async fn tcp_clients_get_several_answers_on_one_connection() {
        let upstream = fake_upstream(vec![REMOTE]).await;
        let (_server, _, tcp) = start(vec![upstream]).await;
        let mut stream = TcpStream::connect(tcp).await.unwrap();

        let local = ask_tcp(&mut stream, &query(3, "WEB.")).await;
        assert_eq!((local.metadata.id, addresses(&local)), (3, vec![WEB]));

        let forwarded = ask_tcp(&mut stream, &query(4, "example.com.")).await;
        assert_eq!(
            (forwarded.metadata.id, addresses(&forwarded)),
            (4, vec![REMOTE])
        );
    }

    #[tokio::test]
    async fn without_upstreams_non_local_names_get_servfail() {
        let (_server, udp, _) = start(Vec::new()).await;
        let reply = ask_udp(udp, &query(5, "example.com.")).await;
        assert_eq!(reply.metadata.id, 5);
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    }

    #[tokio::test]
    async fn forwarded_replies_too_large_for_a_udp_client_are_cut_with_tc() {
        let many: Vec<Ipv4Addr> = (1..=60).map(|i| Ipv4Addr::new(198, 51, 100, i)).collect();
        // The fake answers over UDP without truncating, like a server honouring a larger
        // EDNS size than this client can take.
        let upstream = fake_upstream(many).await;
        let (_server, udp, _) = start(vec![upstream]).await;
        let reply = ask_udp(udp, &query(6, "big.example.")).await;
        assert!(reply.metadata.truncation);
        assert!(reply.answers.is_empty());
        assert_eq!(reply.queries.len(), 1);
    }

    #[tokio::test]
    async fn dropping_the_handle_closes_the_sockets() {
        let (server, _, tcp) = start(Vec::new()).await;
        drop(server);
        let mut refused = false;
        for _ in 0..50 {
            if TcpStream::connect(tcp).await.is_err() {
                refused = true;
                break;
            }
            sleep(Duration::from_millis(20)).await;
        }
        assert!(refused, "the TCP listener outlived its handle");
    }
}
