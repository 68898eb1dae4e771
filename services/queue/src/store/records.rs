//! What the queue stores and hands back: messages and recipients as enqueued and as stored,
//! claims and the results recorded for them, listing filters, counts, and carry agreements.

use super::vocabulary::{CarryRequestState, DsnReturn, Notify, Origin, RecipientState};

/// An SMTP reply as received (or the reason no session happened, as a 4xx/5xx of our own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u32,
    pub enhanced_status: String,
    pub text: String,
}

/// A recipient as enqueued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRecipient {
    pub address: String,
    /// Empty: the RFC 3461 default (FAILURE and DELAY).
    pub notify: Vec<Notify>,
    pub original_recipient: String,
}

/// A message to store, its body already sealed.
#[derive(Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub queue_id: String,
    pub idempotency_key: String,
    pub origin: Origin,
    pub account_id: String,
    pub sender_identity_id: String,
    pub reverse_path: String,
    pub message_id: String,
    pub envelope_id: String,
    pub dsn_return: DsnReturn,
    pub fan_out_immediately: bool,
    pub sealed_body: Vec<u8>,
    pub body_digest: String,
    pub size_bytes: u64,
    pub enqueued_at_ms: i64,
    /// When the recipients are first due: at once, or later for carried mail (see
    /// `QueueService::enqueue`).
    pub first_attempt_at_ms: i64,
    pub expires_at_ms: i64,
    pub recipients: Vec<NewRecipient>,
}

impl std::fmt::Debug for NewMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewMessage")
            .field("queue_id", &self.queue_id)
            .field("origin", &self.origin)
            .field("recipients", &self.recipients.len())
            .field("size_bytes", &self.size_bytes)
            .finish_non_exhaustive()
    }
}

/// A stored recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientRecord {
    pub idx: i32,
    pub address: String,
    pub state: RecipientState,
    pub notify: Vec<Notify>,
    pub original_recipient: String,
    pub attempts: u32,
    pub last_attempt_at_ms: Option<i64>,
    pub next_attempt_at_ms: Option<i64>,
    pub last_reply: Option<Reply>,
    pub handed_to_carriers: Vec<String>,
    pub claimed_by: Option<String>,
    pub claimed_until_ms: Option<i64>,
}

/// A stored message without its body, with every recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageRecord {
    pub queue_id: String,
    pub idempotency_key: String,
    pub origin: Origin,
    pub account_id: String,
    pub sender_identity_id: String,
    pub reverse_path: String,
    pub message_id: String,
    pub envelope_id: String,
    pub dsn_return: DsnReturn,
    pub fan_out_immediately: bool,
    pub body_digest: String,
    pub size_bytes: u64,
    pub held: bool,
    pub enqueued_at_ms: i64,
    pub expires_at_ms: i64,
    pub recipients: Vec<RecipientRecord>,
}

/// A recipient a worker now holds the lease on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Claim {
    pub queue_id: String,
    pub idx: i32,
}

/// What one attempt (or the decision not to try) did to one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientUpdate {
    pub idx: i32,
    pub state: RecipientState,
    /// Whether a delivery was attempted (counts in `attempts`).
    pub attempted: bool,
    pub attempted_at_ms: i64,
    /// Unset for a final state.
    pub next_attempt_at_ms: Option<i64>,
    pub reply: Option<Reply>,
}

/// Filters for listing; empty fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub state: Option<RecipientState>,
    pub held_only: bool,
    /// An address, or an onion host (matches any recipient at it).
    pub recipient: String,
    pub account_id: String,
    pub origin: Option<Origin>,
    pub enqueued_before_ms: Option<i64>,
}

/// Where a page starts: after this (enqueued_at_ms, queue_id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageAfter {
    pub enqueued_at_ms: i64,
    pub queue_id: String,
}

/// The queue at a glance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsRecord {
    pub by_state: Vec<(RecipientState, u64)>,
    /// Messages enqueued no longer ago than each bound (cumulative), in the order asked, then
    /// the total.
    pub enqueued_within: Vec<u64>,
    pub messages: u64,
    pub held_messages: u64,
    pub stored_bytes: u64,
    pub oldest_enqueued_at_ms: Option<i64>,
}

/// A carry agreement: this carrier holds mail for `address` while it is offline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgreementRecord {
    pub agreement_id: String,
    /// The identity carried for, lower case.
    pub address: String,
    /// The key that signed the carry request.
    pub fingerprint: String,
    pub created_at_ms: i64,
    /// Unset: until revoked.
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    pub max_held_bytes: u64,
    pub max_messages_per_day: u32,
    /// The carrier onion the request named (`<56 base32>.onion`): carried mail is accepted on
    /// that onion only. Empty for agreements of earlier versions, which hold on no onion.
    pub carrier: String,
}

impl AgreementRecord {
    /// Neither revoked nor expired at `now_ms`.
    pub fn is_active(&self, now_ms: i64) -> bool {
        self.revoked_at_ms.is_none() && self.expires_at_ms.is_none_or(|at| at > now_ms)
    }
}

/// Which agreement to end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgreementKey {
    /// An operator names it.
    Id(String),
    /// A signed withdrawal names the identity: every active agreement for it ends.
    Address(String),
}

/// The caps of one carried recipient's agreement, checked again when its mail is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarryCap {
    pub address: String,
    pub max_held_bytes: u64,
    pub max_messages_per_day: u32,
}

/// What this carrier holds for one address now (carried mail only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldRecord {
    /// Unfinished carried recipients at the address.
    pub messages: u64,
    /// The bytes of their messages.
    pub bytes: u64,
    /// Carried messages accepted for the address on the asked (UTC) day, whether still held or
    /// already delivered.
    pub accepted_on_day: u64,
}

/// A carry statement received in mail (SubmitCarryStatement) and what became of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarryRequestRecord {
    pub request_id: String,
    /// The onion whose MX it arrived on.
    pub onion: String,
    /// The statement as it came, sealed with the queue's sealer and bound to `request_id`.
    pub sealed_statement: Vec<u8>,
    pub state: CarryRequestState,
    /// From the verified statement (empty until then): the identity, its key's fingerprint,
    /// `request` or `withdraw`, and when a request lapses.
    pub address: String,
    pub fingerprint: String,
    pub kind: String,
    pub expires_at_ms: Option<i64>,
    /// Why it was refused, or what it did.
    pub detail: String,
    /// Verification attempts so far.
    pub attempts: u32,
    pub received_at_ms: i64,
    /// While verifying: when to try next.
    pub next_attempt_at_ms: Option<i64>,
    pub decided_at_ms: Option<i64>,
    /// The agreement it recorded, once accepted (requests only).
    pub agreement_id: String,
}
