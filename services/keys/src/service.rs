//! The keys service's use cases: the domain modules of this crate put together with the store,
//! one method per RPC of `onionpost.keys.v1.Keys`. The gRPC adapter (`grpc`) only unwraps
//! requests and maps [`ServiceError`] to a status.
//!
//! Decisions taken here, where the design is silent:
//!
//! - A recipient that is an identity of this carrier resolves from the store, not over tor: its
//!   own onion would serve exactly that key, and a loop through tor only adds latency.
//! - A key from Autocrypt is learned only from a message whose signature it verifies; a header
//!   on unsigned or badly signed mail teaches nothing (LearnAutocrypt is the explicit path for
//!   accounts that decrypt in their own client).
//! - A contact added from a QR code with a matching fingerprint is marked verified.
//! - Introducers are recorded once each and their onions become designated carriers, in order.
//! - A revoked identity's WKD path serves the revoked certificate (until the onion goes), and
//!   RevokeIdentityKey hands its caller one signed announcement per peer of that identity (the
//!   contacts it exchanged signed mail with, recorded per identity in the sealed entry). A
//!   verified message from a pinned contact that carries that contact's own revocation applies
//!   it, after the reply. The secret is destroyed.
//! - Contacts are onion addresses only for now; clearnet correspondents come with the gateway.
//!   ResolveRecipientKeys answers MISSING for a clearnet recipient instead of failing the call.
//! - Address-book updates are last-writer-wins per contact; two key offers racing for the same
//!   contact may lose one, which the next message or fetch offers again.

use std::sync::Arc;

use onionpost_proto::keys::v1 as pb;
use onionpost_runtime::rate::RateLimiter;
use onionpost_runtime::seal::CarrierSecret;
use onionpost_runtime::time::{now_ms, timestamp, timestamp_ms};
use sequoia_openpgp::serialize::SerializeInto;

use crate::fetch::{KeyFetcher, OnionKeys};
use crate::pinning::{HoldReason, PinDecision};
use crate::store::{
    AddressBookPolicy, ContactFilter, ContactRecord, Custody, HeldKey, IdentityRecord,
    IntroducerRecord, KeySource, KeysStore, PreviousKey, StoreError,
};
use crate::wkd::WkdDirectory;

/// One WKD directory per identity, so the listener on identity A's onion can never serve
/// co-hosted identity B's key (which would link the two).
#[derive(Clone, Debug, Default)]
pub struct WkdDirectories(Arc<std::sync::Mutex<std::collections::HashMap<String, WkdDirectory>>>);

impl WkdDirectories {
    /// The directory of one identity, created empty when the identity has no key yet (its key
    /// appears in it the moment it is created).
    pub fn for_identity(&self, identity_id: &str) -> WkdDirectory {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(identity_id.to_owned())
            .or_default()
            .clone()
    }
}
use crate::{Address, Cert, Fingerprint, IdentityKey, KeysError, SealedKey};

/// Everything a keys RPC can fail with; mapped once to a gRPC status (in `grpc`).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A verdict of the OpenPGP domain logic.
    #[error(transparent)]
    Keys(#[from] KeysError),
    /// Storage trouble; its text is logged, never returned.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unimplemented(&'static str),
    /// The onion service refused or could not be reached; its status is passed on.
    #[error("onion service: {}", .0.message())]
    Onion(tonic::Status),
    /// Concurrent calls kept changing the same row: a temporary failure, never a verdict on
    /// the caller's input (an SMTP peer gets a 4xx and tries again).
    #[error("{0}")]
    Contended(&'static str),
    /// A limit that passes with time: the caller tries again later.
    #[error("{0}")]
    Busy(&'static str),
}

type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// Who asks when the carrier fetches a key for nobody's identity (unsigned DSNs): its own
/// circuits, apart from every identity's.
const CARRIER_ASKS: &str = "carrier";

/// WKD fetches of unknown senders' keys that one identity's received mail may cause per hour
/// (issue 22): a flood of stamped mail from strangers does not become a flood of circuits from
/// this carrier to their onions. Past it the queue keeps the message and asks again later; a
/// stranger's key is fetched once, when its first message is opened, and pinned from then.
const STRANGER_FETCHES_PER_HOUR: u32 = 120;

/// Page size of ListContacts when the caller names none, and the most it may ask for.
const DEFAULT_PAGE_SIZE: u32 = 50;
const MAX_PAGE_SIZE: u32 = 500;
/// Pixels per QR module in PNG images.
const QR_MODULE_PIXELS: u32 = 8;

/// The keys service: store, carrier secret, WKD client, and the directory its WKD listeners
/// serve from.
#[derive(Clone)]
pub struct KeysService {
    store: Arc<dyn KeysStore>,
    secret: CarrierSecret,
    fetcher: Arc<dyn KeyFetcher>,
    onion: Arc<dyn OnionKeys>,
    wkd: WkdDirectories,
    /// `accounts.contact_requests`: verified mail from strangers becomes a contact request.
    contact_requests: bool,
    /// Fetches of unknown senders' keys, per receiving identity (`STRANGER_FETCHES_PER_HOUR`).
    stranger_fetches: Arc<RateLimiter>,
}

fn required<'a>(value: &'a str, name: &str) -> Result<&'a str> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ServiceError::InvalidArgument(format!("{name} is required")));
    }
    Ok(trimmed)
}

/// Upper-case hex without spaces, as fingerprints are stored and compared.
fn normalize_fingerprint(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase()
}

fn cert_bytes(cert: &Cert) -> Result<Vec<u8>> {
    Ok(cert.export_to_vec().map_err(KeysError::crypto)?)
}

fn check_passphrase(passphrase: &str) -> Result<()> {
    if passphrase.chars().count() < crate::bundle::MIN_PASSPHRASE_CHARS {
        return Err(ServiceError::InvalidArgument(format!(
            "the passphrase must have at least {} characters",
            crate::bundle::MIN_PASSPHRASE_CHARS
        )));
    }
    Ok(())
}

fn onion_host(text: &str) -> Result<String> {
    Address::canonical_onion_host(text)
        .ok_or_else(|| ServiceError::InvalidArgument(format!("not a v3 onion host: {text:?}")))
}

fn onion_hosts(list: &[String]) -> Result<Vec<String>> {
    let mut hosts = Vec::with_capacity(list.len());
    for item in list {
        let host = onion_host(item)?;
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    Ok(hosts)
}

fn key_source_to_pb(source: KeySource) -> pb::KeySource {
    match source {
        KeySource::Manual => pb::KeySource::Manual,
        KeySource::Qr => pb::KeySource::Qr,
        KeySource::Wkd => pb::KeySource::Wkd,
        KeySource::Autocrypt => pb::KeySource::Autocrypt,
        KeySource::Introduction => pb::KeySource::Introduction,
        KeySource::Transition => pb::KeySource::Transition,
    }
}

fn identity_to_pb(record: &IdentityRecord) -> pb::IdentityKey {
    pb::IdentityKey {
        identity_id: record.identity_id.clone(),
        account_id: record.account_id.clone(),
        address: record.address.clone(),
        fingerprint: record.fingerprint.clone(),
        public_key: record.public_key.clone(),
        custody: match record.custody {
            Custody::Carrier => pb::KeyCustody::Carrier,
            Custody::Client => pb::KeyCustody::Client,
        } as i32,
        preferred_carriers: record.preferred_carriers.clone(),
        created_at: Some(timestamp(record.created_at_ms)),
        revoked_at: record.revoked_at_ms.map(timestamp),
        openpgp4fpr_uri: match (
            Fingerprint::from_hex(&record.fingerprint),
            Address::parse(&record.address),
        ) {
            (Ok(fingerprint), Ok(address)) => crate::qr::openpgp4fpr_uri(&fingerprint, &address),
            _ => String::new(),
        },
    }
}

fn contact_to_pb(record: &ContactRecord) -> pb::Contact {
    pb::Contact {
        contact_id: record.contact_id.clone(),
        account_id: record.account_id.clone(),
        address: record.address.clone(),
        display_name: record.display_name.clone(),
        fingerprint: record.fingerprint.clone(),
        public_key: record.public_key.clone().unwrap_or_default(),
        key_source: key_source_to_pb(record.key_source) as i32,
        verified: record.verified,
        introducers: record
            .introducers
            .iter()
            .map(|introducer| pb::Introducer {
                address: introducer.address.clone(),
                fingerprint: introducer.fingerprint.clone(),
                introduced_at: Some(timestamp(introducer.introduced_at_ms)),
            })
            .collect(),
        designated_carriers: record.designated_carriers.clone(),
        preferred_carriers: record.preferred_carriers.clone(),
        held_key_change: record.held.as_ref().map(|held| pb::HeldKeyChange {
            fingerprint: held.fingerprint.clone(),
            public_key: held.public_key.clone(),
            source: key_source_to_pb(held.source) as i32,
            seen_at: Some(timestamp(held.seen_at_ms)),
        }),
        first_seen_at: Some(timestamp(record.first_seen_at_ms)),
        last_seen_at: Some(timestamp(record.last_seen_at_ms)),
        revoked_at: record.revoked_at_ms.map(timestamp),
        requested_identities: record.requests.clone(),
        blocked_identities: record.blocked.clone(),
    }
}

fn new_contact_id() -> String {
    let bytes: [u8; 12] = rand::random();
    format!("ct_{}", hex::encode(bytes))
}

/// Runs CPU-bound OpenPGP work off the async workers (a 1 MiB message takes a while).
async fn blocking<T, F>(work: F) -> Result<T>
where
    F: FnOnce() -> Result<T, KeysError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => Ok(result?),
        Err(error) => Err(KeysError::Crypto(format!("worker failed: {error}")).into()),
    }
}

/// The result of offering a key for an address-book entry.
struct Learned {
    change: pb::KeyChange,
    contact: ContactRecord,
}

impl KeysService {
    pub fn new(
        store: Arc<dyn KeysStore>,
        secret: CarrierSecret,
        fetcher: Arc<dyn KeyFetcher>,
        onion: Arc<dyn OnionKeys>,
        wkd: WkdDirectories,
    ) -> Self {
        KeysService {
            store,
            secret,
            fetcher,
            onion,
            wkd,
            contact_requests: false,
            stranger_fetches: Arc::new(RateLimiter::per_hour(STRANGER_FETCHES_PER_HOUR)),
        }
    }

    /// Verified mail from a sender an identity does not correspond with becomes a contact
    /// request (its message waits in the Requests mailbox) instead of making it a
    /// correspondent at once.
    pub fn with_contact_requests(mut self, on: bool) -> Self {
        self.contact_requests = on;
        self
    }

    /// Another hourly bound on fetches of unknown senders' keys per identity (tests).
    pub fn with_stranger_fetches_per_hour(mut self, per_hour: u32) -> Self {
        self.stranger_fetches = Arc::new(RateLimiter::per_hour(per_hour));
        self
    }

    /// The directory the WKD listener of one identity serves from.
    pub fn wkd_directory(&self, identity_id: &str) -> WkdDirectory {
        self.wkd.for_identity(identity_id)
    }

    /// Publishes every live identity's key in the WKD directory (at start-up), and the revoked
    /// certificate of each identity revoked within `revocation_serve` (its onion may still
    /// serve it: `tor.revocation_serve_secs`; a WKD path is served only while its onion lives).
    pub async fn publish_all(&self, revocation_serve: std::time::Duration) -> Result<usize> {
        let identities = self.store.live_identities().await?;
        for record in &identities {
            self.publish(record)?;
        }
        let window = i64::try_from(revocation_serve.as_millis()).unwrap_or(i64::MAX);
        for record in self
            .store
            .identities_revoked_since(now_ms().saturating_sub(window))
            .await?
        {
            self.wkd
                .for_identity(&record.identity_id)
                .publish_revoked(&Address::parse(&record.address)?, record.public_key);
        }
        Ok(identities.len())
    }

    fn publish(&self, record: &IdentityRecord) -> Result<()> {
        let address = Address::parse(&record.address)?;
        let cert = crate::parse_cert(&record.public_key)?;
        let directory = self.wkd.for_identity(&record.identity_id);
        directory.publish(&address, &cert)?;
        directory.publish_carriers(&address, record.carrier_list.clone());
        Ok(())
    }

    /// Live identities, for the WKD listeners.
    pub async fn live_identities(&self) -> Result<Vec<IdentityRecord>> {
        Ok(self.store.live_identities().await?)
    }

    async fn identity_record(&self, identity_id: &str) -> Result<IdentityRecord> {
        let identity_id = required(identity_id, "identity_id")?;
        self.store
            .identity(identity_id)
            .await?
            .ok_or(ServiceError::NotFound("identity key"))
    }

    /// An identity whose key the carrier holds, unsealed.
    async fn carrier_key(&self, identity_id: &str) -> Result<(IdentityRecord, IdentityKey)> {
        let record = self.identity_record(identity_id).await?;
        if record.revoked_at_ms.is_some() {
            return Err(ServiceError::FailedPrecondition(
                "the identity's key is revoked".into(),
            ));
        }
        let Some(sealed) = record.sealed_secret.clone() else {
            return Err(ServiceError::FailedPrecondition(
                "the account keeps this identity's secret key in its own mail client".into(),
            ));
        };
        let fingerprint = Fingerprint::from_hex(&record.fingerprint)
            .map_err(|_| StoreError::Corrupt("identity fingerprint is not hex".into()))?;
        let secret = self.secret.clone();
        let key = blocking(move || {
            IdentityKey::unseal(
                &SealedKey {
                    fingerprint,
                    sealed,
                },
                &secret,
            )
        })
        .await?;
        Ok((record, key))
    }

    /// The keys `record`'s identity replaced, unsealed.
    async fn previous_keys(&self, record: &IdentityRecord) -> Result<Vec<IdentityKey>> {
        let previous = self.store.previous_keys(&record.identity_id).await?;
        if previous.is_empty() {
            return Ok(Vec::new());
        }
        let secret = self.secret.clone();
        blocking(move || {
            previous
                .into_iter()
                .map(|previous| {
                    let fingerprint = Fingerprint::from_hex(&previous.fingerprint)
                        .map_err(|_| KeysError::SealBroken)?;
                    IdentityKey::unseal(
                        &SealedKey {
                            fingerprint,
                            sealed: previous.sealed_secret,
                        },
                        &secret,
                    )
                })
                .collect()
        })
        .await
    }

    // --- identity keys ---------------------------------------------------------------------

    pub async fn create_identity_key(
        &self,
        request: pb::CreateIdentityKeyRequest,
    ) -> Result<pb::IdentityKey> {
        let identity_id = required(&request.identity_id, "identity_id")?.to_owned();
        let account_id = required(&request.account_id, "account_id")?.to_owned();
        let address = Address::parse(request.address.trim())?;
        if let Some(existing) = self.store.identity(&identity_id).await? {
            return self.same_identity(existing, &account_id, &address);
        }

        let (fingerprint, public_key, sealed_secret, custody) =
            if request.client_public_key.is_empty() {
                let generated_for = address.clone();
                let secret = self.secret.clone();
                let (key, sealed) = blocking(move || {
                    let key = IdentityKey::generate(&generated_for)?;
                    let sealed = key.seal(&secret)?;
                    Ok((key, sealed))
                })
                .await?;
                (
                    key.fingerprint(),
                    cert_bytes(&key.public_cert())?,
                    Some(sealed.sealed),
                    Custody::Carrier,
                )
            } else {
                let cert = crate::parse_cert(&request.client_public_key)?;
                if cert.is_tsk() {
                    return Err(ServiceError::InvalidArgument(
                        "client_public_key holds secret key material; send the public key only"
                            .into(),
                    ));
                }
                let bound = crate::wkd::bind_to_address(cert, &address)?;
                (
                    bound.fingerprint(),
                    cert_bytes(&bound)?,
                    None,
                    Custody::Client,
                )
            };
        let record = IdentityRecord {
            identity_id: identity_id.clone(),
            account_id: account_id.clone(),
            address: address.to_string(),
            fingerprint: fingerprint.to_hex(),
            public_key,
            sealed_secret,
            custody,
            preferred_carriers: Vec::new(),
            carrier_list: None,
            created_at_ms: now_ms(),
            revoked_at_ms: None,
            revocation: None,
        };
        match self.store.insert_identity(&record).await {
            Ok(()) => {}
            Err(StoreError::Duplicate) => {
                // A retry that raced us, or the address belongs to another identity.
                return match self.store.identity(&identity_id).await? {
                    Some(existing) => self.same_identity(existing, &account_id, &address),
                    None => Err(ServiceError::AlreadyExists(
                        "the address belongs to another identity".into(),
                    )),
                };
            }
            Err(error) => return Err(error.into()),
        }
        self.publish(&record)?;
        tracing::info!(identity_id = %record.identity_id, custody = custody.as_str(), "identity key created");
        Ok(identity_to_pb(&record))
    }

    /// CreateIdentityKey is idempotent on the identity id, for the same account and address.
    fn same_identity(
        &self,
        existing: IdentityRecord,
        account_id: &str,
        address: &Address,
    ) -> Result<pb::IdentityKey> {
        if existing.account_id != account_id || existing.address != address.to_string() {
            return Err(ServiceError::AlreadyExists(
                "the identity id has a key for another account or address".into(),
            ));
        }
        Ok(identity_to_pb(&existing))
    }

    pub async fn get_identity_key(
        &self,
        request: pb::GetIdentityKeyRequest,
    ) -> Result<pb::IdentityKey> {
        use pb::get_identity_key_request::Identity;
        let record = match request.identity {
            Some(Identity::IdentityId(identity_id)) => self.identity_record(&identity_id).await?,
            Some(Identity::Address(address)) => {
                let address = Address::parse(address.trim())?;
                self.store
                    .identity_by_address(&address.to_string())
                    .await?
                    .ok_or(ServiceError::NotFound("identity key"))?
            }
            None => {
                return Err(ServiceError::InvalidArgument(
                    "identity_id or address is required".into(),
                ));
            }
        };
        Ok(identity_to_pb(&record))
    }

    pub async fn revoke_identity_key(
        &self,
        request: pb::RevokeIdentityKeyRequest,
    ) -> Result<pb::RevokeIdentityKeyResponse> {
        let record = self.identity_record(&request.identity_id).await?;
        if let (Some(_), Some(revocation)) = (record.revoked_at_ms, record.revocation.clone()) {
            // Already revoked: hand out the same proof again.
            return Ok(pb::RevokeIdentityKeyResponse {
                key: Some(identity_to_pb(&record)),
                revocation,
                announcements: Vec::new(),
            });
        }
        let (mut record, key) = self.carrier_key(&request.identity_id).await?;
        let reason = match pb::RevocationReason::try_from(request.reason) {
            Ok(pb::RevocationReason::Compromised) => {
                crate::revocation::RevocationReason::Compromised
            }
            Ok(pb::RevocationReason::Retired | pb::RevocationReason::Unspecified) => {
                crate::revocation::RevocationReason::Retired
            }
            Err(_) => return Err(ServiceError::InvalidArgument("unknown reason".into())),
        };
        let message = request.message;
        // The peers this identity corresponds with, and only those (see correspondent_peers).
        let peers = self.correspondent_peers(&record).await?;
        let (public_key, revocation, announcements) = blocking(move || {
            let revocation = crate::revocation::revoke(&key, reason, &message)?;
            let revocation_cert = crate::parse_cert(revocation.armored.as_bytes())?;
            let revoked = key
                .public_cert()
                .merge_public(revocation_cert.clone())
                .map_err(KeysError::crypto)?;
            // Signed while the secret is still in hand; the peer's carrier checks the signature
            // against its pin, which the revocation has not yet reached.
            let onion = key.address().onion_host();
            let mut announcements = Vec::with_capacity(peers.len());
            for (peer, cert) in peers {
                let message_id = format!("<{}@{onion}>", hex::encode(rand::random::<[u8; 16]>()));
                let plaintext = crate::revocation::announcement(&revocation, &peer, &message_id);
                announcements.push(pb::SealedMail {
                    recipient: peer.to_string(),
                    message: crate::pgp_mime::seal(&plaintext, &key, &[cert])?,
                    message_id,
                });
            }
            Ok((
                revoked.export_to_vec().map_err(KeysError::crypto)?,
                revocation_cert.export_to_vec().map_err(KeysError::crypto)?,
                announcements,
            ))
        })
        .await?;
        record.public_key = public_key;
        record.sealed_secret = None;
        record.revoked_at_ms = Some(now_ms());
        record.revocation = Some(revocation.clone());
        if !self.store.update_identity(&record).await? {
            return Err(ServiceError::NotFound("identity key"));
        }
        // Keys it replaced go too: nothing the identity ever held opens mail after this.
        self.store.erase_previous_keys(&record.identity_id).await?;
        // WKD now serves the revoked certificate at the address's path, for as long as the onion
        // lives: a peer that asks learns the revocation, signed by the key it pinned.
        self.wkd
            .for_identity(&record.identity_id)
            .publish_revoked(&Address::parse(&record.address)?, record.public_key.clone());
        tracing::info!(
            identity_id = %record.identity_id,
            peers = announcements.len(),
            "identity key revoked"
        );
        Ok(pb::RevokeIdentityKeyResponse {
            key: Some(identity_to_pb(&record)),
            revocation,
            announcements,
        })
    }

    pub async fn rotate_identity_key(
        &self,
        request: pb::RotateIdentityKeyRequest,
    ) -> Result<pb::RotateIdentityKeyResponse> {
        let (mut record, old) = self.carrier_key(&request.identity_id).await?;
        // The same peers a revocation is announced to: those that corresponded with this
        // identity. A contact that knows only another identity of the account learns nothing.
        let peers = self.correspondent_peers(&record).await?;
        let secret = self.secret.clone();
        let previous_sealed = record.sealed_secret.clone();
        let carrier_list = record.carrier_list.clone();
        let (new, sealed, public_key, carrier_list, announcements) = blocking(move || {
            let new = crate::rotation::successor(&old)?;
            let sealed = new.seal(&secret)?;
            let public_key = new
                .public_cert()
                .export_to_vec()
                .map_err(KeysError::crypto)?;
            // The published carrier list is signed again by the new key, which peers check it
            // against once they move (same carriers, a newer time).
            let carrier_list = match carrier_list {
                Some(signed) => {
                    let mut list = crate::carrier_list::peek(&signed)?;
                    list.signed_at = crate::carrier_list::next_signed_at(list.signed_at);
                    Some(crate::carrier_list::sign(&new, &list)?)
                }
                None => None,
            };
            let onion = new.address().onion_host();
            let mut announcements = Vec::with_capacity(peers.len());
            for (peer, cert) in peers {
                let message_id = format!("<{}@{onion}>", hex::encode(rand::random::<[u8; 16]>()));
                let plaintext = crate::rotation::announcement(&new, &peer, &message_id)?;
                announcements.push(pb::SealedMail {
                    recipient: peer.to_string(),
                    // Signed by the old key, the one the peer has pinned; encrypted to the peer
                    // (and, as all sealed mail, to the signer: the old key, still kept).
                    message: crate::pgp_mime::seal(&plaintext, &old, &[cert])?,
                    message_id,
                });
            }
            Ok((new, sealed, public_key, carrier_list, announcements))
        })
        .await?;
        let previous_fingerprint = record.fingerprint.clone();
        // The old key is kept first: a crash between the two writes leaves it both current
        // and kept, never lost.
        if let Some(previous_sealed) = previous_sealed {
            self.store
                .add_previous_key(&PreviousKey {
                    identity_id: record.identity_id.clone(),
                    fingerprint: previous_fingerprint.clone(),
                    sealed_secret: previous_sealed,
                    replaced_at_ms: now_ms(),
                })
                .await?;
        }
        record.fingerprint = new.fingerprint().to_hex();
        record.public_key = public_key;
        record.sealed_secret = Some(sealed.sealed);
        record.carrier_list = carrier_list;
        if !self.store.update_identity(&record).await? {
            return Err(ServiceError::NotFound("identity key"));
        }
        // WKD serves the new key (with the old key's certification) from now on.
        self.publish(&record)?;
        tracing::info!(
            identity_id = %record.identity_id,
            peers = announcements.len(),
            "identity key rotated"
        );
        Ok(pb::RotateIdentityKeyResponse {
            key: Some(identity_to_pb(&record)),
            previous_fingerprint,
            announcements,
        })
    }

    /// The pinned contacts of `record`'s account that corresponded with this identity (and not
    /// only with another identity of the account), with their keys: who hears of a revocation
    /// or a new key.
    async fn correspondent_peers(&self, record: &IdentityRecord) -> Result<Vec<(Address, Cert)>> {
        Ok(self
            .pinned_contacts(&record.account_id)
            .await?
            .into_iter()
            .filter(|(contact, _)| {
                contact.revoked_at_ms.is_none()
                    && contact.correspondents.contains(&record.identity_id)
            })
            .filter_map(|(contact, cert)| Some((Address::parse(&contact.address).ok()?, cert)))
            .collect())
    }

    pub async fn export_identity(
        &self,
        request: pb::ExportIdentityRequest,
    ) -> Result<pb::ExportIdentityResponse> {
        check_passphrase(&request.passphrase)?;
        let (record, key) = self.carrier_key(&request.identity_id).await?;
        let (onion_address, onion_key) = self
            .onion
            .export_onion_key(&record.identity_id)
            .await
            .map_err(ServiceError::Onion)?;
        if onion_address.to_ascii_lowercase() != key.address().onion_host() {
            return Err(ServiceError::FailedPrecondition(
                "the identity's onion is not the onion of its key's address".into(),
            ));
        }
        let passphrase = request.passphrase;
        let bundle = blocking(move || crate::bundle::pack(&key, &onion_key, &passphrase)).await?;
        tracing::info!(identity_id = %record.identity_id, "identity exported");
        Ok(pb::ExportIdentityResponse { bundle })
    }

    pub async fn import_identity(
        &self,
        request: pb::ImportIdentityRequest,
    ) -> Result<pb::IdentityKey> {
        let identity_id = required(&request.identity_id, "identity_id")?.to_owned();
        let account_id = required(&request.account_id, "account_id")?.to_owned();
        let bundle = request.bundle;
        let passphrase = request.passphrase;
        let unpacked = blocking(move || crate::bundle::unpack(&bundle, &passphrase)).await?;
        let address = unpacked.key.address().clone();
        if let Some(existing) = self.store.identity(&identity_id).await? {
            if existing.fingerprint == unpacked.key.fingerprint().to_hex() {
                return self.same_identity(existing, &account_id, &address);
            }
            return Err(ServiceError::AlreadyExists(
                "the identity id has another key".into(),
            ));
        }
        if self
            .store
            .identity_by_address(&address.to_string())
            .await?
            .is_some()
        {
            return Err(ServiceError::AlreadyExists(
                "the address belongs to another identity".into(),
            ));
        }
        // The onion first: if the onion service refuses it, no key is left behind.
        let onion_address = self
            .onion
            .import_onion(&identity_id, &unpacked.onion_key)
            .await
            .map_err(ServiceError::Onion)?;
        if onion_address.to_ascii_lowercase() != address.onion_host() {
            return Err(ServiceError::InvalidArgument(
                "the bundle's onion key is not the onion of its key's address".into(),
            ));
        }
        let secret = self.secret.clone();
        let key = unpacked.key;
        let (key, sealed) = blocking(move || {
            let sealed = key.seal(&secret)?;
            Ok((key, sealed))
        })
        .await?;
        let record = IdentityRecord {
            identity_id,
            account_id,
            address: address.to_string(),
            fingerprint: key.fingerprint().to_hex(),
            public_key: cert_bytes(&key.public_cert())?,
            sealed_secret: Some(sealed.sealed),
            custody: Custody::Carrier,
            preferred_carriers: Vec::new(),
            carrier_list: None,
            created_at_ms: now_ms(),
            revoked_at_ms: None,
            revocation: None,
        };
        self.store.insert_identity(&record).await?;
        self.publish(&record)?;
        tracing::info!(identity_id = %record.identity_id, "identity imported");
        Ok(identity_to_pb(&record))
    }

    /// Records the carriers an identity asks its correspondents to use, signed by its key, and
    /// publishes the signed list over its onion (and, from now on, in its Autocrypt mail). A
    /// carrier-held key signs here; an identity whose key is in its mail client sends the list
    /// signed already (`signed_list`).
    pub async fn set_preferred_carriers(
        &self,
        request: pb::SetPreferredCarriersRequest,
    ) -> Result<pb::IdentityKey> {
        use crate::carrier_list::{self, CarrierList};

        let mut record = self.identity_record(&request.identity_id).await?;
        if record.revoked_at_ms.is_some() {
            return Err(ServiceError::FailedPrecondition(
                "the identity's key is revoked".into(),
            ));
        }
        let address = Address::parse(&record.address)?;
        let (carriers, signed) = if request.signed_list.is_empty() {
            if record.sealed_secret.is_none() {
                return Err(ServiceError::FailedPrecondition(
                    "the account keeps this identity's secret key in its own mail client: send \
                     the carrier list signed by that key (signed_list)"
                        .into(),
                ));
            }
            let carriers = onion_hosts(&request.carriers)?;
            if carriers.len() > carrier_list::MAX_CARRIERS {
                return Err(ServiceError::InvalidArgument(format!(
                    "at most {} carriers",
                    carrier_list::MAX_CARRIERS
                )));
            }
            let previous = record
                .carrier_list
                .as_deref()
                .and_then(|signed| carrier_list::peek(signed).ok())
                .map_or(i64::MIN, |list| list.signed_at);
            let list = CarrierList {
                identity: address.clone(),
                signed_at: carrier_list::next_signed_at(previous),
                carriers,
            };
            let (_, key) = self.carrier_key(&request.identity_id).await?;
            let carriers = list.carriers.clone();
            (
                carriers,
                blocking(move || carrier_list::sign(&key, &list)).await?,
            )
        } else {
            // Signed in the identity's own client: checked against its key before it is served.
            let cert = crate::parse_cert(&record.public_key)?;
            let signed = request.signed_list;
            blocking(move || {
                let list = carrier_list::verify(&signed, &cert, &address)?;
                Ok((list.carriers, signed))
            })
            .await?
        };
        record.preferred_carriers = carriers;
        record.carrier_list = Some(signed);
        if !self.store.update_identity(&record).await? {
            return Err(ServiceError::NotFound("identity key"));
        }
        self.publish(&record)?;
        Ok(identity_to_pb(&record))
    }

    pub async fn get_identity_qr(
        &self,
        request: pb::GetIdentityQrRequest,
    ) -> Result<pb::IdentityQr> {
        let record = self.identity_record(&request.identity_id).await?;
        let address = Address::parse(&record.address)?;
        let fingerprint = Fingerprint::from_hex(&record.fingerprint)
            .map_err(|_| StoreError::Corrupt("identity fingerprint is not hex".into()))?;
        let uri = crate::qr::openpgp4fpr_uri(&fingerprint, &address);
        let (image, media_type) = match pb::QrFormat::try_from(request.format) {
            Ok(pb::QrFormat::Png) => (crate::qr::qr_png(&uri, QR_MODULE_PIXELS)?, "image/png"),
            Ok(pb::QrFormat::Svg | pb::QrFormat::Unspecified) => {
                (crate::qr::qr_svg(&uri)?.into_bytes(), "image/svg+xml")
            }
            Err(_) => return Err(ServiceError::InvalidArgument("unknown QR format".into())),
        };
        Ok(pb::IdentityQr {
            uri,
            image,
            media_type: media_type.to_owned(),
        })
    }

    // --- messages --------------------------------------------------------------------------

    pub async fn sign_and_encrypt(
        &self,
        request: pb::SignAndEncryptRequest,
    ) -> Result<pb::SignAndEncryptResponse> {
        if request.recipients.is_empty() {
            return Err(ServiceError::InvalidArgument(
                "recipients is required".into(),
            ));
        }
        if request.signer_identity_id.trim().is_empty() {
            return self.encrypt_unsigned(request).await;
        }
        let (record, key) = self.carrier_key(&request.signer_identity_id).await?;
        let mut certs = Vec::with_capacity(request.recipients.len());
        let mut accepted_requests = Vec::new();
        for recipient in &request.recipients {
            let address = Address::parse(recipient.trim())?;
            let contact = self
                .store
                .contact_by_address(&record.account_id, &address.to_string())
                .await?;
            let usable = contact.as_ref().and_then(|contact| {
                if contact.revoked_at_ms.is_some() || contact.held.is_some() {
                    return None;
                }
                contact.public_key.as_ref()
            });
            let Some(public_key) = usable else {
                return Err(ServiceError::FailedPrecondition(format!(
                    "no usable key for recipient {address} (resolve it first)"
                )));
            };
            certs.push(crate::parse_cert(public_key)?);
            // This identity now writes to the contact: its revocation will be announced there,
            // and a request it made is answered (a reply accepts).
            if let Some(mut contact) = contact {
                let requested = contact.requests.contains(&record.identity_id);
                if contact.add_correspondent(&record.identity_id) {
                    self.store.update_contact(&contact).await?;
                    if requested {
                        accepted_requests.push(contact.address.clone());
                    }
                }
            }
        }
        let mut encrypted_to: Vec<String> = certs
            .iter()
            .map(|cert| cert.fingerprint().to_hex())
            .collect();
        encrypted_to.push(key.fingerprint().to_hex());
        let sealed = seal_as(
            &record,
            key,
            certs,
            request.message,
            request.add_autocrypt_header,
        )
        .await?;
        Ok(pb::SignAndEncryptResponse {
            message: sealed,
            encrypted_to,
            accepted_requests,
        })
    }

    /// Encrypts for recipients with no signer: each recipient's key is the one bound to its
    /// onion (fetched by WKD over the onion), since there is no
    /// address book to take it from. No Autocrypt header: nobody's key is being offered.
    async fn encrypt_unsigned(
        &self,
        request: pb::SignAndEncryptRequest,
    ) -> Result<pb::SignAndEncryptResponse> {
        let mut certs = Vec::with_capacity(request.recipients.len());
        for recipient in &request.recipients {
            let address = Address::parse(recipient.trim())?;
            certs.push(self.fetch_key(&address, CARRIER_ASKS).await?);
        }
        let encrypted_to = certs
            .iter()
            .map(|cert| cert.fingerprint().to_hex())
            .collect();
        let message = request.message;
        let sealed = blocking(move || crate::pgp_mime::seal_unsigned(&message, &certs)).await?;
        Ok(pb::SignAndEncryptResponse {
            message: sealed,
            encrypted_to,
            accepted_requests: Vec::new(),
        })
    }

    pub async fn decrypt_and_verify(
        &self,
        request: pb::DecryptAndVerifyRequest,
    ) -> Result<pb::DecryptAndVerifyResponse> {
        use crate::pgp_mime::Verification;

        let (record, key) = self.carrier_key(&request.recipient_identity_id).await?;
        let account_id = record.account_id.clone();
        let message = request.message;
        let from = outer_from(&message);

        // The key bound to the From address: pinned, else fetched from its onion when asked.
        let mut key_change = pb::KeyChange::Unspecified;
        let mut contact = match &from {
            Some(from) => {
                self.store
                    .contact_by_address(&account_id, &from.to_string())
                    .await?
            }
            None => None,
        };
        let has_pin = contact
            .as_ref()
            .is_some_and(|contact| contact.public_key.is_some());
        let sender_key_unpinned = from.is_some() && !has_pin && !request.fetch_sender_key;
        let fetch = from.is_some() && !has_pin && request.fetch_sender_key;
        if fetch && !self.stranger_fetches.check(&request.recipient_identity_id) {
            // The caller (the queue) keeps the message and asks again later.
            return Err(ServiceError::Busy(
                "this identity's fetches of unknown senders' keys are at their hourly limit",
            ));
        }
        if let (Some(from), true) = (&from, fetch)
            && let Ok(cert) = self.fetch_key(from, &request.recipient_identity_id).await
        {
            let mut learned = self
                .learn_key(&account_id, from, &cert, KeySource::Wkd, None)
                .await?;
            if learned.change != pb::KeyChange::Held {
                self.learn_carriers_from_onion(
                    &mut learned.contact,
                    &request.recipient_identity_id,
                )
                .await?;
            }
            key_change = learned.change;
            contact = Some(learned.contact);
        }
        let pinned = match contact
            .as_ref()
            .and_then(|contact| contact.public_key.as_ref())
        {
            Some(bytes) => Some(crate::parse_cert(bytes)?),
            None => None,
        };
        let autocrypt = crate::autocrypt::AutocryptHeader::from_message(&message)
            .ok()
            .flatten()
            .filter(|header| Some(&header.addr) == from.as_ref());
        let mut signer_certs: Vec<Cert> = pinned.iter().cloned().collect();
        if let Some(header) = &autocrypt
            && pinned
                .as_ref()
                .is_none_or(|pinned| pinned.fingerprint() != header.cert.fingerprint())
        {
            signer_certs.push(header.cert.clone());
        }
        let message = Arc::new(message);
        let signer_certs = Arc::new(signer_certs);
        let open_with = |keys: Vec<IdentityKey>| {
            let message = Arc::clone(&message);
            let signer_certs = Arc::clone(&signer_certs);
            blocking(move || {
                let keys: Vec<&IdentityKey> = keys.iter().collect();
                crate::pgp_mime::open(&message, &keys, &signer_certs)
            })
        };
        let opened = match open_with(vec![key]).await {
            // Mail on its way before the identity moved to a new key opens with the old one.
            Err(ServiceError::Keys(KeysError::NotForUs)) => {
                let previous = self.previous_keys(&record).await?;
                if previous.is_empty() {
                    return Err(KeysError::NotForUs.into());
                }
                open_with(previous).await?
            }
            other => other?,
        };

        let mut signer_key_source = contact.as_ref().map(|contact| contact.key_source);
        let (signature, signer_fingerprint) = match &opened.verification {
            Verification::Unsigned => (pb::SignatureStatus::Unsigned, String::new()),
            Verification::UnknownSigner { .. } => {
                (pb::SignatureStatus::SignerUnknown, String::new())
            }
            Verification::Bad { signer, .. } => (
                pb::SignatureStatus::Bad,
                signer.as_ref().map(Fingerprint::to_hex).unwrap_or_default(),
            ),
            Verification::Good {
                signer_holds_from: false,
                signer,
            } => (pb::SignatureStatus::SignerMismatch, signer.to_hex()),
            Verification::Good { signer, .. } => {
                let is_pinned = pinned
                    .as_ref()
                    .is_some_and(|pinned| &pinned.fingerprint() == signer);
                let status = if is_pinned {
                    if contact
                        .as_ref()
                        .is_some_and(|contact| contact.revoked_at_ms.is_some())
                    {
                        pb::SignatureStatus::SignerRevoked
                    } else {
                        pb::SignatureStatus::Verified
                    }
                } else if let (Some(header), Some(from)) = (&autocrypt, &from) {
                    // Signed by the key in the message's own Autocrypt header: learn it by the
                    // pinning rule; only a pin or a signed transition makes it the sender's.
                    let learned = self
                        .learn_key(&account_id, from, &header.cert, KeySource::Autocrypt, None)
                        .await?;
                    key_change = learned.change;
                    signer_key_source = Some(learned.contact.key_source);
                    let provisional = learned.contact.public_key.is_none();
                    let now_pinned = learned.contact.fingerprint == signer.to_hex();
                    contact = Some(learned.contact);
                    if provisional {
                        // Only the message vouches for this key: not bound to the address.
                        pb::SignatureStatus::SignerUnknown
                    } else if now_pinned {
                        pb::SignatureStatus::Verified
                    } else {
                        pb::SignatureStatus::SignerMismatch
                    }
                } else {
                    pb::SignatureStatus::SignerMismatch
                };
                (status, signer.to_hex())
            }
        };
        // A verified message may carry the sender's newer carrier list (inside the encryption,
        // so only a message signed by the pinned key can change it).
        let mut carriers_learned = false;
        if signature == pb::SignatureStatus::Verified
            && let (Some(contact), Some(signed)) = (
                contact.as_mut(),
                crate::carrier_list::from_message(&opened.message),
            )
        {
            carriers_learned = self.take_carrier_list(contact, signed).await;
        }
        // A verified message may introduce contacts (signed vCards, paper §6): taken only when
        // the sender itself signed them, and after the reply, so nothing in the account's
        // address book (which its other identities share) shows in how long this call takes.
        if signature == pb::SignatureStatus::Verified
            && let Some(sender) = contact.clone()
        {
            let introductions = crate::introduction::find_in(&opened.message);
            if !introductions.is_empty() {
                let service = self.clone();
                let identity_id = request.recipient_identity_id.clone();
                tokio::spawn(async move {
                    for part in introductions {
                        match service
                            .import_introduction_from(&identity_id, Some(&sender), part)
                            .await
                        {
                            Ok(contact) => tracing::info!(
                                contact_id = %contact.contact_id,
                                "introduction in mail imported"
                            ),
                            Err(error) => {
                                tracing::debug!(%error, "an introduction in mail was not taken");
                            }
                        }
                    }
                });
            }
        }
        let mut contact_request = false;
        if let Some(mut seen) = contact.clone() {
            // A verified sender corresponds with this identity (and only this one of the
            // account's): its revocation will be announced there. A stranger to it (no
            // exchange yet, not introduced, not checked by the account) asks first, under
            // `accounts.contact_requests`, and its message waits in the Requests mailbox.
            let identity_id = &request.recipient_identity_id;
            let verified = signature == pb::SignatureStatus::Verified;
            let stranger = !seen.correspondents.contains(identity_id)
                && seen.introducers.is_empty()
                && !seen.verified;
            contact_request = verified && self.contact_requests && stranger;
            let changed = if contact_request {
                seen.add_request(identity_id)
            } else {
                verified && seen.add_correspondent(identity_id)
            };
            if key_change == pb::KeyChange::Unspecified || carriers_learned || changed {
                seen.last_seen_at_ms = now_ms();
                self.store.update_contact(&seen).await?;
            }
        }
        // A verified message may announce its sender's own revocation, or its sender's new key
        // (take_keys_from_mail). Taken after the reply like an introduction, and after the
        // update above, which would otherwise write the contact back as it was.
        let keys_in_mail = match (signature == pb::SignatureStatus::Verified, &from, &pinned) {
            (true, Some(from), Some(pinned)) => {
                let parts = crate::revocation::find_in(&opened.message);
                (!parts.is_empty()).then(|| (from.clone(), pinned.fingerprint(), parts))
            }
            _ => None,
        };
        if let Some((from, pinned, parts)) = keys_in_mail {
            let service = self.clone();
            let account_id = account_id.clone();
            tokio::spawn(async move {
                service
                    .take_keys_from_mail(&account_id, &from, &pinned, parts)
                    .await;
            });
        }
        Ok(pb::DecryptAndVerifyResponse {
            message: opened.message,
            signature: signature as i32,
            from_address: from.map(|from| from.to_string()).unwrap_or_default(),
            signer_fingerprint,
            signer_key_source: signer_key_source
                .map_or(pb::KeySource::Unspecified, key_source_to_pb)
                as i32,
            key_change: Some(pb::KeyChangeOutcome {
                change: key_change as i32,
                contact_id: contact
                    .map(|contact| contact.contact_id)
                    .unwrap_or_default(),
            }),
            sender_key_unpinned,
            contact_request,
        })
    }

    /// The keys a verified message of `from` carried (`application/pgp-keys` parts): its pinned
    /// key with a revocation merged in is applied as a revocation; another key for its address
    /// is offered to the pinning rule as a key it announced, which moves the pin when the pinned
    /// key certified it as its successor (RotateIdentityKey on the sender's carrier) and is held
    /// for the account otherwise. Nothing here is reported to the sender.
    async fn take_keys_from_mail(
        &self,
        account_id: &str,
        from: &Address,
        pinned: &Fingerprint,
        parts: Vec<Vec<u8>>,
    ) {
        for part in parts {
            let cert = match crate::parse_cert(&part) {
                Ok(cert) => cert,
                Err(error) => {
                    tracing::debug!(%error, "a key in mail did not parse");
                    continue;
                }
            };
            if &cert.fingerprint() == pinned {
                let request = pb::ApplyRevocationRequest {
                    account_id: account_id.to_owned(),
                    revocation: part,
                };
                match self.apply_revocation(request).await {
                    Ok(contact) => tracing::info!(
                        contact_id = %contact.contact_id,
                        "revocation in mail applied"
                    ),
                    Err(error) => {
                        tracing::debug!(%error, "a key in mail was not a revocation to apply");
                    }
                }
                continue;
            }
            match self
                .learn_key(account_id, from, &cert, KeySource::Transition, None)
                .await
            {
                Ok(learned) => tracing::info!(
                    contact_id = %learned.contact.contact_id,
                    change = ?learned.change,
                    "a contact's announced key offered"
                ),
                Err(error) => tracing::debug!(%error, "a key in mail was not taken"),
            }
        }
    }

    pub async fn learn_autocrypt(
        &self,
        request: pb::LearnAutocryptRequest,
    ) -> Result<pb::KeyChangeOutcome> {
        let record = self.identity_record(&request.recipient_identity_id).await?;
        let from = Address::parse(request.from_address.trim())?;
        let header = crate::autocrypt::AutocryptHeader::parse(&request.header)?;
        if header.addr != from {
            return Err(ServiceError::InvalidArgument(
                "the Autocrypt header's addr is not the From address".into(),
            ));
        }
        let message_date = request.message_date.as_ref().map(timestamp_ms);
        if let (Some(date), Some(existing)) = (
            message_date,
            self.store
                .contact_by_address(&record.account_id, &from.to_string())
                .await?,
        ) {
            // Autocrypt Level 1 §2.3: an older message never replaces what a newer one taught.
            if existing
                .autocrypt_date_ms
                .is_some_and(|newest| newest > date)
            {
                return Ok(pb::KeyChangeOutcome {
                    change: pb::KeyChange::Unchanged as i32,
                    contact_id: existing.contact_id,
                });
            }
        }
        let learned = self
            .learn_key(
                &record.account_id,
                &from,
                &header.cert,
                KeySource::Autocrypt,
                Some(message_date.unwrap_or_else(now_ms)),
            )
            .await?;
        Ok(pb::KeyChangeOutcome {
            change: learned.change as i32,
            contact_id: learned.contact.contact_id,
        })
    }

    /// Offers `cert` for `address` in an account's address book under the pinning rule:
    /// the first key is pinned, the same key merged, a transition signed by the pinned key
    /// accepted, anything else held for the account.
    /// Learns `cert` for `address` in `account_id`'s address book by the pinning rule.
    ///
    /// Two deliveries from one new sender to two identities of one account arrive together
    /// and race to pin the same contact: the one that loses the insert (or finds the row gone
    /// under it) learns again against what the other wrote, so neither fails. A message the
    /// carrier could open must never be refused because of its own bookkeeping (issue: a copy
    /// for one of two co-hosted recipients answered 550).
    async fn learn_key(
        &self,
        account_id: &str,
        address: &Address,
        cert: &Cert,
        source: KeySource,
        autocrypt_date_ms: Option<i64>,
    ) -> Result<Learned> {
        const ATTEMPTS: usize = 4;
        for _ in 0..ATTEMPTS {
            if let Some(learned) = self
                .learn_key_once(account_id, address, cert, source, autocrypt_date_ms)
                .await?
            {
                return Ok(learned);
            }
        }
        Err(ServiceError::Contended(
            "the contact kept changing under concurrent updates; try again",
        ))
    }

    /// One attempt of [`Self::learn_key`]; `None` when a concurrent writer got there first.
    async fn learn_key_once(
        &self,
        account_id: &str,
        address: &Address,
        cert: &Cert,
        source: KeySource,
        autocrypt_date_ms: Option<i64>,
    ) -> Result<Option<Learned>> {
        let now = now_ms();
        let existing = self
            .store
            .contact_by_address(account_id, &address.to_string())
            .await?;
        let pinned = match existing
            .as_ref()
            .and_then(|contact| contact.public_key.as_ref())
        {
            Some(bytes) => Some(crate::parse_cert(bytes)?),
            None => None,
        };
        let decision = crate::pinning::decide(pinned.as_ref(), cert, address)?;
        // An account may ask to confirm each introduced contact first (AddressBookPolicy).
        let confirm_first = source == KeySource::Introduction
            && self
                .store
                .address_book_policy(account_id)
                .await?
                .confirm_introductions;
        // design.md, "First keys come from the onion": a first key seen only in an Autocrypt
        // header is provisional. It is kept beside the contact for the account to confirm,
        // never pinned, so it neither verifies mail nor receives any; the key fetched from the
        // address's own onion replaces it as soon as the onion answers.
        let decision = match decision {
            PinDecision::PinFirst(first) if source == KeySource::Autocrypt => PinDecision::Held {
                offered: first,
                reason: HoldReason::Provisional,
            },
            PinDecision::PinFirst(first) if confirm_first => PinDecision::Held {
                offered: first,
                reason: HoldReason::AwaitingConfirmation,
            },
            other => other,
        };
        let Some(mut contact) = existing else {
            let (first, held) = match decision {
                PinDecision::PinFirst(first) => (Some(first), None),
                PinDecision::Held { offered, reason } => (
                    None,
                    Some(HeldKey {
                        fingerprint: offered.fingerprint().to_hex(),
                        public_key: cert_bytes(&offered)?,
                        source,
                        reason: hold_reason_text(reason).to_owned(),
                        seen_at_ms: now,
                    }),
                ),
                _ => {
                    return Err(KeysError::Crypto(
                        "a key without a pin was neither pinned nor held".into(),
                    )
                    .into());
                }
            };
            let change = if first.is_some() {
                pb::KeyChange::Pinned
            } else {
                pb::KeyChange::Held
            };
            let contact = ContactRecord {
                contact_id: new_contact_id(),
                account_id: account_id.to_owned(),
                address: address.to_string(),
                display_name: String::new(),
                fingerprint: first
                    .as_ref()
                    .map(|first| first.fingerprint().to_hex())
                    .unwrap_or_default(),
                public_key: first.as_ref().map(cert_bytes).transpose()?,
                key_source: source,
                verified: false,
                designated_carriers: Vec::new(),
                preferred_carriers: Vec::new(),
                preferred_carriers_signed_at: None,
                held,
                introducers: Vec::new(),
                autocrypt_date_ms,
                first_seen_at_ms: now,
                last_seen_at_ms: now,
                revoked_at_ms: None,
                correspondents: Vec::new(),
                requests: Vec::new(),
                blocked: Vec::new(),
            };
            return match self.store.insert_contact(&contact).await {
                Ok(()) => Ok(Some(Learned { change, contact })),
                Err(StoreError::Duplicate) => Ok(None),
                Err(other) => Err(other.into()),
            };
        };
        contact.last_seen_at_ms = now;
        if autocrypt_date_ms.is_some() {
            contact.autocrypt_date_ms = autocrypt_date_ms;
        }
        let change = match decision {
            PinDecision::PinFirst(first) => {
                contact.fingerprint = first.fingerprint().to_hex();
                contact.public_key = Some(cert_bytes(&first)?);
                contact.key_source = source;
                // Without a pin, a held key is only ever a provisional one (from Autocrypt):
                // the key from the onion, an introduction or the account wins over it.
                contact.held = None;
                pb::KeyChange::Pinned
            }
            PinDecision::Unchanged(merged) => {
                contact.public_key = Some(cert_bytes(&merged)?);
                pb::KeyChange::Unchanged
            }
            PinDecision::Transition { new, .. } => {
                contact.fingerprint = new.fingerprint().to_hex();
                contact.public_key = Some(cert_bytes(&new)?);
                contact.key_source = source;
                contact.verified = false;
                contact.held = None;
                pb::KeyChange::Transitioned
            }
            PinDecision::Held { offered, reason } => {
                let fingerprint = offered.fingerprint().to_hex();
                let already_held = contact
                    .held
                    .as_ref()
                    .is_some_and(|held| held.fingerprint == fingerprint);
                if !already_held {
                    contact.held = Some(HeldKey {
                        fingerprint,
                        public_key: cert_bytes(&offered)?,
                        source,
                        reason: hold_reason_text(reason).to_owned(),
                        seen_at_ms: now,
                    });
                }
                pb::KeyChange::Held
            }
        };
        if !self.store.update_contact(&contact).await? {
            return Ok(None);
        }
        Ok(Some(Learned { change, contact }))
    }

    pub async fn resolve_recipient_keys(
        &self,
        request: pb::ResolveRecipientKeysRequest,
    ) -> Result<pb::ResolveRecipientKeysResponse> {
        use pb::RecipientKeyStatus as Status;

        let record = self.identity_record(&request.sender_identity_id).await?;
        let mut recipients = Vec::with_capacity(request.recipients.len());
        for recipient in &request.recipients {
            let address = match Address::parse(recipient.trim()) {
                Ok(address) => address,
                // A clearnet correspondent (through the gateway) publishes no key over an
                // onion; say so for this recipient rather than failing the others.
                Err(_) if is_clearnet_address(recipient) => {
                    recipients.push(pb::RecipientKey {
                        address: recipient.trim().to_ascii_lowercase(),
                        status: Status::Missing as i32,
                        fingerprint: String::new(),
                        detail: "a clearnet address has no onion to fetch a key from".into(),
                    });
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            let answer = |status: Status, fingerprint: String, detail: &str| pb::RecipientKey {
                address: address.to_string(),
                status: status as i32,
                fingerprint,
                detail: detail.to_owned(),
            };
            let contact = self
                .store
                .contact_by_address(&record.account_id, &address.to_string())
                .await?;
            if let Some(contact) = &contact {
                if contact.revoked_at_ms.is_some() {
                    recipients.push(answer(
                        Status::Revoked,
                        String::new(),
                        "the recipient's key is revoked",
                    ));
                    continue;
                }
                // A held key beside a pin is a change for the account to decide; without a
                // pin it is a provisional Autocrypt key, and the onion is asked below.
                if contact.held.is_some() && contact.public_key.is_some() {
                    recipients.push(answer(
                        Status::ChangeHeld,
                        String::new(),
                        "a new key for the recipient waits for the account's decision",
                    ));
                    continue;
                }
                if contact.public_key.is_some() {
                    recipients.push(answer(Status::Pinned, contact.fingerprint.clone(), ""));
                    continue;
                }
            }
            if !request.fetch_missing {
                recipients.push(answer(
                    Status::Missing,
                    String::new(),
                    "no key in the address book",
                ));
                continue;
            }
            match self.fetch_key(&address, &request.sender_identity_id).await {
                Ok(cert) => {
                    let mut learned = self
                        .learn_key(&record.account_id, &address, &cert, KeySource::Wkd, None)
                        .await?;
                    if learned.change != pb::KeyChange::Held {
                        self.learn_carriers_from_onion(
                            &mut learned.contact,
                            &request.sender_identity_id,
                        )
                        .await?;
                    }
                    recipients.push(match learned.change {
                        pb::KeyChange::Held => answer(
                            Status::ChangeHeld,
                            String::new(),
                            "a new key for the recipient waits for the account's decision",
                        ),
                        _ => answer(Status::Fetched, learned.contact.fingerprint, ""),
                    });
                }
                Err(KeysError::KeyNotFound) => recipients.push(answer(
                    Status::NotPublished,
                    String::new(),
                    "the recipient's onion publishes no key for this address",
                )),
                Err(error) if error.is_transient() => {
                    recipients.push(answer(
                        Status::Unreachable,
                        String::new(),
                        &error.to_string(),
                    ));
                }
                Err(error) => {
                    recipients.push(answer(
                        Status::NotPublished,
                        String::new(),
                        &error.to_string(),
                    ));
                }
            }
        }
        Ok(pb::ResolveRecipientKeysResponse { recipients })
    }

    /// The key an address publishes, by WKD over its onion, on a circuit of `on_behalf_of`'s.
    ///
    /// Always over the onion, even for an identity hosted here: a key read from the store
    /// comes back in microseconds where a fetch takes seconds, and that difference, seen by
    /// whoever waits for the answer (a peer at DATA, an account at submission), would tell
    /// that the address shares this carrier.
    async fn fetch_key(&self, address: &Address, on_behalf_of: &str) -> Result<Cert, KeysError> {
        self.fetcher.fetch(address, on_behalf_of).await
    }

    // --- carrier lists ---------------------------------------------------------------------

    /// Takes `signed`, a contact's carrier list, into `contact` when it verifies against the
    /// key pinned for the contact and is newer than the list held; says whether it did. A list
    /// that does not verify is ignored (logged): it changes nothing the contact said.
    async fn take_carrier_list(&self, contact: &mut ContactRecord, signed: Vec<u8>) -> bool {
        let (Some(public_key), Ok(address)) =
            (contact.public_key.clone(), Address::parse(&contact.address))
        else {
            return false;
        };
        let checked = blocking(move || {
            let cert = crate::parse_cert(&public_key)?;
            crate::carrier_list::verify(&signed, &cert, &address)
        })
        .await;
        match checked {
            Ok(list)
                if contact
                    .preferred_carriers_signed_at
                    .is_none_or(|held| list.signed_at > held) =>
            {
                contact.preferred_carriers = list.carriers;
                contact.preferred_carriers_signed_at = Some(list.signed_at);
                true
            }
            Ok(_) => false,
            Err(error) => {
                tracing::debug!(%error, "a contact's carrier list does not verify; ignored");
                false
            }
        }
    }

    /// After a contact's key came from its onion, the carrier list from the same onion. The
    /// list is optional: an onion that publishes none, or cannot be reached now, leaves the
    /// contact as it is.
    async fn learn_carriers_from_onion(
        &self,
        contact: &mut ContactRecord,
        on_behalf_of: &str,
    ) -> Result<()> {
        let address = Address::parse(&contact.address)?;
        let signed = match self.fetcher.fetch_carriers(&address, on_behalf_of).await {
            Ok(Some(signed)) => signed,
            Ok(None) => return Ok(()),
            Err(error) => {
                tracing::debug!(%error, "no carrier list from a contact's onion");
                return Ok(());
            }
        };
        if self.take_carrier_list(contact, signed).await {
            self.store.update_contact(contact).await?;
        }
        Ok(())
    }

    // --- carry statements ------------------------------------------------------------------

    pub async fn sign_carry_statement(
        &self,
        request: pb::SignCarryStatementRequest,
    ) -> Result<pb::SignCarryStatementResponse> {
        use crate::carry::{CarryKind, CarryStatement};
        let carrier = onion_host(required(&request.carrier, "carrier")?)?;
        let kind = match pb::CarryStatementKind::try_from(request.kind) {
            Ok(pb::CarryStatementKind::Request) => CarryKind::Request,
            Ok(pb::CarryStatementKind::Withdraw) => CarryKind::Withdraw,
            _ => {
                return Err(ServiceError::InvalidArgument(
                    "kind must be REQUEST or WITHDRAW".into(),
                ));
            }
        };
        let (_, key) = self.carrier_key(&request.identity_id).await?;
        let statement = CarryStatement {
            identity: key.address().clone(),
            carrier,
            kind,
            signed_at: now_ms().div_euclid(1000),
            expires_at: request
                .expires_at
                .as_ref()
                .map(|expires_at| expires_at.seconds),
        };
        let statement = blocking(move || crate::carry::sign(&key, &statement)).await?;
        Ok(pb::SignCarryStatementResponse { statement })
    }

    pub async fn verify_carry_statement(
        &self,
        request: pb::VerifyCarryStatementRequest,
    ) -> Result<pb::CarryStatement> {
        let claimed = crate::carry::peek(&request.statement)?;
        // The key bound to the identity's onion: the one its onion serves (asked over the onion
        // even when it is hosted here, see `fetch_key`).
        let cert = self
            .fetch_key(&claimed.identity, &claimed.identity.to_string())
            .await?;
        let signed = request.statement;
        let (statement, signer) = blocking(move || crate::carry::verify(&signed, &cert)).await?;
        Ok(pb::CarryStatement {
            address: statement.identity.to_string(),
            fingerprint: signer.to_hex(),
            carrier: statement.carrier,
            kind: match statement.kind {
                crate::carry::CarryKind::Request => pb::CarryStatementKind::Request,
                crate::carry::CarryKind::Withdraw => pb::CarryStatementKind::Withdraw,
            } as i32,
            signed_at: Some(timestamp(statement.signed_at.saturating_mul(1000))),
            expires_at: statement
                .expires_at
                .map(|seconds| timestamp(seconds.saturating_mul(1000))),
        })
    }

    // --- address books ---------------------------------------------------------------------

    async fn contact_record(&self, account_id: &str, contact_id: &str) -> Result<ContactRecord> {
        let account_id = required(account_id, "account_id")?;
        let contact_id = required(contact_id, "contact_id")?;
        self.store
            .contact(account_id, contact_id)
            .await?
            .ok_or(ServiceError::NotFound("contact"))
    }

    pub async fn list_contacts(
        &self,
        request: pb::ListContactsRequest,
    ) -> Result<pb::ListContactsResponse> {
        let account_id = required(&request.account_id, "account_id")?;
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size => size.min(MAX_PAGE_SIZE),
        };
        let filter = ContactFilter {
            query: request.query.trim().to_owned(),
            only_held: request.only_held_key_changes,
            only_requests: request.only_requests,
            // A sender that only asked (or was refused) is not in the address book.
            hide_strangers: !request.only_requests,
            after_address: request.page_token,
            limit: page_size + 1,
        };
        let mut contacts = self.store.list_contacts(account_id, &filter).await?;
        let next_page_token = if contacts.len() > page_size as usize {
            contacts.truncate(page_size as usize);
            contacts
                .last()
                .map(|contact| contact.address.clone())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListContactsResponse {
            contacts: contacts.iter().map(contact_to_pb).collect(),
            next_page_token,
        })
    }

    pub async fn get_contact(&self, request: pb::GetContactRequest) -> Result<pb::Contact> {
        use pb::get_contact_request::Contact;
        let account_id = required(&request.account_id, "account_id")?;
        let record = match request.contact {
            Some(Contact::ContactId(contact_id)) => {
                self.contact_record(account_id, &contact_id).await?
            }
            Some(Contact::Address(address)) => {
                let address = Address::parse(address.trim())?;
                self.store
                    .contact_by_address(account_id, &address.to_string())
                    .await?
                    .ok_or(ServiceError::NotFound("contact"))?
            }
            None => {
                return Err(ServiceError::InvalidArgument(
                    "contact_id or address is required".into(),
                ));
            }
        };
        Ok(contact_to_pb(&record))
    }

    pub async fn add_contact(&self, request: pb::AddContactRequest) -> Result<pb::Contact> {
        let account_id = required(&request.account_id, "account_id")?.to_owned();
        // A contact card brings its own address and key (the key must hold the address).
        let card = if request.vcard.trim().is_empty() {
            None
        } else {
            if !request.public_key.is_empty() {
                return Err(ServiceError::InvalidArgument(
                    "give a contact card or a public key, not both".into(),
                ));
            }
            Some(crate::introduction::parse_vcard(&request.vcard)?)
        };
        let given = match request.address.trim() {
            "" => None,
            text => Some(Address::parse(text)?),
        };
        let address = match (&card, given) {
            (Some((carded, _)), Some(given)) if given != *carded => {
                return Err(ServiceError::InvalidArgument(format!(
                    "the contact card is for {carded}, not for the address given"
                )));
            }
            (Some((carded, _)), _) => Some(carded.clone()),
            (None, given) => given,
        };
        // A scanned URI names the address and the fingerprint seen in person.
        let (address, expected_fingerprint) = if request.openpgp4fpr_uri.trim().is_empty() {
            let address = address
                .ok_or_else(|| ServiceError::InvalidArgument("address is required".into()))?;
            (address, request.expected_fingerprint.clone())
        } else {
            let (fingerprint, scanned) =
                crate::qr::parse_openpgp4fpr(request.openpgp4fpr_uri.trim())?;
            let scanned = scanned.ok_or_else(|| {
                ServiceError::InvalidArgument(
                    "the openpgp4fpr URI names no address (its #a= part)".into(),
                )
            })?;
            let given = normalize_fingerprint(&request.expected_fingerprint);
            if address.is_some_and(|address| address != scanned)
                || !given.is_empty() && given != fingerprint.to_hex()
            {
                return Err(ServiceError::InvalidArgument(
                    "the openpgp4fpr URI disagrees with the address or fingerprint given".into(),
                ));
            }
            (scanned, fingerprint.to_hex())
        };
        let source = match pb::KeySource::try_from(request.source) {
            Ok(pb::KeySource::Qr) => KeySource::Qr,
            _ if !request.openpgp4fpr_uri.trim().is_empty() => KeySource::Qr,
            Ok(pb::KeySource::Unspecified | pb::KeySource::Manual) => KeySource::Manual,
            _ => {
                return Err(ServiceError::InvalidArgument(
                    "source must be MANUAL or QR".into(),
                ));
            }
        };
        if self
            .store
            .contact_by_address(&account_id, &address.to_string())
            .await?
            .is_some()
        {
            return Err(ServiceError::AlreadyExists(
                "the address book has a contact with this address".into(),
            ));
        }
        let designated_carriers = onion_hosts(&request.designated_carriers)?;
        // A key fetched over the contact's own onion is bound to the address by the onion; a
        // scanned fingerprint on top of it makes it QR.
        let source = match source {
            KeySource::Manual if card.is_none() && request.public_key.is_empty() => KeySource::Wkd,
            other => other,
        };
        let cert = if let Some((_, cert)) = card {
            cert
        } else if request.public_key.is_empty() {
            self.fetch_key(&address, &account_id).await?
        } else {
            crate::wkd::bind_to_address(crate::parse_cert(&request.public_key)?, &address)?
        };
        let expected = normalize_fingerprint(&expected_fingerprint);
        let fingerprint = cert.fingerprint().to_hex();
        if !expected.is_empty() && expected != fingerprint {
            return Err(ServiceError::FailedPrecondition(format!(
                "the key's fingerprint is {fingerprint}, not the expected {expected}"
            )));
        }
        let now = now_ms();
        let record = ContactRecord {
            contact_id: new_contact_id(),
            account_id,
            address: address.to_string(),
            display_name: request.display_name.trim().to_owned(),
            fingerprint,
            public_key: Some(cert_bytes(&cert)?),
            key_source: source,
            // A fingerprint compared with one seen in person (QR) is a verification.
            verified: !expected.is_empty(),
            designated_carriers,
            preferred_carriers: Vec::new(),
            preferred_carriers_signed_at: None,
            held: None,
            introducers: Vec::new(),
            autocrypt_date_ms: None,
            first_seen_at_ms: now,
            last_seen_at_ms: now,
            revoked_at_ms: None,
            correspondents: Vec::new(),
            requests: Vec::new(),
            blocked: Vec::new(),
        };
        self.store
            .insert_contact(&record)
            .await
            .map_err(|error| match error {
                StoreError::Duplicate => ServiceError::AlreadyExists(
                    "the address book has a contact with this address".into(),
                ),
                other => other.into(),
            })?;
        Ok(contact_to_pb(&record))
    }

    pub async fn update_contact(&self, request: pb::UpdateContactRequest) -> Result<pb::Contact> {
        let update = request
            .contact
            .ok_or_else(|| ServiceError::InvalidArgument("contact is required".into()))?;
        let paths = request
            .update_mask
            .map(|mask| mask.paths)
            .unwrap_or_default();
        if paths.is_empty() {
            return Err(ServiceError::InvalidArgument(
                "update_mask is required".into(),
            ));
        }
        let mut record = self
            .contact_record(&request.account_id, &update.contact_id)
            .await?;
        for path in &paths {
            match path.as_str() {
                "display_name" => record.display_name = update.display_name.trim().to_owned(),
                "verified" => record.verified = update.verified,
                "designated_carriers" => {
                    record.designated_carriers = onion_hosts(&update.designated_carriers)?;
                }
                "public_key" => {
                    // An explicit account action: replaces the pin without the pinning rule.
                    let address = Address::parse(&record.address)?;
                    let cert = crate::wkd::bind_to_address(
                        crate::parse_cert(&update.public_key)?,
                        &address,
                    )?;
                    record.fingerprint = cert.fingerprint().to_hex();
                    record.public_key = Some(cert_bytes(&cert)?);
                    record.key_source = KeySource::Manual;
                    record.held = None;
                    record.revoked_at_ms = None;
                    if !paths.iter().any(|path| path == "verified") {
                        record.verified = false;
                    }
                }
                other => {
                    return Err(ServiceError::InvalidArgument(format!(
                        "update_mask: {other:?} cannot be changed"
                    )));
                }
            }
        }
        if !self.store.update_contact(&record).await? {
            return Err(ServiceError::NotFound("contact"));
        }
        Ok(contact_to_pb(&record))
    }

    pub async fn delete_contact(
        &self,
        request: pb::DeleteContactRequest,
    ) -> Result<pb::DeleteContactResponse> {
        let account_id = required(&request.account_id, "account_id")?;
        let contact_id = required(&request.contact_id, "contact_id")?;
        if !self.store.delete_contact(account_id, contact_id).await? {
            return Err(ServiceError::NotFound("contact"));
        }
        Ok(pb::DeleteContactResponse {})
    }

    pub async fn confirm_key_change(
        &self,
        request: pb::ConfirmKeyChangeRequest,
    ) -> Result<pb::Contact> {
        let mut record = self
            .contact_record(&request.account_id, &request.contact_id)
            .await?;
        let Some(held) = record.held.take() else {
            return Err(ServiceError::FailedPrecondition(
                "no key change is held for this contact".into(),
            ));
        };
        if held.fingerprint != normalize_fingerprint(&request.fingerprint) {
            return Err(ServiceError::FailedPrecondition(
                "the held key is not the one named; look at the contact again".into(),
            ));
        }
        if request.accept {
            record.fingerprint = held.fingerprint;
            record.public_key = Some(held.public_key);
            record.key_source = held.source;
            record.verified = false;
            record.revoked_at_ms = None;
        }
        if !self.store.update_contact(&record).await? {
            return Err(ServiceError::NotFound("contact"));
        }
        Ok(contact_to_pb(&record))
    }

    // --- introductions and revocations -----------------------------------------------------

    pub async fn make_introduction(
        &self,
        request: pb::MakeIntroductionRequest,
    ) -> Result<pb::Introduction> {
        let (record, key) = self.carrier_key(&request.introducer_identity_id).await?;
        let contact = self
            .contact_record(&record.account_id, &request.contact_id)
            .await?;
        let Some(public_key) = contact.public_key.as_ref() else {
            return Err(ServiceError::FailedPrecondition(
                "the contact has no key to introduce".into(),
            ));
        };
        let cert = crate::parse_cert(public_key)?;
        let address = Address::parse(&contact.address)?;
        let part = blocking(move || crate::introduction::introduce(&key, &address, &cert)).await?;
        Ok(pb::Introduction {
            part,
            media_type: "multipart/signed; protocol=\"application/pgp-signature\"".to_owned(),
        })
    }

    pub async fn seal_introduction(
        &self,
        request: pb::SealIntroductionRequest,
    ) -> Result<pb::SealedMail> {
        let (record, key) = self.carrier_key(&request.introducer_identity_id).await?;
        let introduced = self
            .contact_record(&record.account_id, &request.contact_id)
            .await?;
        let to = self
            .contact_record(&record.account_id, &request.to_contact_id)
            .await
            .map_err(|error| match error {
                ServiceError::NotFound(_) => {
                    ServiceError::InvalidArgument("to_contact_id: no such contact".into())
                }
                other => other,
            })?;
        if to.contact_id == introduced.contact_id {
            return Err(ServiceError::InvalidArgument(
                "to_contact_id: a contact is not introduced to itself".into(),
            ));
        }
        let Some(public_key) = introduced.public_key.as_ref() else {
            return Err(ServiceError::FailedPrecondition(
                "the contact has no key to introduce".into(),
            ));
        };
        let usable = to
            .public_key
            .as_ref()
            .filter(|_| to.revoked_at_ms.is_none() && to.held.is_none());
        let Some(to_key) = usable else {
            return Err(ServiceError::FailedPrecondition(format!(
                "no usable key for {} (revoked, held, or not known yet)",
                to.address
            )));
        };
        let introduced_cert = crate::parse_cert(public_key)?;
        let to_cert = crate::parse_cert(to_key)?;
        let introduced_address = Address::parse(&introduced.address)?;
        let to_address = Address::parse(&to.address)?;
        let message_id = format!(
            "<{}@{}>",
            hex::encode(rand::random::<[u8; 16]>()),
            key.address().onion_host()
        );
        let id = message_id.clone();
        let signer = key.clone();
        let plaintext = blocking(move || {
            let part =
                crate::introduction::introduce(&signer, &introduced_address, &introduced_cert)?;
            Ok(crate::introduction::message(
                signer.address(),
                &to_address,
                &introduced_address,
                &id,
                &part,
            ))
        })
        .await?;
        let sealed = seal_as(&record, key, vec![to_cert], plaintext, true).await?;
        // The introducer now writes to this contact: its revocation will be announced there.
        let mut to = to;
        if to.add_correspondent(&record.identity_id) {
            self.store.update_contact(&to).await?;
        }
        Ok(pb::SealedMail {
            recipient: to.address,
            message: sealed,
            message_id,
        })
    }

    /// Every pinned key in an account's address book, with its contact. One call: the store
    /// opens the account's sealed entries whole whatever the page, so paging would open them
    /// again for every page.
    async fn pinned_contacts(&self, account_id: &str) -> Result<Vec<(ContactRecord, Cert)>> {
        let everyone = ContactFilter {
            limit: u32::MAX,
            ..ContactFilter::default()
        };
        let mut pinned = Vec::new();
        for contact in self.store.list_contacts(account_id, &everyone).await? {
            if let Some(bytes) = &contact.public_key {
                let cert = crate::parse_cert(bytes)?;
                pinned.push((contact, cert));
            }
        }
        Ok(pinned)
    }

    pub async fn import_introduction(
        &self,
        request: pb::ImportIntroductionRequest,
    ) -> Result<pb::Contact> {
        self.import_introduction_from(&request.recipient_identity_id, None, request.part)
            .await
    }

    /// Imports an introduction for `identity_id`'s account: signed by any pinned contact, or,
    /// when `only` names one (the verified sender of the mail that carried it), by that one.
    async fn import_introduction_from(
        &self,
        identity_id: &str,
        only: Option<&ContactRecord>,
        part: Vec<u8>,
    ) -> Result<pb::Contact> {
        let record = self.identity_record(identity_id).await?;
        // The mail's verified sender alone, when named: its pinned key is already in hand, so
        // the whole address book is neither read nor parsed.
        let pinned = match only {
            Some(sender) => match &sender.public_key {
                Some(bytes) => vec![(sender.clone(), crate::parse_cert(bytes)?)],
                None => Vec::new(),
            },
            None => self.pinned_contacts(&record.account_id).await?,
        };
        let certs: Vec<Cert> = pinned.iter().map(|(_, cert)| cert.clone()).collect();
        let introduction = blocking(move || crate::introduction::verify(&part, &certs)).await?;
        let introducer = pinned
            .iter()
            .find(|(_, cert)| cert.fingerprint() == introduction.introducer)
            .map(|(contact, _)| contact.clone())
            .ok_or_else(|| KeysError::UnknownSigner(introduction.introducer.to_hex()))?;
        let mut learned = self
            .learn_key(
                &record.account_id,
                &introduction.contact,
                &introduction.cert,
                KeySource::Introduction,
                None,
            )
            .await?;
        let contact = &mut learned.contact;
        let introducer_fingerprint = introduction.introducer.to_hex();
        if !contact
            .introducers
            .iter()
            .any(|known| known.fingerprint == introducer_fingerprint)
        {
            contact.introducers.push(IntroducerRecord {
                address: introducer.address.clone(),
                fingerprint: introducer_fingerprint,
                introduced_at_ms: now_ms(),
            });
            // The introducers are the first designated carriers (design.md, "Introductions").
            let carrier = Address::parse(&introducer.address)?.onion_host();
            if !contact.designated_carriers.contains(&carrier) {
                contact.designated_carriers.push(carrier);
            }
            if !self.store.update_contact(contact).await? {
                return Err(ServiceError::NotFound("contact"));
            }
        }
        Ok(contact_to_pb(contact))
    }

    pub async fn get_address_book_policy(
        &self,
        request: pb::GetAddressBookPolicyRequest,
    ) -> Result<pb::AddressBookPolicy> {
        let account_id = required(&request.account_id, "account_id")?;
        let policy = self.store.address_book_policy(account_id).await?;
        Ok(pb::AddressBookPolicy {
            confirm_introductions: policy.confirm_introductions,
        })
    }

    /// Whether `address` corresponds with this identity (see [`ContactRecord::correspondents`]):
    /// pinned, unrevoked, and in signed exchange with this identity itself. A contact known only
    /// to another identity of the account is a stranger here, or writing to one identity
    /// without a stamp would tell that both share an account.
    pub async fn check_correspondent(
        &self,
        request: pb::CheckCorrespondentRequest,
    ) -> Result<pb::CheckCorrespondentResponse> {
        let identity_id = required(&request.identity_id, "identity_id")?;
        let Some(record) = self.store.identity(identity_id).await? else {
            return Err(ServiceError::NotFound("identity key"));
        };
        let address = Address::parse(&request.address)
            .map(|address| address.to_string())
            .unwrap_or_else(|_| request.address.to_lowercase());
        let contact = self
            .store
            .contact_by_address(&record.account_id, &address)
            .await?;
        let correspondent = contact.as_ref().is_some_and(|contact| {
            contact.revoked_at_ms.is_none()
                && contact.public_key.is_some()
                && contact.correspondents.iter().any(|id| id == identity_id)
        });
        let blocked = contact
            .as_ref()
            .is_some_and(|contact| contact.blocked.iter().any(|id| id == identity_id));
        Ok(pb::CheckCorrespondentResponse {
            correspondent,
            blocked,
        })
    }

    /// Accepts or refuses a contact's requests (all of them, or the one to `identity_id`).
    pub async fn answer_contact_request(
        &self,
        request: pb::AnswerContactRequestRequest,
    ) -> Result<pb::AnswerContactRequestResponse> {
        let account_id = required(&request.account_id, "account_id")?;
        let contact_id = required(&request.contact_id, "contact_id")?;
        let Some(mut contact) = self.store.contact(account_id, contact_id).await? else {
            return Err(ServiceError::NotFound("contact"));
        };
        let identity_ids: Vec<String> = if request.identity_id.is_empty() {
            contact.requests.clone()
        } else if contact.requests.contains(&request.identity_id) {
            vec![request.identity_id.clone()]
        } else {
            Vec::new()
        };
        if identity_ids.is_empty() {
            return Err(ServiceError::FailedPrecondition(
                "this contact has no request waiting".into(),
            ));
        }
        for identity_id in &identity_ids {
            if request.accept {
                contact.add_correspondent(identity_id);
            } else {
                contact.block(identity_id);
            }
        }
        self.store.update_contact(&contact).await?;
        tracing::info!(
            contact_id = %contact.contact_id,
            accepted = request.accept,
            identities = identity_ids.len(),
            "contact request answered"
        );
        Ok(pb::AnswerContactRequestResponse {
            contact: Some(contact_to_pb(&contact)),
            identity_ids,
        })
    }

    pub async fn set_address_book_policy(
        &self,
        request: pb::SetAddressBookPolicyRequest,
    ) -> Result<pb::AddressBookPolicy> {
        let account_id = required(&request.account_id, "account_id")?;
        let wanted = request.policy.unwrap_or_default();
        self.store
            .set_address_book_policy(
                account_id,
                &AddressBookPolicy {
                    confirm_introductions: wanted.confirm_introductions,
                },
            )
            .await?;
        Ok(wanted)
    }

    pub async fn apply_revocation(
        &self,
        request: pb::ApplyRevocationRequest,
    ) -> Result<pb::Contact> {
        let account_id = required(&request.account_id, "account_id")?;
        let offered = crate::parse_cert(&request.revocation)
            .map_err(|error| KeysError::MalformedRevocation(error.to_string()))?;
        let fingerprint = offered.fingerprint().to_hex();
        let addresses: Vec<Address> = offered
            .userids()
            .filter_map(|uid| crate::certs::userid_address(uid.userid()))
            .collect();
        let mut found = None;
        for address in &addresses {
            if let Some(contact) = self
                .store
                .contact_by_address(account_id, &address.to_string())
                .await?
                && contact.fingerprint == fingerprint
            {
                found = Some(contact);
                break;
            }
        }
        let mut contact = found.ok_or(ServiceError::NotFound("contact with this key"))?;
        let pinned = crate::parse_cert(contact.public_key.as_deref().unwrap_or_default())?;
        let revocation = request.revocation;
        let applied = blocking(move || crate::revocation::apply(&revocation, &pinned)).await?;
        contact.public_key = Some(cert_bytes(&applied.cert)?);
        contact.revoked_at_ms = Some(now_ms());
        contact.last_seen_at_ms = now_ms();
        if !self.store.update_contact(&contact).await? {
            return Err(ServiceError::NotFound("contact"));
        }
        Ok(contact_to_pb(&contact))
    }
}

/// Signs `message` as the identity and encrypts it to `certs` (and the identity). With
/// `add_autocrypt`, the identity's Autocrypt header and its signed carrier list (when it has
/// one and the message carries none) go first, inside the encryption.
async fn seal_as(
    record: &IdentityRecord,
    key: IdentityKey,
    certs: Vec<Cert>,
    message: Vec<u8>,
    add_autocrypt: bool,
) -> Result<Vec<u8>> {
    let carrier_list = record
        .carrier_list
        .clone()
        .filter(|_| add_autocrypt && crate::carrier_list::from_message(&message).is_none());
    blocking(move || {
        let message = if add_autocrypt {
            let mut fields =
                vec![crate::autocrypt::AutocryptHeader::for_identity(&key)?.to_header_field()?];
            fields.extend(
                carrier_list
                    .as_deref()
                    .map(crate::carrier_list::header_field),
            );
            let mut with_header = Vec::with_capacity(message.len() + 4096);
            for field in fields {
                with_header.extend_from_slice(field.as_bytes());
                with_header.extend_from_slice(b"\r\n");
            }
            with_header.extend_from_slice(&message);
            with_header
        } else {
            message
        };
        crate::pgp_mime::seal(&message, &key, &certs)
    })
    .await
}

/// `local@domain` where the domain is not an onion (a gateway correspondent).
fn is_clearnet_address(text: &str) -> bool {
    text.trim().rsplit_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && domain.contains('.')
            && !onionpost_proto::address::is_onion_name(domain)
    })
}

/// The outer From address of a received message, if it names an onion identity.
fn outer_from(message: &[u8]) -> Option<Address> {
    let entity = crate::mime::Entity::parse(message).ok()?;
    let from = entity.field("From")?.value();
    let from = match (from.rfind('<'), from.rfind('>')) {
        (Some(start), Some(end)) if start < end => from[start + 1..end].to_owned(),
        _ => from,
    };
    Address::parse(from.trim()).ok()
}

/// How a held key's reason is stored and shown.
fn hold_reason_text(reason: HoldReason) -> &'static str {
    match reason {
        HoldReason::NotCertifiedByPinnedKey => "not-certified",
        HoldReason::PinnedKeyCompromised => "pinned-compromised",
        HoldReason::Provisional => "provisional",
        HoldReason::AwaitingConfirmation => "awaiting-confirmation",
    }
}
