//! The gRPC adapter in memory: the `Keys` trait implementation over a real SQLite store, with
//! the WKD client replaced by a map of what each onion "publishes". Covers each use case and
//! the error each bad input must give.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use onionpost_keys::fetch::{KeyFetcher, OnionKeys};
use onionpost_keys::grpc::KeysGrpc;
use onionpost_keys::service::{KeysService, WkdDirectories};
use onionpost_keys::{
    Address, CarrierSecret, Cert, IdentityKey, KeysError, autocrypt, carrier_list, introduction,
    parse_cert, pgp_mime, pinning, revocation, rotation, wkd,
};
use onionpost_proto::keys::v1 as pb;
use onionpost_proto::keys::v1::keys_server::Keys;
use onionpost_runtime::Database;
use sequoia_openpgp::serialize::SerializeInto;
use tonic::{Code, Request};

/// What the fake network answers for each address.
#[derive(Default)]
struct FakeOnions {
    published: Mutex<HashMap<String, Cert>>,
    /// Every fetch: (address, on whose behalf).
    asked: Mutex<Vec<(String, String)>>,
    /// Signed carrier lists, by address.
    carrier_lists: Mutex<HashMap<String, Vec<u8>>>,
    unreachable: Mutex<Vec<String>>,
}

#[async_trait]
impl KeyFetcher for FakeOnions {
    async fn fetch(&self, address: &Address, on_behalf_of: &str) -> Result<Cert, KeysError> {
        self.asked
            .lock()
            .unwrap()
            .push((address.to_string(), on_behalf_of.to_owned()));
        if self
            .unreachable
            .lock()
            .unwrap()
            .contains(&address.to_string())
        {
            return Err(KeysError::Fetch("no circuit".into()));
        }
        let cert = self
            .published
            .lock()
            .unwrap()
            .get(&address.to_string())
            .cloned()
            .ok_or(KeysError::KeyNotFound)?;
        wkd::bind_to_address(cert, address)
    }

    async fn fetch_carriers(
        &self,
        address: &Address,
        _on_behalf_of: &str,
    ) -> Result<Option<Vec<u8>>, KeysError> {
        Ok(self
            .carrier_lists
            .lock()
            .unwrap()
            .get(&address.to_string())
            .cloned())
    }
}

/// The onion service's keys: onion key bytes by identity, and the onion each key belongs to.
#[derive(Default)]
struct FakeOnionKeys {
    by_identity: Mutex<HashMap<String, Vec<u8>>>,
    onion_of_key: Mutex<HashMap<Vec<u8>, String>>,
}

#[async_trait]
impl OnionKeys for FakeOnionKeys {
    async fn export_onion_key(
        &self,
        identity_id: &str,
    ) -> Result<(String, zeroize::Zeroizing<Vec<u8>>), tonic::Status> {
        let key = self
            .by_identity
            .lock()
            .unwrap()
            .get(identity_id)
            .cloned()
            .ok_or_else(|| tonic::Status::not_found("no onion service for this identity"))?;
        let onion = self.onion_of_key.lock().unwrap()[&key].clone();
        Ok((onion, zeroize::Zeroizing::new(key)))
    }

    async fn import_onion(
        &self,
        identity_id: &str,
        secret_key: &[u8],
    ) -> Result<String, tonic::Status> {
        let onion = self
            .onion_of_key
            .lock()
            .unwrap()
            .get(secret_key)
            .cloned()
            .ok_or_else(|| tonic::Status::invalid_argument("not an onion key"))?;
        self.by_identity
            .lock()
            .unwrap()
            .insert(identity_id.to_owned(), secret_key.to_vec());
        Ok(onion)
    }
}

struct Harness {
    keys: KeysGrpc,
    service: KeysService,
    onions: Arc<FakeOnions>,
    onion_keys: Arc<FakeOnionKeys>,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    harness_with_requests(false).await
}

/// A harness whose keys service turns verified strangers' mail into contact requests
/// (`accounts.contact_requests`) or not.
async fn harness_with_requests(contact_requests: bool) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let database = Database::open_sqlite(
        &dir.path().join("keys.sqlite3"),
        onionpost_keys::store::MIGRATIONS,
    )
    .await
    .unwrap();
    let onions = Arc::new(FakeOnions::default());
    let onion_keys = Arc::new(FakeOnionKeys::default());
    let secret = CarrierSecret::from_text("0123456789abcdef0123456789abcdef-test").unwrap();
    let service = KeysService::new(
        onionpost_keys::store::for_database(database, &secret),
        secret,
        onions.clone(),
        onion_keys.clone(),
        WkdDirectories::default(),
    )
    .with_contact_requests(contact_requests);
    Harness {
        keys: KeysGrpc::new(service.clone()),
        service,
        onions,
        onion_keys,
        _dir: dir,
    }
}

fn address(local: &str, seed: u8) -> Address {
    Address::from_onion_key(local, &[seed; 32]).unwrap()
}

/// A peer elsewhere: its key generated here, published by the fake network.
fn peer(harness: &Harness, local: &str, seed: u8) -> IdentityKey {
    let key = IdentityKey::generate(&address(local, seed)).unwrap();
    publish(harness, &key.address().clone(), key.public_cert());
    key
}

fn publish(harness: &Harness, address: &Address, cert: Cert) {
    harness
        .onions
        .published
        .lock()
        .unwrap()
        .insert(address.to_string(), cert);
}

fn bytes(cert: &Cert) -> Vec<u8> {
    cert.export_to_vec().unwrap()
}

async fn create(harness: &Harness, id: &str, account: &str, address: &Address) -> pb::IdentityKey {
    harness
        .keys
        .create_identity_key(Request::new(pb::CreateIdentityKeyRequest {
            identity_id: id.into(),
            account_id: account.into(),
            address: address.to_string(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
}

async fn resolve(
    harness: &Harness,
    sender: &str,
    recipient: &Address,
    fetch: bool,
) -> pb::RecipientKey {
    let mut answer = harness
        .keys
        .resolve_recipient_keys(Request::new(pb::ResolveRecipientKeysRequest {
            sender_identity_id: sender.into(),
            recipients: vec![recipient.to_string()],
            fetch_missing: fetch,
        }))
        .await
        .unwrap()
        .into_inner();
    answer.recipients.remove(0)
}

fn status(answer: &pb::RecipientKey) -> pb::RecipientKeyStatus {
    pb::RecipientKeyStatus::try_from(answer.status).unwrap()
}

fn message(from: &Address, to: &Address, subject: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
         Message-ID: <m1@{}>\r\n\r\nhello over the onion\r\n",
        from.onion_host()
    )
    .into_bytes()
}

fn header(message: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    let head = text.split("\r\n\r\n").next().unwrap_or_default().to_owned();
    head.lines()
        .find(|line| {
            line.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
        .map(|line| line[name.len() + 1..].trim().to_owned())
}

#[tokio::test]
async fn identity_keys_are_created_once_and_described() {
    let harness = harness().await;
    let alice = address("alice", 1);
    let created = create(&harness, "id-alice", "acct-a", &alice).await;
    assert_eq!(created.address, alice.to_string());
    assert_eq!(created.custody, pb::KeyCustody::Carrier as i32);
    assert_eq!(
        parse_cert(&created.public_key)
            .unwrap()
            .fingerprint()
            .to_hex(),
        created.fingerprint
    );
    assert!(
        !parse_cert(&created.public_key).unwrap().is_tsk(),
        "no secret leaves"
    );

    // Idempotent on the identity id; a different address for it is refused.
    let again = create(&harness, "id-alice", "acct-a", &alice).await;
    assert_eq!(again.fingerprint, created.fingerprint);
    let conflict = harness
        .keys
        .create_identity_key(Request::new(pb::CreateIdentityKeyRequest {
            identity_id: "id-alice".into(),
            account_id: "acct-a".into(),
            address: address("other", 9).to_string(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists);
    let taken = harness
        .keys
        .create_identity_key(Request::new(pb::CreateIdentityKeyRequest {
            identity_id: "id-second".into(),
            account_id: "acct-a".into(),
            address: alice.to_string(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);
    let malformed = harness
        .keys
        .create_identity_key(Request::new(pb::CreateIdentityKeyRequest {
            identity_id: "id-x".into(),
            account_id: "acct-a".into(),
            address: "alice@example.org".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert!(
        malformed.message().contains("malformed address"),
        "{}",
        malformed.message()
    );

    let by_address = harness
        .keys
        .get_identity_key(Request::new(pb::GetIdentityKeyRequest {
            identity: Some(pb::get_identity_key_request::Identity::Address(
                alice.to_string().to_uppercase(),
            )),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_address.identity_id, "id-alice");
    let missing = harness
        .keys
        .get_identity_key(Request::new(pb::GetIdentityKeyRequest {
            identity: Some(pb::get_identity_key_request::Identity::IdentityId(
                "nope".into(),
            )),
        }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    for (format, media_type) in [
        (pb::QrFormat::Unspecified, "image/svg+xml"),
        (pb::QrFormat::Png, "image/png"),
    ] {
        let qr = harness
            .keys
            .get_identity_qr(Request::new(pb::GetIdentityQrRequest {
                identity_id: "id-alice".into(),
                format: format as i32,
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(qr.media_type, media_type);
        // URI schemes are case-insensitive (RFC 3986 §3.1); the domain writes it upper case.
        let (fingerprint, named) = onionpost_keys::qr::parse_openpgp4fpr(&qr.uri).unwrap();
        assert_eq!(fingerprint.to_hex(), created.fingerprint);
        assert_eq!(named.as_ref(), Some(&alice));
        assert!(!qr.image.is_empty());
    }

    // An account that keeps its own key: the carrier holds the public key only.
    let bob = address("bob", 2);
    let bob_key = IdentityKey::generate(&bob).unwrap();
    let client = harness
        .keys
        .create_identity_key(Request::new(pb::CreateIdentityKeyRequest {
            identity_id: "id-bob".into(),
            account_id: "acct-b".into(),
            address: bob.to_string(),
            client_public_key: bytes(&bob_key.public_cert()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(client.custody, pb::KeyCustody::Client as i32);
    assert_eq!(client.fingerprint, bob_key.fingerprint().to_hex());
    let cannot_sign = harness
        .keys
        .sign_and_encrypt(Request::new(pb::SignAndEncryptRequest {
            signer_identity_id: "id-bob".into(),
            recipients: vec![alice.to_string()],
            message: message(&bob, &alice, "hi"),
            add_autocrypt_header: true,
        }))
        .await
        .unwrap_err();
    assert_eq!(cannot_sign.code(), Code::FailedPrecondition);
}

/// The recipients an OpenPGP message's PKESK packets name, as any of its recipients (or
/// anyone holding a copy) can read them without a key.
fn pkesk_recipients(message: &[u8]) -> Vec<sequoia_openpgp::KeyHandle> {
    use sequoia_openpgp::parse::{PacketParser, PacketParserResult, Parse as _};
    const END: &str = "-----END PGP MESSAGE-----";
    let text = String::from_utf8_lossy(message);
    let begin = text
        .find("-----BEGIN PGP MESSAGE-----")
        .expect("an armored message");
    let end = text.find(END).expect("the armor's end") + END.len();
    let mut recipients = Vec::new();
    let mut parsed = PacketParser::from_bytes(text[begin..end].as_bytes()).unwrap();
    while let PacketParserResult::Some(parser) = parsed {
        if let sequoia_openpgp::Packet::PKESK(pkesk) = &parser.packet {
            recipients.extend(pkesk.recipient());
        }
        parsed = parser.next().unwrap().1;
    }
    recipients
}

/// Issue 18, item 9, in the packets: smtp-in seals one copy for the visible recipients and
/// one per blind one; each copy's PKESK packets name its own recipient (and the sender's own
/// key, for its Sent folder) and no other; `encrypted_to`, the certificates pgp_mime also
/// names as the signature's intended recipients, is the same two.
#[tokio::test]
async fn each_copy_names_only_its_own_recipients_in_its_openpgp_packets() {
    let harness = harness().await;
    let alice = address("alice", 1);
    create(&harness, "id-alice", "acct-a", &alice).await;
    let bob = peer(&harness, "bob", 2);
    let carol = peer(&harness, "carol", 3);
    let handles = |key: &IdentityKey| -> Vec<sequoia_openpgp::KeyHandle> {
        key.public_cert()
            .keys()
            .map(|key| key.key().key_handle())
            .collect()
    };
    for (to, blind) in [(&bob, &carol), (&carol, &bob)] {
        resolve(&harness, "id-alice", to.address(), true).await;
        let sealed = harness
            .keys
            .sign_and_encrypt(Request::new(pb::SignAndEncryptRequest {
                signer_identity_id: "id-alice".into(),
                recipients: vec![to.address().to_string()],
                message: message(&alice, to.address(), "party"),
                add_autocrypt_header: false,
            }))
            .await
            .unwrap()
            .into_inner();
        let named = pkesk_recipients(&sealed.message);
        assert_eq!(named.len(), 2, "the recipient and the sender: {named:?}");
        let names = |key: &IdentityKey| {
            named
                .iter()
                .any(|recipient| handles(key).iter().any(|handle| handle.aliases(recipient)))
        };
        assert!(names(to), "{} is not named", to.address());
        assert!(
            !names(blind),
            "{} is named in another's copy",
            blind.address()
        );
        assert_eq!(sealed.encrypted_to.len(), 2);
        assert!(!sealed.encrypted_to.contains(&blind.fingerprint().to_hex()));
    }
}

#[tokio::test]
async fn recipients_resolve_by_wkd_then_pin_and_mail_round_trips() {
    let harness = harness().await;
    let alice = address("alice", 1);
    create(&harness, "id-alice", "acct-a", &alice).await;
    let bob = peer(&harness, "bob", 2);

    assert_eq!(
        status(&resolve(&harness, "id-alice", bob.address(), false).await),
        pb::RecipientKeyStatus::Missing
    );
    let fetched = resolve(&harness, "id-alice", bob.address(), true).await;
    assert_eq!(status(&fetched), pb::RecipientKeyStatus::Fetched);
    assert_eq!(fetched.fingerprint, bob.fingerprint().to_hex());
    let pinned = resolve(&harness, "id-alice", bob.address(), false).await;
    assert_eq!(status(&pinned), pb::RecipientKeyStatus::Pinned);

    let clearnet = harness
        .keys
        .resolve_recipient_keys(Request::new(pb::ResolveRecipientKeysRequest {
            sender_identity_id: "id-alice".into(),
            recipients: vec!["Someone@Example.org".into(), bob.address().to_string()],
            fetch_missing: true,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(clearnet.recipients[0].address, "someone@example.org");
    assert_eq!(
        clearnet.recipients[0].status,
        pb::RecipientKeyStatus::Missing as i32
    );
    assert_eq!(
        clearnet.recipients[1].status,
        pb::RecipientKeyStatus::Pinned as i32
    );
    let broken_onion = harness
        .keys
        .resolve_recipient_keys(Request::new(pb::ResolveRecipientKeysRequest {
            sender_identity_id: "id-alice".into(),
            recipients: vec!["x@notbase32.onion".into()],
            fetch_missing: true,
        }))
        .await
        .unwrap_err();
    assert_eq!(broken_onion.code(), Code::InvalidArgument);

    let nobody = address("nobody", 3);
    assert_eq!(
        status(&resolve(&harness, "id-alice", &nobody, true).await),
        pb::RecipientKeyStatus::NotPublished
    );
    let offline = address("offline", 4);
    harness
        .onions
        .unreachable
        .lock()
        .unwrap()
        .push(offline.to_string());
    let unreachable = resolve(&harness, "id-alice", &offline, true).await;
    assert_eq!(status(&unreachable), pb::RecipientKeyStatus::Unreachable);
    assert!(unreachable.detail.contains("no circuit"));

    // A co-hosted identity's key is fetched over its onion exactly like a foreign one's (a
    // read from the store would answer faster and tell that the two share this carrier), on
    // a circuit of the asking identity's own.
    let carol = address("carol", 5);
    let carol_key = create(&harness, "id-carol", "acct-c", &carol).await;
    let unpublished = resolve(&harness, "id-alice", &carol, true).await;
    assert_eq!(status(&unpublished), pb::RecipientKeyStatus::NotPublished);
    let carol_cert = parse_cert(&carol_key.public_key).unwrap();
    publish(&harness, &carol, carol_cert);
    let local = resolve(&harness, "id-alice", &carol, true).await;
    assert_eq!(status(&local), pb::RecipientKeyStatus::Fetched);
    assert_eq!(local.fingerprint, carol_key.fingerprint);
    let asked = harness.onions.asked.lock().unwrap().clone();
    assert!(
        asked
            .iter()
            .filter(|(address, _)| address == &carol.to_string())
            .all(|(_, asker)| asker == "id-alice"),
        "{asked:?}"
    );

    // Alice writes to Bob: protected Subject, Autocrypt header, Bob can read and verify it.
    let sealed = harness
        .keys
        .sign_and_encrypt(Request::new(pb::SignAndEncryptRequest {
            signer_identity_id: "id-alice".into(),
            recipients: vec![bob.address().to_string()],
            message: message(&alice, bob.address(), "the real subject"),
            add_autocrypt_header: true,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sealed.encrypted_to.len(), 2);
    assert_eq!(sealed.encrypted_to[0], bob.fingerprint().to_hex());
    let wire = String::from_utf8_lossy(&sealed.message);
    assert!(!wire.contains("the real subject"));
    assert_eq!(header(&sealed.message, "Subject").as_deref(), Some("..."));
    assert!(header(&sealed.message, "Autocrypt").is_some());
    let alice_cert = parse_cert(
        &harness
            .keys
            .get_identity_key(Request::new(pb::GetIdentityKeyRequest {
                identity: Some(pb::get_identity_key_request::Identity::IdentityId(
                    "id-alice".into(),
                )),
            }))
            .await
            .unwrap()
            .into_inner()
            .public_key,
    )
    .unwrap();
    let opened =
        pgp_mime::open(&sealed.message, &[&bob], std::slice::from_ref(&alice_cert)).unwrap();
    assert_eq!(
        header(&opened.message, "Subject").as_deref(),
        Some("the real subject")
    );
    assert!(opened.verified_sender().is_ok());

    // A recipient without a pinned key fails naming the recipient.
    let unknown = harness
        .keys
        .sign_and_encrypt(Request::new(pb::SignAndEncryptRequest {
            signer_identity_id: "id-alice".into(),
            recipients: vec![nobody.to_string()],
            message: message(&alice, &nobody, "x"),
            add_autocrypt_header: false,
        }))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::FailedPrecondition);
    assert!(unknown.message().contains(&nobody.to_string()));

    // Bob answers: Alice's carrier decrypts, restores the Subject and verifies Bob.
    let reply = pgp_mime::seal(
        &message(bob.address(), &alice, "re: subject"),
        &bob,
        std::slice::from_ref(&alice_cert),
    )
    .unwrap();
    let decrypted = harness
        .keys
        .decrypt_and_verify(Request::new(pb::DecryptAndVerifyRequest {
            recipient_identity_id: "id-alice".into(),
            message: reply.clone(),
            fetch_sender_key: false,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decrypted.signature, pb::SignatureStatus::Verified as i32);
    assert_eq!(decrypted.from_address, bob.address().to_string());
    assert_eq!(decrypted.signer_fingerprint, bob.fingerprint().to_hex());
    assert_eq!(decrypted.signer_key_source, pb::KeySource::Wkd as i32);
    assert_eq!(
        header(&decrypted.message, "Subject").as_deref(),
        Some("re: subject")
    );

    // Damaged, not for us, not PGP/MIME: typed errors with clear words.
    let mut corrupted = reply.clone();
    let middle = corrupted.len() / 2;
    corrupted.truncate(middle);
    let truncated = harness
        .keys
        .decrypt_and_verify(Request::new(pb::DecryptAndVerifyRequest {
            recipient_identity_id: "id-alice".into(),
            message: corrupted,
            fetch_sender_key: false,
        }))
        .await
        .unwrap_err();
    assert_eq!(
        truncated.code(),
        Code::InvalidArgument,
        "{}",
        truncated.message()
    );
    let dave = IdentityKey::generate(&address("dave", 6)).unwrap();
    let for_dave = pgp_mime::seal(
        &message(bob.address(), dave.address(), "x"),
        &bob,
        &[dave.public_cert()],
    )
    .unwrap();
    let not_ours = harness
        .keys
        .decrypt_and_verify(Request::new(pb::DecryptAndVerifyRequest {
            recipient_identity_id: "id-alice".into(),
            message: for_dave,
            fetch_sender_key: false,
        }))
        .await
        .unwrap_err();
    assert_eq!(not_ours.code(), Code::FailedPrecondition);
    assert!(
        not_ours
            .message()
            .contains("not encrypted to any of our keys")
    );
    let plain = harness
        .keys
        .decrypt_and_verify(Request::new(pb::DecryptAndVerifyRequest {
            recipient_identity_id: "id-alice".into(),
            message: message(bob.address(), &alice, "plain"),
            fetch_sender_key: false,
        }))
        .await
        .unwrap_err();
    assert_eq!(plain.code(), Code::InvalidArgument);
    assert!(
        plain.message().contains("not a PGP/MIME message"),
        "{}",
        plain.message()
    );
}

#[tokio::test]
async fn sender_key_is_fetched_or_learned_from_autocrypt_when_not_pinned() {
    let harness = harness().await;
    let alice = address("alice", 1);
    let alice_cert = parse_cert(
        &create(&harness, "id-alice", "acct-a", &alice)
            .await
            .public_key,
    )
    .unwrap();
    let bob = peer(&harness, "bob", 2);
    let erin = IdentityKey::generate(&address("erin", 7)).unwrap();

    // Bob's key is fetched from his onion on request.
    let from_bob = pgp_mime::seal(
        &message(bob.address(), &alice, "s"),
        &bob,
        std::slice::from_ref(&alice_cert),
    )
    .unwrap();
    let unknown = harness
        .keys
        .decrypt_and_verify(Request::new(pb::DecryptAndVerifyRequest {
            recipient_identity_id: "id-alice".into(),
            message: from_bob.clone(),
            fetch_sender_key: false,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unknown.signature, pb::SignatureStatus::SignerUnknown as i32);
    // Without `fetch_sender_key` nothing goes to tor (smtp-in asks so while a peer waits), and
    // the answer says the sender is still to be checked against its onion's key.
    assert!(unknown.sender_key_unpinned);
    assert!(harness.onions.asked.lock().unwrap().is_empty());
    let fetched = harness
        .keys
        .decrypt_and_verify(Request::new(pb::DecryptAndVerifyRequest {
            recipient_identity_id: "id-alice".into(),
            message: from_bob,
            fetch_sender_key: true,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.signature, pb::SignatureStatus::Verified as i32);
    assert!(!fetched.sender_key_unpinned);
    assert_eq!(
        fetched.key_change.unwrap().change,
        pb::KeyChange::Pinned as i32
    );

    // Erin publishes nothing, but her signed mail carries her Autocrypt header.
    let header_field = autocrypt::AutocryptHeader::for_identity(&erin)
        .unwrap()
        .to_header_field()
        .unwrap();
    let mut with_header = header_field.into_bytes();
    with_header.extend_from_slice(b"\r\n");
    with_header.extend_from_slice(&message(erin.address(), &alice, "hello"));
    let from_erin = pgp_mime::seal(&with_header, &erin, &[alice_cert]).unwrap();
    let learned = harness
        .keys
        .decrypt_and_verify(Request::new(pb::DecryptAndVerifyRequest {
            recipient_identity_id: "id-alice".into(),
            message: from_erin,
            fetch_sender_key: false,
        }))
        .await
        .unwrap()
        .into_inner();
    // Only her message vouches for that key (design.md, "First keys come from the onion"):
    // it is kept as provisional, never pinned, and the message is not verified.
    assert_eq!(learned.signature, pb::SignatureStatus::SignerUnknown as i32);
    assert_eq!(learned.signer_key_source, pb::KeySource::Autocrypt as i32);
    assert_eq!(
        learned.key_change.unwrap().change,
        pb::KeyChange::Held as i32
    );
}

/// Issue: a message forged as an offline identity, with the forger's key in its Autocrypt
/// header and signed by it, was marked verified and pinned the forger's key (and its carrier
/// list). It must verify as nothing, change no pin, and lose to the key from the onion.
#[tokio::test]
async fn a_forged_sender_with_its_own_autocrypt_key_is_never_verified_and_the_onion_wins() {
    let harness = harness().await;
    let alice = address("alice", 1);
    let alice_cert = parse_cert(
        &create(&harness, "id-alice", "acct-a", &alice)
            .await
            .public_key,
    )
    .unwrap();
    let erin = IdentityKey::generate(&address("erin", 7)).unwrap();
    // The forger makes a key for Erin's address and signs with it; Erin's onion is offline.
    let forger = IdentityKey::generate(erin.address()).unwrap();
    harness
        .onions
        .unreachable
        .lock()
        .unwrap()
        .push(erin.address().to_string());
    let header = autocrypt::AutocryptHeader::for_identity(&forger)
        .unwrap()
        .to_header_field()
        .unwrap();
    // It also names its own carriers for Erin, in a list signed by its key.
    let forged_carriers = carrier_list::sign(
        &forger,
        &carrier_list::CarrierList {
            identity: erin.address().clone(),
            signed_at: 9_000,
            carriers: vec![address("forgers-carrier", 66).onion_host()],
        },
    )
    .unwrap();
    let mut forged = header.into_bytes();
    forged.extend_from_slice(b"\r\n");
    forged.extend_from_slice(carrier_list::header_field(&forged_carriers).as_bytes());
    forged.extend_from_slice(b"\r\n");
    forged.extend_from_slice(&message(erin.address(), &alice, "pay the forger"));
    let forged = pgp_mime::seal(&forged, &forger, std::slice::from_ref(&alice_cert)).unwrap();
    let answer = harness
        .keys
        .decrypt_and_verify(Request::new(pb::DecryptAndVerifyRequest {
            recipient_identity_id: "id-alice".into(),
            message: forged.clone(),
            fetch_sender_key: true,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(answer.signature, pb::SignatureStatus::Verified as i32);
    let contact = contact_of(&harness, "acct-a", erin.address()).await;
    assert!(
        contact.fingerprint.is_empty(),
        "nothing pinned: {contact:?}"
    );
    assert!(contact.preferred_carriers.is_empty());
    // Replies do not go to the forger's key: the recipient's key is asked of its onion.
    assert_eq!(
        status(&resolve(&harness, "id-alice", erin.address(), true).await),
        pb::RecipientKeyStatus::Unreachable
    );

    // Erin comes back online: the key from her onion is pinned and the forgery stays unverified.
    harness.onions.unreachable.lock().unwrap().clear();
    publish(&harness, erin.address(), erin.public_cert());
    let fetched = resolve(&harness, "id-alice", erin.address(), true).await;
    assert_eq!(status(&fetched), pb::RecipientKeyStatus::Fetched);
    assert_eq!(fetched.fingerprint, erin.fingerprint().to_hex());
    let contact = contact_of(&harness, "acct-a", erin.address()).await;
    assert!(contact.held_key_change.is_none(), "{contact:?}");
    let again = harness
        .keys
        .decrypt_and_verify(Request::new(pb::DecryptAndVerifyRequest {
            recipient_identity_id: "id-alice".into(),
            message: forged,
            fetch_sender_key: true,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(again.signature, pb::SignatureStatus::Verified as i32);
    // With Erin's key pinned, the forgery changes neither the pin nor her carriers: its key is
    // at most held for the account to confirm, like any unsigned key change.
    let contact = contact_of(&harness, "acct-a", erin.address()).await;
    assert_eq!(contact.fingerprint, erin.fingerprint().to_hex());
    assert!(
        contact
            .held_key_change
            .as_ref()
            .is_none_or(|held| held.fingerprint == forger.fingerprint().to_hex()),
        "{contact:?}"
    );
    assert!(
        contact.preferred_carriers.is_empty(),
        "the forger's carriers were taken: {contact:?}"
    );
}

#[tokio::test]
async fn key_changes_signed_transition_accepted_unsigned_held_until_confirmed() {
    let harness = harness().await;
    let alice = address("alice", 1);
    create(&harness, "id-alice", "acct-a", &alice).await;
    let bob = peer(&harness, "bob", 2);
    resolve(&harness, "id-alice", bob.address(), true).await;
    let learn = |header: String| {
        harness
            .keys
            .learn_autocrypt(Request::new(pb::LearnAutocryptRequest {
                recipient_identity_id: "id-alice".into(),
                from_address: bob.address().to_string(),
                header,
                message_date: None,
            }))
    };

    // Unsigned new key: held.
    let stranger = IdentityKey::generate(bob.address()).unwrap();
    let value = autocrypt::AutocryptHeader::for_identity(&stranger)
        .unwrap()
        .value()
        .unwrap();
    let held = learn(value).await.unwrap().into_inner();
    assert_eq!(held.change, pb::KeyChange::Held as i32);
    assert_eq!(
        status(&resolve(&harness, "id-alice", bob.address(), true).await),
        pb::RecipientKeyStatus::ChangeHeld
    );
    let contact = harness
        .keys
        .get_contact(Request::new(pb::GetContactRequest {
            account_id: "acct-a".into(),
            contact: Some(pb::get_contact_request::Contact::ContactId(
                held.contact_id.clone(),
            )),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        contact.fingerprint,
        bob.fingerprint().to_hex(),
        "old pin kept"
    );
    assert_eq!(
        contact.held_key_change.as_ref().unwrap().fingerprint,
        stranger.fingerprint().to_hex()
    );
    let held_list = harness
        .keys
        .list_contacts(Request::new(pb::ListContactsRequest {
            account_id: "acct-a".into(),
            only_held_key_changes: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(held_list.contacts.len(), 1);

    // The decision must name the held key; rejecting keeps the old pin.
    let wrong = harness
        .keys
        .confirm_key_change(Request::new(pb::ConfirmKeyChangeRequest {
            account_id: "acct-a".into(),
            contact_id: held.contact_id.clone(),
            fingerprint: bob.fingerprint().to_hex(),
            accept: true,
        }))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::FailedPrecondition);
    let rejected = harness
        .keys
        .confirm_key_change(Request::new(pb::ConfirmKeyChangeRequest {
            account_id: "acct-a".into(),
            contact_id: held.contact_id.clone(),
            fingerprint: stranger.fingerprint().to_hex(),
            accept: false,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rejected.fingerprint, bob.fingerprint().to_hex());
    assert!(rejected.held_key_change.is_none());

    // Signed transition: accepted at once.
    let successor = IdentityKey::generate(bob.address()).unwrap();
    let certified = pinning::certify_transition(&bob, &successor.public_cert()).unwrap();
    let value = autocrypt::AutocryptHeader::new(
        bob.address().clone(),
        &certified,
        autocrypt::PreferEncrypt::Mutual,
    )
    .unwrap()
    .value()
    .unwrap();
    let transitioned = learn(value).await.unwrap().into_inner();
    assert_eq!(transitioned.change, pb::KeyChange::Transitioned as i32);
    assert_eq!(
        resolve(&harness, "id-alice", bob.address(), false)
            .await
            .fingerprint,
        successor.fingerprint().to_hex()
    );

    // Held again, then accepted by the account.
    let value = autocrypt::AutocryptHeader::for_identity(&stranger)
        .unwrap()
        .value()
        .unwrap();
    assert_eq!(
        learn(value).await.unwrap().into_inner().change,
        pb::KeyChange::Held as i32
    );
    let accepted = harness
        .keys
        .confirm_key_change(Request::new(pb::ConfirmKeyChangeRequest {
            account_id: "acct-a".into(),
            contact_id: held.contact_id.clone(),
            fingerprint: stranger.fingerprint().to_hex().to_lowercase(),
            accept: true,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(accepted.fingerprint, stranger.fingerprint().to_hex());
    assert!(accepted.held_key_change.is_none());

    // A header for someone else, and a malformed one.
    let carol = IdentityKey::generate(&address("carol", 3)).unwrap();
    let mismatch = learn(
        autocrypt::AutocryptHeader::for_identity(&carol)
            .unwrap()
            .value()
            .unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(mismatch.code(), Code::InvalidArgument);
    let malformed = learn("addr=x; keydata=!!".into()).await.unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn contacts_crud_introductions_and_revocations() {
    let harness = harness().await;
    let alice = address("alice", 1);
    let alice_record = create(&harness, "id-alice", "acct-a", &alice).await;
    let bob = peer(&harness, "bob", 2);
    let carol = IdentityKey::generate(&address("carol", 3)).unwrap();

    // Added by hand with the key; by QR with a fetched key and the expected fingerprint.
    let added = harness
        .keys
        .add_contact(Request::new(pb::AddContactRequest {
            account_id: "acct-a".into(),
            address: carol.address().to_string(),
            display_name: "Carol".into(),
            source: pb::KeySource::Manual as i32,
            public_key: bytes(&carol.public_cert()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(added.key_source, pb::KeySource::Manual as i32);
    assert!(!added.verified);
    let duplicate = harness
        .keys
        .add_contact(Request::new(pb::AddContactRequest {
            account_id: "acct-a".into(),
            address: carol.address().to_string(),
            public_key: bytes(&carol.public_cert()),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    let wrong_fingerprint = harness
        .keys
        .add_contact(Request::new(pb::AddContactRequest {
            account_id: "acct-a".into(),
            address: bob.address().to_string(),
            source: pb::KeySource::Qr as i32,
            expected_fingerprint: carol.fingerprint().to_hex(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(wrong_fingerprint.code(), Code::FailedPrecondition);
    let bob_contact = harness
        .keys
        .add_contact(Request::new(pb::AddContactRequest {
            account_id: "acct-a".into(),
            address: bob.address().to_string(),
            source: pb::KeySource::Qr as i32,
            expected_fingerprint: bob.fingerprint().to_hex(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(bob_contact.verified);
    let garbage = harness
        .keys
        .add_contact(Request::new(pb::AddContactRequest {
            account_id: "acct-a".into(),
            address: address("x", 8).to_string(),
            public_key: b"not a key".to_vec(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), Code::InvalidArgument);
    assert!(
        garbage.message().contains("malformed key"),
        "{}",
        garbage.message()
    );

    // Paging, update, delete.
    let page = harness
        .keys
        .list_contacts(Request::new(pb::ListContactsRequest {
            account_id: "acct-a".into(),
            page_size: 1,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.contacts.len(), 1);
    assert!(!page.next_page_token.is_empty());
    let rest = harness
        .keys
        .list_contacts(Request::new(pb::ListContactsRequest {
            account_id: "acct-a".into(),
            page_size: 1,
            page_token: page.next_page_token,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.contacts.len(), 1);
    assert!(rest.next_page_token.is_empty());
    let carrier = address("k", 9).onion_host();
    let updated = harness
        .keys
        .update_contact(Request::new(pb::UpdateContactRequest {
            account_id: "acct-a".into(),
            contact: Some(pb::Contact {
                contact_id: added.contact_id.clone(),
                display_name: "Carol C.".into(),
                designated_carriers: vec![carrier.to_uppercase()],
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into(), "designated_carriers".into()],
            }),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.display_name, "Carol C.");
    assert_eq!(updated.designated_carriers, vec![carrier]);
    let bad_mask = harness
        .keys
        .update_contact(Request::new(pb::UpdateContactRequest {
            account_id: "acct-a".into(),
            contact: Some(pb::Contact {
                contact_id: added.contact_id.clone(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["fingerprint".into()],
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(bad_mask.code(), Code::InvalidArgument);

    // Alice introduces Bob (from her address book); the part verifies against her key.
    let intro = harness
        .keys
        .make_introduction(Request::new(pb::MakeIntroductionRequest {
            introducer_identity_id: "id-alice".into(),
            contact_id: bob_contact.contact_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    let alice_cert = parse_cert(&alice_record.public_key).unwrap();
    let verified = introduction::verify(&intro.part, &[alice_cert]).unwrap();
    assert_eq!(&verified.contact, bob.address());

    // Bob introduces Dave to Alice: Dave is pinned, Bob recorded and proposed as carrier.
    let dave = IdentityKey::generate(&address("dave", 4)).unwrap();
    let part = introduction::introduce(&bob, dave.address(), &dave.public_cert()).unwrap();
    let introduced = harness
        .keys
        .import_introduction(Request::new(pb::ImportIntroductionRequest {
            recipient_identity_id: "id-alice".into(),
            part: part.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(introduced.address, dave.address().to_string());
    assert_eq!(introduced.key_source, pb::KeySource::Introduction as i32);
    assert_eq!(introduced.introducers.len(), 1);
    assert_eq!(introduced.introducers[0].address, bob.address().to_string());
    assert_eq!(
        introduced.designated_carriers,
        vec![bob.address().onion_host()]
    );
    // The same introduction twice records Bob once; one by a stranger is refused.
    let again = harness
        .keys
        .import_introduction(Request::new(pb::ImportIntroductionRequest {
            recipient_identity_id: "id-alice".into(),
            part,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.introducers.len(), 1);
    let stranger = IdentityKey::generate(&address("eve", 5)).unwrap();
    let forged = introduction::introduce(&stranger, dave.address(), &dave.public_cert()).unwrap();
    let refused = harness
        .keys
        .import_introduction(Request::new(pb::ImportIntroductionRequest {
            recipient_identity_id: "id-alice".into(),
            part: forged,
        }))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::PermissionDenied,
        "{}",
        refused.message()
    );

    // Bob revokes his key; Alice's address book applies it and mail to him stops.
    let revoked =
        revocation::revoke(&bob, revocation::RevocationReason::Retired, "moving on").unwrap();
    let applied = harness
        .keys
        .apply_revocation(Request::new(pb::ApplyRevocationRequest {
            account_id: "acct-a".into(),
            revocation: revoked.armored.into_bytes(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(applied.revoked_at.is_some());
    assert_eq!(
        status(&resolve(&harness, "id-alice", bob.address(), true).await),
        pb::RecipientKeyStatus::Revoked
    );
    let unknown_revocation = harness
        .keys
        .apply_revocation(Request::new(pb::ApplyRevocationRequest {
            account_id: "acct-a".into(),
            revocation: revocation::revoke(&stranger, revocation::RevocationReason::Retired, "")
                .unwrap()
                .armored
                .into_bytes(),
        }))
        .await
        .unwrap_err();
    assert_eq!(unknown_revocation.code(), Code::NotFound);

    // Removing a contact.
    harness
        .keys
        .delete_contact(Request::new(pb::DeleteContactRequest {
            account_id: "acct-a".into(),
            contact_id: added.contact_id.clone(),
        }))
        .await
        .unwrap();
    let gone = harness
        .keys
        .get_contact(Request::new(pb::GetContactRequest {
            account_id: "acct-a".into(),
            contact: Some(pb::get_contact_request::Contact::ContactId(
                added.contact_id,
            )),
        }))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test]
async fn revoked_identity_stops_signing_and_hands_out_its_revocation() {
    let harness = harness().await;
    let alice = address("alice", 1);
    create(&harness, "id-alice", "acct-a", &alice).await;
    let revoked = harness
        .keys
        .revoke_identity_key(Request::new(pb::RevokeIdentityKeyRequest {
            identity_id: "id-alice".into(),
            reason: pb::RevocationReason::Retired as i32,
            message: "bye".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.key.as_ref().unwrap().revoked_at.is_some());
    // A peer that pinned the key can apply the revocation.
    let pinned = parse_cert(
        &create(&harness, "id-alice", "acct-a", &alice)
            .await
            .public_key,
    )
    .unwrap();
    revocation::apply(&revoked.revocation, &pinned).unwrap();
    let again = harness
        .keys
        .revoke_identity_key(Request::new(pb::RevokeIdentityKeyRequest {
            identity_id: "id-alice".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.revocation, revoked.revocation);
    let refused = harness
        .keys
        .sign_and_encrypt(Request::new(pb::SignAndEncryptRequest {
            signer_identity_id: "id-alice".into(),
            recipients: vec![alice.to_string()],
            message: message(&alice, &alice, "x"),
            add_autocrypt_header: false,
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("revoked"));
}

#[tokio::test]
async fn each_identity_listener_serves_only_its_own_key() {
    use tower::ServiceExt as _;

    let harness = harness().await;
    let alice = address("alice", 1);
    let bob = address("bob", 2);
    create(&harness, "id-alice", "acct-a", &alice).await;
    create(&harness, "id-bob", "acct-a", &bob).await;
    let get = |identity_id: &str, who: &Address| {
        let request = http::Request::get(wkd::direct_path(who))
            .header(http::header::HOST, who.onion_host())
            .body(axum::body::Body::empty())
            .unwrap();
        wkd::router(harness.service.wkd_directory(identity_id)).oneshot(request)
    };
    assert_eq!(get("id-alice", &alice).await.unwrap().status(), 200);
    assert_eq!(
        get("id-alice", &bob).await.unwrap().status(),
        404,
        "A's onion never serves B"
    );
    assert_eq!(get("id-bob", &bob).await.unwrap().status(), 200);
}

#[tokio::test]
async fn identity_moves_to_another_carrier_in_a_passphrase_bundle() {
    let old_carrier = harness().await;
    let alice = address("alice", 1);
    let created = create(&old_carrier, "id-alice", "acct-a", &alice).await;
    let onion_key = vec![42u8; 64];
    old_carrier
        .onion_keys
        .by_identity
        .lock()
        .unwrap()
        .insert("id-alice".into(), onion_key.clone());
    old_carrier
        .onion_keys
        .onion_of_key
        .lock()
        .unwrap()
        .insert(onion_key.clone(), alice.onion_host());

    let short = old_carrier
        .keys
        .export_identity(Request::new(pb::ExportIdentityRequest {
            identity_id: "id-alice".into(),
            passphrase: "short".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(short.code(), Code::InvalidArgument);
    let bundle = old_carrier
        .keys
        .export_identity(Request::new(pb::ExportIdentityRequest {
            identity_id: "id-alice".into(),
            passphrase: "a long passphrase".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .bundle;
    assert!(!String::from_utf8_lossy(&bundle).contains(&alice.to_string()));

    let new_carrier = harness().await;
    new_carrier
        .onion_keys
        .onion_of_key
        .lock()
        .unwrap()
        .insert(onion_key.clone(), alice.onion_host());
    let import = |passphrase: &str| {
        new_carrier
            .keys
            .import_identity(Request::new(pb::ImportIdentityRequest {
                identity_id: "id-new".into(),
                account_id: "acct-z".into(),
                bundle: bundle.clone(),
                passphrase: passphrase.into(),
            }))
    };
    let wrong = import("not the passphrase").await.unwrap_err();
    assert_eq!(wrong.code(), Code::InvalidArgument);
    assert!(
        wrong.message().contains("passphrase"),
        "{}",
        wrong.message()
    );
    let imported = import("a long passphrase").await.unwrap().into_inner();
    assert_eq!(imported.fingerprint, created.fingerprint);
    assert_eq!(imported.address, alice.to_string());
    assert_eq!(
        new_carrier.onion_keys.by_identity.lock().unwrap()["id-new"],
        onion_key
    );
    // The imported key signs on the new carrier.
    let qr = new_carrier
        .keys
        .get_identity_qr(Request::new(pb::GetIdentityQrRequest {
            identity_id: "id-new".into(),
            format: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(qr.uri.contains(&created.fingerprint));
    let bob = peer(&new_carrier, "bob", 2);
    resolve(&new_carrier, "id-new", bob.address(), true).await;
    new_carrier
        .keys
        .sign_and_encrypt(Request::new(pb::SignAndEncryptRequest {
            signer_identity_id: "id-new".into(),
            recipients: vec![bob.address().to_string()],
            message: message(&alice, bob.address(), "moved"),
            add_autocrypt_header: true,
        }))
        .await
        .unwrap();

    // An identity without an onion on the old carrier cannot be exported.
    create(&old_carrier, "id-lonely", "acct-a", &address("lonely", 3)).await;
    let no_onion = old_carrier
        .keys
        .export_identity(Request::new(pb::ExportIdentityRequest {
            identity_id: "id-lonely".into(),
            passphrase: "a long passphrase".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(no_onion.code(), Code::NotFound);
    assert!(no_onion.message().starts_with("onion service:"));
}

#[tokio::test]
async fn carry_statements_are_signed_and_verified_against_the_onions_key() {
    let harness = harness().await;
    let alice = address("alice", 1);
    let created = create(&harness, "id-alice", "acct-a", &alice).await;
    let carrier = address("carrier", 9).onion_host();
    let signed = harness
        .keys
        .sign_carry_statement(Request::new(pb::SignCarryStatementRequest {
            identity_id: "id-alice".into(),
            carrier: carrier.clone(),
            kind: pb::CarryStatementKind::Request as i32,
            expires_at: Some(prost_types::Timestamp {
                seconds: 1_900_000_000,
                nanos: 0,
            }),
        }))
        .await
        .unwrap()
        .into_inner();
    // Her onion serves her key; it is asked there even though she is hosted here.
    publish(&harness, &alice, parse_cert(&created.public_key).unwrap());
    let verified = harness
        .keys
        .verify_carry_statement(Request::new(pb::VerifyCarryStatementRequest {
            statement: signed.statement.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verified.address, alice.to_string());
    assert_eq!(verified.fingerprint, created.fingerprint);
    assert_eq!(verified.carrier, carrier);
    assert_eq!(verified.kind, pb::CarryStatementKind::Request as i32);
    assert_eq!(verified.expires_at.unwrap().seconds, 1_900_000_000);

    // A peer's statement is checked against the key its onion serves.
    let bob = peer(&harness, "bob", 2);
    let statement = onionpost_keys::carry::CarryStatement {
        identity: bob.address().clone(),
        carrier: carrier.clone(),
        kind: onionpost_keys::carry::CarryKind::Withdraw,
        signed_at: 1_800_000_000,
        expires_at: None,
    };
    let from_bob = onionpost_keys::carry::sign(&bob, &statement).unwrap();
    let verified = harness
        .keys
        .verify_carry_statement(Request::new(pb::VerifyCarryStatementRequest {
            statement: from_bob.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verified.kind, pb::CarryStatementKind::Withdraw as i32);
    // Once Bob's onion serves another key, his old statement no longer verifies.
    let impostor = IdentityKey::generate(bob.address()).unwrap();
    publish(&harness, bob.address(), impostor.public_cert());
    let refused = harness
        .keys
        .verify_carry_statement(Request::new(pb::VerifyCarryStatementRequest {
            statement: from_bob,
        }))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::PermissionDenied,
        "{}",
        refused.message()
    );
    let garbage = harness
        .keys
        .verify_carry_statement(Request::new(pb::VerifyCarryStatementRequest {
            statement: b"hello".to_vec(),
        }))
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), Code::InvalidArgument);
    let bad_carrier = harness
        .keys
        .sign_carry_statement(Request::new(pb::SignCarryStatementRequest {
            identity_id: "id-alice".into(),
            carrier: "example.org".into(),
            kind: pb::CarryStatementKind::Request as i32,
            expires_at: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(bad_carrier.code(), Code::InvalidArgument);
}

async fn contact_of(harness: &Harness, account: &str, address: &Address) -> pb::Contact {
    harness
        .keys
        .get_contact(Request::new(pb::GetContactRequest {
            account_id: account.into(),
            contact: Some(pb::get_contact_request::Contact::Address(
                address.to_string(),
            )),
        }))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn preferred_carriers_are_signed_published_fetched_and_carried_in_mail() {
    let harness = harness().await;
    let alice = address("alice", 1);
    create(&harness, "id-alice", "acct-a", &alice).await;
    let (b1, b2, b3) = (
        address("x", 21).onion_host(),
        address("x", 22).onion_host(),
        address("x", 23).onion_host(),
    );

    // Bob, elsewhere, publishes [b1] over his onion; Alice learns it with his key.
    let bob = peer(&harness, "bob", 2);
    let list = |carriers: Vec<String>, signed_at| carrier_list::CarrierList {
        identity: bob.address().clone(),
        signed_at,
        carriers,
    };
    let bob_list = carrier_list::sign(&bob, &list(vec![b1.clone()], 1_000)).unwrap();
    harness
        .onions
        .carrier_lists
        .lock()
        .unwrap()
        .insert(bob.address().to_string(), bob_list);
    resolve(&harness, "id-alice", bob.address(), true).await;
    assert_eq!(
        contact_of(&harness, "acct-a", bob.address())
            .await
            .preferred_carriers,
        std::slice::from_ref(&b1)
    );

    // A list signed by someone else for Bob's address is not taken.
    let mallory = peer(&harness, "mallory", 9);
    let forged = carrier_list::sign(
        &mallory,
        &carrier_list::CarrierList {
            identity: mallory.address().clone(),
            signed_at: 5_000,
            carriers: vec![b3.clone()],
        },
    )
    .unwrap();
    let dave = peer(&harness, "dave", 8);
    harness
        .onions
        .carrier_lists
        .lock()
        .unwrap()
        .insert(dave.address().to_string(), forged);
    resolve(&harness, "id-alice", dave.address(), true).await;
    assert!(
        contact_of(&harness, "acct-a", dave.address())
            .await
            .preferred_carriers
            .is_empty()
    );

    // Alice names her own carriers: signed by her key, served by her onion's WKD listener.
    let set = harness
        .keys
        .set_preferred_carriers(Request::new(pb::SetPreferredCarriersRequest {
            identity_id: "id-alice".into(),
            carriers: vec![b2.to_uppercase(), b3.clone(), b2.clone()],
            signed_list: Vec::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.preferred_carriers, [b2.clone(), b3.clone()]);
    let served = wkd_get(&harness, "id-alice", &alice, &wkd::carriers_path(&alice)).await;
    let alice_cert = parse_cert(&set.public_key).unwrap();
    let published = carrier_list::verify(&served, &alice_cert, &alice).unwrap();
    assert_eq!(published.carriers, [b2.clone(), b3.clone()]);
    // Not an onion host, and too many: refused with the reason.
    for carriers in [
        vec!["carrier.example.org".to_owned()],
        (0..17)
            .map(|n| address("x", 100 + n).onion_host())
            .collect(),
    ] {
        let refused = harness
            .keys
            .set_preferred_carriers(Request::new(pb::SetPreferredCarriersRequest {
                identity_id: "id-alice".into(),
                carriers,
                signed_list: Vec::new(),
            }))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    }

    // Alice's Autocrypt mail to Bob carries the list inside the encryption.
    let sealed = harness
        .keys
        .sign_and_encrypt(Request::new(pb::SignAndEncryptRequest {
            signer_identity_id: "id-alice".into(),
            recipients: vec![bob.address().to_string()],
            message: message(&alice, bob.address(), "carriers"),
            add_autocrypt_header: true,
        }))
        .await
        .unwrap()
        .into_inner()
        .message;
    assert_eq!(
        header(&sealed, carrier_list::HEADER),
        None,
        "outside the encryption"
    );
    let opened = pgp_mime::open(&sealed, &[&bob], std::slice::from_ref(&alice_cert)).unwrap();
    let carried = carrier_list::from_message(&opened.message).unwrap();
    assert_eq!(
        carrier_list::verify(&carried, &alice_cert, &alice)
            .unwrap()
            .carriers,
        [b2.clone(), b3.clone()]
    );

    // Bob's newer list reaches Alice in his mail; an older one later changes nothing.
    let mail_from_bob = |signed_at: i64, carriers: Vec<String>| {
        let signed = carrier_list::sign(&bob, &list(carriers, signed_at)).unwrap();
        let plain = [
            carrier_list::header_field(&signed).into_bytes(),
            b"\r\n".to_vec(),
            message(bob.address(), &alice, "from bob"),
        ]
        .concat();
        pgp_mime::seal(&plain, &bob, std::slice::from_ref(&alice_cert)).unwrap()
    };
    let decrypt = |message: Vec<u8>| async {
        harness
            .keys
            .decrypt_and_verify(Request::new(pb::DecryptAndVerifyRequest {
                recipient_identity_id: "id-alice".into(),
                message,
                fetch_sender_key: false,
            }))
            .await
            .unwrap()
            .into_inner()
    };
    let opened = decrypt(mail_from_bob(2_000, vec![b2.clone(), b1.clone()])).await;
    assert_eq!(opened.signature, pb::SignatureStatus::Verified as i32);
    assert_eq!(
        contact_of(&harness, "acct-a", bob.address())
            .await
            .preferred_carriers,
        [b2.clone(), b1.clone()]
    );
    decrypt(mail_from_bob(1_500, vec![b3.clone()])).await;
    assert_eq!(
        contact_of(&harness, "acct-a", bob.address())
            .await
            .preferred_carriers,
        [b2.clone(), b1.clone()]
    );
}

/// GETs `path` from the WKD router of one identity, with its onion as the Host.
async fn wkd_get(harness: &Harness, identity_id: &str, address: &Address, path: &str) -> Vec<u8> {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let router = wkd::router(harness.service.wkd_directory(identity_id));
    let response = router
        .oneshot(
            http::Request::get(path)
                .header(http::header::HOST, address.onion_host())
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::OK, "{path}");
    response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec()
}

/// Issue: one new sender's message to two identities of one account arrived at both onions at
/// the same moment; both deliveries fetched the sender's key and raced to pin the same contact,
/// and the loser's copy was refused as undecryptable (550). Every concurrent copy must open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_copies_from_a_new_sender_to_co_hosted_identities_all_open() {
    let harness = Arc::new(harness().await);
    let carol = address("carol", 1);
    let dave = address("dave", 2);
    let carol_cert = parse_cert(
        &create(&harness, "id-carol", "acct-c", &carol)
            .await
            .public_key,
    )
    .unwrap();
    let dave_cert = parse_cert(
        &create(&harness, "id-dave", "acct-c", &dave)
            .await
            .public_key,
    )
    .unwrap();
    let mut copies = Vec::new();
    for seed in 10..26u8 {
        let sender = peer(&harness, "alice", seed);
        for (identity, to, cert) in [
            ("id-carol", &carol, &carol_cert),
            ("id-dave", &dave, &dave_cert),
        ] {
            let sealed = pgp_mime::seal(
                &message(sender.address(), to, "burst"),
                &sender,
                std::slice::from_ref(cert),
            )
            .unwrap();
            copies.push((identity, sealed));
        }
    }
    let tasks: Vec<_> = copies
        .into_iter()
        .map(|(identity, sealed)| {
            let harness = harness.clone();
            tokio::spawn(async move {
                harness
                    .keys
                    .decrypt_and_verify(Request::new(pb::DecryptAndVerifyRequest {
                        recipient_identity_id: identity.into(),
                        message: sealed,
                        fetch_sender_key: true,
                    }))
                    .await
            })
        })
        .collect();
    let mut opened = 0;
    for task in tasks {
        let answer = task.await.unwrap().expect("every copy opens").into_inner();
        assert_eq!(answer.signature, pb::SignatureStatus::Verified as i32);
        opened += 1;
    }
    assert_eq!(opened, 32);
}

#[tokio::test]
async fn contacts_are_added_from_a_contact_card_or_a_scanned_uri() {
    let harness = harness().await;
    let alice = address("alice", 1);
    create(&harness, "id-alice", "acct-a", &alice).await;
    let dave = IdentityKey::generate(&address("dave", 4)).unwrap();
    let erin = peer(&harness, "erin", 5);
    let add = |request: pb::AddContactRequest| {
        let keys = harness.keys.clone();
        async move {
            keys.add_contact(Request::new(pb::AddContactRequest {
                account_id: "acct-a".into(),
                ..request
            }))
            .await
            .map(tonic::Response::into_inner)
        }
    };

    // A card brings the address and the key; nothing is fetched.
    let card = onionpost_keys::introduction::vcard(dave.address(), &dave.public_cert()).unwrap();
    let carded = add(pb::AddContactRequest {
        vcard: card.clone(),
        display_name: "Dave".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(carded.address, dave.address().to_string());
    assert_eq!(carded.fingerprint, dave.fingerprint().to_hex());
    assert_eq!(carded.key_source, pb::KeySource::Manual as i32);
    assert!(!carded.verified);
    // A card for another address than the one named, a card with a key beside it, a card that
    // is not one: refused, saying why.
    let other = add(pb::AddContactRequest {
        vcard: card.clone(),
        address: erin.address().to_string(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(other.code(), Code::InvalidArgument);
    assert!(
        other.message().contains("contact card is for"),
        "{}",
        other.message()
    );
    let both = add(pb::AddContactRequest {
        vcard: card,
        public_key: bytes(&dave.public_cert()),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(both.code(), Code::InvalidArgument);
    let broken = add(pb::AddContactRequest {
        vcard: "BEGIN:VCARD\r\nVERSION:3.0\r\nEND:VCARD\r\n".into(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(broken.code(), Code::InvalidArgument);
    assert!(
        broken.message().contains("vCard 4.0"),
        "{}",
        broken.message()
    );

    // A scanned URI: the key comes over the onion and must carry the fingerprint seen.
    let uri = onionpost_keys::qr::openpgp4fpr_uri(&erin.fingerprint(), erin.address());
    let scanned = add(pb::AddContactRequest {
        openpgp4fpr_uri: uri.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(scanned.address, erin.address().to_string());
    assert_eq!(scanned.key_source, pb::KeySource::Qr as i32);
    assert!(
        scanned.verified,
        "a fingerprint seen in person is a verification"
    );
    // Someone else's fingerprint in the URI: the key fetched does not match.
    let frank = peer(&harness, "frank", 6);
    let forged = onionpost_keys::qr::openpgp4fpr_uri(&dave.fingerprint(), frank.address());
    let mismatch = add(pb::AddContactRequest {
        openpgp4fpr_uri: forged,
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(
        mismatch.code(),
        Code::FailedPrecondition,
        "{}",
        mismatch.message()
    );
    // By address alone: the key comes over the onion, and says so.
    let fetched = add(pb::AddContactRequest {
        address: frank.address().to_string(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(fetched.key_source, pb::KeySource::Wkd as i32);
    assert!(!fetched.verified);
    let no_address = add(pb::AddContactRequest {
        openpgp4fpr_uri: format!("openpgp4fpr:{}", frank.fingerprint().to_hex()),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(no_address.code(), Code::InvalidArgument);
    let nothing = add(pb::AddContactRequest::default()).await.unwrap_err();
    assert_eq!(nothing.code(), Code::InvalidArgument);
    assert!(
        nothing.message().contains("address is required"),
        "{}",
        nothing.message()
    );
}

#[tokio::test]
async fn an_introduction_in_verified_mail_from_its_signer_is_taken() {
    let harness = harness().await;
    let alice = address("alice", 1);
    let alice_key = create(&harness, "id-alice", "acct-a", &alice).await;
    let bob = address("bob", 2);
    let bob_key = create(&harness, "id-bob", "acct-b", &bob).await;
    let mallory = address("mallory", 9);
    let mallory_key = create(&harness, "id-mallory", "acct-m", &mallory).await;
    let carol = IdentityKey::generate(&address("carol", 3)).unwrap();
    let keys = harness.keys.clone();
    let add = |account: &str, address: &Address, key: Vec<u8>| {
        let keys = keys.clone();
        let request = pb::AddContactRequest {
            account_id: account.into(),
            address: address.to_string(),
            public_key: key,
            ..Default::default()
        };
        async move {
            keys.add_contact(Request::new(request))
                .await
                .unwrap()
                .into_inner()
        }
    };
    // Alice has Bob pinned (not Mallory); Bob and Mallory both know Carol, and Alice.
    add("acct-a", &bob, bob_key.public_key.clone()).await;
    add("acct-b", &alice, alice_key.public_key.clone()).await;
    add("acct-m", &alice, alice_key.public_key.clone()).await;
    let carol_of_bob = add("acct-b", carol.address(), bytes(&carol.public_cert())).await;
    let carol_of_mallory = add("acct-m", carol.address(), bytes(&carol.public_cert())).await;
    let introduce = |introducer: &str, contact_id: String| {
        let keys = keys.clone();
        let request = pb::MakeIntroductionRequest {
            introducer_identity_id: introducer.into(),
            contact_id,
        };
        async move {
            keys.make_introduction(Request::new(request))
                .await
                .unwrap()
                .into_inner()
                .part
        }
    };
    // A message with the introduction as a part, signed and encrypted by its sender.
    let mail = |from: &Address, part: Vec<u8>| {
        let mut text = format!(
            "From: {from}\r\nTo: {alice}\r\nSubject: Meet Carol\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
             Message-ID: <intro@{}>\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
             --outer\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThis is Carol.\r\n--outer\r\n",
            from.onion_host()
        )
        .into_bytes();
        text.extend_from_slice(&part);
        text.extend_from_slice(b"\r\n--outer--\r\n");
        text
    };
    let send_and_open = |signer: &str, message: Vec<u8>| {
        let keys = keys.clone();
        let signer = signer.to_owned();
        let to = alice.to_string();
        async move {
            let sealed = keys
                .sign_and_encrypt(Request::new(pb::SignAndEncryptRequest {
                    signer_identity_id: signer,
                    recipients: vec![to],
                    message,
                    add_autocrypt_header: true,
                }))
                .await
                .unwrap()
                .into_inner()
                .message;
            keys.decrypt_and_verify(Request::new(pb::DecryptAndVerifyRequest {
                recipient_identity_id: "id-alice".into(),
                message: sealed,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
        }
    };
    let carol_in_alices = || async {
        keys.get_contact(Request::new(pb::GetContactRequest {
            account_id: "acct-a".into(),
            contact: Some(pb::get_contact_request::Contact::Address(
                carol.address().to_string(),
            )),
        }))
        .await
        .ok()
        .map(tonic::Response::into_inner)
    };

    // Mallory (not pinned by Alice) introduces Carol: verified as nothing, taken as nothing.
    let part = introduce("id-mallory", carol_of_mallory.contact_id).await;
    let opened = send_and_open("id-mallory", mail(&mallory, part)).await;
    assert_ne!(opened.signature, pb::SignatureStatus::Verified as i32);
    let _ = mallory_key;
    let bobs_part = introduce("id-bob", carol_of_bob.contact_id).await;
    // Bob's own mail: verified, and Carol lands in Alice's book, introduced by Bob.
    let opened = send_and_open("id-bob", mail(&bob, bobs_part.clone())).await;
    assert_eq!(opened.signature, pb::SignatureStatus::Verified as i32);
    let mut found = None;
    for _ in 0..100 {
        found = carol_in_alices().await;
        if found.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let carol_contact = found.expect("the introduction is imported after the reply");
    assert_eq!(carol_contact.key_source, pb::KeySource::Introduction as i32);
    assert_eq!(carol_contact.fingerprint, carol.fingerprint().to_hex());
    assert_eq!(carol_contact.introducers.len(), 1);
    assert_eq!(carol_contact.introducers[0].address, bob.to_string());
    assert_eq!(carol_contact.designated_carriers, vec![bob.onion_host()]);
}

#[test]
fn introductions_are_found_in_nested_multiparts_only_as_signed_cards() {
    let bob = IdentityKey::generate(&address("bob", 2)).unwrap();
    let carol = IdentityKey::generate(&address("carol", 3)).unwrap();
    let part = onionpost_keys::introduction::introduce(&bob, carol.address(), &carol.public_cert())
        .unwrap();
    let nested = [
        b"Content-Type: multipart/mixed; boundary=\"a\"\r\n\r\n--a\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n".as_slice(),
        &part,
        b"\r\n--b--\r\n\r\n--a--\r\n",
    ]
    .concat();
    let found = onionpost_keys::introduction::find_in(&nested);
    assert_eq!(found.len(), 1);
    let introduction =
        onionpost_keys::introduction::verify(&found[0], &[bob.public_cert()]).unwrap();
    assert_eq!(&introduction.contact, carol.address());
    // Plain text, a bare card, a signed non-card: nothing.
    assert!(onionpost_keys::introduction::find_in(b"Subject: x\r\n\r\nhello").is_empty());
    let bare_card = format!(
        "Content-Type: text/vcard\r\n\r\n{}",
        onionpost_keys::introduction::vcard(carol.address(), &carol.public_cert()).unwrap()
    );
    assert!(onionpost_keys::introduction::find_in(bare_card.as_bytes()).is_empty());
    let signed_text = b"Content-Type: multipart/signed; protocol=\"application/pgp-signature\"; boundary=\"s\"\r\n\r\n--s\r\nContent-Type: text/plain\r\n\r\nhi\r\n--s\r\nContent-Type: application/pgp-signature\r\n\r\nx\r\n--s--\r\n";
    assert!(onionpost_keys::introduction::find_in(signed_text).is_empty());
}

/// Issue 21: revoking an identity announces it, in signed mail, to the peers that identity
/// corresponded with and to no contact of the account's other identities; the peer's carrier
/// applies it from the verified message, and the revoked identity's WKD path serves the
/// revocation.
/// Xavier (`id-x`) and Yann (`id-y`), two identities of one account (`acct-xy`); Paul (`id-p`,
/// `acct-p`) and Quinn (`id-q`, `acct-q`), each an account of its own. All four are on this
/// carrier and serve their keys on their onions (the fake network), where even co-hosted peers
/// fetch them. `seed` and the next three pick the onions.
async fn one_account_two_identities_and_their_peers(harness: &Harness, seed: u8) -> [Address; 4] {
    let [xavier, yann, paul, quinn] = [
        address("xavier", seed),
        address("yann", seed + 1),
        address("paul", seed + 2),
        address("quinn", seed + 3),
    ];
    for (id, account, who) in [
        ("id-x", "acct-xy", &xavier),
        ("id-y", "acct-xy", &yann),
        ("id-p", "acct-p", &paul),
        ("id-q", "acct-q", &quinn),
    ] {
        let created = create(harness, id, account, who).await;
        publish(harness, who, parse_cert(&created.public_key).unwrap());
    }
    [xavier, yann, paul, quinn]
}

#[tokio::test]
async fn a_revocation_is_announced_in_mail_to_that_identitys_peers_only() {
    let harness = harness().await;
    let keys = harness.keys.clone();
    // Paul writes with Xavier only, Quinn with Yann only.
    let [xavier, yann, paul, quinn] =
        one_account_two_identities_and_their_peers(&harness, 11).await;
    let exchange = |from_id: &'static str, from: Address, to_id: &'static str, to: Address| {
        let keys = keys.clone();
        async move {
            keys.resolve_recipient_keys(Request::new(pb::ResolveRecipientKeysRequest {
                sender_identity_id: from_id.into(),
                recipients: vec![to.to_string()],
                fetch_missing: true,
            }))
            .await
            .unwrap();
            let sealed = keys
                .sign_and_encrypt(Request::new(pb::SignAndEncryptRequest {
                    signer_identity_id: from_id.into(),
                    recipients: vec![to.to_string()],
                    message: message(&from, &to, "hello"),
                    add_autocrypt_header: true,
                }))
                .await
                .unwrap()
                .into_inner()
                .message;
            let opened = keys
                .decrypt_and_verify(Request::new(pb::DecryptAndVerifyRequest {
                    recipient_identity_id: to_id.into(),
                    message: sealed,
                    fetch_sender_key: true,
                }))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(opened.signature, pb::SignatureStatus::Verified as i32);
        }
    };
    exchange("id-x", xavier.clone(), "id-p", paul.clone()).await;
    exchange("id-p", paul.clone(), "id-x", xavier.clone()).await;
    exchange("id-y", yann.clone(), "id-q", quinn.clone()).await;
    exchange("id-q", quinn.clone(), "id-y", yann.clone()).await;

    let revoked = keys
        .revoke_identity_key(Request::new(pb::RevokeIdentityKeyRequest {
            identity_id: "id-x".into(),
            reason: pb::RevocationReason::Retired as i32,
            message: "moving on".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    let recipients: Vec<&str> = revoked
        .announcements
        .iter()
        .map(|announcement| announcement.recipient.as_str())
        .collect();
    assert_eq!(
        recipients,
        [paul.to_string()],
        "only Xavier's peer hears of it"
    );
    let announcement = &revoked.announcements[0];
    assert!(
        announcement
            .message_id
            .ends_with(&format!("@{}>", xavier.onion_host()))
    );
    assert!(!String::from_utf8_lossy(&announcement.message).contains("revoked"));

    // Paul's carrier opens it as Xavier's verified mail and applies the revocation after the
    // reply; mail to Xavier is then refused as revoked.
    let opened = keys
        .decrypt_and_verify(Request::new(pb::DecryptAndVerifyRequest {
            recipient_identity_id: "id-p".into(),
            message: announcement.message.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(opened.signature, pb::SignatureStatus::Verified as i32);
    assert!(String::from_utf8_lossy(&opened.message).contains("This address is revoked"));
    let mut applied = None;
    for _ in 0..100 {
        let xavier_of_paul = contact_of(&harness, "acct-p", &xavier).await;
        if xavier_of_paul.revoked_at.is_some() {
            applied = Some(xavier_of_paul);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(applied.is_some(), "the revocation in mail was not applied");
    assert_eq!(
        status(&resolve(&harness, "id-p", &xavier, true).await),
        pb::RecipientKeyStatus::Revoked
    );
    // Quinn, who knows only Yann, is untouched; so is Yann.
    assert!(
        contact_of(&harness, "acct-q", &yann)
            .await
            .revoked_at
            .is_none()
    );
    assert_eq!(
        status(&resolve(&harness, "id-q", &yann, true).await),
        pb::RecipientKeyStatus::Pinned
    );

    // Xavier's WKD path serves the revoked certificate, which applies to a pin of the key.
    let served = wkd_get(&harness, "id-x", &xavier, &wkd::direct_path(&xavier)).await;
    let pinned = parse_cert(
        &create(&harness, "id-x", "acct-xy", &xavier)
            .await
            .public_key,
    )
    .unwrap();
    revocation::apply(&served, &pinned).unwrap();
}

/// Waits (after the reply, where keys in mail are taken) until `done` holds for `address` in
/// `account`'s address book.
async fn contact_eventually(
    harness: &Harness,
    account: &str,
    address: &Address,
    done: impl Fn(&pb::Contact) -> bool,
) -> pb::Contact {
    for _ in 0..100 {
        let contact = contact_of(harness, account, address).await;
        if done(&contact) {
            return contact;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the contact {address} of {account} never got there");
}

#[tokio::test]
async fn a_rotated_key_is_certified_announced_to_that_identitys_peers_and_old_mail_still_opens() {
    let harness = harness().await;
    let keys = harness.keys.clone();
    // As in the revocation test: Paul writes with Xavier only, Quinn with Yann only.
    let [xavier, yann, paul, quinn] =
        one_account_two_identities_and_their_peers(&harness, 21).await;
    let carrier = address("carrier", 25).onion_host();
    keys.set_preferred_carriers(Request::new(pb::SetPreferredCarriersRequest {
        identity_id: "id-x".into(),
        carriers: vec![carrier.clone()],
        ..Default::default()
    }))
    .await
    .unwrap();
    let seal = |from_id: &'static str, from: Address, to: Address| {
        let keys = keys.clone();
        async move {
            keys.resolve_recipient_keys(Request::new(pb::ResolveRecipientKeysRequest {
                sender_identity_id: from_id.into(),
                recipients: vec![to.to_string()],
                fetch_missing: true,
            }))
            .await
            .unwrap();
            keys.sign_and_encrypt(Request::new(pb::SignAndEncryptRequest {
                signer_identity_id: from_id.into(),
                recipients: vec![to.to_string()],
                message: message(&from, &to, "hello"),
                add_autocrypt_header: true,
            }))
            .await
            .unwrap()
            .into_inner()
            .message
        }
    };
    let open = |to_id: &'static str, sealed: Vec<u8>| {
        let keys = keys.clone();
        async move {
            keys.decrypt_and_verify(Request::new(pb::DecryptAndVerifyRequest {
                recipient_identity_id: to_id.into(),
                message: sealed,
                fetch_sender_key: true,
            }))
            .await
            .map(|response| response.into_inner())
        }
    };
    let verified = |opened: &pb::DecryptAndVerifyResponse| {
        opened.signature == pb::SignatureStatus::Verified as i32
    };
    assert!(verified(
        &open("id-p", seal("id-x", xavier.clone(), paul.clone()).await)
            .await
            .unwrap()
    ));
    assert!(verified(
        &open("id-x", seal("id-p", paul.clone(), xavier.clone()).await)
            .await
            .unwrap()
    ));
    assert!(verified(
        &open("id-q", seal("id-y", yann.clone(), quinn.clone()).await)
            .await
            .unwrap()
    ));
    assert!(verified(
        &open("id-y", seal("id-q", quinn.clone(), yann.clone()).await)
            .await
            .unwrap()
    ));
    let old = contact_of(&harness, "acct-p", &xavier).await;
    let yann_before = contact_of(&harness, "acct-q", &yann).await;
    // Paul's next message is on its way (sealed to Xavier's current key) when Xavier moves.
    let in_flight = seal("id-p", paul.clone(), xavier.clone()).await;

    let rotated = keys
        .rotate_identity_key(Request::new(pb::RotateIdentityKeyRequest {
            identity_id: "id-x".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    let new_fingerprint = rotated.key.as_ref().unwrap().fingerprint.clone();
    assert_eq!(rotated.previous_fingerprint, old.fingerprint);
    assert_ne!(new_fingerprint, old.fingerprint);
    let new_cert = parse_cert(&rotated.key.as_ref().unwrap().public_key).unwrap();
    let old_cert = parse_cert(&old.public_key).unwrap();
    assert!(pinning::is_transition_signed(&old_cert, &new_cert, &xavier));
    let recipients: Vec<&str> = rotated
        .announcements
        .iter()
        .map(|announcement| announcement.recipient.as_str())
        .collect();
    assert_eq!(recipients, [paul.to_string()], "only Xavier's peer is told");

    // WKD serves the new key with the old key's certification, and a carrier list that the new
    // key signed.
    let served =
        parse_cert(&wkd_get(&harness, "id-x", &xavier, &wkd::direct_path(&xavier)).await).unwrap();
    assert_eq!(served.fingerprint().to_hex(), new_fingerprint);
    assert!(pinning::is_transition_signed(&old_cert, &served, &xavier));
    let list = wkd_get(&harness, "id-x", &xavier, &wkd::carriers_path(&xavier)).await;
    assert_eq!(
        carrier_list::verify(&list, &new_cert, &xavier)
            .unwrap()
            .carriers,
        std::slice::from_ref(&carrier)
    );

    // Paul's carrier opens the announcement as Xavier's verified mail (signed by the pinned
    // key) and moves the pin after the reply, without asking Paul.
    let announced = open("id-p", rotated.announcements[0].message.clone())
        .await
        .unwrap();
    assert!(verified(&announced));
    assert!(String::from_utf8_lossy(&announced.message).contains("This address has a new key"));
    let moved = contact_eventually(&harness, "acct-p", &xavier, |contact| {
        contact.fingerprint == new_fingerprint
    })
    .await;
    assert_eq!(moved.key_source, pb::KeySource::Transition as i32);
    assert!(moved.held_key_change.is_none());
    assert!(moved.revoked_at.is_none());

    // The message on its way before the move still opens, with the key Xavier replaced.
    assert!(verified(&open("id-x", in_flight).await.unwrap()));
    // Mail both ways now uses the new key and verifies.
    let to_xavier = seal("id-p", paul.clone(), xavier.clone()).await;
    assert!(
        pkesk_recipients(&to_xavier)
            .iter()
            .any(|handle| handle.aliases(sequoia_openpgp::KeyHandle::from(
                new_cert.keys().subkeys().next().unwrap().key().keyid()
            ))),
        "Paul's carrier encrypts to the new key"
    );
    assert!(verified(&open("id-x", to_xavier).await.unwrap()));
    assert!(verified(
        &open("id-p", seal("id-x", xavier.clone(), paul.clone()).await)
            .await
            .unwrap()
    ));

    // Quinn, who knows only Yann, is untouched; so is Yann's key.
    let yann_after = contact_of(&harness, "acct-q", &yann).await;
    assert_eq!(yann_after.fingerprint, yann_before.fingerprint);
    assert_eq!(yann_after.key_source, yann_before.key_source);

    // A key for Paul's own address that Paul's pinned key did not certify, carried in Paul's
    // verified mail, is held for Xavier's account, never taken.
    let stranger_key = IdentityKey::generate(&paul).unwrap();
    let paul_before = contact_of(&harness, "acct-xy", &paul).await;
    let uncertified = keys
        .sign_and_encrypt(Request::new(pb::SignAndEncryptRequest {
            signer_identity_id: "id-p".into(),
            recipients: vec![xavier.to_string()],
            message: rotation::announcement(&stranger_key, &xavier, "<u@x>").unwrap(),
            add_autocrypt_header: true,
        }))
        .await
        .unwrap()
        .into_inner()
        .message;
    assert!(verified(&open("id-x", uncertified).await.unwrap()));
    let held = contact_eventually(&harness, "acct-xy", &paul, |contact| {
        contact.held_key_change.is_some()
    })
    .await;
    assert_eq!(held.fingerprint, paul_before.fingerprint);
    assert_eq!(
        held.held_key_change.unwrap().fingerprint,
        stranger_key.fingerprint().to_hex()
    );

    // Revoking Xavier destroys the replaced key with the current one.
    let before_revocation = seal("id-p", paul.clone(), xavier.clone()).await;
    keys.revoke_identity_key(Request::new(pb::RevokeIdentityKeyRequest {
        identity_id: "id-x".into(),
        reason: pb::RevocationReason::Retired as i32,
        message: String::new(),
    }))
    .await
    .unwrap();
    assert_eq!(
        open("id-x", before_revocation).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    assert_eq!(
        keys.rotate_identity_key(Request::new(pb::RotateIdentityKeyRequest {
            identity_id: "id-x".into(),
        }))
        .await
        .unwrap_err()
        .code(),
        Code::FailedPrecondition,
        "a revoked identity has no key to move from"
    );
}

/// An account that asked to confirm introductions gets an introduced contact held (with its
/// introducer recorded), not pinned, until it accepts; the default pins at once.
#[tokio::test]
async fn an_account_may_hold_introduced_contacts_for_confirmation() {
    let harness = harness().await;
    let keys = harness.keys.clone();
    let alice = address("alice", 31);
    let alice_key = create(&harness, "id-alice", "acct-a", &alice).await;
    let bob = address("bob", 32);
    let bob_key = create(&harness, "id-bob", "acct-b", &bob).await;
    let carol = IdentityKey::generate(&address("carol", 33)).unwrap();
    for (account, who, key) in [
        ("acct-a", &bob, bob_key.public_key.clone()),
        ("acct-b", &alice, alice_key.public_key.clone()),
        ("acct-b", carol.address(), bytes(&carol.public_cert())),
    ] {
        keys.add_contact(Request::new(pb::AddContactRequest {
            account_id: account.into(),
            address: who.to_string(),
            public_key: key,
            ..Default::default()
        }))
        .await
        .unwrap();
    }
    let policy = |confirm: Option<bool>| {
        let keys = keys.clone();
        async move {
            match confirm {
                None => {
                    keys.get_address_book_policy(Request::new(pb::GetAddressBookPolicyRequest {
                        account_id: "acct-a".into(),
                    }))
                    .await
                }
                Some(confirm_introductions) => {
                    keys.set_address_book_policy(Request::new(pb::SetAddressBookPolicyRequest {
                        account_id: "acct-a".into(),
                        policy: Some(pb::AddressBookPolicy {
                            confirm_introductions,
                        }),
                    }))
                    .await
                }
            }
            .unwrap()
            .into_inner()
            .confirm_introductions
        }
    };
    assert!(
        !policy(None).await,
        "introductions are added at once by default"
    );
    assert!(policy(Some(true)).await);
    assert!(policy(None).await);

    let carol_of_bob = contact_of(&harness, "acct-b", carol.address()).await;
    let part = keys
        .make_introduction(Request::new(pb::MakeIntroductionRequest {
            introducer_identity_id: "id-bob".into(),
            contact_id: carol_of_bob.contact_id,
        }))
        .await
        .unwrap()
        .into_inner()
        .part;
    let held = keys
        .import_introduction(Request::new(pb::ImportIntroductionRequest {
            recipient_identity_id: "id-alice".into(),
            part: part.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(
        held.fingerprint.is_empty() && held.public_key.is_empty(),
        "{held:?}"
    );
    let change = held
        .held_key_change
        .clone()
        .expect("the introduced key is held");
    assert_eq!(change.fingerprint, carol.fingerprint().to_hex());
    assert_eq!(change.source, pb::KeySource::Introduction as i32);
    assert_eq!(held.introducers.len(), 1);
    assert_eq!(held.introducers[0].address, bob.to_string());
    // Nothing is encrypted to a held key.
    assert_ne!(
        status(&resolve(&harness, "id-alice", carol.address(), false).await),
        pb::RecipientKeyStatus::Pinned
    );
    // The account accepts: pinned, as introduced by Bob.
    let accepted = keys
        .confirm_key_change(Request::new(pb::ConfirmKeyChangeRequest {
            account_id: "acct-a".into(),
            contact_id: held.contact_id.clone(),
            fingerprint: change.fingerprint.clone(),
            accept: true,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(accepted.fingerprint, carol.fingerprint().to_hex());
    assert_eq!(accepted.key_source, pb::KeySource::Introduction as i32);
    assert_eq!(accepted.introducers[0].address, bob.to_string());
    assert_eq!(
        status(&resolve(&harness, "id-alice", carol.address(), false).await),
        pb::RecipientKeyStatus::Pinned
    );
    // Back to the default: the next introduction of someone new is pinned at once.
    assert!(!policy(Some(false)).await);
    let dave = IdentityKey::generate(&address("dave", 34)).unwrap();
    let dave_of_bob = keys
        .add_contact(Request::new(pb::AddContactRequest {
            account_id: "acct-b".into(),
            address: dave.address().to_string(),
            public_key: bytes(&dave.public_cert()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let part = keys
        .make_introduction(Request::new(pb::MakeIntroductionRequest {
            introducer_identity_id: "id-bob".into(),
            contact_id: dave_of_bob.contact_id,
        }))
        .await
        .unwrap()
        .into_inner()
        .part;
    let pinned = keys
        .import_introduction(Request::new(pb::ImportIntroductionRequest {
            recipient_identity_id: "id-alice".into(),
            part,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pinned.fingerprint, dave.fingerprint().to_hex());
    assert!(pinned.held_key_change.is_none());
}

#[tokio::test]
async fn a_verified_stranger_asks_and_the_answer_makes_it_a_correspondent_or_blocks_it() {
    let harness = harness_with_requests(true).await;
    let alice = address("alice", 1);
    let alice_cert = parse_cert(
        &create(&harness, "id-alice", "acct-a", &alice)
            .await
            .public_key,
    )
    .unwrap();
    let open = |from: &IdentityKey, subject: &str| {
        let sealed = pgp_mime::seal(
            &message(from.address(), &alice, subject),
            from,
            std::slice::from_ref(&alice_cert),
        )
        .unwrap();
        let keys = harness.keys.clone();
        async move {
            keys.decrypt_and_verify(Request::new(pb::DecryptAndVerifyRequest {
                recipient_identity_id: "id-alice".into(),
                message: sealed,
                fetch_sender_key: true,
            }))
            .await
            .unwrap()
            .into_inner()
        }
    };
    let standing = |who: &IdentityKey| {
        let keys = harness.keys.clone();
        let address = who.address().to_string();
        async move {
            let answer = keys
                .check_correspondent(Request::new(pb::CheckCorrespondentRequest {
                    identity_id: "id-alice".into(),
                    address,
                }))
                .await
                .unwrap()
                .into_inner();
            (answer.correspondent, answer.blocked)
        }
    };
    let answer = |contact_id: String, accept: bool| {
        let keys = harness.keys.clone();
        async move {
            keys.answer_contact_request(Request::new(pb::AnswerContactRequestRequest {
                account_id: "acct-a".into(),
                contact_id,
                accept,
                identity_id: String::new(),
            }))
            .await
        }
    };

    // Bob's first verified message is a request: no correspondent yet.
    let bob = peer(&harness, "bob", 2);
    let first = open(&bob, "hi").await;
    assert_eq!(first.signature, pb::SignatureStatus::Verified as i32);
    assert!(first.contact_request);
    let bob_id = first.key_change.unwrap().contact_id;
    assert_eq!(standing(&bob).await, (false, false));
    assert!(open(&bob, "hi again").await.contact_request);
    // Not in the address book until accepted; listed among the requests.
    let listed = |only_requests: bool| {
        let keys = harness.keys.clone();
        async move {
            keys.list_contacts(Request::new(pb::ListContactsRequest {
                account_id: "acct-a".into(),
                only_requests,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .contacts
            .into_iter()
            .map(|contact| contact.address)
            .collect::<Vec<_>>()
        }
    };
    assert!(listed(false).await.is_empty());
    assert_eq!(listed(true).await, [bob.address().to_string()]);
    // Accepted: a correspondent, whose mail is no request any more.
    let accepted = answer(bob_id.clone(), true).await.unwrap().into_inner();
    assert_eq!(accepted.identity_ids, ["id-alice"]);
    assert!(accepted.contact.unwrap().requested_identities.is_empty());
    assert_eq!(standing(&bob).await, (true, false));
    assert_eq!(listed(false).await, [bob.address().to_string()]);
    assert!(!open(&bob, "now a contact").await.contact_request);
    // Nothing left to answer.
    let again = answer(bob_id, true).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);

    // Dave is refused: blocked for this identity.
    let dave = peer(&harness, "dave", 3);
    let dave_id = open(&dave, "hi").await.key_change.unwrap().contact_id;
    let refused = answer(dave_id, false).await.unwrap().into_inner();
    assert_eq!(refused.contact.unwrap().blocked_identities, ["id-alice"]);
    assert_eq!(standing(&dave).await, (false, true));

    // Replying to Frank accepts him, and says so.
    let frank = peer(&harness, "frank", 4);
    assert!(open(&frank, "hi").await.contact_request);
    let reply = harness
        .keys
        .sign_and_encrypt(Request::new(pb::SignAndEncryptRequest {
            signer_identity_id: "id-alice".into(),
            recipients: vec![frank.address().to_string()],
            message: message(&alice, frank.address(), "Re: hi"),
            add_autocrypt_header: true,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.accepted_requests, [frank.address().to_string()]);
    assert_eq!(standing(&frank).await, (true, false));
}

#[tokio::test]
async fn strangers_keys_are_fetched_within_an_hourly_bound_per_identity() {
    let mut harness = harness().await;
    harness.service = harness.service.clone().with_stranger_fetches_per_hour(1);
    harness.keys = KeysGrpc::new(harness.service.clone());
    let alice = address("alice", 1);
    let alice_cert = parse_cert(
        &create(&harness, "id-alice", "acct-a", &alice)
            .await
            .public_key,
    )
    .unwrap();
    let open = |from: &IdentityKey| {
        let sealed = pgp_mime::seal(
            &message(from.address(), &alice, "hi"),
            from,
            std::slice::from_ref(&alice_cert),
        )
        .unwrap();
        let keys = harness.keys.clone();
        async move {
            keys.decrypt_and_verify(Request::new(pb::DecryptAndVerifyRequest {
                recipient_identity_id: "id-alice".into(),
                message: sealed,
                fetch_sender_key: true,
            }))
            .await
        }
    };
    let bob = peer(&harness, "bob", 2);
    let dave = peer(&harness, "dave", 3);
    assert!(open(&bob).await.is_ok());
    let asked = harness.onions.asked.lock().unwrap().len();
    assert!(asked >= 1);
    // A second stranger's key waits for the next hour: the queue keeps the message.
    let waits = open(&dave).await.unwrap_err();
    assert_eq!(waits.code(), Code::Unavailable);
    assert_eq!(harness.onions.asked.lock().unwrap().len(), asked);
    // Bob's key was fetched once and is pinned: his next message needs no fetch.
    assert!(open(&bob).await.is_ok());
    assert_eq!(harness.onions.asked.lock().unwrap().len(), asked);
}
