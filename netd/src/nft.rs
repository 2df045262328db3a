//! Berth's own nftables table (`ip <Roots::nft_table()>`), rebuilt atomically from SQLite.
//! Other tables (Docker's, the distribution's, the admin's) are never touched.

use crate::error::Result;
use ipnet::Ipv4Net;
use nftables::batch::Batch;
use nftables::expr::{Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix};
use nftables::schema::{Chain, NfListObject, Nftables, Rule, Table};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use std::borrow::Cow;

/// One bridge network the table serves.
#[derive(Debug, Clone)]
pub struct BridgeRules {
    pub bridge: String,
    pub subnet: Ipv4Net,
}

const POSTROUTING: &str = "postrouting";
const FORWARD: &str = "forward";

fn table(name: &str) -> Table<'static> {
    Table {
        family: NfFamily::IP,
        name: Cow::Owned(name.to_string()),
        handle: None,
    }
}

fn meta_match(key: MetaKey, op: Operator, value: &str) -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::Meta(Meta { key })),
        right: Expression::String(Cow::Owned(value.to_string())),
        op,
    })
}

fn saddr_match(subnet: &Ipv4Net) -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(
            PayloadField {
                protocol: Cow::Borrowed("ip"),
                field: Cow::Borrowed("saddr"),
            },
        ))),
        right: Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(Expression::String(Cow::Owned(subnet.network().to_string()))),
            len: u32::from(subnet.prefix_len()),
        })),
        op: Operator::EQ,
    })
}

fn rule(table: &str, chain: &'static str, expr: Vec<Statement<'static>>) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family: NfFamily::IP,
        table: Cow::Owned(table.to_string()),
        chain: Cow::Borrowed(chain),
        expr: Cow::Owned(expr),
        handle: None,
        index: None,
        comment: None,
    })
}

fn base_chain(
    table: &str,
    name: &'static str,
    ty: NfChainType,
    hook: NfHook,
    prio: i32,
) -> NfListObject<'static> {
    NfListObject::Chain(Chain {
        family: NfFamily::IP,
        table: Cow::Owned(table.to_string()),
        name: Cow::Borrowed(name),
        _type: Some(ty),
        hook: Some(hook),
        prio: Some(prio),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    })
}

/// The whole table as one transaction: `add table` (so the delete cannot fail on a first
/// start), `delete table`, then the table with its chains and rules. nft applies the
/// batch atomically, so a netd restart never leaves a moment without NAT.
pub fn ruleset(table_name: &str, bridges: &[BridgeRules]) -> Nftables<'static> {
    let mut b = Batch::new();
    b.add(NfListObject::Table(table(table_name)));
    b.delete(NfListObject::Table(table(table_name)));
    b.add(NfListObject::Table(table(table_name)));
    // Priority 100 = srcnat, as `nft` names it.
    b.add(base_chain(
        table_name,
        POSTROUTING,
        NfChainType::NAT,
        NfHook::Postrouting,
        100,
    ));
    // Priority 0 = filter. Accepting here does not override a DROP in another table's
    // forward chain, but it makes ours explicit for hosts whose policy is DROP in our
    // table's terms.
    b.add(base_chain(
        table_name,
        FORWARD,
        NfChainType::Filter,
        NfHook::Forward,
        0,
    ));
    for br in bridges {
        // Masquerade what leaves the subnet through another interface (dockerd's
        // `-s SUBNET ! -o BRIDGE -j MASQUERADE`).
        b.add(rule(
            table_name,
            POSTROUTING,
            vec![
                saddr_match(&br.subnet),
                meta_match(MetaKey::Oifname, Operator::NEQ, &br.bridge),
                Statement::Masquerade(None),
            ],
        ));
        b.add(rule(
            table_name,
            FORWARD,
            vec![
                meta_match(MetaKey::Oifname, Operator::EQ, &br.bridge),
                Statement::Accept(None),
            ],
        ));
        b.add(rule(
            table_name,
            FORWARD,
            vec![
                meta_match(MetaKey::Iifname, Operator::EQ, &br.bridge),
                Statement::Accept(None),
            ],
        ));
    }
    b.to_nftables()
}

/// Deleting the table, tolerant of its absence (add-then-delete in one transaction).
pub fn delete_table(table_name: &str) -> Nftables<'static> {
    let mut b = Batch::new();
    b.add(NfListObject::Table(table(table_name)));
    b.delete(NfListObject::Table(table(table_name)));
    b.to_nftables()
}

/// Applies a batch with `nft -j -f -`.
pub async fn apply(batch: &Nftables<'_>) -> Result<()> {
    nftables::helper::apply_ruleset_async(batch).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn batch_rebuilds_the_table_with_nat_and_forward_rules() {
        let rs = ruleset(
            "berth_abc123",
            &[BridgeRules {
                bridge: "bxabc123".into(),
                subnet: "172.29.3.0/24".parse().unwrap(),
            }],
        );
        let v: Value = serde_json::to_value(&rs).unwrap();
        let objs = v["nftables"].as_array().unwrap();
        // add, delete, add table; 2 chains; 3 rules.
        assert_eq!(objs.len(), 8);
        assert_eq!(
            objs[0],
            json!({"add": {"table": {"family": "ip", "name": "berth_abc123"}}})
        );
        assert_eq!(
            objs[1],
            json!({"delete": {"table": {"family": "ip", "name": "berth_abc123"}}})
        );
        assert_eq!(objs[2], objs[0]);
        let post = &objs[3]["add"]["chain"];
        assert_eq!(post["name"], "postrouting");
        assert_eq!(post["type"], "nat");
        assert_eq!(post["hook"], "postrouting");
        assert_eq!(post["prio"], 100);
        let fwd = &objs[4]["add"]["chain"];
        assert_eq!(fwd["type"], "filter");
        assert_eq!(fwd["hook"], "forward");
        assert_eq!(fwd["policy"], "accept");

        let masq = &objs[5]["add"]["rule"];
        assert_eq!(masq["chain"], "postrouting");
        assert_eq!(masq["table"], "berth_abc123");
        let expr = masq["expr"].as_array().unwrap();
        assert_eq!(
            expr[0],
            json!({"match": {"left": {"payload": {"protocol": "ip", "field": "saddr"}},
                             "right": {"prefix": {"addr": "172.29.3.0", "len": 24}},
                             "op": "=="}})
        );
        assert_eq!(
            expr[1],
            json!({"match": {"left": {"meta": {"key": "oifname"}}, "right": "bxabc123", "op": "!="}})
        );
        assert_eq!(expr[2], json!({"masquerade": null}));
        let out = &objs[6]["add"]["rule"]["expr"];
        assert_eq!(out[0]["match"]["left"]["meta"]["key"], "oifname");
        assert_eq!(out[1], json!({"accept": null}));
        let inn = &objs[7]["add"]["rule"]["expr"];
        assert_eq!(inn[0]["match"]["left"]["meta"]["key"], "iifname");
    }

    #[test]
    fn delete_is_tolerant_of_absence() {
        let v = serde_json::to_value(delete_table("berth")).unwrap();
        let objs = v["nftables"].as_array().unwrap();
        assert_eq!(objs.len(), 2);
        assert!(objs[0].get("add").is_some());
        assert!(objs[1].get("delete").is_some());
    }
}
