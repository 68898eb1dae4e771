//! A keyed rate limit: GCRA (the algorithm of the governor crate), a dozen lines with one key
//! per account (smtp-in's submission) or per alias (the gateway's MX), kept here rather than
//! pulling in governor's keyed store for so little.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys kept before those with a whole allowance are dropped: keys may be claimed sender
/// addresses, which a peer makes up at will.
const PRUNE_AT: usize = 10_000;

/// Allows `per_hour` messages per key per hour, with a burst of the same size.
pub struct RateLimiter {
    interval: Duration,
    tolerance: Duration,
    theoretical_arrival: Mutex<HashMap<String, Instant>>,
}

impl RateLimiter {
    pub fn per_hour(per_hour: u32) -> Self {
        let per_hour = per_hour.max(1);
        let interval = Duration::from_secs(3600) / per_hour;
        RateLimiter {
            interval,
            tolerance: interval * (per_hour - 1),
            theoretical_arrival: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one message from `key`'s allowance; false when the allowance is spent.
    pub fn check(&self, key: &str) -> bool {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> bool {
        let mut map = self
            .theoretical_arrival
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= PRUNE_AT {
            // Keys whose allowance is whole again hold nothing worth keeping.
            map.retain(|_, tat| *tat > now);
        }
        let tat = map.get(key).copied().unwrap_or(now).max(now);
        if tat.duration_since(now) > self.tolerance {
            return false;
        }
        map.insert(key.to_owned(), tat + self.interval);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_hourly_amount_then_refuses() {
        let limiter = RateLimiter::per_hour(3);
        let now = Instant::now();
        assert!(limiter.check_at("a", now));
        assert!(limiter.check_at("a", now));
        assert!(limiter.check_at("a", now));
        assert!(!limiter.check_at("a", now));
        assert!(limiter.check_at("b", now));
        assert!(limiter.check_at("a", now + Duration::from_secs(1201)));
    }
}
