//! Counters for GetStatus and Prometheus.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// What smtp-in has done since it started. Cheap to clone.
#[derive(Clone, Default)]
pub struct Stats(Arc<Inner>);

#[derive(Default)]
struct Inner {
    sessions_open: AtomicU32,
    accepted: AtomicU64,
    refused: AtomicU64,
    plaintext_refused: AtomicU64,
    mx_listeners: AtomicU32,
    onion_submission_listeners: AtomicU32,
    submission_listeners: AtomicU32,
}

/// Held while a session is open.
pub struct SessionGuard(Stats);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.0.sessions_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub sessions_open: u32,
    pub accepted: u64,
    pub refused: u64,
    pub plaintext_refused: u64,
    pub mx_listeners: u32,
    pub onion_submission_listeners: u32,
    pub submission_listeners: u32,
}

impl Stats {
    pub fn session(&self) -> SessionGuard {
        self.0.sessions_open.fetch_add(1, Ordering::Relaxed);
        SessionGuard(self.clone())
    }

    pub fn accepted(&self) {
        self.0.accepted.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("onionpost_smtp_in_messages_total", "outcome" => "accepted").increment(1);
    }

    pub fn refused(&self) {
        self.0.refused.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("onionpost_smtp_in_messages_total", "outcome" => "refused").increment(1);
    }

    pub fn plaintext_refused(&self) {
        self.refused();
        self.0.plaintext_refused.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("onionpost_smtp_in_plaintext_refused_total").increment(1);
    }

    /// Counts a listener of a kind opening (+1) or closing (-1).
    pub fn listener(&self, kind: ListenerKind, open: bool) {
        let counter = match kind {
            ListenerKind::Mx => &self.0.mx_listeners,
            ListenerKind::OnionSubmission => &self.0.onion_submission_listeners,
            ListenerKind::Submission => &self.0.submission_listeners,
        };
        if open {
            counter.fetch_add(1, Ordering::Relaxed);
        } else {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            sessions_open: self.0.sessions_open.load(Ordering::Relaxed),
            accepted: self.0.accepted.load(Ordering::Relaxed),
            refused: self.0.refused.load(Ordering::Relaxed),
            plaintext_refused: self.0.plaintext_refused.load(Ordering::Relaxed),
            mx_listeners: self.0.mx_listeners.load(Ordering::Relaxed),
            onion_submission_listeners: self.0.onion_submission_listeners.load(Ordering::Relaxed),
            submission_listeners: self.0.submission_listeners.load(Ordering::Relaxed),
        }
    }
}

/// Which kind of SMTP a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Mx,
    OnionSubmission,
    Submission,
}
