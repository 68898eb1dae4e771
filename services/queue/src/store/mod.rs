//! Where the queue keeps messages and recipients.
//!
//! One row per message holds the body (already sealed by the service: the store never sees mail
//! in the clear) and the envelope; one row per recipient holds the delivery state. A message row
//! is deleted, body and all, in the same transaction that brings its last recipient to a final
//! state, so a body lives exactly as long as someone still waits for it.
//!
//! Workers claim due recipients with a lease (`claimed_by`, `claimed_until_ms`) in one
//! statement; on PostgreSQL the selecting subquery locks with `FOR UPDATE SKIP LOCKED`, so
//! several worker processes share the queue without two of them claiming one recipient. A worker
//! that dies leaves leases that expire, and its recipients are tried again: delivery is
//! at-least-once towards the peer, whose ingress drops duplicates by Message-ID and digest.
//!
//! The rooms: [`vocabulary`] (states, outcomes and the other stored words), [`records`] (what is
//! stored and handed back), [`queue_store`] (the [`QueueStore`] trait), and `sql.rs` with its two
//! expansions `sqlite.rs` and `postgres.rs` (the one implementation, written in the dialect of
//! [`onionpost_runtime::sql`]); the suite in `tests` runs it against SQLite and PostgreSQL.

mod postgres;
pub mod queue_store;
pub mod records;
mod sql;
mod sqlite;
#[cfg(test)]
mod tests;
pub mod vocabulary;

use std::sync::Arc;

use onionpost_runtime::{Database, Migrations};

pub use onionpost_runtime::db::StoreError;
pub use postgres::PostgresStore;
pub use queue_store::QueueStore;
pub use records::*;
pub use sqlite::SqliteStore;
pub use vocabulary::*;

/// The migrations of both backends.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &sqlx::migrate!("migrations/sqlite"),
    postgres: &sqlx::migrate!("migrations/postgres"),
};

/// The store of an open database.
pub fn for_database(database: Database) -> Arc<dyn QueueStore> {
    match database {
        Database::Sqlite(pool) => Arc::new(SqliteStore::new(pool)),
        Database::Postgres(pool) => Arc::new(PostgresStore::new(pool)),
    }
}
