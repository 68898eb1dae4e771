//! The PostgreSQL backend.

use sqlx::PgPool;

/// Onions in the service's PostgreSQL schema.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    pub fn new(pool: PgPool) -> Self {
        PostgresStore { pool }
    }

    /// Revokes the row. The old row version stays in the table's pages until autovacuum
    /// reclaims it; it holds only the sealed key, which nothing opens without the carrier
    /// secret.
    async fn revoke_row(&self, identity_id: &str, at_ms: i64) -> Result<bool, super::StoreError> {
        let updated = sqlx::query(
            "UPDATE onions SET sealed_key = NULL, slot = NULL, revoked_at_ms = $2 \
             WHERE identity_id = $1 AND revoked_at_ms IS NULL",
        )
        .bind(identity_id)
        .bind(at_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }
}

super::common_queries!(PostgresStore, i32);
