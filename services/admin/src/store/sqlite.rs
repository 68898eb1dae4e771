//! [`super::AdminStore`] on SQLite (the embedded default).

super::store_impl!(
    SqliteStore,
    sqlx::SqlitePool,
    sqlx::sqlite::SqliteRow,
    "?",
    "?",
    "?",
    "?",
    "?"
);
