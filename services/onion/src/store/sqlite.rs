//! The SQLite backend.

use sqlx::SqlitePool;

/// Onions in the service's SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub fn new(pool: SqlitePool) -> Self {
        SqliteStore { pool }
    }

    /// Revokes on one connection with `secure_delete` on, so SQLite overwrites the freed key
    /// bytes with zeros instead of leaving them in a free page, then checkpoints the WAL (which
    /// held the page with the key) and truncates it. After this the sealed key is in none of the
    /// database's files.
    async fn revoke_row(&self, identity_id: &str, at_ms: i64) -> Result<bool, super::StoreError> {
        let mut connection = self.pool.acquire().await?;
        sqlx::query("PRAGMA secure_delete = ON")
            .execute(&mut *connection)
            .await?;
        let updated = sqlx::query(
            "UPDATE onions SET sealed_key = NULL, slot = NULL, revoked_at_ms = $2 \
             WHERE identity_id = $1 AND revoked_at_ms IS NULL",
        )
        .bind(identity_id)
        .bind(at_ms)
        .execute(&mut *connection)
        .await?
        .rows_affected();
        // The WAL still holds the page as it was before; copy the new page back into the
        // main file and empty the WAL.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut *connection)
            .await?;
        Ok(updated == 1)
    }
}

super::common_queries!(SqliteStore, i64);
