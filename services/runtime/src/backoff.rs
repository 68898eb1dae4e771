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

/// A wait within `window`, drawn uniformly for one caller alone: what each of a carrier's
/// identities waits before acting after a restart (re-publication, ETRN), so that when each
/// one acts tells nothing about which others share the carrier (issue 18, item 6).
pub fn random_within(window: Duration) -> Duration {
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    if window_ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::rng().random_range(0..window_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_fill_the_window_independently() {
        let window = Duration::from_secs(60);
        assert_eq!(random_within(Duration::ZERO), Duration::ZERO);
        // Pairs drawn for two identities, as after one restart: each within the window, every
        // tenth of it reached, and the two no closer than chance makes them.
        let pairs: Vec<(f64, f64)> = (0..2_000)
            .map(|_| {
                let (a, b) = (random_within(window), random_within(window));
                assert!(a < window && b < window);
                (a.as_secs_f64(), b.as_secs_f64())
            })
            .collect();
        let mut tenths = [0u32; 10];
        for (a, _) in &pairs {
            tenths[(a / 6.0) as usize] += 1;
        }
        assert!(tenths.iter().all(|&count| count > 100), "{tenths:?}");
        // For independent uniform draws the mean distance is a third of the window (20 s);
        // moments tied to each other (one after the other, 100 ms apart) give about 0.1 s.
        let mean_gap = pairs.iter().map(|(a, b)| (a - b).abs()).sum::<f64>() / 2_000.0;
        assert!((17.0..23.0).contains(&mean_gap), "mean gap {mean_gap} s");
    }

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
