//! Restart policies (`--restart no|always|unless-stopped|on-failure[:N]`) as Docker applies
//! them: whether an exit leads to a restart, and the back-off between restarts.

use std::time::Duration;

/// The first delay; it doubles after each restart of a container that ran briefly.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest delay.
const MAX_DELAY: Duration = Duration::from_secs(60);
/// A run at least this long resets the back-off.
const RESET_AFTER: Duration = Duration::from_secs(10);

/// A container's restart policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    No,
    Always,
    UnlessStopped,
    /// Restart after a non-zero exit, at most this many times (0 = no limit).
    OnFailure(u32),
}

impl Policy {
    /// From the spec's name and maximum retry count (validated by the gateway).
    pub fn new(name: &str, max_retries: i32) -> Self {
        match name {
            "always" => Self::Always,
            "unless-stopped" => Self::UnlessStopped,
            "on-failure" => Self::OnFailure(max_retries.max(0) as u32),
            _ => Self::No,
        }
    }

    /// Whether an exit with `exit_code`, after `restarts` policy restarts, restarts the
    /// container. A container its user stopped or killed stays down.
    pub fn restarts_after(&self, exit_code: i32, restarts: u32, manually_stopped: bool) -> bool {
        if manually_stopped {
            return false;
        }
        match self {
            Self::No => false,
            Self::Always | Self::UnlessStopped => true,
            Self::OnFailure(max) => exit_code != 0 && (*max == 0 || restarts < *max),
        }
    }
}

/// The delay before the next restart: doubled from the last one, back to the first
/// after a run of at least ten seconds, never above a minute.
pub fn next_delay(last: Duration, ran_for: Duration) -> Duration {
    if last.is_zero() || ran_for >= RESET_AFTER {
        FIRST_DELAY
    } else {
        (last * 2).min(MAX_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_decide_like_docker() {
        assert!(!Policy::new("no", 0).restarts_after(1, 0, false));
        assert!(!Policy::new("", 0).restarts_after(1, 0, false));
        assert!(Policy::new("always", 0).restarts_after(0, 99, false));
        assert!(!Policy::new("always", 0).restarts_after(0, 0, true));
        assert!(Policy::new("unless-stopped", 0).restarts_after(0, 0, false));
        let on_failure = Policy::new("on-failure", 2);
        assert!(!on_failure.restarts_after(0, 0, false));
        assert!(on_failure.restarts_after(3, 0, false));
        assert!(on_failure.restarts_after(3, 1, false));
        assert!(!on_failure.restarts_after(3, 2, false));
        assert!(Policy::new("on-failure", 0).restarts_after(1, 1000, false));
    }

    #[test]
    fn back_off_doubles_and_resets() {
        let quick = Duration::from_secs(1);
        let mut d = next_delay(Duration::ZERO, quick);
        assert_eq!(d, FIRST_DELAY);
        d = next_delay(d, quick);
        assert_eq!(d, Duration::from_millis(200));
        for _ in 0..20 {
            d = next_delay(d, quick);
        }
        assert_eq!(d, MAX_DELAY);
        assert_eq!(next_delay(d, Duration::from_secs(10)), FIRST_DELAY);
    }
}
