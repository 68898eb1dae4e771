//! [`super::ImapStore`] on PostgreSQL (a schema of its own, see `onionpost_runtime::db`).

store_impl!(
    PostgresStore,
    sqlx::PgPool,
    sqlx::Postgres,
    sqlx::postgres::PgRow,
    super::numbered_placeholders
);
