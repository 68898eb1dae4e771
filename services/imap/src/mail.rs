//! [`MailStore`] on [`ImapService`]: the IMAP protocol layer's view of the store. Names are
//! normalised here (INBOX in any case is INBOX, `/` is the hierarchy delimiter), flags are
//! given their canonical spelling ([`crate::flags`]), bodies are opened with the account key, and every write is
//! announced on the account's change hub (and on PostgreSQL to the other imap processes).

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use crate::crypto::SealedPart;
use crate::error::ImapError;
use crate::flags::canonical_flags;
use crate::mailstore::{
    Copied, Flag, FlagOperation, LoggedIn, LoginError, MailStore, MailStoreError, MailboxId,
    MailboxInfo, MailboxSnapshot, MailboxStatus, MessageMeta, Part, QuotaUsage, SpecialUse,
};
use crate::service::{AccountState, ImapService, from_ms, random_uid_validity, to_ms};
use crate::store::{
    AppendOutcome, CopyOutcome, MailboxOutcome, MailboxRecord, MailboxRef, MessageRecord,
    NewMailbox, has_flag, split_flags,
};

const MAX_MAILBOX_NAME_BYTES: usize = 512;
/// The stored form of a mailbox name: `INBOX` (and `INBOX/…`) in upper case, no trailing
/// delimiter. `None` when the name cannot be a mailbox.
fn normalize_name(name: &str) -> Option<String> {
    let name = name.trim_end_matches('/');
    let normalized = if name.eq_ignore_ascii_case("INBOX") {
        "INBOX".to_owned()
    } else if name.len() > 6 && name[..6].eq_ignore_ascii_case("INBOX/") {
        format!("INBOX/{}", &name[6..])
    } else {
        name.to_owned()
    };
    let valid = !normalized.is_empty()
        && normalized.len() <= MAX_MAILBOX_NAME_BYTES
        && !normalized.starts_with('/')
        && !normalized.split('/').any(str::is_empty)
        && !normalized
            .chars()
            .any(|c| c.is_control() || c == '*' || c == '%');
    valid.then_some(normalized)
}

fn valid_name(name: &str) -> Result<String, MailStoreError> {
    normalize_name(name).ok_or_else(|| MailStoreError::Cannot("invalid mailbox name".to_owned()))
}

fn special_use(role: Option<&str>) -> Option<SpecialUse> {
    Some(match role? {
        "inbox" => SpecialUse::Inbox,
        "sent" => SpecialUse::Sent,
        "drafts" => SpecialUse::Drafts,
        "trash" => SpecialUse::Trash,
        "junk" => SpecialUse::Junk,
        "archive" => SpecialUse::Archive,
        "quarantine" => SpecialUse::Quarantine,
        _ => return None,
    })
}

fn status_of(mailbox: &MailboxRecord, messages: &[MessageRecord]) -> MailboxStatus {
    MailboxStatus {
        id: mailbox.mailbox_id,
        uid_validity: mailbox.uid_validity,
        uid_next: mailbox.uid_next,
        messages: messages.len() as u32,
        unseen: messages
            .iter()
            .filter(|message| !has_flag(&message.flags, "\\Seen"))
            .count() as u32,
        version: mailbox.version,
    }
}

/// Logs a service failure and turns it into the reply's words.
fn store_failure(error: ImapError) -> MailStoreError {
    match error {
        ImapError::NotFound(_) => MailStoreError::NoSuchMailbox,
        other => {
            tracing::error!(error = %other, "mail store operation failed");
            MailStoreError::Internal
        }
    }
}

fn internal(error: impl Into<ImapError>) -> MailStoreError {
    store_failure(error.into())
}

fn over_quota(used: i64, limit: i64) -> MailStoreError {
    MailStoreError::OverQuota {
        used_bytes: u64::try_from(used).unwrap_or(0),
        limit_bytes: u64::try_from(limit).unwrap_or(0),
    }
}

impl ImapService {
    /// The account's quota limit, refusing new data when the account does not accept it.
    async fn accepting(&self, account: &str) -> Result<i64, MailStoreError> {
        let view = self.account(account).await.map_err(store_failure)?;
        match view.state {
            AccountState::Active => Ok(view.record.plan.quota_bytes),
            state => Err(MailStoreError::NotAccepting(format!(
                "the account is {}",
                state.as_str()
            ))),
        }
    }

    async fn mailbox_named(
        &self,
        account: &str,
        name: &str,
    ) -> Result<MailboxRecord, MailStoreError> {
        let name = normalize_name(name).ok_or(MailStoreError::NoSuchMailbox)?;
        self.inner
            .store
            .mailbox_by_name(account, &name)
            .await
            .map_err(internal)?
            .ok_or(MailStoreError::NoSuchMailbox)
    }
}

#[async_trait::async_trait]
impl MailStore for ImapService {
    async fn login(&self, login: &str, password: &str) -> Result<LoggedIn, LoginError> {
        match self.verify_login(login, password).await {
            Ok(view) => Ok(LoggedIn {
                account_id: view.record.account_id,
                login: view.record.login,
            }),
            Err(ImapError::Unauthenticated) => Err(LoginError::Invalid),
            Err(ImapError::BackOff { retry_after_secs }) => {
                Err(LoginError::BackOff { retry_after_secs })
            }
            Err(ImapError::PermissionDenied) => Err(LoginError::Unavailable),
            Err(error) => {
                tracing::error!(error = %error, "login check failed");
                Err(LoginError::Internal)
            }
        }
    }

    async fn list_mailboxes(&self, account: &str) -> Result<Vec<MailboxInfo>, MailStoreError> {
        let mut mailboxes: Vec<MailboxInfo> = self
            .inner
            .store
            .mailboxes(account)
            .await
            .map_err(internal)?
            .into_iter()
            .map(|mailbox| MailboxInfo {
                id: mailbox.mailbox_id,
                special_use: special_use(mailbox.special_use.as_deref()),
                name: mailbox.name,
                subscribed: mailbox.subscribed,
            })
            .collect();
        mailboxes.sort_by(|a, b| (a.name != "INBOX", &a.name).cmp(&(b.name != "INBOX", &b.name)));
        Ok(mailboxes)
    }

    async fn create_mailbox(&self, account: &str, name: &str) -> Result<(), MailStoreError> {
        let name = valid_name(name)?;
        if name == "INBOX" {
            return Err(MailStoreError::MailboxExists);
        }
        // RFC 3501 §6.3.3: create the missing superior names too.
        let parts: Vec<&str> = name.split('/').collect();
        let mailboxes: Vec<NewMailbox> = (1..=parts.len())
            .map(|count| NewMailbox {
                name: parts[..count].join("/"),
                special_use: None,
                uid_validity: random_uid_validity(),
            })
            .collect();
        match self
            .inner
            .store
            .create_mailboxes(account, &mailboxes)
            .await
            .map_err(internal)?
        {
            MailboxOutcome::Done(_) => Ok(()),
            MailboxOutcome::AlreadyExists => Err(MailStoreError::MailboxExists),
            MailboxOutcome::NoSuchMailbox => Err(MailStoreError::NoSuchMailbox),
            MailboxOutcome::Refused(reason) => Err(MailStoreError::Cannot(reason.to_owned())),
        }
    }

    async fn delete_mailbox(&self, account: &str, name: &str) -> Result<(), MailStoreError> {
        let name = normalize_name(name).ok_or(MailStoreError::NoSuchMailbox)?;
        match self
            .inner
            .store
            .delete_mailbox(account, &name)
            .await
            .map_err(internal)?
        {
            MailboxOutcome::Done(ids) => {
                self.announce(account, &ids).await;
                Ok(())
            }
            MailboxOutcome::NoSuchMailbox => Err(MailStoreError::NoSuchMailbox),
            MailboxOutcome::AlreadyExists => Err(MailStoreError::MailboxExists),
            MailboxOutcome::Refused(reason) => Err(MailStoreError::Cannot(reason.to_owned())),
        }
    }

    async fn rename_mailbox(
        &self,
        account: &str,
        from: &str,
        to: &str,
    ) -> Result<(), MailStoreError> {
        let from = normalize_name(from).ok_or(MailStoreError::NoSuchMailbox)?;
        let to = valid_name(to)?;
        let inbox_target = NewMailbox {
            name: to.clone(),
            special_use: None,
            uid_validity: random_uid_validity(),
        };
        match self
            .inner
            .store
            .rename_mailbox(account, &from, &to, &inbox_target)
            .await
            .map_err(internal)?
        {
            MailboxOutcome::Done(ids) => {
                self.announce(account, &ids).await;
                Ok(())
            }
            MailboxOutcome::NoSuchMailbox => Err(MailStoreError::NoSuchMailbox),
            MailboxOutcome::AlreadyExists => Err(MailStoreError::MailboxExists),
            MailboxOutcome::Refused(reason) => Err(MailStoreError::Cannot(reason.to_owned())),
        }
    }

    async fn set_subscribed(
        &self,
        account: &str,
        name: &str,
        subscribed: bool,
    ) -> Result<(), MailStoreError> {
        let name = normalize_name(name).ok_or(MailStoreError::NoSuchMailbox)?;
        if self
            .inner
            .store
            .set_subscribed(account, &name, subscribed)
            .await
            .map_err(internal)?
        {
            Ok(())
        } else {
            Err(MailStoreError::NoSuchMailbox)
        }
    }

    async fn status(&self, account: &str, name: &str) -> Result<MailboxStatus, MailStoreError> {
        let mailbox = self.mailbox_named(account, name).await?;
        let messages = self
            .inner
            .store
            .messages(account, mailbox.mailbox_id)
            .await
            .map_err(internal)?;
        Ok(status_of(&mailbox, &messages))
    }

    async fn open_mailbox(
        &self,
        account: &str,
        name: &str,
    ) -> Result<MailboxSnapshot, MailStoreError> {
        let mailbox = self.mailbox_named(account, name).await?;
        let messages = self
            .inner
            .store
            .messages(account, mailbox.mailbox_id)
            .await
            .map_err(internal)?;
        // The version is read before the messages, so a change racing with this snapshot
        // bumps it past what the snapshot reports and the next NOOP resynchronises.
        Ok(MailboxSnapshot {
            status: status_of(&mailbox, &messages),
            messages: messages
                .into_iter()
                .map(|message| MessageMeta {
                    uid: message.uid,
                    flags: split_flags(&message.flags),
                    internal_date: from_ms(message.internal_date_ms),
                    size: u64::try_from(message.size).unwrap_or(0),
                })
                .collect(),
        })
    }

    async fn mailbox_version(
        &self,
        account: &str,
        mailbox: MailboxId,
    ) -> Result<u64, MailStoreError> {
        self.inner
            .store
            .mailbox_by_id(account, mailbox)
            .await
            .map_err(internal)?
            .map(|mailbox| mailbox.version)
            .ok_or(MailStoreError::NoSuchMailbox)
    }

    async fn fetch(
        &self,
        account: &str,
        mailbox: MailboxId,
        uids: &[u32],
        part: Part,
    ) -> Result<Vec<(u32, Bytes)>, MailStoreError> {
        let record = self.account_record(account).await.map_err(store_failure)?;
        let key = self.account_key(&record).map_err(store_failure)?;
        let header = part == Part::Header;
        let sealed_part = if header {
            SealedPart::Header
        } else {
            SealedPart::Full
        };
        let rows = self
            .inner
            .store
            .fetch(account, mailbox, uids, header)
            .await
            .map_err(internal)?;
        rows.into_iter()
            .map(|(uid, dedup_key, sealed)| {
                key.open(&sealed, &dedup_key, sealed_part)
                    .map(|bytes| (uid, Bytes::from(bytes)))
                    .map_err(internal)
            })
            .collect()
    }

    async fn store_flags(
        &self,
        account: &str,
        mailbox: MailboxId,
        uids: &[u32],
        operation: FlagOperation,
        flags: &[Flag],
    ) -> Result<Vec<(u32, Vec<Flag>)>, MailStoreError> {
        let flags = canonical_flags(flags).map_err(MailStoreError::Cannot)?;
        let updated = self
            .inner
            .store
            .store_flags(account, mailbox, uids, operation, &flags)
            .await
            .map_err(internal)?
            .ok_or(MailStoreError::NoSuchMailbox)?;
        self.announce(account, &[mailbox]).await;
        Ok(updated
            .into_iter()
            .map(|(uid, flags)| (uid, split_flags(&flags)))
            .collect())
    }

    async fn copy(
        &self,
        account: &str,
        from: MailboxId,
        uids: &[u32],
        to: &str,
    ) -> Result<Copied, MailStoreError> {
        let limit = self.accepting(account).await?;
        let to = normalize_name(to).ok_or(MailStoreError::NoSuchMailbox)?;
        match self
            .inner
            .store
            .copy(account, from, uids, &to, limit, false)
            .await
            .map_err(internal)?
        {
            CopyOutcome::Copied {
                to_mailbox_id,
                uid_validity,
                uids,
            } => {
                self.announce(account, &[to_mailbox_id]).await;
                Ok(Copied { uid_validity, uids })
            }
            CopyOutcome::NoSource | CopyOutcome::NoTarget => Err(MailStoreError::NoSuchMailbox),
            CopyOutcome::OverQuota {
                used_bytes,
                limit_bytes,
            } => Err(over_quota(used_bytes, limit_bytes)),
        }
    }

    async fn move_messages(
        &self,
        account: &str,
        from: MailboxId,
        uids: &[u32],
        to: &str,
    ) -> Result<Copied, MailStoreError> {
        let to = normalize_name(to).ok_or(MailStoreError::NoSuchMailbox)?;
        match self
            .inner
            .store
            .copy(account, from, uids, &to, i64::MAX, true)
            .await
            .map_err(internal)?
        {
            CopyOutcome::Copied {
                to_mailbox_id,
                uid_validity,
                uids,
            } => {
                self.announce(account, &[from, to_mailbox_id]).await;
                Ok(Copied { uid_validity, uids })
            }
            CopyOutcome::NoSource | CopyOutcome::NoTarget => Err(MailStoreError::NoSuchMailbox),
            CopyOutcome::OverQuota {
                used_bytes,
                limit_bytes,
            } => Err(over_quota(used_bytes, limit_bytes)),
        }
    }

    async fn expunge(
        &self,
        account: &str,
        mailbox: MailboxId,
        uids: Option<&[u32]>,
    ) -> Result<Vec<u32>, MailStoreError> {
        let removed = self
            .inner
            .store
            .expunge(account, mailbox, uids)
            .await
            .map_err(internal)?
            .ok_or(MailStoreError::NoSuchMailbox)?;
        if !removed.is_empty() {
            self.announce(account, &[mailbox]).await;
        }
        Ok(removed)
    }

    async fn append(
        &self,
        account: &str,
        mailbox: &str,
        flags: &[Flag],
        internal_date: Option<DateTime<Utc>>,
        message: Bytes,
    ) -> Result<(u32, u32), MailStoreError> {
        let limit = self.accepting(account).await?;
        let name = normalize_name(mailbox).ok_or(MailStoreError::NoSuchMailbox)?;
        let flags = canonical_flags(flags).map_err(MailStoreError::Cannot)?;
        let record = self.account_record(account).await.map_err(store_failure)?;
        let key = self.account_key(&record).map_err(store_failure)?;
        let service = self.clone();
        // Sealing a large message is CPU work; keep it off the async workers.
        let blob = tokio::task::spawn_blocking(move || service.seal_blob(&key, &message))
            .await
            .map_err(|error| internal(ImapError::Internal(error.to_string())))?;
        let now = to_ms(self.now());
        let date = internal_date.map_or(now, to_ms);
        match self
            .inner
            .store
            .append(
                account,
                &MailboxRef::Name(name),
                &blob,
                &flags.join(" "),
                date,
                limit,
                None,
                now,
            )
            .await
            .map_err(internal)?
        {
            AppendOutcome::Stored {
                mailbox_id,
                uid_validity,
                uid,
            } => {
                self.announce(account, &[mailbox_id]).await;
                Ok((uid_validity, uid))
            }
            AppendOutcome::Duplicate { uid_validity, uid } => Ok((uid_validity, uid)),
            AppendOutcome::OverQuota {
                used_bytes,
                limit_bytes,
            } => Err(over_quota(used_bytes, limit_bytes)),
            AppendOutcome::NoMailbox | AppendOutcome::NoAccount => {
                Err(MailStoreError::NoSuchMailbox)
            }
        }
    }

    async fn quota(&self, account: &str) -> Result<QuotaUsage, MailStoreError> {
        ImapService::quota(self, account)
            .await
            .map_err(store_failure)
    }

    fn watch(&self, account: &str) -> broadcast::Receiver<MailboxId> {
        self.inner.hub.subscribe(account)
    }
}

impl ImapService {
    /// Moves the messages in the account's Requests mailbox whose From is `address` to the
    /// INBOX (the sender was accepted) or to Trash (refused, kept there as any deleted mail);
    /// returns how many moved. An account without a Requests mailbox has none.
    pub async fn release_requests(
        &self,
        account_id: &str,
        address: &str,
        accept: bool,
    ) -> Result<u32, ImapError> {
        let failed = |error: MailStoreError| ImapError::Internal(error.to_string());
        let snapshot = match self.open_mailbox(account_id, "Requests").await {
            Ok(snapshot) => snapshot,
            Err(MailStoreError::NoSuchMailbox) => return Ok(0),
            Err(error) => return Err(failed(error)),
        };
        let uids: Vec<u32> = snapshot.messages.iter().map(|meta| meta.uid).collect();
        if uids.is_empty() {
            return Ok(0);
        }
        let wanted = address.trim().to_lowercase();
        let headers = self
            .fetch(account_id, snapshot.status.id, &uids, Part::Header)
            .await
            .map_err(failed)?;
        let from_sender: Vec<u32> = headers
            .into_iter()
            .filter(|(_, header)| {
                crate::server::parse::headers(header)
                    .and_then(|parsed| {
                        parsed
                            .from()
                            .and_then(|from| from.first())
                            .and_then(|first| first.address())
                            .map(|from| from.trim().to_lowercase() == wanted)
                    })
                    .unwrap_or(false)
            })
            .map(|(uid, _)| uid)
            .collect();
        if from_sender.is_empty() {
            return Ok(0);
        }
        let to = if accept { "INBOX" } else { "Trash" };
        self.move_messages(account_id, snapshot.status.id, &from_sender, to)
            .await
            .map_err(failed)?;
        Ok(u32::try_from(from_sender.len()).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_names() {
        assert_eq!(normalize_name("inbox").as_deref(), Some("INBOX"));
        assert_eq!(normalize_name("Inbox/x/").as_deref(), Some("INBOX/x"));
        assert_eq!(normalize_name("Work/2026").as_deref(), Some("Work/2026"));
        assert_eq!(normalize_name("a//b"), None);
        assert_eq!(normalize_name("/a"), None);
        assert_eq!(normalize_name("a*"), None);
        assert_eq!(normalize_name(""), None);
    }
}
