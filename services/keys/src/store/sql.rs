//! The SQL of [`super::KeysStore`], written once for both backends in the dialect of
//! [`onionpost_runtime::sql`]; `sqlite.rs` and `postgres.rs` expand it. Lists (carriers) are
//! stored as [`onionpost_runtime::sql::join_list`] text. Address-book entries are sealed
//! ([`super::sealed`]): the store filters and orders an account's entries after opening them.

pub(super) const IDENTITY_COLUMNS: &str = "identity_id, account_id, address, fingerprint, \
     public_key, sealed_secret, custody, preferred_carriers, carrier_list, created_at_ms, revoked_at_ms, \
     revocation";

/// The columns of `contacts`, where earlier versions kept address books in the clear.
pub(super) const CONTACT_COLUMNS: &str = "contact_id, account_id, address, display_name, \
     fingerprint, public_key, key_source, verified, designated_carriers, preferred_carriers, held_fingerprint, \
     held_public_key, held_source, held_reason, held_seen_at_ms, autocrypt_date_ms, \
     first_seen_at_ms, last_seen_at_ms, revoked_at_ms, preferred_carriers_signed_at";

/// Implements [`super::KeysStore`] on the backend `$db` as the type `$store`. A destroyed secret
/// key is erased from the database's files ([`onionpost_runtime::sql::Dialect::execute_erasing`]),
/// so that after revocation the sealed key is in none of them; so are address-book rows of
/// earlier versions once sealed.
macro_rules! store_impl {
    ($store:ident, $db:ty) => {
        use async_trait::async_trait;
        use onionpost_runtime::seal::Sealer;
        use onionpost_runtime::sql::{Dialect, join_list, split_list};
        use sqlx::Row as _;

        use super::sealed;
        use super::sql::{CONTACT_COLUMNS, IDENTITY_COLUMNS};
        use super::{
            AddressBookPolicy, ContactFilter, ContactRecord, Custody, HeldKey, IdentityRecord, IntroducerRecord,
            KeySource, KeysStore, PreviousKey, StoreError,
        };

        onionpost_runtime::sql_store!($store, $db, { sealer: Sealer });

        impl $store {

            fn identity_from_row(row: &Row) -> Result<IdentityRecord, StoreError> {
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

            fn contact_from_row(row: &Row) -> Result<ContactRecord, StoreError> {
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
                    correspondents: Vec::new(),
                    requests: Vec::new(),
                    blocked: Vec::new(),
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

            async fn identity_where(
                &self,
                column: &str,
                value: &str,
            ) -> Result<Option<IdentityRecord>, StoreError> {
                let sql =
                    format!("SELECT {IDENTITY_COLUMNS} FROM identity_keys WHERE {column} = ?");
                let row = sqlx::query(&Self::sql(&sql))
                    .bind(value)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::identity_from_row).transpose()
            }

            /// The account's entry whose `column` is `value`, opened.
            async fn entry_where(
                &self,
                account_id: &str,
                column: &str,
                value: &str,
            ) -> Result<Option<ContactRecord>, StoreError> {
                let sql = format!(
                    "SELECT contact_id, sealed FROM address_book \
                     WHERE account_id = ? AND {column} = ?"
                );
                let row = sqlx::query(&Self::sql(&sql))
                    .bind(account_id)
                    .bind(value)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref()
                    .map(|row| self.open_row(account_id, row))
                    .transpose()
            }

            fn open_row(&self, account_id: &str, row: &Row) -> Result<ContactRecord, StoreError> {
                let contact_id: String = row.try_get("contact_id")?;
                let sealed: Vec<u8> = row.try_get("sealed")?;
                sealed::open(&self.sealer, account_id, &contact_id, &sealed)
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
                self.identity_where("identity_id", identity_id).await
            }

            async fn identity_by_address(
                &self,
                address: &str,
            ) -> Result<Option<IdentityRecord>, StoreError> {
                self.identity_where("address", address).await
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

            async fn identities_revoked_since(
                &self,
                since_ms: i64,
            ) -> Result<Vec<IdentityRecord>, StoreError> {
                let sql = format!(
                    "SELECT {IDENTITY_COLUMNS} FROM identity_keys \
                     WHERE revoked_at_ms >= ? ORDER BY identity_id"
                );
                let rows = sqlx::query(&Self::sql(&sql))
                    .bind(since_ms)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::identity_from_row).collect()
            }

            async fn update_identity(&self, identity: &IdentityRecord) -> Result<bool, StoreError> {
                let sql = Self::sql(
                    "UPDATE identity_keys SET fingerprint = ?, public_key = ?, sealed_secret = ?, \
                     preferred_carriers = ?, carrier_list = ?, revoked_at_ms = ?, revocation = ? \
                     WHERE identity_id = ?",
                );
                let statement = sqlx::query(&sql)
                    .bind(&identity.fingerprint)
                    .bind(&identity.public_key)
                    .bind(&identity.sealed_secret)
                    .bind(join_list(&identity.preferred_carriers))
                    .bind(&identity.carrier_list)
                    .bind(identity.revoked_at_ms)
                    .bind(&identity.revocation)
                    .bind(&identity.identity_id);
                // Without a sealed secret the update may be the one that destroys it.
                let updated = if identity.sealed_secret.is_none() {
                    <$db as Dialect>::execute_erasing(&self.pool, statement).await?
                } else {
                    statement.execute(&self.pool).await?.rows_affected()
                };
                Ok(updated == 1)
            }

            async fn address_book_policy(
                &self,
                account_id: &str,
            ) -> Result<AddressBookPolicy, StoreError> {
                let row = sqlx::query(&Self::sql(
                    "SELECT confirm_introductions FROM address_book_policies WHERE account_id = ?",
                ))
                .bind(account_id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(match row {
                    Some(row) => AddressBookPolicy {
                        confirm_introductions: row.try_get::<i32, _>("confirm_introductions")? != 0,
                    },
                    None => AddressBookPolicy::default(),
                })
            }

            async fn set_address_book_policy(
                &self,
                account_id: &str,
                policy: &AddressBookPolicy,
            ) -> Result<(), StoreError> {
                sqlx::query(&Self::sql(
                    "INSERT INTO address_book_policies (account_id, confirm_introductions) \
                     VALUES (?, ?) ON CONFLICT (account_id) \
                     DO UPDATE SET confirm_introductions = excluded.confirm_introductions",
                ))
                .bind(account_id)
                .bind(i32::from(policy.confirm_introductions))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn add_previous_key(&self, previous: &PreviousKey) -> Result<(), StoreError> {
                sqlx::query(&Self::sql(
                    "INSERT INTO previous_identity_keys \
                     (identity_id, fingerprint, sealed_secret, replaced_at_ms) VALUES (?, ?, ?, ?) \
                     ON CONFLICT (identity_id, fingerprint) DO NOTHING",
                ))
                .bind(&previous.identity_id)
                .bind(&previous.fingerprint)
                .bind(&previous.sealed_secret)
                .bind(previous.replaced_at_ms)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn previous_keys(
                &self,
                identity_id: &str,
            ) -> Result<Vec<PreviousKey>, StoreError> {
                let rows = sqlx::query(&Self::sql(
                    "SELECT identity_id, fingerprint, sealed_secret, replaced_at_ms \
                     FROM previous_identity_keys WHERE identity_id = ? \
                     ORDER BY replaced_at_ms, fingerprint",
                ))
                .bind(identity_id)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(PreviousKey {
                            identity_id: row.try_get("identity_id")?,
                            fingerprint: row.try_get("fingerprint")?,
                            sealed_secret: row.try_get("sealed_secret")?,
                            replaced_at_ms: row.try_get("replaced_at_ms")?,
                        })
                    })
                    .collect()
            }

            async fn erase_previous_keys(&self, identity_id: &str) -> Result<u64, StoreError> {
                let sql = Self::sql("DELETE FROM previous_identity_keys WHERE identity_id = ?");
                let statement = sqlx::query(&sql).bind(identity_id);
                Ok(<$db as Dialect>::execute_erasing(&self.pool, statement).await?)
            }

            async fn insert_contact(&self, contact: &ContactRecord) -> Result<(), StoreError> {
                sqlx::query(&Self::sql(
                    "INSERT INTO address_book (contact_id, account_id, address_key, sealed) \
                     VALUES (?, ?, ?, ?)",
                ))
                .bind(&contact.contact_id)
                .bind(&contact.account_id)
                .bind(sealed::address_key(
                    &self.sealer,
                    &contact.account_id,
                    &contact.address,
                ))
                .bind(sealed::seal(&self.sealer, contact))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn contact(
                &self,
                account_id: &str,
                contact_id: &str,
            ) -> Result<Option<ContactRecord>, StoreError> {
                self.entry_where(account_id, "contact_id", contact_id).await
            }

            async fn contact_by_address(
                &self,
                account_id: &str,
                address: &str,
            ) -> Result<Option<ContactRecord>, StoreError> {
                let key = sealed::address_key(&self.sealer, account_id, address);
                self.entry_where(account_id, "address_key", &key).await
            }

            async fn list_contacts(
                &self,
                account_id: &str,
                filter: &ContactFilter,
            ) -> Result<Vec<ContactRecord>, StoreError> {
                // Sealed entries cannot be ordered or searched in SQL: open the account's
                // address book (hundreds of entries, rarely thousands) and page it here.
                let rows = sqlx::query(&Self::sql(
                    "SELECT contact_id, sealed FROM address_book WHERE account_id = ?",
                ))
                .bind(account_id)
                .fetch_all(&self.pool)
                .await?;
                let mut contacts = Vec::new();
                for row in &rows {
                    let contact = self.open_row(account_id, row)?;
                    if contact.address.as_str() > filter.after_address.as_str()
                        && sealed::matches(&contact, filter)
                    {
                        contacts.push(contact);
                    }
                }
                contacts.sort_by(|a, b| a.address.cmp(&b.address));
                contacts.truncate(usize::try_from(filter.limit).unwrap_or(usize::MAX));
                Ok(contacts)
            }

            async fn update_contact(&self, contact: &ContactRecord) -> Result<bool, StoreError> {
                let updated = sqlx::query(&Self::sql(
                    "UPDATE address_book SET sealed = ? WHERE account_id = ? AND contact_id = ?",
                ))
                .bind(sealed::seal(&self.sealer, contact))
                .bind(&contact.account_id)
                .bind(&contact.contact_id)
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(updated == 1)
            }

            async fn delete_contact(
                &self,
                account_id: &str,
                contact_id: &str,
            ) -> Result<bool, StoreError> {
                let deleted = sqlx::query(&Self::sql(
                    "DELETE FROM address_book WHERE account_id = ? AND contact_id = ?",
                ))
                .bind(account_id)
                .bind(contact_id)
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(deleted == 1)
            }

            async fn seal_clear_contacts(&self) -> Result<usize, StoreError> {
                let sql = format!("SELECT {CONTACT_COLUMNS} FROM contacts ORDER BY contact_id");
                let rows = sqlx::query(&Self::sql(&sql)).fetch_all(&self.pool).await?;
                for row in &rows {
                    let contact = self.with_introducers(Self::contact_from_row(row)?).await?;
                    match self.insert_contact(&contact).await {
                        // Sealed by an earlier start that stopped before erasing the clear row.
                        Ok(()) | Err(StoreError::Duplicate) => {}
                        Err(error) => return Err(error),
                    }
                    for table in ["contact_introducers", "contacts"] {
                        let sql = Self::sql(&format!("DELETE FROM {table} WHERE contact_id = ?"));
                        let statement = sqlx::query(&sql).bind(&contact.contact_id);
                        <$db as Dialect>::execute_erasing(&self.pool, statement).await?;
                    }
                }
                Ok(rows.len())
            }
        }
    };
}
pub(super) use store_impl;
