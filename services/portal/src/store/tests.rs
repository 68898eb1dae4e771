//! The store suite, run on SQLite and on PostgreSQL.

use onionpost_runtime::conformance::each_backend;

use super::*;

fn session(hash: &str, account: &str, expires_at_ms: i64) -> SessionRecord {
    SessionRecord {
        session_hash: hash.to_owned(),
        account_id: account.to_owned(),
        created_at_ms: 1_000,
        expires_at_ms,
    }
}

async fn suite(store: Arc<dyn PortalStore>) {
    assert_eq!(store.count_live(1_000).await.unwrap(), 0);
    let alice_laptop = session("aa", "acct_alice", 10_000);
    let alice_phone = session("bb", "acct_alice", 20_000);
    let bob = session("cc", "acct_bob", 10_000);
    for record in [&alice_laptop, &alice_phone, &bob] {
        store.insert_session(record).await.unwrap();
    }
    assert!(matches!(
        store
            .insert_session(&session("aa", "acct_bob", 5_000))
            .await,
        Err(StoreError::Duplicate)
    ));

    // A session is live until its expiry, not at it.
    assert_eq!(
        store.live_session("aa", 9_999).await.unwrap(),
        Some(alice_laptop.clone())
    );
    assert_eq!(store.live_session("aa", 10_000).await.unwrap(), None);
    assert_eq!(store.live_session("zz", 0).await.unwrap(), None);
    assert_eq!(store.count_live(9_999).await.unwrap(), 3);
    assert_eq!(store.count_live(10_000).await.unwrap(), 1);

    // A password change ends the account's other sessions and nobody else's.
    assert_eq!(
        store
            .delete_account_sessions("acct_alice", Some("bb"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.live_session("aa", 0).await.unwrap(), None);
    assert_eq!(
        store.live_session("bb", 0).await.unwrap(),
        Some(alice_phone)
    );
    assert_eq!(store.live_session("cc", 0).await.unwrap(), Some(bob));

    assert!(store.delete_session("bb").await.unwrap());
    assert!(!store.delete_session("bb").await.unwrap());
    assert_eq!(store.purge_expired(10_000).await.unwrap(), 1);
    assert_eq!(store.count_live(0).await.unwrap(), 0);
    assert_eq!(
        store
            .delete_account_sessions("acct_bob", None)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn session_store_on_both_backends() {
    each_backend("portal_sessions", MIGRATIONS, |database| async move {
        suite(for_database(database)).await;
    })
    .await;
}
