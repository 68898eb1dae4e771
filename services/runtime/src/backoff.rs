//! Exponential back-off with jitter for loops that retry a transient failure (style habit 7):
//! reconnecting to another service, re-binding a listener. The jitter keeps replicas, and the
//! co-hosted identities one carrier follows, from retrying in step (issue 18, item 6).

use std::time::Duration;

use rand::Rng as _;

/// The pause before each retry: `first`, doubled after every failure up to `max`, each pause
/// spread ±25 % at random.
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// After a success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// The pause before the next attempt: the current step ±25 %; the step then doubles.
    pub fn pause(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        step.mul_f64(rand::rng().random_range(0.75..1.25))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_double_up_to_the_cap_and_reset() {
        let second = Duration::from_secs(1);
        let mut backoff = Backoff::new(second, 4 * second);
        let steps: Vec<Duration> = (0..4).map(|_| backoff.pause()).collect();
        for (pause, factor) in steps.iter().zip([1, 2, 4, 4]) {
            let step = second * factor;
            assert!(
                *pause >= step.mul_f64(0.75) && *pause <= step.mul_f64(1.25),
                "{steps:?}"
            );
        }
        backoff.reset();
        assert!(backoff.pause() <= second.mul_f64(1.25));
    }

    #[test]
    fn pauses_vary() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
            seen.insert(backoff.pause());
        }
        assert!(seen.len() > 10, "jitter should spread pauses: {seen:?}");
    }
}
