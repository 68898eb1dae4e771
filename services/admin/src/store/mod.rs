//! Where the admin service keeps its one kind of data: the API's bearer tokens.
//!
//! Everything else the API shows belongs to another service and is asked for over gRPC. A token
//! is stored as the SHA-256 of its text (tokens are 256 random bits, so a plain hash is enough:
//! there is nothing to guess), with a name and a scope. Both backends share one implementation
//! (`store_impl!` in `sql.rs`) written in the dialect of [`onionpost_runtime::sql`]; the suite in
//! `tests` runs it on SQLite and PostgreSQL through
//! [`onionpost_runtime::conformance::each_backend`].

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
