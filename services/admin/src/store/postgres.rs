//! [`super::AdminStore`] on PostgreSQL.

super::store_impl!(
    PostgresStore,
    sqlx::PgPool,
    sqlx::postgres::PgRow,
    "$1",
    "$2",
    "$3",
    "$4",
    "$5"
);
