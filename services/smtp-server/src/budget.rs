//! The memory a listener's sessions may hold in message text at once.
//!
//! A session holds its message in memory from DATA until the reply (smtp-in decrypts or signs
//! and encrypts it, the gateway checks and encrypts it), so without a bound 1,000 sessions of
//! 25 MiB each could ask for 25 GiB. Each listener has a budget of its own within a ceiling
//! shared by all (the same shape as the session limits, for the same reason: see `quota`). A
//! session takes from it as its message grows, in steps of [`STEP_BYTES`], and gives it all
//! back when the session drops its [`MemoryGrant`] after replying. A message that finds no
//! room is read to its end and refused with [`NO_ROOM`], a temporary failure: the sender tries
//! again, and nothing acknowledged is lost.
//!
//! The bound is on message text; what processing makes of it (a decrypted or encrypted copy)
//! is proportional to it, so the process's memory stays within a small multiple of the
//! ceiling.

use crate::quota::{Quota, Taken};

/// The refusal of a message when the budget has no room for it (RFC 3463 4.3.1: mail system
/// full, temporary).
pub const NO_ROOM: &str = "452 4.3.1 Insufficient system storage, try again later";

/// Memory is taken in steps of this many bytes (1 KiB units underneath).
pub const STEP_BYTES: u64 = 64 * 1024;

/// Bytes of message text a listener's sessions may hold at once; cloning shares the count.
#[derive(Debug, Clone)]
pub struct MemoryBudget(Quota);

/// What one session holds of a [`MemoryBudget`]; given back when dropped.
#[derive(Debug)]
pub struct MemoryGrant {
    budget: MemoryBudget,
    taken: Option<Taken>,
    kib: u64,
}

fn kib(bytes: u64) -> u64 {
    bytes.div_ceil(1024)
}

impl MemoryBudget {
    /// At most `bytes` at once.
    pub fn new(bytes: u64) -> Self {
        MemoryBudget(Quota::new(
            usize::try_from(kib(bytes)).unwrap_or(usize::MAX),
        ))
    }

    /// A budget of `bytes` for one listener, whose grants also count against this one (the
    /// ceiling shared by several listeners).
    pub fn listener(&self, bytes: u64) -> Self {
        MemoryBudget(
            self.0
                .within(usize::try_from(kib(bytes)).unwrap_or(usize::MAX)),
        )
    }

    /// An empty grant for one session's message.
    pub fn grant(&self) -> MemoryGrant {
        MemoryGrant {
            budget: self.clone(),
            taken: None,
            kib: 0,
        }
    }

    /// Bytes left in this budget alone (not counting the ceiling).
    pub fn available_bytes(&self) -> u64 {
        self.0.available() as u64 * 1024
    }
}

impl MemoryGrant {
    /// Makes the grant cover `bytes`, taking more in whole steps when needed; false when the
    /// budget (or the ceiling) has no room, in which case the grant keeps what it had.
    pub fn cover(&mut self, bytes: u64) -> bool {
        let wanted = kib(bytes.div_ceil(STEP_BYTES).saturating_mul(STEP_BYTES));
        if wanted <= self.kib {
            return true;
        }
        let Ok(more) = u32::try_from(wanted - self.kib) else {
            return false;
        };
        let Some(taken) = self.budget.0.try_take(more) else {
            return false;
        };
        match &mut self.taken {
            Some(held) => held.merge(taken),
            None => self.taken = Some(taken),
        }
        self.kib = wanted;
        true
    }

    /// Gives everything back now (the grant stays usable).
    pub fn release(&mut self) {
        self.taken = None;
        self.kib = 0;
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.kib * 1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_grow_in_steps_and_come_back_when_dropped() {
        let budget = MemoryBudget::new(4 * STEP_BYTES);
        let mut grant = budget.grant();
        assert!(grant.cover(1));
        assert_eq!(grant.bytes(), STEP_BYTES);
        assert!(grant.cover(STEP_BYTES + 1));
        assert_eq!(grant.bytes(), 2 * STEP_BYTES);
        let mut other = budget.grant();
        assert!(other.cover(2 * STEP_BYTES));
        assert!(!other.cover(2 * STEP_BYTES + 1), "the budget is spent");
        assert_eq!(
            other.bytes(),
            2 * STEP_BYTES,
            "a refusal keeps what was held"
        );
        drop(grant);
        assert!(other.cover(4 * STEP_BYTES));
        other.release();
        assert_eq!(budget.available_bytes(), 4 * STEP_BYTES);
    }

    #[test]
    fn one_listener_cannot_spend_the_ceiling() {
        let ceiling = MemoryBudget::new(3 * STEP_BYTES);
        let first = ceiling.listener(2 * STEP_BYTES);
        let second = ceiling.listener(2 * STEP_BYTES);
        let mut a = first.grant();
        assert!(a.cover(2 * STEP_BYTES));
        assert!(!first.grant().cover(1), "the listener's own budget");
        let mut b = second.grant();
        assert!(b.cover(STEP_BYTES), "the other listener still has room");
        assert!(!b.cover(2 * STEP_BYTES), "the ceiling");
        drop(a);
        assert!(b.cover(2 * STEP_BYTES));
    }
}
