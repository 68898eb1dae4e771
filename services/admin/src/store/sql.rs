//! The SQL of [`super::AdminStore`], written once for both backends in the dialect of
//! [`onionpost_runtime::sql`]; `sqlite.rs` and `postgres.rs` expand it.

/// The columns every query selects, in this order.
pub(super) const TOKEN_COLUMNS: &str = "token_id, name, scope, token_hash, created_at_ms";

/// Implements [`super::AdminStore`] on the backend `$db` as the type `$store`.
macro_rules! store_impl {
    ($store:ident, $db:ty) => {
        use async_trait::async_trait;
        use sqlx::Row as _;

        use super::sql::TOKEN_COLUMNS;
        use super::{AdminStore, Scope, StoreError, TokenRecord};

        onionpost_runtime::sql_store!($store, $db);

        impl $store {
            fn token_from_row(row: &Row) -> Result<TokenRecord, StoreError> {
                let scope: String = row.try_get("scope")?;
                Ok(TokenRecord {
                    token_id: row.try_get("token_id")?,
                    name: row.try_get("name")?,
                    scope: Scope::parse(&scope)?,
                    token_hash: row.try_get("token_hash")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                })
            }
        }

        #[async_trait]
        impl AdminStore for $store {
            async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
                sqlx::query(&Self::sql(&format!(
                    "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?)"
                )))
                .bind(&token.token_id)
                .bind(&token.name)
                .bind(token.scope.as_str())
                .bind(&token.token_hash)
                .bind(token.created_at_ms)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn token_by_hash(
                &self,
                token_hash: &str,
            ) -> Result<Option<TokenRecord>, StoreError> {
                let row = sqlx::query(&Self::sql(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens WHERE token_hash = ?"
                )))
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::token_from_row).transpose()
            }

            async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
                let rows = sqlx::query(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at_ms, token_id"
                ))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::token_from_row).collect()
            }

            async fn delete_token(&self, token_id: &str) -> Result<bool, StoreError> {
                let done = sqlx::query(&Self::sql("DELETE FROM tokens WHERE token_id = ?"))
                    .bind(token_id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn count_tokens(&self) -> Result<u64, StoreError> {
                let row = sqlx::query("SELECT COUNT(*) AS n FROM tokens")
                    .fetch_one(&self.pool)
                    .await?;
                let count: i64 = row.try_get("n")?;
                Ok(u64::try_from(count).unwrap_or_default())
            }
        }
    };
}
pub(super) use store_impl;
