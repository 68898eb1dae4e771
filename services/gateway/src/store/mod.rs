//! Where the gateway keeps aliases, each account's daily clearnet sends and its traffic
//! counters.
//!
//! An alias row maps a random local part back to the identity and the correspondent it was made
//! for; at most one live alias exists per (identity, correspondent) (a partial unique index), and
//! a revoked row stays so the same local part is never handed out again. The correspondent is
//! kept sealed with the carrier secret and found by a keyed digest of (identity, correspondent),
//! so a copied volume does not show whom an identity writes to in the clearnet (issue 18, item
//! 10). Both backends share one
//! implementation (`store_impl!` in `sql.rs`) written in the dialect of
//! [`onionpost_runtime::sql`]; the suite in `tests` runs it against SQLite and PostgreSQL.

mod postgres;
mod sql;
mod sqlite;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use async_trait::async_trait;
use onionpost_runtime::seal::{CarrierSecret, Sealer};
use onionpost_runtime::{Database, Migrations};

pub use onionpost_runtime::db::StoreError;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// The migrations of both backends.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &sqlx::migrate!("migrations/sqlite"),
    postgres: &sqlx::migrate!("migrations/postgres"),
};

/// The carrier secret's purpose for the correspondents of aliases.
pub const SEAL_PURPOSE: &str = "gateway-aliases";

/// The store of an open database, sealing correspondents with `secret`.
pub fn for_database(database: Database, secret: &CarrierSecret) -> Arc<dyn GatewayStore> {
    let sealer = secret.sealer(SEAL_PURPOSE);
    match database {
        Database::Sqlite(pool) => Arc::new(SqliteStore::new(pool, sealer)),
        Database::Postgres(pool) => Arc::new(PostgresStore::new(pool, sealer)),
    }
}

/// The lookup key of `correspondent` for `identity_id`: equal for equal pairs, and without the
/// carrier secret it confirms no guessed address.
fn correspondent_key(sealer: &Sealer, identity_id: &str, correspondent: &str) -> String {
    hex::encode(sealer.keyed_digest(&[identity_id.as_bytes(), correspondent.as_bytes()]))
}

/// What a sealed correspondent is bound to: its alias, so it cannot be moved to another row.
fn associated(local_part: &str) -> Vec<u8> {
    format!("alias\n{local_part}").into_bytes()
}

fn seal_correspondent(sealer: &Sealer, local_part: &str, correspondent: &str) -> Vec<u8> {
    sealer.seal(correspondent.as_bytes(), &associated(local_part))
}

fn open_correspondent(
    sealer: &Sealer,
    local_part: &str,
    sealed: &[u8],
) -> Result<String, StoreError> {
    let plaintext = sealer
        .open(sealed, &associated(local_part))
        .map_err(|error| StoreError::Corrupt(format!("alias correspondent: {error}")))?;
    String::from_utf8(plaintext.to_vec())
        .map_err(|_| StoreError::Corrupt("alias correspondent is not UTF-8".into()))
}

/// One alias as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasRecord {
    /// The local part alone; the address adds the gateway domain.
    pub local_part: String,
    pub identity_id: String,
    pub account_id: String,
    /// The clearnet address the alias was made for, normalised to lower case.
    pub correspondent: String,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
}

impl AliasRecord {
    pub fn is_live(&self) -> bool {
        self.revoked_at_ms.is_none()
    }
}

/// Which aliases a listing covers.
#[derive(Debug, Clone, Default)]
pub struct AliasFilter {
    pub account_id: Option<String>,
    pub identity_id: Option<String>,
    pub include_revoked: bool,
    /// Only local parts after this one (the page token).
    pub after: Option<String>,
    pub limit: u32,
}

/// A traffic counter of `GatewayStats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    OutboundDelivered,
    OutboundFailed,
    InboundAccepted,
    InboundRefused,
    InboundDmarcFailed,
    InboundSpam,
}

impl Counter {
    pub const ALL: [Counter; 6] = [
        Counter::OutboundDelivered,
        Counter::OutboundFailed,
        Counter::InboundAccepted,
        Counter::InboundRefused,
        Counter::InboundDmarcFailed,
        Counter::InboundSpam,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Counter::OutboundDelivered => "outbound_delivered",
            Counter::OutboundFailed => "outbound_failed",
            Counter::InboundAccepted => "inbound_accepted",
            Counter::InboundRefused => "inbound_refused",
            Counter::InboundDmarcFailed => "inbound_dmarc_failed",
            Counter::InboundSpam => "inbound_spam",
        }
    }
}

/// The gateway's storage.
#[async_trait]
pub trait GatewayStore: Send + Sync + 'static {
    /// The live alias of `identity_id` for `correspondent`; when there is none, `new_local_part`
    /// is recorded as one and returned.
    async fn alias_for(
        &self,
        identity_id: &str,
        account_id: &str,
        correspondent: &str,
        new_local_part: &str,
        now_ms: i64,
    ) -> Result<AliasRecord, StoreError>;

    /// The alias with this local part, live or revoked.
    async fn alias(&self, local_part: &str) -> Result<Option<AliasRecord>, StoreError>;

    /// Aliases by local part, within the filter.
    async fn list_aliases(&self, filter: &AliasFilter) -> Result<Vec<AliasRecord>, StoreError>;

    /// Revokes an alias (a second revocation keeps the first time); None when there is none.
    async fn revoke_alias(
        &self,
        local_part: &str,
        now_ms: i64,
    ) -> Result<Option<AliasRecord>, StoreError>;

    /// Records that mail went out through or came in for an alias.
    async fn touch_alias(&self, local_part: &str, now_ms: i64) -> Result<(), StoreError>;

    /// Live aliases, for statistics.
    async fn live_aliases(&self) -> Result<u64, StoreError>;

    /// Seals the correspondents that an earlier version kept in the clear, erasing the clear
    /// text; returns how many. Run once at start.
    async fn seal_clear_aliases(&self) -> Result<usize, StoreError>;

    /// Clearnet recipients `account_id` sent to on `day` (`YYYY-MM-DD`, UTC).
    async fn sent_on(&self, account_id: &str, day: &str) -> Result<u64, StoreError>;

    /// Counts `recipients` more for `account_id` on `day` if that keeps the day within `cap`,
    /// in one statement, so concurrent reservations never overshoot it together. Returns
    /// whether they were counted.
    async fn reserve_sent(
        &self,
        account_id: &str,
        day: &str,
        recipients: u64,
        cap: u64,
    ) -> Result<bool, StoreError>;

    /// Gives back `recipients` of a reservation on `day` (never below zero).
    async fn release_sent(
        &self,
        account_id: &str,
        day: &str,
        recipients: u64,
    ) -> Result<(), StoreError>;

    /// Adds to a traffic counter of `day`.
    async fn count(&self, day: &str, counter: Counter, by: u64) -> Result<(), StoreError>;

    /// A traffic counter of `day`.
    async fn counter(&self, day: &str, counter: Counter) -> Result<u64, StoreError>;
}
