//! [`super::ImapStore`] on SQLite (the embedded default).

store_impl!(
    SqliteStore,
    sqlx::SqlitePool,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteRow,
    |text: &str| text.to_owned()
);
