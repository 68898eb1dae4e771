//! [`super::GatewayStore`] on SQLite (the embedded default).

super::store_impl!(
    SqliteStore,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteRow,
    |text: &str| text.to_owned()
);
