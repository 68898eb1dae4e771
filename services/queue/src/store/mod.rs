//! Where the queue keeps messages and recipients.
//!
//! One row per message holds the body (already sealed by the service: the store never sees mail
//! in the clear) and the envelope; one row per recipient holds the delivery state. A message row
//! is deleted, body and all, in the same transaction that brings its last recipient to a final
//! state, so a body lives exactly as long as someone still waits for it.
//!
//! Workers claim due recipients with a lease (`claimed_by`, `claimed_until_ms`) in one
//! statement; on PostgreSQL the selecting subquery locks with `FOR UPDATE SKIP LOCKED`, so
//! several worker processes share the queue without two of them claiming one recipient. A worker
//! that dies leaves leases that expire, and its recipients are tried again: delivery is
//! at-least-once towards the peer, whose ingress drops duplicates by Message-ID and digest.
//!
//! Both backends share one implementation (the `store_impl!` macro below) written with `?`
//! placeholders; the suite in `tests` runs it against SQLite and PostgreSQL.

mod postgres;
mod sqlite;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use async_trait::async_trait;
use onionpost_runtime::{Database, Migrations};

pub use onionpost_runtime::db::StoreError;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// The migrations of both backends.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &sqlx::migrate!("migrations/sqlite"),
    postgres: &sqlx::migrate!("migrations/postgres"),
};

/// The store of an open database.
pub fn for_database(database: Database) -> Arc<dyn QueueStore> {
    match database {
        Database::Sqlite(pool) => Arc::new(SqliteStore::new(pool)),
        Database::Postgres(pool) => Arc::new(PostgresStore::new(pool)),
    }
}

/// Why a message is queued (queue.proto `Origin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Submission,
    Carry,
    /// Made by this carrier (a DSN); delivered to the imap service, not through smtp-out.
    Local,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Submission => "submission",
            Origin::Carry => "carry",
            Origin::Local => "local",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "submission" => Ok(Origin::Submission),
            "carry" => Ok(Origin::Carry),
            "local" => Ok(Origin::Local),
            other => Err(StoreError::Corrupt(format!("unknown origin {other:?}"))),
        }
    }
}

/// Where a recipient's delivery stands (queue.proto `RecipientState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecipientState {
    Scheduled,
    Delivered,
    TemporaryFailure,
    PermanentFailure,
}

impl RecipientState {
    pub const ALL: [RecipientState; 4] = [
        RecipientState::Scheduled,
        RecipientState::Delivered,
        RecipientState::TemporaryFailure,
        RecipientState::PermanentFailure,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecipientState::Scheduled => "scheduled",
            RecipientState::Delivered => "delivered",
            RecipientState::TemporaryFailure => "temporary_failure",
            RecipientState::PermanentFailure => "permanent_failure",
        }
    }

    /// Delivered or failed for good: nothing more will be tried.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RecipientState::Delivered | RecipientState::PermanentFailure
        )
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        RecipientState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown recipient state {text:?}")))
    }
}

/// RFC 3461 NOTIFY values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notify {
    Never,
    Success,
    Failure,
    Delay,
}

impl Notify {
    pub fn as_str(self) -> &'static str {
        match self {
            Notify::Never => "never",
            Notify::Success => "success",
            Notify::Failure => "failure",
            Notify::Delay => "delay",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "never" => Ok(Notify::Never),
            "success" => Ok(Notify::Success),
            "failure" => Ok(Notify::Failure),
            "delay" => Ok(Notify::Delay),
            other => Err(StoreError::Corrupt(format!("unknown notify {other:?}"))),
        }
    }
}

/// RFC 3461 RET.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DsnReturn {
    Unspecified,
    Full,
    Headers,
}

impl DsnReturn {
    pub fn as_str(self) -> &'static str {
        match self {
            DsnReturn::Unspecified => "",
            DsnReturn::Full => "full",
            DsnReturn::Headers => "headers",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "" => Ok(DsnReturn::Unspecified),
            "full" => Ok(DsnReturn::Full),
            "headers" => Ok(DsnReturn::Headers),
            other => Err(StoreError::Corrupt(format!("unknown dsn return {other:?}"))),
        }
    }
}

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

/// What happened to a message after results were recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterRecord {
    /// Some recipients are still unfinished.
    Pending,
    /// Every recipient is final: the message and its body are gone.
    Finished,
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

/// One UTC day in milliseconds: carried mail is counted per address and day.
pub const DAY_MS: i64 = 86_400_000;

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

/// The queue's storage.
#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Stores a message and its recipients, all due at `first_attempt_at_ms`, in one transaction.
    /// When `idempotency_key` is taken nothing is written and the first message is returned
    /// with `false`.
    async fn enqueue(&self, message: &NewMessage) -> Result<(MessageRecord, bool), StoreError>;

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
    /// `day` (milliseconds since the epoch / [`DAY_MS`]).
    async fn held_for(&self, address: &str, day: i64) -> Result<HeldRecord, StoreError>;
}

/// Rewrites `?` placeholders as `$1, $2, …` for PostgreSQL. Our SQL has no `?` in literals.
fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut next = 1;
    for c in sql.chars() {
        if c == '?' {
            out.push_str(&format!("${next}"));
            next += 1;
        } else {
            out.push(c);
        }
    }
    out
}

/// The domain of an address, lower case (`carol@X.onion` → `x.onion`); a v3 onion in its
/// canonical form (`carol@www.X.onion` → `x.onion`), so one onion is one destination.
pub fn domain_of(address: &str) -> String {
    let domain = address
        .rsplit_once('@')
        .map(|(_, domain)| domain)
        .unwrap_or_default()
        .trim_end_matches('>');
    match onionpost_proto::address::OnionHost::parse(domain) {
        Ok(onion) => onion.to_string(),
        Err(_) => domain.to_ascii_lowercase(),
    }
}

fn join_notify(notify: &[Notify]) -> String {
    notify
        .iter()
        .map(|value| value.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn split_notify(text: &str) -> Result<Vec<Notify>, StoreError> {
    text.split(',')
        .filter(|part| !part.is_empty())
        .map(Notify::parse)
        .collect()
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|part| !part.is_empty())
        .map(str::to_owned)
        .collect()
}

const MESSAGE_COLUMNS: &str = "queue_id, idempotency_key, origin, account_id, \
     sender_identity_id, reverse_path, message_id, envelope_id, dsn_return, fan_out_immediately, \
     body_digest, size_bytes, held, enqueued_at_ms, expires_at_ms";

const AGREEMENT_COLUMNS: &str = "agreement_id, address, fingerprint, created_at_ms, \
     expires_at_ms, revoked_at_ms, max_held_bytes, max_messages_per_day";

const RECIPIENT_COLUMNS: &str = "idx, address, state, notify, orcpt, attempts, \
     last_attempt_at_ms, next_attempt_at_ms, reply_code, reply_enhanced, reply_text, \
     handed_to_carriers, claimed_by, claimed_until_ms";

/// States that still wait for an attempt, as an SQL list.
const UNFINISHED: &str = "('scheduled', 'temporary_failure')";

/// The one implementation of [`QueueStore`], expanded for each backend. `$sql` turns
/// `?`-placeholder SQL into the backend's dialect; `$lock` ends the claiming subquery
/// (PostgreSQL: `FOR UPDATE OF r SKIP LOCKED`; SQLite has one writer at a time, so its single
/// UPDATE statement is already atomic).
macro_rules! store_impl {
    ($store:ident, $db:ty, $row:ty, $sql:expr, $lock:expr) => {
        use async_trait::async_trait;
        use sqlx::Row as _;

        use super::{
            AGREEMENT_COLUMNS, AfterRecord, AgreementKey, AgreementRecord, Claim, DAY_MS, DsnReturn, HeldRecord, ListFilter, MESSAGE_COLUMNS, MessageRecord,
            NewMessage, Origin, PageAfter, QueueStore, RECIPIENT_COLUMNS, RecipientRecord,
            RecipientState, RecipientUpdate, Reply, StatsRecord, StoreError, UNFINISHED,
            domain_of, join_notify, split_list, split_notify,
        };

        type Connection = <$db as sqlx::Database>::Connection;

        /// The queue store on this backend.
        #[derive(Clone, Debug)]
        pub struct $store {
            pool: sqlx::Pool<$db>,
        }

        impl $store {
            pub fn new(pool: sqlx::Pool<$db>) -> Self {
                Self { pool }
            }

            fn sql(text: &str) -> String {
                ($sql)(text)
            }

            fn message_from_row(
                row: &$row,
                recipients: Vec<RecipientRecord>,
            ) -> Result<MessageRecord, StoreError> {
                Ok(MessageRecord {
                    queue_id: row.try_get("queue_id")?,
                    idempotency_key: row.try_get("idempotency_key")?,
                    origin: Origin::parse(&row.try_get::<String, _>("origin")?)?,
                    account_id: row.try_get("account_id")?,
                    sender_identity_id: row.try_get("sender_identity_id")?,
                    reverse_path: row.try_get("reverse_path")?,
                    message_id: row.try_get("message_id")?,
                    envelope_id: row.try_get("envelope_id")?,
                    dsn_return: DsnReturn::parse(&row.try_get::<String, _>("dsn_return")?)?,
                    fan_out_immediately: row.try_get("fan_out_immediately")?,
                    body_digest: row.try_get("body_digest")?,
                    size_bytes: u64::try_from(row.try_get::<i64, _>("size_bytes")?)
                        .map_err(|_| StoreError::Corrupt("negative size".into()))?,
                    held: row.try_get("held")?,
                    enqueued_at_ms: row.try_get("enqueued_at_ms")?,
                    expires_at_ms: row.try_get("expires_at_ms")?,
                    recipients,
                })
            }

            fn agreement_from_row(row: &$row) -> Result<AgreementRecord, StoreError> {
                let count = |name: &str| -> Result<u64, StoreError> {
                    u64::try_from(row.try_get::<i64, _>(name)?)
                        .map_err(|_| StoreError::Corrupt(format!("negative {name}")))
                };
                Ok(AgreementRecord {
                    agreement_id: row.try_get("agreement_id")?,
                    address: row.try_get("address")?,
                    fingerprint: row.try_get("fingerprint")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    expires_at_ms: row.try_get("expires_at_ms")?,
                    revoked_at_ms: row.try_get("revoked_at_ms")?,
                    max_held_bytes: count("max_held_bytes")?,
                    max_messages_per_day: u32::try_from(
                        row.try_get::<i32, _>("max_messages_per_day")?,
                    )
                    .map_err(|_| StoreError::Corrupt("negative max_messages_per_day".into()))?,
                })
            }

            fn recipient_from_row(row: &$row) -> Result<RecipientRecord, StoreError> {
                let code: Option<i32> = row.try_get("reply_code")?;
                let last_reply = match code {
                    None => None,
                    Some(code) => Some(Reply {
                        code: u32::try_from(code)
                            .map_err(|_| StoreError::Corrupt("negative reply code".into()))?,
                        enhanced_status: row
                            .try_get::<Option<String>, _>("reply_enhanced")?
                            .unwrap_or_default(),
                        text: row
                            .try_get::<Option<String>, _>("reply_text")?
                            .unwrap_or_default(),
                    }),
                };
                Ok(RecipientRecord {
                    idx: row.try_get("idx")?,
                    address: row.try_get("address")?,
                    state: RecipientState::parse(&row.try_get::<String, _>("state")?)?,
                    notify: split_notify(&row.try_get::<String, _>("notify")?)?,
                    original_recipient: row.try_get("orcpt")?,
                    attempts: u32::try_from(row.try_get::<i32, _>("attempts")?)
                        .map_err(|_| StoreError::Corrupt("negative attempts".into()))?,
                    last_attempt_at_ms: row.try_get("last_attempt_at_ms")?,
                    next_attempt_at_ms: row.try_get("next_attempt_at_ms")?,
                    last_reply,
                    handed_to_carriers: split_list(
                        &row.try_get::<String, _>("handed_to_carriers")?,
                    ),
                    claimed_by: row.try_get("claimed_by")?,
                    claimed_until_ms: row.try_get("claimed_until_ms")?,
                })
            }

            async fn recipients_of(
                connection: &mut Connection,
                queue_id: &str,
            ) -> Result<Vec<RecipientRecord>, StoreError> {
                let sql = Self::sql(&format!(
                    "SELECT {RECIPIENT_COLUMNS} FROM recipients WHERE queue_id = ? ORDER BY idx"
                ));
                sqlx::query(&sql)
                    .bind(queue_id)
                    .fetch_all(&mut *connection)
                    .await?
                    .iter()
                    .map(Self::recipient_from_row)
                    .collect()
            }

            async fn message_where(
                connection: &mut Connection,
                column: &str,
                value: &str,
            ) -> Result<Option<MessageRecord>, StoreError> {
                let sql = Self::sql(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE {column} = ?"
                ));
                let row = sqlx::query(&sql)
                    .bind(value)
                    .fetch_optional(&mut *connection)
                    .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let queue_id: String = row.try_get("queue_id")?;
                let recipients = Self::recipients_of(connection, &queue_id).await?;
                Self::message_from_row(&row, recipients).map(Some)
            }

            /// Inserts a message and its recipients; false when the idempotency key is taken.
            async fn insert_message(
                connection: &mut Connection,
                message: &NewMessage,
            ) -> Result<bool, StoreError> {
                let size = i64::try_from(message.size_bytes)
                    .map_err(|_| StoreError::Corrupt("message too large".into()))?;
                let sql = Self::sql(&format!(
                    "INSERT INTO messages ({MESSAGE_COLUMNS}, body) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                     ON CONFLICT (idempotency_key) DO NOTHING"
                ));
                let inserted = sqlx::query(&sql)
                    .bind(&message.queue_id)
                    .bind(&message.idempotency_key)
                    .bind(message.origin.as_str())
                    .bind(&message.account_id)
                    .bind(&message.sender_identity_id)
                    .bind(&message.reverse_path)
                    .bind(&message.message_id)
                    .bind(&message.envelope_id)
                    .bind(message.dsn_return.as_str())
                    .bind(message.fan_out_immediately)
                    .bind(&message.body_digest)
                    .bind(size)
                    .bind(false)
                    .bind(message.enqueued_at_ms)
                    .bind(message.expires_at_ms)
                    .bind(&message.sealed_body)
                    .execute(&mut *connection)
                    .await?
                    .rows_affected()
                    == 1;
                if !inserted {
                    return Ok(false);
                }
                let sql = Self::sql(
                    "INSERT INTO recipients (queue_id, idx, address, domain, state, notify, orcpt, \
                     next_attempt_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                );
                for (idx, recipient) in message.recipients.iter().enumerate() {
                    let idx = i32::try_from(idx)
                        .map_err(|_| StoreError::Corrupt("too many recipients".into()))?;
                    sqlx::query(&sql)
                        .bind(&message.queue_id)
                        .bind(idx)
                        .bind(&recipient.address)
                        .bind(domain_of(&recipient.address))
                        .bind(RecipientState::Scheduled.as_str())
                        .bind(join_notify(&recipient.notify))
                        .bind(&recipient.original_recipient)
                        .bind(message.first_attempt_at_ms)
                        .execute(&mut *connection)
                        .await?;
                }
                if message.origin == Origin::Carry {
                    Self::count_intake(connection, message).await?;
                }
                Ok(true)
            }

            /// Counts a carried message against each recipient's daily cap, and forgets the
            /// days before yesterday.
            async fn count_intake(
                connection: &mut Connection,
                message: &NewMessage,
            ) -> Result<(), StoreError> {
                let day = message.enqueued_at_ms.div_euclid(DAY_MS);
                sqlx::query(&Self::sql("DELETE FROM carry_intake WHERE day < ?"))
                    .bind(day - 1)
                    .execute(&mut *connection)
                    .await?;
                let sql = Self::sql(
                    "INSERT INTO carry_intake (address, day, messages) VALUES (?, ?, 1) \
                     ON CONFLICT (address, day) DO UPDATE \
                     SET messages = carry_intake.messages + 1",
                );
                for recipient in &message.recipients {
                    sqlx::query(&sql)
                        .bind(&recipient.address)
                        .bind(day)
                        .execute(&mut *connection)
                        .await?;
                }
                Ok(())
            }

            async fn delete_rows(
                connection: &mut Connection,
                queue_id: &str,
            ) -> Result<bool, StoreError> {
                sqlx::query(&Self::sql(
                    "DELETE FROM recipients WHERE queue_id = ?",
                ))
                .bind(queue_id)
                .execute(&mut *connection)
                .await?;
                let deleted = sqlx::query(&Self::sql(
                    "DELETE FROM messages WHERE queue_id = ?",
                ))
                .bind(queue_id)
                .execute(&mut *connection)
                .await?
                .rows_affected();
                Ok(deleted == 1)
            }
        }

        #[async_trait]
        impl QueueStore for $store {
            async fn enqueue(
                &self,
                message: &NewMessage,
            ) -> Result<(MessageRecord, bool), StoreError> {
                let mut tx = self.pool.begin().await?;
                let created = Self::insert_message(&mut tx, message).await?;
                let stored =
                    Self::message_where(&mut tx, "idempotency_key", &message.idempotency_key)
                        .await?
                        .ok_or_else(|| StoreError::Corrupt("enqueued message vanished".into()))?;
                tx.commit().await?;
                Ok((stored, created))
            }

            async fn get_message(
                &self,
                queue_id: &str,
            ) -> Result<Option<MessageRecord>, StoreError> {
                let mut connection = self.pool.acquire().await?;
                Self::message_where(&mut connection, "queue_id", queue_id).await
            }

            async fn load_body(&self, queue_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
                let row = sqlx::query(&Self::sql(
                    "SELECT body FROM messages WHERE queue_id = ?",
                ))
                .bind(queue_id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(match row {
                    Some(row) => Some(row.try_get("body")?),
                    None => None,
                })
            }

            async fn list_messages(
                &self,
                filter: &ListFilter,
                after: Option<&PageAfter>,
                limit: u32,
            ) -> Result<Vec<MessageRecord>, StoreError> {
                let sql = Self::sql(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE \
                     (CAST(? AS TEXT) = '' OR EXISTS (SELECT 1 FROM recipients r \
                        WHERE r.queue_id = m.queue_id AND r.state = CAST(? AS TEXT))) \
                     AND (CAST(? AS BIGINT) = 0 OR m.held) \
                     AND (CAST(? AS TEXT) = '' OR EXISTS (SELECT 1 FROM recipients r \
                        WHERE r.queue_id = m.queue_id AND (LOWER(r.address) = LOWER(CAST(? AS TEXT)) \
                        OR r.domain = LOWER(CAST(? AS TEXT))))) \
                     AND (CAST(? AS TEXT) = '' OR m.account_id = CAST(? AS TEXT)) \
                     AND (CAST(? AS TEXT) = '' OR m.origin = CAST(? AS TEXT)) \
                     AND m.enqueued_at_ms < CAST(? AS BIGINT) \
                     AND (m.enqueued_at_ms > CAST(? AS BIGINT) \
                        OR (m.enqueued_at_ms = CAST(? AS BIGINT) AND m.queue_id > CAST(? AS TEXT))) \
                     ORDER BY m.enqueued_at_ms, m.queue_id LIMIT CAST(? AS BIGINT)"
                ));
                let state = filter.state.map_or("", RecipientState::as_str);
                let origin = filter.origin.map_or("", Origin::as_str);
                let (after_at, after_id) = after.map_or((i64::MIN, ""), |page| {
                    (page.enqueued_at_ms, page.queue_id.as_str())
                });
                let mut connection = self.pool.acquire().await?;
                let rows = sqlx::query(&sql)
                    .bind(state)
                    .bind(state)
                    .bind(i64::from(filter.held_only))
                    .bind(&filter.recipient)
                    .bind(&filter.recipient)
                    .bind(&filter.recipient)
                    .bind(&filter.account_id)
                    .bind(&filter.account_id)
                    .bind(origin)
                    .bind(origin)
                    .bind(filter.enqueued_before_ms.unwrap_or(i64::MAX))
                    .bind(after_at)
                    .bind(after_at)
                    .bind(after_id)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *connection)
                    .await?;
                let mut messages = Vec::with_capacity(rows.len());
                for row in &rows {
                    let queue_id: String = row.try_get("queue_id")?;
                    let recipients = Self::recipients_of(&mut connection, &queue_id).await?;
                    messages.push(Self::message_from_row(row, recipients)?);
                }
                Ok(messages)
            }

            async fn retry_now(&self, queue_id: &str, now_ms: i64) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                let exists = sqlx::query(&Self::sql(
                    "SELECT queue_id FROM messages WHERE queue_id = ?",
                ))
                .bind(queue_id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
                sqlx::query(&Self::sql(&format!(
                    "UPDATE recipients SET next_attempt_at_ms = ? \
                     WHERE queue_id = ? AND state IN {UNFINISHED}"
                )))
                .bind(now_ms)
                .bind(queue_id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(exists)
            }

            async fn set_held(&self, queue_id: &str, held: bool) -> Result<bool, StoreError> {
                let changed = sqlx::query(&Self::sql(
                    "UPDATE messages SET held = ? WHERE queue_id = ?",
                ))
                .bind(held)
                .bind(queue_id)
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(changed == 1)
            }

            async fn delete_message(
                &self,
                queue_id: &str,
                dsn: Option<&NewMessage>,
            ) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                let deleted = Self::delete_rows(&mut tx, queue_id).await?;
                if deleted && let Some(dsn) = dsn {
                    Self::insert_message(&mut tx, dsn).await?;
                }
                tx.commit().await?;
                Ok(deleted)
            }

            async fn stats(
                &self,
                now_ms: i64,
                age_bounds_ms: &[i64],
            ) -> Result<StatsRecord, StoreError> {
                let mut connection = self.pool.acquire().await?;
                let mut stats = StatsRecord::default();
                let rows = sqlx::query(
                    "SELECT state, COUNT(*) AS recipients FROM recipients GROUP BY state",
                )
                .fetch_all(&mut *connection)
                .await?;
                for row in &rows {
                    let state = RecipientState::parse(&row.try_get::<String, _>("state")?)?;
                    let count = row.try_get::<i64, _>("recipients")?;
                    stats.by_state.push((state, u64::try_from(count).unwrap_or_default()));
                }
                let row = sqlx::query(
                    "SELECT COUNT(*) AS messages, COUNT(CASE WHEN held THEN 1 END) AS held, \
                     CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) AS bytes, \
                     MIN(enqueued_at_ms) AS oldest FROM messages",
                )
                .fetch_one(&mut *connection)
                .await?;
                let count = |name: &str| -> Result<u64, StoreError> {
                    Ok(u64::try_from(row.try_get::<i64, _>(name)?).unwrap_or_default())
                };
                stats.messages = count("messages")?;
                stats.held_messages = count("held")?;
                stats.stored_bytes = count("bytes")?;
                stats.oldest_enqueued_at_ms = row.try_get("oldest")?;
                let sql = Self::sql("SELECT COUNT(*) AS n FROM messages WHERE enqueued_at_ms >= ?");
                for bound in age_bounds_ms {
                    let row = sqlx::query(&sql)
                        .bind(now_ms.saturating_sub(*bound))
                        .fetch_one(&mut *connection)
                        .await?;
                    stats
                        .enqueued_within
                        .push(u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or_default());
                }
                stats.enqueued_within.push(stats.messages);
                Ok(stats)
            }

            async fn flush_domain(&self, domain: &str, now_ms: i64) -> Result<u64, StoreError> {
                Ok(sqlx::query(&Self::sql(&format!(
                    "UPDATE recipients SET next_attempt_at_ms = ? \
                     WHERE domain = ? AND state IN {UNFINISHED}"
                )))
                .bind(now_ms)
                .bind(domain.to_ascii_lowercase())
                .execute(&self.pool)
                .await?
                .rows_affected())
            }

            async fn claim_due(
                &self,
                worker: &str,
                now_ms: i64,
                lease_until_ms: i64,
                limit: u32,
            ) -> Result<Vec<Claim>, StoreError> {
                // The CTE's columns are renamed so that neither backend finds `queue_id`
                // ambiguous between the CTE and the updated table.
                let sql = Self::sql(&format!(
                    "WITH due AS (SELECT r.queue_id AS due_queue_id, r.idx AS due_idx \
                        FROM recipients r JOIN messages m ON m.queue_id = r.queue_id \
                        WHERE r.state IN {UNFINISHED} AND r.next_attempt_at_ms <= ? \
                        AND NOT m.held \
                        AND (r.claimed_until_ms IS NULL OR r.claimed_until_ms <= ?) \
                        ORDER BY r.next_attempt_at_ms, r.queue_id, r.idx LIMIT ? {lock}) \
                     UPDATE recipients SET claimed_by = ?, claimed_until_ms = ? FROM due \
                     WHERE queue_id = due_queue_id AND idx = due_idx \
                     RETURNING queue_id, idx",
                    lock = $lock
                ));
                let rows = sqlx::query(&sql)
                    .bind(now_ms)
                    .bind(now_ms)
                    .bind(i64::from(limit))
                    .bind(worker)
                    .bind(lease_until_ms)
                    .fetch_all(&self.pool)
                    .await?;
                let mut claims = rows
                    .iter()
                    .map(|row| {
                        Ok(Claim {
                            queue_id: row.try_get("queue_id")?,
                            idx: row.try_get("idx")?,
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                claims.sort();
                Ok(claims)
            }

            async fn renew_leases(
                &self,
                worker: &str,
                now_ms: i64,
                lease_until_ms: i64,
            ) -> Result<u64, StoreError> {
                Ok(sqlx::query(&Self::sql(
                    "UPDATE recipients SET claimed_until_ms = ? \
                     WHERE claimed_by = ? AND claimed_until_ms > ?",
                ))
                .bind(lease_until_ms)
                .bind(worker)
                .bind(now_ms)
                .execute(&self.pool)
                .await?
                .rows_affected())
            }

            async fn record(
                &self,
                worker: &str,
                queue_id: &str,
                updates: &[RecipientUpdate],
                dsn: Option<&NewMessage>,
            ) -> Result<AfterRecord, StoreError> {
                let mut tx = self.pool.begin().await?;
                let sql = Self::sql(
                    "UPDATE recipients SET state = ?, attempts = attempts + ?, \
                     last_attempt_at_ms = COALESCE(?, last_attempt_at_ms), \
                     next_attempt_at_ms = ?, \
                     reply_code = COALESCE(?, reply_code), \
                     reply_enhanced = COALESCE(?, reply_enhanced), \
                     reply_text = COALESCE(?, reply_text), \
                     claimed_by = NULL, claimed_until_ms = NULL \
                     WHERE queue_id = ? AND idx = ? AND claimed_by = ?",
                );
                for update in updates {
                    let reply = update.reply.as_ref();
                    sqlx::query(&sql)
                        .bind(update.state.as_str())
                        .bind(i32::from(update.attempted))
                        .bind(update.attempted.then_some(update.attempted_at_ms))
                        .bind(update.next_attempt_at_ms)
                        .bind(reply.map(|reply| i32::try_from(reply.code).unwrap_or(i32::MAX)))
                        .bind(reply.map(|reply| reply.enhanced_status.clone()))
                        .bind(reply.map(|reply| reply.text.clone()))
                        .bind(queue_id)
                        .bind(update.idx)
                        .bind(worker)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(dsn) = dsn {
                    Self::insert_message(&mut tx, dsn).await?;
                }
                let unfinished: i64 = sqlx::query(&Self::sql(&format!(
                    "SELECT COUNT(*) AS n FROM recipients WHERE queue_id = ? AND state IN {UNFINISHED}"
                )))
                .bind(queue_id)
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
                let after = if unfinished == 0 {
                    Self::delete_rows(&mut tx, queue_id).await?;
                    AfterRecord::Finished
                } else {
                    AfterRecord::Pending
                };
                tx.commit().await?;
                Ok(after)
            }

            async fn next_wake(&self) -> Result<Option<i64>, StoreError> {
                let row = sqlx::query(&format!(
                    "SELECT MIN(CASE WHEN r.claimed_until_ms IS NOT NULL \
                        AND r.claimed_until_ms > r.next_attempt_at_ms \
                        THEN r.claimed_until_ms ELSE r.next_attempt_at_ms END) AS wake \
                     FROM recipients r JOIN messages m ON m.queue_id = r.queue_id \
                     WHERE r.state IN {UNFINISHED} AND NOT m.held"
                ))
                .fetch_one(&self.pool)
                .await?;
                Ok(row.try_get("wake")?)
            }

            async fn note_handed(
                &self,
                queue_id: &str,
                idx: i32,
                carrier: &str,
            ) -> Result<(), StoreError> {
                sqlx::query(&Self::sql(
                    "UPDATE recipients SET handed_to_carriers = CASE \
                        WHEN handed_to_carriers = '' THEN CAST(? AS TEXT) \
                        ELSE handed_to_carriers || ',' || CAST(? AS TEXT) END \
                     WHERE queue_id = ? AND idx = ?",
                ))
                .bind(carrier)
                .bind(carrier)
                .bind(queue_id)
                .bind(idx)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn add_agreement(&self, agreement: &AgreementRecord) -> Result<(), StoreError> {
                let cap = |value: u64| {
                    i64::try_from(value).map_err(|_| StoreError::Corrupt("cap too large".into()))
                };
                let mut tx = self.pool.begin().await?;
                sqlx::query(&Self::sql(
                    "UPDATE carry_agreements SET revoked_at_ms = ? \
                     WHERE address = ? AND revoked_at_ms IS NULL",
                ))
                .bind(agreement.created_at_ms)
                .bind(&agreement.address)
                .execute(&mut *tx)
                .await?;
                sqlx::query(&Self::sql(&format!(
                    "INSERT INTO carry_agreements ({AGREEMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                )))
                .bind(&agreement.agreement_id)
                .bind(&agreement.address)
                .bind(&agreement.fingerprint)
                .bind(agreement.created_at_ms)
                .bind(agreement.expires_at_ms)
                .bind(agreement.revoked_at_ms)
                .bind(cap(agreement.max_held_bytes)?)
                .bind(i32::try_from(agreement.max_messages_per_day).unwrap_or(i32::MAX))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn active_agreement(
                &self,
                address: &str,
                now_ms: i64,
            ) -> Result<Option<AgreementRecord>, StoreError> {
                let row = sqlx::query(&Self::sql(&format!(
                    "SELECT {AGREEMENT_COLUMNS} FROM carry_agreements \
                     WHERE address = ? AND revoked_at_ms IS NULL \
                     AND (expires_at_ms IS NULL OR expires_at_ms > ?) \
                     ORDER BY created_at_ms DESC, agreement_id DESC LIMIT 1"
                )))
                .bind(address)
                .bind(now_ms)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::agreement_from_row).transpose()
            }

            async fn list_agreements(
                &self,
                include_ended: bool,
                now_ms: i64,
                after: &str,
                limit: u32,
            ) -> Result<Vec<AgreementRecord>, StoreError> {
                let rows = sqlx::query(&Self::sql(&format!(
                    "SELECT {AGREEMENT_COLUMNS} FROM carry_agreements \
                     WHERE agreement_id > ? AND (CAST(? AS BIGINT) = 1 OR \
                        (revoked_at_ms IS NULL AND (expires_at_ms IS NULL OR expires_at_ms > ?))) \
                     ORDER BY agreement_id LIMIT CAST(? AS BIGINT)"
                )))
                .bind(after)
                .bind(i64::from(include_ended))
                .bind(now_ms)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::agreement_from_row).collect()
            }

            async fn revoke_agreement(
                &self,
                key: &AgreementKey,
                now_ms: i64,
            ) -> Result<Vec<AgreementRecord>, StoreError> {
                let (column, value) = match key {
                    AgreementKey::Id(id) => ("agreement_id", id.as_str()),
                    AgreementKey::Address(address) => ("address", address.as_str()),
                };
                let mut tx = self.pool.begin().await?;
                let rows = sqlx::query(&Self::sql(&format!(
                    "SELECT {AGREEMENT_COLUMNS} FROM carry_agreements \
                     WHERE {column} = ? AND revoked_at_ms IS NULL"
                )))
                .bind(value)
                .fetch_all(&mut *tx)
                .await?;
                sqlx::query(&Self::sql(&format!(
                    "UPDATE carry_agreements SET revoked_at_ms = ? \
                     WHERE {column} = ? AND revoked_at_ms IS NULL"
                )))
                .bind(now_ms)
                .bind(value)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                let mut ended = Vec::with_capacity(rows.len());
                for row in &rows {
                    let mut agreement = Self::agreement_from_row(row)?;
                    agreement.revoked_at_ms = Some(now_ms);
                    ended.push(agreement);
                }
                Ok(ended)
            }

            async fn held_for(&self, address: &str, day: i64) -> Result<HeldRecord, StoreError> {
                let row = sqlx::query(&Self::sql(&format!(
                    "SELECT COUNT(CASE WHEN r.state IN {UNFINISHED} THEN 1 END) AS messages, \
                     CAST(COALESCE(SUM(CASE WHEN r.state IN {UNFINISHED} THEN m.size_bytes END), 0) \
                        AS BIGINT) AS bytes, \
                     CAST(COALESCE((SELECT messages FROM carry_intake \
                        WHERE address = ? AND day = ?), 0) AS BIGINT) AS recent \
                     FROM recipients r JOIN messages m ON m.queue_id = r.queue_id \
                     WHERE r.address = ? AND m.origin = 'carry'"
                )))
                .bind(address)
                .bind(day)
                .bind(address)
                .fetch_one(&self.pool)
                .await?;
                let count = |name: &str| -> Result<u64, StoreError> {
                    Ok(u64::try_from(row.try_get::<i64, _>(name)?).unwrap_or_default())
                };
                Ok(HeldRecord {
                    messages: count("messages")?,
                    bytes: count("bytes")?,
                    accepted_on_day: count("recent")?,
                })
            }
        }
    };
}

pub(crate) use store_impl;
