//! The store suite, run on SQLite and on PostgreSQL.

use onionpost_runtime::conformance::{any_file_contains, each_backend};

use super::*;

fn secret() -> CarrierSecret {
    CarrierSecret::from_text("0123456789abcdef0123456789abcdef-store").unwrap()
}

fn identity(id: &str, address: &str) -> IdentityRecord {
    IdentityRecord {
        identity_id: id.to_owned(),
        account_id: "acct-1".to_owned(),
        address: address.to_owned(),
        fingerprint: "AB".repeat(20),
        public_key: vec![1, 2, 3],
        sealed_secret: Some(vec![9; 40]),
        custody: Custody::Carrier,
        preferred_carriers: vec!["c1.onion".to_owned(), "c2.onion".to_owned()],
        carrier_list: Some(vec![7; 30]),
        created_at_ms: 1_000,
        revoked_at_ms: None,
        revocation: None,
    }
}

fn contact(id: &str, account: &str, address: &str) -> ContactRecord {
    ContactRecord {
        contact_id: id.to_owned(),
        account_id: account.to_owned(),
        address: address.to_owned(),
        display_name: String::new(),
        fingerprint: "CD".repeat(20),
        public_key: Some(vec![4, 5, 6]),
        key_source: KeySource::Wkd,
        verified: false,
        designated_carriers: Vec::new(),
        preferred_carriers: vec!["c3.onion".to_owned()],
        preferred_carriers_signed_at: Some(1_795_000_000),
        held: None,
        introducers: Vec::new(),
        autocrypt_date_ms: None,
        first_seen_at_ms: 2_000,
        last_seen_at_ms: 2_000,
        revoked_at_ms: None,
        correspondents: Vec::new(),
        requests: Vec::new(),
        blocked: Vec::new(),
    }
}

async fn suite(store: Arc<dyn KeysStore>) {
    // Identities.
    let alice = identity("id-a", "alice@a.onion");
    store.insert_identity(&alice).await.unwrap();
    assert!(matches!(
        store.insert_identity(&alice).await,
        Err(StoreError::Duplicate)
    ));
    let same_address = identity("id-other", "alice@a.onion");
    assert!(matches!(
        store.insert_identity(&same_address).await,
        Err(StoreError::Duplicate)
    ));
    assert_eq!(store.identity("id-a").await.unwrap(), Some(alice.clone()));
    assert_eq!(
        store.identity_by_address("alice@a.onion").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(store.identity("nobody").await.unwrap(), None);
    let client = IdentityRecord {
        custody: Custody::Client,
        sealed_secret: None,
        preferred_carriers: Vec::new(),
        carrier_list: None,
        ..identity("id-b", "bob@b.onion")
    };
    store.insert_identity(&client).await.unwrap();
    assert_eq!(store.identity("id-b").await.unwrap(), Some(client.clone()));
    assert_eq!(store.live_identities().await.unwrap().len(), 2);

    // A key rotation: the old key kept (once however often it is stored), the new one current.
    let kept = |fingerprint: &str, at: i64| PreviousKey {
        identity_id: "id-a".to_owned(),
        fingerprint: fingerprint.to_owned(),
        sealed_secret: vec![at as u8; 40],
        replaced_at_ms: at,
    };
    assert!(store.previous_keys("id-a").await.unwrap().is_empty());
    store
        .add_previous_key(&kept(&"AB".repeat(20), 5))
        .await
        .unwrap();
    store
        .add_previous_key(&kept(&"AB".repeat(20), 6))
        .await
        .unwrap();
    store
        .add_previous_key(&kept(&"EF".repeat(20), 7))
        .await
        .unwrap();
    let rotated = IdentityRecord {
        fingerprint: "EF".repeat(20),
        public_key: vec![3, 2, 1],
        sealed_secret: Some(vec![8; 40]),
        ..alice.clone()
    };
    assert!(store.update_identity(&rotated).await.unwrap());
    assert_eq!(store.identity("id-a").await.unwrap(), Some(rotated));
    let previous = store.previous_keys("id-a").await.unwrap();
    let fingerprints: Vec<&str> = previous
        .iter()
        .map(|key| key.fingerprint.as_str())
        .collect();
    assert_eq!(fingerprints, ["AB".repeat(20), "EF".repeat(20)]);
    assert_eq!(previous[0].sealed_secret, vec![5; 40]);
    assert!(store.previous_keys("id-b").await.unwrap().is_empty());
    assert_eq!(store.erase_previous_keys("id-a").await.unwrap(), 2);
    assert!(store.previous_keys("id-a").await.unwrap().is_empty());
    assert!(store.update_identity(&alice).await.unwrap());

    let revoked = IdentityRecord {
        sealed_secret: None,
        revoked_at_ms: Some(5_000),
        revocation: Some(vec![7, 7]),
        public_key: vec![1, 2, 3, 4],
        ..alice.clone()
    };
    assert!(store.update_identity(&revoked).await.unwrap());
    assert_eq!(store.identity("id-a").await.unwrap(), Some(revoked));
    let live = store.live_identities().await.unwrap();
    assert_eq!(live, vec![client]);
    let recent = store.identities_revoked_since(5_000).await.unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].identity_id, "id-a");
    assert!(
        store
            .identities_revoked_since(5_001)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !store
            .update_identity(&identity("nobody", "x@y.onion"))
            .await
            .unwrap()
    );

    // Contacts.
    let mut carol = contact("c-1", "acct-1", "carol@c.onion");
    carol.display_name = "Carol 50%".to_owned();
    carol.designated_carriers = vec!["k.onion".to_owned()];
    carol.introducers = vec![IntroducerRecord {
        address: "bob@b.onion".to_owned(),
        fingerprint: "EF".repeat(20),
        introduced_at_ms: 3_000,
    }];
    store.insert_contact(&carol).await.unwrap();
    assert!(matches!(
        store
            .insert_contact(&contact("c-2", "acct-1", "carol@c.onion"))
            .await,
        Err(StoreError::Duplicate)
    ));
    // Another account may hold the same address.
    let other_account = contact("c-3", "acct-2", "carol@c.onion");
    store.insert_contact(&other_account).await.unwrap();
    assert_eq!(
        store.contact("acct-1", "c-1").await.unwrap(),
        Some(carol.clone())
    );
    assert_eq!(store.contact("acct-2", "c-1").await.unwrap(), None);
    assert_eq!(
        store
            .contact_by_address("acct-2", "carol@c.onion")
            .await
            .unwrap(),
        Some(other_account)
    );

    let dave = contact("c-4", "acct-1", "dave@d.onion");
    store.insert_contact(&dave).await.unwrap();
    let all = ContactFilter {
        limit: 10,
        ..ContactFilter::default()
    };
    let listed = store.list_contacts("acct-1", &all).await.unwrap();
    assert_eq!(listed, vec![carol.clone(), dave.clone()]);
    let first_page = store
        .list_contacts(
            "acct-1",
            &ContactFilter {
                limit: 1,
                ..ContactFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(first_page, vec![carol.clone()]);
    let second_page = store
        .list_contacts(
            "acct-1",
            &ContactFilter {
                limit: 1,
                after_address: carol.address.clone(),
                ..ContactFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(second_page, vec![dave.clone()]);
    // The query is a substring, case-insensitive, with LIKE's wildcards taken literally.
    for (query, expected) in [("CAROL", 1), ("50%", 1), ("5_%", 0), ("onion", 2)] {
        let found = store
            .list_contacts(
                "acct-1",
                &ContactFilter {
                    query: query.to_owned(),
                    limit: 10,
                    ..ContactFilter::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(found.len(), expected, "query {query:?}");
    }

    // A held key change, a second introducer, then the update reads back whole.
    let mut changed = dave.clone();
    changed.held = Some(HeldKey {
        fingerprint: "01".repeat(20),
        public_key: vec![8, 8],
        source: KeySource::Autocrypt,
        reason: "not-certified".to_owned(),
        seen_at_ms: 4_000,
    });
    changed.introducers = vec![
        IntroducerRecord {
            address: "bob@b.onion".to_owned(),
            fingerprint: "EF".repeat(20),
            introduced_at_ms: 3_000,
        },
        IntroducerRecord {
            address: "erin@e.onion".to_owned(),
            fingerprint: "AA".repeat(20),
            introduced_at_ms: 3_500,
        },
    ];
    changed.verified = true;
    changed.autocrypt_date_ms = Some(4_000);
    changed.last_seen_at_ms = 4_000;
    changed.revoked_at_ms = Some(4_500);
    assert!(store.update_contact(&changed).await.unwrap());
    assert_eq!(
        store.contact("acct-1", "c-4").await.unwrap(),
        Some(changed.clone())
    );
    let held_only = store
        .list_contacts(
            "acct-1",
            &ContactFilter {
                only_held: true,
                limit: 10,
                ..ContactFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(held_only, vec![changed.clone()]);
    assert!(
        !store
            .update_contact(&contact("c-4", "acct-2", "dave@d.onion"))
            .await
            .unwrap()
    );

    assert!(!store.delete_contact("acct-2", "c-4").await.unwrap());
    assert!(store.delete_contact("acct-1", "c-4").await.unwrap());
    assert!(!store.delete_contact("acct-1", "c-4").await.unwrap());
    assert_eq!(store.contact("acct-1", "c-4").await.unwrap(), None);
    // The address can be added again after removal.
    store
        .insert_contact(&contact("c-5", "acct-1", "dave@d.onion"))
        .await
        .unwrap();
}

#[tokio::test]
async fn store_conformance() {
    each_backend("keys_store", MIGRATIONS, |database| async move {
        suite(for_database(database, &secret())).await;
    })
    .await;
}

/// Whether any file under `dir` contains `needle`.
#[tokio::test]
async fn a_revoked_identitys_sealed_key_is_gone_from_the_sqlite_files() {
    let dir = tempfile::tempdir().unwrap();
    let database = Database::open_sqlite(&dir.path().join("keys.sqlite3"), MIGRATIONS)
        .await
        .unwrap();
    let store = for_database(database.clone(), &secret());
    let needle = b"SEALED-SECRET-KEY-BYTES-0123456789".to_vec();
    let mut record = IdentityRecord {
        sealed_secret: Some(needle.clone()),
        ..identity("id-a", "alice@a.onion")
    };
    store.insert_identity(&record).await.unwrap();
    // A key the identity replaced is kept until the revocation too.
    let replaced = b"SEALED-REPLACED-KEY-BYTES-987654321".to_vec();
    store
        .add_previous_key(&PreviousKey {
            identity_id: "id-a".to_owned(),
            fingerprint: "CD".repeat(20),
            sealed_secret: replaced.clone(),
            replaced_at_ms: 1_500,
        })
        .await
        .unwrap();
    assert!(any_file_contains(dir.path(), &needle));
    assert!(any_file_contains(dir.path(), &replaced));
    record.sealed_secret = None;
    record.revoked_at_ms = Some(2_000);
    assert!(store.update_identity(&record).await.unwrap());
    assert_eq!(store.erase_previous_keys("id-a").await.unwrap(), 1);
    assert!(!any_file_contains(dir.path(), &needle));
    assert!(!any_file_contains(dir.path(), &replaced));
    database.close().await;
}

#[tokio::test]
async fn address_books_are_sealed_at_rest_and_clear_rows_of_earlier_versions_are_moved() {
    let dir = tempfile::tempdir().unwrap();
    let database = Database::open_sqlite(&dir.path().join("keys.sqlite3"), MIGRATIONS)
        .await
        .unwrap();
    let Database::Sqlite(pool) = &database else {
        unreachable!("opened as SQLite")
    };
    // A row as an earlier version wrote it, in the clear, with an introducer.
    sqlx::query(
        "INSERT INTO contacts (contact_id, account_id, address, display_name, fingerprint, \
         key_source, first_seen_at_ms, last_seen_at_ms) \
         VALUES ('c-old', 'acct-1', 'olivia-earlier@o.onion', 'Olivia Earlier', 'FEED', 'wkd', 1, 2)",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO contact_introducers (contact_id, address, fingerprint, introduced_at_ms) \
         VALUES ('c-old', 'ivan-introducer@i.onion', 'BEEF', 3)",
    )
    .execute(pool)
    .await
    .unwrap();
    let store = for_database(database.clone(), &secret());
    assert_eq!(store.seal_clear_contacts().await.unwrap(), 1);
    assert_eq!(store.seal_clear_contacts().await.unwrap(), 0);
    let moved = store
        .contact_by_address("acct-1", "olivia-earlier@o.onion")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(moved.display_name, "Olivia Earlier");
    assert_eq!(moved.introducers[0].address, "ivan-introducer@i.onion");

    let mut carol = contact("c-1", "acct-1", "carol-correspondent@c.onion");
    carol.display_name = "Carol Correspondent".to_owned();
    carol.public_key = Some(b"CAROLS-PUBLIC-KEY-BYTES".to_vec());
    store.insert_contact(&carol).await.unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(pool)
        .await
        .unwrap();
    for needle in [
        &b"carol-correspondent"[..],
        b"Carol Correspondent",
        b"CAROLS-PUBLIC-KEY-BYTES",
        b"olivia-earlier",
        b"Olivia Earlier",
        b"ivan-introducer",
    ] {
        assert!(
            !any_file_contains(dir.path(), needle),
            "{} is in the database's files",
            String::from_utf8_lossy(needle)
        );
    }
    // Another carrier secret opens nothing, and says the entry is damaged, not missing.
    let other = CarrierSecret::from_text("another-carrier-secret-0123456789abcdef").unwrap();
    let stranger = for_database(database.clone(), &other);
    assert!(matches!(
        stranger.contact("acct-1", "c-1").await,
        Err(StoreError::Corrupt(_))
    ));
    database.close().await;
}
