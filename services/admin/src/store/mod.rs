//! Where the admin service keeps its one kind of data: the API's bearer tokens.
//!
//! Everything else the API shows belongs to another service and is asked for over gRPC. A token
//! is stored as the SHA-256 of its text (tokens are 256 random bits, so a plain hash is enough:
//! there is nothing to guess), with a name and a scope. Both backends share the SQL below; the
//! suite in `tests` runs it on SQLite and PostgreSQL through
//! [`onionpost_runtime::conformance::each_backend`].

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

/// What a token may do. `Write` implies `Read`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Write,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }

    pub fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            other => Err(StoreError::Corrupt(format!("unknown scope {other:?}"))),
        }
    }

    /// Whether a token with this scope may do what `needed` asks.
    pub fn allows(self, needed: Scope) -> bool {
        self >= needed
    }
}

/// One token as stored: never the token itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub token_id: String,
    pub name: String,
    pub scope: Scope,
    /// Lower-case hex SHA-256 of the token's text.
    pub token_hash: String,
    pub created_at_ms: i64,
}

/// The admin service's storage.
#[async_trait]
pub trait AdminStore: Send + Sync {
    /// Adds a token; [`StoreError::Duplicate`] when its id or hash exists.
    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError>;
    /// The token with this hash, if any.
    async fn token_by_hash(&self, token_hash: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Every token, oldest first.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    /// Removes a token; false when there was none.
    async fn delete_token(&self, token_id: &str) -> Result<bool, StoreError>;
    /// How many tokens exist (zero on a carrier's first start).
    async fn count_tokens(&self) -> Result<u64, StoreError>;
}

/// The store for an open database.
pub fn for_database(database: Database) -> Arc<dyn AdminStore> {
    match database {
        Database::Sqlite(pool) => Arc::new(SqliteStore::new(pool)),
        Database::Postgres(pool) => Arc::new(PostgresStore::new(pool)),
    }
}

/// Both backends' implementation, written once with the placeholder style of each.
macro_rules! store_impl {
    ($name:ident, $pool:ty, $row:ty, $p1:literal, $p2:literal, $p3:literal, $p4:literal, $p5:literal) => {
        /// [`super::AdminStore`] on this backend.
        pub struct $name {
            pool: $pool,
        }

        impl $name {
            pub fn new(pool: $pool) -> Self {
                Self { pool }
            }
        }

        fn token_from_row(row: &$row) -> Result<super::TokenRecord, super::StoreError> {
            use sqlx::Row as _;
            let scope: String = row.try_get("scope")?;
            Ok(super::TokenRecord {
                token_id: row.try_get("token_id")?,
                name: row.try_get("name")?,
                scope: super::Scope::parse(&scope)?,
                token_hash: row.try_get("token_hash")?,
                created_at_ms: row.try_get("created_at_ms")?,
            })
        }

        #[async_trait::async_trait]
        impl super::AdminStore for $name {
            async fn insert_token(
                &self,
                token: &super::TokenRecord,
            ) -> Result<(), super::StoreError> {
                sqlx::query(concat!(
                    "INSERT INTO tokens (token_id, name, scope, token_hash, created_at_ms) VALUES (",
                    $p1, ", ", $p2, ", ", $p3, ", ", $p4, ", ", $p5, ")"
                ))
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
            ) -> Result<Option<super::TokenRecord>, super::StoreError> {
                let row = sqlx::query(concat!(
                    "SELECT token_id, name, scope, token_hash, created_at_ms FROM tokens WHERE token_hash = ",
                    $p1
                ))
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(token_from_row).transpose()
            }

            async fn list_tokens(&self) -> Result<Vec<super::TokenRecord>, super::StoreError> {
                let rows = sqlx::query(
                    "SELECT token_id, name, scope, token_hash, created_at_ms FROM tokens ORDER BY created_at_ms, token_id",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(token_from_row).collect()
            }

            async fn delete_token(&self, token_id: &str) -> Result<bool, super::StoreError> {
                let done = sqlx::query(concat!("DELETE FROM tokens WHERE token_id = ", $p1))
                    .bind(token_id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn count_tokens(&self) -> Result<u64, super::StoreError> {
                use sqlx::Row as _;
                let row = sqlx::query("SELECT COUNT(*) AS n FROM tokens")
                    .fetch_one(&self.pool)
                    .await?;
                let count: i64 = row.try_get("n")?;
                Ok(u64::try_from(count).unwrap_or_default())
            }
        }
    };
}
use store_impl;
