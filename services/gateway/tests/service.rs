//! The gateway's rules in memory: who may send out (plan, identity, daily cap), what SendOutbound
//! refuses before any connection, and the MX's RCPT answers (one reply for unknown, revoked,
//! disabled and foreign addresses), against a fake imap/keys backend and a real SQLite store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use onionpost_gateway::backend::Backend;
use onionpost_gateway::dkim::Signer;
use onionpost_gateway::inbound::{self, Inbound, RECIPIENT_REJECTED};
use onionpost_gateway::outbound::{Outbound, Route};
use onionpost_gateway::store::{self, GatewayStore};
use onionpost_gateway::{GatewayError, GatewayService};
use onionpost_proto::gateway::v1 as pb;
use onionpost_proto::imap::v1::{Account, AccountState, DeliverRequest, DeliverResponse, Identity};
use onionpost_proto::keys::v1::KeyCustody;
use onionpost_runtime::Database;
use onionpost_runtime::config::DmarcPolicy;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

const DOMAIN: &str = "gw.example";

#[derive(Default)]
struct Fake {
    accounts: Mutex<HashMap<String, Account>>,
    identities: Mutex<HashMap<String, Identity>>,
    daily_limit: Mutex<u32>,
    delivered: Mutex<Vec<DeliverRequest>>,
}

#[async_trait::async_trait]
impl Backend for Fake {
    async fn account(&self, account_id: &str) -> Result<Account, GatewayError> {
        self.accounts
            .lock()
            .unwrap()
            .get(account_id)
            .cloned()
            .ok_or(GatewayError::NotFound("account"))
    }

    async fn plan_daily_limit(&self, _plan_id: &str) -> Result<u32, GatewayError> {
        Ok(*self.daily_limit.lock().unwrap())
    }

    async fn identity(&self, identity_id: &str) -> Result<Identity, GatewayError> {
        self.identities
            .lock()
            .unwrap()
            .get(identity_id)
            .cloned()
            .ok_or(GatewayError::NotFound("identity"))
    }

    async fn custody(&self, _identity_id: &str) -> Result<KeyCustody, GatewayError> {
        Ok(KeyCustody::Carrier)
    }

    async fn encrypt_to(&self, _address: &str, _message: &[u8]) -> Result<Vec<u8>, GatewayError> {
        Err(GatewayError::Unavailable("not in this test".into()))
    }

    async fn deliver(&self, request: DeliverRequest) -> Result<DeliverResponse, GatewayError> {
        self.delivered.lock().unwrap().push(request);
        Ok(DeliverResponse::default())
    }
}

struct Setup {
    service: GatewayService,
    store: Arc<dyn GatewayStore>,
    fake: Arc<Fake>,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let database = Database::open_sqlite(&dir.path().join("gateway.sqlite3"), store::MIGRATIONS)
        .await
        .unwrap();
    let secret =
        onionpost_runtime::seal::CarrierSecret::from_text("0123456789abcdef0123456789abcdef")
            .unwrap();
    let store = store::for_database(database, &secret);
    let fake = Arc::new(Fake::default());
    fake.accounts.lock().unwrap().insert(
        "acct-a".into(),
        Account {
            account_id: "acct-a".into(),
            plan_id: "plan-clearnet".into(),
            state: AccountState::Active as i32,
            gateway_allowed: true,
            ..Default::default()
        },
    );
    fake.accounts.lock().unwrap().insert(
        "acct-b".into(),
        Account {
            account_id: "acct-b".into(),
            plan_id: "plan-standard".into(),
            state: AccountState::Active as i32,
            gateway_allowed: false,
            ..Default::default()
        },
    );
    for (identity, account, allowed) in [("id-a", "acct-a", true), ("id-b", "acct-b", false)] {
        fake.identities.lock().unwrap().insert(
            identity.into(),
            Identity {
                identity_id: identity.into(),
                account_id: account.into(),
                address: format!("{identity}@{}.onion", "a".repeat(56)),
                gateway_allowed: allowed,
                ..Default::default()
            },
        );
    }
    let sealer = secret.sealer(onionpost_gateway::dkim::SEAL_PURPOSE);
    let signer = Signer::load(None, dir.path(), &sealer, DOMAIN, "sel").unwrap();
    // No DNS server answers here; nothing in these tests looks anything up.
    let resolver = Arc::new(
        onionpost_gateway::dns::authenticator(Some("127.0.0.1:9".parse().unwrap())).unwrap(),
    );
    let outbound = Outbound::new(resolver, Route::Mx { port: 25 }, DOMAIN).unwrap();
    let service = GatewayService::new(
        store.clone(),
        fake.clone(),
        DOMAIN,
        2,
        Arc::new(signer),
        outbound,
    );
    Setup {
        service,
        store,
        fake,
        _dir: dir,
    }
}

fn check(account: &str, identity: &str, recipients: u32) -> pb::CheckOutboundRequest {
    pb::CheckOutboundRequest {
        account_id: account.into(),
        sender_identity_id: identity.into(),
        recipients,
        reserve: false,
    }
}

#[tokio::test]
async fn only_plans_with_the_gateway_send_out_within_the_daily_cap() {
    let setup = setup().await;
    let service = &setup.service;

    let allowed = service
        .check_outbound(check("acct-a", "id-a", 1))
        .await
        .unwrap();
    assert!(allowed.allowed, "{allowed:?}");
    assert_eq!(allowed.remaining_today, 2, "the gateway default applies");

    let no_plan = service
        .check_outbound(check("acct-b", "id-b", 1))
        .await
        .unwrap();
    assert!(!no_plan.allowed);
    assert_eq!(
        no_plan.reason,
        "this account's plan does not include clearnet mail"
    );

    let not_own = service
        .check_outbound(check("acct-a", "id-b", 1))
        .await
        .unwrap();
    assert!(!not_own.allowed, "another account's identity");

    let unknown = service
        .check_outbound(check("acct-x", "id-a", 1))
        .await
        .unwrap();
    assert!(!unknown.allowed);

    // The cap counts today's sends, and the recipients of the message at hand.
    let too_many = service
        .check_outbound(check("acct-a", "id-a", 3))
        .await
        .unwrap();
    assert!(!too_many.allowed);
    assert_eq!(
        too_many.reason,
        "daily limit of 2 clearnet recipients reached"
    );
    // At acceptance the recipients are reserved: the check and the count are one step.
    let reserved = service
        .check_outbound(pb::CheckOutboundRequest {
            reserve: true,
            ..check("acct-a", "id-a", 2)
        })
        .await
        .unwrap();
    assert!(reserved.allowed, "{reserved:?}");
    assert_eq!(reserved.remaining_today, 0);
    let over = service
        .check_outbound(pb::CheckOutboundRequest {
            reserve: true,
            ..check("acct-a", "id-a", 1)
        })
        .await
        .unwrap();
    assert!(!over.allowed, "a reservation past the cap is refused");
    // A message that could not be queued gives its reservation back.
    service
        .release_outbound(pb::ReleaseOutboundRequest {
            account_id: "acct-a".into(),
            recipients: 1,
        })
        .await
        .unwrap();
    assert_eq!(
        service
            .check_outbound(check("acct-a", "id-a", 1))
            .await
            .unwrap()
            .remaining_today,
        1
    );
    service
        .check_outbound(pb::CheckOutboundRequest {
            reserve: true,
            ..check("acct-a", "id-a", 1)
        })
        .await
        .unwrap();
    let spent = service
        .check_outbound(check("acct-a", "id-a", 1))
        .await
        .unwrap();
    assert!(!spent.allowed);
    assert_eq!(spent.remaining_today, 0);

    // A plan's own limit wins over the gateway default.
    *setup.fake.daily_limit.lock().unwrap() = 10;
    let plan_limit = service
        .check_outbound(check("acct-a", "id-a", 1))
        .await
        .unwrap();
    assert!(plan_limit.allowed);
    assert_eq!(plan_limit.remaining_today, 8);
}

#[tokio::test]
async fn send_outbound_refuses_onions_and_senders_without_the_gateway() {
    let setup = setup().await;
    let service = &setup.service;
    let request = |account: &str, identity: &str, recipient: String| pb::SendOutboundRequest {
        queue_id: "q1".into(),
        account_id: account.into(),
        sender_identity_id: identity.into(),
        recipients: vec![recipient],
        message: b"From: a@b\r\n\r\nx\r\n".to_vec(),
        envelope_id: String::new(),
    };
    let onion = format!("carol@{}.onion", "c".repeat(56));
    let error = service
        .send_outbound(request("acct-a", "id-a", onion))
        .await
        .unwrap_err();
    assert!(matches!(error, GatewayError::InvalidArgument(_)), "{error}");

    let refused = service
        .send_outbound(request("acct-b", "id-b", "david@example.test".into()))
        .await
        .unwrap();
    let result = &refused.recipients[0];
    assert_eq!(result.outcome, pb::Outcome::PermanentFailure as i32);
    assert_eq!(result.reply.as_ref().unwrap().code, 550);
    assert!(result.alias_address.is_empty());
    assert_eq!(
        setup.store.live_aliases().await.unwrap(),
        0,
        "no alias for a refused sender"
    );

    let bad = service
        .send_outbound(request("acct-a", "id-a", "not an address".into()))
        .await
        .unwrap();
    assert_eq!(
        bad.recipients[0].outcome,
        pb::Outcome::PermanentFailure as i32
    );
}

/// The gateway domain's MX over the setup's service (1 MiB messages, 60 an hour per alias).
fn mx(setup: &Setup) -> Arc<Inbound> {
    // No DNS server answers here; nothing in these tests looks anything up.
    let resolver = Arc::new(
        onionpost_gateway::dns::authenticator(Some("127.0.0.1:9".parse().unwrap())).unwrap(),
    );
    Arc::new(Inbound::new(
        setup.service.clone(),
        resolver,
        DmarcPolicy::Follow,
        1024 * 1024,
        60,
    ))
}

async fn rcpt_replies(inbound: Arc<Inbound>, recipients: &[String]) -> Vec<String> {
    let (client, server) = tokio::io::duplex(1 << 16);
    let session = tokio::spawn(inbound::run(inbound, server, "127.0.0.3".parse().unwrap()));
    let (read, mut write) = tokio::io::split(client);
    let mut reader = BufReader::new(read);
    let mut replies = Vec::new();
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    assert_eq!(line, format!("220 {DOMAIN} ESMTP\r\n"));
    write.write_all(b"EHLO mx.example.test\r\n").await.unwrap();
    loop {
        line.clear();
        reader.read_line(&mut line).await.unwrap();
        if line.as_bytes().get(3) == Some(&b' ') {
            break;
        }
    }
    write
        .write_all(b"MAIL FROM:<d@example.test>\r\n")
        .await
        .unwrap();
    line.clear();
    reader.read_line(&mut line).await.unwrap();
    assert_eq!(line, "250 2.1.0 Sender OK\r\n");
    for recipient in recipients {
        write
            .write_all(format!("RCPT TO:<{recipient}>\r\n").as_bytes())
            .await
            .unwrap();
        line.clear();
        reader.read_line(&mut line).await.unwrap();
        replies.push(line.trim_end().to_owned());
    }
    write.write_all(b"QUIT\r\n").await.unwrap();
    line.clear();
    reader.read_line(&mut line).await.unwrap();
    assert_eq!(line, "221 2.0.0 Bye\r\n");
    session.await.unwrap();
    replies
}

#[tokio::test]
async fn the_mx_accepts_live_aliases_only_and_refuses_all_else_alike() {
    let setup = setup().await;
    let live = setup
        .store
        .alias_for(
            "id-a",
            "acct-a",
            "d@example.test",
            &onionpost_gateway::alias::new_local_part(),
            1,
        )
        .await
        .unwrap();
    let revoked = setup
        .store
        .alias_for(
            "id-a",
            "acct-a",
            "e@example.test",
            &onionpost_gateway::alias::new_local_part(),
            1,
        )
        .await
        .unwrap();
    setup
        .store
        .revoke_alias(&revoked.local_part, 2)
        .await
        .unwrap();
    let disabled = setup
        .store
        .alias_for(
            "id-b",
            "acct-b",
            "d@example.test",
            &onionpost_gateway::alias::new_local_part(),
            1,
        )
        .await
        .unwrap();
    let inbound = mx(&setup);
    let replies = rcpt_replies(
        inbound,
        &[
            format!("{}@{DOMAIN}", live.local_part),
            format!("{}@{DOMAIN}", revoked.local_part),
            format!("{}@{DOMAIN}", onionpost_gateway::alias::new_local_part()),
            format!("{}@{DOMAIN}", disabled.local_part),
            format!("{}@elsewhere.example", live.local_part),
            format!("postmaster@{DOMAIN}"),
        ],
    )
    .await;
    assert_eq!(replies[0], "250 2.1.5 Recipient OK");
    for refusal in &replies[1..] {
        assert_eq!(refusal, RECIPIENT_REJECTED);
    }
    let stats = setup.service.stats().await.unwrap();
    assert_eq!(stats.inbound_refused_today, 5);
    assert_eq!(stats.live_aliases, 2);
}

/// One DATA phase on the MX to a live alias: the reply to the final dot, then the reply to a
/// NOOP sent after it (the session must still be in step).
async fn data_replies(inbound: Arc<Inbound>, recipient: &str, text: &[u8]) -> (String, String) {
    let (client, server) = tokio::io::duplex(1 << 16);
    let session = tokio::spawn(inbound::run(inbound, server, "127.0.0.3".parse().unwrap()));
    let (read, mut write) = tokio::io::split(client);
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    write
        .write_all(
            format!("HELO mx.example.test\r\nMAIL FROM:<d@example.test>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    for expected in [
        format!("250 {DOMAIN}\r\n"),
        "250 2.1.0 Sender OK\r\n".to_owned(),
        "250 2.1.5 Recipient OK\r\n".to_owned(),
        "354 Start mail input; end with <CRLF>.<CRLF>\r\n".to_owned(),
    ] {
        line.clear();
        reader.read_line(&mut line).await.unwrap();
        assert_eq!(line, expected);
    }
    write.write_all(text).await.unwrap();
    write.write_all(b".\r\nNOOP\r\nQUIT\r\n").await.unwrap();
    let mut replies = Vec::new();
    for _ in 0..3 {
        line.clear();
        reader.read_line(&mut line).await.unwrap();
        replies.push(line.trim_end().to_owned());
    }
    assert_eq!(replies[2], "221 2.0.0 Bye");
    session.await.unwrap();
    (replies[0].clone(), replies[1].clone())
}

/// The MX refuses a text line over 998 characters with smtp-in's reply (one DATA reader for
/// both), and a bare CR or LF (SMTP smuggling, RFC 5321 §2.3.8); nothing is delivered.
#[tokio::test]
async fn the_mx_refuses_an_over_long_line_and_bare_line_endings_as_smtp_in_does() {
    let setup = setup().await;
    let live = setup
        .store
        .alias_for(
            "id-a",
            "acct-a",
            "d@example.test",
            &onionpost_gateway::alias::new_local_part(),
            1,
        )
        .await
        .unwrap();
    let inbound = mx(&setup);
    let recipient = format!("{}@{DOMAIN}", live.local_part);
    let mut long = b"From: d@example.test\r\nSubject: long\r\n\r\n".to_vec();
    long.extend_from_slice(&[b'b'; 999]);
    long.extend_from_slice(b"\r\n");
    let (reply, after) = data_replies(inbound.clone(), &recipient, &long).await;
    assert_eq!(
        reply,
        "550 5.6.0 Message has a line longer than 998 characters; send it encoded (quoted-printable or base64, RFC 5322 2.1.1)"
    );
    assert_eq!(after, "250 2.0.0 OK");

    let smuggled = b"From: d@example.test\r\n\r\nhello\n.\r\nMAIL FROM:<forged@example.test>\r\n";
    let (reply, after) = data_replies(inbound.clone(), &recipient, smuggled).await;
    assert_eq!(reply, onionpost_smtp_server::BARE_LINE_ENDING);
    assert_eq!(
        after, "250 2.0.0 OK",
        "the smuggled MAIL stayed inside the data"
    );
    let bare_cr = b"From: d@example.test\r\n\r\nhello\r.\rworld\r\n";
    let (reply, _) = data_replies(inbound, &recipient, bare_cr).await;
    assert_eq!(reply, onionpost_smtp_server::BARE_LINE_ENDING);
    assert!(setup.fake.delivered.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_alias_is_revoked_for_its_own_account_only() {
    let setup = setup().await;
    let alias = setup
        .store
        .alias_for(
            "id-a",
            "acct-a",
            "f@example.test",
            &onionpost_gateway::alias::new_local_part(),
            1,
        )
        .await
        .unwrap();
    let revoke = |address: String, account: &str| {
        setup.service.revoke_alias(pb::RevokeAliasRequest {
            address,
            account_id: account.to_owned(),
        })
    };
    // Another account's alias reads like one that does not exist, and stays live.
    let theirs = revoke(alias.local_part.clone(), "acct-b")
        .await
        .unwrap_err();
    let none = revoke("nosuchalias".to_owned(), "acct-b")
        .await
        .unwrap_err();
    assert_eq!(theirs.to_string(), none.to_string());
    assert!(
        setup
            .store
            .alias(&alias.local_part)
            .await
            .unwrap()
            .unwrap()
            .revoked_at_ms
            .is_none()
    );
    let revoked = revoke(format!("{}@{DOMAIN}", alias.local_part), "acct-a")
        .await
        .unwrap();
    assert!(revoked.revoked_at.is_some());
}
