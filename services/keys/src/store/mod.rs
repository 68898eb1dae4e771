//! Where the keys service keeps identity keys and address books.
//!
//! Identity keys are one row per identity, kept after revocation (with the secret key gone) so
//! that a revoked identity id or address never comes back. The secret key arrives here already
//! sealed with the carrier secret: the store never sees key material in the clear.
//!
//! Address books are one row per (account, address) with the pinned key, a key held for the
//! account's decision, where the key came from, the introducers who vouched for it and the
//! designated carriers. Both backends share one implementation (the `store_impl!` macro below),
//! written once with `?` placeholders; the suite in `tests` runs it against SQLite and
//! PostgreSQL through [`onionpost_runtime::conformance::each_backend`].

mod postgres;
mod sqlite;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use async_trait::async_trait;
use onionpost_runtime::{Database, Migrations};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// The migrations of both backends.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &sqlx::migrate!("migrations/sqlite"),
    postgres: &sqlx::migrate!("migrations/postgres"),
};

pub use onionpost_runtime::db::StoreError;

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

    fn parse(text: &str) -> Result<Self, StoreError> {
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
}

impl KeySource {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::Manual => "manual",
            KeySource::Qr => "qr",
            KeySource::Wkd => "wkd",
            KeySource::Autocrypt => "autocrypt",
            KeySource::Introduction => "introduction",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "manual" => KeySource::Manual,
            "qr" => KeySource::Qr,
            "wkd" => KeySource::Wkd,
            "autocrypt" => KeySource::Autocrypt,
            "introduction" => KeySource::Introduction,
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
}

/// Which contacts a page holds.
#[derive(Clone, Debug, Default)]
pub struct ContactFilter {
    /// Case-insensitive substring of address or display name; empty matches all.
    pub query: String,
    pub only_held: bool,
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

    /// Writes the mutable columns of an identity (public key, sealed secret, preferred
    /// carriers, revocation). `false` when there is no such identity.
    async fn update_identity(&self, identity: &IdentityRecord) -> Result<bool, StoreError>;

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
}

/// The store for an opened database.
pub fn for_database(database: Database) -> Arc<dyn KeysStore> {
    match database {
        Database::Sqlite(pool) => Arc::new(SqliteStore::new(pool)),
        Database::Postgres(pool) => Arc::new(PostgresStore::new(pool)),
    }
}

/// Lists as stored: `a.onion,b.onion` (onion hosts never hold a comma).
fn join_list(items: &[String]) -> String {
    items.join(",")
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A LIKE pattern matching `query` anywhere, with `\` as the escape character.
fn like_pattern(query: &str) -> String {
    let mut pattern = String::with_capacity(query.len() + 2);
    pattern.push('%');
    for c in query.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Rewrites `?` placeholders as `$1, $2, …` for PostgreSQL. The SQL here holds no `?` inside
/// string literals.
fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut next = 1;
    for c in sql.chars() {
        if c == '?' {
            out.push_str(&format!("${next}"));
            next += 1;
        } else {
            out.push(c);
        }
    }
    out
}

const IDENTITY_COLUMNS: &str = "identity_id, account_id, address, fingerprint, public_key, \
     sealed_secret, custody, preferred_carriers, carrier_list, created_at_ms, revoked_at_ms, \
     revocation";

const CONTACT_COLUMNS: &str = "contact_id, account_id, address, display_name, fingerprint, \
     public_key, key_source, verified, designated_carriers, preferred_carriers, held_fingerprint, \
     held_public_key, held_source, held_reason, held_seen_at_ms, autocrypt_date_ms, \
     first_seen_at_ms, last_seen_at_ms, revoked_at_ms, preferred_carriers_signed_at";

/// The one implementation of [`KeysStore`], expanded for each backend's pool and row types.
/// `$sql` turns the `?`-placeholder SQL into the backend's dialect. `$scrub_sqlite` says to
/// overwrite a destroyed secret key in SQLite's files (`secure_delete`, then a WAL checkpoint),
/// so that after revocation the sealed key is in none of them.
macro_rules! store_impl {
    ($store:ident, $pool:ty, $row:ty, $sql:expr, $scrub_sqlite:expr) => {
        use async_trait::async_trait;
        use sqlx::Row as _;

        use super::{
            CONTACT_COLUMNS, ContactFilter, ContactRecord, Custody, HeldKey, IDENTITY_COLUMNS,
            IdentityRecord, IntroducerRecord, KeySource, KeysStore, StoreError, join_list,
            like_pattern, split_list,
        };

        /// The keys store on this backend.
        #[derive(Clone, Debug)]
        pub struct $store {
            pool: $pool,
        }

        impl $store {
            pub fn new(pool: $pool) -> Self {
                Self { pool }
            }

            fn sql(text: &str) -> String {
                ($sql)(text)
            }

            fn identity_from_row(row: &$row) -> Result<IdentityRecord, StoreError> {
                Ok(IdentityRecord {
                    identity_id: row.try_get("identity_id")?,
                    account_id: row.try_get("account_id")?,
                    address: row.try_get("address")?,
                    fingerprint: row.try_get("fingerprint")?,
                    public_key: row.try_get("public_key")?,
                    sealed_secret: row.try_get("sealed_secret")?,
                    custody: Custody::parse(&row.try_get::<String, _>("custody")?)?,
                    preferred_carriers: split_list(
                        &row.try_get::<String, _>("preferred_carriers")?,
                    ),
                    carrier_list: row.try_get("carrier_list")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    revoked_at_ms: row.try_get("revoked_at_ms")?,
                    revocation: row.try_get("revocation")?,
                })
            }

            fn contact_from_row(row: &$row) -> Result<ContactRecord, StoreError> {
                let held_fingerprint: Option<String> = row.try_get("held_fingerprint")?;
                let held = match held_fingerprint {
                    None => None,
                    Some(fingerprint) => Some(HeldKey {
                        fingerprint,
                        public_key: row
                            .try_get::<Option<Vec<u8>>, _>("held_public_key")?
                            .unwrap_or_default(),
                        source: KeySource::parse(
                            &row.try_get::<Option<String>, _>("held_source")?
                                .unwrap_or_default(),
                        )?,
                        reason: row
                            .try_get::<Option<String>, _>("held_reason")?
                            .unwrap_or_default(),
                        seen_at_ms: row
                            .try_get::<Option<i64>, _>("held_seen_at_ms")?
                            .unwrap_or_default(),
                    }),
                };
                Ok(ContactRecord {
                    contact_id: row.try_get("contact_id")?,
                    account_id: row.try_get("account_id")?,
                    address: row.try_get("address")?,
                    display_name: row.try_get("display_name")?,
                    fingerprint: row.try_get("fingerprint")?,
                    public_key: row.try_get("public_key")?,
                    key_source: KeySource::parse(&row.try_get::<String, _>("key_source")?)?,
                    verified: row.try_get("verified")?,
                    designated_carriers: split_list(
                        &row.try_get::<String, _>("designated_carriers")?,
                    ),
                    preferred_carriers: split_list(
                        &row.try_get::<String, _>("preferred_carriers")?,
                    ),
                    preferred_carriers_signed_at: row.try_get("preferred_carriers_signed_at")?,
                    held,
                    introducers: Vec::new(),
                    autocrypt_date_ms: row.try_get("autocrypt_date_ms")?,
                    first_seen_at_ms: row.try_get("first_seen_at_ms")?,
                    last_seen_at_ms: row.try_get("last_seen_at_ms")?,
                    revoked_at_ms: row.try_get("revoked_at_ms")?,
                })
            }

            async fn with_introducers(
                &self,
                mut contact: ContactRecord,
            ) -> Result<ContactRecord, StoreError> {
                let rows = sqlx::query(&Self::sql(
                    "SELECT address, fingerprint, introduced_at_ms FROM contact_introducers \
                     WHERE contact_id = ? ORDER BY introduced_at_ms, fingerprint",
                ))
                .bind(&contact.contact_id)
                .fetch_all(&self.pool)
                .await?;
                contact.introducers = rows
                    .iter()
                    .map(|row| {
                        Ok(IntroducerRecord {
                            address: row.try_get("address")?,
                            fingerprint: row.try_get("fingerprint")?,
                            introduced_at_ms: row.try_get("introduced_at_ms")?,
                        })
                    })
                    .collect::<Result<_, StoreError>>()?;
                Ok(contact)
            }

            async fn one_contact(
                &self,
                row: Option<$row>,
            ) -> Result<Option<ContactRecord>, StoreError> {
                match row {
                    None => Ok(None),
                    Some(row) => Ok(Some(
                        self.with_introducers(Self::contact_from_row(&row)?).await?,
                    )),
                }
            }
        }

        #[async_trait]
        impl KeysStore for $store {
            async fn insert_identity(&self, identity: &IdentityRecord) -> Result<(), StoreError> {
                let sql = format!(
                    "INSERT INTO identity_keys ({IDENTITY_COLUMNS}) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                );
                sqlx::query(&Self::sql(&sql))
                    .bind(&identity.identity_id)
                    .bind(&identity.account_id)
                    .bind(&identity.address)
                    .bind(&identity.fingerprint)
                    .bind(&identity.public_key)
                    .bind(&identity.sealed_secret)
                    .bind(identity.custody.as_str())
                    .bind(join_list(&identity.preferred_carriers))
                    .bind(&identity.carrier_list)
                    .bind(identity.created_at_ms)
                    .bind(identity.revoked_at_ms)
                    .bind(&identity.revocation)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn identity(
                &self,
                identity_id: &str,
            ) -> Result<Option<IdentityRecord>, StoreError> {
                let sql =
                    format!("SELECT {IDENTITY_COLUMNS} FROM identity_keys WHERE identity_id = ?");
                let row = sqlx::query(&Self::sql(&sql))
                    .bind(identity_id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::identity_from_row).transpose()
            }

            async fn identity_by_address(
                &self,
                address: &str,
            ) -> Result<Option<IdentityRecord>, StoreError> {
                let sql = format!("SELECT {IDENTITY_COLUMNS} FROM identity_keys WHERE address = ?");
                let row = sqlx::query(&Self::sql(&sql))
                    .bind(address)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::identity_from_row).transpose()
            }

            async fn live_identities(&self) -> Result<Vec<IdentityRecord>, StoreError> {
                let sql = format!(
                    "SELECT {IDENTITY_COLUMNS} FROM identity_keys \
                     WHERE revoked_at_ms IS NULL ORDER BY identity_id"
                );
                let rows = sqlx::query(&Self::sql(&sql))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::identity_from_row).collect()
            }

            async fn update_identity(&self, identity: &IdentityRecord) -> Result<bool, StoreError> {
                let scrub = $scrub_sqlite && identity.sealed_secret.is_none();
                let mut connection = self.pool.acquire().await?;
                if scrub {
                    sqlx::query("PRAGMA secure_delete = ON")
                        .execute(&mut *connection)
                        .await?;
                }
                let result = sqlx::query(&Self::sql(
                    "UPDATE identity_keys SET public_key = ?, sealed_secret = ?, \
                     preferred_carriers = ?, carrier_list = ?, revoked_at_ms = ?, revocation = ? \
                     WHERE identity_id = ?",
                ))
                .bind(&identity.public_key)
                .bind(&identity.sealed_secret)
                .bind(join_list(&identity.preferred_carriers))
                .bind(&identity.carrier_list)
                .bind(identity.revoked_at_ms)
                .bind(&identity.revocation)
                .bind(&identity.identity_id)
                .execute(&mut *connection)
                .await?;
                if scrub {
                    // The WAL still holds the page as it was; copy the new page back into the
                    // main file and empty the WAL.
                    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                        .execute(&mut *connection)
                        .await?;
                }
                Ok(result.rows_affected() == 1)
            }

            async fn insert_contact(&self, contact: &ContactRecord) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                let sql = format!(
                    "INSERT INTO contacts ({CONTACT_COLUMNS}) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                );
                let held = contact.held.as_ref();
                sqlx::query(&Self::sql(&sql))
                    .bind(&contact.contact_id)
                    .bind(&contact.account_id)
                    .bind(&contact.address)
                    .bind(&contact.display_name)
                    .bind(&contact.fingerprint)
                    .bind(&contact.public_key)
                    .bind(contact.key_source.as_str())
                    .bind(contact.verified)
                    .bind(join_list(&contact.designated_carriers))
                    .bind(join_list(&contact.preferred_carriers))
                    .bind(held.map(|held| held.fingerprint.clone()))
                    .bind(held.map(|held| held.public_key.clone()))
                    .bind(held.map(|held| held.source.as_str()))
                    .bind(held.map(|held| held.reason.clone()))
                    .bind(held.map(|held| held.seen_at_ms))
                    .bind(contact.autocrypt_date_ms)
                    .bind(contact.first_seen_at_ms)
                    .bind(contact.last_seen_at_ms)
                    .bind(contact.revoked_at_ms)
                    .bind(contact.preferred_carriers_signed_at)
                    .execute(&mut *tx)
                    .await?;
                for introducer in &contact.introducers {
                    sqlx::query(&Self::sql(
                        "INSERT INTO contact_introducers \
                         (contact_id, address, fingerprint, introduced_at_ms) VALUES (?, ?, ?, ?)",
                    ))
                    .bind(&contact.contact_id)
                    .bind(&introducer.address)
                    .bind(&introducer.fingerprint)
                    .bind(introducer.introduced_at_ms)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn contact(
                &self,
                account_id: &str,
                contact_id: &str,
            ) -> Result<Option<ContactRecord>, StoreError> {
                let sql = format!(
                    "SELECT {CONTACT_COLUMNS} FROM contacts WHERE account_id = ? AND contact_id = ?"
                );
                let row = sqlx::query(&Self::sql(&sql))
                    .bind(account_id)
                    .bind(contact_id)
                    .fetch_optional(&self.pool)
                    .await?;
                self.one_contact(row).await
            }

            async fn contact_by_address(
                &self,
                account_id: &str,
                address: &str,
            ) -> Result<Option<ContactRecord>, StoreError> {
                let sql = format!(
                    "SELECT {CONTACT_COLUMNS} FROM contacts WHERE account_id = ? AND address = ?"
                );
                let row = sqlx::query(&Self::sql(&sql))
                    .bind(account_id)
                    .bind(address)
                    .fetch_optional(&self.pool)
                    .await?;
                self.one_contact(row).await
            }

            async fn list_contacts(
                &self,
                account_id: &str,
                filter: &ContactFilter,
            ) -> Result<Vec<ContactRecord>, StoreError> {
                let held_clause = if filter.only_held {
                    " AND held_fingerprint IS NOT NULL"
                } else {
                    ""
                };
                let sql = format!(
                    "SELECT {CONTACT_COLUMNS} FROM contacts WHERE account_id = ? AND address > ? \
                     AND (LOWER(address) LIKE ? ESCAPE '\\' OR LOWER(display_name) LIKE ? ESCAPE '\\')\
                     {held_clause} ORDER BY address LIMIT ?"
                );
                let pattern = like_pattern(&filter.query);
                let rows = sqlx::query(&Self::sql(&sql))
                    .bind(account_id)
                    .bind(&filter.after_address)
                    .bind(&pattern)
                    .bind(&pattern)
                    .bind(i64::from(filter.limit))
                    .fetch_all(&self.pool)
                    .await?;
                let mut contacts = Vec::with_capacity(rows.len());
                for row in &rows {
                    contacts.push(self.with_introducers(Self::contact_from_row(row)?).await?);
                }
                Ok(contacts)
            }

            async fn update_contact(&self, contact: &ContactRecord) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                let held = contact.held.as_ref();
                let result = sqlx::query(&Self::sql(
                    "UPDATE contacts SET display_name = ?, fingerprint = ?, public_key = ?, \
                     key_source = ?, verified = ?, designated_carriers = ?, preferred_carriers = ?, \
                     held_fingerprint = ?, held_public_key = ?, held_source = ?, held_reason = ?, \
                     held_seen_at_ms = ?, autocrypt_date_ms = ?, first_seen_at_ms = ?, \
                     last_seen_at_ms = ?, revoked_at_ms = ?, preferred_carriers_signed_at = ? \
                     WHERE account_id = ? AND contact_id = ?",
                ))
                .bind(&contact.display_name)
                .bind(&contact.fingerprint)
                .bind(&contact.public_key)
                .bind(contact.key_source.as_str())
                .bind(contact.verified)
                .bind(join_list(&contact.designated_carriers))
                .bind(join_list(&contact.preferred_carriers))
                .bind(held.map(|held| held.fingerprint.clone()))
                .bind(held.map(|held| held.public_key.clone()))
                .bind(held.map(|held| held.source.as_str()))
                .bind(held.map(|held| held.reason.clone()))
                .bind(held.map(|held| held.seen_at_ms))
                .bind(contact.autocrypt_date_ms)
                .bind(contact.first_seen_at_ms)
                .bind(contact.last_seen_at_ms)
                .bind(contact.revoked_at_ms)
                .bind(contact.preferred_carriers_signed_at)
                .bind(&contact.account_id)
                .bind(&contact.contact_id)
                .execute(&mut *tx)
                .await?;
                if result.rows_affected() != 1 {
                    return Ok(false);
                }
                sqlx::query(&Self::sql(
                    "DELETE FROM contact_introducers WHERE contact_id = ?",
                ))
                .bind(&contact.contact_id)
                .execute(&mut *tx)
                .await?;
                for introducer in &contact.introducers {
                    sqlx::query(&Self::sql(
                        "INSERT INTO contact_introducers \
                         (contact_id, address, fingerprint, introduced_at_ms) VALUES (?, ?, ?, ?)",
                    ))
                    .bind(&contact.contact_id)
                    .bind(&introducer.address)
                    .bind(&introducer.fingerprint)
                    .bind(introducer.introduced_at_ms)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn delete_contact(
                &self,
                account_id: &str,
                contact_id: &str,
            ) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                let owned = sqlx::query(&Self::sql(
                    "SELECT contact_id FROM contacts WHERE account_id = ? AND contact_id = ?",
                ))
                .bind(account_id)
                .bind(contact_id)
                .fetch_optional(&mut *tx)
                .await?;
                if owned.is_none() {
                    return Ok(false);
                }
                sqlx::query(&Self::sql(
                    "DELETE FROM contact_introducers WHERE contact_id = ?",
                ))
                .bind(contact_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(&Self::sql("DELETE FROM contacts WHERE contact_id = ?"))
                    .bind(contact_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(true)
            }
        }
    };
}
use store_impl;
