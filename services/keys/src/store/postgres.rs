//! [`super::KeysStore`] on PostgreSQL (a schema of its own, see `onionpost_runtime::db`). A
//! revoked identity's old row version keeps its sealed key until autovacuum reclaims it;
//! nothing opens it without the carrier secret.

super::store_impl!(
    PostgresStore,
    sqlx::PgPool,
    sqlx::postgres::PgRow,
    super::numbered_placeholders,
    false
);
