//! [`super::OnionStore`] on SQLite (the embedded default). Revocation runs with
//! `secure_delete` on and checkpoints the WAL (`onionpost_runtime::sql::Dialect::execute_erasing`),
//! so that afterwards the sealed key is in none of the database's files.

super::sql::store_impl!(SqliteStore, sqlx::Sqlite);
