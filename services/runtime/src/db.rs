//! Databases: SQLite by default, PostgreSQL for larger carriers.
//!
//! Each service owns its tables: with SQLite one file per service under the data directory (WAL,
//! `synchronous = FULL`, because a 250 reply depends on a commit having reached the disk), with
//! PostgreSQL one schema per service in the configured database (the pool's `search_path` points
//! at it, so the same SQL runs unqualified). Each service ships two migration directories, one
//! per backend, applied at open. Storage code lives behind a trait per service with one
//! implementation per backend, written once in the dialect of [`crate::sql`];
//! [`crate::conformance`] runs one test suite against both.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use onionpost_proto::ServiceName;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::config::DatabaseSettings;

/// An open database of one service.
#[derive(Clone, Debug)]
pub enum Database {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A service's migrations, one set per backend (`sqlx::migrate!("migrations/sqlite")`, …).
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    pub sqlite: &'static Migrator,
    pub postgres: &'static Migrator,
}

/// Opening or migrating a database failed. The text is for operators' logs, never for callers.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("cannot create database directory {path}: {source}")]
    Directory {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open database {what}: {source}")]
    Open { what: String, source: sqlx::Error },
    #[error("migrating database {what} failed: {source}")]
    Migrate {
        what: String,
        source: sqlx::migrate::MigrateError,
    },
}

impl Database {
    /// Opens (creating when needed) and migrates the database of `service`.
    pub async fn open(
        settings: &DatabaseSettings,
        service: ServiceName,
        migrations: Migrations,
    ) -> Result<Self, DatabaseError> {
        match settings {
            DatabaseSettings::Sqlite { dir } => {
                std::fs::create_dir_all(dir).map_err(|source| DatabaseError::Directory {
                    path: dir.display().to_string(),
                    source,
                })?;
                let path = dir.join(format!("{}.sqlite3", service.as_str()));
                Self::open_sqlite(&path, migrations).await
            }
            DatabaseSettings::Postgres { url } => {
                Self::open_postgres(url, &schema_name(service), migrations).await
            }
        }
    }

    /// Opens an SQLite file with the settings acceptance depends on.
    pub async fn open_sqlite(path: &Path, migrations: Migrations) -> Result<Self, DatabaseError> {
        let what = path.display().to_string();
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            // Deleted rows are overwritten, not left in free pages: a delivered message's
            // envelope (addresses, Message-ID) must not outlive it on a copied volume.
            .pragma("secure_delete", "on")
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(|source| DatabaseError::Open {
                what: what.clone(),
                source,
            })?;
        migrations
            .sqlite
            .run(&pool)
            .await
            .map_err(|source| DatabaseError::Migrate { what, source })?;
        Ok(Database::Sqlite(pool))
    }

    /// Opens PostgreSQL with every connection's `search_path` set to `schema`, creating the
    /// schema first.
    pub async fn open_postgres(
        url: &str,
        schema: &str,
        migrations: Migrations,
    ) -> Result<Self, DatabaseError> {
        let what = format!("schema {schema}");
        let open_error = |source| DatabaseError::Open {
            what: what.clone(),
            source,
        };
        let base = PgConnectOptions::from_str(url).map_err(open_error)?;
        {
            let bootstrap = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(base.clone())
                .await
                .map_err(open_error)?;
            let create = format!("CREATE SCHEMA IF NOT EXISTS {}", quote_identifier(schema));
            sqlx::query(&create)
                .execute(&bootstrap)
                .await
                .map_err(open_error)?;
            bootstrap.close().await;
        }
        let options = base.options([("search_path", schema)]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(open_error)?;
        migrations
            .postgres
            .run(&pool)
            .await
            .map_err(|source| DatabaseError::Migrate {
                what: what.clone(),
                source,
            })?;
        Ok(Database::Postgres(pool))
    }

    /// Which backend this is, for logs and metrics.
    pub fn backend(&self) -> &'static str {
        match self {
            Database::Sqlite(_) => "sqlite",
            Database::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        match self {
            Database::Sqlite(pool) => pool.close().await,
            Database::Postgres(pool) => pool.close().await,
        }
    }
}

/// A storage failure of any service's store. Its text goes to operators' logs, never to a
/// gRPC or HTTP caller (each service maps it once to an "internal error").
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key is taken (an identity id, an address, a contact of an account…).
    #[error("a row with this key exists")]
    Duplicate,
    #[error("stored row is invalid: {0}")]
    Corrupt(String),
    #[error("database: {0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(database) if database.is_unique_violation() => {
                StoreError::Duplicate
            }
            _ => StoreError::Database(error),
        }
    }
}

/// The PostgreSQL schema of a service: its target name with `_` for `-` (`smtp_in`).
pub fn schema_name(service: ServiceName) -> String {
    service.as_str().replace('-', "_")
}

/// Double-quotes an SQL identifier (schema names are ours, but quoting costs nothing).
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
