//! A container that counts ("tick 1", "tick 2", ...) once per period: the tests that kill
//! or replace services use it to show a container kept running and its log stayed whole.

use crate::Berth;
use anyhow::Result;

/// Starts `docker run -d --name <name> <img>` counting every `period` (sh `sleep`
/// syntax, e.g. "0.2"); returns the container ID.
pub fn start(berth: &Berth, name: &str, img: &str, period: &str) -> Result<String> {
    let script = format!("i=0; while true; do i=$((i+1)); echo tick $i; sleep {period}; done");
    Ok(berth
        .docker_ok(&["run", "-d", "--name", name, img, "sh", "-c", &script])?
        .trim()
        .to_string())
}

/// The tick numbers in `text`, in order.
pub fn parse(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("tick "))
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

/// The tick numbers in `docker logs <name>`, in order.
pub fn ticks(berth: &Berth, name: &str) -> Vec<u64> {
    parse(&berth.docker(&["logs", name]).stdout)
}

/// True when `ticks` is exactly 1, 2, ..., n: nothing lost, nothing doubled.
pub fn whole(ticks: &[u64]) -> bool {
    ticks.iter().copied().eq(1..=ticks.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_judges_tick_logs() {
        let t = parse("started\ntick 1\ntick 2\nnoise\ntick 3\n");
        assert_eq!(t, vec![1, 2, 3]);
        assert!(whole(&t));
        assert!(!whole(&[1, 3]));
        assert!(!whole(&[1, 2, 2]));
        assert!(whole(&[]));
    }
}
