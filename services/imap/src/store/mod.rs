//! Where the imap service keeps plans, accounts, vouchers, identities and mail.
//!
//! The store sees only what is safe to see: password hashes, sealed account keys, sealed message
//! bodies and keyed (HMAC) digests. Sealing and hashing happen in the service above it. Every
//! write that touches an account's mail starts by bumping the account row (`write_seq`), which
//! takes the row lock on PostgreSQL and the write lock on SQLite, so one account's writers are
//! serialised and UID allocation, quota and identity limits are exact without `SELECT … FOR
//! UPDATE` (which SQLite lacks).
//!
//! Both backends share one implementation (`store_impl!` in `sql.rs`) written in the dialect of
//! [`onionpost_runtime::sql`]; the suite in `tests/conformance.rs` runs the service over it on
//! SQLite and PostgreSQL through [`onionpost_runtime::conformance::each_backend`].

mod postgres;
mod sql;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use onionpost_runtime::{Database, Migrations};

pub use onionpost_runtime::db::StoreError;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use crate::mailstore::FlagOperation;

/// The migrations of both backends.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &sqlx::migrate!("migrations/sqlite"),
    postgres: &sqlx::migrate!("migrations/postgres"),
};

/// The store of an open database.
pub fn for_database(database: Database) -> Arc<dyn ImapStore> {
    match database {
        Database::Sqlite(pool) => Arc::new(SqliteStore::new(pool)),
        Database::Postgres(pool) => Arc::new(PostgresStore::new(pool)),
    }
}

/// An operator-defined plan as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanRecord {
    pub plan_id: String,
    pub name: String,
    pub quota_bytes: i64,
    pub identities_allowed: i64,
    pub gateway_allowed: bool,
    pub gateway_daily_limit: i64,
}

/// An account as stored, with its plan joined in.
#[derive(Clone, PartialEq, Eq)]
pub struct AccountRecord {
    pub account_id: String,
    pub login: String,
    /// PHC string (argon2id).
    pub password_hash: String,
    /// The account's data key, sealed with the carrier secret.
    pub sealed_key: Vec<u8>,
    pub plan: PlanRecord,
    pub paid_until_ms: i64,
    pub suspended: bool,
    pub created_at_ms: i64,
    pub used_bytes: i64,
    pub message_count: i64,
    pub identity_count: i64,
}

impl std::fmt::Debug for AccountRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountRecord")
            .field("account_id", &self.account_id)
            .field("plan_id", &self.plan.plan_id)
            .field("paid_until_ms", &self.paid_until_ms)
            .field("suspended", &self.suspended)
            .finish_non_exhaustive()
    }
}

/// A new account.
#[derive(Clone)]
pub struct NewAccount {
    pub account_id: String,
    pub login: String,
    pub password_hash: String,
    pub sealed_key: Vec<u8>,
    pub plan_id: String,
    pub paid_until_ms: i64,
    pub created_at_ms: i64,
}

/// A mailbox to create: its name, special-use role and UIDVALIDITY.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMailbox {
    pub name: String,
    pub special_use: Option<String>,
    pub uid_validity: u32,
}

/// A mailbox as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxRecord {
    pub mailbox_id: i64,
    pub name: String,
    pub special_use: Option<String>,
    pub uid_validity: u32,
    pub uid_next: u32,
    pub version: u64,
    pub subscribed: bool,
}

/// A message in a mailbox (its body is a shared blob).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageRecord {
    pub uid: u32,
    pub blob_id: i64,
    /// Space-separated flags.
    pub flags: String,
    pub internal_date_ms: i64,
    pub size: i64,
}

/// An identity as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityRecord {
    pub identity_id: String,
    pub account_id: String,
    pub address: String,
    pub onion: String,
    pub display_name: String,
    pub created_at_ms: i64,
}

/// An app password as stored: never the code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppPasswordRecord {
    pub app_password_id: String,
    pub account_id: String,
    pub name: String,
    /// SHA-256 of the code's 15 bytes.
    pub password_hash: Vec<u8>,
    pub created_at_ms: i64,
}

/// A batch of vouchers (the codes themselves are not stored, only their hashes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoucherBatch {
    pub batch_id: String,
    pub plan_id: String,
    pub days: i64,
    pub expires_at_ms: Option<i64>,
    pub minted_at_ms: i64,
}

/// A sealed body, ready to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewBlob {
    /// HMAC-SHA256 of the stored bytes under the account key.
    pub dedup_key: Vec<u8>,
    /// Plaintext size (RFC822.SIZE).
    pub size: i64,
    pub header_sealed: Vec<u8>,
    pub full_sealed: Vec<u8>,
}

/// Where to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MailboxRef {
    Name(String),
    /// A special-use role (`inbox`, `sent`, `quarantine`…).
    Role(&'static str),
}

/// What an append or delivery did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    Stored {
        mailbox_id: i64,
        uid_validity: u32,
        uid: u32,
    },
    /// Already delivered (same delivery key): nothing added.
    Duplicate {
        uid_validity: u32,
        uid: u32,
    },
    OverQuota {
        used_bytes: i64,
        limit_bytes: i64,
    },
    NoMailbox,
    NoAccount,
}

/// What COPY or MOVE did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CopyOutcome {
    Copied {
        to_mailbox_id: i64,
        uid_validity: u32,
        uids: Vec<(u32, u32)>,
    },
    NoSource,
    NoTarget,
    OverQuota {
        used_bytes: i64,
        limit_bytes: i64,
    },
}

/// What a mailbox change did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MailboxOutcome {
    /// Done; the ids of the mailboxes that changed.
    Done(Vec<i64>),
    NoSuchMailbox,
    AlreadyExists,
    /// The change is not allowed (deleting INBOX or a special-use mailbox).
    Refused(&'static str),
}

/// Why a voucher did or did not redeem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedeemOutcome {
    Redeemed,
    NoAccount,
    Unknown,
    AlreadyRedeemed,
    Expired,
}

/// Whether an identity was recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddIdentityOutcome {
    Added,
    LimitReached,
    NoAccount,
}

/// Whether an account was deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    NotFound,
    HasIdentities,
}

/// Storage of the imap service, one implementation per backend.
#[async_trait]
pub trait ImapStore: Send + Sync + 'static {
    // Plans.
    async fn insert_plan(&self, plan: &PlanRecord) -> Result<(), StoreError>;
    /// Replaces a plan's fields; false when there is no such plan.
    async fn update_plan(&self, plan: &PlanRecord) -> Result<bool, StoreError>;
    async fn plans(&self) -> Result<Vec<PlanRecord>, StoreError>;
    async fn plan(&self, plan_id: &str) -> Result<Option<PlanRecord>, StoreError>;
    async fn plan_by_name(&self, name: &str) -> Result<Option<PlanRecord>, StoreError>;

    // Accounts.
    /// Creates an account and its mailboxes together.
    async fn insert_account(
        &self,
        account: &NewAccount,
        mailboxes: &[NewMailbox],
    ) -> Result<(), StoreError>;
    async fn account(&self, account_id: &str) -> Result<Option<AccountRecord>, StoreError>;
    async fn account_by_login(&self, login: &str) -> Result<Option<AccountRecord>, StoreError>;
    /// Accounts with ids after `after`, in id order.
    async fn accounts_page(
        &self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<AccountRecord>, StoreError>;
    /// `(paid_until_ms, suspended)` of every account, for statistics.
    async fn account_dates(&self) -> Result<Vec<(i64, bool)>, StoreError>;
    async fn set_account_plan(&self, account_id: &str, plan_id: &str) -> Result<bool, StoreError>;
    async fn set_suspended(&self, account_id: &str, suspended: bool) -> Result<bool, StoreError>;
    async fn set_password_hash(&self, account_id: &str, hash: &str) -> Result<bool, StoreError>;
    /// Deletes the account, its key and all its mail; refused while identities remain.
    async fn delete_account(&self, account_id: &str) -> Result<DeleteOutcome, StoreError>;

    // App passwords.
    /// Adds an app password; [`StoreError::Duplicate`] when its id or hash exists.
    async fn insert_app_password(&self, record: &AppPasswordRecord) -> Result<(), StoreError>;
    /// An account's app passwords, oldest first.
    async fn app_passwords(&self, account_id: &str) -> Result<Vec<AppPasswordRecord>, StoreError>;
    /// Whether `password_hash` is one of the account's app passwords.
    async fn app_password_matches(
        &self,
        account_id: &str,
        password_hash: &[u8],
    ) -> Result<bool, StoreError>;
    /// Removes one of the account's app passwords; false when it has none by that id.
    async fn delete_app_password(
        &self,
        account_id: &str,
        app_password_id: &str,
    ) -> Result<bool, StoreError>;

    // Vouchers.
    async fn insert_vouchers(
        &self,
        batch: &VoucherBatch,
        code_hashes: &[Vec<u8>],
    ) -> Result<(), StoreError>;
    /// Creates an account that starts on a voucher: the account, its mailboxes, the voucher
    /// marked used and the account extended by it, in one transaction. Anything but
    /// [`RedeemOutcome::Redeemed`] leaves no account and the voucher as it was.
    async fn insert_account_redeeming(
        &self,
        account: &NewAccount,
        mailboxes: &[NewMailbox],
        code_hash: &[u8],
    ) -> Result<RedeemOutcome, StoreError>;
    /// Marks the voucher used and extends the account, atomically.
    async fn redeem_voucher(
        &self,
        account_id: &str,
        code_hash: &[u8],
        now_ms: i64,
    ) -> Result<RedeemOutcome, StoreError>;

    // Identities.
    async fn insert_identity(
        &self,
        identity: &IdentityRecord,
        allowed: i64,
    ) -> Result<AddIdentityOutcome, StoreError>;
    async fn identity(&self, identity_id: &str) -> Result<Option<IdentityRecord>, StoreError>;
    async fn identity_by_address(
        &self,
        address: &str,
    ) -> Result<Option<IdentityRecord>, StoreError>;
    async fn identity_by_onion(&self, onion: &str) -> Result<Option<IdentityRecord>, StoreError>;
    async fn identities(&self, account_id: &str) -> Result<Vec<IdentityRecord>, StoreError>;
    async fn remove_identity(&self, identity_id: &str) -> Result<bool, StoreError>;
    async fn identity_total(&self) -> Result<i64, StoreError>;

    // Mailboxes.
    async fn mailboxes(&self, account_id: &str) -> Result<Vec<MailboxRecord>, StoreError>;
    async fn mailbox_by_name(
        &self,
        account_id: &str,
        name: &str,
    ) -> Result<Option<MailboxRecord>, StoreError>;
    async fn mailbox_by_id(
        &self,
        account_id: &str,
        mailbox_id: i64,
    ) -> Result<Option<MailboxRecord>, StoreError>;
    /// Creates the mailboxes that do not exist yet (a name and its missing parents); the last
    /// one must not exist.
    async fn create_mailboxes(
        &self,
        account_id: &str,
        mailboxes: &[NewMailbox],
    ) -> Result<MailboxOutcome, StoreError>;
    async fn delete_mailbox(
        &self,
        account_id: &str,
        name: &str,
    ) -> Result<MailboxOutcome, StoreError>;
    /// Renames `from` and its children; renaming INBOX moves its messages into `inbox_target`,
    /// a new mailbox.
    async fn rename_mailbox(
        &self,
        account_id: &str,
        from: &str,
        to: &str,
        inbox_target: &NewMailbox,
    ) -> Result<MailboxOutcome, StoreError>;
    async fn set_subscribed(
        &self,
        account_id: &str,
        name: &str,
        subscribed: bool,
    ) -> Result<bool, StoreError>;

    // Messages.
    async fn messages(
        &self,
        account_id: &str,
        mailbox_id: i64,
    ) -> Result<Vec<MessageRecord>, StoreError>;
    /// Stores a message (a delivery when `delivery_key` is set), checking the quota.
    #[allow(clippy::too_many_arguments)]
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
    ) -> Result<AppendOutcome, StoreError>;
    /// COPY (quota checked) or MOVE (no quota change) of the named messages.
    async fn copy(
        &self,
        account_id: &str,
        from: i64,
        uids: &[u32],
        to: &str,
        quota_limit: i64,
        is_move: bool,
    ) -> Result<CopyOutcome, StoreError>;
    /// Changes flags; `None` when the mailbox does not exist.
    async fn store_flags(
        &self,
        account_id: &str,
        mailbox_id: i64,
        uids: &[u32],
        operation: FlagOperation,
        flags: &[String],
    ) -> Result<Option<Vec<(u32, String)>>, StoreError>;
    /// Removes `\Deleted` messages (among `uids` when given); `None` when the mailbox does not
    /// exist.
    async fn expunge(
        &self,
        account_id: &str,
        mailbox_id: i64,
        uids: Option<&[u32]>,
    ) -> Result<Option<Vec<u32>>, StoreError>;
    /// `(uid, dedup key, sealed part)` of the named messages that exist, in UID order.
    async fn fetch(
        &self,
        account_id: &str,
        mailbox_id: i64,
        uids: &[u32],
        header: bool,
    ) -> Result<Vec<(u32, Vec<u8>, Vec<u8>)>, StoreError>;

    // Statistics.
    async fn delivered_since(&self, since_ms: i64) -> Result<i64, StoreError>;
    async fn stored_bytes(&self) -> Result<i64, StoreError>;
}

/// Splits the stored space-separated flags.
pub fn split_flags(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// Applies a STORE to a message's flags (compared case-insensitively, RFC 3501 §2.3.2); the
/// result keeps the first spelling seen and has no duplicates.
pub fn apply_flags(current: &str, operation: FlagOperation, flags: &[String]) -> String {
    let mut result: Vec<String> = match operation {
        FlagOperation::Replace => Vec::new(),
        _ => split_flags(current),
    };
    match operation {
        FlagOperation::Add | FlagOperation::Replace => {
            for flag in flags {
                if !result.iter().any(|have| have.eq_ignore_ascii_case(flag)) {
                    result.push(flag.clone());
                }
            }
        }
        FlagOperation::Remove => {
            result.retain(|have| !flags.iter().any(|flag| flag.eq_ignore_ascii_case(have)));
        }
    }
    result.join(" ")
}

/// Whether the stored flags hold `flag`.
pub fn has_flag(flags: &str, flag: &str) -> bool {
    flags
        .split_whitespace()
        .any(|have| have.eq_ignore_ascii_case(flag))
}

/// Renames `name` when it is `from` or under `from/`.
pub(crate) fn renamed(name: &str, from: &str, to: &str) -> Option<String> {
    if name == from {
        return Some(to.to_owned());
    }
    name.strip_prefix(from)
        .and_then(|rest| rest.strip_prefix('/'))
        .map(|rest| format!("{to}/{rest}"))
}
