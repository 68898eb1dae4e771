//! The store suite, run on SQLite and PostgreSQL.

use onionpost_runtime::Database;
use onionpost_runtime::conformance::{any_file_contains, each_backend};
use onionpost_runtime::seal::CarrierSecret;

use super::{AliasFilter, Counter, MIGRATIONS, for_database};

fn secret() -> CarrierSecret {
    CarrierSecret::from_text("0123456789abcdef0123456789abcdef-gateway").unwrap()
}

#[tokio::test]
async fn aliases_daily_sends_and_counters_on_both_backends() {
    each_backend("gateway", MIGRATIONS, |database| async move {
        let store = for_database(database, &secret());

        // One live alias per identity and correspondent; a second ask returns the first.
        let first = store
            .alias_for("id-a", "acct-1", "david@example.test", "aaaa", 1_000)
            .await
            .unwrap();
        assert_eq!(first.local_part, "aaaa");
        assert!(first.is_live());
        let again = store
            .alias_for("id-a", "acct-1", "david@example.test", "bbbb", 2_000)
            .await
            .unwrap();
        assert_eq!(again.local_part, "aaaa", "the live alias is reused");
        let other = store
            .alias_for("id-a", "acct-1", "erin@example.test", "cccc", 3_000)
            .await
            .unwrap();
        assert_eq!(
            other.local_part, "cccc",
            "another correspondent, another alias"
        );
        let second_identity = store
            .alias_for("id-b", "acct-2", "david@example.test", "dddd", 3_000)
            .await
            .unwrap();
        assert_eq!(second_identity.local_part, "dddd");
        assert_eq!(store.live_aliases().await.unwrap(), 3);

        // Revocation: the row stays, is no longer live, and a new alias is made next time.
        let revoked = store.revoke_alias("aaaa", 4_000).await.unwrap().unwrap();
        assert_eq!(revoked.revoked_at_ms, Some(4_000));
        let twice = store.revoke_alias("aaaa", 5_000).await.unwrap().unwrap();
        assert_eq!(
            twice.revoked_at_ms,
            Some(4_000),
            "the first revocation stands"
        );
        assert!(store.revoke_alias("nope", 5_000).await.unwrap().is_none());
        let fresh = store
            .alias_for("id-a", "acct-1", "david@example.test", "eeee", 6_000)
            .await
            .unwrap();
        assert_eq!(fresh.local_part, "eeee");
        assert_eq!(store.live_aliases().await.unwrap(), 3);
        assert!(!store.alias("aaaa").await.unwrap().unwrap().is_live());

        store.touch_alias("eeee", 7_000).await.unwrap();
        assert_eq!(
            store.alias("eeee").await.unwrap().unwrap().last_used_at_ms,
            Some(7_000)
        );

        // Listing by account, with and without revoked aliases, in pages.
        let live = store
            .list_aliases(&AliasFilter {
                account_id: Some("acct-1".into()),
                limit: 10,
                ..AliasFilter::default()
            })
            .await
            .unwrap();
        let names: Vec<&str> = live.iter().map(|a| a.local_part.as_str()).collect();
        assert_eq!(names, ["cccc", "eeee"]);
        let all = store
            .list_aliases(&AliasFilter {
                account_id: Some("acct-1".into()),
                include_revoked: true,
                limit: 2,
                ..AliasFilter::default()
            })
            .await
            .unwrap();
        let names: Vec<&str> = all.iter().map(|a| a.local_part.as_str()).collect();
        assert_eq!(names, ["aaaa", "cccc"]);
        let next = store
            .list_aliases(&AliasFilter {
                account_id: Some("acct-1".into()),
                include_revoked: true,
                after: Some("cccc".into()),
                limit: 2,
                ..AliasFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].local_part, "eeee");
        let by_identity = store
            .list_aliases(&AliasFilter {
                identity_id: Some("id-b".into()),
                limit: 10,
                ..AliasFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(by_identity.len(), 1);

        // Daily sends per account and day.
        assert_eq!(store.sent_on("acct-1", "2026-11-23").await.unwrap(), 0);
        assert!(
            store
                .reserve_sent("acct-1", "2026-11-23", 2, 5)
                .await
                .unwrap()
        );
        assert!(
            store
                .reserve_sent("acct-1", "2026-11-23", 3, 5)
                .await
                .unwrap()
        );
        assert!(
            store
                .reserve_sent("acct-1", "2026-11-24", 1, 5)
                .await
                .unwrap()
        );
        assert_eq!(store.sent_on("acct-1", "2026-11-23").await.unwrap(), 5);
        assert_eq!(store.sent_on("acct-2", "2026-11-23").await.unwrap(), 0);
        // Past the cap nothing is counted, on a day's first reservation as on a later one.
        assert!(
            !store
                .reserve_sent("acct-1", "2026-11-23", 1, 5)
                .await
                .unwrap()
        );
        assert!(
            !store
                .reserve_sent("acct-2", "2026-11-23", 6, 5)
                .await
                .unwrap()
        );
        assert_eq!(store.sent_on("acct-1", "2026-11-23").await.unwrap(), 5);
        assert_eq!(store.sent_on("acct-2", "2026-11-23").await.unwrap(), 0);
        store.release_sent("acct-1", "2026-11-23", 2).await.unwrap();
        assert_eq!(store.sent_on("acct-1", "2026-11-23").await.unwrap(), 3);
        store.release_sent("acct-1", "2026-11-23", 9).await.unwrap();
        assert_eq!(store.sent_on("acct-1", "2026-11-23").await.unwrap(), 0);

        // Counters.
        for counter in Counter::ALL {
            assert_eq!(store.counter("2026-11-23", counter).await.unwrap(), 0);
        }
        store
            .count("2026-11-23", Counter::InboundRefused, 1)
            .await
            .unwrap();
        store
            .count("2026-11-23", Counter::InboundRefused, 2)
            .await
            .unwrap();
        assert_eq!(
            store
                .counter("2026-11-23", Counter::InboundRefused)
                .await
                .unwrap(),
            3
        );
        assert_eq!(
            store
                .counter("2026-11-24", Counter::InboundRefused)
                .await
                .unwrap(),
            0
        );
    })
    .await;
}

/// Sessions of one account accepting messages at the same moment: the reservations together
/// never pass the cap (before, each checked what was already sent and all of them passed).
#[tokio::test]
async fn concurrent_reservations_never_overshoot_the_cap_on_both_backends() {
    each_backend("gateway", MIGRATIONS, |database| async move {
        let store = for_database(database, &secret());
        let attempts = (0..20).map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .reserve_sent("acct-busy", "2026-12-06", 1, 7)
                    .await
                    .unwrap()
            })
        });
        let granted = futures::future::join_all(attempts)
            .await
            .into_iter()
            .filter(|granted| *granted.as_ref().unwrap())
            .count();
        assert_eq!(granted, 7);
        assert_eq!(store.sent_on("acct-busy", "2026-12-06").await.unwrap(), 7);
    })
    .await;
}

/// Whom an identity writes to in the clearnet is not on the volume (issue 18, item 10): the
/// correspondent is sealed, found by a keyed digest; a clear row of an earlier version is
/// sealed at start and its clear text erased; another carrier secret opens nothing.
#[tokio::test]
async fn correspondents_are_sealed_at_rest_and_clear_rows_of_earlier_versions_are_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let database = Database::open_sqlite(&dir.path().join("gateway.sqlite3"), MIGRATIONS)
        .await
        .unwrap();
    let Database::Sqlite(pool) = &database else {
        unreachable!("opened as SQLite")
    };
    // A row as an earlier version wrote it, in the clear.
    sqlx::query(
        "INSERT INTO aliases (local_part, identity_id, account_id, correspondent, created_at_ms) \
         VALUES ('oldalias', 'id-a', 'acct-1', 'olga-earlier@example.test', 1)",
    )
    .execute(pool)
    .await
    .unwrap();
    let store = for_database(database.clone(), &secret());
    assert_eq!(
        store
            .alias("oldalias")
            .await
            .unwrap()
            .unwrap()
            .correspondent,
        "olga-earlier@example.test",
        "read before it is sealed"
    );
    assert_eq!(store.seal_clear_aliases().await.unwrap(), 1);
    assert_eq!(store.seal_clear_aliases().await.unwrap(), 0);
    let sealed = store.alias("oldalias").await.unwrap().unwrap();
    assert_eq!(sealed.correspondent, "olga-earlier@example.test");
    let found = store
        .alias_for("id-a", "acct-1", "olga-earlier@example.test", "unused", 2)
        .await
        .unwrap();
    assert_eq!(found.local_part, "oldalias", "found again by its digest");

    let fresh = store
        .alias_for(
            "id-a",
            "acct-1",
            "david-correspondent@example.test",
            "newalias",
            3,
        )
        .await
        .unwrap();
    assert_eq!(fresh.correspondent, "david-correspondent@example.test");
    let listed = store
        .list_aliases(&AliasFilter {
            identity_id: Some("id-a".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(pool)
        .await
        .unwrap();
    for needle in [&b"olga-earlier"[..], b"david-correspondent"] {
        assert!(
            !any_file_contains(dir.path(), needle),
            "{} is in the database's files",
            String::from_utf8_lossy(needle)
        );
    }
    // Another carrier secret: the row reads as damaged, not as missing.
    let other = CarrierSecret::from_text("another-carrier-secret-0123456789abcdef").unwrap();
    let stranger = for_database(database.clone(), &other);
    assert!(stranger.alias("newalias").await.is_err());
    database.close().await;
}
