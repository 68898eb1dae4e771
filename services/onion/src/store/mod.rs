//! Where the onion service keeps its identities: one row per identity with its service id, its
//! sealed key and its block of target ports, kept as a tombstone after revocation (the key
//! gone) so that neither the identity id nor the address can come back.
//!
//! The trait has one implementation per backend (SQLite, PostgreSQL); the suite in `tests`
//! runs against both through [`onionpost_runtime::conformance::each_backend`]. Keys arrive
//! here already sealed: the store never sees key material in the clear.

mod postgres;
mod sqlite;

use async_trait::async_trait;
use onionpost_runtime::{Database, Migrations};

use crate::ports::Purpose;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// The migrations of both backends.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &sqlx::migrate!("migrations/sqlite"),
    postgres: &sqlx::migrate!("migrations/postgres"),
};

pub use onionpost_runtime::db::StoreError;

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
}

/// The store for an opened database.
pub fn for_database(database: Database) -> std::sync::Arc<dyn OnionStore> {
    match database {
        Database::Sqlite(pool) => std::sync::Arc::new(SqliteStore::new(pool)),
        Database::Postgres(pool) => std::sync::Arc::new(PostgresStore::new(pool)),
    }
}

/// Purposes as stored: `smtp,wkd`.
fn purposes_text(purposes: &[Purpose]) -> String {
    purposes
        .iter()
        .map(|purpose| purpose.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_purposes(text: &str) -> Result<Vec<Purpose>, StoreError> {
    text.split(',')
        .filter(|part| !part.is_empty())
        .map(|part| {
            Purpose::parse(part).ok_or_else(|| StoreError::Corrupt(format!("purpose `{part}`")))
        })
        .collect()
}

/// The columns every query selects, in this order.
const COLUMNS: &str =
    "identity_id, service_id, sealed_key, slot, purposes, created_at_ms, revoked_at_ms";

/// Implements the backend-neutral queries for one sqlx backend; SQL is the same on both (`$n`
/// parameters work in SQLite too). Only revocation differs, because wiping differs.
macro_rules! common_queries {
    ($store:ty, $slot:ty) => {
        type Row = (
            String,
            String,
            Option<Vec<u8>>,
            Option<$slot>,
            String,
            i64,
            Option<i64>,
        );

        fn from_row(row: Row) -> Result<super::StoredOnion, super::StoreError> {
            let (identity_id, service_id, sealed_key, slot, purposes, created_at_ms, revoked_at_ms) =
                row;
            let slot = slot
                .map(|slot| {
                    u32::try_from(slot)
                        .map_err(|_| super::StoreError::Corrupt(format!("slot {slot}")))
                })
                .transpose()?;
            Ok(super::StoredOnion {
                identity_id,
                service_id,
                sealed_key,
                slot,
                purposes: super::parse_purposes(&purposes)?,
                created_at_ms,
                revoked_at_ms,
            })
        }

        impl $store {
            async fn insert_row(&self, onion: &super::StoredOnion) -> Result<(), super::StoreError> {
                let slot = onion
                    .slot
                    .map(|slot| {
                        <$slot>::try_from(slot)
                            .map_err(|_| super::StoreError::Corrupt(format!("slot {slot}")))
                    })
                    .transpose()?;
                sqlx::query(
                    "INSERT INTO onions (identity_id, service_id, sealed_key, slot, purposes, \
                     created_at_ms, revoked_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&onion.identity_id)
                .bind(&onion.service_id)
                .bind(&onion.sealed_key)
                .bind(slot)
                .bind(super::purposes_text(&onion.purposes))
                .bind(onion.created_at_ms)
                .bind(onion.revoked_at_ms)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn get_row(
                &self,
                identity_id: &str,
            ) -> Result<Option<super::StoredOnion>, super::StoreError> {
                let row: Option<Row> = sqlx::query_as(&format!(
                    "SELECT {} FROM onions WHERE identity_id = $1",
                    super::COLUMNS
                ))
                .bind(identity_id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(from_row).transpose()
            }

            async fn service_id_row(&self, service_id: &str) -> Result<bool, super::StoreError> {
                let row: Option<(String,)> =
                    sqlx::query_as("SELECT identity_id FROM onions WHERE service_id = $1")
                        .bind(service_id)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.is_some())
            }

            async fn live_rows(&self) -> Result<Vec<super::StoredOnion>, super::StoreError> {
                let rows: Vec<Row> = sqlx::query_as(&format!(
                    "SELECT {} FROM onions WHERE revoked_at_ms IS NULL ORDER BY identity_id",
                    super::COLUMNS
                ))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(from_row).collect()
            }

            async fn revoked_rows(
                &self,
                after: &str,
                limit: u32,
            ) -> Result<Vec<super::StoredOnion>, super::StoreError> {
                let rows: Vec<Row> = sqlx::query_as(&format!(
                    "SELECT {} FROM onions WHERE revoked_at_ms IS NOT NULL AND identity_id > $1 \
                     ORDER BY identity_id LIMIT $2",
                    super::COLUMNS
                ))
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(from_row).collect()
            }
        }

        #[async_trait::async_trait]
        impl super::OnionStore for $store {
            async fn insert(&self, onion: &super::StoredOnion) -> Result<(), super::StoreError> {
                self.insert_row(onion).await
            }

            async fn get(
                &self,
                identity_id: &str,
            ) -> Result<Option<super::StoredOnion>, super::StoreError> {
                self.get_row(identity_id).await
            }

            async fn service_id_known(&self, service_id: &str) -> Result<bool, super::StoreError> {
                self.service_id_row(service_id).await
            }

            async fn live(&self) -> Result<Vec<super::StoredOnion>, super::StoreError> {
                self.live_rows().await
            }

            async fn revoked(
                &self,
                after: &str,
                limit: u32,
            ) -> Result<Vec<super::StoredOnion>, super::StoreError> {
                self.revoked_rows(after, limit).await
            }

            async fn revoke(&self, identity_id: &str, at_ms: i64) -> Result<bool, super::StoreError> {
                self.revoke_row(identity_id, at_ms).await
            }
        }
    };
}

pub(crate) use common_queries;

#[cfg(test)]
mod tests;
