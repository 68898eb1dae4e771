//! [`super::KeysStore`] on SQLite (the embedded default).

super::store_impl!(
    SqliteStore,
    sqlx::SqlitePool,
    sqlx::sqlite::SqliteRow,
    |text: &str| text.to_owned(),
    true
);
