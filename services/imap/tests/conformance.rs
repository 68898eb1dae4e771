//! The imap service over its store, on SQLite and on PostgreSQL (one suite, both backends):
//! accounts, plans, vouchers, account states with a manual clock, identities, the mail store
//! through [`MailStore`], and delivery.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{Duration, TimeZone, Utc};
use onionpost_imap::mailstore::{FlagOperation, LoginError, MailStore, MailStoreError, Part};
use onionpost_imap::service::{
    AccountState, Credentials, Delivery, DeliveryMailbox, ImapService, Refusal, Verification,
    default_settings,
};
use onionpost_imap::store::MIGRATIONS;
use onionpost_imap::{CarrierSecret, Clock, ImapError, ManualClock};
use onionpost_runtime::Database;
use onionpost_runtime::conformance::each_backend;

const PASSWORD: &str = "correct horse battery";

/// A real v3 onion per letter: identity addresses are parsed with their checksum verified.
fn onion(letter: char) -> String {
    onionpost_proto::address::OnionHost::from_ed25519(&[letter as u8; 32]).to_string()
}

async fn service(database: Database) -> (ImapService, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).unwrap(),
    ));
    let secret = CarrierSecret::from_text("0123456789abcdef0123456789abcdef").unwrap();
    let service = ImapService::open(database, secret, clock.clone(), default_settings())
        .await
        .unwrap();
    (service, clock)
}

fn message(subject: &str, message_id: &str, body: &str) -> Vec<u8> {
    format!(
        "From: a@{}\r\nTo: b@{}\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n\r\n{body}\r\n",
        onion('a'),
        onion('b')
    )
    .into_bytes()
}

fn delivery(identity: &str, bytes: Vec<u8>) -> Delivery {
    Delivery {
        identity_id: identity.to_owned(),
        mailbox: DeliveryMailbox::Inbox,
        message: bytes,
        verification: Verification::Verified,
        verification_detail: "ABCDEF0123".to_owned(),
        flags: Vec::new(),
    }
}

/// App passwords open IMAP and SMTP (never the portal), are revocable, and when the carrier
/// requires them the account's own password opens IMAP and SMTP no more.
async fn app_passwords(database: Database) {
    let (service, clock) = service(database.clone()).await;
    let account = service.create_account("erin", PASSWORD, "").await.unwrap();
    let id = account.record.account_id.clone();
    let other = service.create_account("frank", PASSWORD, "").await.unwrap();
    let (phone, code) = service.create_app_password(&id, "phone").await.unwrap();
    // Listed oldest first: the second is a second younger.
    clock.advance(Duration::seconds(1));
    let (laptop, laptop_code) = service.create_app_password(&id, " laptop ").await.unwrap();
    assert_eq!(laptop.name, "laptop");
    assert_ne!(code, laptop_code);
    assert!(matches!(
        service.create_app_password(&id, "").await,
        Err(ImapError::InvalidArgument { .. })
    ));
    let listed = service.app_passwords(&id).await.unwrap();
    assert_eq!(
        listed.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["phone", "laptop"]
    );
    assert!(listed.iter().all(|p| !p.password_hash.is_empty()));

    // A mail client logs in with it (in any case, with or without dashes); the portal does not.
    let mail = |login: &'static str, password: String| {
        let service = service.clone();
        async move {
            service
                .authenticate_through(login, &password, "c", None, Credentials::MailClient)
                .await
        }
    };
    assert_eq!(
        mail("erin", code.clone()).await.unwrap().record.account_id,
        id
    );
    assert!(
        mail("erin", code.to_lowercase().replace('-', ""))
            .await
            .is_ok()
    );
    assert!(
        service.verify_login("erin", &code).await.is_ok(),
        "IMAP login"
    );
    assert!(matches!(
        service
            .authenticate_through("erin", &code, "c", None, Credentials::AccountPassword)
            .await,
        Err(ImapError::Unauthenticated)
    ));
    assert!(
        matches!(
            mail("frank", code.clone()).await,
            Err(ImapError::Unauthenticated)
        ),
        "an app password opens only its own account"
    );
    assert!(mail("erin", PASSWORD.to_owned()).await.is_ok());

    // Revoked: gone at once, and only for its own account.
    assert!(matches!(
        service
            .revoke_app_password(&other.record.account_id, &phone.app_password_id)
            .await,
        Err(ImapError::NotFound(_))
    ));
    service
        .revoke_app_password(&id, &phone.app_password_id)
        .await
        .unwrap();
    assert!(matches!(
        mail("erin", code.clone()).await,
        Err(ImapError::Unauthenticated)
    ));
    assert_eq!(service.app_passwords(&id).await.unwrap().len(), 1);

    // Through the onion of an identity that is not hers, erin's good app password fails like a
    // wrong password, and in the time any failure takes: the slow hash is not skipped. Else an
    // account holder could time, through a stranger's onion, whether it shares her carrier.
    service
        .add_identity(
            "idn-frank",
            &other.record.account_id,
            &format!("frank@{}", onion('g')),
            "",
        )
        .await
        .unwrap();
    let timed = |login: &'static str, password: String, key: &'static str| {
        let service = service.clone();
        async move {
            let started = std::time::Instant::now();
            let outcome = service
                .authenticate_through(
                    login,
                    &password,
                    key,
                    Some("idn-frank"),
                    Credentials::MailClient,
                )
                .await;
            assert!(
                matches!(outcome, Err(ImapError::Unauthenticated)),
                "{outcome:?}"
            );
            started.elapsed()
        }
    };
    let app_password = timed("erin", laptop_code.clone(), "t1")
        .await
        .min(timed("erin", laptop_code.clone(), "t2").await);
    let unknown_login = timed("nobody", laptop_code.clone(), "t3")
        .await
        .min(timed("nobody", laptop_code.clone(), "t4").await);
    assert!(
        app_password * 2 >= unknown_login,
        "an app password through a stranger's onion fails in {app_password:?}, an unknown login \
         in {unknown_login:?}"
    );

    // A carrier that requires app passwords: the account's own password opens only the portal.
    let mut settings = default_settings();
    settings.require_app_passwords = true;
    let secret = CarrierSecret::from_text("0123456789abcdef0123456789abcdef").unwrap();
    let strict = ImapService::open(
        database,
        secret,
        Arc::new(ManualClock::new(Utc::now())),
        settings,
    )
    .await
    .unwrap();
    assert!(matches!(
        strict.verify_login("erin", PASSWORD).await,
        Err(ImapError::Unauthenticated)
    ));
    assert!(strict.verify_login("erin", &laptop_code).await.is_ok());
    assert!(
        strict
            .authenticate_through("erin", PASSWORD, "p", None, Credentials::AccountPassword)
            .await
            .is_ok()
    );

    // Deleting the account takes its app passwords along.
    service.delete_account(&id).await.unwrap();
    assert!(matches!(
        service.verify_login("erin", &laptop_code).await,
        Err(ImapError::Unauthenticated)
    ));
}

async fn accounts_plans_and_vouchers(database: Database) {
    let (service, clock) = service(database).await;
    let plans = service.list_plans().await.unwrap();
    assert_eq!(plans.len(), 1, "the default plan is created on first start");
    assert_eq!(plans[0].name, "standard");
    assert_eq!(plans[0].quota_bytes, 1 << 30);
    assert_eq!(plans[0].identities_allowed, 5);

    let alice = service.create_account("Alice", PASSWORD, "").await.unwrap();
    assert_eq!(alice.record.login, "alice");
    assert_eq!(alice.state, AccountState::Active);
    assert_eq!(alice.record.plan.plan_id, plans[0].plan_id);
    let start = clock.now_ms();
    assert_eq!(alice.record.paid_until_ms, start + 30 * 86_400_000);
    assert!(matches!(
        service.create_account("alice", PASSWORD, "").await,
        Err(ImapError::AlreadyExists(_))
    ));
    assert!(matches!(
        service.create_account("bad login!", PASSWORD, "").await,
        Err(ImapError::InvalidArgument { field: "login", .. })
    ));
    assert!(matches!(
        service.create_account("bob", "short", "").await,
        Err(ImapError::InvalidArgument {
            field: "password",
            ..
        })
    ));
    assert!(matches!(
        service
            .create_account("bob", PASSWORD, "no-such-plan")
            .await,
        Err(ImapError::InvalidArgument {
            field: "plan_id",
            ..
        })
    ));
    let id = alice.record.account_id.clone();
    assert_eq!(
        service
            .account_by_login("ALICE")
            .await
            .unwrap()
            .record
            .account_id,
        id
    );

    // Authentication and back-off.
    assert_eq!(
        service
            .authenticate("alice", PASSWORD, "c1")
            .await
            .unwrap()
            .record
            .account_id,
        id
    );
    for _ in 0..3 {
        assert!(matches!(
            service.authenticate("alice", "wrong password", "c2").await,
            Err(ImapError::Unauthenticated)
        ));
    }
    assert!(matches!(
        service.authenticate("alice", "wrong password", "c2").await,
        Err(ImapError::Unauthenticated)
    ));
    assert!(matches!(
        service.authenticate("alice", PASSWORD, "c3").await,
        Err(ImapError::BackOff { .. })
    ));
    // IMAP LOGIN (the MailStore) does not share it: each IMAP listener keeps its own back-off
    // (server::ListenerScope), so failures on one onion never show through another.
    assert!(service.login("alice", PASSWORD).await.is_ok());
    clock.advance(Duration::seconds(5));
    assert!(service.login("alice", PASSWORD).await.is_ok());
    assert_eq!(
        service.login("nobody", PASSWORD).await,
        Err(LoginError::Invalid)
    );

    // Plans.
    let premium = service
        .create_plan("premium", 10 << 30, 20, true, 100)
        .await
        .unwrap();
    assert!(matches!(
        service.create_plan("premium", 1, 1, false, 0).await,
        Err(ImapError::AlreadyExists(_))
    ));
    let changed = service
        .update_plan(
            &premium.plan_id,
            onionpost_imap::service::PlanChanges {
                identities_allowed: Some(25),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(changed.identities_allowed, 25);
    assert_eq!(changed.quota_bytes, 10 << 30);

    // Vouchers: mint, redeem, double redeem, expiry.
    let (_, codes) = service
        .mint_vouchers(&premium.plan_id, 365, 3, None)
        .await
        .unwrap();
    assert_eq!(codes.len(), 3);
    assert_ne!(codes[0], codes[1]);
    let redeemed = service.redeem_voucher(&id, &codes[0]).await.unwrap();
    assert_eq!(redeemed.record.plan.plan_id, premium.plan_id);
    assert_eq!(
        redeemed.record.paid_until_ms,
        alice.record.paid_until_ms + 365 * 86_400_000,
        "extends from paid-until when that is later than now"
    );
    assert!(matches!(
        service.redeem_voucher(&id, &codes[0]).await,
        Err(ImapError::FailedPrecondition(_))
    ));
    let bob = service.create_account("bob", PASSWORD, "").await.unwrap();
    assert!(
        matches!(
            service
                .redeem_voucher(&bob.record.account_id, &codes[0])
                .await,
            Err(ImapError::FailedPrecondition(_))
        ),
        "a code redeems once, whoever tries again"
    );
    assert!(matches!(
        service
            .redeem_voucher(&id, "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF")
            .await,
        Err(ImapError::NotFound("voucher"))
    ));
    let expires = clock.now() + Duration::days(1);
    let (_, expiring) = service
        .mint_vouchers(&premium.plan_id, 30, 1, Some(expires))
        .await
        .unwrap();
    clock.advance(Duration::days(2));
    assert!(matches!(
        service.redeem_voucher(&id, &expiring[0]).await,
        Err(ImapError::FailedPrecondition(message)) if message.contains("expired")
    ));
    // Lower case with spaces instead of dashes still redeems.
    let spaced = codes[1].to_lowercase().replace('-', " ");
    service
        .redeem_voucher(&bob.record.account_id, &spaced)
        .await
        .unwrap();

    // Pages and the state filter.
    let (first, token) = service.list_accounts(None, 1, "").await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(!token.is_empty());
    let (second, token) = service.list_accounts(None, 1, &token).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_ne!(first[0].record.account_id, second[0].record.account_id);
    assert!(token.is_empty(), "the last page has no next token");
    let (all, token) = service.list_accounts(None, 0, "").await.unwrap();
    assert_eq!((all.len(), token.as_str()), (2, ""));

    // Sign-up with a voucher: the account exists only if the voucher redeems, and starts on the
    // voucher's plan with the voucher's days (no free initial days).
    let now_ms = clock.now().timestamp_millis();
    let signed_up = service
        .create_account_with_voucher("erin", PASSWORD, &codes[2])
        .await
        .unwrap();
    assert_eq!(signed_up.record.plan.plan_id, premium.plan_id);
    assert_eq!(signed_up.record.paid_until_ms, now_ms + 365 * 86_400_000);
    for (login, code, why) in [
        ("frank", codes[2].as_str(), "a spent voucher"),
        (
            "frank",
            "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF",
            "an unknown voucher",
        ),
        ("frank", expiring[0].as_str(), "an expired voucher"),
        ("frank", "not a code", "a malformed code"),
    ] {
        assert!(
            service
                .create_account_with_voucher(login, PASSWORD, code)
                .await
                .is_err(),
            "{why} creates no account"
        );
        assert!(
            matches!(
                service.account_by_login(login).await,
                Err(ImapError::NotFound(_))
            ),
            "{why} leaves no account behind"
        );
    }
    assert!(
        matches!(
            service
                .create_account_with_voucher("erin", PASSWORD, &codes[2])
                .await,
            Err(ImapError::FailedPrecondition(_))
        ),
        "without a good voucher nobody learns that the login is taken"
    );
    let (_, fresh) = service
        .mint_vouchers(&premium.plan_id, 30, 1, None)
        .await
        .unwrap();
    assert!(matches!(
        service
            .create_account_with_voucher("erin", PASSWORD, &fresh[0])
            .await,
        Err(ImapError::AlreadyExists(_))
    ));
    service
        .create_account_with_voucher("frank", PASSWORD, &fresh[0])
        .await
        .expect("a voucher refused for a taken login is still good");

    // Suspend and resume; password change; delete.
    service.update_account(&id, None, Some(true)).await.unwrap();
    assert!(matches!(
        service.authenticate("alice", PASSWORD, "c5").await,
        Err(ImapError::PermissionDenied)
    ));
    let (suspended, _) = service
        .list_accounts(Some(AccountState::Suspended), 10, "")
        .await
        .unwrap();
    assert_eq!(suspended.len(), 1);
    service
        .update_account(&id, None, Some(false))
        .await
        .unwrap();
    service
        .set_password(&id, "another long password")
        .await
        .unwrap();
    assert!(service.authenticate("alice", PASSWORD, "c6").await.is_err());
    assert!(
        service
            .authenticate("alice", "another long password", "c6")
            .await
            .is_ok()
    );
    service
        .delete_account(&bob.record.account_id)
        .await
        .unwrap();
    assert!(matches!(
        service.account(&bob.record.account_id).await,
        Err(ImapError::NotFound("account"))
    ));
}

async fn states_and_identities(database: Database) {
    let (service, clock) = service(database).await;
    let account = service.create_account("carol", PASSWORD, "").await.unwrap();
    let id = account.record.account_id.clone();
    let small = service
        .create_plan("tiny", 1 << 20, 2, false, 0)
        .await
        .unwrap();
    service
        .update_account(&id, Some(&small.plan_id), None)
        .await
        .unwrap();

    service
        .add_identity("id-1", &id, &format!("carol@{}", onion('c')), "Carol")
        .await
        .unwrap();
    assert!(matches!(
        service
            .add_identity("id-1", &id, &format!("other@{}", onion('d')), "")
            .await,
        Err(ImapError::AlreadyExists(_))
    ));
    service
        .add_identity("id-2", &id, &format!("work@www.{}", onion('e')), "")
        .await
        .unwrap();
    assert!(matches!(
        service
            .add_identity("id-3", &id, &format!("x@{}", onion('f')), "")
            .await,
        Err(ImapError::FailedPrecondition(_))
    ));
    assert!(matches!(
        service.add_identity("id-4", &id, "x@example.com", "").await,
        Err(ImapError::InvalidArgument {
            field: "address",
            ..
        })
    ));
    // Through an identity's onion only its owner logs in. Dave's correct password through
    // Carol's onion fails exactly as a wrong password does, and counts in the back-off like
    // one, so Dave cannot tell his account shares this carrier with Carol's onion (issue 18).
    let dave = service.create_account("dave", PASSWORD, "").await.unwrap();
    assert!(
        service
            .authenticate_through(
                "carol",
                PASSWORD,
                "o1",
                Some("id-1"),
                Credentials::MailClient
            )
            .await
            .is_ok()
    );
    // On its own onion an identity's address stands for its owner's login (what the onion's
    // autoconfig document tells clients); nowhere else, and no other identity's address does.
    let carol_address = format!("Carol@{}", onion('c'));
    assert!(
        service
            .authenticate_through(
                &carol_address,
                PASSWORD,
                "o1",
                Some("id-1"),
                Credentials::MailClient
            )
            .await
            .is_ok()
    );
    for (login, through) in [
        (carol_address.as_str(), None),
        (carol_address.as_str(), Some("id-2")),
    ] {
        assert!(matches!(
            service
                .authenticate_through(login, PASSWORD, "o4", through, Credentials::MailClient)
                .await,
            Err(ImapError::Unauthenticated)
        ));
    }
    for _ in 0..4 {
        assert!(matches!(
            service
                .authenticate_through(
                    "dave",
                    PASSWORD,
                    "o2",
                    Some("id-1"),
                    Credentials::MailClient
                )
                .await,
            Err(ImapError::Unauthenticated)
        ));
    }
    // The failures count through that onion alone: there Dave's login is backed off, while
    // through another identity's onion, and on the carrier-wide listener, nothing changed (a
    // back-off that showed elsewhere would tell which onions share this carrier, issue 18).
    assert!(matches!(
        service
            .authenticate_through(
                "dave",
                PASSWORD,
                "o3",
                Some("id-1"),
                Credentials::MailClient
            )
            .await,
        Err(ImapError::BackOff { .. })
    ));
    assert!(matches!(
        service
            .authenticate_through(
                "dave",
                PASSWORD,
                "o3",
                Some("id-2"),
                Credentials::MailClient
            )
            .await,
        Err(ImapError::Unauthenticated)
    ));
    assert!(service.authenticate("dave", PASSWORD, "o3").await.is_ok());
    service
        .delete_account(&dave.record.account_id)
        .await
        .unwrap();

    let by_address = service
        .identity_by_address(&format!("work@{}", onion('e')))
        .await
        .unwrap();
    assert_eq!(by_address.record.identity_id, "id-2");
    let by_onion = service
        .identity_by_onion(&format!("mail.{}", onion('c')))
        .await
        .unwrap();
    assert_eq!(by_onion.record.identity_id, "id-1");
    assert_eq!(by_onion.account_state, AccountState::Active);
    assert_eq!(service.list_identities(&id).await.unwrap().len(), 2);
    assert!(matches!(
        service.delete_account(&id).await,
        Err(ImapError::FailedPrecondition(_))
    ));

    let inbox_message = message("state test", "<s1@x>", "hello");
    assert_eq!(
        service
            .deliver(delivery("id-1", inbox_message.clone()))
            .await
            .unwrap()
            .refusal,
        None
    );

    // Past paid-until: grace. Reading works, new mail is deferred.
    clock.advance(Duration::days(31));
    assert_eq!(
        service.account(&id).await.unwrap().state,
        AccountState::Grace
    );
    assert_eq!(
        service.identity("id-1").await.unwrap().account_state,
        AccountState::Grace
    );
    let deferred = service
        .deliver(delivery("id-1", message("later", "<s2@x>", "b")))
        .await
        .unwrap();
    assert_eq!(deferred.refusal, Some(Refusal::AccountUnavailable));
    let logged_in = service.login("carol", PASSWORD).await.unwrap();
    let snapshot = service
        .open_mailbox(&logged_in.account_id, "INBOX")
        .await
        .unwrap();
    assert_eq!(snapshot.messages.len(), 1);
    assert!(matches!(
        service
            .append(
                &id,
                "INBOX",
                &[],
                None,
                Bytes::from_static(b"Subject: x\r\n\r\ny")
            )
            .await,
        Err(MailStoreError::NotAccepting(_))
    ));

    // Past the grace period: expired. Mail refused, reading still allowed.
    clock.advance(Duration::days(30));
    assert_eq!(
        service.account(&id).await.unwrap().state,
        AccountState::Expired
    );
    let refused = service
        .deliver(delivery("id-1", message("later", "<s3@x>", "b")))
        .await
        .unwrap();
    assert_eq!(refused.refusal, Some(Refusal::AccountExpired));
    assert!(service.login("carol", PASSWORD).await.is_ok());
    let stats = service.stats().await.unwrap();
    assert!(
        stats
            .accounts_by_state
            .contains(&(AccountState::Expired, 1))
    );
    assert_eq!(stats.identities, 2);

    // A voucher brings it back: paid from now, not from the old date.
    let (_, codes) = service
        .mint_vouchers(&small.plan_id, 10, 1, None)
        .await
        .unwrap();
    let renewed = service.redeem_voucher(&id, &codes[0]).await.unwrap();
    assert_eq!(renewed.state, AccountState::Active);
    assert_eq!(
        renewed.record.paid_until_ms,
        clock.now_ms() + 10 * 86_400_000
    );

    // Suspended: no login, mail deferred.
    service.update_account(&id, None, Some(true)).await.unwrap();
    assert_eq!(
        service.login("carol", PASSWORD).await,
        Err(LoginError::Unavailable)
    );
    let deferred = service
        .deliver(delivery("id-1", message("later", "<s4@x>", "b")))
        .await
        .unwrap();
    assert_eq!(deferred.refusal, Some(Refusal::AccountUnavailable));
    service
        .update_account(&id, None, Some(false))
        .await
        .unwrap();

    // Removing the identities lets the account be deleted, with its mail.
    service.remove_identity("id-1").await.unwrap();
    service.remove_identity("id-2").await.unwrap();
    assert!(matches!(
        service.remove_identity("id-2").await,
        Err(ImapError::NotFound("identity"))
    ));
    let unknown = service
        .deliver(delivery("id-1", message("x", "<s5@x>", "b")))
        .await
        .unwrap();
    assert_eq!(unknown.refusal, Some(Refusal::UnknownIdentity));
    service.delete_account(&id).await.unwrap();
    assert_eq!(service.stats().await.unwrap().stored_bytes, 0);
}

async fn mail_store(database: Database) {
    let (service, _clock) = service(database).await;
    let store: Arc<dyn MailStore> = service.mail_store();
    let account = service.create_account("dave", PASSWORD, "").await.unwrap();
    let other = service.create_account("erin", PASSWORD, "").await.unwrap();
    let id = account.record.account_id.as_str();

    let names: Vec<String> = store
        .list_mailboxes(id)
        .await
        .unwrap()
        .into_iter()
        .map(|mailbox| mailbox.name)
        .collect();
    assert_eq!(
        names,
        [
            "INBOX",
            "Archive",
            "Drafts",
            "Junk",
            "Quarantine",
            "Requests",
            "Sent",
            "Trash"
        ]
    );
    let inbox = store.status(id, "inbox").await.unwrap();
    assert_ne!(inbox.uid_validity, 0);
    assert_eq!((inbox.messages, inbox.uid_next), (0, 1));

    let mut watch = store.watch(id);
    let first = Bytes::from_static(b"Subject: first\r\n\r\nbody one\r\n");
    let (validity, uid) = store
        .append(id, "INBOX", &["\\seen".to_owned()], None, first.clone())
        .await
        .unwrap();
    assert_eq!((validity, uid), (inbox.uid_validity, 1));
    assert_eq!(watch.try_recv().unwrap(), inbox.id);
    let (_, second_uid) = store
        .append(
            id,
            "INBOX",
            &[],
            None,
            Bytes::from_static(b"Subject: second\r\n\r\ntwo\r\n"),
        )
        .await
        .unwrap();
    assert_eq!(second_uid, 2);

    let snapshot = store.open_mailbox(id, "INBOX").await.unwrap();
    assert_eq!(snapshot.messages.len(), 2);
    assert_eq!(snapshot.messages[0].flags, vec!["\\Seen".to_owned()]);
    assert_eq!(snapshot.messages[0].size, first.len() as u64);
    assert_eq!(snapshot.status.unseen, 1);
    let full = store
        .fetch(id, inbox.id, &[1, 2, 99], Part::Full)
        .await
        .unwrap();
    assert_eq!(full.len(), 2);
    assert_eq!(full[0], (1, first.clone()));
    let header = store.fetch(id, inbox.id, &[1], Part::Header).await.unwrap();
    assert_eq!(&header[0].1[..], b"Subject: first\r\n\r\n");

    // Another account sees none of it.
    let other_id = other.record.account_id.as_str();
    assert!(
        store
            .fetch(other_id, inbox.id, &[1], Part::Full)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.mailbox_version(other_id, inbox.id).await,
        Err(MailStoreError::NoSuchMailbox)
    );
    assert!(store.expunge(other_id, inbox.id, None).await.is_err());

    // Flags and versions.
    let version = store.mailbox_version(id, inbox.id).await.unwrap();
    let flagged = store
        .store_flags(
            id,
            inbox.id,
            &[2],
            FlagOperation::Add,
            &["\\Flagged".to_owned(), "$Work".to_owned()],
        )
        .await
        .unwrap();
    assert_eq!(
        flagged,
        vec![(2, vec!["\\Flagged".to_owned(), "$Work".to_owned()])]
    );
    assert!(store.mailbox_version(id, inbox.id).await.unwrap() > version);
    let removed = store
        .store_flags(
            id,
            inbox.id,
            &[2],
            FlagOperation::Remove,
            &["$work".to_owned()],
        )
        .await
        .unwrap();
    assert_eq!(removed[0].1, vec!["\\Flagged".to_owned()]);

    // COPY shares the body; the quota counts it again.
    let quota_before = store.quota(id).await.unwrap();
    let stored_before = service.stats().await.unwrap().stored_bytes;
    store.create_mailbox(id, "Work/2026").await.unwrap();
    assert_eq!(
        store.create_mailbox(id, "Work").await,
        Err(MailStoreError::MailboxExists)
    );
    let copied = store
        .copy(id, inbox.id, &[1, 2], "Work/2026")
        .await
        .unwrap();
    assert_eq!(copied.uids, vec![(1, 1), (2, 2)]);
    let work = store.status(id, "Work/2026").await.unwrap();
    assert_eq!(copied.uid_validity, work.uid_validity);
    assert_eq!(work.messages, 2);
    let quota_after = store.quota(id).await.unwrap();
    assert_eq!(quota_after.used_bytes, quota_before.used_bytes * 2);
    assert_eq!(quota_after.messages, 4);
    assert_eq!(
        service.stats().await.unwrap().stored_bytes,
        stored_before,
        "a copy shares the stored body"
    );
    assert_eq!(
        store.fetch(id, work.id, &[1], Part::Full).await.unwrap()[0].1,
        first
    );

    // MOVE: out of INBOX into Archive, new UIDs there.
    let moved = store
        .move_messages(id, inbox.id, &[2], "Archive")
        .await
        .unwrap();
    assert_eq!(moved.uids, vec![(2, 1)]);
    assert_eq!(store.status(id, "INBOX").await.unwrap().messages, 1);
    assert_eq!(store.quota(id).await.unwrap().messages, 4);

    // EXPUNGE only what is \Deleted (and named, for UID EXPUNGE).
    store
        .store_flags(
            id,
            work.id,
            &[1, 2],
            FlagOperation::Add,
            &["\\Deleted".to_owned()],
        )
        .await
        .unwrap();
    assert_eq!(
        store.expunge(id, work.id, Some(&[2])).await.unwrap(),
        vec![2]
    );
    assert_eq!(store.expunge(id, work.id, None).await.unwrap(), vec![1]);
    assert_eq!(store.quota(id).await.unwrap().messages, 2);
    assert_eq!(store.status(id, "Work/2026").await.unwrap().uid_next, 3);
    // The bodies are still there (INBOX and Archive hold them).
    assert_eq!(
        store.fetch(id, inbox.id, &[1], Part::Full).await.unwrap()[0].1,
        first
    );

    // RENAME of a hierarchy, and of INBOX.
    store.rename_mailbox(id, "Work", "Jobs").await.unwrap();
    assert!(store.status(id, "Jobs/2026").await.is_ok());
    assert_eq!(
        store.status(id, "Work/2026").await,
        Err(MailStoreError::NoSuchMailbox)
    );
    assert_eq!(
        store.rename_mailbox(id, "Jobs", "Sent").await,
        Err(MailStoreError::MailboxExists)
    );
    store
        .rename_mailbox(id, "INBOX", "Old inbox")
        .await
        .unwrap();
    assert_eq!(store.status(id, "INBOX").await.unwrap().messages, 0);
    let old = store.open_mailbox(id, "Old inbox").await.unwrap();
    assert_eq!(old.messages.len(), 1);
    assert_eq!(
        store
            .fetch(id, old.status.id, &[1], Part::Full)
            .await
            .unwrap()[0]
            .1,
        first
    );
    assert!(matches!(
        store.delete_mailbox(id, "INBOX").await,
        Err(MailStoreError::Cannot(_))
    ));
    store.delete_mailbox(id, "Old inbox").await.unwrap();
    assert_eq!(store.quota(id).await.unwrap().messages, 1);
    store.set_subscribed(id, "Jobs", true).await.unwrap();
    let jobs = store
        .list_mailboxes(id)
        .await
        .unwrap()
        .into_iter()
        .find(|mailbox| mailbox.name == "Jobs")
        .unwrap();
    assert!(jobs.subscribed);

    // Quota refusal.
    let tiny = service.create_plan("tiny", 200, 1, false, 0).await.unwrap();
    service
        .update_account(id, Some(&tiny.plan_id), None)
        .await
        .unwrap();
    let big = Bytes::from(vec![b'x'; 300]);
    assert!(matches!(
        store.append(id, "INBOX", &[], None, big).await,
        Err(MailStoreError::OverQuota {
            limit_bytes: 200,
            ..
        })
    ));
    assert_eq!(
        store.append(id, "Nope", &[], None, first.clone()).await,
        Err(MailStoreError::NoSuchMailbox)
    );
}

async fn deliveries(database: Database) {
    let (service, _clock) = service(database).await;
    let account = service.create_account("frank", PASSWORD, "").await.unwrap();
    let id = account.record.account_id.clone();
    service
        .add_identity("fid", &id, &format!("frank@{}", onion('f')), "")
        .await
        .unwrap();
    let store = service.mail_store();
    let mut watch = store.watch(&id);

    let forged = format!(
        "Onionpost-Verification: verified; signer=FORGED\r\n{}",
        String::from_utf8(message("deliver me", "<d1@x>", "the body")).unwrap()
    );
    let first = service
        .deliver(delivery("fid", forged.clone().into_bytes()))
        .await
        .unwrap();
    assert_eq!(first.refusal, None);
    assert!(!first.duplicate);
    assert_eq!(first.uid, 1);
    let inbox = store.status(&id, "INBOX").await.unwrap();
    assert_eq!(watch.try_recv().unwrap(), inbox.id);
    let again = service
        .deliver(delivery("fid", forged.into_bytes()))
        .await
        .unwrap();
    assert!(again.duplicate, "the same message twice is stored once");
    assert_eq!((again.uid_validity, again.uid), (first.uid_validity, 1));
    assert_eq!(store.status(&id, "INBOX").await.unwrap().messages, 1);

    let stored = store.fetch(&id, inbox.id, &[1], Part::Full).await.unwrap();
    let text = String::from_utf8(stored[0].1.to_vec()).unwrap();
    assert!(text.starts_with("Onionpost-Verification: verified; signer=ABCDEF0123\r\n"));
    assert!(!text.contains("FORGED"), "a sender's header is dropped");

    // Same Message-ID, different body: a different message.
    let other_body = service
        .deliver(delivery("fid", message("deliver me", "<d1@x>", "changed")))
        .await
        .unwrap();
    assert!(!other_body.duplicate);
    assert_eq!(other_body.uid, 2);

    // Sent copy with flags.
    let mut sent = delivery("fid", message("sent", "<d2@x>", "mine"));
    sent.mailbox = DeliveryMailbox::Sent;
    sent.verification = Verification::Local;
    sent.verification_detail = String::new();
    sent.flags = vec!["\\Seen".to_owned()];
    let result = service.deliver(sent).await.unwrap();
    let snapshot = store.open_mailbox(&id, "Sent").await.unwrap();
    assert_eq!(snapshot.status.uid_validity, result.uid_validity);
    assert_eq!(snapshot.messages[0].flags, vec!["\\Seen".to_owned()]);

    // Over quota: refused in the response.
    let tiny = service
        .create_plan("tiny", 1000, 1, false, 0)
        .await
        .unwrap();
    service
        .update_account(&id, Some(&tiny.plan_id), None)
        .await
        .unwrap();
    let huge = message("huge", "<d3@x>", &"y".repeat(2000));
    assert_eq!(
        service
            .deliver(delivery("fid", huge))
            .await
            .unwrap()
            .refusal,
        Some(Refusal::OverQuota)
    );
    assert_eq!(
        service
            .deliver(delivery("nobody", message("x", "<d4@x>", "b")))
            .await
            .unwrap()
            .refusal,
        Some(Refusal::UnknownIdentity)
    );
    let stats = service.stats().await.unwrap();
    assert_eq!(stats.messages_delivered_today, 3);
    assert!(stats.stored_bytes > 0);
}

trait NowMs {
    fn now_ms(&self) -> i64;
}

impl NowMs for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now().timestamp_millis()
    }
}

#[tokio::test]
async fn accounts_plans_and_vouchers_on_both_backends() {
    each_backend("imap_accounts", MIGRATIONS, accounts_plans_and_vouchers).await;
    each_backend("imap_app_passwords", MIGRATIONS, app_passwords).await;
}

#[tokio::test]
async fn states_and_identities_on_both_backends() {
    each_backend("imap_states", MIGRATIONS, states_and_identities).await;
}

#[tokio::test]
async fn mail_store_on_both_backends() {
    each_backend("imap_mail", MIGRATIONS, mail_store).await;
}

#[tokio::test]
async fn deliveries_on_both_backends() {
    each_backend("imap_deliver", MIGRATIONS, deliveries).await;
}
