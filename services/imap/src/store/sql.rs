//! The SQL of [`super::ImapStore`], written once for both backends in the dialect of
//! [`onionpost_runtime::sql`]; `sqlite.rs` and `postgres.rs` expand it.

/// Implements [`super::ImapStore`] on the backend `$db` as the type `$store`.
macro_rules! store_impl {
    ($store:ident, $db:ty) => {
        use std::collections::HashSet;

        use async_trait::async_trait;
        use sqlx::Row as _;

        use super::{
            AccountRecord, AddIdentityOutcome, AppPasswordRecord, AppendOutcome, CopyOutcome, DeleteOutcome,
            IdentityRecord, ImapStore, MailboxOutcome, MailboxRecord, MailboxRef, MessageRecord,
            NewAccount, NewBlob, NewMailbox, PlanRecord, RedeemOutcome, StoreError, VoucherBatch,
            apply_flags, has_flag, renamed,
        };
        use crate::mailstore::FlagOperation;

        type Tx = sqlx::Transaction<'static, $db>;

        const PLAN_COLUMNS: &str = "plan_id, name, quota_bytes, identities_allowed, \
             gateway_allowed, gateway_daily_limit";
        const ACCOUNT_SELECT: &str = "SELECT a.account_id, a.login, a.password_hash, \
             a.sealed_key, a.paid_until_ms, a.suspended, a.created_at_ms, a.used_bytes, \
             a.message_count, a.identity_count, p.plan_id, p.name, p.quota_bytes, \
             p.identities_allowed, p.gateway_allowed, p.gateway_daily_limit \
             FROM accounts a JOIN plans p ON p.plan_id = a.plan_id";
        const MAILBOX_COLUMNS: &str =
            "mailbox_id, name, special_use, uid_validity, uid_next, version, subscribed";
        const IDENTITY_COLUMNS: &str =
            "identity_id, account_id, address, onion, display_name, created_at_ms";
        /// Most placeholders in one `IN (…)` list.
        const IN_CHUNK: usize = 500;

        onionpost_runtime::sql_store!($store, $db);

        impl $store {
            fn u32_of(value: i64) -> Result<u32, StoreError> {
                u32::try_from(value)
                    .map_err(|_| StoreError::Corrupt(format!("{value} is not a 32-bit value")))
            }

            fn plan_from_row(row: &Row) -> Result<PlanRecord, StoreError> {
                Ok(PlanRecord {
                    plan_id: row.try_get("plan_id")?,
                    name: row.try_get("name")?,
                    quota_bytes: row.try_get("quota_bytes")?,
                    identities_allowed: row.try_get("identities_allowed")?,
                    gateway_allowed: row.try_get::<i64, _>("gateway_allowed")? != 0,
                    gateway_daily_limit: row.try_get("gateway_daily_limit")?,
                })
            }

            fn account_from_row(row: &Row) -> Result<AccountRecord, StoreError> {
                Ok(AccountRecord {
                    account_id: row.try_get("account_id")?,
                    login: row.try_get("login")?,
                    password_hash: row.try_get("password_hash")?,
                    sealed_key: row.try_get("sealed_key")?,
                    plan: Self::plan_from_row(row)?,
                    paid_until_ms: row.try_get("paid_until_ms")?,
                    suspended: row.try_get::<i64, _>("suspended")? != 0,
                    created_at_ms: row.try_get("created_at_ms")?,
                    used_bytes: row.try_get("used_bytes")?,
                    message_count: row.try_get("message_count")?,
                    identity_count: row.try_get("identity_count")?,
                })
            }

            fn mailbox_from_row(row: &Row) -> Result<MailboxRecord, StoreError> {
                Ok(MailboxRecord {
                    mailbox_id: row.try_get("mailbox_id")?,
                    name: row.try_get("name")?,
                    special_use: row.try_get("special_use")?,
                    uid_validity: Self::u32_of(row.try_get("uid_validity")?)?,
                    uid_next: Self::u32_of(row.try_get("uid_next")?)?,
                    version: u64::try_from(row.try_get::<i64, _>("version")?).unwrap_or(0),
                    subscribed: row.try_get::<i64, _>("subscribed")? != 0,
                })
            }

            fn identity_from_row(row: &Row) -> Result<IdentityRecord, StoreError> {
                Ok(IdentityRecord {
                    identity_id: row.try_get("identity_id")?,
                    account_id: row.try_get("account_id")?,
                    address: row.try_get("address")?,
                    onion: row.try_get("onion")?,
                    display_name: row.try_get("display_name")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                })
            }

            fn message_from_row(row: &Row) -> Result<MessageRecord, StoreError> {
                Ok(MessageRecord {
                    uid: Self::u32_of(row.try_get("uid")?)?,
                    blob_id: row.try_get("blob_id")?,
                    flags: row.try_get("flags")?,
                    internal_date_ms: row.try_get("internal_date_ms")?,
                    size: row.try_get("size")?,
                })
            }

            /// The identity `condition` (with one `?`, bound to `value`) selects.
            async fn identity_where(
                &self,
                condition: &str,
                value: &str,
            ) -> Result<Option<IdentityRecord>, StoreError> {
                let row = sqlx::query(&Self::sql(&format!(
                    "SELECT {IDENTITY_COLUMNS} FROM identities WHERE {condition}"
                )))
                .bind(value)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::identity_from_row).transpose()
            }

            /// Takes the account's write lock (see the module comment); false when there is no
            /// such account.
            async fn lock(tx: &mut Tx, account_id: &str) -> Result<bool, StoreError> {
                let done = sqlx::query(&Self::sql(
                    "UPDATE accounts SET write_seq = write_seq + 1 WHERE account_id = ?",
                ))
                .bind(account_id)
                .execute(&mut **tx)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn mailbox_in_tx(
                tx: &mut Tx,
                account_id: &str,
                mailbox: &MailboxRef,
            ) -> Result<Option<MailboxRecord>, StoreError> {
                let (column, value) = match mailbox {
                    MailboxRef::Name(name) => ("name", name.as_str()),
                    MailboxRef::Role(role) => ("special_use", *role),
                };
                let row = sqlx::query(&Self::sql(&format!(
                    "SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE account_id = ? AND {column} = ? \
                     ORDER BY mailbox_id LIMIT 1"
                )))
                .bind(account_id)
                .bind(value)
                .fetch_optional(&mut **tx)
                .await?;
                row.as_ref().map(Self::mailbox_from_row).transpose()
            }

            async fn mailbox_id_in_tx(
                tx: &mut Tx,
                account_id: &str,
                mailbox_id: i64,
            ) -> Result<Option<MailboxRecord>, StoreError> {
                let row = sqlx::query(&Self::sql(&format!(
                    "SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE account_id = ? AND mailbox_id = ?"
                )))
                .bind(account_id)
                .bind(mailbox_id)
                .fetch_optional(&mut **tx)
                .await?;
                row.as_ref().map(Self::mailbox_from_row).transpose()
            }

            async fn messages_in_tx(
                tx: &mut Tx,
                mailbox_id: i64,
            ) -> Result<Vec<MessageRecord>, StoreError> {
                let rows = sqlx::query(&Self::sql(
                    "SELECT uid, blob_id, flags, internal_date_ms, size FROM messages \
                     WHERE mailbox_id = ? ORDER BY uid",
                ))
                .bind(mailbox_id)
                .fetch_all(&mut **tx)
                .await?;
                rows.iter().map(Self::message_from_row).collect()
            }

            async fn used_bytes(tx: &mut Tx, account_id: &str) -> Result<i64, StoreError> {
                let row =
                    sqlx::query(&Self::sql("SELECT used_bytes FROM accounts WHERE account_id = ?"))
                        .bind(account_id)
                        .fetch_one(&mut **tx)
                        .await?;
                Ok(row.try_get("used_bytes")?)
            }

            async fn add_usage(
                tx: &mut Tx,
                account_id: &str,
                bytes: i64,
                messages: i64,
            ) -> Result<(), StoreError> {
                sqlx::query(&Self::sql(
                    "UPDATE accounts SET used_bytes = used_bytes + ?, \
                     message_count = message_count + ? WHERE account_id = ?",
                ))
                .bind(bytes)
                .bind(messages)
                .bind(account_id)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            async fn bump_version(tx: &mut Tx, mailbox_id: i64) -> Result<(), StoreError> {
                sqlx::query(&Self::sql(
                    "UPDATE mailboxes SET version = version + 1 WHERE mailbox_id = ?",
                ))
                .bind(mailbox_id)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            /// Marks the voucher spent by `account_id` inside `tx`: its plan and days, or why
            /// not. The caller commits only when it has them.
            async fn take_voucher(
                tx: &mut Tx,
                account_id: &str,
                code_hash: &[u8],
                now_ms: i64,
            ) -> Result<Result<(String, i64), RedeemOutcome>, StoreError> {
                let Some(voucher) = sqlx::query(&Self::sql(
                    "SELECT plan_id, days, expires_at_ms, redeemed_at_ms FROM vouchers \
                     WHERE code_hash = ?",
                ))
                .bind(code_hash)
                .fetch_optional(&mut **tx)
                .await?
                else {
                    return Ok(Err(RedeemOutcome::Unknown));
                };
                if voucher.try_get::<Option<i64>, _>("redeemed_at_ms")?.is_some() {
                    return Ok(Err(RedeemOutcome::AlreadyRedeemed));
                }
                if voucher
                    .try_get::<Option<i64>, _>("expires_at_ms")?
                    .is_some_and(|expires| expires <= now_ms)
                {
                    return Ok(Err(RedeemOutcome::Expired));
                }
                let plan_id: String = voucher.try_get("plan_id")?;
                let days: i64 = voucher.try_get("days")?;
                // The conditional UPDATE is what makes a code single-use when two accounts race
                // for it: the loser matches no row.
                let claimed = sqlx::query(&Self::sql(
                    "UPDATE vouchers SET redeemed_at_ms = ?, redeemed_by = ? \
                     WHERE code_hash = ? AND redeemed_at_ms IS NULL",
                ))
                .bind(now_ms)
                .bind(account_id)
                .bind(code_hash)
                .execute(&mut **tx)
                .await?;
                if claimed.rows_affected() != 1 {
                    return Ok(Err(RedeemOutcome::AlreadyRedeemed));
                }
                Ok(Ok((plan_id, days)))
            }

            /// Moves the account to `plan_id` and extends its paid time by `days` (from now when
            /// it has lapsed), inside `tx`.
            async fn extend_account(
                tx: &mut Tx,
                account_id: &str,
                plan_id: &str,
                days: i64,
                now_ms: i64,
            ) -> Result<(), StoreError> {
                let row = sqlx::query(&Self::sql(
                    "SELECT paid_until_ms FROM accounts WHERE account_id = ?",
                ))
                .bind(account_id)
                .fetch_one(&mut **tx)
                .await?;
                let paid_until: i64 = row.try_get("paid_until_ms")?;
                let extended = paid_until
                    .max(now_ms)
                    .saturating_add(days.saturating_mul(86_400_000));
                sqlx::query(&Self::sql(
                    "UPDATE accounts SET paid_until_ms = ?, plan_id = ? WHERE account_id = ?",
                ))
                .bind(extended)
                .bind(plan_id)
                .bind(account_id)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            /// The account's row and its mailboxes, inside `tx`.
            async fn insert_account_rows(
                tx: &mut Tx,
                account: &NewAccount,
                mailboxes: &[NewMailbox],
            ) -> Result<(), StoreError> {
                sqlx::query(&Self::sql(
                    "INSERT INTO accounts (account_id, login, password_hash, sealed_key, plan_id, \
                     paid_until_ms, created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                ))
                .bind(&account.account_id)
                .bind(&account.login)
                .bind(&account.password_hash)
                .bind(&account.sealed_key)
                .bind(&account.plan_id)
                .bind(account.paid_until_ms)
                .bind(account.created_at_ms)
                .execute(&mut **tx)
                .await?;
                for mailbox in mailboxes {
                    Self::insert_mailbox(tx, &account.account_id, mailbox).await?;
                }
                Ok(())
            }

            async fn insert_mailbox(
                tx: &mut Tx,
                account_id: &str,
                mailbox: &NewMailbox,
            ) -> Result<i64, StoreError> {
                let row = sqlx::query(&Self::sql(
                    "INSERT INTO mailboxes (account_id, name, special_use, uid_validity, subscribed) \
                     VALUES (?, ?, ?, ?, ?) RETURNING mailbox_id",
                ))
                .bind(account_id)
                .bind(&mailbox.name)
                .bind(&mailbox.special_use)
                .bind(i64::from(mailbox.uid_validity))
                .bind(i64::from(mailbox.special_use.is_some()))
                .fetch_one(&mut **tx)
                .await?;
                Ok(row.try_get("mailbox_id")?)
            }

            /// The blob with this dedup key, its reference taken; stored when new.
            async fn take_blob(
                tx: &mut Tx,
                account_id: &str,
                blob: &NewBlob,
            ) -> Result<i64, StoreError> {
                let existing = sqlx::query(&Self::sql(
                    "SELECT blob_id FROM blobs WHERE account_id = ? AND dedup_key = ?",
                ))
                .bind(account_id)
                .bind(&blob.dedup_key)
                .fetch_optional(&mut **tx)
                .await?;
                if let Some(row) = existing {
                    let blob_id: i64 = row.try_get("blob_id")?;
                    Self::share_blob(tx, blob_id).await?;
                    return Ok(blob_id);
                }
                let row = sqlx::query(&Self::sql(
                    "INSERT INTO blobs (account_id, dedup_key, size, header_sealed, full_sealed, \
                     refcount) VALUES (?, ?, ?, ?, ?, 1) RETURNING blob_id",
                ))
                .bind(account_id)
                .bind(&blob.dedup_key)
                .bind(blob.size)
                .bind(&blob.header_sealed)
                .bind(&blob.full_sealed)
                .fetch_one(&mut **tx)
                .await?;
                Ok(row.try_get("blob_id")?)
            }

            async fn share_blob(tx: &mut Tx, blob_id: i64) -> Result<(), StoreError> {
                sqlx::query(&Self::sql(
                    "UPDATE blobs SET refcount = refcount + 1 WHERE blob_id = ?",
                ))
                .bind(blob_id)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            /// Drops one reference; the sealed body goes with the last one.
            async fn release_blob(tx: &mut Tx, blob_id: i64) -> Result<(), StoreError> {
                sqlx::query(&Self::sql(
                    "UPDATE blobs SET refcount = refcount - 1 WHERE blob_id = ?",
                ))
                .bind(blob_id)
                .execute(&mut **tx)
                .await?;
                sqlx::query(&Self::sql("DELETE FROM blobs WHERE blob_id = ? AND refcount <= 0"))
                    .bind(blob_id)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }

            async fn delete_message(
                tx: &mut Tx,
                mailbox_id: i64,
                uid: u32,
            ) -> Result<(), StoreError> {
                sqlx::query(&Self::sql("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?"))
                    .bind(mailbox_id)
                    .bind(i64::from(uid))
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }

            async fn insert_message(
                tx: &mut Tx,
                mailbox_id: i64,
                uid: u32,
                message: &MessageRecord,
            ) -> Result<(), StoreError> {
                sqlx::query(&Self::sql(
                    "INSERT INTO messages (mailbox_id, uid, blob_id, flags, internal_date_ms, size) \
                     VALUES (?, ?, ?, ?, ?, ?)",
                ))
                .bind(mailbox_id)
                .bind(i64::from(uid))
                .bind(message.blob_id)
                .bind(&message.flags)
                .bind(message.internal_date_ms)
                .bind(message.size)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            async fn set_uid_next(
                tx: &mut Tx,
                mailbox_id: i64,
                uid_next: u32,
            ) -> Result<(), StoreError> {
                sqlx::query(&Self::sql(
                    "UPDATE mailboxes SET uid_next = ?, version = version + 1 WHERE mailbox_id = ?",
                ))
                .bind(i64::from(uid_next))
                .bind(mailbox_id)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }
        }

        #[async_trait]
        impl ImapStore for $store {
            async fn insert_plan(&self, plan: &PlanRecord) -> Result<(), StoreError> {
                sqlx::query(&Self::sql(&format!(
                    "INSERT INTO plans ({PLAN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
                )))
                .bind(&plan.plan_id)
                .bind(&plan.name)
                .bind(plan.quota_bytes)
                .bind(plan.identities_allowed)
                .bind(i64::from(plan.gateway_allowed))
                .bind(plan.gateway_daily_limit)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn update_plan(&self, plan: &PlanRecord) -> Result<bool, StoreError> {
                let done = sqlx::query(&Self::sql(
                    "UPDATE plans SET name = ?, quota_bytes = ?, identities_allowed = ?, \
                     gateway_allowed = ?, gateway_daily_limit = ? WHERE plan_id = ?",
                ))
                .bind(&plan.name)
                .bind(plan.quota_bytes)
                .bind(plan.identities_allowed)
                .bind(i64::from(plan.gateway_allowed))
                .bind(plan.gateway_daily_limit)
                .bind(&plan.plan_id)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn plans(&self) -> Result<Vec<PlanRecord>, StoreError> {
                let rows = sqlx::query(&format!("SELECT {PLAN_COLUMNS} FROM plans ORDER BY name"))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::plan_from_row).collect()
            }

            async fn plan(&self, plan_id: &str) -> Result<Option<PlanRecord>, StoreError> {
                let row = sqlx::query(&Self::sql(&format!(
                    "SELECT {PLAN_COLUMNS} FROM plans WHERE plan_id = ?"
                )))
                .bind(plan_id)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::plan_from_row).transpose()
            }

            async fn plan_by_name(&self, name: &str) -> Result<Option<PlanRecord>, StoreError> {
                let row = sqlx::query(&Self::sql(&format!(
                    "SELECT {PLAN_COLUMNS} FROM plans WHERE name = ?"
                )))
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::plan_from_row).transpose()
            }

            async fn insert_account(
                &self,
                account: &NewAccount,
                mailboxes: &[NewMailbox],
            ) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::insert_account_rows(&mut tx, account, mailboxes).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn insert_account_redeeming(
                &self,
                account: &NewAccount,
                mailboxes: &[NewMailbox],
                code_hash: &[u8],
            ) -> Result<RedeemOutcome, StoreError> {
                let now_ms = account.created_at_ms;
                let mut tx = self.pool.begin().await?;
                // The voucher first: without a good one nobody learns whether the login is
                // taken. A refusal drops the transaction, leaving no account and the voucher.
                let (plan_id, days) =
                    match Self::take_voucher(&mut tx, &account.account_id, code_hash, now_ms)
                        .await?
                    {
                        Ok(taken) => taken,
                        Err(refused) => return Ok(refused),
                    };
                Self::insert_account_rows(&mut tx, account, mailboxes).await?;
                Self::extend_account(&mut tx, &account.account_id, &plan_id, days, now_ms).await?;
                tx.commit().await?;
                Ok(RedeemOutcome::Redeemed)
            }

            async fn account(&self, account_id: &str) -> Result<Option<AccountRecord>, StoreError> {
                let row = sqlx::query(&Self::sql(&format!(
                    "{ACCOUNT_SELECT} WHERE a.account_id = ?"
                )))
                .bind(account_id)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::account_from_row).transpose()
            }

            async fn account_by_login(
                &self,
                login: &str,
            ) -> Result<Option<AccountRecord>, StoreError> {
                let row = sqlx::query(&Self::sql(&format!("{ACCOUNT_SELECT} WHERE a.login = ?")))
                    .bind(login)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::account_from_row).transpose()
            }

            async fn accounts_page(
                &self,
                after: &str,
                limit: i64,
            ) -> Result<Vec<AccountRecord>, StoreError> {
                let rows = sqlx::query(&Self::sql(&format!(
                    "{ACCOUNT_SELECT} WHERE a.account_id > ? ORDER BY a.account_id LIMIT ?"
                )))
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::account_from_row).collect()
            }

            async fn account_dates(&self) -> Result<Vec<(i64, bool)>, StoreError> {
                let rows = sqlx::query("SELECT paid_until_ms, suspended FROM accounts")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|row| {
                        Ok((
                            row.try_get("paid_until_ms")?,
                            row.try_get::<i64, _>("suspended")? != 0,
                        ))
                    })
                    .collect()
            }

            async fn set_account_plan(
                &self,
                account_id: &str,
                plan_id: &str,
            ) -> Result<bool, StoreError> {
                let done =
                    sqlx::query(&Self::sql("UPDATE accounts SET plan_id = ? WHERE account_id = ?"))
                        .bind(plan_id)
                        .bind(account_id)
                        .execute(&self.pool)
                        .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_suspended(
                &self,
                account_id: &str,
                suspended: bool,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(&Self::sql(
                    "UPDATE accounts SET suspended = ? WHERE account_id = ?",
                ))
                .bind(i64::from(suspended))
                .bind(account_id)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_password_hash(
                &self,
                account_id: &str,
                hash: &str,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(&Self::sql(
                    "UPDATE accounts SET password_hash = ? WHERE account_id = ?",
                ))
                .bind(hash)
                .bind(account_id)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_account(&self, account_id: &str) -> Result<DeleteOutcome, StoreError> {
                let mut tx = self.pool.begin().await?;
                if !Self::lock(&mut tx, account_id).await? {
                    return Ok(DeleteOutcome::NotFound);
                }
                let row = sqlx::query(&Self::sql(
                    "SELECT identity_count FROM accounts WHERE account_id = ?",
                ))
                .bind(account_id)
                .fetch_one(&mut *tx)
                .await?;
                if row.try_get::<i64, _>("identity_count")? > 0 {
                    return Ok(DeleteOutcome::HasIdentities);
                }
                for statement in [
                    "DELETE FROM deliveries WHERE account_id = ?",
                    "DELETE FROM messages WHERE mailbox_id IN \
                     (SELECT mailbox_id FROM mailboxes WHERE account_id = ?)",
                    "DELETE FROM blobs WHERE account_id = ?",
                    "DELETE FROM mailboxes WHERE account_id = ?",
                    "DELETE FROM identities WHERE account_id = ?",
                    "DELETE FROM app_passwords WHERE account_id = ?",
                    "DELETE FROM accounts WHERE account_id = ?",
                ] {
                    sqlx::query(&Self::sql(statement))
                        .bind(account_id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(DeleteOutcome::Deleted)
            }

            async fn insert_vouchers(
                &self,
                batch: &VoucherBatch,
                code_hashes: &[Vec<u8>],
            ) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                for hash in code_hashes {
                    sqlx::query(&Self::sql(
                        "INSERT INTO vouchers (code_hash, batch_id, plan_id, days, expires_at_ms, \
                         minted_at_ms) VALUES (?, ?, ?, ?, ?, ?)",
                    ))
                    .bind(hash)
                    .bind(&batch.batch_id)
                    .bind(&batch.plan_id)
                    .bind(batch.days)
                    .bind(batch.expires_at_ms)
                    .bind(batch.minted_at_ms)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn insert_app_password(
                &self,
                record: &AppPasswordRecord,
            ) -> Result<(), StoreError> {
                sqlx::query(&Self::sql(
                    "INSERT INTO app_passwords \
                     (app_password_id, account_id, name, password_hash, created_at_ms) \
                     VALUES (?, ?, ?, ?, ?)",
                ))
                .bind(&record.app_password_id)
                .bind(&record.account_id)
                .bind(&record.name)
                .bind(&record.password_hash)
                .bind(record.created_at_ms)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn app_passwords(
                &self,
                account_id: &str,
            ) -> Result<Vec<AppPasswordRecord>, StoreError> {
                let rows = sqlx::query(&Self::sql(
                    "SELECT app_password_id, account_id, name, password_hash, created_at_ms \
                     FROM app_passwords WHERE account_id = ? \
                     ORDER BY created_at_ms, app_password_id",
                ))
                .bind(account_id)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(AppPasswordRecord {
                            app_password_id: row.try_get("app_password_id")?,
                            account_id: row.try_get("account_id")?,
                            name: row.try_get("name")?,
                            password_hash: row.try_get("password_hash")?,
                            created_at_ms: row.try_get("created_at_ms")?,
                        })
                    })
                    .collect()
            }

            async fn app_password_matches(
                &self,
                account_id: &str,
                password_hash: &[u8],
            ) -> Result<bool, StoreError> {
                let row = sqlx::query(&Self::sql(
                    "SELECT 1 AS found FROM app_passwords \
                     WHERE account_id = ? AND password_hash = ?",
                ))
                .bind(account_id)
                .bind(password_hash)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.is_some())
            }

            async fn delete_app_password(
                &self,
                account_id: &str,
                app_password_id: &str,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(&Self::sql(
                    "DELETE FROM app_passwords WHERE account_id = ? AND app_password_id = ?",
                ))
                .bind(account_id)
                .bind(app_password_id)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn redeem_voucher(
                &self,
                account_id: &str,
                code_hash: &[u8],
                now_ms: i64,
            ) -> Result<RedeemOutcome, StoreError> {
                let mut tx = self.pool.begin().await?;
                if !Self::lock(&mut tx, account_id).await? {
                    return Ok(RedeemOutcome::NoAccount);
                }
                let (plan_id, days) =
                    match Self::take_voucher(&mut tx, account_id, code_hash, now_ms).await? {
                        Ok(taken) => taken,
                        Err(refused) => return Ok(refused),
                    };
                Self::extend_account(&mut tx, account_id, &plan_id, days, now_ms).await?;
                tx.commit().await?;
                Ok(RedeemOutcome::Redeemed)
            }

            async fn insert_identity(
                &self,
                identity: &IdentityRecord,
                allowed: i64,
            ) -> Result<AddIdentityOutcome, StoreError> {
                let mut tx = self.pool.begin().await?;
                // One conditional UPDATE counts and checks the limit atomically on both backends.
                let counted = sqlx::query(&Self::sql(
                    "UPDATE accounts SET identity_count = identity_count + 1, \
                     write_seq = write_seq + 1 WHERE account_id = ? AND identity_count < ?",
                ))
                .bind(&identity.account_id)
                .bind(allowed)
                .execute(&mut *tx)
                .await?;
                if counted.rows_affected() != 1 {
                    let exists = sqlx::query(&Self::sql(
                        "SELECT account_id FROM accounts WHERE account_id = ?",
                    ))
                    .bind(&identity.account_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some();
                    return Ok(if exists {
                        AddIdentityOutcome::LimitReached
                    } else {
                        AddIdentityOutcome::NoAccount
                    });
                }
                sqlx::query(&Self::sql(&format!(
                    "INSERT INTO identities ({IDENTITY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
                )))
                .bind(&identity.identity_id)
                .bind(&identity.account_id)
                .bind(&identity.address)
                .bind(&identity.onion)
                .bind(&identity.display_name)
                .bind(identity.created_at_ms)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(AddIdentityOutcome::Added)
            }

            async fn identity(
                &self,
                identity_id: &str,
            ) -> Result<Option<IdentityRecord>, StoreError> {
                self.identity_where("identity_id = ?", identity_id).await
            }

            async fn identity_by_address(
                &self,
                address: &str,
            ) -> Result<Option<IdentityRecord>, StoreError> {
                self.identity_where("address = ?", address).await
            }

            async fn identity_by_onion(
                &self,
                onion: &str,
            ) -> Result<Option<IdentityRecord>, StoreError> {
                self.identity_where("onion = ? ORDER BY created_at_ms LIMIT 1", onion)
                    .await
            }

            async fn identities(&self, account_id: &str) -> Result<Vec<IdentityRecord>, StoreError> {
                let rows = sqlx::query(&Self::sql(&format!(
                    "SELECT {IDENTITY_COLUMNS} FROM identities WHERE account_id = ? \
                     ORDER BY created_at_ms, identity_id"
                )))
                .bind(account_id)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::identity_from_row).collect()
            }

            async fn remove_identity(&self, identity_id: &str) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                let Some(row) = sqlx::query(&Self::sql(
                    "SELECT account_id FROM identities WHERE identity_id = ?",
                ))
                .bind(identity_id)
                .fetch_optional(&mut *tx)
                .await?
                else {
                    return Ok(false);
                };
                let account_id: String = row.try_get("account_id")?;
                sqlx::query(&Self::sql("DELETE FROM identities WHERE identity_id = ?"))
                    .bind(identity_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(&Self::sql(
                    "UPDATE accounts SET identity_count = identity_count - 1 WHERE account_id = ?",
                ))
                .bind(&account_id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn identity_total(&self) -> Result<i64, StoreError> {
                let row = sqlx::query("SELECT COUNT(*) AS total FROM identities")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(row.try_get("total")?)
            }

            async fn mailboxes(&self, account_id: &str) -> Result<Vec<MailboxRecord>, StoreError> {
                let rows = sqlx::query(&Self::sql(&format!(
                    "SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE account_id = ? ORDER BY name"
                )))
                .bind(account_id)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::mailbox_from_row).collect()
            }

            async fn mailbox_by_name(
                &self,
                account_id: &str,
                name: &str,
            ) -> Result<Option<MailboxRecord>, StoreError> {
                let row = sqlx::query(&Self::sql(&format!(
                    "SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE account_id = ? AND name = ?"
                )))
                .bind(account_id)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::mailbox_from_row).transpose()
            }

            async fn mailbox_by_id(
                &self,
                account_id: &str,
                mailbox_id: i64,
            ) -> Result<Option<MailboxRecord>, StoreError> {
                let row = sqlx::query(&Self::sql(&format!(
                    "SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE account_id = ? AND mailbox_id = ?"
                )))
                .bind(account_id)
                .bind(mailbox_id)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::mailbox_from_row).transpose()
            }

            async fn create_mailboxes(
                &self,
                account_id: &str,
                mailboxes: &[NewMailbox],
            ) -> Result<MailboxOutcome, StoreError> {
                let mut tx = self.pool.begin().await?;
                if !Self::lock(&mut tx, account_id).await? {
                    return Ok(MailboxOutcome::NoSuchMailbox);
                }
                let mut created = Vec::new();
                for (index, mailbox) in mailboxes.iter().enumerate() {
                    let existing = Self::mailbox_in_tx(
                        &mut tx,
                        account_id,
                        &MailboxRef::Name(mailbox.name.clone()),
                    )
                    .await?;
                    if existing.is_some() {
                        if index + 1 == mailboxes.len() {
                            return Ok(MailboxOutcome::AlreadyExists);
                        }
                        continue;
                    }
                    created.push(Self::insert_mailbox(&mut tx, account_id, mailbox).await?);
                }
                tx.commit().await?;
                Ok(MailboxOutcome::Done(created))
            }

            async fn delete_mailbox(
                &self,
                account_id: &str,
                name: &str,
            ) -> Result<MailboxOutcome, StoreError> {
                let mut tx = self.pool.begin().await?;
                if !Self::lock(&mut tx, account_id).await? {
                    return Ok(MailboxOutcome::NoSuchMailbox);
                }
                let Some(mailbox) =
                    Self::mailbox_in_tx(&mut tx, account_id, &MailboxRef::Name(name.to_owned()))
                        .await?
                else {
                    return Ok(MailboxOutcome::NoSuchMailbox);
                };
                if mailbox.special_use.is_some() {
                    return Ok(MailboxOutcome::Refused(
                        "INBOX and the special-use mailboxes cannot be deleted",
                    ));
                }
                let messages = Self::messages_in_tx(&mut tx, mailbox.mailbox_id).await?;
                sqlx::query(&Self::sql("DELETE FROM messages WHERE mailbox_id = ?"))
                    .bind(mailbox.mailbox_id)
                    .execute(&mut *tx)
                    .await?;
                let mut bytes = 0;
                for message in &messages {
                    bytes += message.size;
                    Self::release_blob(&mut tx, message.blob_id).await?;
                }
                Self::add_usage(&mut tx, account_id, -bytes, -(messages.len() as i64)).await?;
                sqlx::query(&Self::sql("DELETE FROM mailboxes WHERE mailbox_id = ?"))
                    .bind(mailbox.mailbox_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(MailboxOutcome::Done(vec![mailbox.mailbox_id]))
            }

            async fn rename_mailbox(
                &self,
                account_id: &str,
                from: &str,
                to: &str,
                inbox_target: &NewMailbox,
            ) -> Result<MailboxOutcome, StoreError> {
                let mut tx = self.pool.begin().await?;
                if !Self::lock(&mut tx, account_id).await? {
                    return Ok(MailboxOutcome::NoSuchMailbox);
                }
                let rows = sqlx::query(&Self::sql(&format!(
                    "SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE account_id = ?"
                )))
                .bind(account_id)
                .fetch_all(&mut *tx)
                .await?;
                let all = rows
                    .iter()
                    .map(Self::mailbox_from_row)
                    .collect::<Result<Vec<_>, _>>()?;
                let Some(source) = all.iter().find(|mailbox| mailbox.name == from) else {
                    return Ok(MailboxOutcome::NoSuchMailbox);
                };
                if all.iter().any(|mailbox| mailbox.name == to) {
                    return Ok(MailboxOutcome::AlreadyExists);
                }
                if from == "INBOX" {
                    // RFC 3501 §6.3.5: INBOX's messages move to a new mailbox; INBOX stays, empty.
                    let target = Self::insert_mailbox(&mut tx, account_id, inbox_target).await?;
                    for statement in [
                        "UPDATE messages SET mailbox_id = ? WHERE mailbox_id = ?",
                        "UPDATE deliveries SET mailbox_id = ? WHERE mailbox_id = ?",
                    ] {
                        sqlx::query(&Self::sql(statement))
                            .bind(target)
                            .bind(source.mailbox_id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    Self::set_uid_next(&mut tx, target, source.uid_next).await?;
                    Self::bump_version(&mut tx, source.mailbox_id).await?;
                    tx.commit().await?;
                    return Ok(MailboxOutcome::Done(vec![source.mailbox_id, target]));
                }
                if to.starts_with(&format!("{from}/")) {
                    return Ok(MailboxOutcome::Refused("cannot rename a mailbox into itself"));
                }
                let mut changed = Vec::new();
                for mailbox in &all {
                    if let Some(new_name) = renamed(&mailbox.name, from, to) {
                        sqlx::query(&Self::sql("UPDATE mailboxes SET name = ? WHERE mailbox_id = ?"))
                            .bind(&new_name)
                            .bind(mailbox.mailbox_id)
                            .execute(&mut *tx)
                            .await?;
                        changed.push(mailbox.mailbox_id);
                    }
                }
                tx.commit().await?;
                Ok(MailboxOutcome::Done(changed))
            }

            async fn set_subscribed(
                &self,
                account_id: &str,
                name: &str,
                subscribed: bool,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(&Self::sql(
                    "UPDATE mailboxes SET subscribed = ? WHERE account_id = ? AND name = ?",
                ))
                .bind(i64::from(subscribed))
                .bind(account_id)
                .bind(name)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn messages(
                &self,
                account_id: &str,
                mailbox_id: i64,
            ) -> Result<Vec<MessageRecord>, StoreError> {
                let rows = sqlx::query(&Self::sql(
                    "SELECT m.uid, m.blob_id, m.flags, m.internal_date_ms, m.size \
                     FROM messages m JOIN mailboxes x ON x.mailbox_id = m.mailbox_id \
                     WHERE x.account_id = ? AND m.mailbox_id = ? ORDER BY m.uid",
                ))
                .bind(account_id)
                .bind(mailbox_id)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::message_from_row).collect()
            }

            async fn append(
                &self,
                account_id: &str,
                mailbox: &MailboxRef,
                blob: &NewBlob,
                flags: &str,
                internal_date_ms: i64,
                quota_limit: i64,
                delivery_key: Option<&[u8]>,
                now_ms: i64,
            ) -> Result<AppendOutcome, StoreError> {
                let mut tx = self.pool.begin().await?;
                if !Self::lock(&mut tx, account_id).await? {
                    return Ok(AppendOutcome::NoAccount);
                }
                if let Some(key) = delivery_key {
                    let earlier = sqlx::query(&Self::sql(
                        "SELECT d.uid, x.uid_validity FROM deliveries d \
                         JOIN mailboxes x ON x.mailbox_id = d.mailbox_id \
                         WHERE d.account_id = ? AND d.delivery_key = ?",
                    ))
                    .bind(account_id)
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(row) = earlier {
                        return Ok(AppendOutcome::Duplicate {
                            uid_validity: Self::u32_of(row.try_get("uid_validity")?)?,
                            uid: Self::u32_of(row.try_get("uid")?)?,
                        });
                    }
                }
                let Some(target) = Self::mailbox_in_tx(&mut tx, account_id, mailbox).await? else {
                    return Ok(AppendOutcome::NoMailbox);
                };
                let used = Self::used_bytes(&mut tx, account_id).await?;
                if used.saturating_add(blob.size) > quota_limit {
                    return Ok(AppendOutcome::OverQuota {
                        used_bytes: used,
                        limit_bytes: quota_limit,
                    });
                }
                let blob_id = Self::take_blob(&mut tx, account_id, blob).await?;
                let uid = target.uid_next;
                let message = MessageRecord {
                    uid,
                    blob_id,
                    flags: flags.to_owned(),
                    internal_date_ms,
                    size: blob.size,
                };
                Self::insert_message(&mut tx, target.mailbox_id, uid, &message).await?;
                Self::set_uid_next(&mut tx, target.mailbox_id, uid + 1).await?;
                Self::add_usage(&mut tx, account_id, blob.size, 1).await?;
                if let Some(key) = delivery_key {
                    sqlx::query(&Self::sql(
                        "INSERT INTO deliveries (account_id, delivery_key, mailbox_id, uid, \
                         delivered_at_ms) VALUES (?, ?, ?, ?, ?)",
                    ))
                    .bind(account_id)
                    .bind(key)
                    .bind(target.mailbox_id)
                    .bind(i64::from(uid))
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(AppendOutcome::Stored {
                    mailbox_id: target.mailbox_id,
                    uid_validity: target.uid_validity,
                    uid,
                })
            }

            async fn copy(
                &self,
                account_id: &str,
                from: i64,
                uids: &[u32],
                to: &str,
                quota_limit: i64,
                is_move: bool,
            ) -> Result<CopyOutcome, StoreError> {
                let mut tx = self.pool.begin().await?;
                if !Self::lock(&mut tx, account_id).await? {
                    return Ok(CopyOutcome::NoSource);
                }
                let Some(source) = Self::mailbox_id_in_tx(&mut tx, account_id, from).await? else {
                    return Ok(CopyOutcome::NoSource);
                };
                let Some(target) =
                    Self::mailbox_in_tx(&mut tx, account_id, &MailboxRef::Name(to.to_owned()))
                        .await?
                else {
                    return Ok(CopyOutcome::NoTarget);
                };
                let wanted: HashSet<u32> = uids.iter().copied().collect();
                let chosen: Vec<MessageRecord> = Self::messages_in_tx(&mut tx, source.mailbox_id)
                    .await?
                    .into_iter()
                    .filter(|message| wanted.contains(&message.uid))
                    .collect();
                let bytes: i64 = chosen.iter().map(|message| message.size).sum();
                if !is_move {
                    let used = Self::used_bytes(&mut tx, account_id).await?;
                    if !chosen.is_empty() && used.saturating_add(bytes) > quota_limit {
                        return Ok(CopyOutcome::OverQuota {
                            used_bytes: used,
                            limit_bytes: quota_limit,
                        });
                    }
                }
                let mut next = target.uid_next;
                let mut pairs = Vec::with_capacity(chosen.len());
                for message in &chosen {
                    if is_move {
                        Self::delete_message(&mut tx, source.mailbox_id, message.uid).await?;
                    } else {
                        Self::share_blob(&mut tx, message.blob_id).await?;
                    }
                    Self::insert_message(&mut tx, target.mailbox_id, next, message).await?;
                    pairs.push((message.uid, next));
                    next += 1;
                }
                if !chosen.is_empty() {
                    Self::set_uid_next(&mut tx, target.mailbox_id, next).await?;
                    if is_move && source.mailbox_id != target.mailbox_id {
                        Self::bump_version(&mut tx, source.mailbox_id).await?;
                    }
                    if !is_move {
                        Self::add_usage(&mut tx, account_id, bytes, chosen.len() as i64).await?;
                    }
                }
                tx.commit().await?;
                Ok(CopyOutcome::Copied {
                    to_mailbox_id: target.mailbox_id,
                    uid_validity: target.uid_validity,
                    uids: pairs,
                })
            }

            async fn store_flags(
                &self,
                account_id: &str,
                mailbox_id: i64,
                uids: &[u32],
                operation: FlagOperation,
                flags: &[String],
            ) -> Result<Option<Vec<(u32, String)>>, StoreError> {
                let mut tx = self.pool.begin().await?;
                if !Self::lock(&mut tx, account_id).await?
                    || Self::mailbox_id_in_tx(&mut tx, account_id, mailbox_id)
                        .await?
                        .is_none()
                {
                    return Ok(None);
                }
                let wanted: HashSet<u32> = uids.iter().copied().collect();
                let mut result = Vec::new();
                let mut changed = false;
                for message in Self::messages_in_tx(&mut tx, mailbox_id).await? {
                    if !wanted.contains(&message.uid) {
                        continue;
                    }
                    let updated = apply_flags(&message.flags, operation, flags);
                    if updated != message.flags {
                        sqlx::query(&Self::sql(
                            "UPDATE messages SET flags = ? WHERE mailbox_id = ? AND uid = ?",
                        ))
                        .bind(&updated)
                        .bind(mailbox_id)
                        .bind(i64::from(message.uid))
                        .execute(&mut *tx)
                        .await?;
                        changed = true;
                    }
                    result.push((message.uid, updated));
                }
                if changed {
                    Self::bump_version(&mut tx, mailbox_id).await?;
                }
                tx.commit().await?;
                Ok(Some(result))
            }

            async fn expunge(
                &self,
                account_id: &str,
                mailbox_id: i64,
                uids: Option<&[u32]>,
            ) -> Result<Option<Vec<u32>>, StoreError> {
                let mut tx = self.pool.begin().await?;
                if !Self::lock(&mut tx, account_id).await?
                    || Self::mailbox_id_in_tx(&mut tx, account_id, mailbox_id)
                        .await?
                        .is_none()
                {
                    return Ok(None);
                }
                let wanted: Option<HashSet<u32>> = uids.map(|uids| uids.iter().copied().collect());
                let mut removed = Vec::new();
                let mut bytes = 0;
                for message in Self::messages_in_tx(&mut tx, mailbox_id).await? {
                    let named = wanted.as_ref().is_none_or(|set| set.contains(&message.uid));
                    if !named || !has_flag(&message.flags, "\\Deleted") {
                        continue;
                    }
                    Self::delete_message(&mut tx, mailbox_id, message.uid).await?;
                    Self::release_blob(&mut tx, message.blob_id).await?;
                    bytes += message.size;
                    removed.push(message.uid);
                }
                if !removed.is_empty() {
                    Self::add_usage(&mut tx, account_id, -bytes, -(removed.len() as i64)).await?;
                    Self::bump_version(&mut tx, mailbox_id).await?;
                }
                tx.commit().await?;
                Ok(Some(removed))
            }

            async fn fetch(
                &self,
                account_id: &str,
                mailbox_id: i64,
                uids: &[u32],
                header: bool,
            ) -> Result<Vec<(u32, Vec<u8>, Vec<u8>)>, StoreError> {
                let column = if header { "header_sealed" } else { "full_sealed" };
                let mut sorted: Vec<u32> = uids.to_vec();
                sorted.sort_unstable();
                sorted.dedup();
                let mut out = Vec::with_capacity(sorted.len());
                for chunk in sorted.chunks(IN_CHUNK) {
                    let placeholders = vec!["?"; chunk.len()].join(", ");
                    let text = format!(
                        "SELECT m.uid, b.dedup_key, b.{column} AS sealed FROM messages m \
                         JOIN blobs b ON b.blob_id = m.blob_id \
                         JOIN mailboxes x ON x.mailbox_id = m.mailbox_id \
                         WHERE x.account_id = ? AND m.mailbox_id = ? AND m.uid IN ({placeholders}) \
                         ORDER BY m.uid"
                    );
                    let sql = Self::sql(&text);
                    let mut query = sqlx::query(&sql).bind(account_id).bind(mailbox_id);
                    for uid in chunk {
                        query = query.bind(i64::from(*uid));
                    }
                    for row in query.fetch_all(&self.pool).await? {
                        out.push((
                            Self::u32_of(row.try_get("uid")?)?,
                            row.try_get("dedup_key")?,
                            row.try_get("sealed")?,
                        ));
                    }
                }
                Ok(out)
            }

            async fn delivered_since(&self, since_ms: i64) -> Result<i64, StoreError> {
                let row = sqlx::query(&Self::sql(
                    "SELECT COUNT(*) AS total FROM deliveries WHERE delivered_at_ms >= ?",
                ))
                .bind(since_ms)
                .fetch_one(&self.pool)
                .await?;
                Ok(row.try_get("total")?)
            }

            async fn stored_bytes(&self) -> Result<i64, StoreError> {
                let row = sqlx::query(
                    "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) AS total FROM blobs",
                )
                .fetch_one(&self.pool)
                .await?;
                Ok(row.try_get("total")?)
            }
        }
    };
}
pub(super) use store_impl;
