//! [`super::QueueStore`] on PostgreSQL (a schema of its own, see `onionpost_runtime::db`).
//! Claiming locks with `SKIP LOCKED`, so several worker processes share one queue.

super::sql::store_impl!(PostgresStore, sqlx::Postgres);
