//! Where the keys service keeps identity keys and address books.
//!
//! Identity keys are one row per identity, kept after revocation (with the secret key gone) so
//! that a revoked identity id or address never comes back. The secret key arrives here already
//! sealed with the carrier secret: the store never sees key material in the clear.
//!
//! Address books are one entry per (account, address) with the pinned key, a key held for the
//! account's decision, where the key came from, the introducers who vouched for it and the
//! designated carriers; each entry is sealed whole with the carrier secret and found by a keyed
//! digest of its address ([`sealed`]), so the volume holds nobody's social graph. Both backends share one implementation (`store_impl!` in `sql.rs`)
//! written in the dialect of [`onionpost_runtime::sql`]; the suite in `tests` runs it against
//! SQLite and PostgreSQL through [`onionpost_runtime::conformance::each_backend`].

mod postgres;
mod sealed;
mod sql;
mod sqlite;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use async_trait::async_trait;
use onionpost_runtime::seal::CarrierSecret;
use onionpost_runtime::{Database, Migrations};

pub use onionpost_runtime::db::StoreError;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// The migrations of both backends.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &sqlx::migrate!("migrations/sqlite"),
    postgres: &sqlx::migrate!("migrations/postgres"),
};

/// Where an identity's secret key lives (design.md, "Key custody").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Custody {
    /// Sealed in this store.
    Carrier,
    /// In the account's own mail client; only the public key is here.
    Client,
}

impl Custody {
    pub fn as_str(self) -> &'static str {
        match self {
            Custody::Carrier => "carrier",
            Custody::Client => "client",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "carrier" => Ok(Custody::Carrier),
            "client" => Ok(Custody::Client),
            other => Err(StoreError::Corrupt(format!("unknown custody {other:?}"))),
        }
    }
}

/// How a key came into an address book.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    Manual,
    Qr,
    Wkd,
    Autocrypt,
    Introduction,
    /// The contact's successor key, announced in mail signed by its pinned key.
    Transition,
}

impl KeySource {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::Manual => "manual",
            KeySource::Qr => "qr",
            KeySource::Wkd => "wkd",
            KeySource::Autocrypt => "autocrypt",
            KeySource::Introduction => "introduction",
            KeySource::Transition => "transition",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "manual" => KeySource::Manual,
            "qr" => KeySource::Qr,
            "wkd" => KeySource::Wkd,
            "autocrypt" => KeySource::Autocrypt,
            "introduction" => KeySource::Introduction,
            "transition" => KeySource::Transition,
            other => return Err(StoreError::Corrupt(format!("unknown key source {other:?}"))),
        })
    }
}

/// One identity's key as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct IdentityRecord {
    pub identity_id: String,
    pub account_id: String,
    /// The address in its canonical form (`Address`'s `Display`).
    pub address: String,
    /// Upper-case hex.
    pub fingerprint: String,
    /// The binary public certificate (with revocation signatures once revoked).
    pub public_key: Vec<u8>,
    /// The TSK sealed with the carrier secret; `None` for client custody and once revoked.
    pub sealed_secret: Option<Vec<u8>>,
    pub custody: Custody,
    /// Carrier onion hosts the identity asks correspondents to use.
    pub preferred_carriers: Vec<String>,
    /// The same list signed by the identity's key (`carrier_list`), as it is published.
    pub carrier_list: Option<Vec<u8>>,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    /// The revocation certificate handed out at revocation, kept so it can be handed out again.
    pub revocation: Option<Vec<u8>>,
}

impl std::fmt::Debug for IdentityRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityRecord")
            .field("identity_id", &self.identity_id)
            .field("fingerprint", &self.fingerprint)
            .field("has_secret", &self.sealed_secret.is_some())
            .field("custody", &self.custody)
            .field("revoked_at_ms", &self.revoked_at_ms)
            .finish_non_exhaustive()
    }
}

/// How an account's address book takes what arrives in mail; the default until set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddressBookPolicy {
    /// Introduced contacts wait for the account's confirmation (held) instead of being pinned.
    pub confirm_introductions: bool,
}

/// A key an identity replaced (RotateIdentityKey), kept sealed until the identity is revoked.
#[derive(Clone)]
pub struct PreviousKey {
    pub identity_id: String,
    /// Upper-case hex.
    pub fingerprint: String,
    /// The TSK sealed with the carrier secret, bound to `fingerprint` as the current key is.
    pub sealed_secret: Vec<u8>,
    pub replaced_at_ms: i64,
}

impl std::fmt::Debug for PreviousKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreviousKey")
            .field("identity_id", &self.identity_id)
            .field("fingerprint", &self.fingerprint)
            .field("replaced_at_ms", &self.replaced_at_ms)
            .finish_non_exhaustive()
    }
}

/// A new key for a pinned contact, waiting for the account's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldKey {
    pub fingerprint: String,
    pub public_key: Vec<u8>,
    pub source: KeySource,
    /// Why it is held, for operators (`not-certified`, `pinned-compromised`).
    pub reason: String,
    pub seen_at_ms: i64,
}

/// Someone who vouched for a contact with a signed introduction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntroducerRecord {
    pub address: String,
    pub fingerprint: String,
    pub introduced_at_ms: i64,
}

/// One address-book entry as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactRecord {
    pub contact_id: String,
    pub account_id: String,
    /// Canonical address (lower case, no subdomain labels).
    pub address: String,
    pub display_name: String,
    /// The pinned key's fingerprint; empty while none is known.
    pub fingerprint: String,
    pub public_key: Option<Vec<u8>>,
    pub key_source: KeySource,
    pub verified: bool,
    pub designated_carriers: Vec<String>,
    /// The carriers the contact itself publishes (its signed carrier list).
    pub preferred_carriers: Vec<String>,
    /// When the contact signed that list (seconds since the epoch); `None` while none is known.
    pub preferred_carriers_signed_at: Option<i64>,
    pub held: Option<HeldKey>,
    /// In the order they were recorded.
    pub introducers: Vec<IntroducerRecord>,
    /// The Date of the newest message whose Autocrypt header was learned (Autocrypt's rule
    /// that older headers never replace newer ones).
    pub autocrypt_date_ms: Option<i64>,
    pub first_seen_at_ms: i64,
    pub last_seen_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    /// The account's identities that have exchanged signed mail with this contact, by identity
    /// id: the peers an identity's revocation is announced to, and no others (announcing it to
    /// a contact of another identity would tell that contact both share an account).
    pub correspondents: Vec<String>,
    /// Identities of the account that received verified mail from this contact without
    /// corresponding with it: contact requests (issue 22), waiting for the account. Their
    /// messages wait in the Requests mailbox.
    pub requests: Vec<String>,
    /// Identities that refused this contact: its mail to them is refused at RCPT.
    pub blocked: Vec<String>,
}

impl ContactRecord {
    /// Records that `identity_id` corresponds with this contact; whether that is new.
    pub fn add_correspondent(&mut self, identity_id: &str) -> bool {
        if identity_id.is_empty() || self.correspondents.iter().any(|known| known == identity_id) {
            return false;
        }
        self.correspondents.push(identity_id.to_owned());
        // Writing to someone, or accepting them, answers their request and lifts a block.
        self.requests.retain(|id| id != identity_id);
        self.blocked.retain(|id| id != identity_id);
        true
    }

    /// A sender known only by its request (or its refusal): no identity corresponds with it,
    /// nobody introduced it, the account did not check it.
    pub fn stranger_only(&self) -> bool {
        self.correspondents.is_empty()
            && self.introducers.is_empty()
            && !self.verified
            && (!self.requests.is_empty() || !self.blocked.is_empty())
    }

    /// Records a contact request to `identity_id`; whether that is new.
    pub fn add_request(&mut self, identity_id: &str) -> bool {
        if identity_id.is_empty() || self.requests.iter().any(|id| id == identity_id) {
            return false;
        }
        self.requests.push(identity_id.to_owned());
        true
    }

    /// Refuses the contact for `identity_id`: its request goes, its mail is refused from now.
    pub fn block(&mut self, identity_id: &str) {
        self.requests.retain(|id| id != identity_id);
        self.correspondents.retain(|id| id != identity_id);
        if !self.blocked.iter().any(|id| id == identity_id) {
            self.blocked.push(identity_id.to_owned());
        }
    }
}

/// Which contacts a page holds.
#[derive(Clone, Debug, Default)]
pub struct ContactFilter {
    /// Case-insensitive substring of address or display name; empty matches all.
    pub query: String,
    pub only_held: bool,
    /// Only contacts with a request waiting.
    pub only_requests: bool,
    /// Leaves out senders that only asked or were refused (see
    /// [`ContactRecord::stranger_only`]): they are not in the address book until accepted.
    pub hide_strangers: bool,
    /// Only addresses after this one (the page token); empty starts at the beginning.
    pub after_address: String,
    pub limit: u32,
}

/// The keys service's storage.
#[async_trait]
pub trait KeysStore: Send + Sync + 'static {
    /// Stores a new identity key; [`StoreError::Duplicate`] when its id or address is taken.
    async fn insert_identity(&self, identity: &IdentityRecord) -> Result<(), StoreError>;

    /// One identity's key, revoked or not.
    async fn identity(&self, identity_id: &str) -> Result<Option<IdentityRecord>, StoreError>;

    /// The identity with this canonical address, revoked or not.
    async fn identity_by_address(
        &self,
        address: &str,
    ) -> Result<Option<IdentityRecord>, StoreError>;

    /// Every identity that is not revoked, by identity id.
    async fn live_identities(&self) -> Result<Vec<IdentityRecord>, StoreError>;

    /// Every identity revoked at or after `since_ms`, by identity id.
    async fn identities_revoked_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<IdentityRecord>, StoreError>;

    /// Writes the mutable columns of an identity (fingerprint and public key, sealed secret,
    /// preferred carriers, revocation). `false` when there is no such identity.
    async fn update_identity(&self, identity: &IdentityRecord) -> Result<bool, StoreError>;

    /// Keeps a key the identity replaced, sealed, to open mail already on its way to it.
    /// Storing the same key again changes nothing.
    async fn add_previous_key(&self, previous: &PreviousKey) -> Result<(), StoreError>;

    /// The keys an identity replaced, oldest first.
    async fn previous_keys(&self, identity_id: &str) -> Result<Vec<PreviousKey>, StoreError>;

    /// Destroys the keys an identity replaced (at revocation), so that none is left in the
    /// database's files; returns how many there were.
    async fn erase_previous_keys(&self, identity_id: &str) -> Result<u64, StoreError>;

    /// Stores a new contact and its introducers; [`StoreError::Duplicate`] when the account
    /// already has a contact with this address.
    async fn insert_contact(&self, contact: &ContactRecord) -> Result<(), StoreError>;

    async fn contact(
        &self,
        account_id: &str,
        contact_id: &str,
    ) -> Result<Option<ContactRecord>, StoreError>;

    async fn contact_by_address(
        &self,
        account_id: &str,
        address: &str,
    ) -> Result<Option<ContactRecord>, StoreError>;

    /// A page of an account's contacts, ordered by address.
    async fn list_contacts(
        &self,
        account_id: &str,
        filter: &ContactFilter,
    ) -> Result<Vec<ContactRecord>, StoreError>;

    /// Replaces a contact's row and its introducers (the address and account stay). `false`
    /// when there is no such contact.
    async fn update_contact(&self, contact: &ContactRecord) -> Result<bool, StoreError>;

    /// Removes a contact and its introducers. `false` when there was none.
    async fn delete_contact(&self, account_id: &str, contact_id: &str) -> Result<bool, StoreError>;

    /// An account's address-book policy (the default when never set).
    async fn address_book_policy(&self, account_id: &str) -> Result<AddressBookPolicy, StoreError>;

    async fn set_address_book_policy(
        &self,
        account_id: &str,
        policy: &AddressBookPolicy,
    ) -> Result<(), StoreError>;

    /// Seals the address-book rows an earlier version kept in the clear and erases them there;
    /// returns how many it moved (0 once done). Run at start, before serving.
    async fn seal_clear_contacts(&self) -> Result<usize, StoreError>;
}

/// The store of an open database; address books are sealed with a key from `secret`.
pub fn for_database(database: Database, secret: &CarrierSecret) -> Arc<dyn KeysStore> {
    let sealer = secret.sealer(sealed::SEAL_PURPOSE);
    match database {
        Database::Sqlite(pool) => Arc::new(SqliteStore::new(pool, sealer)),
        Database::Postgres(pool) => Arc::new(PostgresStore::new(pool, sealer)),
    }
}
