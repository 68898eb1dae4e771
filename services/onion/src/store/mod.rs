//! Where the onion service keeps its identities: one row per identity with its service id, its
//! sealed key and its block of target ports, kept as a tombstone after revocation (the key
//! gone) so that neither the identity id nor the address can come back.
//!
//! Both backends share one implementation (`store_impl!` in `sql.rs`) written in the dialect of
//! [`onionpost_runtime::sql`]; the suite in `tests` runs it against both through
//! [`onionpost_runtime::conformance::each_backend`]. Keys arrive here already sealed: the store
//! never sees key material in the clear.

mod postgres;
mod sql;
mod sqlite;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use async_trait::async_trait;
use onionpost_runtime::{Database, Migrations};

use crate::ports::Purpose;

pub use onionpost_runtime::db::StoreError;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// The migrations of both backends.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &sqlx::migrate!("migrations/sqlite"),
    postgres: &sqlx::migrate!("migrations/postgres"),
};

/// One identity's onion as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredOnion {
    pub identity_id: String,
    /// The v3 service id (the address without `.onion`).
    pub service_id: String,
    /// tor's key blob sealed with the carrier secret (`onion-key` purpose, bound to the
    /// identity id); `None` once revoked.
    pub sealed_key: Option<Vec<u8>>,
    /// The identity's block of target ports; `None` once revoked.
    pub slot: Option<u32>,
    pub purposes: Vec<Purpose>,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    /// When a revoked identity's onion is to be revoked in turn (it serves the revocation until
    /// then); `None` while none is scheduled.
    pub retire_at_ms: Option<i64>,
    /// Which tor of the pool it is placed on (its index in tor.control, or child N); `None`
    /// for rows from before pools, until it is placed.
    pub tor: Option<u32>,
}

impl std::fmt::Debug for StoredOnion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredOnion")
            .field("identity_id", &self.identity_id)
            .field("service_id", &self.service_id)
            .field("has_key", &self.sealed_key.is_some())
            .field("slot", &self.slot)
            .field("purposes", &self.purposes)
            .field("created_at_ms", &self.created_at_ms)
            .field("revoked_at_ms", &self.revoked_at_ms)
            .field("retire_at_ms", &self.retire_at_ms)
            .field("tor", &self.tor)
            .finish()
    }
}

/// The onion service's storage.
#[async_trait]
pub trait OnionStore: Send + Sync + 'static {
    /// Stores a new live onion; [`StoreError::Duplicate`] when its identity id, service id or
    /// slot is taken.
    async fn insert(&self, onion: &StoredOnion) -> Result<(), StoreError>;

    /// One identity's onion, revoked or not.
    async fn get(&self, identity_id: &str) -> Result<Option<StoredOnion>, StoreError>;

    /// Whether any identity, revoked or not, ever had this service id.
    async fn service_id_known(&self, service_id: &str) -> Result<bool, StoreError>;

    /// Every onion that is not revoked, ordered by identity id.
    async fn live(&self) -> Result<Vec<StoredOnion>, StoreError>;

    /// Revoked onions with an identity id after `after`, at most `limit`, in id order.
    async fn revoked(&self, after: &str, limit: u32) -> Result<Vec<StoredOnion>, StoreError>;

    /// Marks an onion revoked and destroys its key and slot, so that the key is gone from the
    /// store's files, not just hidden. `false` when there is no live onion for the id.
    async fn revoke(&self, identity_id: &str, at_ms: i64) -> Result<bool, StoreError>;

    /// Places a live onion on tor `tor` of the pool; `false` when there is no live onion for
    /// the id.
    async fn place(&self, identity_id: &str, tor: u32) -> Result<bool, StoreError>;

    /// Schedules a live onion's revocation for `at_ms`. The first schedule stands: `false`
    /// when one is already set or there is no live onion for the id.
    async fn schedule_retirement(&self, identity_id: &str, at_ms: i64) -> Result<bool, StoreError>;
}

/// The store of an open database.
pub fn for_database(database: Database) -> Arc<dyn OnionStore> {
    match database {
        Database::Sqlite(pool) => Arc::new(SqliteStore::new(pool)),
        Database::Postgres(pool) => Arc::new(PostgresStore::new(pool)),
    }
}
