//! The SQL of [`super::PortalStore`], written once for both backends in the dialect of
//! [`onionpost_runtime::sql`]; `sqlite.rs` and `postgres.rs` expand it.

/// The columns every query selects, in this order.
pub(super) const SESSION_COLUMNS: &str = "session_hash, account_id, created_at_ms, expires_at_ms";

/// Implements [`super::PortalStore`] on the backend `$db` as the type `$store`.
macro_rules! store_impl {
    ($store:ident, $db:ty) => {
        use async_trait::async_trait;
        use sqlx::Row as _;

        use super::sql::SESSION_COLUMNS;
        use super::{PortalStore, SecondFactorRecord, SessionRecord, StoreError};

        onionpost_runtime::sql_store!($store, $db);

        impl $store {
            fn session_from_row(row: &Row) -> Result<SessionRecord, StoreError> {
                Ok(SessionRecord {
                    session_hash: row.try_get("session_hash")?,
                    account_id: row.try_get("account_id")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    expires_at_ms: row.try_get("expires_at_ms")?,
                })
            }
        }

        #[async_trait]
        impl PortalStore for $store {
            async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
                sqlx::query(&Self::sql(&format!(
                    "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?, ?, ?, ?)"
                )))
                .bind(&session.session_hash)
                .bind(&session.account_id)
                .bind(session.created_at_ms)
                .bind(session.expires_at_ms)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn live_session(
                &self,
                session_hash: &str,
                now_ms: i64,
            ) -> Result<Option<SessionRecord>, StoreError> {
                let row = sqlx::query(&Self::sql(&format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions \
                     WHERE session_hash = ? AND expires_at_ms > ?"
                )))
                .bind(session_hash)
                .bind(now_ms)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::session_from_row).transpose()
            }

            async fn delete_session(&self, session_hash: &str) -> Result<bool, StoreError> {
                let done = sqlx::query(&Self::sql("DELETE FROM sessions WHERE session_hash = ?"))
                    .bind(session_hash)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn delete_account_sessions(
                &self,
                account_id: &str,
                keep: Option<&str>,
            ) -> Result<u64, StoreError> {
                let done = sqlx::query(&Self::sql(
                    "DELETE FROM sessions WHERE account_id = ? AND session_hash <> ?",
                ))
                .bind(account_id)
                .bind(keep.unwrap_or(""))
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected())
            }

            async fn purge_expired(&self, now_ms: i64) -> Result<u64, StoreError> {
                let done = sqlx::query(&Self::sql("DELETE FROM sessions WHERE expires_at_ms <= ?"))
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn begin_second_factor(
                &self,
                record: &SecondFactorRecord,
            ) -> Result<bool, StoreError> {
                let mut transaction = self.pool.begin().await?;
                sqlx::query(&Self::sql(
                    "DELETE FROM second_factors WHERE account_id = ? AND confirmed = 0",
                ))
                .bind(&record.account_id)
                .execute(&mut *transaction)
                .await?;
                let inserted = sqlx::query(&Self::sql(
                    "INSERT INTO second_factors \
                     (account_id, sealed_secret, confirmed, last_step, created_at_ms) \
                     VALUES (?, ?, 0, ?, ?) ON CONFLICT (account_id) DO NOTHING",
                ))
                .bind(&record.account_id)
                .bind(&record.sealed_secret)
                .bind(record.last_step)
                .bind(record.created_at_ms)
                .execute(&mut *transaction)
                .await?;
                transaction.commit().await?;
                Ok(inserted.rows_affected() == 1)
            }

            async fn second_factor(
                &self,
                account_id: &str,
            ) -> Result<Option<SecondFactorRecord>, StoreError> {
                let row = sqlx::query(&Self::sql(
                    "SELECT account_id, sealed_secret, confirmed, last_step, created_at_ms \
                     FROM second_factors WHERE account_id = ?",
                ))
                .bind(account_id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|row| -> Result<SecondFactorRecord, StoreError> {
                    let confirmed: i64 = row.try_get("confirmed")?;
                    Ok(SecondFactorRecord {
                        account_id: row.try_get("account_id")?,
                        sealed_secret: row.try_get("sealed_secret")?,
                        confirmed: confirmed != 0,
                        last_step: row.try_get("last_step")?,
                        created_at_ms: row.try_get("created_at_ms")?,
                    })
                })
                .transpose()
            }

            async fn take_step(&self, account_id: &str, step: i64) -> Result<bool, StoreError> {
                let done = sqlx::query(&Self::sql(
                    "UPDATE second_factors SET last_step = ?, confirmed = 1 \
                     WHERE account_id = ? AND last_step < ?",
                ))
                .bind(step)
                .bind(account_id)
                .bind(step)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_second_factor(&self, account_id: &str) -> Result<bool, StoreError> {
                let done = sqlx::query(&Self::sql(
                    "DELETE FROM second_factors WHERE account_id = ?",
                ))
                .bind(account_id)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn count_live(&self, now_ms: i64) -> Result<u64, StoreError> {
                let row = sqlx::query(&Self::sql(
                    "SELECT COUNT(*) AS n FROM sessions WHERE expires_at_ms > ?",
                ))
                .bind(now_ms)
                .fetch_one(&self.pool)
                .await?;
                let count: i64 = row.try_get("n")?;
                Ok(u64::try_from(count).unwrap_or_default())
            }
        }
    };
}
pub(super) use store_impl;
