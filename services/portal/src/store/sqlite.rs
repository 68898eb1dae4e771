//! [`super::PortalStore`] on SQLite (the embedded default).

super::sql::store_impl!(SqliteStore, sqlx::Sqlite);
