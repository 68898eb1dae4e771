//! [`super::QueueStore`] on PostgreSQL (a schema of its own, see `onionpost_runtime::db`).
//! Claiming locks with `SKIP LOCKED`, so several worker processes share one queue.

super::store_impl!(
    PostgresStore,
    sqlx::Postgres,
    sqlx::postgres::PgRow,
    super::numbered_placeholders,
    "FOR UPDATE OF r SKIP LOCKED"
);
