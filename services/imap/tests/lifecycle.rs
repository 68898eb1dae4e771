//! The identity lifecycle through `CreateIdentity`, `ImportIdentity`, `RevokeIdentity` and
//! `RotateIdentityKey` on the gRPC adapter, with a real SQLite store and onion and keys parts
//! that record every call and refuse where a scenario says: what is made, what is undone, and
//! which error the caller sees.

use std::sync::{Arc, Mutex};

use onionpost_imap::grpc::ImapGrpc;
use onionpost_imap::lifecycle::IdentityParts;
use onionpost_imap::service::{ImapService, default_settings};
use onionpost_imap::store::MIGRATIONS;
use onionpost_imap::{CarrierSecret, SystemClock};
use onionpost_proto::imap::v1 as pb;
use onionpost_proto::imap::v1::imap_server::Imap as _;
use onionpost_proto::keys::v1 as keys;
use onionpost_proto::onion::v1 as onion;
use onionpost_proto::queue::v1 as queue;
use onionpost_runtime::Database;
use tonic::{Code, Request, Status};

/// A v3 onion host with a valid checksum (rend-spec-v3 §6).
const ONION: &str = "aaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dyp3kead.onion";

/// Which step refuses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Refuse {
    Nothing,
    Onion,
    Key,
    Import,
    /// The queue is away for the first request only.
    QueueOnce,
}

/// Onion and keys services that record what they are asked.
struct RecordingParts {
    refuse: Refuse,
    calls: Mutex<Vec<String>>,
}

impl RecordingParts {
    fn new(refuse: Refuse) -> Arc<Self> {
        Arc::new(RecordingParts {
            refuse,
            calls: Mutex::new(Vec::new()),
        })
    }

    fn record(&self, call: &str) {
        self.calls.lock().unwrap().push(call.to_owned());
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl IdentityParts for RecordingParts {
    async fn create_onion(
        &self,
        request: onion::CreateOnionRequest,
    ) -> Result<onion::OnionService, Status> {
        self.record("create onion");
        if self.refuse == Refuse::Onion {
            return Err(Status::unavailable("tor is away"));
        }
        Ok(onion::OnionService {
            identity_id: request.identity_id,
            onion_address: ONION.to_owned(),
            state: onion::OnionState::Publishing as i32,
            ..Default::default()
        })
    }

    async fn revoke_onion(&self, _: &str, serve_revocation: bool) -> Result<(), Status> {
        self.record(if serve_revocation {
            "retire onion"
        } else {
            "revoke onion"
        });
        Ok(())
    }

    async fn create_key(
        &self,
        request: keys::CreateIdentityKeyRequest,
    ) -> Result<keys::IdentityKey, Status> {
        self.record("create key");
        if self.refuse == Refuse::Key {
            return Err(Status::internal("key generation failed"));
        }
        Ok(keys::IdentityKey {
            identity_id: request.identity_id,
            account_id: request.account_id,
            address: request.address,
            fingerprint: "AB".repeat(20),
            ..Default::default()
        })
    }

    async fn import_bundle(
        &self,
        request: keys::ImportIdentityRequest,
    ) -> Result<keys::IdentityKey, Status> {
        self.record("import bundle");
        if self.refuse == Refuse::Import {
            return Err(Status::invalid_argument("wrong passphrase"));
        }
        Ok(keys::IdentityKey {
            identity_id: request.identity_id,
            account_id: request.account_id,
            address: format!("bob@{ONION}"),
            fingerprint: "CD".repeat(20),
            ..Default::default()
        })
    }

    async fn revoke_key(&self, _: &str) -> Result<Vec<keys::SealedMail>, Status> {
        self.record("revoke key");
        Ok(vec![keys::SealedMail {
            recipient: format!("peer@{ONION}"),
            message: b"sealed".to_vec(),
            message_id: "<announcement@example.onion>".to_owned(),
        }])
    }

    async fn rotate_key(
        &self,
        identity_id: &str,
    ) -> Result<keys::RotateIdentityKeyResponse, Status> {
        self.record("rotate key");
        Ok(keys::RotateIdentityKeyResponse {
            key: Some(keys::IdentityKey {
                identity_id: identity_id.to_owned(),
                fingerprint: "CD".repeat(20),
                ..Default::default()
            }),
            previous_fingerprint: "AB".repeat(20),
            announcements: ["bob", "carol"]
                .iter()
                .map(|peer| keys::SealedMail {
                    recipient: format!("{peer}@{ONION}"),
                    message: b"sealed".to_vec(),
                    message_id: format!("<{peer}@example.onion>"),
                })
                .collect(),
        })
    }

    async fn answer_contact_request(
        &self,
        request: keys::AnswerContactRequestRequest,
    ) -> Result<keys::AnswerContactRequestResponse, Status> {
        self.record(&format!(
            "answer {} {}",
            request.contact_id,
            if request.accept { "accept" } else { "refuse" }
        ));
        Ok(keys::AnswerContactRequestResponse {
            contact: Some(keys::Contact {
                contact_id: request.contact_id.clone(),
                address: format!("{}@{ONION}", request.contact_id),
                ..Default::default()
            }),
            identity_ids: vec!["id-1".to_owned()],
        })
    }

    async fn enqueue(&self, request: queue::EnqueueRequest) -> Result<(), Status> {
        self.record(&format!("enqueue to {}", request.recipients[0].address));
        let first = self
            .calls()
            .iter()
            .filter(|call| call.starts_with("enqueue"))
            .count()
            == 1;
        if self.refuse == Refuse::QueueOnce && first {
            return Err(Status::unavailable("the queue is restarting"));
        }
        Ok(())
    }
}

struct Fixture {
    grpc: ImapGrpc,
    service: ImapService,
    parts: Arc<RecordingParts>,
    account_id: String,
    _dir: tempfile::TempDir,
}

async fn fixture(refuse: Refuse, identities_allowed: u32) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let database = Database::open_sqlite(&dir.path().join("imap.sqlite3"), MIGRATIONS)
        .await
        .unwrap();
    let secret = CarrierSecret::from_text("0123456789abcdef0123456789abcdef").unwrap();
    let service = ImapService::open(database, secret, Arc::new(SystemClock), default_settings())
        .await
        .unwrap();
    let plan = service
        .create_plan("small", 1 << 20, identities_allowed, false, 0)
        .await
        .unwrap();
    let account = service
        .create_account("alice", "alice's password", &plan.plan_id)
        .await
        .unwrap();
    let parts = RecordingParts::new(refuse);
    Fixture {
        grpc: ImapGrpc::new(service.clone()).with_identity_parts(parts.clone()),
        service,
        parts,
        account_id: account.record.account_id,
        _dir: dir,
    }
}

fn create_request(account_id: &str) -> Request<pb::CreateIdentityRequest> {
    Request::new(pb::CreateIdentityRequest {
        account_id: account_id.to_owned(),
        local_part: "Alice".to_owned(),
        display_name: String::new(),
    })
}

async fn identities(fixture: &Fixture) -> Vec<pb::Identity> {
    fixture
        .grpc
        .list_identities(Request::new(pb::ListIdentitiesRequest {
            account_id: fixture.account_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .identities
}

#[tokio::test]
async fn an_identity_is_an_onion_then_a_key_then_the_record_and_revoking_undoes_all_three() {
    let fixture = fixture(Refuse::Nothing, 2).await;
    let created = fixture
        .grpc
        .create_identity(create_request(&fixture.account_id))
        .await
        .unwrap()
        .into_inner();
    let identity = created.identity.unwrap();
    assert_eq!(identity.address, format!("alice@{ONION}"));
    assert_eq!(identity.account_id, fixture.account_id);
    assert_eq!(created.onion.unwrap().onion_address, ONION);
    assert_eq!(created.key.unwrap().fingerprint, "AB".repeat(20));
    assert_eq!(fixture.parts.calls(), ["create onion", "create key"]);
    assert_eq!(identities(&fixture).await.len(), 1);

    fixture
        .grpc
        .revoke_identity(Request::new(pb::RevokeIdentityRequest {
            identity_id: identity.identity_id.clone(),
        }))
        .await
        .unwrap();
    // The key's announcements are queued to its peers before the onion is retired (kept to
    // serve the revocation), then the record goes.
    assert_eq!(
        fixture.parts.calls(),
        [
            "create onion",
            "create key",
            "revoke key",
            &format!("enqueue to peer@{ONION}"),
            "retire onion"
        ]
    );
    assert!(identities(&fixture).await.is_empty());

    let again = fixture
        .grpc
        .revoke_identity(Request::new(pb::RevokeIdentityRequest {
            identity_id: identity.identity_id,
        }))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    assert_eq!(
        fixture.parts.calls().len(),
        5,
        "an unknown id touches nothing"
    );
}

/// A queue away for a moment (restarting) still gets the announcement: the key is revoked
/// already, so nothing could sign it again later.
#[tokio::test]
async fn a_revocation_announcement_is_offered_again_while_the_queue_is_away() {
    let fixture = fixture(Refuse::QueueOnce, 2).await;
    let created = fixture
        .grpc
        .create_identity(create_request(&fixture.account_id))
        .await
        .unwrap()
        .into_inner();
    fixture
        .grpc
        .revoke_identity(Request::new(pb::RevokeIdentityRequest {
            identity_id: created.identity.unwrap().identity_id,
        }))
        .await
        .unwrap();
    let enqueue = format!("enqueue to peer@{ONION}");
    assert_eq!(
        fixture.parts.calls(),
        [
            "create onion",
            "create key",
            "revoke key",
            &enqueue,
            &enqueue,
            "retire onion"
        ]
    );
}

/// A new key is announced to each peer keys names, from the identity's address; the onion and
/// the record stay; an unknown identity touches nothing.
#[tokio::test]
async fn a_rotated_key_is_announced_to_each_peer_and_the_identity_stays() {
    let fixture = fixture(Refuse::QueueOnce, 2).await;
    let created = fixture
        .grpc
        .create_identity(create_request(&fixture.account_id))
        .await
        .unwrap()
        .into_inner();
    let identity = created.identity.unwrap();
    let rotated = fixture
        .grpc
        .rotate_identity_key(Request::new(pb::RotateIdentityKeyRequest {
            identity_id: identity.identity_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rotated.fingerprint, "CD".repeat(20));
    assert_eq!(rotated.previous_fingerprint, "AB".repeat(20));
    assert_eq!(rotated.peers_announced, 2);
    // The queue, away for the first request, is asked again.
    let bob = format!("enqueue to bob@{ONION}");
    let carol = format!("enqueue to carol@{ONION}");
    assert_eq!(
        fixture.parts.calls(),
        [
            "create onion",
            "create key",
            "rotate key",
            &bob,
            &bob,
            &carol
        ]
    );
    assert_eq!(identities(&fixture).await.len(), 1);

    let unknown = fixture
        .grpc
        .rotate_identity_key(Request::new(pb::RotateIdentityKeyRequest {
            identity_id: "no-such-identity".to_owned(),
        }))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(
        fixture.parts.calls().len(),
        6,
        "an unknown id touches nothing"
    );
}

#[tokio::test]
async fn a_failed_key_generation_removes_the_onion_and_records_nothing() {
    let fixture = fixture(Refuse::Key, 2).await;
    let refused = fixture
        .grpc
        .create_identity(create_request(&fixture.account_id))
        .await
        .unwrap_err();
    // The keys service's status reaches the caller unchanged.
    assert_eq!(refused.code(), Code::Internal);
    assert_eq!(refused.message(), "key generation failed");
    assert_eq!(
        fixture.parts.calls(),
        ["create onion", "create key", "revoke onion"]
    );
    assert!(identities(&fixture).await.is_empty());
}

#[tokio::test]
async fn a_failed_onion_makes_nothing_else() {
    let fixture = fixture(Refuse::Onion, 2).await;
    let refused = fixture
        .grpc
        .create_identity(create_request(&fixture.account_id))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    assert_eq!(fixture.parts.calls(), ["create onion"]);
    assert!(identities(&fixture).await.is_empty());
}

#[tokio::test]
async fn a_full_plan_or_a_bad_local_part_is_refused_before_anything_is_made() {
    let fixture = fixture(Refuse::Nothing, 1).await;
    fixture
        .grpc
        .create_identity(create_request(&fixture.account_id))
        .await
        .unwrap();
    let full = fixture
        .grpc
        .create_identity(create_request(&fixture.account_id))
        .await
        .unwrap_err();
    assert_eq!(full.code(), Code::FailedPrecondition);
    assert_eq!(
        full.message(),
        "the account's plan allows 1 identities and it has 1"
    );
    let unknown = fixture
        .grpc
        .create_identity(create_request("no-such-account"))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    for (local_part, says) in [
        ("two..dots", "dot-atom"),
        ("PostMaster", "postmaster is kept for the carrier"),
    ] {
        let bad = fixture
            .grpc
            .create_identity(Request::new(pb::CreateIdentityRequest {
                account_id: fixture.account_id.clone(),
                local_part: local_part.to_owned(),
                display_name: String::new(),
            }))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(bad.message().contains(says), "{}", bad.message());
    }
    assert_eq!(fixture.parts.calls(), ["create onion", "create key"]);
}

#[tokio::test]
async fn an_imported_identity_refused_by_the_record_loses_its_key_and_onion() {
    let fixture = fixture(Refuse::Nothing, 2).await;
    let import = || {
        Request::new(pb::ImportIdentityRequest {
            account_id: fixture.account_id.clone(),
            bundle: b"bundle".to_vec(),
            passphrase: "bundle passphrase".to_owned(),
            display_name: String::new(),
        })
    };
    let imported = fixture.grpc.import_identity(import()).await.unwrap();
    assert_eq!(imported.into_inner().address, format!("bob@{ONION}"));
    // The same address twice: keys accepts here, the record refuses, and both parts are undone.
    let twice = fixture.grpc.import_identity(import()).await.unwrap_err();
    assert_eq!(twice.code(), Code::AlreadyExists);
    assert_eq!(
        fixture.parts.calls(),
        [
            "import bundle",
            "import bundle",
            "revoke key",
            "revoke onion"
        ]
    );
    assert_eq!(identities(&fixture).await.len(), 1);
}

#[tokio::test]
async fn a_refused_bundle_passes_the_keys_status_through() {
    let fixture = fixture(Refuse::Import, 2).await;
    let refused = fixture
        .grpc
        .import_identity(Request::new(pb::ImportIdentityRequest {
            account_id: fixture.account_id.clone(),
            bundle: b"bundle".to_vec(),
            passphrase: "not the passphrase".to_owned(),
            display_name: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(fixture.parts.calls(), ["import bundle"]);
}

/// Messages in the account's mailbox with this role: (mailbox name, count).
async fn count_in(fixture: &Fixture, name: &str) -> u32 {
    use onionpost_imap::mailstore::MailStore as _;
    fixture
        .service
        .status(&fixture.account_id, name)
        .await
        .unwrap()
        .messages
}

#[tokio::test]
async fn answering_a_contact_request_moves_that_senders_messages_out_of_requests() {
    let fixture = fixture(Refuse::Nothing, 2).await;
    let created = fixture
        .grpc
        .create_identity(create_request(&fixture.account_id))
        .await
        .unwrap()
        .into_inner();
    let identity_id = created.identity.unwrap().identity_id;
    for (n, sender) in ["dave", "dave", "erin"].iter().enumerate() {
        let message = format!(
            "From: {sender} <{sender}@{ONION}>\r\nTo: alice@{ONION}\r\nMessage-ID: <{n}@x>\r\nSubject: hello {n}\r\n\r\nhi\r\n"
        );
        fixture
            .grpc
            .deliver(Request::new(pb::DeliverRequest {
                identity_id: identity_id.clone(),
                mailbox: pb::Mailbox::Requests as i32,
                message: message.into_bytes(),
                verification: pb::SenderVerification::Verified as i32,
                ..Default::default()
            }))
            .await
            .unwrap();
    }
    assert_eq!(count_in(&fixture, "Requests").await, 3);
    let answer = |contact: &str, accept: bool| {
        fixture
            .grpc
            .answer_contact_request(Request::new(keys::AnswerContactRequestRequest {
                account_id: fixture.account_id.clone(),
                contact_id: contact.to_owned(),
                accept,
                identity_id: String::new(),
            }))
    };
    let accepted = answer("dave", true).await.unwrap().into_inner();
    assert_eq!(accepted.address, format!("dave@{ONION}"));
    assert_eq!(accepted.messages_moved, 2);
    assert_eq!(count_in(&fixture, "INBOX").await, 2);
    let refused = answer("erin", false).await.unwrap().into_inner();
    assert_eq!(refused.messages_moved, 1);
    assert_eq!(count_in(&fixture, "Requests").await, 0);
    assert_eq!(count_in(&fixture, "Trash").await, 1);
    assert!(fixture.parts.calls().ends_with(&[
        "answer dave accept".to_owned(),
        "answer erin refuse".to_owned()
    ]));
}
