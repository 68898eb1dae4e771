//! What an identity's onion MX asks of the mail that comes in (issue 22): a proof-of-work stamp
//! from senders the identity does not correspond with (`onionpost_runtime::stamp`), its
//! difficulty rising with that identity's own load from strangers, and hourly limits per
//! identity and per claimed sender.
//!
//! Everything here is kept per identity, never per carrier: two co-hosted identities each have
//! their own ledger, so a flood through one onion moves nothing another onion answers (design.md,
//! "Unlinkability is a property of every reply"). The ledgers live in this process's memory: a
//! restart forgets spent stamps (a stamp is valid for an hour, so a replay after a restart
//! within that hour is possible, and each replay still costs its sender a full delivery) and
//! each smtp-in replica keeps its own.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use onionpost_runtime::rate::RateLimiter;
use onionpost_runtime::stamp::{self, Stamp};

/// How long after it was minted a stamp is taken, and how long it is remembered as spent.
pub const STAMP_VALID_SECS: i64 = 3600;
/// How far ahead of this carrier's clock a stamp's time may be.
pub const STAMP_AHEAD_SECS: i64 = 600;
/// The window over which an identity's load from strangers is counted.
const LOAD_WINDOW_SECS: i64 = 3600;
/// Spent stamps one identity remembers at most. The difficulty doubles every
/// `stamp_step_messages` stamps an hour, so honest load never comes near; past it new stamps
/// wait (451) until old ones expire.
const MAX_SPENT_PER_IDENTITY: usize = 100_000;

/// The configured policy (`smtp_in.stamp_*`, `smtp_in.max_messages_per_hour_per_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundPolicy {
    /// The base difficulty in bits; 0 asks no stamps at all.
    pub stamp_bits: u32,
    /// Stranger messages in the last hour that add one bit to an identity's difficulty.
    pub stamp_step_messages: u32,
    /// The most bits an identity asks, however loaded.
    pub stamp_max_bits: u32,
    /// Messages one identity accepts per hour from everyone together; 0: no limit.
    pub max_messages_per_hour_per_identity: u32,
    /// Messages one identity accepts per hour from one claimed sender; 0: no limit.
    pub max_messages_per_hour_per_sender: u32,
}

impl Default for InboundPolicy {
    /// No stamps and no limits: what the in-memory tests of other features expect.
    fn default() -> Self {
        InboundPolicy {
            stamp_bits: 0,
            stamp_step_messages: 50,
            stamp_max_bits: 0,
            max_messages_per_hour_per_identity: 0,
            max_messages_per_hour_per_sender: 0,
        }
    }
}

/// A refusal at RCPT because an hourly limit is reached (RFC 3463 4.7.0: try again later).
pub const IDENTITY_BUSY: &str =
    "450 4.7.0 This address has received all the mail it takes this hour, try again later";
pub const SENDER_BUSY: &str = "450 4.7.0 This address has received all the mail it takes from this sender this hour, try again later";
/// A stamp that does not hold the work it claims for this message, sender and recipient.
pub const STAMP_MISMATCH: &str = "550 5.7.1 The XSTAMP stamp does not hold the work it claims for this message, sender and recipient";
/// A stamp presented a second time.
pub const STAMP_REUSED: &str =
    "550 5.7.1 The XSTAMP stamp was already spent: mint a new one for each attempt";
/// The ledger of spent stamps is full.
pub const STAMPS_BUSY: &str =
    "451 4.7.1 Too many stamps were spent at this address lately, try again later";

/// The reply that asks for a stamp of `bits` (a sender then mints one and tries again).
pub fn stamp_required(bits: u32) -> String {
    format!("450 4.7.1 {}", stamp::asking(bits))
}

/// The reply to a stamp whose time is outside the window: it asks again, so the sender mints a
/// fresh one.
pub fn stamp_out_of_time(bits: u32) -> String {
    format!(
        "450 4.7.1 {} {bits}: the stamp's time is more than an hour from this carrier's clock; mint a new one",
        stamp::KEYWORD
    )
}

/// One identity's load and spent stamps.
#[derive(Default)]
struct Ledger {
    /// When each stranger's stamp was spent in the last hour, oldest first (seconds).
    arrivals: VecDeque<i64>,
    /// Spent stamps by hash, with the second each may be forgotten.
    spent: HashMap<[u8; 32], i64>,
}

impl Ledger {
    fn forget_before(&mut self, now: i64) {
        while self
            .arrivals
            .front()
            .is_some_and(|at| *at <= now - LOAD_WINDOW_SECS)
        {
            self.arrivals.pop_front();
        }
        if self.spent.len() >= MAX_SPENT_PER_IDENTITY / 2 {
            self.spent.retain(|_, forget_at| *forget_at > now);
        }
    }
}

/// What spending a stamp did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    Fresh,
    Reused,
    Full,
}

/// Every identity's ledger and limits.
pub struct Inbound {
    policy: InboundPolicy,
    ledgers: Mutex<HashMap<String, Arc<Mutex<Ledger>>>>,
    per_identity: Option<RateLimiter>,
    per_sender: Option<RateLimiter>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inbound {
    pub fn new(policy: InboundPolicy) -> Self {
        let limiter = |per_hour: u32| (per_hour > 0).then(|| RateLimiter::per_hour(per_hour));
        Inbound {
            per_identity: limiter(policy.max_messages_per_hour_per_identity),
            per_sender: limiter(policy.max_messages_per_hour_per_sender),
            ledgers: Mutex::default(),
            policy,
        }
    }

    pub fn policy(&self) -> &InboundPolicy {
        &self.policy
    }

    /// Whether strangers must stamp their mail.
    pub fn stamps_asked(&self) -> bool {
        self.policy.stamp_bits > 0
    }

    fn ledger(&self, identity_id: &str) -> Arc<Mutex<Ledger>> {
        lock(&self.ledgers)
            .entry(identity_id.to_owned())
            .or_default()
            .clone()
    }

    /// The difficulty `identity_id` asks now: the base, one bit more for each
    /// `stamp_step_messages` stranger messages it took in the last hour, at most the maximum.
    /// 0 when no stamps are asked.
    pub fn difficulty(&self, identity_id: &str, now: i64) -> u32 {
        if !self.stamps_asked() {
            return 0;
        }
        let ledger = self.ledger(identity_id);
        let mut ledger = lock(&ledger);
        ledger.forget_before(now);
        let steps = ledger.arrivals.len() / self.policy.stamp_step_messages.max(1) as usize;
        let bits = self
            .policy
            .stamp_bits
            .saturating_add(u32::try_from(steps).unwrap_or(u32::MAX));
        bits.min(self.policy.stamp_max_bits.max(self.policy.stamp_bits))
    }

    /// Takes one message from the identity's hourly allowances (in all, and from `sender`); the
    /// refusal when one is spent.
    pub fn admit(&self, identity_id: &str, sender: &str) -> Result<(), &'static str> {
        // The sender's allowance first: a sender over its own limit spends nothing of the
        // identity's, so one busy sender cannot use up everyone's hour.
        if let Some(limit) = &self.per_sender
            && !limit.check(&format!("{identity_id}\0{}", sender.to_lowercase()))
        {
            return Err(SENDER_BUSY);
        }
        if let Some(limit) = &self.per_identity
            && !limit.check(identity_id)
        {
            return Err(IDENTITY_BUSY);
        }
        Ok(())
    }

    /// Whether a stamp's time is inside the window at `now`.
    pub fn in_time(stamp: &Stamp, now: i64) -> bool {
        stamp.minted_at > now - STAMP_VALID_SECS && stamp.minted_at <= now + STAMP_AHEAD_SECS
    }

    /// Records a checked stamp as spent at `identity_id`, counting it as load from a stranger.
    pub fn spend(&self, identity_id: &str, hash: [u8; 32], stamp: &Stamp, now: i64) -> Spend {
        let ledger = self.ledger(identity_id);
        let mut ledger = lock(&ledger);
        ledger.forget_before(now);
        if ledger.spent.contains_key(&hash) {
            return Spend::Reused;
        }
        if ledger.spent.len() >= MAX_SPENT_PER_IDENTITY {
            return Spend::Full;
        }
        ledger
            .spent
            .insert(hash, stamp.minted_at + STAMP_VALID_SECS + STAMP_AHEAD_SECS);
        ledger.arrivals.push_back(now);
        Spend::Fresh
    }
}

/// Seconds since the epoch, as stamps count time.
pub fn unix_now() -> i64 {
    onionpost_runtime::time::now_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamps(base: u32, step: u32) -> Inbound {
        Inbound::new(InboundPolicy {
            stamp_bits: base,
            stamp_step_messages: step,
            stamp_max_bits: base + 4,
            ..InboundPolicy::default()
        })
    }

    fn stamp(at: i64, nonce: u64) -> Stamp {
        Stamp {
            bits: 1,
            minted_at: at,
            nonce,
        }
    }

    #[test]
    fn difficulty_rises_with_one_identitys_load_only_and_falls_after_an_hour() {
        let inbound = stamps(10, 3);
        let now = 1_800_000_000;
        for nonce in 0..7 {
            let hash = [nonce as u8; 32];
            assert_eq!(
                inbound.spend("carol", hash, &stamp(now, nonce), now),
                Spend::Fresh
            );
        }
        assert_eq!(inbound.difficulty("carol", now), 12);
        assert_eq!(inbound.difficulty("dave", now), 10, "a co-hosted identity");
        assert_eq!(inbound.difficulty("carol", now + LOAD_WINDOW_SECS), 10);
        for nonce in 0..30 {
            let mut hash = [0xaa; 32];
            hash[..8].copy_from_slice(&u64::to_be_bytes(nonce));
            inbound.spend("carol", hash, &stamp(now, nonce), now);
        }
        assert_eq!(
            inbound.difficulty("carol", now),
            14,
            "capped at the maximum"
        );
    }

    #[test]
    fn a_stamp_is_spent_once_per_identity() {
        let inbound = stamps(10, 3);
        let now = 1_800_000_000;
        assert_eq!(
            inbound.spend("carol", [1; 32], &stamp(now, 1), now),
            Spend::Fresh
        );
        assert_eq!(
            inbound.spend("carol", [1; 32], &stamp(now, 1), now + 60),
            Spend::Reused
        );
    }

    #[test]
    fn stamps_are_taken_within_their_hour() {
        let now = 1_800_000_000;
        assert!(Inbound::in_time(&stamp(now - 10, 0), now));
        assert!(Inbound::in_time(&stamp(now + 500, 0), now));
        assert!(!Inbound::in_time(&stamp(now - STAMP_VALID_SECS, 0), now));
        assert!(!Inbound::in_time(&stamp(now + 700, 0), now));
    }

    #[test]
    fn hourly_limits_are_per_identity_and_per_sender() {
        let inbound = Inbound::new(InboundPolicy {
            max_messages_per_hour_per_identity: 3,
            max_messages_per_hour_per_sender: 2,
            ..InboundPolicy::default()
        });
        assert_eq!(inbound.admit("carol", "a@x.onion"), Ok(()));
        assert_eq!(inbound.admit("carol", "A@x.onion"), Ok(()));
        assert_eq!(inbound.admit("carol", "a@x.onion"), Err(SENDER_BUSY));
        assert_eq!(inbound.admit("carol", "b@x.onion"), Ok(()));
        assert_eq!(inbound.admit("carol", "c@x.onion"), Err(IDENTITY_BUSY));
        assert_eq!(inbound.admit("dave", "a@x.onion"), Ok(()));
    }

    #[test]
    fn asking_replies_read_back_as_the_difficulty() {
        let text = |reply: &str| reply[4..].to_owned();
        assert_eq!(stamp::asked_bits(&text(&stamp_required(17))), Some(17));
        assert_eq!(stamp::asked_bits(&text(&stamp_out_of_time(17))), Some(17));
    }
}
