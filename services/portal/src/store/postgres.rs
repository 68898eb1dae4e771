//! [`super::PortalStore`] on PostgreSQL (a schema of its own, see `onionpost_runtime::db`).

super::sql::store_impl!(PostgresStore, sqlx::Postgres);
