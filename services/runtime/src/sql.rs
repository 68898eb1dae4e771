//! The one SQL dialect every service's store is written in, and the one shape of a store.
//!
//! Stores write each statement once, with `?` placeholders, in the SQL both backends accept
//! (`ON CONFLICT`, `RETURNING`, `CAST(… AS BIGINT)`, …). What the backends do differently is
//! answered here, once, by [`Dialect`]:
//!
//! - placeholders: SQLite takes `?`, PostgreSQL wants `$1, $2, …` ([`Dialect::sql`]);
//! - claiming rows several workers may claim at once: PostgreSQL locks the selected rows with
//!   `FOR UPDATE … SKIP LOCKED`; SQLite has one writer at a time, so a single `UPDATE … FROM
//!   (SELECT …)` is already atomic and takes no clause ([`Dialect::skip_locked`]);
//! - destroying a secret (a revoked key): SQLite keeps freed bytes in free pages and the old
//!   page in its WAL, so the statement runs with `secure_delete` on and the WAL is checkpointed
//!   and truncated after it; PostgreSQL keeps the old row version until autovacuum, which holds
//!   only sealed bytes nothing opens without the carrier secret ([`Dialect::execute_erasing`]).
//!
//! Every service's `store/` has the same rooms: `mod.rs` (records, the trait, `MIGRATIONS`,
//! `for_database`), `sql.rs` (a `store_impl!($store, $db)` macro holding the one
//! implementation, which opens with [`sql_store!`]), `sqlite.rs` and `postgres.rs` (one
//! expansion each) and `tests.rs` (the suite run by [`crate::conformance::each_backend`]).

use std::future::Future;

use sqlx::query::Query;
use sqlx::{Pool, Postgres, Sqlite};

/// What differs between the backends' SQL, implemented for [`sqlx::Sqlite`] and
/// [`sqlx::Postgres`]. A store's macro names the backend as `$db` and calls
/// `<$db as Dialect>::…`.
pub trait Dialect: sqlx::Database {
    /// The backend's form of `sql`, written with `?` placeholders.
    fn sql(sql: &str) -> String;

    /// The clause that ends a `SELECT` claiming rows of `table` (a table name or alias) that
    /// other workers may be claiming at the same moment.
    fn skip_locked(table: &str) -> String;

    /// Runs `statement`, which overwrites or deletes a secret, so that afterwards the secret is
    /// in none of the database's files; returns the rows it affected.
    fn execute_erasing<'q>(
        pool: &'q Pool<Self>,
        statement: Query<'q, Self, <Self as sqlx::Database>::Arguments<'q>>,
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send + 'q;
}

impl Dialect for Sqlite {
    fn sql(sql: &str) -> String {
        sql.to_owned()
    }

    fn skip_locked(_table: &str) -> String {
        String::new()
    }

    async fn execute_erasing<'q>(
        pool: &'q Pool<Self>,
        statement: Query<'q, Self, <Self as sqlx::Database>::Arguments<'q>>,
    ) -> Result<u64, sqlx::Error> {
        // One connection for all three: `secure_delete` is a setting of the connection.
        let mut connection = pool.acquire().await?;
        sqlx::query("PRAGMA secure_delete = ON")
            .execute(&mut *connection)
            .await?;
        let affected = statement.execute(&mut *connection).await?.rows_affected();
        // The WAL still holds the page as it was before; copy the new page back into the main
        // file and empty the WAL.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut *connection)
            .await?;
        Ok(affected)
    }
}

impl Dialect for Postgres {
    fn sql(sql: &str) -> String {
        numbered_placeholders(sql)
    }

    fn skip_locked(table: &str) -> String {
        format!("FOR UPDATE OF {table} SKIP LOCKED")
    }

    async fn execute_erasing<'q>(
        pool: &'q Pool<Self>,
        statement: Query<'q, Self, <Self as sqlx::Database>::Arguments<'q>>,
    ) -> Result<u64, sqlx::Error> {
        Ok(statement.execute(pool).await?.rows_affected())
    }
}

/// Rewrites `?` placeholders as `$1, $2, …` (PostgreSQL). Stores' SQL holds no `?` inside a
/// string literal or identifier, so every `?` is a placeholder.
pub fn numbered_placeholders(sql: &str) -> String {
    let mut numbered = String::with_capacity(sql.len() + 16);
    let mut next = 1;
    for character in sql.chars() {
        if character == '?' {
            numbered.push('$');
            numbered.push_str(&next.to_string());
            next += 1;
        } else {
            numbered.push(character);
        }
    }
    numbered
}

/// A list as one text column: `a.onion,b.onion`. Items never hold a comma (onion hosts,
/// keywords, carrier names).
pub fn join_list<T: AsRef<str>>(items: &[T]) -> String {
    items
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(",")
}

/// The items of a list stored by [`join_list`]; the empty text is the empty list.
pub fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Defines a service's store type on one backend: a struct `$store` holding the pool of `$db`,
/// `$store::new(pool)`, `Self::sql(text)` for [`Dialect::sql`], and the backend's `Row`,
/// `Connection` and `Query<'q>` types under those names. Every service's `store_impl!($store, $db)` opens with
/// it, so each store has the same fields, constructor and names.
#[macro_export]
macro_rules! sql_store {
    ($store:ident, $db:ty) => {
        $crate::sql_store!($store, $db, {});
    };
    // A store that holds more than its pool (a sealer for rows sealed at rest): the fields are
    // arguments of `new` after the pool.
    ($store:ident, $db:ty, { $($field:ident: $type:ty),* $(,)? }) => {
        /// A row of this backend.
        #[allow(dead_code)]
        type Row = <$db as ::sqlx::Database>::Row;
        /// A connection of this backend (a pooled one or a transaction dereferences to it).
        #[allow(dead_code)]
        type Connection = <$db as ::sqlx::Database>::Connection;
        /// A statement of this backend with its bound values.
        #[allow(dead_code)]
        type Query<'q> = ::sqlx::query::Query<'q, $db, <$db as ::sqlx::Database>::Arguments<'q>>;

        /// The store on this backend: one pool, and the SQL written once with `?` placeholders.
        #[derive(Clone, Debug)]
        pub struct $store {
            pool: ::sqlx::Pool<$db>,
            $($field: $type,)*
        }

        impl $store {
            pub fn new(pool: ::sqlx::Pool<$db>, $($field: $type),*) -> Self {
                Self { pool, $($field),* }
            }

            /// `text` in this backend's dialect.
            #[allow(dead_code)]
            fn sql(text: &str) -> String {
                <$db as $crate::sql::Dialect>::sql(text)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order_for_postgres_and_kept_for_sqlite() {
        let sql = "UPDATE t SET a = ?, b = CAST(? AS TEXT) WHERE c = ? AND d IN ('x', 'y')";
        assert_eq!(
            Postgres::sql(sql),
            "UPDATE t SET a = $1, b = CAST($2 AS TEXT) WHERE c = $3 AND d IN ('x', 'y')"
        );
        assert_eq!(Sqlite::sql(sql), sql);
        assert_eq!(Postgres::sql("SELECT 1"), "SELECT 1");
        let many = ["?"; 12].join(", ");
        assert!(Postgres::sql(&many).ends_with("$10, $11, $12"));
    }

    #[test]
    fn only_postgres_locks_claimed_rows() {
        assert_eq!(Postgres::skip_locked("r"), "FOR UPDATE OF r SKIP LOCKED");
        assert_eq!(Sqlite::skip_locked("r"), "");
    }

    #[test]
    fn lists_round_trip_and_the_empty_text_is_the_empty_list() {
        let items = vec!["a.onion".to_owned(), "b.onion".to_owned()];
        let stored = join_list(&items);
        assert_eq!(stored, "a.onion,b.onion");
        assert_eq!(split_list(&stored), items);
        assert!(split_list("").is_empty());
        assert_eq!(join_list::<String>(&[]), "");
    }
}
