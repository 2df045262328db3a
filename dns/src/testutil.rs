//! Helpers shared by the crate's tests.

use hickory_proto::op::Message;
use hickory_proto::rr::RData;
use hickory_proto::rr::rdata::A;
use std::net::Ipv4Addr;

/// The IPv4 addresses of a reply's A answers (other answers are skipped).
pub fn addresses(reply: &Message) -> Vec<Ipv4Addr> {
    reply
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(A(ip)) => Some(*ip),
            _ => None,
        })
        .collect()
}
