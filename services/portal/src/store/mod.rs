//! Where the portal keeps its own data: sessions, and each account's optional second factor.
//!
//! Accounts, identities and keys belong to other services and are asked for over gRPC. A session
//! is stored as the SHA-256 of its token (256 random bits, so a plain hash is enough: there is
//! nothing to guess) with its account and expiry. Both backends share one implementation
//! (`store_impl!` in `sql.rs`); the suite in `tests` runs it on SQLite and PostgreSQL.

mod postgres;
mod sql;
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

/// One session as stored: never the token itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// Lower-case hex SHA-256 of the session token.
    pub session_hash: String,
    pub account_id: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// An account's TOTP second factor as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecondFactorRecord {
    pub account_id: String,
    /// The TOTP secret, sealed with the carrier secret.
    pub sealed_secret: Vec<u8>,
    /// Whether a first code confirmed it; until then sign-in does not ask for codes.
    pub confirmed: bool,
    /// The highest time step accepted (RFC 6238 §5.2: a code is taken once).
    pub last_step: i64,
    pub created_at_ms: i64,
}

/// The portal's storage.
#[async_trait]
pub trait PortalStore: Send + Sync {
    /// Adds a session; [`StoreError::Duplicate`] when its hash exists.
    async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError>;
    /// The session with this hash if it has not expired at `now_ms`.
    async fn live_session(
        &self,
        session_hash: &str,
        now_ms: i64,
    ) -> Result<Option<SessionRecord>, StoreError>;
    /// Ends one session; false when there was none.
    async fn delete_session(&self, session_hash: &str) -> Result<bool, StoreError>;
    /// Ends every session of an account but `keep` (the one that asked); how many ended.
    async fn delete_account_sessions(
        &self,
        account_id: &str,
        keep: Option<&str>,
    ) -> Result<u64, StoreError>;
    /// Deletes sessions expired at `now_ms`; how many.
    async fn purge_expired(&self, now_ms: i64) -> Result<u64, StoreError>;
    /// Sessions not expired at `now_ms`.
    async fn count_live(&self, now_ms: i64) -> Result<u64, StoreError>;

    /// Stores a new, unconfirmed second factor in place of an unconfirmed one; false (nothing
    /// changed) when the account has a confirmed one.
    async fn begin_second_factor(&self, record: &SecondFactorRecord) -> Result<bool, StoreError>;
    /// The account's second factor, confirmed or not.
    async fn second_factor(
        &self,
        account_id: &str,
    ) -> Result<Option<SecondFactorRecord>, StoreError>;
    /// Takes time step `step` for the account, marking the factor confirmed: true when `step`
    /// is newer than every step taken before (so a code works once), false otherwise.
    async fn take_step(&self, account_id: &str, step: i64) -> Result<bool, StoreError>;
    /// Removes the account's second factor; false when it had none.
    async fn delete_second_factor(&self, account_id: &str) -> Result<bool, StoreError>;
}

/// The store for an open database.
pub fn for_database(database: Database) -> Arc<dyn PortalStore> {
    match database {
        Database::Sqlite(pool) => Arc::new(SqliteStore::new(pool)),
        Database::Postgres(pool) => Arc::new(PostgresStore::new(pool)),
    }
}
