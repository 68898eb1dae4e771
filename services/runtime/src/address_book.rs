//! Address-book entries (keys.proto's `Contact`) as the HTTP APIs show them: the admin API names
//! any account's, the account portal only the signed-in account's, and both show the same thing.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use onionpost_proto::keys::v1 as keys;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::time::{from_ms, timestamp_ms};

/// How a contact's key came into the address book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeySource {
    Unknown,
    Manual,
    Qr,
    Wkd,
    Autocrypt,
    Introduction,
    Transition,
}

impl KeySource {
    pub fn from_proto(value: i32) -> Self {
        match keys::KeySource::try_from(value) {
            Ok(keys::KeySource::Manual) => KeySource::Manual,
            Ok(keys::KeySource::Qr) => KeySource::Qr,
            Ok(keys::KeySource::Wkd) => KeySource::Wkd,
            Ok(keys::KeySource::Autocrypt) => KeySource::Autocrypt,
            Ok(keys::KeySource::Introduction) => KeySource::Introduction,
            Ok(keys::KeySource::Transition) => KeySource::Transition,
            _ => KeySource::Unknown,
        }
    }

    /// In words, for a page.
    pub fn describe(self) -> &'static str {
        match self {
            KeySource::Unknown => "unknown",
            KeySource::Manual => "entered by hand",
            KeySource::Qr => "scanned from a QR code",
            KeySource::Wkd => "fetched over the contact's own onion",
            KeySource::Autocrypt => "learned from signed mail",
            KeySource::Introduction => "from an introduction",
            KeySource::Transition => "announced by the contact's previous key",
        }
    }
}

/// Someone who vouched for a contact.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Introducer {
    pub address: String,
    pub fingerprint: String,
    pub introduced_at: Option<DateTime<Utc>>,
}

/// A new key for a pinned contact, waiting for the account's decision.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HeldKeyChange {
    pub fingerprint: String,
    pub source: KeySource,
    pub seen_at: Option<DateTime<Utc>>,
}

/// An address-book entry.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Contact {
    pub id: String,
    pub account_id: String,
    pub address: String,
    pub display_name: String,
    /// The pinned key's fingerprint; absent while none is known.
    pub fingerprint: Option<String>,
    /// The pinned key (binary OpenPGP certificate), base64.
    pub public_key: Option<String>,
    pub key_source: KeySource,
    /// Whether the fingerprint was checked out of band.
    pub verified: bool,
    /// Who introduced this contact (provenance); several introducers are a stronger sign.
    pub introducers: Vec<Introducer>,
    /// Carrier onions trusted to hold mail for this contact while it is offline.
    pub designated_carriers: Vec<String>,
    /// Carrier onions the contact itself published.
    pub preferred_carriers: Vec<String>,
    pub held_key_change: Option<HeldKeyChange>,
    pub first_seen_at: Option<DateTime<Utc>>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Identities (by id) this contact wrote to without corresponding with them: contact
    /// requests waiting for the account, their messages in the Requests mailbox.
    pub requested_identities: Vec<String>,
    /// Identities that refused it: its mail to them is refused.
    pub blocked_identities: Vec<String>,
}

fn time(timestamp: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    timestamp.map(|value| from_ms(timestamp_ms(&value)))
}

impl Contact {
    pub fn from_proto(contact: keys::Contact) -> Self {
        Contact {
            id: contact.contact_id,
            account_id: contact.account_id,
            address: contact.address,
            display_name: contact.display_name,
            fingerprint: (!contact.fingerprint.is_empty()).then_some(contact.fingerprint),
            public_key: (!contact.public_key.is_empty())
                .then(|| BASE64.encode(&contact.public_key)),
            key_source: KeySource::from_proto(contact.key_source),
            verified: contact.verified,
            introducers: contact
                .introducers
                .into_iter()
                .map(|introducer| Introducer {
                    address: introducer.address,
                    fingerprint: introducer.fingerprint,
                    introduced_at: time(introducer.introduced_at),
                })
                .collect(),
            designated_carriers: contact.designated_carriers,
            preferred_carriers: contact.preferred_carriers,
            held_key_change: contact.held_key_change.map(|held| HeldKeyChange {
                fingerprint: held.fingerprint,
                source: KeySource::from_proto(held.source),
                seen_at: time(held.seen_at),
            }),
            first_seen_at: time(contact.first_seen_at),
            last_seen_at: time(contact.last_seen_at),
            revoked_at: time(contact.revoked_at),
            requested_identities: contact.requested_identities,
            blocked_identities: contact.blocked_identities,
        }
    }
}

/// Whether keys' refusal of AddContact is about the contact's onion, not about the carrier:
/// keys answers UNAVAILABLE both when it is down and when the onion could not be reached for
/// the key ("key fetch failed: …"). The second is a refusal of the address, in these words.
pub fn unreachable_contact(status: &tonic::Status) -> Option<String> {
    (status.code() == tonic::Code::Unavailable && status.message().starts_with("key fetch failed"))
        .then(|| {
            format!(
                "no key could be fetched over this address's onion ({}); try again later or give its key",
                status.message()
            )
        })
}

/// The queue request for mail keys wrote for one of an account's identities (an introduction,
/// a revocation announcement): queued as that identity's own submission, so it leaves through
/// the identity's own tor circuits like any mail it sends. `notify` false asks for no delivery
/// notice (nobody will be there to read one).
pub fn enqueue_sealed(
    account_id: &str,
    identity_id: &str,
    identity_address: &str,
    mail: keys::SealedMail,
    notify: bool,
) -> onionpost_proto::queue::v1::EnqueueRequest {
    use onionpost_proto::queue::v1 as queue;
    queue::EnqueueRequest {
        // One per message: a retried call after a lost reply does not queue it twice.
        idempotency_key: mail.message_id.clone(),
        origin: queue::Origin::Submission as i32,
        account_id: account_id.to_owned(),
        sender_identity_id: identity_id.to_owned(),
        reverse_path: identity_address.to_owned(),
        recipients: vec![queue::RecipientRequest {
            address: mail.recipient,
            notify: if notify {
                Vec::new()
            } else {
                vec![queue::DsnNotify::Never as i32]
            },
            ..Default::default()
        }],
        message: mail.message,
        message_id: mail.message_id,
        ..Default::default()
    }
}

/// How an account's address book takes what arrives in mail (keys `AddressBookPolicy`), as the
/// admin API and the account API show and take it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressBookPolicy {
    /// A contact introduced in verified mail by a pinned contact waits as a held key change
    /// (with its introducer recorded) until the account accepts it; false adds it at once.
    pub confirm_introductions: bool,
}

/// The account's answer to a contact request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactRequestAnswer {
    /// True: the contact becomes a correspondent and its messages move from Requests to the
    /// INBOX. False: its mail is refused from now on and its messages move to Trash.
    pub accept: bool,
    /// Only the request to this identity; absent: every identity the contact wrote to.
    pub identity_id: Option<String>,
}

/// What answering a contact request did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ContactRequestAnswered {
    pub address: String,
    /// The identities whose request was answered.
    pub identity_ids: Vec<String>,
    /// Messages moved out of the Requests mailbox.
    pub messages_moved: u32,
}

impl ContactRequestAnswered {
    pub fn from_proto(answered: onionpost_proto::imap::v1::AnswerContactRequestResponse) -> Self {
        ContactRequestAnswered {
            address: answered.address,
            identity_ids: answered.identity_ids,
            messages_moved: answered.messages_moved,
        }
    }
}
