//! The queue's storage contract: one trait, implemented once for both backends in `sql.rs`.

use async_trait::async_trait;

use super::StoreError;
use super::records::{
    AgreementKey, AgreementRecord, CarryCap, CarryRequestRecord, Claim, HeldRecord, ListFilter,
    MessageRecord, NewMessage, PageAfter, RecipientUpdate, StatsRecord,
};
use super::vocabulary::{AfterRecord, CarryRequestState};

/// The queue's storage.
#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Stores a message and its recipients, all due at `first_attempt_at_ms`, in one transaction.
    /// When `idempotency_key` is taken nothing is written and the first message is returned
    /// with `false`.
    async fn enqueue(&self, message: &NewMessage) -> Result<(MessageRecord, bool), StoreError>;

    /// Stores carried mail as [`QueueStore::enqueue`] does, unless that would take a recipient
    /// past its agreement's caps (bytes held, messages accepted today, this message counted),
    /// checked in the same transaction as the insert so concurrent sessions cannot overshoot
    /// together; then nothing is written and `None` is returned.
    async fn enqueue_within(
        &self,
        message: &NewMessage,
        caps: &[CarryCap],
    ) -> Result<Option<(MessageRecord, bool)>, StoreError>;

    async fn get_message(&self, queue_id: &str) -> Result<Option<MessageRecord>, StoreError>;

    /// The sealed body.
    async fn load_body(&self, queue_id: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// One page in (enqueued_at, queue_id) order.
    async fn list_messages(
        &self,
        filter: &ListFilter,
        after: Option<&PageAfter>,
        limit: u32,
    ) -> Result<Vec<MessageRecord>, StoreError>;

    /// Makes the unfinished recipients due at `now_ms`; false when there is no such message.
    async fn retry_now(&self, queue_id: &str, now_ms: i64) -> Result<bool, StoreError>;

    /// Holds or releases a message; false when there is no such message.
    async fn set_held(&self, queue_id: &str, held: bool) -> Result<bool, StoreError>;

    /// Deletes a message, storing `dsn` (a local message) in the same transaction.
    async fn delete_message(
        &self,
        queue_id: &str,
        dsn: Option<&NewMessage>,
    ) -> Result<bool, StoreError>;

    /// Counts; `age_bounds_ms` are maximum ages, rising.
    async fn stats(&self, now_ms: i64, age_bounds_ms: &[i64]) -> Result<StatsRecord, StoreError>;

    /// Makes every unfinished recipient at `domain` due at `now_ms`; returns how many.
    async fn flush_domain(&self, domain: &str, now_ms: i64) -> Result<u64, StoreError>;

    /// Leases up to `limit` due recipients of unheld messages to `worker` until
    /// `lease_until_ms`, earliest due first.
    async fn claim_due(
        &self,
        worker: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<Claim>, StoreError>;

    /// Extends to `lease_until_ms` every lease `worker` still holds at `now_ms` (one that ran
    /// out may already be another worker's); returns how many.
    async fn renew_leases(
        &self,
        worker: &str,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<u64, StoreError>;

    /// Records results for recipients `worker` holds, releases their leases, stores `dsn` if
    /// given, and deletes the message if every recipient is now final: one transaction.
    async fn record(
        &self,
        worker: &str,
        queue_id: &str,
        updates: &[RecipientUpdate],
        dsn: Option<&NewMessage>,
    ) -> Result<AfterRecord, StoreError>;

    /// The earliest time anything becomes claimable (a due time or a lease running out).
    async fn next_wake(&self) -> Result<Option<i64>, StoreError>;

    /// Notes that a recipient's message was handed to `carrier` (fan-out), so it is handed to
    /// each carrier once. Needs no lease: it only ever adds to the list.
    async fn note_handed(&self, queue_id: &str, idx: i32, carrier: &str) -> Result<(), StoreError>;

    /// Records an agreement; the identity's earlier active agreements end at its creation
    /// time (a newer request replaces an older one), in one transaction.
    async fn add_agreement(&self, agreement: &AgreementRecord) -> Result<(), StoreError>;

    /// The newest agreement for `address` that is active at `now_ms`.
    async fn active_agreement(
        &self,
        address: &str,
        now_ms: i64,
    ) -> Result<Option<AgreementRecord>, StoreError>;

    /// One page in agreement id order, after `after` (an agreement id); ended agreements only
    /// when asked.
    async fn list_agreements(
        &self,
        include_ended: bool,
        now_ms: i64,
        after: &str,
        limit: u32,
    ) -> Result<Vec<AgreementRecord>, StoreError>;

    /// Ends agreements at `now_ms`; returns those that were active and now ended.
    async fn revoke_agreement(
        &self,
        key: &AgreementKey,
        now_ms: i64,
    ) -> Result<Vec<AgreementRecord>, StoreError>;

    /// What is held for `address` now, and how many carried messages for it were accepted on
    /// `day` (milliseconds since the epoch / [`super::DAY_MS`]).
    async fn held_for(&self, address: &str, day: i64) -> Result<HeldRecord, StoreError>;

    /// Keeps a carry statement received in mail; durable when it returns.
    async fn insert_carry_request(&self, request: &CarryRequestRecord) -> Result<(), StoreError>;

    async fn carry_request(
        &self,
        request_id: &str,
    ) -> Result<Option<CarryRequestRecord>, StoreError>;

    /// Requests still verifying whose next attempt is due at `now_ms`, oldest first.
    async fn due_carry_requests(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<CarryRequestRecord>, StoreError>;

    /// Takes a due request for one verification attempt: counts the attempt and moves its next
    /// attempt to `lease_until_ms`, only if nobody took it since it was read with `attempts`
    /// (several queue processes share the table). `false` when another one did.
    async fn claim_carry_request(
        &self,
        request_id: &str,
        attempts: u32,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Writes what became of a request (state, what was verified, detail, next attempt,
    /// decision). `false` when there is no such request, or (with `only_in`) when it is no
    /// longer in that state.
    async fn update_carry_request(
        &self,
        request: &CarryRequestRecord,
        only_in: Option<CarryRequestState>,
    ) -> Result<bool, StoreError>;

    /// One page in request id order, after `after`; only `state` when given.
    async fn list_carry_requests(
        &self,
        state: Option<CarryRequestState>,
        after: &str,
        limit: u32,
    ) -> Result<Vec<CarryRequestRecord>, StoreError>;
}
