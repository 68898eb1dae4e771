//! An address-book entry as it is kept at rest: sealed whole with the carrier secret, and found
//! by a keyed digest of its account and address. A copied volume shows how many contacts each
//! account has, and nothing of who they are (issue 18, item 10): no address, no name, no key,
//! no introducer, no carrier.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use onionpost_runtime::seal::Sealer;
use serde::{Deserialize, Serialize};

use super::{ContactRecord, HeldKey, IntroducerRecord, KeySource, StoreError};

/// The carrier secret's purpose for address books.
pub const SEAL_PURPOSE: &str = "address-book";

/// The lookup key of `address` in `account_id`'s address book: equal for equal pairs, and
/// without the carrier secret it confirms no guessed address.
pub(super) fn address_key(sealer: &Sealer, account_id: &str, address: &str) -> String {
    hex::encode(sealer.keyed_digest(&[account_id.as_bytes(), address.as_bytes()]))
}

/// What a sealed entry is bound to: its row, so entries cannot be swapped between contacts or
/// accounts.
fn associated(account_id: &str, contact_id: &str) -> Vec<u8> {
    format!("contact\n{account_id}\n{contact_id}").into_bytes()
}

/// The sealed form of `contact` (everything but its id and account, which are the row's key).
pub(super) fn seal(sealer: &Sealer, contact: &ContactRecord) -> Vec<u8> {
    let entry = Entry::from(contact);
    let plaintext = zeroize::Zeroizing::new(
        serde_json::to_vec(&entry).expect("an address-book entry always serialises"),
    );
    sealer.seal(
        &plaintext,
        &associated(&contact.account_id, &contact.contact_id),
    )
}

/// Opens an entry sealed by [`seal`].
pub(super) fn open(
    sealer: &Sealer,
    account_id: &str,
    contact_id: &str,
    sealed: &[u8],
) -> Result<ContactRecord, StoreError> {
    let plaintext = sealer
        .open(sealed, &associated(account_id, contact_id))
        .map_err(|error| StoreError::Corrupt(format!("address-book entry: {error}")))?;
    let entry: Entry = serde_json::from_slice(&plaintext)
        .map_err(|error| StoreError::Corrupt(format!("address-book entry: {error}")))?;
    entry.into_record(account_id, contact_id)
}

#[derive(Serialize, Deserialize)]
struct Entry {
    address: String,
    display_name: String,
    fingerprint: String,
    /// Base64 (a JSON array of numbers would be four times the size).
    public_key: Option<String>,
    key_source: String,
    verified: bool,
    designated_carriers: Vec<String>,
    preferred_carriers: Vec<String>,
    preferred_carriers_signed_at: Option<i64>,
    held: Option<Held>,
    introducers: Vec<Introducer>,
    autocrypt_date_ms: Option<i64>,
    first_seen_at_ms: i64,
    last_seen_at_ms: i64,
    revoked_at_ms: Option<i64>,
    /// Absent from entries sealed before identities were recorded.
    #[serde(default)]
    correspondents: Vec<String>,
    /// Absent from entries sealed before contact requests.
    #[serde(default)]
    requests: Vec<String>,
    #[serde(default)]
    blocked: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Held {
    fingerprint: String,
    public_key: String,
    source: String,
    reason: String,
    seen_at_ms: i64,
}

#[derive(Serialize, Deserialize)]
struct Introducer {
    address: String,
    fingerprint: String,
    introduced_at_ms: i64,
}

impl From<&ContactRecord> for Entry {
    fn from(contact: &ContactRecord) -> Self {
        Entry {
            address: contact.address.clone(),
            display_name: contact.display_name.clone(),
            fingerprint: contact.fingerprint.clone(),
            public_key: contact.public_key.as_ref().map(|key| BASE64.encode(key)),
            key_source: contact.key_source.as_str().to_owned(),
            verified: contact.verified,
            designated_carriers: contact.designated_carriers.clone(),
            preferred_carriers: contact.preferred_carriers.clone(),
            preferred_carriers_signed_at: contact.preferred_carriers_signed_at,
            held: contact.held.as_ref().map(|held| Held {
                fingerprint: held.fingerprint.clone(),
                public_key: BASE64.encode(&held.public_key),
                source: held.source.as_str().to_owned(),
                reason: held.reason.clone(),
                seen_at_ms: held.seen_at_ms,
            }),
            introducers: contact
                .introducers
                .iter()
                .map(|introducer| Introducer {
                    address: introducer.address.clone(),
                    fingerprint: introducer.fingerprint.clone(),
                    introduced_at_ms: introducer.introduced_at_ms,
                })
                .collect(),
            autocrypt_date_ms: contact.autocrypt_date_ms,
            first_seen_at_ms: contact.first_seen_at_ms,
            last_seen_at_ms: contact.last_seen_at_ms,
            revoked_at_ms: contact.revoked_at_ms,
            correspondents: contact.correspondents.clone(),
            requests: contact.requests.clone(),
            blocked: contact.blocked.clone(),
        }
    }
}

impl Entry {
    fn into_record(self, account_id: &str, contact_id: &str) -> Result<ContactRecord, StoreError> {
        let key = |text: &str| {
            BASE64
                .decode(text)
                .map_err(|error| StoreError::Corrupt(format!("address-book key: {error}")))
        };
        let held = match self.held {
            None => None,
            Some(held) => Some(HeldKey {
                fingerprint: held.fingerprint,
                public_key: key(&held.public_key)?,
                source: KeySource::parse(&held.source)?,
                reason: held.reason,
                seen_at_ms: held.seen_at_ms,
            }),
        };
        Ok(ContactRecord {
            contact_id: contact_id.to_owned(),
            account_id: account_id.to_owned(),
            address: self.address,
            display_name: self.display_name,
            fingerprint: self.fingerprint,
            public_key: self.public_key.as_deref().map(key).transpose()?,
            key_source: KeySource::parse(&self.key_source)?,
            verified: self.verified,
            designated_carriers: self.designated_carriers,
            preferred_carriers: self.preferred_carriers,
            preferred_carriers_signed_at: self.preferred_carriers_signed_at,
            held,
            introducers: self
                .introducers
                .into_iter()
                .map(|introducer| IntroducerRecord {
                    address: introducer.address,
                    fingerprint: introducer.fingerprint,
                    introduced_at_ms: introducer.introduced_at_ms,
                })
                .collect(),
            autocrypt_date_ms: self.autocrypt_date_ms,
            first_seen_at_ms: self.first_seen_at_ms,
            last_seen_at_ms: self.last_seen_at_ms,
            revoked_at_ms: self.revoked_at_ms,
            correspondents: self.correspondents,
            requests: self.requests,
            blocked: self.blocked,
        })
    }
}

/// Whether `contact` belongs on a page of `filter` (apart from the page's start and length).
pub(super) fn matches(contact: &ContactRecord, filter: &super::ContactFilter) -> bool {
    let query = filter.query.to_lowercase();
    let left_out = (filter.only_held && contact.held.is_none())
        || (filter.only_requests && contact.requests.is_empty())
        || (filter.hide_strangers && contact.stranger_only());
    !left_out
        && (query.is_empty()
            || contact.address.to_lowercase().contains(&query)
            || contact.display_name.to_lowercase().contains(&query))
}
