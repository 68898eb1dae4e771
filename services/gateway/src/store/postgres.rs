//! [`super::GatewayStore`] on PostgreSQL (a schema of its own, see `onionpost_runtime::db`).

super::store_impl!(
    PostgresStore,
    sqlx::Postgres,
    sqlx::postgres::PgRow,
    super::numbered_placeholders
);
