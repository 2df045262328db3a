//! How long to wait before restarting a service that exited.
//!
//! A crash is retried at once-ish (100 ms) so a restart is back within about 2 s, as the
//! architecture promises; a service that keeps crashing is retried at most every 2 s so
//! it cannot spin a core; one that stayed up a while starts from 100 ms again.

use std::time::Duration;

/// The first delay after a crash.
pub const INITIAL: Duration = Duration::from_millis(100);
/// The longest delay between two restarts.
pub const MAX: Duration = Duration::from_secs(2);
/// Uptime after which a service counts as healthy again and the delay resets.
pub const RESET_AFTER: Duration = Duration::from_secs(10);

/// Doubling restart delay, reset after a long enough run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: INITIAL }
    }
}

impl Backoff {
    /// The delay before restarting a service that exited after running for `uptime`.
    pub fn on_exit(&mut self, uptime: Duration) -> Duration {
        if uptime >= RESET_AFTER {
            self.next = INITIAL;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(MAX);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_100ms_up_to_2s() {
        let mut b = Backoff::default();
        let quick = Duration::from_millis(50);
        let delays: Vec<u128> = (0..7).map(|_| b.on_exit(quick).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1600, 2000, 2000]);
    }

    #[test]
    fn resets_after_a_long_enough_run() {
        let mut b = Backoff::default();
        for _ in 0..5 {
            b.on_exit(Duration::ZERO);
        }
        assert_eq!(
            b.on_exit(Duration::from_secs(9)),
            Duration::from_millis(2000)
        );
        assert_eq!(b.on_exit(RESET_AFTER), INITIAL);
        assert_eq!(b.on_exit(Duration::ZERO), Duration::from_millis(200));
    }
}
