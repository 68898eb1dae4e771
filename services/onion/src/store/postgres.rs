//! [`super::OnionStore`] on PostgreSQL (a schema of its own, see `onionpost_runtime::db`). A
//! revoked onion's old row version keeps its sealed key until autovacuum reclaims it; nothing
//! opens it without the carrier secret.

super::sql::store_impl!(PostgresStore, sqlx::Postgres);
