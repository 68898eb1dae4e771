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

async fn second_factor_suite(store: Arc<dyn PortalStore>) {
    let factor = |secret: &[u8]| SecondFactorRecord {
        account_id: "acct_alice".to_owned(),
        sealed_secret: secret.to_vec(),
        confirmed: false,
        last_step: 0,
        created_at_ms: 1_000,
    };
    assert_eq!(store.second_factor("acct_alice").await.unwrap(), None);
    assert!(store.begin_second_factor(&factor(b"first")).await.unwrap());
    // Begun again before confirming: the new secret replaces the old.
    assert!(store.begin_second_factor(&factor(b"second")).await.unwrap());
    assert_eq!(
        store.second_factor("acct_alice").await.unwrap(),
        Some(factor(b"second"))
    );
    // A step confirms it; each step is taken once, and never an older one.
    assert!(store.take_step("acct_alice", 100).await.unwrap());
    assert!(!store.take_step("acct_alice", 100).await.unwrap());
    assert!(!store.take_step("acct_alice", 99).await.unwrap());
    assert!(store.take_step("acct_alice", 101).await.unwrap());
    assert!(!store.take_step("acct_bob", 101).await.unwrap());
    let confirmed = store.second_factor("acct_alice").await.unwrap().unwrap();
    assert!(confirmed.confirmed && confirmed.last_step == 101);
    // A confirmed factor is not replaced by beginning again.
    assert!(!store.begin_second_factor(&factor(b"third")).await.unwrap());
    assert_eq!(
        store
            .second_factor("acct_alice")
            .await
            .unwrap()
            .unwrap()
            .sealed_secret,
        b"second".to_vec()
    );
    assert!(store.delete_second_factor("acct_alice").await.unwrap());
    assert!(!store.delete_second_factor("acct_alice").await.unwrap());
    assert_eq!(store.second_factor("acct_alice").await.unwrap(), None);
}

#[tokio::test]
async fn session_store_on_both_backends() {
    each_backend("portal_sessions", MIGRATIONS, |database| async move {
        let store = for_database(database);
        suite(store.clone()).await;
        second_factor_suite(store).await;
    })
    .await;
}
