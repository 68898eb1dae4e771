//! The identity lifecycle: the one place an identity is made, brought in and revoked, so every
//! front end (the admin API, the account portal) does it the same way through
//! `CreateIdentity`, `ImportIdentity` and `RevokeIdentity` on imap's contract.
//!
//! An identity is three things held by three services: an onion (onion service), an OpenPGP key
//! (keys service) and the account's record (here). imap owns the record and the plan's number
//! of identities, so it drives the other two through their contracts ([`IdentityParts`]) and
//! undoes what it made when a later step refuses: an onion never outlives a failed key, a key
//! never outlives a refused record.

use std::sync::Arc;

use onionpost_proto::ServiceName;
use onionpost_proto::imap::v1 as pb;
use onionpost_proto::keys::v1 as keys;
use onionpost_proto::keys::v1::keys_client::KeysClient;
use onionpost_proto::onion::v1 as onion;
use onionpost_proto::onion::v1::onion_client::OnionClient;
use onionpost_proto::queue::v1 as queue;
use onionpost_runtime::{Directory, Transport};
use tonic::Status;

use crate::crypto::os_random;
use crate::error::ImapError;
use crate::service::{IdentityView, ImapService, check_display_name};

/// Times an announcement (revocation, new key) is offered to the queue before it is given up.
const ANNOUNCE_ATTEMPTS: u32 = 4;

/// Hosted accounts read and send through their identity's own onion, so every identity gets
/// the IMAP and submission ports as well as SMTP and WKD.
const PURPOSES: [onion::PortPurpose; 4] = [
    onion::PortPurpose::Smtp,
    onion::PortPurpose::Wkd,
    onion::PortPurpose::Imap,
    onion::PortPurpose::Submission,
];

/// The longest local part (RFC 5321 §4.5.3.1.1).
const MAX_LOCAL_PART_LEN: usize = 64;

/// The calls on the onion and keys services an identity's life needs. A trait so the roll-back
/// can be tested with a part that refuses; [`GrpcParts`] is the real one.
#[async_trait::async_trait]
pub trait IdentityParts: Send + Sync + 'static {
    async fn create_onion(
        &self,
        request: onion::CreateOnionRequest,
    ) -> Result<onion::OnionService, Status>;
    /// `serve_revocation`: the onion stays published for a while so its WKD path serves the
    /// revocation (a revoked identity); false drops it at once (a roll-back).
    async fn revoke_onion(&self, identity_id: &str, serve_revocation: bool) -> Result<(), Status>;
    async fn create_key(
        &self,
        request: keys::CreateIdentityKeyRequest,
    ) -> Result<keys::IdentityKey, Status>;
    /// Restores a bundle's key; keys hands the onion key to the onion service itself.
    async fn import_bundle(
        &self,
        request: keys::ImportIdentityRequest,
    ) -> Result<keys::IdentityKey, Status>;
    /// Revokes the key; returns the signed announcements for the identity's peers.
    async fn revoke_key(&self, identity_id: &str) -> Result<Vec<keys::SealedMail>, Status>;
    /// Replaces the key; returns the new key and the signed announcements for its peers.
    async fn rotate_key(
        &self,
        identity_id: &str,
    ) -> Result<keys::RotateIdentityKeyResponse, Status>;
    /// Queues one message for delivery.
    async fn enqueue(&self, request: queue::EnqueueRequest) -> Result<(), Status>;
    /// keys AnswerContactRequest.
    async fn answer_contact_request(
        &self,
        request: keys::AnswerContactRequestRequest,
    ) -> Result<keys::AnswerContactRequestResponse, Status>;
}

/// [`IdentityParts`] over gRPC, local or remote, found through the runtime's directory at each
/// call (so a service that starts later is picked up).
#[derive(Clone)]
pub struct GrpcParts {
    directory: Directory,
}

impl GrpcParts {
    pub fn new(directory: Directory) -> Self {
        GrpcParts { directory }
    }

    fn transport(&self, target: ServiceName) -> Result<Transport, Status> {
        self.directory.transport(target).map_err(|_| {
            Status::unavailable(format!("the {} service is not reachable", target.as_str()))
        })
    }

    fn onion(&self) -> Result<OnionClient<Transport>, Status> {
        Ok(onionpost_proto::clients::onion(
            self.transport(ServiceName::Onion)?,
        ))
    }

    fn keys(&self) -> Result<KeysClient<Transport>, Status> {
        Ok(onionpost_proto::clients::keys(
            self.transport(ServiceName::Keys)?,
        ))
    }
}

#[async_trait::async_trait]
impl IdentityParts for GrpcParts {
    async fn create_onion(
        &self,
        request: onion::CreateOnionRequest,
    ) -> Result<onion::OnionService, Status> {
        Ok(self.onion()?.create_onion(request).await?.into_inner())
    }

    async fn revoke_onion(&self, identity_id: &str, serve_revocation: bool) -> Result<(), Status> {
        self.onion()?
            .revoke_onion(onion::RevokeOnionRequest {
                identity_id: identity_id.to_owned(),
                serve_revocation,
            })
            .await?;
        Ok(())
    }

    async fn create_key(
        &self,
        request: keys::CreateIdentityKeyRequest,
    ) -> Result<keys::IdentityKey, Status> {
        Ok(self
            .keys()?
            .create_identity_key(request)
            .await?
            .into_inner())
    }

    async fn import_bundle(
        &self,
        request: keys::ImportIdentityRequest,
    ) -> Result<keys::IdentityKey, Status> {
        Ok(self.keys()?.import_identity(request).await?.into_inner())
    }

    async fn revoke_key(&self, identity_id: &str) -> Result<Vec<keys::SealedMail>, Status> {
        Ok(self
            .keys()?
            .revoke_identity_key(keys::RevokeIdentityKeyRequest {
                identity_id: identity_id.to_owned(),
                reason: keys::RevocationReason::Retired as i32,
                message: String::new(),
            })
            .await?
            .into_inner()
            .announcements)
    }

    async fn rotate_key(
        &self,
        identity_id: &str,
    ) -> Result<keys::RotateIdentityKeyResponse, Status> {
        Ok(self
            .keys()?
            .rotate_identity_key(keys::RotateIdentityKeyRequest {
                identity_id: identity_id.to_owned(),
            })
            .await?
            .into_inner())
    }

    async fn enqueue(&self, request: queue::EnqueueRequest) -> Result<(), Status> {
        onionpost_proto::clients::queue(self.transport(ServiceName::Queue)?)
            .enqueue(request)
            .await?;
        Ok(())
    }

    async fn answer_contact_request(
        &self,
        request: keys::AnswerContactRequestRequest,
    ) -> Result<keys::AnswerContactRequestResponse, Status> {
        Ok(self
            .keys()?
            .answer_contact_request(request)
            .await?
            .into_inner())
    }
}

/// Where no onion or keys service is wired (a test of accounts and mail alone): every lifecycle
/// call answers UNAVAILABLE.
pub struct NoParts;

#[async_trait::async_trait]
impl IdentityParts for NoParts {
    async fn create_onion(
        &self,
        _: onion::CreateOnionRequest,
    ) -> Result<onion::OnionService, Status> {
        Err(Status::unavailable("the onion service is not reachable"))
    }

    async fn revoke_onion(&self, _: &str, _: bool) -> Result<(), Status> {
        Err(Status::unavailable("the onion service is not reachable"))
    }

    async fn create_key(
        &self,
        _: keys::CreateIdentityKeyRequest,
    ) -> Result<keys::IdentityKey, Status> {
        Err(Status::unavailable("the keys service is not reachable"))
    }

    async fn import_bundle(
        &self,
        _: keys::ImportIdentityRequest,
    ) -> Result<keys::IdentityKey, Status> {
        Err(Status::unavailable("the keys service is not reachable"))
    }

    async fn revoke_key(&self, _: &str) -> Result<Vec<keys::SealedMail>, Status> {
        Err(Status::unavailable("the keys service is not reachable"))
    }

    async fn rotate_key(&self, _: &str) -> Result<keys::RotateIdentityKeyResponse, Status> {
        Err(Status::unavailable("the keys service is not reachable"))
    }

    async fn enqueue(&self, _: queue::EnqueueRequest) -> Result<(), Status> {
        Err(Status::unavailable("the queue service is not reachable"))
    }

    async fn answer_contact_request(
        &self,
        _: keys::AnswerContactRequestRequest,
    ) -> Result<keys::AnswerContactRequestResponse, Status> {
        Err(Status::unavailable("the keys service is not reachable"))
    }
}

/// A new identity with the onion and key it was given.
#[derive(Debug)]
pub struct CreatedIdentity {
    pub identity: IdentityView,
    pub onion: onion::OnionService,
    pub key: keys::IdentityKey,
}

/// An identity's key after RotateIdentityKey.
#[derive(Debug)]
pub struct RotatedKey {
    pub fingerprint: String,
    pub previous_fingerprint: String,
    /// How many peers were sent the new key.
    pub peers_announced: u32,
}

/// The identity lifecycle over imap's own records and the other services' parts.
#[derive(Clone)]
pub struct IdentityLifecycle {
    service: ImapService,
    parts: Arc<dyn IdentityParts>,
}

impl std::fmt::Debug for IdentityLifecycle {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("IdentityLifecycle")
            .finish_non_exhaustive()
    }
}

impl IdentityLifecycle {
    pub fn new(service: ImapService, parts: Arc<dyn IdentityParts>) -> Self {
        IdentityLifecycle { service, parts }
    }

    /// Onion, then key, then the account's record; a failed step undoes the ones before it.
    pub async fn create(
        &self,
        account_id: &str,
        local_part: &str,
        display_name: &str,
    ) -> Result<CreatedIdentity, ImapError> {
        check_local_part(local_part)?;
        check_display_name(display_name)?;
        self.check_room(account_id).await?;
        let identity_id = new_identity_id();
        let created_onion = self
            .parts
            .create_onion(onion::CreateOnionRequest {
                identity_id: identity_id.clone(),
                purposes: PURPOSES.iter().map(|purpose| *purpose as i32).collect(),
            })
            .await
            .map_err(ImapError::Upstream)?;
        let address = format!(
            "{}@{}",
            local_part.to_ascii_lowercase(),
            created_onion.onion_address
        );
        let key = match self
            .parts
            .create_key(keys::CreateIdentityKeyRequest {
                identity_id: identity_id.clone(),
                account_id: account_id.to_owned(),
                address: address.clone(),
                display_name: display_name.to_owned(),
                client_public_key: Vec::new(),
            })
            .await
        {
            Ok(key) => key,
            Err(status) => {
                self.roll_back(&identity_id, false).await;
                return Err(ImapError::Upstream(status));
            }
        };
        let identity = match self
            .service
            .add_identity(&identity_id, account_id, &address, display_name)
            .await
        {
            Ok(identity) => identity,
            Err(error) => {
                self.roll_back(&identity_id, true).await;
                return Err(error);
            }
        };
        tracing::info!(%identity_id, %account_id, "identity created");
        Ok(CreatedIdentity {
            identity,
            onion: created_onion,
            key,
        })
    }

    /// A bundle's key and onion (keys restores both), then the account's record; a refused
    /// record undoes the key and the onion.
    pub async fn import(
        &self,
        account_id: &str,
        bundle: Vec<u8>,
        passphrase: String,
        display_name: &str,
    ) -> Result<IdentityView, ImapError> {
        if bundle.is_empty() {
            return Err(ImapError::invalid("bundle", "is required"));
        }
        check_display_name(display_name)?;
        self.check_room(account_id).await?;
        let identity_id = new_identity_id();
        let key = self
            .parts
            .import_bundle(keys::ImportIdentityRequest {
                identity_id: identity_id.clone(),
                account_id: account_id.to_owned(),
                bundle,
                passphrase,
            })
            .await
            .map_err(ImapError::Upstream)?;
        let identity = match self
            .service
            .add_identity(&identity_id, account_id, &key.address, display_name)
            .await
        {
            Ok(identity) => identity,
            Err(error) => {
                self.roll_back(&identity_id, true).await;
                return Err(error);
            }
        };
        tracing::info!(%identity_id, %account_id, "identity imported");
        Ok(identity)
    }

    /// Key (signed revocation), the announcements to its peers queued, the onion (kept a while
    /// to serve the revocation at its WKD path), then the account's record. A key or onion
    /// already gone (never made, or revoked by an earlier attempt) does not stop the rest.
    pub async fn revoke(&self, identity_id: &str) -> Result<(), ImapError> {
        // The record is looked up first so an unknown id is NOT_FOUND and touches nothing.
        let identity = self.service.identity(identity_id).await?.record;
        match self.parts.revoke_key(identity_id).await {
            Ok(announcements) => {
                let peers = self.announce(&identity, announcements).await;
                tracing::info!(%identity_id, peers, "revocation announced");
            }
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => return Err(ImapError::Upstream(status)),
        }
        if let Err(status) = self.parts.revoke_onion(identity_id, true).await
            && status.code() != tonic::Code::NotFound
        {
            return Err(ImapError::Upstream(status));
        }
        self.service.remove_identity(identity_id).await?;
        tracing::info!(%identity_id, "identity revoked");
        Ok(())
    }

    /// A new key for the identity (keys signs the handover), then its announcements queued.
    /// The onion, the address and the account's record stay as they are.
    /// Answers a contact request in keys, then moves the contact's messages out of the
    /// account's Requests mailbox: to the INBOX when accepted, to Trash when refused.
    pub async fn answer_contact_request(
        &self,
        request: keys::AnswerContactRequestRequest,
    ) -> Result<pb::AnswerContactRequestResponse, ImapError> {
        // The account is looked up first so an unknown one is NOT_FOUND and touches nothing.
        self.service.account(&request.account_id).await?;
        let (account_id, accept) = (request.account_id.clone(), request.accept);
        let answered = self
            .parts
            .answer_contact_request(request)
            .await
            .map_err(ImapError::Upstream)?;
        let address = answered
            .contact
            .map(|contact| contact.address)
            .unwrap_or_default();
        let messages_moved = self
            .service
            .release_requests(&account_id, &address, accept)
            .await?;
        tracing::info!(%account_id, accept, messages_moved, "contact request answered");
        Ok(pb::AnswerContactRequestResponse {
            address,
            identity_ids: answered.identity_ids,
            messages_moved,
        })
    }

    pub async fn rotate_key(&self, identity_id: &str) -> Result<RotatedKey, ImapError> {
        // The record is looked up first so an unknown id is NOT_FOUND and touches nothing.
        let identity = self.service.identity(identity_id).await?.record;
        let rotated = self
            .parts
            .rotate_key(identity_id)
            .await
            .map_err(ImapError::Upstream)?;
        let peers_announced = self.announce(&identity, rotated.announcements).await;
        tracing::info!(%identity_id, peers = peers_announced, "identity key rotated");
        Ok(RotatedKey {
            fingerprint: rotated.key.map(|key| key.fingerprint).unwrap_or_default(),
            previous_fingerprint: rotated.previous_fingerprint,
            peers_announced,
        })
    }

    /// Queues announcements (a revocation, a new key), one message per peer, from the
    /// identity's address with no DSN (after a revocation the identity will not be there to
    /// read one). A queue that is away a moment (restarting) is asked again a few times: the
    /// key that signed them is revoked or replaced, so nothing could sign them later. One still
    /// refused is logged and the rest still go: peers that miss it learn from the onion's WKD
    /// path (or, for a new key, from the Autocrypt header of the identity's next mail).
    /// Returns how many were queued.
    async fn announce(
        &self,
        identity: &crate::store::IdentityRecord,
        announcements: Vec<keys::SealedMail>,
    ) -> u32 {
        let mut queued = 0;
        for announcement in announcements {
            let request = onionpost_runtime::address_book::enqueue_sealed(
                &identity.account_id,
                &identity.identity_id,
                &identity.address,
                announcement,
                false,
            );
            let mut backoff = onionpost_runtime::backoff::Backoff::new(
                std::time::Duration::from_millis(200),
                std::time::Duration::from_secs(2),
            );
            for attempt in 1..=ANNOUNCE_ATTEMPTS {
                match self.parts.enqueue(request.clone()).await {
                    Ok(()) => {
                        queued += 1;
                        break;
                    }
                    Err(status)
                        if attempt < ANNOUNCE_ATTEMPTS
                            && onionpost_runtime::grpc::is_transient(status.code()) =>
                    {
                        tokio::time::sleep(backoff.pause()).await;
                    }
                    Err(status) => {
                        tracing::warn!(code = ?status.code(), "an announcement was not queued");
                        break;
                    }
                }
            }
        }
        queued
    }

    /// The account exists and its plan has room for one more identity. The record's insert
    /// enforces the limit atomically too; asking first spares an onion and a key.
    async fn check_room(&self, account_id: &str) -> Result<(), ImapError> {
        if account_id.trim().is_empty() {
            return Err(ImapError::invalid("account_id", "is required"));
        }
        let account = self.service.account(account_id).await?;
        let allowed = account.record.plan.identities_allowed;
        let count = account.record.identity_count;
        if count >= allowed {
            return Err(ImapError::FailedPrecondition(format!(
                "the account's plan allows {allowed} identities and it has {count}"
            )));
        }
        Ok(())
    }

    /// Undoes a half-made identity: its key (when made) and its onion. Failures are logged: the
    /// caller is already answering with the error that caused the roll-back.
    async fn roll_back(&self, identity_id: &str, key_made: bool) {
        if key_made && let Err(status) = self.parts.revoke_key(identity_id).await {
            tracing::warn!(%identity_id, code = ?status.code(), "roll-back: revoking the identity key failed");
        }
        if let Err(status) = self.parts.revoke_onion(identity_id, false).await {
            tracing::warn!(%identity_id, code = ?status.code(), "roll-back: revoking the onion failed");
        }
        tracing::info!(%identity_id, "identity creation rolled back");
    }
}

/// An identity id shared by the three services: 128 random bits, hex.
fn new_identity_id() -> String {
    let mut bytes = [0u8; 16];
    os_random(&mut bytes);
    hex::encode(bytes)
}

/// An RFC 5322 dot-atom (§3.2.3) of at most 64 octets, checked before anything is made.
fn check_local_part(local_part: &str) -> Result<(), ImapError> {
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    let dot_atom = !local_part.is_empty()
        && local_part.len() <= MAX_LOCAL_PART_LEN
        && local_part
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(atext));
    if !dot_atom {
        return Err(ImapError::invalid(
            "local_part",
            "must be a dot-atom of 1 to 64 characters",
        ));
    }
    // RFC 5321 §4.5.1: postmaster@ belongs to the carrier on every onion (it takes carry
    // statements), never to an identity.
    if local_part.eq_ignore_ascii_case("postmaster") {
        return Err(ImapError::invalid(
            "local_part",
            "postmaster is kept for the carrier on every onion",
        ));
    }
    Ok(())
}
