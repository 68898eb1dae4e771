//! The store suite, run on SQLite and on PostgreSQL.

use onionpost_runtime::conformance::each_backend;

use super::*;

fn token(id: &str, scope: Scope, hash: &str, at: i64) -> TokenRecord {
    TokenRecord {
        token_id: id.to_owned(),
        name: format!("name of {id}"),
        scope,
        token_hash: hash.to_owned(),
        created_at_ms: at,
    }
}

async fn suite(store: Arc<dyn AdminStore>) {
    assert_eq!(store.count_tokens().await.unwrap(), 0);
    assert_eq!(store.token_by_hash("aa").await.unwrap(), None);

    let operator = token("t1", Scope::Write, "aa", 2_000);
    let reader = token("t2", Scope::Read, "bb", 1_000);
    store.insert_token(&operator).await.unwrap();
    store.insert_token(&reader).await.unwrap();
    assert_eq!(store.count_tokens().await.unwrap(), 2);

    // Neither an id nor a hash can be taken twice.
    assert!(matches!(
        store
            .insert_token(&token("t1", Scope::Read, "cc", 3_000))
            .await,
        Err(StoreError::Duplicate)
    ));
    assert!(matches!(
        store
            .insert_token(&token("t3", Scope::Read, "aa", 3_000))
            .await,
        Err(StoreError::Duplicate)
    ));

    assert_eq!(
        store.token_by_hash("aa").await.unwrap(),
        Some(operator.clone())
    );
    assert_eq!(
        store.token_by_hash("bb").await.unwrap(),
        Some(reader.clone())
    );
    // Oldest first.
    assert_eq!(
        store.list_tokens().await.unwrap(),
        vec![reader.clone(), operator.clone()]
    );

    assert!(store.delete_token("t2").await.unwrap());
    assert!(!store.delete_token("t2").await.unwrap());
    assert_eq!(store.token_by_hash("bb").await.unwrap(), None);
    assert_eq!(store.list_tokens().await.unwrap(), vec![operator]);
    assert_eq!(store.count_tokens().await.unwrap(), 1);
}

#[tokio::test]
async fn token_store_on_both_backends() {
    each_backend("admin_tokens", MIGRATIONS, |database| async move {
        suite(for_database(database)).await;
    })
    .await;
}

#[test]
fn write_implies_read() {
    assert!(Scope::Write.allows(Scope::Read));
    assert!(Scope::Write.allows(Scope::Write));
    assert!(Scope::Read.allows(Scope::Read));
    assert!(!Scope::Read.allows(Scope::Write));
}
