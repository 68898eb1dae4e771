//! Time as every service reads and writes it: milliseconds since the Unix epoch in stores,
//! `google.protobuf.Timestamp` on the wire, `DateTime<Utc>` in domain code, and a [`Clock`]
//! injected so tests move time instead of waiting (retry schedules and account states span
//! days).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeZone as _, Utc};

/// Milliseconds since the Unix epoch, now, by the system clock.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Milliseconds since the Unix epoch as a protobuf timestamp.
pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// A protobuf timestamp as milliseconds since the Unix epoch (sub-millisecond part dropped,
/// saturating far outside any date a carrier sees).
pub fn timestamp_ms(value: &prost_types::Timestamp) -> i64 {
    value
        .seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(value.nanos / 1_000_000))
}

/// A duration in milliseconds, saturating.
pub fn duration_ms(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A time as milliseconds since the Unix epoch.
pub fn to_ms(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

/// Milliseconds since the Unix epoch as a time; the epoch itself when out of range.
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Where a service reads the time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told, for tests; clones share one time.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock::at_ms(to_ms(start))
    }

    /// Starting `now_ms` milliseconds after the Unix epoch.
    pub fn at_ms(now_ms: i64) -> Self {
        ManualClock(Arc::new(AtomicI64::new(now_ms)))
    }

    pub fn advance(&self, by: chrono::Duration) {
        self.advance_ms(by.num_milliseconds());
    }

    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    pub fn set(&self, to: DateTime<Utc>) {
        self.set_ms(to_ms(to));
    }

    pub fn set_ms(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }

    /// The current time in milliseconds, without importing [`Clock`].
    pub fn now_ms_for_test(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        from_ms(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_trip_through_timestamps_and_times() {
        for ms in [0, 1, 999, 1_000, 1_764_979_200_123, -1, -1_001] {
            assert_eq!(timestamp_ms(&timestamp(ms)), ms, "{ms}");
            assert_eq!(to_ms(from_ms(ms)), ms, "{ms}");
        }
        let before_epoch = timestamp(-1);
        assert_eq!(
            (before_epoch.seconds, before_epoch.nanos),
            (-1, 999_000_000)
        );
    }

    #[test]
    fn the_manual_clock_moves_only_when_told() {
        let clock = ManualClock::at_ms(1_000);
        let shared = clock.clone();
        assert_eq!(to_ms(clock.now()), 1_000);
        shared.advance_ms(500);
        assert_eq!(clock.now_ms_for_test(), 1_500);
        clock.advance(chrono::Duration::seconds(2));
        assert_eq!(to_ms(shared.now()), 3_500);
        clock.set(from_ms(10));
        assert_eq!(shared.now_ms_for_test(), 10);
    }
}
