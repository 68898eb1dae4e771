//! What the IMAP protocol layer asks of the mail store.
//!
//! The boundary is in IMAP's own terms (mailboxes by name, messages by UID, flags as strings)
//! but free of IMAP syntax, so the protocol layer can be tested against an in-memory store and
//! the SQL store tested without a socket. Everything here is scoped to one account: a session
//! can only ever name its own account's mailboxes, which is what keeps a second account from
//! seeing the first's mail.
//!
//! Change notification: every write bumps the mailbox's `version` and announces the mailbox on
//! the account's [`MailStore::watch`] channel (on PostgreSQL in every imap process sharing the
//! store, see [`crate::changes`]); an IDLE or NOOP resynchronises by comparing a fresh
//! [`MailStore::open_mailbox`] snapshot with what the session last told its client.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

/// An account, as the store names it.
pub type AccountId = String;

/// A mailbox, as the store names it internally (stable across renames).
pub type MailboxId = i64;

/// An IMAP flag: a system flag (`\Seen`, `\Answered`, `\Flagged`, `\Deleted`, `\Draft`) in that
/// exact spelling, or a keyword (`$Forwarded`, `Junk`…). Compared case-insensitively by IMAP
/// (RFC 3501 §2.3.2); the store keeps system flags in canonical case.
pub type Flag = String;

/// A special-use role (RFC 6154), so clients find Sent, Drafts, Trash and Junk whatever they are
/// called, plus the carrier's quarantine folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecialUse {
    Inbox,
    Sent,
    Drafts,
    Trash,
    Junk,
    Archive,
    /// Mail accepted under a quarantine policy; listed as `\Junk`-like, named `Quarantine`.
    Quarantine,
}

/// One mailbox as LIST shows it. Names use `/` as the hierarchy delimiter; `INBOX` is always
/// spelled so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxInfo {
    pub id: MailboxId,
    pub name: String,
    pub special_use: Option<SpecialUse>,
    pub subscribed: bool,
}

/// What STATUS and SELECT report about a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxStatus {
    pub id: MailboxId,
    pub uid_validity: u32,
    pub uid_next: u32,
    pub messages: u32,
    pub unseen: u32,
    /// Bumped by every change to the mailbox (new message, flag change, expunge).
    pub version: u64,
}

/// One message in a mailbox snapshot, in ascending UID order (its position is its sequence
/// number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    pub uid: u32,
    pub flags: Vec<Flag>,
    pub internal_date: DateTime<Utc>,
    /// RFC822.SIZE: the size of the message as presented (decrypted), in octets.
    pub size: u64,
}

/// A selected mailbox: its status and every message in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxSnapshot {
    pub status: MailboxStatus,
    pub messages: Vec<MessageMeta>,
}

/// Which bytes of a message to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The header section, up to and including the blank line that ends it. Kept apart from
    /// the body so ENVELOPE and header SEARCH do not open whole messages.
    Header,
    /// The whole message as presented to the reader.
    Full,
}

/// How STORE changes flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOperation {
    Add,
    Remove,
    Replace,
}

/// Where COPY or MOVE put messages (RFC 4315 COPYUID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub uid_validity: u32,
    /// `(source uid, destination uid)`, in source UID order.
    pub uids: Vec<(u32, u32)>,
}

/// An account's storage use (RFC 9208 `STORAGE` resource is in KiB; these are octets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaUsage {
    pub used_bytes: u64,
    pub limit_bytes: u64,
    pub messages: u64,
}

/// Why a login was refused. IMAP answers every one of them but `Internal` with the same words,
/// so a client cannot learn whether a login exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("invalid credentials")]
    Invalid,
    /// The store itself backs off (a store with its own throttle; the service's does not).
    #[error("too many failed logins; retry in {retry_after_secs} s")]
    BackOff { retry_after_secs: u64 },
    /// Suspended by the operator (or otherwise not allowed to log in).
    #[error("account unavailable")]
    Unavailable,
    #[error("store unavailable")]
    Internal,
}

/// An authenticated account, as a session holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedIn {
    pub account_id: AccountId,
    pub login: String,
}

/// Why a mail store operation failed; each maps to one IMAP response (and response code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailStoreError {
    /// `[NONEXISTENT]` (RFC 5530).
    #[error("no such mailbox")]
    NoSuchMailbox,
    /// `[ALREADYEXISTS]`.
    #[error("mailbox already exists")]
    MailboxExists,
    /// `[CANNOT]`: INBOX cannot be deleted, a name is not valid, and so on.
    #[error("{0}")]
    Cannot(String),
    /// `[OVERQUOTA]` (RFC 9208): the words say so.
    #[error("quota exceeded: {used_bytes} of {limit_bytes} bytes used")]
    OverQuota { used_bytes: u64, limit_bytes: u64 },
    /// Reading is allowed but new mail is not (grace, expired): `[EXPIRED]` / `[CONTACTADMIN]`.
    #[error("account does not accept new mail: {0}")]
    NotAccepting(String),
    /// `[UNAVAILABLE]`: the store failed; the details are in the log, not in the reply.
    #[error("store temporarily unavailable")]
    Internal,
}

/// The mail store as the IMAP protocol layer uses it. Every method takes the account it acts
/// for; no method reaches another account's data.
#[async_trait::async_trait]
pub trait MailStore: Send + Sync + 'static {
    /// Checks a login and password. No back-off here: each IMAP listener keeps its own
    /// (`server::ListenerScope`), so failures through one identity's onion never show through
    /// another's (issue 18, item 4).
    async fn login(&self, login: &str, password: &str) -> Result<LoggedIn, LoginError>;

    /// Every mailbox of the account (INBOX and the special-use ones always exist).
    async fn list_mailboxes(&self, account: &str) -> Result<Vec<MailboxInfo>, MailStoreError>;

    async fn create_mailbox(&self, account: &str, name: &str) -> Result<(), MailStoreError>;

    /// Deletes a mailbox and its messages. INBOX cannot be deleted.
    async fn delete_mailbox(&self, account: &str, name: &str) -> Result<(), MailStoreError>;

    /// Renames a mailbox (and its children). Renaming INBOX moves its messages to the new
    /// mailbox and leaves INBOX empty (RFC 3501 §6.3.5).
    async fn rename_mailbox(
        &self,
        account: &str,
        from: &str,
        to: &str,
    ) -> Result<(), MailStoreError>;

    async fn set_subscribed(
        &self,
        account: &str,
        name: &str,
        subscribed: bool,
    ) -> Result<(), MailStoreError>;

    /// STATUS without selecting.
    async fn status(&self, account: &str, name: &str) -> Result<MailboxStatus, MailStoreError>;

    /// SELECT / EXAMINE, and the resynchronisation after a change.
    async fn open_mailbox(
        &self,
        account: &str,
        name: &str,
    ) -> Result<MailboxSnapshot, MailStoreError>;

    /// The mailbox's current `version`, cheaply, so NOOP and IDLE resynchronise only after a
    /// change.
    async fn mailbox_version(
        &self,
        account: &str,
        mailbox: MailboxId,
    ) -> Result<u64, MailStoreError>;

    /// The decrypted bytes of the given messages (those that still exist), in UID order.
    async fn fetch(
        &self,
        account: &str,
        mailbox: MailboxId,
        uids: &[u32],
        part: Part,
    ) -> Result<Vec<(u32, Bytes)>, MailStoreError>;

    /// Changes flags; returns every named message's flags afterwards.
    async fn store_flags(
        &self,
        account: &str,
        mailbox: MailboxId,
        uids: &[u32],
        operation: FlagOperation,
        flags: &[Flag],
    ) -> Result<Vec<(u32, Vec<Flag>)>, MailStoreError>;

    /// COPY: the bodies are shared, not duplicated, but count against the quota again.
    async fn copy(
        &self,
        account: &str,
        from: MailboxId,
        uids: &[u32],
        to: &str,
    ) -> Result<Copied, MailStoreError>;

    /// MOVE (RFC 6851): copy and expunge from the source, atomically.
    async fn move_messages(
        &self,
        account: &str,
        from: MailboxId,
        uids: &[u32],
        to: &str,
    ) -> Result<Copied, MailStoreError>;

    /// Removes the messages flagged `\Deleted` (only those among `uids` when given, for UID
    /// EXPUNGE); returns the UIDs removed.
    async fn expunge(
        &self,
        account: &str,
        mailbox: MailboxId,
        uids: Option<&[u32]>,
    ) -> Result<Vec<u32>, MailStoreError>;

    /// APPEND: stores a message in a mailbox (quota checked, encrypted at rest); returns
    /// `(uid_validity, uid)` for APPENDUID.
    async fn append(
        &self,
        account: &str,
        mailbox: &str,
        flags: &[Flag],
        internal_date: Option<DateTime<Utc>>,
        message: Bytes,
    ) -> Result<(u32, u32), MailStoreError>;

    async fn quota(&self, account: &str) -> Result<QuotaUsage, MailStoreError>;

    /// Announces the id of every mailbox of the account that changes, from any session or
    /// delivery. A lagging receiver should resynchronise everything it watches.
    fn watch(&self, account: &str) -> broadcast::Receiver<MailboxId>;
}

/// The store as sessions share it.
pub type SharedMailStore = Arc<dyn MailStore>;
