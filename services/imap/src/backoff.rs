//! Failed-login back-off, per account and per connection key, in memory.
//!
//! IMAP LOGIN and smtp-in's `Authenticate` share one [`LoginBackOff`], so neither can be used to
//! guess passwords faster than the other. The first few failures cost nothing (people mistype);
//! after that each failure doubles the wait, up to a cap. A success clears the account's record.
//! State is per process and lost on restart, which only ever helps a guesser by a few attempts.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

/// Failures allowed before any wait.
const FREE_FAILURES: u32 = 3;
/// Longest wait after repeated failures.
const MAX_WAIT_SECS: i64 = 15 * 60;
/// Entries kept before forgetting the ones whose wait is over.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    blocked_until: DateTime<Utc>,
}

/// Back-off records by key (`account:<login>`, `connection:<key>`).
#[derive(Debug, Default)]
pub struct LoginBackOff {
    records: Mutex<HashMap<String, Record>>,
}

fn account_key(login: &str) -> String {
    format!("account:{}", login.to_ascii_lowercase())
}

fn connection_key(key: &str) -> String {
    format!("connection:{key}")
}

impl LoginBackOff {
    /// Seconds to wait before `login` may be tried from `connection`, if any.
    pub fn check(&self, login: &str, connection: &str, now: DateTime<Utc>) -> Option<u64> {
        let records = self.records.lock().expect("back-off lock");
        let mut keys = vec![account_key(login)];
        if !connection.is_empty() {
            keys.push(connection_key(connection));
        }
        keys.iter()
            .filter_map(|key| records.get(key))
            .filter(|record| record.blocked_until > now)
            .map(|record| {
                let wait = (record.blocked_until - now).num_milliseconds();
                u64::try_from((wait + 999) / 1000).unwrap_or(1).max(1)
            })
            .max()
    }

    /// Records a failure for both keys.
    pub fn failed(&self, login: &str, connection: &str, now: DateTime<Utc>) {
        let mut records = self.records.lock().expect("back-off lock");
        if records.len() > PRUNE_ABOVE {
            records.retain(|_, record| record.blocked_until > now);
        }
        let mut keys = vec![account_key(login)];
        if !connection.is_empty() {
            keys.push(connection_key(connection));
        }
        for key in keys {
            let record = records.entry(key).or_insert(Record {
                failures: 0,
                blocked_until: now,
            });
            record.failures = record.failures.saturating_add(1);
            if record.failures > FREE_FAILURES {
                let exponent = (record.failures - FREE_FAILURES - 1).min(20);
                let wait = (1i64 << exponent).min(MAX_WAIT_SECS);
                record.blocked_until = now + Duration::seconds(wait);
            }
        }
    }

    /// A successful login clears the account's record (the connection's stays: one good
    /// password does not excuse guessing others from the same connection).
    pub fn succeeded(&self, login: &str) {
        self.records
            .lock()
            .expect("back-off lock")
            .remove(&account_key(login));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_after_free_failures_and_success_clears() {
        let backoff = LoginBackOff::default();
        let start = Utc::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(backoff.check("alice", "c1", start), None);
            backoff.failed("alice", "c1", start);
        }
        assert_eq!(backoff.check("alice", "c1", start), None);
        backoff.failed("alice", "c1", start);
        assert_eq!(backoff.check("alice", "c1", start), Some(1));
        backoff.failed("alice", "c1", start);
        assert_eq!(backoff.check("ALICE", "other", start), Some(2));
        // The connection is blocked for other logins too.
        assert_eq!(backoff.check("bob", "c1", start), Some(2));
        assert_eq!(backoff.check("bob", "c2", start), None);
        assert_eq!(
            backoff.check("alice", "c1", start + Duration::seconds(3)),
            None
        );
        backoff.succeeded("alice");
        assert_eq!(backoff.check("alice", "c9", start), None);
    }
}
