//! The store conformance helper, shown on a sample store: one trait, an SQLite and a PostgreSQL
//! implementation, and one suite that must pass on both. Service stores follow the same shape.

use onionpost_runtime::conformance::each_backend;
use onionpost_runtime::{Database, Migrations};
use sqlx::migrate::Migrator;

static SQLITE: Migrator = sqlx::migrate!("tests/sample_migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("tests/sample_migrations/postgres");
const MIGRATIONS: Migrations = Migrations {
    sqlite: &SQLITE,
    postgres: &POSTGRES,
};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Note {
    id: i64,
    owner: String,
    body: Vec<u8>,
}

/// The sample store trait; a service's store has the same shape with its own operations.
trait NoteStore {
    async fn add(&self, owner: &str, body: &[u8]) -> sqlx::Result<i64>;
    async fn list(&self, owner: &str) -> sqlx::Result<Vec<Note>>;
    async fn delete(&self, id: i64) -> sqlx::Result<bool>;
}

impl NoteStore for Database {
    async fn add(&self, owner: &str, body: &[u8]) -> sqlx::Result<i64> {
        match self {
            Database::Sqlite(pool) => {
                sqlx::query_scalar(
                    "INSERT INTO notes (owner, body, created_at) VALUES (?, ?, 0) RETURNING id",
                )
                .bind(owner)
                .bind(body)
                .fetch_one(pool)
                .await
            }
            Database::Postgres(pool) => {
                sqlx::query_scalar(
                    "INSERT INTO notes (owner, body, created_at) VALUES ($1, $2, 0) RETURNING id",
                )
                .bind(owner)
                .bind(body)
                .fetch_one(pool)
                .await
            }
        }
    }

    async fn list(&self, owner: &str) -> sqlx::Result<Vec<Note>> {
        let rows: Vec<(i64, String, Vec<u8>)> = match self {
            Database::Sqlite(pool) => {
                sqlx::query_as("SELECT id, owner, body FROM notes WHERE owner = ? ORDER BY id")
                    .bind(owner)
                    .fetch_all(pool)
                    .await?
            }
            Database::Postgres(pool) => {
                sqlx::query_as("SELECT id, owner, body FROM notes WHERE owner = $1 ORDER BY id")
                    .bind(owner)
                    .fetch_all(pool)
                    .await?
            }
        };
        Ok(rows
            .into_iter()
            .map(|(id, owner, body)| Note { id, owner, body })
            .collect())
    }

    async fn delete(&self, id: i64) -> sqlx::Result<bool> {
        let affected = match self {
            Database::Sqlite(pool) => sqlx::query("DELETE FROM notes WHERE id = ?")
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected(),
            Database::Postgres(pool) => sqlx::query("DELETE FROM notes WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected(),
        };
        Ok(affected == 1)
    }
}

#[tokio::test]
async fn sample_store_suite_passes_on_sqlite_and_postgres() {
    each_backend("sample", MIGRATIONS, |db| async move {
        let first = db.add("alice", b"one").await.unwrap();
        let second = db.add("alice", &[0, 255, 10]).await.unwrap();
        db.add("bob", b"other").await.unwrap();
        assert!(second > first);

        let notes = db.list("alice").await.unwrap();
        assert_eq!(notes.len(), 2);
        assert_eq!(notes[1].body, vec![0, 255, 10], "binary bodies round-trip");
        assert!(notes.iter().all(|note| note.owner == "alice"));

        assert!(db.delete(first).await.unwrap());
        assert!(
            !db.delete(first).await.unwrap(),
            "deleting twice reports nothing deleted"
        );
        assert_eq!(db.list("alice").await.unwrap().len(), 1);
        assert_eq!(db.list("nobody").await.unwrap(), Vec::new());
    })
    .await;
}

#[tokio::test]
async fn sqlite_is_durable_wal_with_full_sync() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_sqlite(&dir.path().join("x.sqlite3"), MIGRATIONS)
        .await
        .unwrap();
    let Database::Sqlite(pool) = &db else {
        unreachable!()
    };
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await
        .unwrap();
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(sync, 2, "synchronous = FULL");
    // Reopening runs the migrations again without error and keeps the data.
    db.add("carol", b"kept").await.unwrap();
    db.close().await;
    let reopened = Database::open_sqlite(&dir.path().join("x.sqlite3"), MIGRATIONS)
        .await
        .unwrap();
    assert_eq!(reopened.list("carol").await.unwrap().len(), 1);
}
