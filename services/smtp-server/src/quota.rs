//! A count of something scarce (sessions, bytes of message held in memory) that a listener
//! takes from its own allowance and, optionally, from a ceiling it shares with other
//! listeners.
//!
//! smtp-in gives each identity's listener an allowance of its own within a carrier-wide
//! ceiling that no single identity's listeners can reach: filling one identity's onion leaves
//! the others answering as before, where one shared allowance would make them refuse too and
//! so tell an adversary which identities share a carrier. The gateway's one MX has one.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// An allowance of `units`, optionally within a shared ceiling. Cloning shares the counts.
#[derive(Debug, Clone)]
pub(crate) struct Quota {
    own: Arc<Semaphore>,
    ceiling: Option<Arc<Semaphore>>,
}

/// Units taken from a [`Quota`] (and its ceiling), given back when dropped.
#[derive(Debug)]
pub(crate) struct Taken {
    own: OwnedSemaphorePermit,
    ceiling: Option<OwnedSemaphorePermit>,
}

impl Quota {
    pub(crate) fn new(units: usize) -> Self {
        Quota {
            own: Arc::new(Semaphore::new(units.min(Semaphore::MAX_PERMITS))),
            ceiling: None,
        }
    }

    /// A new allowance of `units` whose takings also count against this one.
    pub(crate) fn within(&self, units: usize) -> Self {
        Quota {
            own: Arc::new(Semaphore::new(units.min(Semaphore::MAX_PERMITS))),
            ceiling: Some(self.own.clone()),
        }
    }

    /// `units` more, when both the own allowance and the ceiling have them; nothing otherwise.
    pub(crate) fn try_take(&self, units: u32) -> Option<Taken> {
        let own = self.own.clone().try_acquire_many_owned(units).ok()?;
        let ceiling = match &self.ceiling {
            Some(ceiling) => Some(ceiling.clone().try_acquire_many_owned(units).ok()?),
            None => None,
        };
        Some(Taken { own, ceiling })
    }

    /// Units left in the own allowance (not counting the ceiling).
    pub(crate) fn available(&self) -> usize {
        self.own.available_permits()
    }
}

impl Taken {
    /// Adds `more` to what is held (both come from the same quota).
    pub(crate) fn merge(&mut self, more: Taken) {
        self.own.merge(more.own);
        if let (Some(ceiling), Some(more)) = (&mut self.ceiling, more.ceiling) {
            ceiling.merge(more);
        }
    }
}
