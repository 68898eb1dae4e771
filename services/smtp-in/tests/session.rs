//! The SMTP engine in memory: one line per command and the reply expected, against fake
//! imap/keys/queue backends.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use onionpost_proto::address::{OnionHost, examples};
use onionpost_proto::imap::v1::{
    Account, AccountState, AuthenticateResponse, DeliverRequest, DeliverResponse, Identity,
    Mailbox, Refusal, SenderVerification,
};
use onionpost_proto::keys::v1::{
    DecryptAndVerifyResponse, KeyCustody, RecipientKey, RecipientKeyStatus, SignAndEncryptRequest,
    SignatureStatus,
};
use onionpost_proto::queue::v1::{CheckCarryResponse, EnqueueRequest, Origin};
use onionpost_runtime::config::PlaintextPolicy;
use onionpost_smtp_in::backend::Correspondence;
use onionpost_smtp_in::session::{
    AUTH_INVALID, BAD_ONION_ADDRESS, ETRN_REPLY, LINE_TOO_LONG, PLAINTEXT_REFUSED,
    RECIPIENT_REJECTED,
};
use onionpost_smtp_in::{Backend, Limits, Mode, Policy, Session, SmtpInError, Stats};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};

// Real v3 onions (keys of 32 equal bytes), since recipients' checksums are verified at RCPT.
const ALICE_ONION: &str = "mfqwcylbmfqwcylbmfqwcylbmfqwcylbmfqwcylbmfqwcylbmfqwbfad.onion";
const BOB_ONION: &str = "mjrgeytcmjrgeytcmjrgeytcmjrgeytcmjrgeytcmjrgeytcmjrk3xyd.onion";
const CAROL_ONION: &str = "mnrwgy3dmnrwgy3dmnrwgy3dmnrwgy3dmnrwgy3dmnrwgy3dmnrvkzqd.onion";
const ALICE_ALT_ONION: &str = "ifaucqkbifaucqkbifaucqkbifaucqkbifaucqkbifaucqkbifa2mryd.onion";

fn alice() -> String {
    format!("alice@{ALICE_ONION}")
}
fn alice_alt() -> String {
    format!("alt@{ALICE_ALT_ONION}")
}
fn bob() -> String {
    format!("bob@{BOB_ONION}")
}
fn carol() -> String {
    format!("carol@{CAROL_ONION}")
}

fn identity(id: &str, address: &str, onion: &str, state: AccountState) -> Identity {
    Identity {
        identity_id: id.to_owned(),
        account_id: format!("acct-{id}"),
        address: address.to_owned(),
        onion: onion.to_owned(),
        account_state: state as i32,
        ..Default::default()
    }
}

#[derive(Default)]
struct Fake {
    identities: Mutex<HashMap<String, Identity>>,
    keys: Mutex<HashSet<String>>,
    /// Recipients whose key is revoked.
    revoked: Mutex<HashSet<String>>,
    /// (recipient, the carrier onion its agreement named).
    carried: Mutex<HashSet<(String, String)>>,
    delivered: Mutex<Vec<DeliverRequest>>,
    enqueued: Mutex<Vec<EnqueueRequest>>,
    encrypted_for: Mutex<Vec<SignAndEncryptRequest>>,
    flushed: Mutex<Vec<String>>,
    /// The back-off key of every Authenticate call.
    connection_keys: Mutex<Vec<String>>,
    /// Flush never returns (mail held behind a slow store).
    flush_hangs: Mutex<bool>,
    learned: Mutex<Vec<(String, String, String)>>,
    refusal: Mutex<Refusal>,
    /// The store already holds each delivered message (a copy through another carrier).
    duplicate: Mutex<bool>,
    client_custody: Mutex<HashSet<String>>,
    /// Clearnet recipients the gateway allows per day; None: no gateway.
    gateway_allows: Mutex<Option<u32>>,
    /// Clearnet recipients reserved at acceptance today, less those given back.
    gateway_reserved: Mutex<u32>,
    /// The queue refuses carried mail: a recipient's agreed caps are reached.
    queue_full: Mutex<bool>,
    /// Carry statements handed to the queue: (statement, the onion it arrived on).
    statements: Mutex<Vec<(Vec<u8>, String)>>,
    /// (identity id, address): the address corresponds with the identity (no stamp asked).
    correspondents: Mutex<HashSet<(String, String)>>,
    /// (identity id, address): the identity refused the address's contact request.
    blocked: Mutex<HashSet<(String, String)>>,
    /// Senders not in `correspondents` are strangers; when false (the default, for the tests
    /// of everything but stamps and requests), every sender corresponds.
    unknown_is_stranger: Mutex<bool>,
}

fn encrypted(inner: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "From: {}\r\nAutocrypt: addr={}; keydata=AAAA\r\nSubject: ...\r\nContent-Type: multipart/encrypted;\r\n protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n",
        carol(),
        carol()
    )
    .into_bytes();
    out.extend_from_slice(inner);
    out
}

#[async_trait::async_trait]
impl Backend for Fake {
    async fn identity(&self, identity_id: &str) -> Result<Identity, SmtpInError> {
        self.identities
            .lock()
            .unwrap()
            .get(identity_id)
            .cloned()
            .ok_or(SmtpInError::NotFound)
    }

    async fn authenticate(
        &self,
        login: &str,
        password: &str,
        connection_key: &str,
        _onion_identity: Option<&str>,
    ) -> Result<AuthenticateResponse, SmtpInError> {
        assert!(!connection_key.is_empty());
        self.connection_keys
            .lock()
            .unwrap()
            .push(connection_key.to_owned());
        if login != "alice" || password != "secret pass" {
            return Err(SmtpInError::AuthRefused);
        }
        Ok(AuthenticateResponse {
            account: Some(Account {
                account_id: "acct-alice".to_owned(),
                ..Default::default()
            }),
            identities: vec![
                identity("id-alice", &alice(), ALICE_ONION, AccountState::Active),
                identity(
                    "id-alt",
                    &alice_alt(),
                    ALICE_ALT_ONION,
                    AccountState::Active,
                ),
            ],
        })
    }

    async fn deliver(&self, request: DeliverRequest) -> Result<DeliverResponse, SmtpInError> {
        self.delivered.lock().unwrap().push(request);
        Ok(DeliverResponse {
            refusal: *self.refusal.lock().unwrap() as i32,
            duplicate: *self.duplicate.lock().unwrap(),
            ..Default::default()
        })
    }

    async fn resolve_keys(
        &self,
        _sender: &str,
        recipients: &[String],
    ) -> Result<Vec<RecipientKey>, SmtpInError> {
        let keys = self.keys.lock().unwrap();
        let revoked = self.revoked.lock().unwrap();
        Ok(recipients
            .iter()
            .map(|address| RecipientKey {
                address: address.clone(),
                status: if revoked.contains(address) {
                    RecipientKeyStatus::Revoked as i32
                } else if keys.contains(address) {
                    RecipientKeyStatus::Fetched as i32
                } else {
                    RecipientKeyStatus::Unreachable as i32
                },
                ..Default::default()
            })
            .collect())
    }

    async fn sign_and_encrypt(
        &self,
        request: SignAndEncryptRequest,
    ) -> Result<Vec<u8>, SmtpInError> {
        let out = encrypted(b"CIPHERTEXT\r\n");
        self.encrypted_for.lock().unwrap().push(request);
        Ok(out)
    }

    async fn custody(&self, identity_id: &str) -> Result<KeyCustody, SmtpInError> {
        Ok(
            if self.client_custody.lock().unwrap().contains(identity_id) {
                KeyCustody::Client
            } else {
                KeyCustody::Carrier
            },
        )
    }

    async fn decrypt_and_verify(
        &self,
        _recipient: &str,
        message: &[u8],
    ) -> Result<DecryptAndVerifyResponse, SmtpInError> {
        if message.ends_with(b"BOMB\r\n") {
            return Err(SmtpInError::TooLarge(
                "the encrypted message expands beyond 4194304 bytes".to_owned(),
            ));
        }
        if message.ends_with(b"FIRST\r\n") {
            // From a sender the account has not pinned: nothing checked it yet.
            return Ok(DecryptAndVerifyResponse {
                message: format!("From: {}\r\n\r\nhello\r\n", carol()).into_bytes(),
                signature: SignatureStatus::SignerUnknown as i32,
                from_address: carol(),
                sender_key_unpinned: true,
                ..Default::default()
            });
        }
        if message.ends_with(b"REQUEST\r\n") {
            // Verified, by a sender this identity does not correspond with.
            return Ok(DecryptAndVerifyResponse {
                message: format!("From: {}\r\n\r\nhello\r\n", carol()).into_bytes(),
                signature: SignatureStatus::Verified as i32,
                from_address: carol(),
                contact_request: true,
                ..Default::default()
            });
        }
        if message.ends_with(b"FORGED\r\n") {
            // Claims a pinned sender, signed by another key.
            return Ok(DecryptAndVerifyResponse {
                message: format!("From: {}\r\n\r\nhello\r\n", carol()).into_bytes(),
                signature: SignatureStatus::SignerMismatch as i32,
                from_address: carol(),
                ..Default::default()
            });
        }
        if !message.ends_with(b"GOOD\r\n") {
            return Err(SmtpInError::Permanent("not for us".to_owned()));
        }
        Ok(DecryptAndVerifyResponse {
            message: format!(
                "From: {}\r\nSubject: real subject\r\n\r\nhello\r\n",
                carol()
            )
            .into_bytes(),
            signature: SignatureStatus::Verified as i32,
            from_address: carol(),
            signer_fingerprint: "C0FFEE".to_owned(),
            ..Default::default()
        })
    }

    async fn corresponds(
        &self,
        identity_id: &str,
        address: &str,
    ) -> Result<Correspondence, SmtpInError> {
        let key = (identity_id.to_owned(), address.to_lowercase());
        Ok(if self.blocked.lock().unwrap().contains(&key) {
            Correspondence::Blocked
        } else if self.correspondents.lock().unwrap().contains(&key)
            || !*self.unknown_is_stranger.lock().unwrap()
        {
            Correspondence::Correspondent
        } else {
            Correspondence::Stranger
        })
    }

    async fn learn_autocrypt(
        &self,
        recipient: &str,
        from: &str,
        header: &str,
    ) -> Result<(), SmtpInError> {
        self.learned.lock().unwrap().push((
            recipient.to_owned(),
            from.to_owned(),
            header.to_owned(),
        ));
        Ok(())
    }

    async fn enqueue(&self, request: EnqueueRequest) -> Result<(), SmtpInError> {
        if *self.queue_full.lock().unwrap() {
            return Err(SmtpInError::Full);
        }
        self.enqueued.lock().unwrap().push(request);
        Ok(())
    }

    async fn flush(&self, onion: &str) -> Result<(), SmtpInError> {
        self.flushed.lock().unwrap().push(onion.to_owned());
        if *self.flush_hangs.lock().unwrap() {
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    async fn submit_carry_statement(
        &self,
        statement: Vec<u8>,
        onion: &str,
    ) -> Result<(), SmtpInError> {
        self.statements
            .lock()
            .unwrap()
            .push((statement, onion.to_owned()));
        Ok(())
    }

    async fn check_carry(
        &self,
        recipient: &str,
        onion: &str,
        _declared_size: u64,
    ) -> Result<CheckCarryResponse, SmtpInError> {
        Ok(CheckCarryResponse {
            accepted: self
                .carried
                .lock()
                .unwrap()
                .contains(&(recipient.to_owned(), onion.to_owned())),
            over_limit: false,
        })
    }

    async fn check_outbound(
        &self,
        account_id: &str,
        _sender_identity_id: &str,
        clearnet_recipients: u32,
        reserve: bool,
    ) -> Result<onionpost_proto::gateway::v1::CheckOutboundResponse, SmtpInError> {
        assert_eq!(account_id, "acct-alice");
        let allows = *self.gateway_allows.lock().unwrap();
        let mut reserved = self.gateway_reserved.lock().unwrap();
        let allowed = allows.is_some_and(|allows| *reserved + clearnet_recipients <= allows);
        if allowed && reserve {
            *reserved += clearnet_recipients;
        }
        Ok(onionpost_proto::gateway::v1::CheckOutboundResponse {
            allowed,
            reason: match allows {
                Some(allows) => format!("daily limit of {allows} clearnet recipients reached"),
                None => "this carrier does not offer clearnet mail".to_owned(),
            },
            remaining_today: 0,
        })
    }

    async fn release_outbound(
        &self,
        account_id: &str,
        clearnet_recipients: u32,
    ) -> Result<(), SmtpInError> {
        assert_eq!(account_id, "acct-alice");
        *self.gateway_reserved.lock().unwrap() -= clearnet_recipients;
        Ok(())
    }
}

fn fake() -> Arc<Fake> {
    let fake = Fake::default();
    {
        let mut identities = fake.identities.lock().unwrap();
        identities.insert(
            "id-alice".to_owned(),
            identity("id-alice", &alice(), ALICE_ONION, AccountState::Active),
        );
        identities.insert(
            "id-bob".to_owned(),
            identity("id-bob", &bob(), BOB_ONION, AccountState::Active),
        );
    }
    Arc::new(fake)
}

/// [`fake`] where a sender is a stranger unless listed as a correspondent.
fn strangers_fake() -> Arc<Fake> {
    let fake = fake();
    *fake.unknown_is_stranger.lock().unwrap() = true;
    fake
}

fn policy(plaintext: PlaintextPolicy, limits: Limits, per_hour: u32) -> Arc<Policy> {
    Arc::new(Policy::new(plaintext, limits, per_hour, Stats::default()))
}

struct Client {
    reader: BufReader<tokio::io::ReadHalf<DuplexStream>>,
    writer: tokio::io::WriteHalf<DuplexStream>,
}

impl Client {
    async fn start(backend: Arc<Fake>, policy: Arc<Policy>, mode: Mode) -> (Client, String) {
        let (client, server) = tokio::io::duplex(1 << 20);
        tokio::spawn(Session::new(backend, policy, mode).run(server));
        let (read, write) = tokio::io::split(client);
        let mut client = Client {
            reader: BufReader::new(read),
            writer: write,
        };
        let greeting = client.reply().await;
        (client, greeting)
    }

    /// Reads one (possibly multi-line) reply, lines joined with `\n`, without CRLFs.
    async fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let read =
                tokio::time::timeout(Duration::from_secs(10), self.reader.read_line(&mut line))
                    .await
                    .expect("reply in time")
                    .unwrap();
            if read == 0 {
                return format!("{}<eof>", lines.join("\n"));
            }
            assert!(
                line.ends_with("\r\n"),
                "reply line ends with CRLF: {line:?}"
            );
            let line = line.trim_end().to_owned();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines.join("\n");
            }
        }
    }

    async fn send(&mut self, line: &str) -> String {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.reply().await
    }

    async fn raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.unwrap();
    }
}

fn mx() -> Mode {
    Mode::Ingress {
        identity_id: "id-alice".to_owned(),
    }
}

fn submission() -> Mode {
    Mode::Submission {
        onion_identity: None,
        auth_allowed: true,
    }
}

fn default_policy() -> Arc<Policy> {
    policy(PlaintextPolicy::Refuse, Limits::default(), 500)
}

#[tokio::test]
async fn greeting_and_ehlo_name_no_host_and_advertise_the_extensions() {
    let (mut c, greeting) = Client::start(fake(), default_policy(), mx()).await;
    assert_eq!(greeting, "220 ESMTP ready");
    let ehlo = c.send("EHLO peer").await;
    assert_eq!(
        ehlo,
        "250-ESMTP\n250-PIPELINING\n250-SIZE 26214400\n250-8BITMIME\n250-SMTPUTF8\n250-ENHANCEDSTATUSCODES\n250-DSN\n250 ETRN"
    );
    assert_eq!(c.send("HELO peer").await, "250 ESMTP");
    assert_eq!(c.send("NOOP").await, "250 2.0.0 OK");
    assert_eq!(
        c.send("VRFY bob").await,
        "252 2.5.0 Cannot verify the address"
    );
    assert_eq!(c.send("QUIT").await, "221 2.0.0 Bye");
}

#[tokio::test]
async fn co_hosted_and_unknown_recipients_and_relaying_get_identical_replies() {
    let (mut c, _) = Client::start(fake(), default_policy(), mx()).await;
    c.send("EHLO peer").await;
    assert_eq!(
        c.send(&format!("MAIL FROM:<{}>", carol())).await,
        "250 2.1.0 Sender OK"
    );
    let co_hosted = c.send(&format!("RCPT TO:<{}>", bob())).await;
    let made_up = c.send(&format!("RCPT TO:<nobody@{BOB_ONION}>")).await;
    let made_up_here = c.send(&format!("RCPT TO:<nobody@{ALICE_ONION}>")).await;
    let relay = c.send("RCPT TO:<someone@example.com>").await;
    assert_eq!(co_hosted, RECIPIENT_REJECTED);
    assert_eq!(co_hosted, made_up);
    assert_eq!(co_hosted, made_up_here);
    assert_eq!(co_hosted, relay);
    // The identity's own address, in any case and through a subdomain of its onion.
    assert_eq!(
        c.send(&format!("RCPT TO:<ALICE@www.{ALICE_ONION}>")).await,
        "250 2.1.5 Recipient OK"
    );
}

#[tokio::test]
async fn plaintext_is_refused_with_the_reason() {
    let backend = fake();
    let policy = default_policy();
    let (mut c, _) = Client::start(backend.clone(), policy.clone(), mx()).await;
    c.send("EHLO peer").await;
    c.send(&format!("MAIL FROM:<{}>", carol())).await;
    c.send(&format!("RCPT TO:<{}>", alice())).await;
    assert_eq!(
        c.send("DATA").await,
        "354 Start mail input; end with <CRLF>.<CRLF>"
    );
    c.raw(b"Subject: hi\r\n\r\nplain words\r\n").await;
    let reply = c.send(".").await;
    assert_eq!(reply, PLAINTEXT_REFUSED);
    assert_eq!(
        reply,
        "550 5.7.1 End-to-end encryption required: this address accepts only OpenPGP-encrypted mail (RFC 3156)"
    );
    assert!(backend.delivered.lock().unwrap().is_empty());
    let snapshot = policy.stats.snapshot();
    assert_eq!(
        (
            snapshot.plaintext_refused,
            snapshot.refused,
            snapshot.accepted
        ),
        (1, 1, 0)
    );
}

#[tokio::test]
async fn plaintext_goes_to_quarantine_under_that_policy() {
    let backend = fake();
    let (mut c, _) = Client::start(
        backend.clone(),
        policy(PlaintextPolicy::Quarantine, Limits::default(), 500),
        mx(),
    )
    .await;
    c.send("EHLO peer").await;
    c.send(&format!("MAIL FROM:<{}>", carol())).await;
    c.send(&format!("RCPT TO:<{}>", alice())).await;
    c.send("DATA").await;
    c.raw(b"Subject: hi\r\n\r\nplain\r\n").await;
    assert_eq!(c.send(".").await, "250 2.0.0 Message accepted");
    let delivered = backend.delivered.lock().unwrap();
    assert_eq!(delivered[0].mailbox, Mailbox::Quarantine as i32);
    assert_eq!(
        delivered[0].verification,
        SenderVerification::Unsigned as i32
    );
}

#[tokio::test]
async fn encrypted_mail_is_decrypted_verified_and_delivered_before_250() {
    let backend = fake();
    let policy = default_policy();
    let (mut c, _) = Client::start(backend.clone(), policy.clone(), mx()).await;
    c.send("EHLO peer").await;
    c.send(&format!(
        "MAIL FROM:<{}> BODY=8BITMIME SMTPUTF8 SIZE=1000 RET=HDRS ENVID=xyz",
        carol()
    ))
    .await;
    assert_eq!(
        c.send(&format!(
            "RCPT TO:<{}> NOTIFY=NEVER ORCPT=rfc822;{}",
            alice(),
            alice()
        ))
        .await,
        "250 2.1.5 Recipient OK"
    );
    c.send("DATA").await;
    c.raw(&encrypted(b"GOOD\r\n")).await;
    assert_eq!(c.send(".").await, "250 2.0.0 Message accepted");
    let delivered = backend.delivered.lock().unwrap();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].identity_id, "id-alice");
    assert_eq!(delivered[0].mailbox, Mailbox::Inbox as i32);
    assert_eq!(
        delivered[0].verification,
        SenderVerification::Verified as i32
    );
    assert_eq!(delivered[0].verification_detail, "C0FFEE");
    assert!(String::from_utf8_lossy(&delivered[0].message).contains("Subject: real subject"));
    // DecryptAndVerify pins the sender's key itself; nothing else is asked to learn it.
    assert!(backend.learned.lock().unwrap().is_empty());
    assert_eq!(policy.stats.snapshot().accepted, 1);
}

/// Issue 18, oracle 1: a sender with no pinned key is not looked up while the peer waits (the
/// fetch's time would tell whether its onion is hosted here). The ciphertext goes to the queue
/// as received mail, which fetches the key from the sender's onion and verifies after the 250.
#[tokio::test]
async fn mail_from_an_unpinned_sender_is_verified_by_the_queue_after_250() {
    let backend = fake();
    let (mut c, _) = Client::start(backend.clone(), default_policy(), mx()).await;
    c.send("EHLO peer").await;
    c.send(&format!("MAIL FROM:<{}>", carol())).await;
    c.send(&format!("RCPT TO:<{}>", alice())).await;
    c.send("DATA").await;
    let ciphertext = encrypted(b"FIRST\r\n");
    c.raw(&ciphertext).await;
    assert_eq!(c.send(".").await, "250 2.0.0 Message accepted");
    assert!(backend.delivered.lock().unwrap().is_empty());
    let enqueued = backend.enqueued.lock().unwrap();
    assert_eq!(enqueued.len(), 1);
    assert_eq!(enqueued[0].origin, Origin::Received as i32);
    assert_eq!(enqueued[0].sender_identity_id, "id-alice");
    assert_eq!(enqueued[0].reverse_path, carol());
    assert_eq!(enqueued[0].recipients.len(), 1);
    assert_eq!(enqueued[0].recipients[0].address, alice());
    // The message as it came: the queue opens it again once the key is in.
    assert_eq!(enqueued[0].message, ciphertext);
}

#[tokio::test]
async fn client_custody_mail_is_stored_encrypted_and_its_autocrypt_learned() {
    let backend = fake();
    backend
        .client_custody
        .lock()
        .unwrap()
        .insert("id-alice".to_owned());
    let (mut c, _) = Client::start(backend.clone(), default_policy(), mx()).await;
    c.send("EHLO peer").await;
    c.send(&format!("MAIL FROM:<{}>", carol())).await;
    c.send(&format!("RCPT TO:<{}>", alice())).await;
    c.send("DATA").await;
    let message = encrypted(b"opaque\r\n");
    c.raw(&message).await;
    assert_eq!(c.send(".").await, "250 2.0.0 Message accepted");
    let delivered = backend.delivered.lock().unwrap();
    assert_eq!(delivered[0].message, message);
    assert_eq!(
        delivered[0].verification,
        SenderVerification::NotChecked as i32
    );
    let learned = backend.learned.lock().unwrap();
    assert_eq!(learned[0].0, "id-alice");
    assert_eq!(learned[0].1, carol());
    assert!(learned[0].2.starts_with("addr="));
}

#[tokio::test]
async fn mail_that_does_not_open_is_refused_for_what_is_wrong() {
    // Not for us, or damaged: undecryptable. Decrypted but expanding beyond keys' ceiling when
    // decompressed: too big, and said so.
    for (inner, expected) in [
        (
            &b"garbage\r\n"[..],
            "550 5.7.5 Message could not be decrypted",
        ),
        (
            b"BOMB\r\n",
            "552 5.3.4 Message expands beyond the size limit when decompressed",
        ),
    ] {
        let backend = fake();
        let (mut c, _) = Client::start(backend.clone(), default_policy(), mx()).await;
        c.send("EHLO peer").await;
        c.send(&format!("MAIL FROM:<{}>", carol())).await;
        c.send(&format!("RCPT TO:<{}>", alice())).await;
        c.send("DATA").await;
        c.raw(&encrypted(inner)).await;
        assert_eq!(c.send(".").await, expected);
        assert!(backend.delivered.lock().unwrap().is_empty());
    }
}

#[tokio::test]
async fn delivery_refusals_map_to_smtp_replies() {
    // A copy the store already holds (through another carrier) is taken (250, so no sender
    // retries it) with the text that tells an onionpost sender to send no second notice.
    let already = format!("250 2.0.0 {}", onionpost_proto::ALREADY_DELIVERED_TEXT);
    for (refusal, duplicate, expected) in [
        (Refusal::OverQuota, false, "452 4.2.2 Mailbox full"),
        (
            Refusal::AccountUnavailable,
            false,
            "451 4.2.1 Mailbox temporarily unavailable",
        ),
        (Refusal::AccountExpired, false, "550 5.2.1 Mailbox disabled"),
        (Refusal::UnknownIdentity, false, RECIPIENT_REJECTED),
        (Refusal::Unspecified, true, already.as_str()),
    ] {
        let backend = fake();
        *backend.refusal.lock().unwrap() = refusal;
        *backend.duplicate.lock().unwrap() = duplicate;
        let (mut c, _) = Client::start(backend, default_policy(), mx()).await;
        c.send("EHLO peer").await;
        c.send(&format!("MAIL FROM:<{}>", carol())).await;
        c.send(&format!("RCPT TO:<{}>", alice())).await;
        c.send("DATA").await;
        c.raw(&encrypted(b"GOOD\r\n")).await;
        assert_eq!(c.send(".").await, expected);
    }
}

#[tokio::test]
async fn account_state_decides_4xx_or_5xx_at_rcpt() {
    for (state, expected) in [
        (
            AccountState::Grace,
            "450 4.2.1 Mailbox temporarily unavailable",
        ),
        (
            AccountState::Suspended,
            "450 4.2.1 Mailbox temporarily unavailable",
        ),
        (AccountState::Expired, "550 5.2.1 Mailbox disabled"),
    ] {
        let backend = fake();
        backend.identities.lock().unwrap().insert(
            "id-alice".to_owned(),
            identity("id-alice", &alice(), ALICE_ONION, state),
        );
        let (mut c, _) = Client::start(backend, default_policy(), mx()).await;
        c.send("EHLO peer").await;
        c.send(&format!("MAIL FROM:<{}>", carol())).await;
        assert_eq!(c.send(&format!("RCPT TO:<{}>", alice())).await, expected);
    }
}

#[tokio::test]
async fn orcpt_keeps_its_type_and_control_characters_are_refused() {
    let backend = fake();
    backend
        .carried
        .lock()
        .unwrap()
        .insert((carol(), ALICE_ONION.to_owned()));
    let (mut c, _) = Client::start(backend.clone(), default_policy(), mx()).await;
    c.send("EHLO peer").await;
    c.send(&format!("MAIL FROM:<{}>", bob())).await;
    // xtext decodes +0D+0A to CR LF: stored raw it would end a command line downstream.
    for injected in ["+0D+0ARSET", "a+0Ab", "a+00b", "a+1Bb"] {
        assert_eq!(
            c.send(&format!("RCPT TO:<{}> ORCPT=rfc822;{injected}", carol()))
                .await,
            "501 5.5.4 ORCPT address must not contain control characters"
        );
    }
    assert_eq!(
        c.send(&format!(
            "RCPT TO:<{}> ORCPT=rfc822;george+2Bx+20@tax.gov",
            carol()
        ))
        .await,
        "250 2.1.5 Recipient OK"
    );
    c.send("DATA").await;
    c.raw(&encrypted(b"anything\r\n")).await;
    assert_eq!(c.send(".").await, "250 2.0.0 Message accepted");
    let enqueued = backend.enqueued.lock().unwrap();
    assert_eq!(enqueued[0].recipients.len(), 1);
    // Decoded, with its address type: smtp-client xtext-encodes it again on output.
    assert_eq!(
        enqueued[0].recipients[0].original_recipient,
        "rfc822;george+x @tax.gov"
    );
}

#[tokio::test]
async fn carried_recipients_are_queued_with_origin_carry() {
    let backend = fake();
    // Carol's agreement names Alice's onion, where this MX listens; Bob's names another onion
    // of the carrier, so Bob is refused here exactly like a stranger.
    backend
        .carried
        .lock()
        .unwrap()
        .insert((carol(), ALICE_ONION.to_owned()));
    backend
        .carried
        .lock()
        .unwrap()
        .insert((bob(), ALICE_ALT_ONION.to_owned()));
    let (mut c, _) = Client::start(backend.clone(), default_policy(), mx()).await;
    c.send("EHLO peer").await;
    c.send(&format!("MAIL FROM:<{}>", bob())).await;
    let elsewhere = c.send(&format!("RCPT TO:<{}>", bob())).await;
    let stranger = c.send(&format!("RCPT TO:<nobody@{CAROL_ONION}>")).await;
    assert_eq!(elsewhere, stranger);
    assert!(elsewhere.starts_with("550 5.1.1 "), "{elsewhere}");
    assert_eq!(
        c.send(&format!("RCPT TO:<{}>", carol())).await,
        "250 2.1.5 Recipient OK"
    );
    c.send("DATA").await;
    c.raw(&encrypted(b"anything\r\n")).await;
    assert_eq!(c.send(".").await, "250 2.0.0 Message accepted");
    {
        let enqueued = backend.enqueued.lock().unwrap();
        assert_eq!(enqueued[0].origin, Origin::Carry as i32);
        assert_eq!(enqueued[0].recipients[0].address, carol());
        assert!(backend.delivered.lock().unwrap().is_empty());
    }

    // Past the agreement's caps once the real size is known: a temporary refusal that says so.
    *backend.queue_full.lock().unwrap() = true;
    c.send(&format!("MAIL FROM:<{}>", bob())).await;
    c.send(&format!("RCPT TO:<{}>", carol())).await;
    c.send("DATA").await;
    c.raw(&encrypted(b"anything\r\n")).await;
    assert_eq!(c.send(".").await, "452 4.2.2 Mailbox full, try again later");
}

/// A signed carry statement sent to `postmaster@<this onion>` is handed to the queue with the
/// onion it came to (verified there after the reply); postmaster@ goes alone, takes only an
/// armoured OpenPGP message, and answers the same on every onion.
#[tokio::test]
async fn a_carry_statement_to_postmaster_is_kept_for_the_queue_with_its_onion() {
    let backend = fake();
    let statement = "-----BEGIN PGP MESSAGE-----\r\n\r\nowGbwMvMwCF2aYH...\r\n=abcd\r\n-----END PGP MESSAGE-----";
    let message = format!(
        "From: <{}>\r\nTo: <postmaster@{ALICE_ONION}>\r\nSubject: carry request\r\n\r\n{statement}\r\n",
        carol()
    );
    let mut replies = Vec::new();
    for (mode, onion, own) in [
        (mx(), ALICE_ONION, alice()),
        (
            Mode::Ingress {
                identity_id: "id-bob".into(),
            },
            BOB_ONION,
            bob(),
        ),
    ] {
        let (mut c, _) = Client::start(backend.clone(), default_policy(), mode).await;
        c.send("EHLO peer").await;
        c.send(&format!("MAIL FROM:<{}>", carol())).await;
        // Another onion's postmaster is refused like any stranger.
        let other = if onion == ALICE_ONION {
            BOB_ONION
        } else {
            ALICE_ONION
        };
        assert!(
            c.send(&format!("RCPT TO:<postmaster@{other}>"))
                .await
                .starts_with("550 5.1.1 ")
        );
        assert_eq!(
            c.send(&format!("RCPT TO:<PostMaster@{onion}>")).await,
            "250 2.1.5 Recipient OK"
        );
        // Not with anyone else in the same transaction, not even the onion's own identity.
        assert!(c.send(&format!("RCPT TO:<{own}>")).await.starts_with(
            "452 4.5.3 postmaster@ takes carry statements in a transaction of its own"
        ));
        c.send("DATA").await;
        c.raw(message.as_bytes()).await;
        replies.push(c.send(".").await);
        // A message without a statement is refused with the reason, plaintext or not.
        c.send(&format!("MAIL FROM:<{}>", carol())).await;
        c.send(&format!("RCPT TO:<postmaster@{onion}>")).await;
        c.send("DATA").await;
        c.raw(b"Subject: hello\r\n\r\nplease carry for me\r\n")
            .await;
        assert!(
            c.send(".")
                .await
                .starts_with("550 5.6.0 postmaster@ takes only a signed carry statement")
        );
    }
    assert_eq!(replies[0], replies[1]);
    assert!(
        replies[0].starts_with("250 2.0.0 Carry statement kept"),
        "{}",
        replies[0]
    );
    let statements = backend.statements.lock().unwrap().clone();
    assert_eq!(
        statements,
        [
            (statement.as_bytes().to_vec(), ALICE_ONION.to_owned()),
            (statement.as_bytes().to_vec(), BOB_ONION.to_owned())
        ]
    );
    assert!(backend.enqueued.lock().unwrap().is_empty());
    assert!(backend.delivered.lock().unwrap().is_empty());
}

#[tokio::test]
async fn etrn_answers_the_same_whatever_is_held() {
    let backend = fake();
    let (mut c, _) = Client::start(backend.clone(), default_policy(), mx()).await;
    c.send("EHLO peer").await;
    let a = c.send(&format!("ETRN {BOB_ONION}")).await;
    let b = c.send(&format!("ETRN @{CAROL_ONION}")).await;
    let d = c.send("ETRN example.com").await;
    assert_eq!(a, ETRN_REPLY);
    assert_eq!(a, b);
    assert_eq!(a, d);
    // The flush runs after the reply: give the spawned flushes their turn.
    for _ in 0..100 {
        if backend.flushed.lock().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        *backend.flushed.lock().unwrap(),
        vec![BOB_ONION.to_owned(), CAROL_ONION.to_owned()]
    );
}

#[tokio::test]
async fn etrn_answers_before_the_flush_runs() {
    let backend = fake();
    *backend.flush_hangs.lock().unwrap() = true;
    let (mut c, _) = Client::start(backend.clone(), default_policy(), mx()).await;
    c.send("EHLO peer").await;
    // Client::send waits 10 s at most: the old code waited for the flush and never answered.
    assert_eq!(c.send(&format!("ETRN {BOB_ONION}")).await, ETRN_REPLY);
    assert_eq!(c.send("NOOP").await, "250 2.0.0 OK");
}

#[tokio::test]
async fn sequence_syntax_and_unknown_commands() {
    let (mut c, _) = Client::start(fake(), default_policy(), mx()).await;
    assert_eq!(
        c.send(&format!("MAIL FROM:<{}>", carol())).await,
        "503 5.5.1 Send EHLO first"
    );
    c.send("EHLO peer").await;
    assert_eq!(
        c.send(&format!("RCPT TO:<{}>", alice())).await,
        "503 5.5.1 Need MAIL before RCPT"
    );
    assert_eq!(c.send("DATA").await, "503 5.5.1 Need MAIL before DATA");
    assert_eq!(c.send("FOOBAR").await, "500 5.5.1 Command unrecognized");
    assert!(c.send("MAIL FROM:carol").await.starts_with("501 5."));
    c.send(&format!("MAIL FROM:<{}>", carol())).await;
    assert_eq!(
        c.send(&format!("MAIL FROM:<{}>", carol())).await,
        "503 5.5.1 Nested MAIL command"
    );
    assert_eq!(c.send("DATA").await, "554 5.5.1 No valid recipients");
    assert_eq!(c.send("RSET").await, "250 2.0.0 OK");
    assert_eq!(
        c.send("AUTH PLAIN AGFsaWNlAHNlY3JldA==").await,
        "502 5.5.1 Command not implemented"
    );
    let long = format!("NOOP {}", "x".repeat(5000));
    assert_eq!(c.send(&long).await, "500 5.5.2 Line too long");
}

#[tokio::test]
async fn too_many_errors_close_the_session() {
    let limits = Limits {
        max_errors: 3,
        ..Limits::default()
    };
    let (mut c, _) =
        Client::start(fake(), policy(PlaintextPolicy::Refuse, limits, 500), mx()).await;
    assert_eq!(c.send("XX").await, "500 5.5.1 Command unrecognized");
    assert_eq!(c.send("XX").await, "500 5.5.1 Command unrecognized");
    assert_eq!(c.send("XX").await, "500 5.5.1 Command unrecognized");
    assert_eq!(
        c.reply().await,
        "421 4.7.0 Too many errors, closing connection"
    );
    assert_eq!(c.reply().await, "<eof>");
}

#[tokio::test]
async fn idle_client_times_out() {
    let limits = Limits {
        command_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let (mut c, _) =
        Client::start(fake(), policy(PlaintextPolicy::Refuse, limits, 500), mx()).await;
    assert_eq!(c.reply().await, "421 4.4.2 Timeout, closing connection");
}

#[tokio::test]
async fn size_is_enforced_at_mail_and_while_reading_data() {
    let limits = Limits {
        max_message_bytes: 1000,
        ..Limits::default()
    };
    let backend = fake();
    let (mut c, _) = Client::start(
        backend.clone(),
        policy(PlaintextPolicy::Refuse, limits, 500),
        mx(),
    )
    .await;
    c.send("EHLO peer").await;
    assert_eq!(
        c.send(&format!("MAIL FROM:<{}> SIZE=2000", carol())).await,
        "552 5.3.4 Message size exceeds fixed maximum message size"
    );
    c.send(&format!("MAIL FROM:<{}>", carol())).await;
    c.send(&format!("RCPT TO:<{}>", alice())).await;
    c.send("DATA").await;
    let mut big = encrypted(b"");
    for _ in 0..100 {
        big.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
    }
    c.raw(&big).await;
    assert_eq!(
        c.send(".").await,
        "552 5.3.4 Message size exceeds fixed maximum message size"
    );
    // The session is still in step after the refused data.
    assert_eq!(c.send("NOOP").await, "250 2.0.0 OK");
    assert!(backend.delivered.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_text_line_over_1000_octets_is_refused_and_the_session_stays_in_step() {
    let backend = fake();
    let (mut c, _) = Client::start(backend.clone(), default_policy(), mx()).await;
    c.send("EHLO peer").await;
    c.send(&format!("MAIL FROM:<{}>", carol())).await;
    c.send(&format!("RCPT TO:<{}>", alice())).await;
    c.send("DATA").await;
    let mut data = encrypted(b"");
    // 998 characters and CRLF: the longest line allowed.
    data.extend_from_slice(&[b'a'; 998]);
    data.extend_from_slice(b"\r\n");
    data.extend_from_slice(&[b'b'; 999]);
    data.extend_from_slice(b"\r\n");
    c.raw(&data).await;
    assert_eq!(c.send(".").await, LINE_TOO_LONG);
    assert_eq!(c.send("NOOP").await, "250 2.0.0 OK");
    assert!(backend.delivered.lock().unwrap().is_empty());

    c.send(&format!("MAIL FROM:<{}>", carol())).await;
    c.send(&format!("RCPT TO:<{}>", alice())).await;
    c.send("DATA").await;
    let mut data = encrypted(b"");
    data.extend_from_slice(&[b'a'; 998]);
    data.extend_from_slice(b"\r\nGOOD\r\n");
    c.raw(&data).await;
    let accepted = c.send(".").await;
    assert!(accepted.starts_with("250 "), "{accepted}");
}

/// SMTP smuggling (RFC 5321 §2.3.8): a bare CR or LF refuses the message, and a dot after
/// one does not end the data, so commands hidden behind it are never run.
#[tokio::test]
async fn a_bare_cr_or_lf_in_data_is_refused_and_smuggles_no_second_message() {
    let backend = fake();
    let (mut c, _) = Client::start(backend.clone(), default_policy(), mx()).await;
    c.send("EHLO peer").await;
    c.send(&format!("MAIL FROM:<{}>", carol())).await;
    c.send(&format!("RCPT TO:<{}>", alice())).await;
    c.send("DATA").await;
    let mut data = encrypted(b"text\r.\r");
    data.extend_from_slice(format!("MAIL FROM:<{}>\r\n", bob()).as_bytes());
    c.raw(&data).await;
    assert_eq!(c.send(".").await, onionpost_smtp_server::BARE_LINE_ENDING);
    assert_eq!(c.send("NOOP").await, "250 2.0.0 OK");

    c.send(&format!("MAIL FROM:<{}>", carol())).await;
    c.send(&format!("RCPT TO:<{}>", alice())).await;
    c.send("DATA").await;
    let mut data = encrypted(b"text\n.\r\n");
    data.extend_from_slice(
        format!(
            "MAIL FROM:<{}>\r\nRCPT TO:<{}>\r\nDATA\r\nforged\r\n",
            bob(),
            alice()
        )
        .as_bytes(),
    );
    c.raw(&data).await;
    assert_eq!(c.send(".").await, onionpost_smtp_server::BARE_LINE_ENDING);
    assert_eq!(c.send("NOOP").await, "250 2.0.0 OK");
    assert!(backend.delivered.lock().unwrap().is_empty());
}

#[tokio::test]
async fn pipelined_commands_get_their_replies_in_order_and_dots_are_unstuffed() {
    let backend = fake();
    backend
        .carried
        .lock()
        .unwrap()
        .insert((carol(), ALICE_ONION.to_owned()));
    let (mut c, _) = Client::start(backend.clone(), default_policy(), mx()).await;
    c.send("EHLO peer").await;
    c.raw(
        format!(
            "MAIL FROM:<{}>\r\nRCPT TO:<{}>\r\nRCPT TO:<{}>\r\nDATA\r\n",
            bob(),
            bob(),
            carol()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(c.reply().await, "250 2.1.0 Sender OK");
    assert_eq!(c.reply().await, RECIPIENT_REJECTED);
    assert_eq!(c.reply().await, "250 2.1.5 Recipient OK");
    assert_eq!(
        c.reply().await,
        "354 Start mail input; end with <CRLF>.<CRLF>"
    );
    let mut data = encrypted(b"..leading dot\r\n");
    data.extend_from_slice(b".\r\nNOOP\r\nQUIT\r\n");
    c.raw(&data).await;
    assert_eq!(c.reply().await, "250 2.0.0 Message accepted");
    assert_eq!(c.reply().await, "250 2.0.0 OK");
    assert_eq!(c.reply().await, "221 2.0.0 Bye");
    let enqueued = backend.enqueued.lock().unwrap();
    assert!(enqueued[0].message.ends_with(b"\r\n\r\n.leading dot\r\n"));
}

// Submission.

async fn authenticated(backend: Arc<Fake>, policy: Arc<Policy>, mode: Mode) -> Client {
    let (mut c, _) = Client::start(backend, policy, mode).await;
    c.send("EHLO client").await;
    // \0alice\0secret pass
    assert_eq!(
        c.send("AUTH PLAIN AGFsaWNlAHNlY3JldCBwYXNz").await,
        "235 2.7.0 Authentication successful"
    );
    c
}

fn submitted(from: &str, to: &str) -> Vec<u8> {
    format!(
        "From: Alice <{from}>\r\nTo: {to}\r\nSubject: Lunch?\r\nX-Mailer: Leaky 1.0\r\nReceived: from laptop\r\n\r\nAt noon.\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn submission_requires_auth_and_advertises_it() {
    let (mut c, _) = Client::start(fake(), default_policy(), submission()).await;
    let ehlo = c.send("EHLO client").await;
    assert!(ehlo.ends_with("250 AUTH PLAIN LOGIN"), "{ehlo}");
    assert!(!ehlo.contains("ETRN"));
    assert_eq!(
        c.send(&format!("MAIL FROM:<{}>", alice())).await,
        "530 5.7.0 Authentication required"
    );
    assert_eq!(
        c.send("AUTH PLAIN AGFsaWNlAHdyb25n").await,
        "535 5.7.8 Authentication credentials invalid"
    );
    assert_eq!(c.send("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    assert_eq!(c.send("YWxpY2U=").await, "334 UGFzc3dvcmQ6");
    assert_eq!(
        c.send("c2VjcmV0IHBhc3M=").await,
        "235 2.7.0 Authentication successful"
    );
    assert_eq!(
        c.send(&format!("MAIL FROM:<{}>", alice())).await,
        "250 2.1.0 Sender OK"
    );
}

#[tokio::test]
async fn auth_is_refused_where_it_is_not_allowed() {
    let mode = Mode::Submission {
        onion_identity: None,
        auth_allowed: false,
    };
    let (mut c, _) = Client::start(fake(), default_policy(), mode).await;
    assert!(!c.send("EHLO client").await.contains("AUTH"));
    assert_eq!(
        c.send("AUTH PLAIN AGFsaWNlAHNlY3JldCBwYXNz").await,
        "538 5.7.11 Encryption required for requested authentication mechanism"
    );
}

#[tokio::test]
async fn auth_through_another_identitys_onion_reads_like_a_wrong_password() {
    // Alice's account is co-hosted with bob's identity. Through bob's onion her correct
    // password must get exactly what a wrong one gets, and so must everything after it.
    let bobs_onion = || Mode::Submission {
        onion_identity: Some("id-bob".to_owned()),
        auth_allowed: true,
    };
    let mut transcripts = Vec::new();
    // \0alice\0secret pass, then \0alice\0wrong.
    for auth in [
        "AUTH PLAIN AGFsaWNlAHNlY3JldCBwYXNz",
        "AUTH PLAIN AGFsaWNlAHdyb25n",
    ] {
        let (mut c, greeting) = Client::start(fake(), default_policy(), bobs_onion()).await;
        let mut transcript = vec![greeting, c.send("EHLO client").await];
        transcript.push(c.send(auth).await);
        transcript.push(c.send(&format!("MAIL FROM:<{}>", alice())).await);
        transcript.push(c.send(&format!("MAIL FROM:<{}>", bob())).await);
        transcript.push(c.send("AUTH LOGIN").await);
        transcripts.push(transcript);
    }
    assert_eq!(transcripts[0][2], AUTH_INVALID);
    assert_eq!(transcripts[0], transcripts[1]);

    // Through her own identity's onion the same login succeeds.
    let mode = Mode::Submission {
        onion_identity: Some("id-alt".to_owned()),
        auth_allowed: true,
    };
    authenticated(fake(), default_policy(), mode).await;
}

#[tokio::test]
async fn auth_back_off_is_keyed_by_listener_and_login_across_sessions() {
    // imap's Authenticate backs off by this key: a key new in every session never backs off.
    let backend = fake();
    let bobs_onion = || Mode::Submission {
        onion_identity: Some("id-bob".to_owned()),
        auth_allowed: true,
    };
    // \0alice\0wrong, \0Alice\0wrong, \0carol\0wrong.
    for (mode, auth) in [
        (bobs_onion(), "AUTH PLAIN AGFsaWNlAHdyb25n"),
        (bobs_onion(), "AUTH PLAIN AEFsaWNlAHdyb25n"),
        (bobs_onion(), "AUTH PLAIN AGNhcm9sAHdyb25n"),
        (submission(), "AUTH PLAIN AGFsaWNlAHdyb25n"),
    ] {
        let (mut c, _) = Client::start(backend.clone(), default_policy(), mode).await;
        c.send("EHLO client").await;
        assert_eq!(c.send(auth).await, AUTH_INVALID);
    }
    let keys = backend.connection_keys.lock().unwrap().clone();
    assert_eq!(keys[0], keys[1], "same listener and login, two sessions");
    assert_ne!(keys[0], keys[2], "another login through the same onion");
    assert_ne!(keys[0], keys[3], "the same login through another listener");
}

#[tokio::test]
async fn sender_must_be_one_of_the_accounts_identities() {
    let backend = fake();
    backend.keys.lock().unwrap().insert(carol());
    let mut c = authenticated(backend.clone(), default_policy(), submission()).await;
    assert_eq!(
        c.send(&format!("MAIL FROM:<{}>", bob())).await,
        "550 5.7.1 Sender address is not one of this account's identities"
    );
    c.send(&format!("MAIL FROM:<{}>", alice())).await;
    c.send(&format!("RCPT TO:<{}>", carol())).await;
    c.send("DATA").await;
    c.raw(&submitted(&bob(), &carol())).await;
    assert_eq!(
        c.send(".").await,
        "550 5.7.1 From address is not one of this account's identities"
    );
    assert!(backend.enqueued.lock().unwrap().is_empty());

    // On an identity's own onion only that identity may send.
    let mode = Mode::Submission {
        onion_identity: Some("id-alice".to_owned()),
        auth_allowed: true,
    };
    let mut c = authenticated(backend.clone(), default_policy(), mode).await;
    assert_eq!(
        c.send(&format!("MAIL FROM:<{}>", alice_alt())).await,
        "550 5.7.1 Sender address is not one of this account's identities"
    );
    assert_eq!(
        c.send(&format!("MAIL FROM:<{}>", alice())).await,
        "250 2.1.0 Sender OK"
    );
}

#[tokio::test]
async fn clearnet_recipients_go_through_the_gateway_in_plaintext_apart_from_onion_ones() {
    let backend = fake();
    backend.keys.lock().unwrap().insert(carol());
    *backend.gateway_allows.lock().unwrap() = Some(1);
    let mut c = authenticated(backend.clone(), default_policy(), submission()).await;
    c.send(&format!("MAIL FROM:<{}>", alice())).await;
    assert_eq!(
        c.send("RCPT TO:<David@Example.com>").await,
        "250 2.1.5 Recipient OK"
    );
    // The gateway's cap counts the clearnet recipients of the message so far.
    assert_eq!(
        c.send("RCPT TO:<erin@example.com>").await,
        "550 5.7.1 daily limit of 1 clearnet recipients reached"
    );
    assert_eq!(
        c.send(&format!("RCPT TO:<{}>", carol())).await,
        "250 2.1.5 Recipient OK"
    );
    c.send("DATA").await;
    c.raw(&submitted(&alice(), &carol())).await;
    assert_eq!(c.send(".").await, "250 2.0.0 Message queued");

    let encrypted_for = backend.encrypted_for.lock().unwrap();
    assert_eq!(encrypted_for.len(), 1);
    assert_eq!(
        encrypted_for[0].recipients,
        [carol()],
        "only onion recipients are encrypted to"
    );
    let enqueued = backend.enqueued.lock().unwrap();
    assert_eq!(
        enqueued.len(),
        2,
        "one copy for onions, one for the gateway"
    );
    let onion = enqueued
        .iter()
        .find(|request| request.recipients[0].address == carol())
        .unwrap();
    assert_eq!(onion.recipients.len(), 1);
    let clearnet = enqueued
        .iter()
        .find(|request| request.recipients[0].address == "david@example.com")
        .unwrap();
    assert_eq!(clearnet.recipients.len(), 1);
    assert_eq!(clearnet.account_id, "acct-alice");
    assert_eq!(clearnet.sender_identity_id, "id-alice");
    let plaintext = String::from_utf8(clearnet.message.clone()).unwrap();
    assert!(plaintext.contains("At noon."), "{plaintext}");
    assert!(!plaintext.contains("X-Mailer"), "{plaintext}");
    assert_ne!(onion.message, clearnet.message);
}

/// Two sessions of one account both pass RCPT under a daily cap of one; the cap is taken at
/// acceptance, so only the first DATA is queued (before, both were, past the cap).
#[tokio::test]
async fn the_gateway_cap_is_reserved_at_acceptance_not_only_checked_at_rcpt() {
    let backend = fake();
    backend.keys.lock().unwrap().insert(carol());
    *backend.gateway_allows.lock().unwrap() = Some(1);
    let mut first = authenticated(backend.clone(), default_policy(), submission()).await;
    let mut second = authenticated(backend.clone(), default_policy(), submission()).await;
    for c in [&mut first, &mut second] {
        c.send(&format!("MAIL FROM:<{}>", alice())).await;
        assert_eq!(
            c.send("RCPT TO:<david@example.com>").await,
            "250 2.1.5 Recipient OK"
        );
        c.send("DATA").await;
        c.raw(&submitted(&alice(), "david@example.com")).await;
    }
    assert_eq!(first.send(".").await, "250 2.0.0 Message queued");
    assert_eq!(
        second.send(".").await,
        "550 5.7.1 daily limit of 1 clearnet recipients reached"
    );
    assert_eq!(backend.enqueued.lock().unwrap().len(), 1);
    assert_eq!(*backend.gateway_reserved.lock().unwrap(), 1);

    // A message refused after the reservation (an onion recipient without a key yet) gives
    // it back, so the client's retry is not counted twice.
    *backend.gateway_allows.lock().unwrap() = Some(2);
    first.send(&format!("MAIL FROM:<{}>", alice())).await;
    first.send("RCPT TO:<erin@example.com>").await;
    assert_eq!(
        first.send(&format!("RCPT TO:<{}>", bob())).await,
        "250 2.1.5 Recipient OK"
    );
    first.send("DATA").await;
    first.raw(&submitted(&alice(), &bob())).await;
    assert!(first.send(".").await.starts_with("450 4.7.0 no key for"));
    assert_eq!(*backend.gateway_reserved.lock().unwrap(), 1);
}

#[tokio::test]
async fn clearnet_recipients_are_refused_and_missing_keys_wait() {
    let backend = fake();
    let mut c = authenticated(backend.clone(), default_policy(), submission()).await;
    c.send(&format!("MAIL FROM:<{}>", alice())).await;
    assert_eq!(
        c.send("RCPT TO:<someone@example.com>").await,
        "550 5.7.1 this carrier does not offer clearnet mail"
    );
    assert_eq!(
        c.send(&format!("RCPT TO:<{}>", carol())).await,
        "250 2.1.5 Recipient OK"
    );
    c.send("DATA").await;
    c.raw(&submitted(&alice(), &carol())).await;
    assert_eq!(
        c.send(".").await,
        format!("450 4.7.0 no key for <{}> yet; try again", carol())
    );
    assert!(backend.enqueued.lock().unwrap().is_empty());

    // A recipient that revoked its address: permanent, with the reason (issue 21).
    backend.revoked.lock().unwrap().insert(carol());
    c.send(&format!("MAIL FROM:<{}>", alice())).await;
    c.send(&format!("RCPT TO:<{}>", carol())).await;
    c.send("DATA").await;
    c.raw(&submitted(&alice(), &carol())).await;
    assert_eq!(
        c.send(".").await,
        format!(
            "550 5.1.6 <{}> is revoked by its owner; mail to it is not read",
            carol()
        )
    );
    assert!(backend.enqueued.lock().unwrap().is_empty());
}

#[tokio::test]
async fn submitted_mail_is_cleaned_signed_encrypted_queued_and_copied_to_sent() {
    let backend = fake();
    backend.keys.lock().unwrap().insert(carol());
    let mut c = authenticated(backend.clone(), default_policy(), submission()).await;
    c.send(&format!("MAIL FROM:<{}> ENVID=e1 RET=FULL", alice()))
        .await;
    c.send(&format!("RCPT TO:<{}> NOTIFY=SUCCESS,FAILURE", carol()))
        .await;
    c.send("DATA").await;
    c.raw(&submitted(&alice(), &carol())).await;
    assert_eq!(c.send(".").await, "250 2.0.0 Message queued");

    let signed = backend.encrypted_for.lock().unwrap();
    assert_eq!(signed[0].signer_identity_id, "id-alice");
    assert_eq!(signed[0].recipients, vec![carol()]);
    assert!(signed[0].add_autocrypt_header);
    let plaintext = String::from_utf8(signed[0].message.clone()).unwrap();
    assert!(!plaintext.contains("X-Mailer") && !plaintext.contains("Received"));
    assert!(plaintext.contains("Subject: Lunch?"));
    assert!(plaintext.contains(&format!("@{ALICE_ONION}>\r\n")));
    assert!(plaintext.contains("Date: "));

    let enqueued = backend.enqueued.lock().unwrap();
    assert_eq!(enqueued.len(), 1);
    let queued = &enqueued[0];
    assert_eq!(queued.origin, Origin::Submission as i32);
    assert_eq!(queued.account_id, "acct-alice");
    assert_eq!(queued.sender_identity_id, "id-alice");
    assert_eq!(queued.reverse_path, alice());
    assert_eq!(queued.envelope_id, "e1");
    assert_eq!(queued.recipients[0].notify.len(), 2);
    assert!(!queued.idempotency_key.is_empty());
    assert!(queued.message_id.ends_with(&format!("@{ALICE_ONION}>")));
    assert!(String::from_utf8_lossy(&queued.message).contains("multipart/encrypted"));

    let delivered = backend.delivered.lock().unwrap();
    assert_eq!(delivered[0].mailbox, Mailbox::Sent as i32);
    assert_eq!(delivered[0].identity_id, "id-alice");
    assert_eq!(delivered[0].flags, vec!["\\Seen".to_owned()]);
    assert_eq!(delivered[0].verification, SenderVerification::Local as i32);
    assert_eq!(delivered[0].message, signed[0].message);
}

#[tokio::test]
async fn each_blind_recipient_gets_its_own_copy_and_no_copy_names_it() {
    let backend = fake();
    backend.keys.lock().unwrap().insert(bob());
    backend.keys.lock().unwrap().insert(carol());
    let mut c = authenticated(backend.clone(), default_policy(), submission()).await;
    c.send(&format!("MAIL FROM:<{}>", alice())).await;
    c.send(&format!("RCPT TO:<{}>", bob())).await;
    c.send(&format!("RCPT TO:<{}>", carol())).await;
    c.send("DATA").await;
    let message = format!(
        "From: Alice <{}>\r\nTo: Bob <{}>\r\nBcc: {},\r\n undisclosed\r\nSubject: Party\r\n\r\nShh.\r\n",
        alice(),
        bob(),
        carol()
    );
    c.raw(message.as_bytes()).await;
    assert_eq!(c.send(".").await, "250 2.0.0 Message queued");

    // One sealed copy for the recipients To names, one for the blind one: each encrypted
    // (PKESK, intended-recipient fingerprints) to its own recipients only.
    let signed = backend.encrypted_for.lock().unwrap();
    assert_eq!(signed.len(), 2);
    assert_eq!(signed[0].recipients, vec![bob()]);
    assert_eq!(signed[1].recipients, vec![carol()]);
    for copy in signed.iter() {
        let plaintext = String::from_utf8(copy.message.clone()).unwrap();
        assert!(
            !plaintext.to_ascii_lowercase().contains("bcc"),
            "{plaintext}"
        );
        assert!(!plaintext.contains("undisclosed"), "{plaintext}");
        assert!(
            plaintext.contains("Subject: Party\r\n") && plaintext.ends_with("\r\n\r\nShh.\r\n"),
            "{plaintext}"
        );
    }
    let enqueued = backend.enqueued.lock().unwrap();
    let queued: Vec<Vec<String>> = enqueued
        .iter()
        .map(|request| {
            request
                .recipients
                .iter()
                .map(|r| r.address.clone())
                .collect()
        })
        .collect();
    assert_eq!(queued, vec![vec![bob()], vec![carol()]]);
}

#[tokio::test]
async fn the_hourly_limit_per_account_defers_with_450() {
    let backend = fake();
    backend.keys.lock().unwrap().insert(carol());
    let mut c = authenticated(
        backend.clone(),
        policy(PlaintextPolicy::Refuse, Limits::default(), 1),
        submission(),
    )
    .await;
    for expected in [
        "250 2.0.0 Message queued",
        "450 4.7.0 Hourly sending limit reached, try again later",
    ] {
        c.send(&format!("MAIL FROM:<{}>", alice())).await;
        c.send(&format!("RCPT TO:<{}>", carol())).await;
        c.send("DATA").await;
        c.raw(&submitted(&alice(), &carol())).await;
        assert_eq!(c.send(".").await, expected);
    }
    assert_eq!(backend.enqueued.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn listener_caps_open_sessions_and_offers_auth_to_loopback() {
    use onionpost_smtp_in::module::{Kind, serve};
    let limits = Limits {
        max_sessions: 1,
        ..Limits::default()
    };
    let policy = policy(PlaintextPolicy::Refuse, limits, 500);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(serve(
        listener,
        fake(),
        policy.clone(),
        Kind::Submission(None),
        stop.clone(),
    ));

    let first = tokio::net::TcpStream::connect(address).await.unwrap();
    let (read, mut write) = tokio::io::split(first);
    let mut read = BufReader::new(read);
    let mut line = String::new();
    read.read_line(&mut line).await.unwrap();
    assert_eq!(line, "220 ESMTP ready\r\n");
    write.write_all(b"EHLO client\r\n").await.unwrap();
    let mut last = String::new();
    while !last.starts_with("250 ") {
        last.clear();
        read.read_line(&mut last).await.unwrap();
    }
    assert_eq!(last, "250 AUTH PLAIN LOGIN\r\n");
    assert_eq!(policy.stats.snapshot().submission_listeners, 1);

    let second = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut second = BufReader::new(second);
    let mut refused = String::new();
    second.read_line(&mut refused).await.unwrap();
    assert_eq!(refused, "421 4.7.0 Too busy, try again later\r\n");
    stop.cancel();
}

/// Issue 18: each identity's listener has its own session limit within a carrier-wide ceiling,
/// so filling one identity's onion leaves another answering normally.
#[tokio::test]
async fn filling_one_identitys_listener_leaves_another_answering() {
    use onionpost_smtp_in::module::{Kind, serve};
    let limits = Limits {
        max_sessions: 3,
        max_sessions_per_listener: 1,
        ..Limits::default()
    };
    let policy = policy(PlaintextPolicy::Refuse, limits, 500);
    let stop = tokio_util::sync::CancellationToken::new();
    let mut addresses = Vec::new();
    for identity in ["id-alice", "id-bob"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addresses.push(listener.local_addr().unwrap());
        tokio::spawn(serve(
            listener,
            fake(),
            policy.clone(),
            Kind::Mx(identity.to_owned()),
            stop.clone(),
        ));
    }
    async fn greeting(address: std::net::SocketAddr) -> (String, tokio::net::TcpStream) {
        let stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
            .await
            .expect("greeting in time")
            .unwrap();
        (line, reader.into_inner())
    }
    let (first, _held) = greeting(addresses[0]).await;
    assert_eq!(first, "220 ESMTP ready\r\n");
    let (refused, _) = greeting(addresses[0]).await;
    assert_eq!(refused, "421 4.7.0 Too busy, try again later\r\n");
    let (other, _other_held) = greeting(addresses[1]).await;
    assert_eq!(
        other, "220 ESMTP ready\r\n",
        "another identity still answers"
    );
    stop.cancel();
}

// STARTTLS on the clearnet submission listener.

/// A TLS acceptor with a freshly generated self-signed certificate, and a client configuration
/// that trusts exactly that certificate.
fn tls_pair(
    dir: &std::path::Path,
) -> (
    tokio_rustls::TlsAcceptor,
    tokio_rustls::TlsConnector,
    std::path::PathBuf,
) {
    use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};
    let secret = onionpost_runtime::seal::CarrierSecret::from_text(&"t".repeat(40)).unwrap();
    let acceptor =
        onionpost_runtime::tls::acceptor("submission", None, None, dir, &secret).unwrap();
    let cert_path = dir.join("submission-tls-cert.pem");
    let pem = std::fs::read(&cert_path).unwrap();
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (
        acceptor,
        tokio_rustls::TlsConnector::from(Arc::new(config)),
        cert_path,
    )
}

/// Writes one command and reads its whole reply, CRLFs kept, on any stream.
async fn exchange<R, W>(reader: &mut BufReader<R>, writer: &mut W, line: &str) -> String
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    writer
        .write_all(format!("{line}\r\n").as_bytes())
        .await
        .unwrap();
    let mut all = String::new();
    loop {
        let mut reply = String::new();
        reader.read_line(&mut reply).await.unwrap();
        all.push_str(&reply);
        if reply.as_bytes().get(3) != Some(&b'-') {
            return all;
        }
    }
}

#[tokio::test]
async fn starttls_comes_before_auth_off_loopback_and_state_is_reset() {
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, connector, _) = tls_pair(dir.path());
    let mode = Mode::Submission {
        onion_identity: None,
        auth_allowed: false,
    };
    let (client, server) = tokio::io::duplex(1 << 20);
    tokio::spawn(
        Session::new(fake(), default_policy(), mode)
            .with_starttls(acceptor)
            .run(server),
    );
    let (read, mut write) = tokio::io::split(client);
    let mut read = BufReader::new(read);
    let mut greeting = String::new();
    read.read_line(&mut greeting).await.unwrap();
    assert_eq!(greeting, "220 ESMTP ready\r\n");
    let ehlo = exchange(&mut read, &mut write, "EHLO client").await;
    assert!(ehlo.ends_with("250 STARTTLS\r\n"), "{ehlo}");
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    let refused = exchange(&mut read, &mut write, "AUTH PLAIN AGFsaWNlAHNlY3JldCBwYXNz").await;
    assert!(refused.starts_with("538 5.7.11 "), "{refused}");
    assert_eq!(
        exchange(&mut read, &mut write, "STARTTLS").await,
        "220 2.0.0 Ready to start TLS\r\n"
    );
    assert!(read.buffer().is_empty());
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector
        .connect(name, read.into_inner().unsplit(write))
        .await
        .unwrap();
    let (read, mut write) = tokio::io::split(tls);
    let mut read = BufReader::new(read);
    // Over TLS there is no second greeting, and what came before is forgotten: the client
    // greets again, and now AUTH is offered.
    assert_eq!(
        exchange(&mut read, &mut write, &format!("MAIL FROM:<{}>", alice())).await,
        "503 5.5.1 Send EHLO first\r\n"
    );
    let ehlo = exchange(&mut read, &mut write, "EHLO client").await;
    assert!(ehlo.ends_with("250 AUTH PLAIN LOGIN\r\n"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert_eq!(
        exchange(&mut read, &mut write, "STARTTLS").await,
        "503 5.5.1 TLS already active\r\n"
    );
    assert_eq!(
        exchange(&mut read, &mut write, "AUTH PLAIN AGFsaWNlAHNlY3JldCBwYXNz").await,
        "235 2.7.0 Authentication successful\r\n"
    );
}

#[tokio::test]
async fn commands_pipelined_behind_starttls_close_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, _, _) = tls_pair(dir.path());
    let mode = Mode::Submission {
        onion_identity: None,
        auth_allowed: false,
    };
    let (client, server) = tokio::io::duplex(1 << 20);
    tokio::spawn(
        Session::new(fake(), default_policy(), mode)
            .with_starttls(acceptor)
            .run(server),
    );
    let (read, write) = tokio::io::split(client);
    let mut c = Client {
        reader: BufReader::new(read),
        writer: write,
    };
    c.reply().await;
    c.send("EHLO client").await;
    c.raw(b"STARTTLS\r\nAUTH PLAIN AGFsaWNlAHNlY3JldCBwYXNz\r\n")
        .await;
    assert_eq!(
        c.reply().await,
        "554 5.5.1 Commands pipelined after STARTTLS; closing connection"
    );
    assert_eq!(c.reply().await, "<eof>");
}

/// Python's smtplib, a real client: STARTTLS with the generated certificate, then login and a
/// message, on the listener the carrier runs.
#[tokio::test]
async fn smtplib_starttls_login_and_send_on_the_submission_listener() {
    use onionpost_smtp_in::module::{Kind, serve};
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, _, cert_path) = tls_pair(dir.path());
    let backend = fake();
    backend.keys.lock().unwrap().insert(bob());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(serve(
        listener,
        backend.clone(),
        default_policy(),
        Kind::Submission(Some(acceptor)),
        stop.clone(),
    ));
    let script = r#"
import smtplib, ssl, sys
host, port, cafile, sender, rcpt = sys.argv[1:6]
context = ssl.create_default_context(cafile=cafile)
with smtplib.SMTP(host, int(port), timeout=30) as s:
    s.ehlo("client")
    assert s.has_extn("starttls"), s.esmtp_features
    s.starttls(context=context)
    s.ehlo("client")
    s.login("alice", "secret pass")
    s.sendmail(sender, [rcpt], "From: " + sender + "\r\nTo: " + rcpt + "\r\nSubject: tls\r\n\r\nover tls\r\n")
print("sent over", s.sock.version() if s.sock else "closed")
"#;
    let output = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        // The generated certificate names localhost.
        .arg("localhost")
        .arg(address.port().to_string())
        .arg(&cert_path)
        .arg(alice())
        .arg(bob())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "smtplib: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(backend.enqueued.lock().unwrap().len(), 1);
    stop.cancel();
}

#[tokio::test]
async fn an_onion_address_with_a_bad_checksum_is_refused_at_rcpt_with_the_reason() {
    let backend = fake();
    backend.keys.lock().unwrap().insert(carol());
    let mut c = authenticated(backend.clone(), default_policy(), submission()).await;
    c.send(&format!("MAIL FROM:<{}>", alice())).await;
    let host = OnionHost::parse(CAROL_ONION).unwrap();
    let (mistyped, _) = examples::refused_forms(&host).remove(0);
    assert_eq!(
        c.send(&format!("RCPT TO:<carol@{mistyped}>")).await,
        "553 5.1.3 Bad recipient address: the onion address checksum is wrong (mistyped?)"
    );
    // The transaction goes on without it; nothing is queued for the mistyped address.
    assert_eq!(
        c.send(&format!("RCPT TO:<{}>", carol())).await,
        "250 2.1.5 Recipient OK"
    );
    c.send("DATA").await;
    c.raw(&submitted(&alice(), &carol())).await;
    assert_eq!(c.send(".").await, "250 2.0.0 Message queued");
    let enqueued = backend.enqueued.lock().unwrap();
    assert!(
        enqueued
            .iter()
            .flat_map(|request| &request.recipients)
            .all(|recipient| recipient.address == carol()),
        "{enqueued:?}"
    );
}

/// RCPT for `local` at every accepted spelling of `onion` (each taken) and at each refused form
/// (each refused with the parser's reason).
async fn rcpt_every_spelling(c: &mut Client, local: &str, onion: &str) {
    let host = OnionHost::parse(onion).unwrap();
    for form in examples::accepted_forms(&host) {
        assert_eq!(
            c.send(&format!("RCPT TO:<{local}@{form}>")).await,
            "250 2.1.5 Recipient OK",
            "{form}"
        );
    }
    for (form, kind) in examples::refused_forms(&host) {
        assert_eq!(
            c.send(&format!("RCPT TO:<{local}@{form}>")).await,
            format!("{BAD_ONION_ADDRESS} {kind}"),
            "{form}"
        );
    }
}

#[tokio::test]
async fn shared_address_forms_smtp_in_rcpt_on_submission_and_mx() {
    // Submission: a recipient's onion in every spelling.
    let backend = fake();
    backend.keys.lock().unwrap().insert(carol());
    let mut c = authenticated(backend.clone(), default_policy(), submission()).await;
    c.send(&format!("MAIL FROM:<{}>", alice())).await;
    rcpt_every_spelling(&mut c, "Carol", CAROL_ONION).await;
    // The MX: the identity's own onion in every spelling.
    let (mut c, _) = Client::start(fake(), default_policy(), mx()).await;
    c.send("EHLO peer").await;
    c.send(&format!("MAIL FROM:<{}>", carol())).await;
    rcpt_every_spelling(&mut c, "alice", ALICE_ONION).await;
}

// Proof-of-work stamps (issue 22).

fn stamped_policy(bits: u32, step: u32) -> Arc<Policy> {
    Arc::new(
        Policy::new(
            PlaintextPolicy::Refuse,
            Limits::default(),
            100,
            Stats::default(),
        )
        .with_inbound(onionpost_smtp_in::InboundPolicy {
            stamp_bits: bits,
            stamp_step_messages: step,
            stamp_max_bits: bits + 8,
            max_messages_per_hour_per_identity: 0,
            max_messages_per_hour_per_sender: 0,
        }),
    )
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A stamp of `bits` for this recipient, sender and message text (as the server stores it).
fn mint(recipient: &str, sender: &str, body: &[u8], bits: u32) -> String {
    let digest = onionpost_runtime::stamp::message_digest(body);
    let stop = std::sync::atomic::AtomicBool::new(false);
    onionpost_runtime::stamp::mint(recipient, sender, &digest, now(), bits, &stop)
        .unwrap()
        .to_string()
}

/// One transaction on alice's MX from `from`, RCPT with `stamp` if given: the RCPT reply, and
/// the reply to the end of data when the RCPT was taken.
async fn send_stamped(
    client: &mut Client,
    from: &str,
    stamp: Option<&str>,
    body: &[u8],
) -> (String, Option<String>) {
    assert!(
        client
            .send(&format!("MAIL FROM:<{from}>"))
            .await
            .starts_with("250")
    );
    let rcpt = match stamp {
        Some(stamp) => {
            client
                .send(&format!("RCPT TO:<{}> XSTAMP={stamp}", alice()))
                .await
        }
        None => client.send(&format!("RCPT TO:<{}>", alice())).await,
    };
    if !rcpt.starts_with("250") {
        assert!(client.send("RSET").await.starts_with("250"));
        return (rcpt, None);
    }
    assert!(client.send("DATA").await.starts_with("354"));
    client.raw(body).await;
    let end = client.send(".").await;
    (rcpt, Some(end))
}

#[tokio::test]
async fn a_stranger_pays_with_a_stamp_bound_to_its_message_once() {
    let backend = strangers_fake();
    let policy = stamped_policy(8, 1000);
    let (mut client, _) = Client::start(backend.clone(), policy, mx()).await;
    let ehlo = client.send("EHLO peer").await;
    assert!(ehlo.ends_with("250 XSTAMP 8"), "{ehlo}");
    let stranger = "dave@example.onion";
    let body = encrypted(b"FIRST\r\n");

    let (rcpt, _) = send_stamped(&mut client, stranger, None, &body).await;
    assert!(rcpt.starts_with("450 4.7.1 XSTAMP 8:"), "{rcpt}");

    let stamp = mint(&alice(), stranger, &body, 8);
    let (rcpt, end) = send_stamped(&mut client, stranger, Some(&stamp), &body).await;
    assert!(rcpt.starts_with("250"), "{rcpt}");
    assert_eq!(end.as_deref(), Some("250 2.0.0 Message accepted"));
    assert_eq!(backend.enqueued.lock().unwrap().len(), 1, "verified later");

    // The same stamp again: spent.
    let (_, end) = send_stamped(&mut client, stranger, Some(&stamp), &body).await;
    assert_eq!(
        end.as_deref(),
        Some(onionpost_smtp_in::inbound::STAMP_REUSED)
    );
    // A stamp minted for another message, or another sender, holds no work here.
    let other = mint(&alice(), stranger, &encrypted(b"OTHER FIRST\r\n"), 8);
    let (_, end) = send_stamped(&mut client, stranger, Some(&other), &body).await;
    assert_eq!(
        end.as_deref(),
        Some(onionpost_smtp_in::inbound::STAMP_MISMATCH)
    );
    let borrowed = mint(&alice(), "erin@example.onion", &body, 8);
    let (_, end) = send_stamped(&mut client, stranger, Some(&borrowed), &body).await;
    assert_eq!(
        end.as_deref(),
        Some(onionpost_smtp_in::inbound::STAMP_MISMATCH)
    );
    // Too weak for what is asked, malformed, or from another hour.
    let weak = mint(&alice(), stranger, &body, 3);
    let (_, end) = send_stamped(&mut client, stranger, Some(&weak), &body).await;
    assert!(end.unwrap().starts_with("450 4.7.1 XSTAMP 8:"));
    let (rcpt, _) = send_stamped(&mut client, stranger, Some("1.8.x.y"), &body).await;
    assert!(rcpt.starts_with("501 5.5.4 Bad XSTAMP parameter"), "{rcpt}");
    let stale = format!("1.8.{}.0000000000000000", now() - 7200);
    let (rcpt, _) = send_stamped(&mut client, stranger, Some(&stale), &body).await;
    assert!(
        rcpt.starts_with("450 4.7.1 XSTAMP 8: the stamp's time"),
        "{rcpt}"
    );
    assert_eq!(backend.enqueued.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_correspondent_sends_without_a_stamp_but_a_forged_one_pays() {
    let backend = strangers_fake();
    backend
        .correspondents
        .lock()
        .unwrap()
        .insert(("id-alice".to_owned(), carol()));
    let (mut client, _) = Client::start(backend.clone(), stamped_policy(8, 1000), mx()).await;
    client.send("EHLO peer").await;
    let (rcpt, end) = send_stamped(&mut client, &carol(), None, &encrypted(b"GOOD\r\n")).await;
    assert!(rcpt.starts_with("250"), "{rcpt}");
    assert_eq!(end.as_deref(), Some("250 2.0.0 Message accepted"));
    assert_eq!(backend.delivered.lock().unwrap().len(), 1);

    // Carol's address with a signature that is not hers: asked for a stamp after DATA.
    let forged = encrypted(b"FORGED\r\n");
    let (rcpt, end) = send_stamped(&mut client, &carol(), None, &forged).await;
    assert!(rcpt.starts_with("250"), "{rcpt}");
    assert!(end.unwrap().starts_with("450 4.7.1 XSTAMP 8:"));
    // With a stamp it is taken like a stranger's (marked as what it is: a failed signature).
    let stamp = mint(&alice(), &carol(), &forged, 8);
    let (_, end) = send_stamped(&mut client, &carol(), Some(&stamp), &forged).await;
    assert_eq!(end.as_deref(), Some("250 2.0.0 Message accepted"));
    let delivered = backend.delivered.lock().unwrap();
    assert_eq!(delivered.len(), 2);
    assert_eq!(delivered[1].verification, SenderVerification::Failed as i32);
}

#[tokio::test]
async fn one_identitys_load_raises_its_own_difficulty_only() {
    let backend = strangers_fake();
    let policy = stamped_policy(6, 2);
    let (mut alice_mx, _) = Client::start(backend.clone(), policy.clone(), mx()).await;
    alice_mx.send("EHLO peer").await;
    for n in 0..4 {
        let body = encrypted(format!("{n} FIRST\r\n").as_bytes());
        let sender = format!("s{n}@example.onion");
        let bits = 6 + n / 2;
        let stamp = mint(&alice(), &sender, &body, bits);
        let (_, end) = send_stamped(&mut alice_mx, &sender, Some(&stamp), &body).await;
        assert_eq!(end.as_deref(), Some("250 2.0.0 Message accepted"), "{n}");
    }
    let ehlo = alice_mx.send("EHLO peer").await;
    assert!(ehlo.ends_with("250 XSTAMP 8"), "{ehlo}");
    let bob_mx = Mode::Ingress {
        identity_id: "id-bob".to_owned(),
    };
    let (mut bob_client, _) = Client::start(backend, policy, bob_mx).await;
    let ehlo = bob_client.send("EHLO peer").await;
    assert!(
        ehlo.ends_with("250 XSTAMP 6"),
        "a co-hosted identity: {ehlo}"
    );
}

#[tokio::test]
async fn hourly_limits_per_identity_and_sender_answer_4xx() {
    let backend = fake();
    let policy = Arc::new(
        Policy::new(
            PlaintextPolicy::Refuse,
            Limits::default(),
            100,
            Stats::default(),
        )
        .with_inbound(onionpost_smtp_in::InboundPolicy {
            max_messages_per_hour_per_identity: 3,
            max_messages_per_hour_per_sender: 2,
            ..Default::default()
        }),
    );
    let (mut client, _) = Client::start(backend, policy, mx()).await;
    client.send("EHLO peer").await;
    let body = encrypted(b"GOOD\r\n");
    for _ in 0..2 {
        let (rcpt, _) = send_stamped(&mut client, &carol(), None, &body).await;
        assert!(rcpt.starts_with("250"), "{rcpt}");
    }
    let (rcpt, _) = send_stamped(&mut client, &carol(), None, &body).await;
    assert_eq!(rcpt, onionpost_smtp_in::inbound::SENDER_BUSY);
    let (rcpt, _) = send_stamped(&mut client, "dave@example.onion", None, &body).await;
    assert!(rcpt.starts_with("250"), "{rcpt}");
    let (rcpt, _) = send_stamped(&mut client, "erin@example.onion", None, &body).await;
    assert_eq!(rcpt, onionpost_smtp_in::inbound::IDENTITY_BUSY);
}

#[tokio::test]
async fn a_refused_sender_is_refused_at_rcpt_and_only_a_correspondent_is_delivered_at_once() {
    let backend = fake();
    let mallory = "mallory@example.onion";
    backend
        .blocked
        .lock()
        .unwrap()
        .insert(("id-alice".to_owned(), mallory.to_owned()));
    let (mut client, _) = Client::start(
        backend.clone(),
        policy(PlaintextPolicy::Refuse, Limits::default(), 100),
        mx(),
    )
    .await;
    client.send("EHLO peer").await;
    let (rcpt, _) = send_stamped(&mut client, mallory, None, &encrypted(b"GOOD\r\n")).await;
    assert_eq!(rcpt, onionpost_smtp_in::session::SENDER_REFUSED);
    // A sender alice's identity does not correspond with, even one whose key the account
    // pinned (through another identity), is not delivered while it waits: the queue takes it
    // (and delivers it to Requests), as it does an unknown sender's.
    *backend.unknown_is_stranger.lock().unwrap() = true;
    let (rcpt, end) = send_stamped(&mut client, &carol(), None, &encrypted(b"REQUEST\r\n")).await;
    assert!(rcpt.starts_with("250"), "{rcpt}");
    assert_eq!(end.as_deref(), Some("250 2.0.0 Message accepted"));
    assert!(backend.delivered.lock().unwrap().is_empty());
    assert_eq!(backend.enqueued.lock().unwrap().len(), 1);
    assert_eq!(
        backend.enqueued.lock().unwrap()[0].origin,
        Origin::Received as i32
    );
    // A correspondent's verified mail is delivered while it waits.
    backend
        .correspondents
        .lock()
        .unwrap()
        .insert(("id-alice".to_owned(), carol()));
    let (_, end) = send_stamped(&mut client, &carol(), None, &encrypted(b"GOOD\r\n")).await;
    assert_eq!(end.as_deref(), Some("250 2.0.0 Message accepted"));
    let delivered = backend.delivered.lock().unwrap();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].mailbox, Mailbox::Inbox as i32);
}
