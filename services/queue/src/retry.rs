//! The retry schedule: exponential back-off with jitter, bounded by the message's lifetime.
//!
//! RFC 5321 §4.5.4.1 asks for a retry interval of at least 30 minutes in general and a give-up
//! time of at least 4-5 days; onion peers come and go with their owners' laptops, so the first
//! retries come sooner (`queue.retry_min_secs`, default 60 s) and double up to
//! `queue.retry_max_secs` (default an hour). Jitter of ±20% keeps recipients that failed together
//! (one peer offline) from all coming back in the same second.

use std::time::Duration;

use onionpost_runtime::time::duration_ms as millis;
use rand::Rng;

/// Retry timing, from configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub lifetime: Duration,
}

impl RetryPolicy {
    pub fn from_settings(settings: &onionpost_runtime::config::QueueSettings) -> Self {
        RetryPolicy {
            retry_min: settings.retry_min,
            retry_max: settings.retry_max,
            lifetime: settings.lifetime,
        }
    }

    /// The wait after the `attempts`-th failed attempt (1 for the first), before jitter.
    pub fn base_delay_ms(&self, attempts: u32) -> i64 {
        let min = millis(self.retry_min);
        let max = millis(self.retry_max);
        let shift = attempts.saturating_sub(1).min(40);
        min.saturating_mul(1_i64 << shift).min(max)
    }

    /// The next attempt's time after the `attempts`-th failure at `now_ms`, with ±20% jitter;
    /// `None` when that would fall after `expires_at_ms` (the recipient then fails for good).
    pub fn next_attempt_ms(&self, attempts: u32, now_ms: i64, expires_at_ms: i64) -> Option<i64> {
        let base = self.base_delay_ms(attempts);
        let spread = base / 5;
        let jitter = if spread > 0 {
            rand::rng().random_range(-spread..=spread)
        } else {
            0
        };
        let next = now_ms.saturating_add(base + jitter);
        (next <= expires_at_ms).then_some(next)
    }

    pub fn lifetime_ms(&self) -> i64 {
        millis(self.lifetime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            retry_min: Duration::from_secs(60),
            retry_max: Duration::from_secs(3600),
            lifetime: Duration::from_secs(432_000),
        }
    }

    #[test]
    fn doubles_from_min_up_to_max() {
        let policy = policy();
        let delays: Vec<i64> = (1..=9).map(|n| policy.base_delay_ms(n) / 1000).collect();
        assert_eq!(delays, [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        assert_eq!(policy.base_delay_ms(u32::MAX), 3_600_000);
    }

    #[test]
    fn jitter_stays_within_twenty_percent_and_varies() {
        let policy = policy();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..1000 {
            let next = policy.next_attempt_ms(3, 0, i64::MAX).unwrap();
            assert!((192_000..=288_000).contains(&next), "{next}");
            seen.insert(next);
        }
        assert!(seen.len() > 100, "jitter should spread retries");
    }

    #[test]
    fn past_the_lifetime_there_is_no_next_attempt() {
        let policy = policy();
        assert_eq!(policy.next_attempt_ms(1, 1_000, 1_000 + 47_999), None);
        assert!(policy.next_attempt_ms(1, 1_000, 1_000 + 72_000).is_some());
    }
}
