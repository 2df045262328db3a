//! Deciding a query: answer it from [`Names`], forward it, or drop it.

use std::net::Ipv4Addr;

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, ResponseCode},
    rr::{
        DNSClass, Name, RData, Record, RecordType,
        rdata::{A, PTR},
    },
};
use rand::seq::SliceRandom;

use crate::{
    Names,
    wire::{self, RCODE_FORMERR, RCODE_NOTIMP, RCODE_SERVFAIL},
};

/// TTL of locally answered records; Docker's embedded DNS uses 600 s too.
pub const LOCAL_TTL: u32 = 600;

/// EDNS payload size we advertise when the client used EDNS: the DNS flag day 2020 value,
/// which fits one unfragmented datagram on any common path.
const ADVERTISED_EDNS_PAYLOAD: u16 = 1232;

/// What to do with one query message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send these bytes back to the client as the reply.
    Reply(Vec<u8>),
    /// Not ours to answer: relay the query, unchanged, with [`forward`](crate::forward).
    Forward,
}

/// How the query arrived, which bounds the size of a local reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Replies over 512 bytes (or the client's EDNS size) are truncated with TC set.
    Udp,
    /// Replies up to 65535 bytes (the 2-byte length prefix).
    Tcp,
}

impl Transport {
    fn reply_limit(self, query: &Message) -> usize {
        match self {
            // `max_payload` is never below the classic 512 bytes.
            Self::Udp => usize::from(query.max_payload()),
            Self::Tcp => usize::from(u16::MAX),
        }
    }
}

/// Decides one query from its wire bytes, as seen from the container `scope`. Pure: no
/// I/O beyond calling `names`.
///
/// - Class IN, a local name (`Names::lookup_v4` is `Some`): type A gets the addresses
///   (TTL [`LOCAL_TTL`], shuffled, AA off, RA on); any other type gets an empty NOERROR
///   answer and is not forwarded, as Docker does.
/// - PTR for `d.c.b.a.in-addr.arpa` of a local address gets its name.
/// - Anything else: [`Decision::Forward`].
/// - Opcode other than QUERY: NOTIMP. Not exactly one question, or a body that does not
///   parse: FORMERR.
///
/// Returns `None` (drop, send nothing) when there is no complete header to reply to or the
/// message is itself a response, so that two servers can never bounce errors at each
/// other.
pub fn answer_locally(
    query: &[u8],
    transport: Transport,
    scope: &str,
    names: &dyn Names,
) -> Option<Decision> {
    if query.len() < wire::HEADER_LEN || wire::is_response(query) {
        return None;
    }
    // miekg/dns, under Docker's resolver, refuses other opcodes with NOTIMP and anything
    // but exactly one question with FORMERR before parsing further.
    if wire::opcode(query) != Some(0) {
        return wire::error_from_header(query, RCODE_NOTIMP).map(Decision::Reply);
    }
    if wire::question_count(query) != Some(1) {
        return wire::error_from_header(query, RCODE_FORMERR).map(Decision::Reply);
    }
    let Ok(message) = Message::from_vec(query) else {
        return wire::error_from_header(query, RCODE_FORMERR).map(Decision::Reply);
    };
    let question = message.queries.first()?;
    if question.query_class() != DNSClass::IN {
        return Some(Decision::Forward);
    }

    let qname = question.name();
    if question.query_type() == RecordType::PTR
        && let Some(ip) = parse_reverse_v4(qname)
        && let Some(host) = names.lookup_ptr(scope, ip)
    {
        let mut reply = reply_skeleton(&message);
        if let Some(host) = ptr_target(&host) {
            reply.add_answer(Record::from_rdata(
                qname.clone(),
                LOCAL_TTL,
                RData::PTR(PTR(host)),
            ));
        } else {
            tracing::warn!(scope, %ip, host, "local PTR name is not a valid DNS name");
            reply.metadata.response_code = ResponseCode::ServFail;
        }
        return Some(encode_within(reply, transport.reply_limit(&message), query));
    }

    let Some(key) = lookup_key(qname) else {
        return Some(Decision::Forward);
    };
    let Some(mut addresses) = names.lookup_v4(scope, &key) else {
        return Some(Decision::Forward);
    };
    let mut reply = reply_skeleton(&message);
    if question.query_type() == RecordType::A {
        // Docker shuffles so that clients taking the first address spread their load.
        addresses.shuffle(&mut rand::rng());
        reply.answers = addresses
            .into_iter()
            .map(|ip| Record::from_rdata(qname.clone(), LOCAL_TTL, RData::A(A(ip))))
            .collect();
    }
    Some(encode_within(reply, transport.reply_limit(&message), query))
}

/// A reply to `query` with Docker's flags (miekg's `SetReply` plus RA): id, opcode, RD and
/// CD echoed, not authoritative, recursion available, the question echoed, and an OPT
/// record when the client sent one (RFC 6891 6.1.1).
pub(crate) fn reply_skeleton(query: &Message) -> Message {
    let mut reply = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.checking_disabled = query.metadata.checking_disabled;
    reply.metadata.recursion_available = true;
    reply.add_queries(query.queries.iter().cloned());
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(ADVERTISED_EDNS_PAYLOAD);
        reply.set_edns(edns);
    }
    reply
}

/// SERVFAIL for `query`, with its question when it parses, else header-only; empty when
/// not even the header is there (nothing can be sent back then).
pub(crate) fn servfail_for(query: &[u8]) -> Vec<u8> {
    let parsed = Message::from_vec(query)
        .ok()
        .filter(|message| message.queries.len() == 1);
    let built = parsed.and_then(|message| {
        let mut reply = reply_skeleton(&message);
        reply.metadata.op_code = message.metadata.op_code;
        reply.metadata.response_code = ResponseCode::ServFail;
        reply.to_vec().ok()
    });
    built
        .or_else(|| wire::error_from_header(query, RCODE_SERVFAIL))
        .unwrap_or_default()
}

/// Encodes `reply`, keeping as many answers as fit in `limit` and setting TC when some
/// had to go. Partial answers (rather than none, as miekg's `Truncate` does for Docker)
/// matter for stub resolvers that never retry over TCP, such as older musl.
fn encode_within(mut reply: Message, limit: usize, query: &[u8]) -> Decision {
    match reply.to_vec() {
        Ok(encoded) if encoded.len() <= limit => return Decision::Reply(encoded),
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(%error, "could not encode a local answer");
            return Decision::Reply(servfail_for(query));
        }
    }

    reply.metadata.truncation = true;
    let answers = std::mem::take(&mut reply.answers);
    let fits = |reply: &mut Message, count: usize| {
        reply.answers.clear();
        reply.answers.extend_from_slice(&answers[..count]);
        reply.to_vec().ok().filter(|bytes| bytes.len() <= limit)
    };
    // Largest answer count that fits; zero always does, since a question is at most 260
    // bytes and the limit at least 512.
    let (mut fitting, mut too_many) = (0, answers.len());
    while too_many - fitting > 1 {
        let middle = fitting + (too_many - fitting) / 2;
        if fits(&mut reply, middle).is_some() {
            fitting = middle;
        } else {
            too_many = middle;
        }
    }
    match fits(&mut reply, fitting) {
        Some(bytes) => Decision::Reply(bytes),
        None => Decision::Reply(servfail_for(query)),
    }
}

/// The name as [`Names`] wants it: lower-case ASCII labels joined by dots, no trailing
/// dot. `None` for the root and for labels with bytes no container name can hold (a dot
/// inside a label, control characters, non-ASCII), which therefore cannot be local.
fn lookup_key(name: &Name) -> Option<String> {
    let mut key = String::with_capacity(name.len());
    for label in name.iter() {
        if label.is_empty() || !label.iter().all(|b| b.is_ascii_graphic() && *b != b'.') {
            return None;
        }
        if !key.is_empty() {
            key.push('.');
        }
        key.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
    }
    (!key.is_empty()).then_some(key)
}

/// The address named by `d.c.b.a.in-addr.arpa` (any case), if exactly that shape with
/// plain decimal octets.
fn parse_reverse_v4(name: &Name) -> Option<Ipv4Addr> {
    let mut labels = name.iter();
    let mut octets = [0u8; 4];
    for slot in octets.iter_mut().rev() {
        *slot = parse_octet(labels.next()?)?;
    }
    let in_addr = labels.next()?;
    let arpa = labels.next()?;
    let is_reverse_zone = in_addr.eq_ignore_ascii_case(b"in-addr")
        && arpa.eq_ignore_ascii_case(b"arpa")
        && labels.next().is_none();
    is_reverse_zone.then_some(Ipv4Addr::from(octets))
}

fn parse_octet(label: &[u8]) -> Option<u8> {
    if label.is_empty() || label.len() > 3 || !label.iter().all(u8::is_ascii_digit) {
        return None;
    }
    label.iter().try_fold(0u8, |value, digit| {
        value.checked_mul(10)?.checked_add(digit - b'0')
    })
}

fn ptr_target(host: &str) -> Option<Name> {
    let mut name = Name::from_ascii(host).ok()?;
    name.set_fqdn(true);
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{CLASSIC_UDP_LIMIT, RCODE_NOERROR, is_truncated, rcode};
    use hickory_proto::op::Query;
    use rand::{Rng, RngCore};
    use std::{collections::HashMap, net::SocketAddr, sync::Mutex};

    /// Names keyed by (scope, name), recording every name it was asked about.
    #[derive(Default)]
    struct FakeNames {
        hosts: HashMap<(String, String), Vec<Ipv4Addr>>,
        ptrs: HashMap<(String, Ipv4Addr), String>,
        asked: Mutex<Vec<String>>,
    }

    impl FakeNames {
        fn with_host(mut self, scope: &str, name: &str, addresses: &[Ipv4Addr]) -> Self {
            self.hosts
                .insert((scope.into(), name.into()), addresses.to_vec());
            self
        }

        fn with_ptr(mut self, scope: &str, ip: Ipv4Addr, name: &str) -> Self {
            self.ptrs.insert((scope.into(), ip), name.into());
            self
        }
    }

    impl Names for FakeNames {
        fn lookup_v4(&self, scope: &str, name: &str) -> Option<Vec<Ipv4Addr>> {
            self.asked.lock().unwrap().push(name.to_owned());
            self.hosts.get(&(scope.into(), name.into())).cloned()
        }

        fn lookup_ptr(&self, scope: &str, ip: Ipv4Addr) -> Option<String> {
            self.ptrs.get(&(scope.into(), ip)).cloned()
        }

        fn upstreams(&self, _scope: &str) -> Vec<SocketAddr> {
            Vec::new()
        }
    }

    const WEB: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);

    fn query(id: u16, name: &str, query_type: RecordType) -> Message {
        let mut message = Message::new(id, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(raw_name(name), query_type));
        message
    }

    /// A fully qualified name from dot-separated raw labels, including bytes that
    /// `Name::from_ascii` refuses but the wire allows.
    fn raw_name(dotted: &str) -> Name {
        let labels = dotted.split('.').filter(|label| !label.is_empty());
        let mut name = Name::from_labels(labels.map(str::as_bytes)).unwrap();
        name.set_fqdn(true);
        name
    }

    fn ask(names: &FakeNames, message: &Message, transport: Transport) -> Option<Decision> {
        answer_locally(&message.to_vec().unwrap(), transport, "c1", names)
    }

    fn reply_of(decision: Option<Decision>) -> Message {
        match decision {
            Some(Decision::Reply(bytes)) => Message::from_vec(&bytes).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn a_addresses(reply: &Message) -> Vec<Ipv4Addr> {
        reply
            .answers
            .iter()
            .map(|record| match &record.data {
                RData::A(A(ip)) => *ip,
                other => panic!("not an A record: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_for_a_local_name_gets_its_address_with_dockers_flags() {
        let names = FakeNames::default().with_host("c1", "web", &[WEB]);
        let reply = reply_of(ask(
            &names,
            &query(0x1234, "web.", RecordType::A),
            Transport::Udp,
        ));

        assert_eq!(reply.metadata.id, 0x1234);
        assert_eq!(reply.metadata.message_type, MessageType::Response);
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(!reply.metadata.authoritative);
        assert!(reply.metadata.recursion_available);
        assert!(reply.metadata.recursion_desired);
        assert!(!reply.metadata.truncation);
        assert_eq!(reply.queries, query(0, "web.", RecordType::A).queries);
        assert_eq!(a_addresses(&reply), vec![WEB]);
        assert_eq!(reply.answers[0].ttl, LOCAL_TTL);
        assert_eq!(reply.answers[0].name, Name::from_ascii("web.").unwrap());
    }

    #[test]
    fn several_addresses_come_back_complete_and_in_varying_order() {
        let addresses: Vec<Ipv4Addr> = (2..8).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
        let names = FakeNames::default().with_host("c1", "svc", &addresses);
        let mut orders = std::collections::HashSet::new();
        for _ in 0..50 {
            let reply = reply_of(ask(
                &names,
                &query(1, "svc.", RecordType::A),
                Transport::Udp,
            ));
            let got = a_addresses(&reply);
            let mut sorted = got.clone();
            sorted.sort();
            assert_eq!(sorted, addresses);
            orders.insert(got);
        }
        // 50 draws from 720 orders all equal has probability 720^-49.
        assert!(orders.len() > 1, "addresses were never shuffled");
    }

    #[test]
    fn other_types_for_a_local_name_get_nodata_instead_of_forwarding() {
        let names = FakeNames::default().with_host("c1", "web", &[WEB]);
        for query_type in [
            RecordType::AAAA,
            RecordType::MX,
            RecordType::TXT,
            RecordType::ANY,
        ] {
            let reply = reply_of(ask(&names, &query(9, "web.", query_type), Transport::Udp));
            assert_eq!(
                reply.metadata.response_code,
                ResponseCode::NoError,
                "{query_type}"
            );
            assert!(reply.answers.is_empty(), "{query_type}");
            assert_eq!(reply.queries[0].query_type(), query_type);
        }
    }

    #[test]
    fn names_not_known_locally_are_forwarded() {
        let names = FakeNames::default().with_host("c1", "web", &[WEB]);
        for (name, query_type) in [
            ("example.com.", RecordType::A),
            ("example.com.", RecordType::AAAA),
            ("web.example.com.", RecordType::A),
            (".", RecordType::NS),
        ] {
            let decision = ask(&names, &query(3, name, query_type), Transport::Udp);
            assert_eq!(decision, Some(Decision::Forward), "{name} {query_type}");
        }
    }

    #[test]
    fn names_are_looked_up_lower_cased_without_trailing_dot_and_echoed_as_asked() {
        let names = FakeNames::default().with_host("c1", "web.mynet", &[WEB]);
        let reply = reply_of(ask(
            &names,
            &query(5, "WeB.MyNet.", RecordType::A),
            Transport::Udp,
        ));
        assert_eq!(a_addresses(&reply), vec![WEB]);
        assert_eq!(names.asked.lock().unwrap().as_slice(), ["web.mynet"]);
        // Clients using 0x20 case randomisation need their own spelling back.
        let echoed = reply.answers[0].name.to_ascii();
        assert_eq!(echoed, "WeB.MyNet.");
    }

    #[test]
    fn names_are_resolved_per_scope() {
        let names = FakeNames::default().with_host("other", "web", &[WEB]);
        let decision = ask(&names, &query(5, "web.", RecordType::A), Transport::Udp);
        assert_eq!(decision, Some(Decision::Forward));
    }

    #[test]
    fn non_in_classes_are_forwarded_even_for_local_names() {
        let names = FakeNames::default().with_host("c1", "web", &[WEB]);
        let mut message = query(4, "web.", RecordType::A);
        message.queries[0].set_query_class(DNSClass::CH);
        assert_eq!(
            ask(&names, &message, Transport::Udp),
            Some(Decision::Forward)
        );
    }

    #[test]
    fn ptr_of_a_local_address_gets_its_fully_qualified_name() {
        let names = FakeNames::default().with_ptr("c1", WEB, "web.mynet");
        let reply = reply_of(ask(
            &names,
            &query(6, "2.0.18.172.In-Addr.Arpa.", RecordType::PTR),
            Transport::Udp,
        ));
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(reply.answers.len(), 1);
        assert_eq!(reply.answers[0].ttl, LOCAL_TTL);
        match &reply.answers[0].data {
            RData::PTR(PTR(target)) => assert_eq!(target.to_ascii(), "web.mynet."),
            other => panic!("not a PTR: {other:?}"),
        }
    }

    #[test]
    fn ptr_of_unknown_or_odd_reverse_names_is_forwarded() {
        let names = FakeNames::default().with_ptr("c1", WEB, "web");
        for name in [
            "3.0.18.172.in-addr.arpa.",
            "0.18.172.in-addr.arpa.",
            "9.2.0.18.172.in-addr.arpa.",
            "+2.0.18.172.in-addr.arpa.",
            "258.0.18.172.in-addr.arpa.",
            "2.0.18.172.ip6.arpa.",
            "2.0.18.172.in-addr.arpa.example.",
        ] {
            let decision = ask(&names, &query(6, name, RecordType::PTR), Transport::Udp);
            assert_eq!(decision, Some(Decision::Forward), "{name}");
        }
    }

    #[test]
    fn reverse_names_parse_only_in_their_exact_shape() {
        let parse = |name: &str| parse_reverse_v4(&raw_name(name));
        assert_eq!(
            parse("4.3.2.1.in-addr.arpa."),
            Some(Ipv4Addr::new(1, 2, 3, 4))
        );
        assert_eq!(
            parse("255.0.0.10.IN-ADDR.ARPA"),
            Some(Ipv4Addr::new(10, 0, 0, 255))
        );
        assert_eq!(parse("256.0.0.10.in-addr.arpa."), None);
        assert_eq!(parse("0x1.0.0.10.in-addr.arpa."), None);
        assert_eq!(parse("0.0.10.in-addr.arpa."), None);
    }

    #[test]
    fn other_opcodes_get_notimp_and_question_counts_other_than_one_get_formerr() {
        let names = FakeNames::default().with_host("c1", "web", &[WEB]);

        let mut notify = query(11, "web.", RecordType::SOA);
        notify.metadata.op_code = OpCode::Notify;
        let reply = reply_of(ask(&names, &notify, Transport::Udp));
        assert_eq!(reply.metadata.response_code, ResponseCode::NotImp);
        assert_eq!(reply.metadata.id, 11);

        let mut two = query(12, "web.", RecordType::A);
        two.add_query(Query::query(
            Name::from_ascii("db.").unwrap(),
            RecordType::A,
        ));
        let reply = reply_of(ask(&names, &two, Transport::Udp));
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(reply.metadata.id, 12);

        let none = Message::new(13, MessageType::Query, OpCode::Query);
        let reply = reply_of(ask(&names, &none, Transport::Udp));
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    }

    #[test]
    fn malformed_bodies_get_formerr_and_headerless_or_response_messages_are_dropped() {
        let names = FakeNames::default().with_host("c1", "web", &[WEB]);
        let good = query(14, "web.", RecordType::A).to_vec().unwrap();

        let cut = &good[..good.len() - 3];
        let reply = reply_of(answer_locally(cut, Transport::Udp, "c1", &names));
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(reply.metadata.id, 14);

        assert_eq!(
            answer_locally(&good[..11], Transport::Udp, "c1", &names),
            None
        );
        assert_eq!(answer_locally(&[], Transport::Udp, "c1", &names), None);

        let mut response = good.clone();
        response[2] |= 0x80;
        assert_eq!(
            answer_locally(&response, Transport::Udp, "c1", &names),
            None
        );
    }

    #[test]
    fn hostile_input_never_panics_and_any_reply_is_a_response_to_its_id() {
        let names = FakeNames::default()
            .with_host("c1", "web", &[WEB])
            .with_ptr("c1", WEB, "web");
        let check = |bytes: &[u8]| {
            if let Some(Decision::Reply(reply)) =
                answer_locally(bytes, Transport::Udp, "c1", &names)
            {
                assert!(reply.len() >= wire::HEADER_LEN);
                assert!(wire::is_response(&reply));
                assert_eq!(wire::id(&reply), wire::id(bytes));
            }
        };

        let mut rng = rand::rng();
        let seeds = [
            query(1, "web.", RecordType::A).to_vec().unwrap(),
            query(2, "2.0.18.172.in-addr.arpa.", RecordType::PTR)
                .to_vec()
                .unwrap(),
        ];
        for seed in &seeds {
            for len in 0..=seed.len() {
                check(&seed[..len]);
            }
            for _ in 0..5_000 {
                let mut mutated = seed.clone();
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..mutated.len());
                    mutated[at] = rng.random();
                }
                check(&mutated);
            }
        }
        for _ in 0..20_000 {
            let mut random = vec![0u8; rng.random_range(0..300)];
            rng.fill_bytes(&mut random);
            check(&random);
        }
    }

    fn many_addresses(count: u32) -> Vec<Ipv4Addr> {
        (0..count)
            .map(|i| Ipv4Addr::from(0x0a00_0000 + i))
            .collect()
    }

    #[test]
    fn udp_answers_over_512_bytes_are_truncated_with_tc_and_partial_answers() {
        let addresses = many_addresses(100);
        let names = FakeNames::default().with_host("c1", "svc", &addresses);
        let bytes = match ask(&names, &query(20, "svc.", RecordType::A), Transport::Udp) {
            Some(Decision::Reply(bytes)) => bytes,
            other => panic!("expected a reply, got {other:?}"),
        };
        assert!(bytes.len() <= CLASSIC_UDP_LIMIT, "{} bytes", bytes.len());
        assert!(is_truncated(&bytes));
        assert_eq!(rcode(&bytes), Some(RCODE_NOERROR));
        let got = a_addresses(&Message::from_vec(&bytes).unwrap());
        // Each compressed A record is 16 bytes, so 512 bytes hold about 30 of them.
        assert!(got.len() > 20 && got.len() < 100, "{} answers", got.len());
        assert!(got.iter().all(|ip| addresses.contains(ip)));
    }

    #[test]
    fn udp_limit_follows_the_clients_edns_size_and_tcp_is_not_truncated() {
        let addresses = many_addresses(100);
        let names = FakeNames::default().with_host("c1", "svc", &addresses);

        let mut with_edns = query(21, "svc.", RecordType::A);
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        with_edns.set_edns(edns);
        let reply = reply_of(ask(&names, &with_edns, Transport::Udp));
        assert!(!reply.metadata.truncation);
        assert_eq!(reply.answers.len(), 100);
        assert!(
            reply.edns.is_some(),
            "an EDNS query gets an OPT record back"
        );

        let reply = reply_of(ask(
            &names,
            &query(22, "svc.", RecordType::A),
            Transport::Tcp,
        ));
        assert!(!reply.metadata.truncation);
        assert_eq!(reply.answers.len(), 100);
        assert!(reply.edns.is_none());
    }

    #[test]
    fn servfail_echoes_id_and_question() {
        let bytes = query(30, "example.com.", RecordType::A).to_vec().unwrap();
        let reply = Message::from_vec(&servfail_for(&bytes)).unwrap();
        assert_eq!(reply.metadata.id, 30);
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(
            reply.queries,
            query(0, "example.com.", RecordType::A).queries
        );

        let header_only = servfail_for(&bytes[..wire::HEADER_LEN]);
        assert_eq!(wire::rcode(&header_only), Some(RCODE_SERVFAIL));
        assert!(servfail_for(&bytes[..5]).is_empty());
    }
}
