//! One store test suite, run against both backends.
//!
//! A service's storage tests call [`each_backend`] with their suite; it runs once on a fresh
//! SQLite file and once on a fresh PostgreSQL schema in the database named by
//! `ONIONPOST_TEST_POSTGRES_URL` (the test script starts a real PostgreSQL and sets it). Without
//! that variable the PostgreSQL run fails the test loudly, unless `ONIONPOST_TEST_SKIP_POSTGRES=1`
//! says the developer chose to skip it; a silent skip would let a broken backend pass.

use std::future::Future;

use rand::Rng;

use crate::db::{Database, Migrations, quote_identifier};

/// The environment variable with the PostgreSQL URL for store tests.
pub const POSTGRES_URL_ENV: &str = "ONIONPOST_TEST_POSTGRES_URL";
/// Set to `1` to run store suites on SQLite only (local development without PostgreSQL).
pub const SKIP_POSTGRES_ENV: &str = "ONIONPOST_TEST_SKIP_POSTGRES";

/// Runs `suite` against a fresh SQLite database and a fresh PostgreSQL schema, both migrated
/// with `migrations`. `label` names the suite in schema names and messages.
pub async fn each_backend<F, Fut>(label: &str, migrations: Migrations, suite: F)
where
    F: Fn(Database) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temporary directory for the SQLite run");
    let sqlite = Database::open_sqlite(&dir.path().join(format!("{label}.sqlite3")), migrations)
        .await
        .unwrap_or_else(|error| panic!("{label}: opening SQLite failed: {error}"));
    eprintln!("{label}: running store suite on sqlite");
    suite(sqlite.clone()).await;
    sqlite.close().await;

    let Some(url) = postgres_url(label) else {
        return;
    };
    let schema = fresh_schema(label);
    let postgres = Database::open_postgres(&url, &schema, migrations)
        .await
        .unwrap_or_else(|error| panic!("{label}: opening PostgreSQL failed: {error}"));
    eprintln!("{label}: running store suite on postgres (schema {schema})");
    suite(postgres.clone()).await;
    drop_schema(&postgres, &schema).await;
    postgres.close().await;
}

/// The PostgreSQL URL for a test of `label` that needs PostgreSQL, by the rule of
/// [`each_backend`]: `None` when `ONIONPOST_TEST_SKIP_POSTGRES=1` says the developer chose to
/// skip it; without the URL otherwise the test fails loudly. For tests that need PostgreSQL
/// itself rather than either backend (several imap processes on one database).
pub fn postgres_url(label: &str) -> Option<String> {
    match std::env::var(POSTGRES_URL_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var(SKIP_POSTGRES_ENV).as_deref() == Ok("1") => {
            eprintln!("{label}: PostgreSQL run SKIPPED ({SKIP_POSTGRES_ENV}=1)");
            None
        }
        _ => panic!(
            "{label}: {POSTGRES_URL_ENV} is not set, so this test cannot run against PostgreSQL; \
             run the tests through tests/run.sh (which starts PostgreSQL), or set {SKIP_POSTGRES_ENV}=1 to skip it knowingly"
        ),
    }
}

/// A schema of its own for one run of `label`, so runs in parallel do not meet.
pub fn fresh_schema(label: &str) -> String {
    format!(
        "test_{}_{:016x}",
        label.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        rand::rng().random::<u64>()
    )
}

/// Drops a schema made by [`fresh_schema`] with everything in it.
pub async fn drop_schema(database: &Database, schema: &str) {
    let Database::Postgres(pool) = database else {
        return;
    };
    let drop = format!("DROP SCHEMA {} CASCADE", quote_identifier(schema));
    sqlx::query(&drop)
        .execute(pool)
        .await
        .unwrap_or_else(|error| panic!("dropping test schema {schema} failed: {error}"));
}

/// Whether any file directly in `dir` holds `needle` (a database, its WAL, its journal): the
/// at-rest checks of the store suites.
pub fn any_file_contains(dir: &std::path::Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|entry| {
            let bytes = std::fs::read(entry.path()).unwrap_or_default();
            bytes.windows(needle.len()).any(|window| window == needle)
        })
}

/// The Rust files directly in `dir`, sorted.
pub fn rust_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("a source directory")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "rs"))
        .collect();
    paths.sort();
    paths
}

/// The logging calls at info, warn or error in `files` that log an error's text or name an
/// address or onion field: design.md says no address or onion reaches the log above debug,
/// and another service's error text may name one (keys: "no usable key for recipient …"). A
/// service's test asserts the list is empty for the files that handle such text.
pub fn loud_logs_naming_addresses(files: &[std::path::PathBuf]) -> Vec<String> {
    let mut offending = Vec::new();
    for path in files {
        let source = std::fs::read_to_string(path).expect("a source file");
        // Each logging call, from its macro name to the end of its arguments.
        for (start, _) in source.match_indices("tracing::") {
            let call = &source[start..];
            let Some(end) = call.find(");") else { continue };
            let call = &call[..end];
            let loud = ["info!", "warn!", "error!"]
                .iter()
                .any(|level| call["tracing::".len()..].starts_with(level));
            let names = ["%error", "address", "onion", "reverse_path", "from", "to ="]
                .iter()
                .any(|field| call.contains(field));
            if loud && names {
                offending.push(format!("{}: {call}", path.display()));
            }
        }
    }
    offending
}
