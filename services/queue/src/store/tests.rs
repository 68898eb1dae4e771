//! The store suite, run on SQLite and on PostgreSQL.

use std::collections::HashSet;

use onionpost_runtime::Database;
use onionpost_runtime::conformance::each_backend;

use super::*;

const DAY: i64 = 86_400_000;

fn message(key: &str, queue_id: &str, at: i64, recipients: &[&str]) -> NewMessage {
    NewMessage {
        queue_id: queue_id.to_owned(),
        idempotency_key: key.to_owned(),
        origin: Origin::Submission,
        account_id: "acct-1".into(),
        sender_identity_id: "id-a".into(),
        reverse_path: "alice@a.onion".into(),
        message_id: "<m@a.onion>".into(),
        envelope_id: String::new(),
        dsn_return: DsnReturn::Unspecified,
        fan_out_immediately: false,
        sealed_body: vec![7; 100],
        body_digest: "ab".repeat(32),
        size_bytes: 100,
        enqueued_at_ms: at,
        first_attempt_at_ms: at,
        expires_at_ms: at + 5 * DAY,
        recipients: recipients
            .iter()
            .map(|address| NewRecipient {
                address: (*address).to_owned(),
                notify: vec![Notify::Success, Notify::Failure],
                original_recipient: String::new(),
            })
            .collect(),
    }
}

fn update(idx: i32, state: RecipientState, at: i64, next: Option<i64>) -> RecipientUpdate {
    RecipientUpdate {
        idx,
        state,
        attempted: true,
        attempted_at_ms: at,
        next_attempt_at_ms: next,
        reply: Some(Reply {
            code: 451,
            enhanced_status: "4.4.1".into(),
            text: "offline".into(),
        }),
    }
}

async fn suite(store: Arc<dyn QueueStore>) {
    // Enqueue is idempotent: the second call returns the first entry and writes nothing.
    let first = message("k1", "q1", 1_000, &["carol@c.onion", "dave@d.onion"]);
    let (stored, created) = store.enqueue(&first).await.unwrap();
    assert!(created);
    assert_eq!(stored.queue_id, "q1");
    assert_eq!(stored.recipients.len(), 2);
    assert_eq!(stored.recipients[0].state, RecipientState::Scheduled);
    assert_eq!(
        stored.recipients[0].notify,
        vec![Notify::Success, Notify::Failure]
    );
    assert_eq!(stored.recipients[0].next_attempt_at_ms, Some(1_000));
    let again = message("k1", "q-other", 2_000, &["x@x.onion"]);
    let (same, created) = store.enqueue(&again).await.unwrap();
    assert!(!created);
    assert_eq!(same, stored);
    assert!(store.get_message("q-other").await.unwrap().is_none());
    assert_eq!(store.load_body("q1").await.unwrap(), Some(vec![7; 100]));

    // Claims: due ones only, leased; a second claimer gets nothing until the lease runs out.
    assert!(
        store
            .claim_due("w1", 999, 10_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let claims = store.claim_due("w1", 1_000, 10_000, 10).await.unwrap();
    assert_eq!(claims.len(), 2);
    assert!(
        store
            .claim_due("w2", 5_000, 20_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.next_wake().await.unwrap(), Some(10_000));
    // A live worker renews what it holds; a lease that ran out is not renewed.
    assert_eq!(store.renew_leases("w2", 6_000, 30_000).await.unwrap(), 0);
    assert_eq!(store.renew_leases("w1", 6_000, 12_000).await.unwrap(), 2);
    assert!(
        store
            .claim_due("w2", 11_000, 20_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "a renewed lease is still held"
    );
    assert_eq!(store.renew_leases("w1", 12_000, 40_000).await.unwrap(), 0);
    let reclaimed = store.claim_due("w2", 12_000, 20_000, 10).await.unwrap();
    assert_eq!(reclaimed, claims, "an expired lease is free again");

    // Results from a worker that lost its lease are ignored; the holder's are recorded.
    store
        .record(
            "w1",
            "q1",
            &[update(0, RecipientState::Delivered, 11_000, None)],
            None,
        )
        .await
        .unwrap();
    let unchanged = store.get_message("q1").await.unwrap().unwrap();
    assert_eq!(unchanged.recipients[0].state, RecipientState::Scheduled);
    let after = store
        .record(
            "w2",
            "q1",
            &[
                update(0, RecipientState::Delivered, 11_000, None),
                update(1, RecipientState::TemporaryFailure, 11_000, Some(71_000)),
            ],
            None,
        )
        .await
        .unwrap();
    assert_eq!(after, AfterRecord::Pending);
    let recorded = store.get_message("q1").await.unwrap().unwrap();
    assert_eq!(recorded.recipients[0].state, RecipientState::Delivered);
    assert_eq!(
        recorded.recipients[1].state,
        RecipientState::TemporaryFailure
    );
    assert_eq!(recorded.recipients[1].attempts, 1);
    assert_eq!(recorded.recipients[1].last_attempt_at_ms, Some(11_000));
    assert_eq!(recorded.recipients[1].next_attempt_at_ms, Some(71_000));
    assert_eq!(recorded.recipients[1].claimed_by, None);
    assert_eq!(
        recorded.recipients[1]
            .last_reply
            .as_ref()
            .map(|reply| reply.code),
        Some(451)
    );
    assert!(
        store
            .claim_due("w1", 70_999, 80_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.next_wake().await.unwrap(), Some(71_000));

    // Hold keeps a due recipient from being claimed; release lets it go.
    assert!(store.set_held("q1", true).await.unwrap());
    assert!(
        store
            .claim_due("w1", 80_000, 90_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.next_wake().await.unwrap(), None);
    assert!(store.set_held("q1", false).await.unwrap());
    assert!(!store.set_held("nope", true).await.unwrap());

    // RetryNow and Flush make unfinished recipients due now.
    assert!(store.retry_now("q1", 20_000).await.unwrap());
    assert!(!store.retry_now("nope", 20_000).await.unwrap());
    assert_eq!(store.flush_domain("D.onion", 30_000).await.unwrap(), 1);
    assert_eq!(store.flush_domain("c.onion", 30_000).await.unwrap(), 0);
    let claims = store.claim_due("w1", 30_000, 90_000, 10).await.unwrap();
    assert_eq!(
        claims,
        vec![Claim {
            queue_id: "q1".into(),
            idx: 1
        }]
    );

    // The last recipient's final state removes the message and its body, and the DSN lands
    // in the same transaction.
    let dsn = message("dsn-1", "q-dsn", 31_000, &["alice@a.onion"]);
    let after = store
        .record(
            "w1",
            "q1",
            &[update(1, RecipientState::PermanentFailure, 31_000, None)],
            Some(&dsn),
        )
        .await
        .unwrap();
    assert_eq!(after, AfterRecord::Finished);
    assert!(store.get_message("q1").await.unwrap().is_none());
    assert!(store.load_body("q1").await.unwrap().is_none());
    assert!(store.get_message("q-dsn").await.unwrap().is_some());

    // Delete releases the body, optionally with a DSN.
    let dsn2 = message("dsn-2", "q-dsn2", 31_000, &["alice@a.onion"]);
    assert!(store.delete_message("q-dsn", Some(&dsn2)).await.unwrap());
    assert!(store.load_body("q-dsn").await.unwrap().is_none());
    assert!(store.get_message("q-dsn2").await.unwrap().is_some());
    assert!(!store.delete_message("q-dsn", None).await.unwrap());
    assert!(store.delete_message("q-dsn2", None).await.unwrap());

    // Listing: filters and pages.
    for n in 0..7 {
        let mut entry = message(
            &format!("list-{n}"),
            &format!("l{n}"),
            100_000 + n,
            &[if n % 2 == 0 {
                "carol@c.onion"
            } else {
                "eve@e.onion"
            }],
        );
        if n == 6 {
            entry.origin = Origin::Carry;
            entry.account_id = "acct-2".into();
        }
        store.enqueue(&entry).await.unwrap();
    }
    store.set_held("l3", true).await.unwrap();
    let ids = |messages: &[MessageRecord]| {
        messages
            .iter()
            .map(|message| message.queue_id.clone())
            .collect::<Vec<_>>()
    };
    let all = store
        .list_messages(&ListFilter::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(ids(&all), ["l0", "l1", "l2", "l3", "l4", "l5", "l6"]);
    let page = store
        .list_messages(&ListFilter::default(), None, 3)
        .await
        .unwrap();
    assert_eq!(ids(&page), ["l0", "l1", "l2"]);
    let after = PageAfter {
        enqueued_at_ms: page[2].enqueued_at_ms,
        queue_id: page[2].queue_id.clone(),
    };
    let next = store
        .list_messages(&ListFilter::default(), Some(&after), 3)
        .await
        .unwrap();
    assert_eq!(ids(&next), ["l3", "l4", "l5"]);
    let filter = |f: ListFilter| {
        let store = store.clone();
        async move { ids(&store.list_messages(&f, None, 100).await.unwrap()) }
    };
    assert_eq!(
        filter(ListFilter {
            held_only: true,
            ..Default::default()
        })
        .await,
        ["l3"]
    );
    assert_eq!(
        filter(ListFilter {
            recipient: "E.onion".into(),
            ..Default::default()
        })
        .await,
        ["l1", "l3", "l5"]
    );
    assert_eq!(
        filter(ListFilter {
            recipient: "Carol@c.onion".into(),
            ..Default::default()
        })
        .await,
        ["l0", "l2", "l4", "l6"]
    );
    assert_eq!(
        filter(ListFilter {
            account_id: "acct-2".into(),
            ..Default::default()
        })
        .await,
        ["l6"]
    );
    assert_eq!(
        filter(ListFilter {
            origin: Some(Origin::Carry),
            ..Default::default()
        })
        .await,
        ["l6"]
    );
    assert_eq!(
        filter(ListFilter {
            enqueued_before_ms: Some(100_002),
            ..Default::default()
        })
        .await,
        ["l0", "l1"]
    );
    assert_eq!(
        filter(ListFilter {
            state: Some(RecipientState::Delivered),
            ..Default::default()
        })
        .await,
        Vec::<String>::new()
    );
    assert_eq!(
        filter(ListFilter {
            state: Some(RecipientState::Scheduled),
            ..Default::default()
        })
        .await
        .len(),
        7
    );

    // Stats.
    let stats = store
        .stats(100_000 + 400_000, &[300_000, DAY])
        .await
        .unwrap();
    assert_eq!(stats.messages, 7);
    assert_eq!(stats.held_messages, 1);
    assert_eq!(stats.stored_bytes, 700);
    assert_eq!(stats.oldest_enqueued_at_ms, Some(100_000));
    assert_eq!(stats.by_state, vec![(RecipientState::Scheduled, 7)]);
    assert_eq!(stats.enqueued_within, vec![0, 7, 7]);
}

#[tokio::test]
async fn store_conformance() {
    each_backend("queue_store", MIGRATIONS, |database| async move {
        suite(for_database(database)).await;
    })
    .await;
}

/// Several claimers at once never get the same recipient (PostgreSQL: SKIP LOCKED; SQLite: one
/// writer), and together they get every recipient.
#[tokio::test]
async fn concurrent_claimers_never_share_a_recipient() {
    each_backend(
        "queue_claims",
        MIGRATIONS,
        |database: Database| async move {
            let store = for_database(database);
            let addresses: Vec<String> = (0..10).map(|n| format!("r{n}@c.onion")).collect();
            let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
            for n in 0..100 {
                store
                    .enqueue(&message(
                        &format!("k{n}"),
                        &format!("q{n:03}"),
                        1_000,
                        &refs,
                    ))
                    .await
                    .unwrap();
            }
            let mut workers = Vec::new();
            for worker in 0..6 {
                let store = store.clone();
                workers.push(tokio::spawn(async move {
                    let mut mine = Vec::new();
                    loop {
                        let claims = store
                            .claim_due(&format!("w{worker}"), 2_000, 1_000_000, 25)
                            .await
                            .unwrap();
                        if claims.is_empty() {
                            return mine;
                        }
                        mine.extend(claims);
                    }
                }));
            }
            let mut seen = HashSet::new();
            let mut total = 0;
            for worker in workers {
                let claims = worker.await.unwrap();
                total += claims.len();
                for claim in claims {
                    assert!(seen.insert(claim.clone()), "{claim:?} claimed twice");
                }
            }
            assert_eq!(total, 1_000);
            assert_eq!(seen.len(), 1_000);
        },
    )
    .await;
}

async fn carry_suite(store: Arc<dyn QueueStore>) {
    let carol = "carol@c.onion";
    let agreement = |id: &str, at: i64, expires: Option<i64>| AgreementRecord {
        agreement_id: id.to_owned(),
        address: carol.to_owned(),
        fingerprint: "F".repeat(40),
        created_at_ms: at,
        expires_at_ms: expires,
        revoked_at_ms: None,
        max_held_bytes: 1_000,
        max_messages_per_day: 10,
        carrier: "c.onion".to_owned(),
    };
    assert_eq!(store.active_agreement(carol, 0).await.unwrap(), None);
    store
        .add_agreement(&agreement("a1", 1_000, None))
        .await
        .unwrap();
    let active = store.active_agreement(carol, 2_000).await.unwrap().unwrap();
    assert_eq!(active, agreement("a1", 1_000, None));
    assert_eq!(
        store.active_agreement("dave@d.onion", 2_000).await.unwrap(),
        None
    );

    // A newer request replaces the older one, which ends when the new one starts.
    store
        .add_agreement(&agreement("a2", 3_000, Some(10_000)))
        .await
        .unwrap();
    let active = store.active_agreement(carol, 4_000).await.unwrap().unwrap();
    assert_eq!(active.agreement_id, "a2");
    // Past its expiry it no longer counts.
    assert_eq!(store.active_agreement(carol, 10_000).await.unwrap(), None);
    let live = store.list_agreements(false, 4_000, "", 10).await.unwrap();
    assert_eq!(
        live.iter()
            .map(|a| a.agreement_id.as_str())
            .collect::<Vec<_>>(),
        ["a2"]
    );
    let all = store.list_agreements(true, 4_000, "", 10).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].revoked_at_ms, Some(3_000));
    let page = store.list_agreements(true, 4_000, "a1", 10).await.unwrap();
    assert_eq!(page.len(), 1);

    // What is held for Carol: only unfinished carried recipients count.
    let mut carried = message("carry-1", "qc1", 5_000, &[carol]);
    carried.origin = Origin::Carry;
    store.enqueue(&carried).await.unwrap();
    store
        .enqueue(&message("own-1", "qo1", 5_000, &[carol]))
        .await
        .unwrap();
    let held = store.held_for(carol, 0).await.unwrap();
    assert_eq!(
        held,
        HeldRecord {
            messages: 1,
            bytes: 100,
            accepted_on_day: 1
        }
    );
    assert_eq!(store.held_for(carol, 1).await.unwrap().accepted_on_day, 0);
    // Counted at acceptance: still counted once the message is gone.
    store.delete_message("qc1", None).await.unwrap();
    let held = store.held_for(carol, 0).await.unwrap();
    assert_eq!((held.messages, held.accepted_on_day), (0, 1));

    // Hand-offs accumulate, once per carrier.
    store.note_handed("qo1", 0, "b.onion").await.unwrap();
    store.note_handed("qo1", 0, "d.onion").await.unwrap();
    let own = store.get_message("qo1").await.unwrap().unwrap();
    assert_eq!(own.recipients[0].handed_to_carriers, ["b.onion", "d.onion"]);

    // A signed withdrawal ends every active agreement of the identity; an operator's revocation
    // names one.
    let ended = store
        .revoke_agreement(&AgreementKey::Address(carol.to_owned()), 5_000)
        .await
        .unwrap();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].agreement_id, "a2");
    assert_eq!(ended[0].revoked_at_ms, Some(5_000));
    assert_eq!(store.active_agreement(carol, 5_001).await.unwrap(), None);
    assert!(
        store
            .revoke_agreement(&AgreementKey::Id("a2".into()), 6_000)
            .await
            .unwrap()
            .is_empty()
    );

    // Carry statements received in mail: kept, taken by one worker, decided.
    let request = |id: &str, at: i64| CarryRequestRecord {
        request_id: id.to_owned(),
        onion: "b.onion".to_owned(),
        sealed_statement: vec![1, 2, 3],
        state: CarryRequestState::Verifying,
        address: String::new(),
        fingerprint: String::new(),
        kind: String::new(),
        expires_at_ms: None,
        detail: String::new(),
        attempts: 0,
        received_at_ms: at,
        next_attempt_at_ms: Some(at),
        decided_at_ms: None,
        agreement_id: String::new(),
    };
    store
        .insert_carry_request(&request("r1", 10))
        .await
        .unwrap();
    store
        .insert_carry_request(&request("r2", 20))
        .await
        .unwrap();
    assert!(matches!(
        store.insert_carry_request(&request("r1", 30)).await,
        Err(StoreError::Duplicate)
    ));
    let due = store.due_carry_requests(15, 10).await.unwrap();
    assert_eq!(due, [request("r1", 10)]);
    // One worker takes it; a second, which read it with the same attempts, does not.
    assert!(store.claim_carry_request("r1", 0, 1_000).await.unwrap());
    assert!(!store.claim_carry_request("r1", 0, 1_000).await.unwrap());
    let taken = store.carry_request("r1").await.unwrap().unwrap();
    assert_eq!((taken.attempts, taken.next_attempt_at_ms), (1, Some(1_000)));
    assert_eq!(
        store.due_carry_requests(100, 10).await.unwrap(),
        [request("r2", 20)]
    );
    let pending = CarryRequestRecord {
        state: CarryRequestState::Pending,
        address: carol.to_owned(),
        fingerprint: "F".repeat(40),
        kind: "request".to_owned(),
        expires_at_ms: Some(99_000),
        detail: "waits for the operator's decision".to_owned(),
        next_attempt_at_ms: None,
        ..taken.clone()
    };
    assert!(
        store
            .update_carry_request(&pending, Some(CarryRequestState::Verifying))
            .await
            .unwrap()
    );
    assert_eq!(
        store.carry_request("r1").await.unwrap(),
        Some(pending.clone())
    );
    // Written only from the state named: a second decision finds it decided.
    assert!(
        !store
            .update_carry_request(&pending, Some(CarryRequestState::Verifying))
            .await
            .unwrap()
    );
    let listed = store
        .list_carry_requests(Some(CarryRequestState::Pending), "", 10)
        .await
        .unwrap();
    assert_eq!(listed, std::slice::from_ref(&pending));
    let all = store.list_carry_requests(None, "", 10).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        store.list_carry_requests(None, "r1", 10).await.unwrap(),
        [request("r2", 20)]
    );
    assert_eq!(store.carry_request("nope").await.unwrap(), None);
}

#[tokio::test]
async fn carry_store_conformance() {
    each_backend("queue_carry_store", MIGRATIONS, |database| async move {
        carry_suite(for_database(database)).await;
    })
    .await;
}

/// Carried mail arriving in many sessions at once for one recipient: the caps are checked in
/// the storing transaction, so together they never pass them (before, each session checked
/// only at RCPT, against what was held then and the declared SIZE, and all were stored).
#[tokio::test]
async fn concurrent_carried_mail_never_passes_the_agreed_caps() {
    each_backend(
        "queue_carry_caps",
        MIGRATIONS,
        |database: Database| async move {
            let store = for_database(database);
            let carol = "carol@c.onion";
            let caps = [CarryCap {
                address: carol.into(),
                // Five messages of 100 bytes fit; the daily cap allows seven.
                max_held_bytes: 500,
                max_messages_per_day: 7,
            }];
            let attempts = (0..12).map(|n| {
                let (store, caps) = (store.clone(), caps.clone());
                tokio::spawn(async move {
                    let mut carried =
                        message(&format!("c{n}"), &format!("qc{n:02}"), 5_000, &[carol]);
                    carried.origin = Origin::Carry;
                    store.enqueue_within(&carried, &caps).await.unwrap()
                })
            });
            let stored = futures::future::join_all(attempts)
                .await
                .into_iter()
                .filter(|stored| stored.as_ref().unwrap().is_some())
                .count();
            assert_eq!(stored, 5, "the byte cap holds");
            let held = store.held_for(carol, 0).await.unwrap();
            assert_eq!(
                (held.messages, held.bytes, held.accepted_on_day),
                (5, 500, 5)
            );

            // Delivered mail frees bytes but not the day's count: two more fit, then none.
            for n in 0..12 {
                store
                    .delete_message(&format!("qc{n:02}"), None)
                    .await
                    .unwrap();
            }
            for n in 12..15 {
                let mut carried = message(&format!("c{n}"), &format!("qc{n:02}"), 5_000, &[carol]);
                carried.origin = Origin::Carry;
                let outcome = store.enqueue_within(&carried, &caps).await.unwrap();
                assert_eq!(outcome.is_some(), n < 14, "message {n}");
            }
            assert_eq!(store.held_for(carol, 0).await.unwrap().accepted_on_day, 7);
        },
    )
    .await;
}
