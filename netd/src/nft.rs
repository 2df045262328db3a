//! Berth's own nftables table (`ip <Roots::nft_table()>`), rebuilt atomically from SQLite.
//! Other tables (Docker's, the distribution's, the admin's) are never touched.
//!
//! The rules are written as nft's JSON (the form `nft -j list ruleset` prints), which
//! reads like the `nft` syntax it stands for, and parsed into the `nftables` crate's
//! schema before they are applied.

use crate::error::{NetError, Result};
use ipnet::Ipv4Net;
use nftables::schema::Nftables;
use serde_json::{Value, json};
use std::net::Ipv4Addr;

/// One bridge network the table serves.
#[derive(Debug, Clone)]
pub struct BridgeRules {
    pub bridge: String,
    pub subnet: Ipv4Net,
    /// `--internal`: no traffic in or out of the bridge but between its containers.
    pub internal: bool,
}

/// One published port: traffic to the host's `host_ip:host_port` goes to the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRule {
    pub protocol: String,
    /// None = every local address.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
}

const PUBLISHED: &str = "published";

fn meta(key: &str, op: &str, right: Value) -> Value {
    json!({"match": {"op": op, "left": {"meta": {"key": key}}, "right": right}})
}

fn ip_field(field: &str, op: &str, right: Value) -> Value {
    json!({"match": {"op": op, "left": {"payload": {"protocol": "ip", "field": field}}, "right": right}})
}

fn prefix(net: &Ipv4Net) -> Value {
    json!({"prefix": {"addr": net.network().to_string(), "len": net.prefix_len()}})
}

fn ct_status_dnat() -> Value {
    json!({"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}})
}

fn fib_daddr_local() -> Value {
    json!({"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}})
}

/// The whole table as one transaction: `add table` (so the delete cannot fail on a first
/// start), `delete table`, then the table with its chains and rules. nft applies the
/// batch atomically, so a netd restart never leaves a moment without NAT or ports.
pub fn ruleset(
    table: &str,
    bridges: &[BridgeRules],
    ports: &[PortRule],
) -> Result<Nftables<'static>> {
    let mut cmds: Vec<Value> = Vec::new();
    let tbl = json!({"table": {"family": "ip", "name": table}});
    cmds.push(json!({"add": tbl}));
    cmds.push(json!({"delete": tbl}));
    cmds.push(json!({"add": tbl}));
    let base = |name: &str, ty: &str, hook: &str, prio: i32| {
        json!({"add": {"chain": {"family": "ip", "table": table, "name": name,
            "type": ty, "hook": hook, "prio": prio, "policy": "accept"}}})
    };
    // dstnat (-100): published ports, for traffic arriving from outside or from containers
    // (prerouting) and for the host's own connections (output).
    let mut chains = vec![
        base("prerouting", "nat", "prerouting", -100),
        base("output", "nat", "output", -100),
        json!({"add": {"chain": {"family": "ip", "table": table, "name": PUBLISHED}}}),
        base("postrouting", "nat", "postrouting", 100),
        base("forward", "filter", "forward", 0),
        base("input", "filter", "input", 0),
    ];
    // Chains go first in the batch: rules refer to them.
    cmds.append(&mut chains);
    let mut rule_list: Vec<(&str, Vec<Value>)> = Vec::new();
    for hook in ["prerouting", "output"] {
        rule_list.push((
            hook,
            vec![fib_daddr_local(), json!({"jump": {"target": PUBLISHED}})],
        ));
    }
    for p in ports {
        let mut expr = Vec::new();
        if let Some(ip) = p.host_ip
            && !ip.is_unspecified()
        {
            expr.push(ip_field("daddr", "==", json!(ip.to_string())));
        }
        expr.push(json!({"match": {"op": "==",
            "left": {"payload": {"protocol": p.protocol, "field": "dport"}}, "right": p.host_port}}));
        expr.push(json!({"dnat": {"addr": p.container_ip.to_string(), "port": p.container_port}}));
        rule_list.push((PUBLISHED, expr));
    }
    for br in bridges {
        if !br.internal {
            // dockerd's `-s SUBNET ! -o BRIDGE -j MASQUERADE`.
            rule_list.push((
                "postrouting",
                vec![
                    ip_field("saddr", "==", prefix(&br.subnet)),
                    meta("oifname", "!=", json!(br.bridge)),
                    json!({"masquerade": null}),
                ],
            ));
        }
        // The host's connections to a port published on 127.0.0.1 keep a loopback
        // source after DNAT; containers cannot answer that.
        rule_list.push((
            "postrouting",
            vec![
                meta("oifname", "==", json!(br.bridge)),
                ip_field(
                    "saddr",
                    "==",
                    json!({"prefix": {"addr": "127.0.0.0", "len": 8}}),
                ),
                json!({"masquerade": null}),
            ],
        ));
        // Hairpin: a container reaching a published port of its own network would get
        // the reply straight from the peer, not from the address it asked.
        rule_list.push((
            "postrouting",
            vec![
                meta("oifname", "==", json!(br.bridge)),
                ip_field("saddr", "==", prefix(&br.subnet)),
                ct_status_dnat(),
                json!({"masquerade": null}),
            ],
        ));
    }
    for br in bridges.iter().filter(|b| b.internal) {
        rule_list.push((
            "forward",
            vec![
                meta("iifname", "==", json!(br.bridge)),
                meta("oifname", "!=", json!(br.bridge)),
                json!({"drop": null}),
            ],
        ));
        rule_list.push((
            "forward",
            vec![
                meta("oifname", "==", json!(br.bridge)),
                meta("iifname", "!=", json!(br.bridge)),
                json!({"drop": null}),
            ],
        ));
    }
    // Published ports are reachable from every network, as through Docker's proxy.
    rule_list.push(("forward", vec![ct_status_dnat(), json!({"accept": null})]));
    for br in bridges {
        let others: Vec<&str> = bridges
            .iter()
            .filter(|o| o.bridge != br.bridge)
            .map(|o| o.bridge.as_str())
            .collect();
        if !others.is_empty() {
            // Isolation between networks (dockerd's DOCKER-ISOLATION chains).
            rule_list.push((
                "forward",
                vec![
                    meta("iifname", "==", json!(br.bridge)),
                    meta("oifname", "==", json!({"set": others})),
                    json!({"drop": null}),
                ],
            ));
        }
    }
    for br in bridges {
        // Towards containers only what they asked for: replies to their own connections
        // (published ports were accepted above), and traffic between the containers of
        // the network. A LAN host with a route to the subnet reaches nothing else, as
        // with Docker (whose FORWARD policy is DROP).
        rule_list.push((
            "forward",
            vec![
                meta("oifname", "==", json!(br.bridge)),
                json!({"match": {"op": "in", "left": {"ct": {"key": "state"}},
                    "right": ["established", "related"]}}),
                json!({"accept": null}),
            ],
        ));
        rule_list.push((
            "forward",
            vec![
                meta("iifname", "==", json!(br.bridge)),
                meta("oifname", "==", json!(br.bridge)),
                json!({"accept": null}),
            ],
        ));
        rule_list.push((
            "forward",
            vec![
                meta("oifname", "==", json!(br.bridge)),
                json!({"drop": null}),
            ],
        ));
        // From containers: out (isolation and --internal were decided above).
        rule_list.push((
            "forward",
            vec![
                meta("iifname", "==", json!(br.bridge)),
                json!({"accept": null}),
            ],
        ));
        // route_localnet is on for the bridge (so the host can reach ports published on
        // 127.0.0.1): a container must not use it to reach the host's loopback services
        // with a crafted packet (CVE-2020-8558). What may come: the replies to the host's
        // own connections to ports published on 127.0.0.1 (DNAT'd, un-NATed back to
        // the loopback address on their way in).
        let loopback = || {
            ip_field(
                "daddr",
                "==",
                json!({"prefix": {"addr": "127.0.0.0", "len": 8}}),
            )
        };
        rule_list.push((
            "input",
            vec![
                meta("iifname", "==", json!(br.bridge)),
                loopback(),
                ct_status_dnat(),
                json!({"accept": null}),
            ],
        ));
        rule_list.push((
            "input",
            vec![
                meta("iifname", "==", json!(br.bridge)),
                loopback(),
                json!({"drop": null}),
            ],
        ));
    }
    for (chain, expr) in rule_list {
        cmds.push(json!({"add": {"rule": {"family": "ip", "table": table, "chain": chain, "expr": expr}}}));
    }
    parse(cmds)
}

fn parse(cmds: Vec<Value>) -> Result<Nftables<'static>> {
    serde_json::from_value(json!({"nftables": cmds}))
        .map_err(|e| NetError::Corrupt(format!("building the nftables batch: {e}")))
}

/// Deleting the table, tolerant of its absence (add-then-delete in one transaction).
pub fn delete_table(table: &str) -> Result<Nftables<'static>> {
    let tbl = json!({"table": {"family": "ip", "name": table}});
    parse(vec![json!({"add": tbl}), json!({"delete": tbl})])
}

/// Applies a batch with `nft -j -f -`.
pub async fn apply(batch: &Nftables<'_>) -> Result<()> {
    nftables::helper::apply_ruleset_async(batch).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objs(rs: &Nftables) -> Vec<Value> {
        serde_json::to_value(rs).unwrap()["nftables"]
            .as_array()
            .unwrap()
            .clone()
    }

    fn rules_of<'a>(objs: &'a [Value], chain: &str) -> Vec<&'a Value> {
        objs.iter()
            .filter_map(|o| o["add"].get("rule"))
            .filter(|r| r["chain"] == chain)
            .map(|r| &r["expr"])
            .collect()
    }

    fn br(name: &str, subnet: &str, internal: bool) -> BridgeRules {
        BridgeRules {
            bridge: name.into(),
            subnet: subnet.parse().unwrap(),
            internal,
        }
    }

    #[test]
    fn batch_rebuilds_the_table_with_nat_forward_and_ports() {
        let rs = ruleset(
            "berth_abc123",
            &[br("bxabc123", "172.29.3.0/24", false)],
            &[PortRule {
                protocol: "tcp".into(),
                host_ip: None,
                host_port: 8080,
                container_ip: "172.29.3.2".parse().unwrap(),
                container_port: 80,
            }],
        )
        .unwrap();
        let o = objs(&rs);
        assert_eq!(
            o[0],
            json!({"add": {"table": {"family": "ip", "name": "berth_abc123"}}})
        );
        assert_eq!(
            o[1],
            json!({"delete": {"table": {"family": "ip", "name": "berth_abc123"}}})
        );
        let chains: Vec<&Value> = o.iter().filter_map(|x| x["add"].get("chain")).collect();
        let names: Vec<&str> = chains.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "prerouting",
                "output",
                "published",
                "postrouting",
                "forward",
                "input"
            ]
        );
        assert_eq!(chains[0]["prio"], -100);
        assert_eq!(chains[3]["prio"], 100);
        assert_eq!(chains[4]["hook"], "forward");

        let pre = rules_of(&o, "prerouting");
        assert_eq!(pre.len(), 1);
        assert_eq!(pre[0][0]["match"]["left"]["fib"]["result"], "type");
        assert_eq!(pre[0][1], json!({"jump": {"target": "published"}}));
        let published = rules_of(&o, "published");
        assert_eq!(published.len(), 1);
        assert_eq!(
            published[0][0]["match"]["left"]["payload"]["field"],
            "dport"
        );
        assert_eq!(published[0][0]["match"]["right"], 8080);
        assert_eq!(
            published[0][1],
            json!({"dnat": {"addr": "172.29.3.2", "port": 80}})
        );

        let post = rules_of(&o, "postrouting");
        assert_eq!(post.len(), 3);
        assert_eq!(
            post[0][0],
            json!({"match": {"left": {"payload": {"protocol": "ip", "field": "saddr"}},
                             "right": {"prefix": {"addr": "172.29.3.0", "len": 24}}, "op": "=="}})
        );
        assert_eq!(
            post[0][1],
            json!({"match": {"left": {"meta": {"key": "oifname"}}, "right": "bxabc123", "op": "!="}})
        );
        assert_eq!(post[0][2], json!({"masquerade": null}));
        assert_eq!(post[2][2]["match"]["left"]["ct"]["key"], "status");
        let fwd = rules_of(&o, "forward");
        // ct dnat accept; towards the bridge replies, then its own traffic, then drop;
        // out of it accept (no isolation with one bridge).
        assert_eq!(fwd.len(), 5);
        assert_eq!(fwd[0][0]["match"]["right"], "dnat");
        assert_eq!(fwd[1][1]["match"]["left"]["ct"]["key"], "state");
        assert_eq!(
            fwd[3].as_array().unwrap().last().unwrap(),
            &json!({"drop": null})
        );
        assert_eq!(fwd[3][0]["match"]["left"]["meta"]["key"], "oifname");
        let input = rules_of(&o, "input");
        assert_eq!(input.len(), 2);
        assert_eq!(input[0][2]["match"]["right"], "dnat");
        assert_eq!(input[1][1]["match"]["right"]["prefix"]["addr"], "127.0.0.0");
        assert_eq!(input[1][2], json!({"drop": null}));
    }

    #[test]
    fn bridges_are_isolated_and_internal_ones_closed() {
        let rs = ruleset(
            "t",
            &[
                br("b1", "10.1.0.0/24", false),
                br("b2", "10.2.0.0/24", true),
            ],
            &[PortRule {
                protocol: "udp".into(),
                host_ip: Some("127.0.0.1".parse().unwrap()),
                host_port: 5353,
                container_ip: "10.1.0.2".parse().unwrap(),
                container_port: 53,
            }],
        )
        .unwrap();
        let o = objs(&rs);
        let published = rules_of(&o, "published");
        assert_eq!(published[0][0]["match"]["right"], "127.0.0.1");
        assert_eq!(
            published[0][1]["match"]["left"]["payload"]["protocol"],
            "udp"
        );
        // Only the non-internal bridge masquerades outbound.
        let post = rules_of(&o, "postrouting");
        let outbound: Vec<_> = post
            .iter()
            .filter(|e| e[1]["match"]["op"] == "!=")
            .collect();
        assert_eq!(outbound.len(), 1);
        let fwd = rules_of(&o, "forward");
        let drops: Vec<_> = fwd
            .iter()
            .filter(|e| e.as_array().unwrap().last().unwrap() == &json!({"drop": null}))
            .collect();
        // Two for the internal bridge, one isolation rule per bridge, one closing each
        // bridge to new connections from elsewhere.
        assert_eq!(drops.len(), 6);
        assert!(
            drops
                .iter()
                .any(|e| e[1]["match"]["right"] == json!({"set": ["b2"]}))
        );
    }

    #[test]
    fn delete_is_tolerant_of_absence() {
        let o = objs(&delete_table("berth").unwrap());
        assert_eq!(o.len(), 2);
        assert!(o[0].get("add").is_some());
        assert!(o[1].get("delete").is_some());
    }
}
