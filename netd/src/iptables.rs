//! The one thing netd keeps outside its own nftables table: a chain in iptables' filter
//! table that accepts its bridges' traffic, jumped to first from FORWARD. A host where
//! another engine (or an admin) left FORWARD's policy at DROP, with bridged traffic passing
//! iptables (`bridge-nf-call-iptables=1`), would otherwise drop everything our containers
//! send. Accepting here never weakens our own rules: a drop in Berth's nftables table
//! (isolation, --internal) is final whatever iptables says.

use std::collections::BTreeSet;
use tokio::process::Command;

/// The chain of the instance whose nftables table is `table` (`berth` -> `BERTH-FORWARD`).
pub fn chain_name(table: &str) -> String {
    format!("{}-FORWARD", table.to_uppercase())
}

/// The admins' chain (Docker's DOCKER-USER): jumped to first from ours, created once and
/// never flushed or removed by Berth; a DROP there stops traffic to or from containers.
pub fn user_chain_name(chain: &str) -> String {
    chain.replace("-FORWARD", "-USER")
}

/// The rules the chain should hold, in `iptables -S` form: what comes out of the bridges,
/// and towards them only replies and published (DNAT'd) ports; Berth's nftables table
/// decides the rest (isolation, --internal, traffic between containers).
pub fn wanted_rules(chain: &str, bridges: &[String]) -> BTreeSet<String> {
    bridges
        .iter()
        .flat_map(|b| {
            [
                format!("-A {chain} -i {b} -j ACCEPT"),
                format!(
                    "-A {chain} -o {b} -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -j ACCEPT"
                ),
            ]
        })
        .collect()
}

async fn iptables(args: &[&str]) -> Option<std::process::Output> {
    match Command::new("iptables").arg("-w").args(args).output().await {
        Ok(o) => Some(o),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!("running iptables {args:?}: {e}");
            None
        }
    }
}

fn words(rule: &str) -> Vec<&str> {
    rule.split_whitespace().collect()
}

/// Makes the chain hold exactly the accepts for `bridges` and FORWARD jump to it first.
/// Only differences are applied (no moment without the accepts). Best effort: a host
/// without iptables needs none of this, so failures are logged, not returned.
pub async fn ensure(chain: &str, bridges: &[String]) {
    let Some(list) = iptables(&["-S", chain]).await else {
        return;
    };
    if !list.status.success() {
        let Some(created) = iptables(&["-N", chain]).await else {
            return;
        };
        if !created.status.success() {
            tracing::warn!(
                "iptables -N {chain}: {}",
                String::from_utf8_lossy(&created.stderr).trim()
            );
            return;
        }
    }
    let user = user_chain_name(chain);
    let user_jump = format!("-A {chain} -j {user}");
    let have: BTreeSet<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|l| l.starts_with("-A ") && *l != user_jump)
        .map(str::to_string)
        .collect();
    let want = wanted_rules(chain, bridges);
    for rule in want.difference(&have) {
        let w = words(rule);
        if let Some(o) = iptables(&w).await
            && !o.status.success()
        {
            tracing::warn!(
                "iptables {rule}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
    }
    for rule in have.difference(&want) {
        let mut w = words(rule);
        w[0] = "-D";
        let _ = iptables(&w).await;
    }
    // The admins' chain: created if missing, never flushed; jumped to first.
    if iptables(&["-S", &user])
        .await
        .is_some_and(|o| !o.status.success())
    {
        let _ = iptables(&["-N", &user]).await;
    }
    let user_first = iptables(&["-S", chain]).await.is_some_and(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .find(|l| l.starts_with("-A "))
            == Some(user_jump.as_str())
    });
    if !user_first {
        let _ = iptables(&["-D", chain, "-j", &user]).await;
        let _ = iptables(&["-I", chain, "1", "-j", &user]).await;
    }
    let jump_present = iptables(&["-C", "FORWARD", "-j", chain])
        .await
        .is_some_and(|o| o.status.success());
    if !jump_present
        && let Some(o) = iptables(&["-I", "FORWARD", "1", "-j", chain]).await
        && !o.status.success()
    {
        tracing::warn!(
            "iptables -I FORWARD -j {chain}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
}

/// Removes the admins' chain: only when the whole instance is taken down (`berth-netd
/// --teardown`, an uninstall), never on a restart or a rules change. Missing is fine.
pub async fn remove_user(chain: &str) {
    let user = user_chain_name(chain);
    let _ = iptables(&["-F", &user]).await;
    let _ = iptables(&["-X", &user]).await;
}

/// Removes the jump and the chain (teardown). Missing is fine.
pub async fn remove(chain: &str) {
    while iptables(&["-D", "FORWARD", "-j", chain])
        .await
        .is_some_and(|o| o.status.success())
    {}
    let _ = iptables(&["-F", chain]).await;
    let _ = iptables(&["-X", chain]).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_and_rules_are_per_instance_and_per_bridge() {
        assert_eq!(chain_name("berth"), "BERTH-FORWARD");
        assert_eq!(chain_name("berth_3f9a1c"), "BERTH_3F9A1C-FORWARD");
        assert!(
            chain_name("berth_3f9a1c").len() <= 28,
            "iptables' chain name limit"
        );
        assert_eq!(user_chain_name("BERTH_3F9A1C-FORWARD"), "BERTH_3F9A1C-USER");
        let r = wanted_rules("BERTH-FORWARD", &["berth0".into(), "br-abc".into()]);
        assert_eq!(r.len(), 4);
        assert!(r.contains("-A BERTH-FORWARD -i br-abc -j ACCEPT"));
        assert!(r.contains(
            "-A BERTH-FORWARD -o berth0 -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -j ACCEPT"
        ));
    }
}
