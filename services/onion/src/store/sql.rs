//! The SQL of [`super::OnionStore`], written once for both backends in the dialect of
//! [`onionpost_runtime::sql`]; `sqlite.rs` and `postgres.rs` expand it.

use super::StoreError;
use crate::ports::Purpose;

/// Purposes as stored: `smtp,wkd`.
pub(super) fn purposes_text(purposes: &[Purpose]) -> String {
    purposes
        .iter()
        .map(|purpose| purpose.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn parse_purposes(text: &str) -> Result<Vec<Purpose>, StoreError> {
    text.split(',')
        .filter(|part| !part.is_empty())
        .map(|part| {
            Purpose::parse(part).ok_or_else(|| StoreError::Corrupt(format!("purpose `{part}`")))
        })
        .collect()
}

/// The columns every query selects, in this order.
pub(super) const COLUMNS: &str = "identity_id, service_id, sealed_key, slot, purposes, created_at_ms, revoked_at_ms, \
     retire_at_ms, tor_instance";

/// Implements [`super::OnionStore`] on the backend `$db` as the type `$store`.
macro_rules! store_impl {
    ($store:ident, $db:ty) => {
        use async_trait::async_trait;
        use onionpost_runtime::sql::Dialect;
        use sqlx::Row as _;

        use super::sql::{COLUMNS, parse_purposes, purposes_text};
        use super::{OnionStore, StoreError, StoredOnion};

        onionpost_runtime::sql_store!($store, $db);

        impl $store {
            fn onion_from_row(row: &Row) -> Result<StoredOnion, StoreError> {
                let slot = row
                    .try_get::<Option<i32>, _>("slot")?
                    .map(|slot| {
                        u32::try_from(slot).map_err(|_| StoreError::Corrupt(format!("slot {slot}")))
                    })
                    .transpose()?;
                let tor = row
                    .try_get::<Option<i32>, _>("tor_instance")?
                    .map(|tor| {
                        u32::try_from(tor).map_err(|_| StoreError::Corrupt(format!("tor {tor}")))
                    })
                    .transpose()?;
                Ok(StoredOnion {
                    tor,
                    identity_id: row.try_get("identity_id")?,
                    service_id: row.try_get("service_id")?,
                    sealed_key: row.try_get("sealed_key")?,
                    slot,
                    purposes: parse_purposes(&row.try_get::<String, _>("purposes")?)?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    revoked_at_ms: row.try_get("revoked_at_ms")?,
                    retire_at_ms: row.try_get("retire_at_ms")?,
                })
            }
        }

        #[async_trait]
        impl OnionStore for $store {
            async fn insert(&self, onion: &StoredOnion) -> Result<(), StoreError> {
                let slot = onion
                    .slot
                    .map(|slot| {
                        i32::try_from(slot).map_err(|_| StoreError::Corrupt(format!("slot {slot}")))
                    })
                    .transpose()?;
                sqlx::query(&Self::sql(&format!(
                    "INSERT INTO onions ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                )))
                .bind(&onion.identity_id)
                .bind(&onion.service_id)
                .bind(&onion.sealed_key)
                .bind(slot)
                .bind(purposes_text(&onion.purposes))
                .bind(onion.created_at_ms)
                .bind(onion.revoked_at_ms)
                .bind(onion.retire_at_ms)
                .bind(onion.tor.map(|tor| i32::try_from(tor).unwrap_or(i32::MAX)))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn get(&self, identity_id: &str) -> Result<Option<StoredOnion>, StoreError> {
                let row = sqlx::query(&Self::sql(&format!(
                    "SELECT {COLUMNS} FROM onions WHERE identity_id = ?"
                )))
                .bind(identity_id)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::onion_from_row).transpose()
            }

            async fn service_id_known(&self, service_id: &str) -> Result<bool, StoreError> {
                let row = sqlx::query(&Self::sql(
                    "SELECT identity_id FROM onions WHERE service_id = ?",
                ))
                .bind(service_id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.is_some())
            }

            async fn live(&self) -> Result<Vec<StoredOnion>, StoreError> {
                let rows = sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM onions WHERE revoked_at_ms IS NULL ORDER BY identity_id"
                ))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::onion_from_row).collect()
            }

            async fn revoked(
                &self,
                after: &str,
                limit: u32,
            ) -> Result<Vec<StoredOnion>, StoreError> {
                let rows = sqlx::query(&Self::sql(&format!(
                    "SELECT {COLUMNS} FROM onions \
                     WHERE revoked_at_ms IS NOT NULL AND identity_id > ? \
                     ORDER BY identity_id LIMIT ?"
                )))
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::onion_from_row).collect()
            }

            async fn place(&self, identity_id: &str, tor: u32) -> Result<bool, StoreError> {
                let sql = Self::sql(
                    "UPDATE onions SET tor_instance = ? \
                     WHERE identity_id = ? AND revoked_at_ms IS NULL",
                );
                let tor = i32::try_from(tor).map_err(|_| StoreError::Corrupt(format!("tor {tor}")))?;
                let statement = sqlx::query(&sql).bind(tor).bind(identity_id);
                let updated = <$db as Dialect>::execute_erasing(&self.pool, statement).await?;
                Ok(updated == 1)
            }

            async fn schedule_retirement(
                &self,
                identity_id: &str,
                at_ms: i64,
            ) -> Result<bool, StoreError> {
                let sql = Self::sql(
                    "UPDATE onions SET retire_at_ms = ? \
                     WHERE identity_id = ? AND revoked_at_ms IS NULL AND retire_at_ms IS NULL",
                );
                let statement = sqlx::query(&sql).bind(at_ms).bind(identity_id);
                let updated = <$db as Dialect>::execute_erasing(&self.pool, statement).await?;
                Ok(updated == 1)
            }

            async fn revoke(&self, identity_id: &str, at_ms: i64) -> Result<bool, StoreError> {
                let sql = Self::sql(
                    "UPDATE onions SET sealed_key = NULL, slot = NULL, revoked_at_ms = ? \
                     WHERE identity_id = ? AND revoked_at_ms IS NULL",
                );
                let statement = sqlx::query(&sql).bind(at_ms).bind(identity_id);
                let updated = <$db as Dialect>::execute_erasing(&self.pool, statement).await?;
                Ok(updated == 1)
            }
        }
    };
}
pub(super) use store_impl;
