//! Byte-level helpers for the parts of DNS messages that must be handled without (or
//! before) a full parse: the fixed 12-byte header and the question section.

use hickory_proto::{
    op::{Header, Message, Query},
    serialize::binary::{BinDecodable, BinDecoder},
};

/// Length of the fixed DNS header.
pub(crate) const HEADER_LEN: usize = 12;

/// Largest UDP reply a client without EDNS accepts (RFC 1035 4.2.1).
pub(crate) const CLASSIC_UDP_LIMIT: usize = 512;

const QR_BIT: u8 = 0x80;
const OPCODE_MASK: u8 = 0x78;
const TC_BIT: u8 = 0x02;
const RD_BIT: u8 = 0x01;
const RA_BIT: u8 = 0x80;
const RCODE_MASK: u8 = 0x0f;

pub(crate) const RCODE_NOERROR: u8 = 0;
pub(crate) const RCODE_FORMERR: u8 = 1;
pub(crate) const RCODE_SERVFAIL: u8 = 2;
pub(crate) const RCODE_NOTIMP: u8 = 4;

pub(crate) fn id(message: &[u8]) -> Option<[u8; 2]> {
    Some([*message.first()?, *message.get(1)?])
}

pub(crate) fn set_id(message: &mut [u8], id: [u8; 2]) {
    if let Some(slot) = message.get_mut(..2) {
        slot.copy_from_slice(&id);
    }
}

pub(crate) fn is_response(message: &[u8]) -> bool {
    message.get(2).is_some_and(|flags| flags & QR_BIT != 0)
}

pub(crate) fn opcode(message: &[u8]) -> Option<u8> {
    message.get(2).map(|flags| (flags & OPCODE_MASK) >> 3)
}

pub(crate) fn is_truncated(message: &[u8]) -> bool {
    message.get(2).is_some_and(|flags| flags & TC_BIT != 0)
}

pub(crate) fn rcode(message: &[u8]) -> Option<u8> {
    message.get(3).map(|flags| flags & RCODE_MASK)
}

pub(crate) fn question_count(message: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*message.get(4)?, *message.get(5)?]))
}

/// A header-only error reply (no question echoed), for queries too broken to trust
/// anything past their header. `None` when even the header is missing.
pub(crate) fn error_from_header(query: &[u8], rcode: u8) -> Option<Vec<u8>> {
    let header = query.get(..HEADER_LEN)?;
    let mut reply = vec![0u8; HEADER_LEN];
    reply[..2].copy_from_slice(&header[..2]);
    reply[2] = QR_BIT | (header[2] & (OPCODE_MASK | RD_BIT));
    reply[3] = RA_BIT | (rcode & RCODE_MASK);
    Some(reply)
}

/// The question of `message`, if its header and first question parse.
pub(crate) fn first_question(message: &[u8]) -> Option<Query> {
    let mut decoder = BinDecoder::new(message);
    let header = Header::read(&mut decoder).ok()?;
    if header.counts.queries == 0 {
        return None;
    }
    Query::read(&mut decoder).ok()
}

/// Whether `reply` answers `query` (already known to share its id): a response whose
/// question is the one asked, or an error response that carries no question at all, as
/// some servers send for FORMERR/NOTIMP/REFUSED. Checking the question makes a blind
/// spoofer guess more than the id and port.
pub(crate) fn answers_question_of(reply: &[u8], query: &[u8]) -> bool {
    if !is_response(reply) || id(reply) != id(query) {
        return false;
    }
    if question_count(reply) == Some(0) {
        return rcode(reply).is_some_and(|code| code != RCODE_NOERROR);
    }
    match (first_question(reply), first_question(query)) {
        (Some(got), Some(asked)) => {
            got.name() == asked.name()
                && got.query_type() == asked.query_type()
                && got.query_class() == asked.query_class()
        }
        _ => false,
    }
}

/// How large a UDP reply the client that sent `query` accepts: 512 bytes, or its EDNS
/// payload size when larger.
pub(crate) fn client_udp_limit(query: &[u8]) -> usize {
    Message::from_vec(query)
        .map(|message| usize::from(message.max_payload()))
        .unwrap_or(CLASSIC_UDP_LIMIT)
}

/// Makes an upstream's reply fit a UDP client: unchanged when it fits, else its header
/// with TC set and only the question kept, which tells the client to retry over TCP.
/// Needed because a reply fetched over TCP after an upstream truncation can exceed what
/// the UDP client accepts.
pub(crate) fn fit_forwarded_reply(reply: Vec<u8>, limit: usize) -> Vec<u8> {
    if reply.len() <= limit {
        return reply;
    }
    let mut decoder = BinDecoder::new(&reply);
    let question_end = match Header::read(&mut decoder) {
        Ok(header) if header.counts.queries > 0 => match Query::read(&mut decoder) {
            Ok(_) => Some(decoder.index()),
            Err(_) => None,
        },
        _ => None,
    };
    let end = question_end.unwrap_or(HEADER_LEN);
    let mut truncated = reply[..end.min(reply.len())].to_vec();
    if truncated.len() < HEADER_LEN {
        return Vec::new();
    }
    truncated[2] |= TC_BIT;
    let question_count: u16 = if question_end.is_some() { 1 } else { 0 };
    truncated[4..6].copy_from_slice(&question_count.to_be_bytes());
    truncated[6..12].fill(0);
    truncated
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::{
        op::{MessageType, OpCode},
        rr::{Name, RData, Record, RecordType, rdata::A},
    };
    use std::net::Ipv4Addr;

    fn query_bytes(id: u16, name: &str, query_type: RecordType) -> Vec<u8> {
        let mut message = Message::new(id, MessageType::Query, OpCode::Query);
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), query_type));
        message.to_vec().unwrap()
    }

    fn reply_bytes(id: u16, name: &str, answers: usize) -> Vec<u8> {
        let name = Name::from_ascii(name).unwrap();
        let mut message = Message::new(id, MessageType::Response, OpCode::Query);
        message.add_query(Query::query(name.clone(), RecordType::A));
        for i in 0..answers {
            let ip = Ipv4Addr::from(0x0a00_0000 + u32::try_from(i).unwrap());
            message.add_answer(Record::from_rdata(name.clone(), 60, RData::A(A(ip))));
        }
        message.to_vec().unwrap()
    }

    #[test]
    fn error_from_header_keeps_id_opcode_and_rd() {
        let mut query = query_bytes(0xbeef, "x.", RecordType::A);
        query[2] |= RD_BIT;
        let reply = error_from_header(&query, RCODE_FORMERR).unwrap();
        assert_eq!(reply.len(), HEADER_LEN);
        assert_eq!(id(&reply), Some(0xbeefu16.to_be_bytes()));
        assert!(is_response(&reply));
        assert_eq!(reply[2] & RD_BIT, RD_BIT);
        assert_eq!(rcode(&reply), Some(RCODE_FORMERR));
        assert_eq!(question_count(&reply), Some(0));
        assert!(error_from_header(&query[..11], RCODE_FORMERR).is_none());
    }

    #[test]
    fn a_reply_must_carry_the_id_and_question_asked() {
        let query = query_bytes(7, "web.example.", RecordType::A);
        assert!(answers_question_of(
            &reply_bytes(7, "WEB.example.", 1),
            &query
        ));
        assert!(!answers_question_of(
            &reply_bytes(8, "web.example.", 1),
            &query
        ));
        assert!(!answers_question_of(
            &reply_bytes(7, "other.example.", 1),
            &query
        ));
        assert!(
            !answers_question_of(&query, &query),
            "a query is not a reply"
        );

        let mut bare_error = error_from_header(&query, RCODE_FORMERR).unwrap();
        assert!(answers_question_of(&bare_error, &query));
        bare_error[3] &= !RCODE_MASK;
        assert!(
            !answers_question_of(&bare_error, &query),
            "an empty NOERROR without question answers nothing"
        );
    }

    #[test]
    fn oversized_forwarded_reply_keeps_only_header_and_question_with_tc() {
        let reply = reply_bytes(9, "big.example.", 60);
        assert!(reply.len() > CLASSIC_UDP_LIMIT);
        let fitted = fit_forwarded_reply(reply.clone(), CLASSIC_UDP_LIMIT);
        assert!(is_truncated(&fitted));
        assert_eq!(id(&fitted), id(&reply));
        let parsed = Message::from_vec(&fitted).unwrap();
        assert!(parsed.answers.is_empty());
        assert_eq!(parsed.queries.len(), 1);
        assert_eq!(
            parsed.queries[0].name(),
            &Name::from_ascii("big.example.").unwrap()
        );

        assert_eq!(fit_forwarded_reply(reply.clone(), reply.len()), reply);
    }
}
