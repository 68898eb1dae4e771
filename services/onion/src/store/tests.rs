//! The store suite, run against SQLite and PostgreSQL.

use onionpost_runtime::conformance::each_backend;

use super::*;

fn onion(identity_id: &str, service_id: &str, slot: u32) -> StoredOnion {
    StoredOnion {
        identity_id: identity_id.to_owned(),
        service_id: service_id.to_owned(),
        sealed_key: Some(vec![7; 48]),
        slot: Some(slot),
        purposes: vec![Purpose::Smtp, Purpose::Wkd],
        created_at_ms: 1_700_000_000_123,
        revoked_at_ms: None,
        retire_at_ms: None,
        tor: Some(0),
    }
}

#[tokio::test]
async fn store_suite() {
    each_backend("onion_store", MIGRATIONS, |database| async move {
        let store = for_database(database);
        let alice = onion("alice", &"a".repeat(56), 0);
        let bob = onion("bob", &"b".repeat(56), 1);
        store.insert(&alice).await.unwrap();
        store.insert(&bob).await.unwrap();
        assert_eq!(store.get("alice").await.unwrap(), Some(alice.clone()));
        assert_eq!(store.get("nobody").await.unwrap(), None);
        assert_eq!(
            store.live().await.unwrap(),
            vec![alice.clone(), bob.clone()]
        );

        // Identity ids, addresses and slots are each taken once.
        let same_id = onion("alice", &"c".repeat(56), 2);
        assert!(matches!(
            store.insert(&same_id).await,
            Err(StoreError::Duplicate)
        ));
        let same_address = onion("carol", &"a".repeat(56), 2);
        assert!(matches!(
            store.insert(&same_address).await,
            Err(StoreError::Duplicate)
        ));
        let same_slot = onion("carol", &"c".repeat(56), 1);
        assert!(matches!(
            store.insert(&same_slot).await,
            Err(StoreError::Duplicate)
        ));

        // Placement on a tor of the pool is stored and read back.
        assert!(store.place("bob", 3).await.unwrap());
        assert!(!store.place("nobody", 3).await.unwrap());
        assert_eq!(store.get("bob").await.unwrap().unwrap().tor, Some(3));
        assert!(store.place("bob", 0).await.unwrap());

        // A retirement is scheduled once; the first time stands, and it is loaded back.
        assert!(
            store
                .schedule_retirement("bob", 1_900_000_000_000)
                .await
                .unwrap()
        );
        assert!(
            !store
                .schedule_retirement("bob", 1_950_000_000_000)
                .await
                .unwrap()
        );
        assert!(!store.schedule_retirement("nobody", 1).await.unwrap());
        let bob = StoredOnion {
            retire_at_ms: Some(1_900_000_000_000),
            ..bob
        };
        assert_eq!(store.get("bob").await.unwrap(), Some(bob.clone()));

        // Revocation destroys key and slot and keeps a tombstone.
        assert!(store.revoke("alice", 1_800_000_000_000).await.unwrap());
        assert!(!store.revoke("alice", 1_800_000_000_001).await.unwrap());
        assert!(!store.revoke("nobody", 1).await.unwrap());
        let tombstone = store.get("alice").await.unwrap().unwrap();
        assert_eq!(tombstone.sealed_key, None);
        assert_eq!(tombstone.slot, None);
        assert_eq!(tombstone.revoked_at_ms, Some(1_800_000_000_000));
        assert_eq!(store.live().await.unwrap(), vec![bob.clone()]);
        assert!(store.service_id_known(&"a".repeat(56)).await.unwrap());
        assert!(!store.service_id_known(&"z".repeat(56)).await.unwrap());

        // The address never comes back, under any identity; the slot is free again.
        assert!(matches!(
            store.insert(&same_address).await,
            Err(StoreError::Duplicate)
        ));
        store
            .insert(&onion("carol", &"c".repeat(56), 0))
            .await
            .unwrap();

        let revoked = store.revoked("", 10).await.unwrap();
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].identity_id, "alice");
        assert!(store.revoked("alice", 10).await.unwrap().is_empty());
    })
    .await;
}

/// After revocation on SQLite the sealed key is in none of the database's files.
#[tokio::test]
async fn sqlite_revocation_leaves_no_key_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("onion.sqlite3");
    let database = Database::open_sqlite(&path, MIGRATIONS).await.unwrap();
    let store = for_database(database.clone());
    let mut marked = onion("alice", &"a".repeat(56), 0);
    let key: Vec<u8> = (0..64_u8)
        .map(|byte| byte.wrapping_mul(37) ^ 0x5a)
        .collect();
    marked.sealed_key = Some(key.clone());
    store.insert(&marked).await.unwrap();
    store
        .insert(&onion("bob", &"b".repeat(56), 1))
        .await
        .unwrap();
    let holds_key = |dir: &std::path::Path| {
        std::fs::read_dir(dir).unwrap().any(|entry| {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
            bytes
                .windows(key.len())
                .any(|window| window == key.as_slice())
        })
    };
    assert!(
        holds_key(dir.path()),
        "the key should be on disk before revocation"
    );
    assert!(store.revoke("alice", 1).await.unwrap());
    assert!(
        !holds_key(dir.path()),
        "the key is still on disk after revocation"
    );
    database.close().await;
}
