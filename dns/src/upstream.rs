//! Relaying queries to a container's upstream resolvers.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    time::timeout,
};

use crate::{local::servfail_for, wire};

/// How long one upstream gets to answer over UDP, and again over TCP after a truncated
/// reply, before the next one is tried. Docker's embedded DNS also waits about 2 s.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Relays `query` to each of `upstreams` in turn and returns the first valid reply, with
/// the client's id restored but otherwise byte-for-byte as the upstream sent it.
///
/// Each attempt uses a fresh ephemeral UDP socket connected to that upstream and a random
/// id, so only a datagram from the server asked, carrying that id and the same question,
/// is accepted (anything else is ignored until [`UPSTREAM_TIMEOUT`]). A truncated (TC)
/// reply is retried over TCP to the same server. When every upstream fails, or there are
/// none, the result is SERVFAIL built from `query`.
///
/// The result is empty only when `query` has no complete header, i.e. there is nothing
/// to reply to. Sockets are created in the calling thread's network namespace.
pub async fn forward(query: &[u8], upstreams: &[SocketAddr]) -> Vec<u8> {
    forward_with_timeout(query, upstreams, UPSTREAM_TIMEOUT).await
}

pub(crate) async fn forward_with_timeout(
    query: &[u8],
    upstreams: &[SocketAddr],
    per_attempt: Duration,
) -> Vec<u8> {
    let Some(client_id) = wire::id(query).filter(|_| query.len() >= wire::HEADER_LEN) else {
        return Vec::new();
    };
    for &upstream in upstreams {
        match exchange(query, upstream, per_attempt).await {
            Ok(mut reply) => {
                wire::set_id(&mut reply, client_id);
                return reply;
            }
            Err(error) => tracing::debug!(%upstream, %error, "upstream did not answer"),
        }
    }
    servfail_for(query)
}

async fn exchange(
    query: &[u8],
    upstream: SocketAddr,
    per_attempt: Duration,
) -> io::Result<Vec<u8>> {
    let mut outgoing = query.to_vec();
    // The client's id may be predictable; a fresh random one keeps off-path spoofers
    // guessing.
    wire::set_id(&mut outgoing, rand::random::<u16>().to_be_bytes());

    let reply = within(per_attempt, exchange_udp(&outgoing, upstream)).await?;
    if !wire::is_truncated(&reply) {
        return Ok(reply);
    }
    within(per_attempt, exchange_tcp(&outgoing, upstream)).await
}

async fn within<T>(limit: Duration, attempt: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    timeout(limit, attempt)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no reply in time"))?
}

async fn exchange_udp(outgoing: &[u8], upstream: SocketAddr) -> io::Result<Vec<u8>> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    // Connecting makes the kernel drop datagrams from any other source, and turns an
    // ICMP port-unreachable into an immediate error instead of a timeout.
    socket.connect(upstream).await?;
    socket.send(outgoing).await?;
    let mut buffer = vec![0u8; usize::from(u16::MAX)];
    loop {
        let len = socket.recv(&mut buffer).await?;
        let reply = &buffer[..len];
        if wire::answers_question_of(reply, outgoing) {
            buffer.truncate(len);
            return Ok(buffer);
        }
        tracing::debug!(%upstream, len, "ignoring a datagram that does not answer the query");
    }
}

async fn exchange_tcp(outgoing: &[u8], upstream: SocketAddr) -> io::Result<Vec<u8>> {
    let len = u16::try_from(outgoing.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long for TCP"))?;
    let mut stream = TcpStream::connect(upstream).await?;
    let mut framed = Vec::with_capacity(2 + outgoing.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(outgoing);
    stream.write_all(&framed).await?;

    let mut prefix = [0u8; 2];
    stream.read_exact(&mut prefix).await?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    stream.read_exact(&mut reply).await?;
    if !wire::answers_question_of(&reply, outgoing) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "TCP reply does not answer the query",
        ));
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{RCODE_SERVFAIL, rcode};
    use hickory_proto::{
        op::{Message, MessageType, OpCode, Query},
        rr::{Name, RData, Record, RecordType, rdata::A},
    };
    use tokio::net::TcpListener;

    const SHORT: Duration = Duration::from_millis(300);

    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut message = Message::new(id, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        message.to_vec().unwrap()
    }

    /// An upstream's reply to `query_bytes` (same id and question) with `answers` A
    /// records, optionally marked truncated.
    fn upstream_reply(query_bytes: &[u8], answers: &[Ipv4Addr], truncated: bool) -> Vec<u8> {
        let asked = Message::from_vec(query_bytes).unwrap();
        let mut reply = Message::new(asked.metadata.id, MessageType::Response, OpCode::Query);
        reply.metadata.recursion_available = true;
        reply.metadata.truncation = truncated;
        reply.add_queries(asked.queries.iter().cloned());
        let name = asked.queries[0].name().clone();
        for &ip in answers {
            reply.add_answer(Record::from_rdata(name.clone(), 42, RData::A(A(ip))));
        }
        reply.to_vec().unwrap()
    }

    #[tokio::test]
    async fn reply_comes_back_byte_for_byte_with_the_clients_id() {
        let listening = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstream = listening.local_addr().unwrap();
        let answers = [Ipv4Addr::new(192, 0, 2, 7)];
        let sent_reply = tokio::spawn(async move {
            let mut buffer = vec![0u8; 65535];
            let (len, from) = listening.recv_from(&mut buffer).await.unwrap();
            let reply = upstream_reply(&buffer[..len], &answers, false);
            listening.send_to(&reply, from).await.unwrap();
            (buffer[..len].to_vec(), reply)
        });

        let client_query = query(0xabcd, "example.com.");
        let got = forward(&client_query, &[upstream]).await;
        let (upstream_saw, mut expected) = sent_reply.await.unwrap();

        assert_eq!(
            upstream_saw[2..],
            client_query[2..],
            "the query is relayed unchanged"
        );
        expected[..2].copy_from_slice(&0xabcdu16.to_be_bytes());
        assert_eq!(got, expected);
    }

    /// Answers whatever arrives on `listening`, forever.
    fn answer_forever(listening: UdpSocket, answers: Vec<Ipv4Addr>, truncated: bool) {
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 65535];
            loop {
                let Ok((len, from)) = listening.recv_from(&mut buffer).await else {
                    return;
                };
                let reply = upstream_reply(&buffer[..len], &answers, truncated);
                let _ = listening.send_to(&reply, from).await;
            }
        });
    }

    fn addresses_in(reply: &[u8]) -> Vec<Ipv4Addr> {
        crate::testutil::addresses(&Message::from_vec(reply).unwrap())
    }

    #[tokio::test]
    async fn a_silent_first_upstream_is_skipped_after_the_timeout() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let answering = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstreams = [
            silent.local_addr().unwrap(),
            answering.local_addr().unwrap(),
        ];
        answer_forever(answering, vec![Ipv4Addr::new(192, 0, 2, 1)], false);

        let got = forward(&query(1, "example.com."), &upstreams).await;
        assert_eq!(addresses_in(&got), [Ipv4Addr::new(192, 0, 2, 1)]);
        assert_eq!(wire::id(&got), Some(1u16.to_be_bytes()));
    }

    #[tokio::test]
    async fn a_closed_first_upstream_is_skipped() {
        let closed = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let answering = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstreams = [closed_addr, answering.local_addr().unwrap()];
        answer_forever(answering, vec![Ipv4Addr::new(192, 0, 2, 2)], false);

        let got = forward_with_timeout(&query(2, "example.com."), &upstreams, SHORT).await;
        assert_eq!(addresses_in(&got), [Ipv4Addr::new(192, 0, 2, 2)]);
    }

    #[tokio::test]
    async fn all_upstreams_dead_or_none_gives_servfail_for_the_query() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let closed = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let client_query = query(3, "example.com.");

        for upstreams in [vec![silent.local_addr().unwrap(), closed_addr], vec![]] {
            let got = forward_with_timeout(&client_query, &upstreams, SHORT).await;
            assert_eq!(rcode(&got), Some(RCODE_SERVFAIL), "{upstreams:?}");
            let reply = Message::from_vec(&got).unwrap();
            assert_eq!(reply.metadata.id, 3);
            assert_eq!(
                reply.queries,
                Message::from_vec(&client_query).unwrap().queries
            );
        }
    }

    #[tokio::test]
    async fn replies_from_another_source_or_with_another_id_or_question_are_ignored() {
        let listening = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstream = listening.local_addr().unwrap();
        let impostor = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 65535];
            let (len, from) = listening.recv_from(&mut buffer).await.unwrap();
            let asked = buffer[..len].to_vec();
            let evil = [Ipv4Addr::new(6, 6, 6, 6)];

            impostor
                .send_to(&upstream_reply(&asked, &evil, false), from)
                .await
                .unwrap();
            let mut wrong_id = upstream_reply(&asked, &evil, false);
            wrong_id[0] ^= 0xff;
            listening.send_to(&wrong_id, from).await.unwrap();
            let mut other_question = upstream_reply(&query(0, "evil.example."), &evil, false);
            other_question[..2].copy_from_slice(&asked[..2]);
            listening.send_to(&other_question, from).await.unwrap();

            let good = upstream_reply(&asked, &[Ipv4Addr::new(192, 0, 2, 3)], false);
            listening.send_to(&good, from).await.unwrap();
        });

        let got = forward(&query(4, "example.com."), &[upstream]).await;
        assert_eq!(addresses_in(&got), [Ipv4Addr::new(192, 0, 2, 3)]);
    }

    #[tokio::test]
    async fn a_truncated_udp_reply_is_retried_over_tcp_to_the_same_server() {
        // Bind UDP and TCP on one port; retry if another test grabbed the TCP side.
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()).await {
                break (udp, tcp);
            }
        };
        let upstream = udp.local_addr().unwrap();
        answer_forever(udp, vec![Ipv4Addr::new(192, 0, 2, 9)], true);

        let full: Vec<Ipv4Addr> = (1..=50).map(|i| Ipv4Addr::new(198, 51, 100, i)).collect();
        let tcp_reply = tokio::spawn(async move {
            let (mut stream, _) = tcp.accept().await.unwrap();
            let mut prefix = [0u8; 2];
            stream.read_exact(&mut prefix).await.unwrap();
            let mut asked = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
            stream.read_exact(&mut asked).await.unwrap();
            let reply = upstream_reply(&asked, &full, false);
            let len = u16::try_from(reply.len()).unwrap().to_be_bytes();
            stream.write_all(&len).await.unwrap();
            stream.write_all(&reply).await.unwrap();
            reply
        });

        let got = forward(&query(5, "big.example."), &[upstream]).await;
        let mut expected = tcp_reply.await.unwrap();
        expected[..2].copy_from_slice(&5u16.to_be_bytes());
        assert_eq!(got, expected);
        assert!(!wire::is_truncated(&got));
        assert_eq!(addresses_in(&got).len(), 50);
    }

    #[tokio::test]
    async fn a_headerless_query_yields_nothing_to_send() {
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let got = forward(&[1, 2, 3], &[upstream.local_addr().unwrap()]).await;
        assert!(got.is_empty());
    }
}
