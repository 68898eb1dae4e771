//! The imap service's domain logic: accounts, plans, vouchers, identities, delivery, quota and
//! statistics. [`ImapService`] is what the gRPC adapter and the IMAP protocol layer (through
//! [`crate::mailstore::MailStore`], implemented in [`crate::mail`]) both call, so they share one
//! login back-off, one change hub and one view of every account.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{DateTime, Utc};
use onionpost_proto::address::{Address, OnionHost};
use onionpost_runtime::Database;
use onionpost_runtime::config::AccountSettings;
use onionpost_runtime::seal::CarrierSecret;
pub(crate) use onionpost_runtime::time::{from_ms, to_ms};
use sha2::Digest;
use tokio::sync::broadcast;

use crate::clock::Clock;
use crate::crypto::{AccountKey, KeyWrapper, SealedPart, os_random};
use crate::error::ImapError;
use crate::mailstore::{MailboxId, QuotaUsage, SharedMailStore};
use crate::message;
use crate::store::{
    AccountRecord, AddIdentityOutcome, AppPasswordRecord, AppendOutcome, DeleteOutcome,
    IdentityRecord, ImapStore, MailboxRef, NewAccount, NewBlob, NewMailbox, PlanRecord,
    RedeemOutcome, StoreError, VoucherBatch,
};

const DAY_MS: i64 = 86_400_000;
/// The plan created on first start when there is none (design: 1 GiB, 5 identities, no gateway).
const STANDARD_QUOTA_BYTES: i64 = 1 << 30;
const STANDARD_IDENTITIES: i64 = 5;
const MAX_LOGIN_LEN: usize = 64;
const MIN_PASSWORD_CHARS: usize = 8;
const MAX_PASSWORD_BYTES: usize = 1024;
/// Voucher codes carry 120 bits from the OS generator (24 Crockford base32 characters).
const VOUCHER_BYTES: usize = 15;
const MAX_VOUCHERS_PER_BATCH: u32 = 10_000;
const MAX_PAGE_SIZE: u32 = 500;
const DEFAULT_PAGE_SIZE: u32 = 100;
/// Buffered change announcements per account before a slow watcher is told it lagged.
const HUB_CAPACITY: usize = 256;

/// The mailboxes every account has, with their special-use roles (RFC 6154).
pub const DEFAULT_MAILBOXES: &[(&str, &str)] = &[
    ("INBOX", "inbox"),
    ("Sent", "sent"),
    ("Drafts", "drafts"),
    ("Trash", "trash"),
    ("Junk", "junk"),
    ("Archive", "archive"),
    ("Quarantine", "quarantine"),
    // Verified mail from senders an identity does not correspond with, until the account
    // accepts them (issue 22). No RFC 6154 role names it; clients show it by name.
    ("Requests", "requests"),
];

/// Where an account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountState {
    Active,
    Grace,
    Expired,
    Suspended,
}

impl AccountState {
    pub const ALL: [AccountState; 4] = [
        AccountState::Active,
        AccountState::Grace,
        AccountState::Expired,
        AccountState::Suspended,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AccountState::Active => "active",
            AccountState::Grace => "grace",
            AccountState::Expired => "expired",
            AccountState::Suspended => "suspended",
        }
    }
}

/// An account with its state worked out at one instant.
#[derive(Debug, Clone)]
pub struct AccountView {
    pub record: AccountRecord,
    pub state: AccountState,
    pub grace_until_ms: i64,
}

/// An identity with its account's state.
#[derive(Debug, Clone)]
pub struct IdentityView {
    pub record: IdentityRecord,
    pub account_state: AccountState,
    pub gateway_allowed: bool,
}

/// Mailbox roles a delivery can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMailbox {
    Inbox,
    Sent,
    Quarantine,
    Junk,
    Requests,
}

impl DeliveryMailbox {
    fn role(self) -> &'static str {
        match self {
            DeliveryMailbox::Inbox => "inbox",
            DeliveryMailbox::Sent => "sent",
            DeliveryMailbox::Quarantine => "quarantine",
            DeliveryMailbox::Junk => "junk",
            DeliveryMailbox::Requests => "requests",
        }
    }
}

/// What the carrier established about a message's sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    Unspecified,
    Verified,
    Unsigned,
    Failed,
    Clearnet,
    Local,
    NotChecked,
}

impl Verification {
    fn as_str(self) -> &'static str {
        match self {
            Verification::Unspecified => "unknown",
            Verification::Verified => "verified",
            Verification::Unsigned => "unsigned",
            Verification::Failed => "failed",
            Verification::Clearnet => "clearnet",
            Verification::Local => "local",
            Verification::NotChecked => "not-checked",
        }
    }
}

/// A message to deliver.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub identity_id: String,
    pub mailbox: DeliveryMailbox,
    pub message: Vec<u8>,
    pub verification: Verification,
    pub verification_detail: String,
    pub flags: Vec<String>,
}

/// Why a delivery was refused (an answer for smtp-in, not a fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownIdentity,
    AccountUnavailable,
    AccountExpired,
    OverQuota,
}

/// What a delivery did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delivered {
    pub refusal: Option<Refusal>,
    pub duplicate: bool,
    pub uid_validity: u32,
    pub uid: u32,
}

/// The store at a glance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub accounts_by_state: Vec<(AccountState, u64)>,
    pub identities: u64,
    pub messages_delivered_today: u64,
    pub stored_bytes: u64,
    pub imap_sessions_open: u32,
}

/// Fields of a plan an update may change (`None`: keep).
#[derive(Debug, Clone, Default)]
pub struct PlanChanges {
    pub name: Option<String>,
    pub quota_bytes: Option<u64>,
    pub identities_allowed: Option<u32>,
    pub gateway_allowed: Option<bool>,
    pub gateway_daily_limit: Option<u32>,
}

/// Per-account change announcements, shared by every writer in the process (deliveries and
/// every IMAP session), so IDLE wakes whoever caused the change; on PostgreSQL also fed with the
/// other imap processes' changes ([`crate::changes`]).
#[derive(Debug, Default)]
pub(crate) struct Hub {
    senders: Mutex<HashMap<String, broadcast::Sender<MailboxId>>>,
}

impl Hub {
    pub(crate) fn subscribe(&self, account_id: &str) -> broadcast::Receiver<MailboxId> {
        let mut senders = self.senders.lock().expect("hub lock");
        senders
            .entry(account_id.to_owned())
            .or_insert_with(|| broadcast::channel(HUB_CAPACITY).0)
            .subscribe()
    }

    pub(crate) fn announce(&self, account_id: &str, mailboxes: &[MailboxId]) {
        let mut senders = self.senders.lock().expect("hub lock");
        let Some(sender) = senders.get(account_id) else {
            return;
        };
        if sender.receiver_count() == 0 {
            senders.remove(account_id);
            return;
        }
        for mailbox in mailboxes {
            // No receiver left is not an error: nobody is watching.
            let _ = sender.send(*mailbox);
        }
    }

    /// The accounts someone in this process watches (sessions that ended are forgotten).
    pub(crate) fn watched_accounts(&self) -> Vec<String> {
        let mut senders = self.senders.lock().expect("hub lock");
        senders.retain(|_, sender| sender.receiver_count() > 0);
        senders.keys().cloned().collect()
    }
}

/// Counts open IMAP sessions for GetStats; the protocol layer holds a guard per session.
#[derive(Debug, Clone, Default)]
pub struct SessionCounter(Arc<AtomicU32>);

/// Decrements the count when the session ends.
#[derive(Debug)]
pub struct SessionGuard(Arc<AtomicU32>);

impl SessionCounter {
    pub fn open(&self) -> SessionGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        SessionGuard(self.0.clone())
    }

    pub fn current(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn ImapStore>,
    pub(crate) keys: KeyWrapper,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) settings: AccountSettings,
    pub(crate) backoff: crate::backoff::LoginBackOff,
    pub(crate) hub: Hub,
    /// Sends this process's changes to the other imap processes; `None` on SQLite.
    pub(crate) publisher: Option<crate::changes::Publisher>,
    pub(crate) sessions: SessionCounter,
}

/// The imap service; cheap to clone (one shared state).
#[derive(Clone)]
pub struct ImapService {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for ImapService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ImapService(…)")
    }
}

/// Which passwords a login takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// A mail client (IMAP, SMTP): one of the account's app passwords, or its own password
    /// unless the carrier requires app passwords (`accounts.require_app_passwords`).
    MailClient,
    /// The portal: the account's own password, never an app password.
    AccountPassword,
}

/// Default account settings (the configuration defaults).
pub fn default_settings() -> AccountSettings {
    AccountSettings {
        grace_days: 30,
        initial_days: 30,
        default_plan: "standard".to_owned(),
        require_app_passwords: false,
        contact_requests: true,
    }
}

/// Opens the service over `database` with default account settings: what tests of the protocol
/// layer use to get a real store (`open_store(..).await?.mail_store()`).
pub async fn open_store(
    database: Database,
    secret: CarrierSecret,
    clock: Arc<dyn Clock>,
) -> Result<ImapService, ImapError> {
    ImapService::open(database, secret, clock, default_settings()).await
}

/// Lower-case ASCII letters, digits, `.`, `_`, `-`, starting with a letter or digit.
fn validate_login(login: &str) -> Result<String, ImapError> {
    let login = login.trim().to_ascii_lowercase();
    if login.is_empty() || login.len() > MAX_LOGIN_LEN {
        return Err(ImapError::invalid(
            "login",
            format!("must be 1 to {MAX_LOGIN_LEN} characters"),
        ));
    }
    let first_ok = login
        .chars()
        .next()
        .is_some_and(|first| first.is_ascii_alphanumeric());
    let all_ok = login
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !first_ok || !all_ok {
        return Err(ImapError::invalid(
            "login",
            "use letters, digits, '.', '_' and '-', starting with a letter or digit",
        ));
    }
    Ok(login)
}

fn validate_password(password: &str) -> Result<(), ImapError> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(ImapError::invalid(
            "password",
            format!("must be {MIN_PASSWORD_CHARS} characters to {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn random_id(prefix: &str) -> String {
    let mut bytes = [0u8; 12];
    os_random(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

/// A random non-zero UIDVALIDITY.
pub(crate) fn random_uid_validity() -> u32 {
    loop {
        let mut bytes = [0u8; 4];
        os_random(&mut bytes);
        let value = u32::from_be_bytes(bytes);
        if value != 0 {
            return value;
        }
    }
}

/// Password hashes computed at once, process-wide: twice the CPUs. Each argon2 run holds
/// 19 MiB, so a flood of logins with no bound could exhaust memory; beyond the bound a check
/// waits its turn (queued, never refused, so a login is answered the same under load).
fn hashing_limit() -> usize {
    std::thread::available_parallelism().map_or(2, |cpus| cpus.get()) * 2
}

/// Runs one argon2 computation on the blocking pool once a slot of [`hashing_limit`] is free.
async fn bounded_hashing<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    static SLOTS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    let _slot = SLOTS
        .get_or_init(|| tokio::sync::Semaphore::new(hashing_limit()))
        .acquire()
        .await
        .expect("the hashing semaphore is never closed");
    tokio::task::spawn_blocking(move || {
        #[cfg(test)]
        let _counted = tests::Hashing::start();
        work()
    })
    .await
}

async fn hash_password(password: String) -> Result<String, ImapError> {
    bounded_hashing(move || {
        let mut salt = [0u8; 16];
        os_random(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(|error| error.to_string())?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|error| error.to_string())
    })
    .await
    .map_err(|error| ImapError::Internal(format!("password hashing task: {error}")))?
    .map_err(|error| ImapError::Internal(format!("password hashing: {error}")))
}

/// A hash of nothing anyone knows, checked when a login does not exist so that answering
/// takes as long as for a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let mut secret = [0u8; 16];
        os_random(&mut secret);
        let salt = SaltString::encode_b64(&secret).expect("16 bytes is a valid salt");
        Argon2::default()
            .hash_password(&secret, &salt)
            .expect("argon2 with default parameters hashes")
            .to_string()
    })
}

async fn verify_password(password: String, hash: String) -> Result<bool, ImapError> {
    bounded_hashing(move || {
        let Ok(parsed) = PasswordHash::new(&hash) else {
            return false;
        };
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
    .await
    .map_err(|error| ImapError::Internal(format!("password check task: {error}")))
}

/// An identity's display name: it goes into a key's user ID and a record, so it is bounded and
/// has no control characters.
pub(crate) fn check_display_name(display_name: &str) -> Result<(), ImapError> {
    if display_name.len() > 256 || display_name.chars().any(char::is_control) {
        return Err(ImapError::invalid(
            "display_name",
            "too long or has control characters",
        ));
    }
    Ok(())
}

/// Canonical `local@<56 base32>.onion` (the carrier-wide parser of `onionpost_proto::address`:
/// checksum verified, subdomain labels before the onion removed), and the onion host alone.
fn canonical_address(address: &str) -> Result<(String, String), ImapError> {
    let address = Address::parse(address.trim())
        .map_err(|error| ImapError::invalid("address", error.to_string()))?;
    Ok((address.to_string(), address.host().to_string()))
}

fn canonical_onion(host: &str) -> Result<String, ImapError> {
    OnionHost::parse(host.trim())
        .map(|host| host.to_string())
        .map_err(|error| ImapError::invalid("address", error.to_string()))
}

/// The canonical bytes of a voucher code: Crockford base32, so case, dashes, spaces and the
/// look-alikes (O for 0, I and L for 1) do not matter.
/// A voucher's outcome as the caller hears it.
fn redeemed(outcome: RedeemOutcome) -> Result<(), ImapError> {
    match outcome {
        RedeemOutcome::Redeemed => Ok(()),
        RedeemOutcome::NoAccount => Err(ImapError::NotFound("account")),
        RedeemOutcome::Unknown => Err(ImapError::NotFound("voucher")),
        RedeemOutcome::AlreadyRedeemed => Err(ImapError::FailedPrecondition(
            "the voucher has been redeemed already".to_owned(),
        )),
        RedeemOutcome::Expired => Err(ImapError::FailedPrecondition(
            "the voucher has expired".to_owned(),
        )),
    }
}

fn voucher_bytes(code: &str) -> Option<Vec<u8>> {
    let cleaned: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' ' | '\t'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let bytes = base32::decode(base32::Alphabet::Crockford, &cleaned)?;
    (bytes.len() == VOUCHER_BYTES).then_some(bytes)
}

fn voucher_code(bytes: &[u8]) -> String {
    let text = base32::encode(base32::Alphabet::Crockford, bytes);
    text.as_bytes()
        .chunks(4)
        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

impl ImapService {
    /// Opens the service: the store over `database`, the account-key wrapper from `secret`,
    /// and the default plan when there is no plan yet.
    pub async fn open(
        database: Database,
        secret: CarrierSecret,
        clock: Arc<dyn Clock>,
        settings: AccountSettings,
    ) -> Result<Self, ImapError> {
        let publisher = crate::changes::Publisher::for_database(&database);
        let service = ImapService {
            inner: Arc::new(Inner {
                store: crate::store::for_database(database),
                keys: KeyWrapper::new(&secret),
                clock,
                settings,
                backoff: Default::default(),
                hub: Hub::default(),
                publisher,
                sessions: SessionCounter::default(),
            }),
        };
        service.ensure_default_plan().await?;
        Ok(service)
    }

    /// The mail store the IMAP protocol layer uses.
    pub fn mail_store(&self) -> SharedMailStore {
        Arc::new(self.clone())
    }

    /// Announces changed mailboxes of `account_id` to the watchers in this process and, on
    /// PostgreSQL, to the other imap processes ([`crate::changes`]). Called once the store has
    /// committed the change.
    pub(crate) async fn announce(&self, account_id: &str, mailboxes: &[MailboxId]) {
        self.inner.hub.announce(account_id, mailboxes);
        if let Some(publisher) = &self.inner.publisher {
            publisher.publish(account_id, mailboxes).await;
        }
    }

    /// The open-session counter reported by GetStats.
    pub fn sessions(&self) -> SessionCounter {
        self.inner.sessions.clone()
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    async fn ensure_default_plan(&self) -> Result<(), ImapError> {
        if !self.inner.store.plans().await?.is_empty() {
            return Ok(());
        }
        let plan = PlanRecord {
            plan_id: random_id("plan"),
            name: self.inner.settings.default_plan.clone(),
            quota_bytes: STANDARD_QUOTA_BYTES,
            identities_allowed: STANDARD_IDENTITIES,
            gateway_allowed: false,
            gateway_daily_limit: 0,
        };
        match self.inner.store.insert_plan(&plan).await {
            // Another process sharing the database created it first.
            Ok(()) | Err(StoreError::Duplicate) => {}
            Err(error) => return Err(error.into()),
        }
        tracing::info!(plan = %plan.name, "default plan created");
        Ok(())
    }

    /// The state of an account with these dates at `now`.
    pub fn state_of(&self, paid_until_ms: i64, suspended: bool, now_ms: i64) -> AccountState {
        if suspended {
            AccountState::Suspended
        } else if now_ms < paid_until_ms {
            AccountState::Active
        } else if now_ms < self.grace_until(paid_until_ms) {
            AccountState::Grace
        } else {
            AccountState::Expired
        }
    }

    fn grace_until(&self, paid_until_ms: i64) -> i64 {
        paid_until_ms.saturating_add(i64::from(self.inner.settings.grace_days) * DAY_MS)
    }

    pub(crate) fn view(&self, record: AccountRecord) -> AccountView {
        let now = to_ms(self.now());
        AccountView {
            state: self.state_of(record.paid_until_ms, record.suspended, now),
            grace_until_ms: self.grace_until(record.paid_until_ms),
            record,
        }
    }

    pub(crate) async fn account_record(
        &self,
        account_id: &str,
    ) -> Result<AccountRecord, ImapError> {
        self.inner
            .store
            .account(account_id)
            .await?
            .ok_or(ImapError::NotFound("account"))
    }

    pub(crate) fn account_key(&self, record: &AccountRecord) -> Result<AccountKey, ImapError> {
        Ok(self
            .inner
            .keys
            .open(&record.account_id, &record.sealed_key)?)
    }

    // Plans.

    pub async fn create_plan(
        &self,
        name: &str,
        quota_bytes: u64,
        identities_allowed: u32,
        gateway_allowed: bool,
        gateway_daily_limit: u32,
    ) -> Result<PlanRecord, ImapError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 64 {
            return Err(ImapError::invalid(
                "plan.name",
                "must be 1 to 64 characters",
            ));
        }
        let plan = PlanRecord {
            plan_id: random_id("plan"),
            name: name.to_owned(),
            quota_bytes: i64::try_from(quota_bytes)
                .map_err(|_| ImapError::invalid("plan.quota_bytes", "too large"))?,
            identities_allowed: i64::from(identities_allowed),
            gateway_allowed,
            gateway_daily_limit: i64::from(gateway_daily_limit),
        };
        match self.inner.store.insert_plan(&plan).await {
            Ok(()) => Ok(plan),
            Err(StoreError::Duplicate) => Err(ImapError::AlreadyExists(format!(
                "a plan named {name:?} exists"
            ))),
            Err(error) => Err(error.into()),
        }
    }

    pub async fn update_plan(
        &self,
        plan_id: &str,
        changes: PlanChanges,
    ) -> Result<PlanRecord, ImapError> {
        let mut plan = self
            .inner
            .store
            .plan(plan_id)
            .await?
            .ok_or(ImapError::NotFound("plan"))?;
        if let Some(name) = changes.name {
            let name = name.trim().to_owned();
            if name.is_empty() || name.len() > 64 {
                return Err(ImapError::invalid(
                    "plan.name",
                    "must be 1 to 64 characters",
                ));
            }
            plan.name = name;
        }
        if let Some(quota) = changes.quota_bytes {
            plan.quota_bytes = i64::try_from(quota)
                .map_err(|_| ImapError::invalid("plan.quota_bytes", "too large"))?;
        }
        if let Some(allowed) = changes.identities_allowed {
            plan.identities_allowed = i64::from(allowed);
        }
        if let Some(gateway) = changes.gateway_allowed {
            plan.gateway_allowed = gateway;
        }
        if let Some(limit) = changes.gateway_daily_limit {
            plan.gateway_daily_limit = i64::from(limit);
        }
        match self.inner.store.update_plan(&plan).await {
            Ok(true) => Ok(plan),
            Ok(false) => Err(ImapError::NotFound("plan")),
            Err(StoreError::Duplicate) => Err(ImapError::AlreadyExists(format!(
                "a plan named {:?} exists",
                plan.name
            ))),
            Err(error) => Err(error.into()),
        }
    }

    pub async fn list_plans(&self) -> Result<Vec<PlanRecord>, ImapError> {
        Ok(self.inner.store.plans().await?)
    }

    // Accounts.

    /// Creates an account on `plan_id` (the default plan when empty), with its mailboxes and
    /// a fresh data key, paid for `accounts.initial_days`.
    pub async fn create_account(
        &self,
        login: &str,
        password: &str,
        plan_id: &str,
    ) -> Result<AccountView, ImapError> {
        let login = validate_login(login)?;
        validate_password(password)?;
        let plan = if plan_id.is_empty() {
            self.default_plan().await?
        } else {
            self.inner
                .store
                .plan(plan_id)
                .await?
                .ok_or_else(|| ImapError::invalid("plan_id", "no such plan"))?
        };
        if self.inner.store.account_by_login(&login).await?.is_some() {
            return Err(ImapError::AlreadyExists("login is taken".to_owned()));
        }
        let initial_days = i64::from(self.inner.settings.initial_days);
        let (account, mailboxes) = self
            .new_account(login, password, plan.plan_id, initial_days)
            .await?;
        match self.inner.store.insert_account(&account, &mailboxes).await {
            Ok(()) => {}
            Err(StoreError::Duplicate) => {
                return Err(ImapError::AlreadyExists("login is taken".to_owned()));
            }
            Err(error) => return Err(error.into()),
        }
        tracing::info!(account_id = %account.account_id, "account created");
        Ok(self.view(self.account_record(&account.account_id).await?))
    }

    /// Self-service sign-up with a voucher: the account starts on the voucher's plan with its
    /// days (no free initial days), and is made in the same transaction that spends the voucher,
    /// so a voucher that does not redeem leaves no account behind.
    pub async fn create_account_with_voucher(
        &self,
        login: &str,
        password: &str,
        code: &str,
    ) -> Result<AccountView, ImapError> {
        let login = validate_login(login)?;
        validate_password(password)?;
        // A malformed code costs the carrier no password hash. Whether the login is taken is
        // checked only after the voucher (in the store's transaction), so without a good
        // voucher nobody learns which logins exist.
        let bytes = voucher_bytes(code).ok_or(ImapError::NotFound("voucher"))?;
        let code_hash = sha2::Sha256::digest(&bytes).to_vec();
        // A placeholder until the voucher, in the same transaction, sets its own plan.
        let plan = self.default_plan().await?;
        let (account, mailboxes) = self.new_account(login, password, plan.plan_id, 0).await?;
        match self
            .inner
            .store
            .insert_account_redeeming(&account, &mailboxes, &code_hash)
            .await
        {
            Ok(outcome) => redeemed(outcome)?,
            Err(StoreError::Duplicate) => {
                return Err(ImapError::AlreadyExists("login is taken".to_owned()));
            }
            Err(error) => return Err(error.into()),
        }
        tracing::info!(account_id = %account.account_id, "account created with a voucher");
        Ok(self.view(self.account_record(&account.account_id).await?))
    }

    async fn default_plan(&self) -> Result<PlanRecord, ImapError> {
        let name = &self.inner.settings.default_plan;
        self.inner.store.plan_by_name(name).await?.ok_or_else(|| {
            ImapError::FailedPrecondition(format!("the default plan {name:?} does not exist"))
        })
    }

    /// A new account's rows: the login, the password hashed, a fresh sealed key, paid for
    /// `paid_days` from now, and the default mailboxes.
    async fn new_account(
        &self,
        login: String,
        password: &str,
        plan_id: String,
        paid_days: i64,
    ) -> Result<(NewAccount, Vec<NewMailbox>), ImapError> {
        let password_hash = hash_password(password.to_owned()).await?;
        let account_id = random_id("acct");
        let (_, sealed_key) = self.inner.keys.generate(&account_id);
        let now = to_ms(self.now());
        let account = NewAccount {
            account_id,
            login,
            password_hash,
            sealed_key,
            plan_id,
            paid_until_ms: now + paid_days * DAY_MS,
            created_at_ms: now,
        };
        let mailboxes = DEFAULT_MAILBOXES
            .iter()
            .map(|(name, role)| NewMailbox {
                name: (*name).to_owned(),
                special_use: Some((*role).to_owned()),
                uid_validity: random_uid_validity(),
            })
            .collect();
        Ok((account, mailboxes))
    }

    pub async fn account(&self, account_id: &str) -> Result<AccountView, ImapError> {
        Ok(self.view(self.account_record(account_id).await?))
    }

    pub async fn account_by_login(&self, login: &str) -> Result<AccountView, ImapError> {
        let record = self
            .inner
            .store
            .account_by_login(&login.trim().to_ascii_lowercase())
            .await?
            .ok_or(ImapError::NotFound("account"))?;
        Ok(self.view(record))
    }

    /// One page of accounts (in id order), optionally only those in `state`. The page token is
    /// the last id returned.
    pub async fn list_accounts(
        &self,
        state: Option<AccountState>,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<AccountView>, String), ImapError> {
        let page_size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            size => size.min(MAX_PAGE_SIZE),
        } as usize;
        let mut after = page_token.to_owned();
        let mut page = Vec::new();
        loop {
            let batch = self
                .inner
                .store
                .accounts_page(&after, (page_size + 1) as i64)
                .await?;
            let exhausted = batch.len() <= page_size;
            for record in batch {
                after = record.account_id.clone();
                let view = self.view(record);
                if state.is_none_or(|wanted| view.state == wanted) {
                    page.push(view);
                    if page.len() == page_size + 1 {
                        break;
                    }
                }
            }
            if page.len() > page_size {
                page.truncate(page_size);
                let token = page
                    .last()
                    .map(|view| view.record.account_id.clone())
                    .unwrap_or_default();
                return Ok((page, token));
            }
            if exhausted {
                return Ok((page, String::new()));
            }
        }
    }

    /// Changes the plan and/or suspends or resumes an account.
    pub async fn update_account(
        &self,
        account_id: &str,
        plan_id: Option<&str>,
        suspended: Option<bool>,
    ) -> Result<AccountView, ImapError> {
        self.account_record(account_id).await?;
        if let Some(plan_id) = plan_id {
            if self.inner.store.plan(plan_id).await?.is_none() {
                return Err(ImapError::invalid("account.plan_id", "no such plan"));
            }
            self.inner
                .store
                .set_account_plan(account_id, plan_id)
                .await?;
        }
        if let Some(suspended) = suspended {
            self.inner
                .store
                .set_suspended(account_id, suspended)
                .await?;
            tracing::info!(account_id, suspended, "account suspension changed");
        }
        self.account(account_id).await
    }

    pub async fn set_password(&self, account_id: &str, password: &str) -> Result<(), ImapError> {
        validate_password(password)?;
        self.account_record(account_id).await?;
        let hash = hash_password(password.to_owned()).await?;
        if !self
            .inner
            .store
            .set_password_hash(account_id, &hash)
            .await?
        {
            return Err(ImapError::NotFound("account"));
        }
        Ok(())
    }

    /// Deletes an account, its mail and its key; refused while identities remain.
    pub async fn delete_account(&self, account_id: &str) -> Result<(), ImapError> {
        match self.inner.store.delete_account(account_id).await? {
            DeleteOutcome::Deleted => {
                tracing::info!(account_id, "account deleted");
                Ok(())
            }
            DeleteOutcome::NotFound => Err(ImapError::NotFound("account")),
            DeleteOutcome::HasIdentities => Err(ImapError::FailedPrecondition(
                "the account still has identities; revoke and remove them first".to_owned(),
            )),
        }
    }

    /// Checks credentials with back-off per account and per connection; the same check for
    /// IMAP LOGIN and SMTP submission.
    pub async fn authenticate(
        &self,
        login: &str,
        password: &str,
        connection_key: &str,
    ) -> Result<AccountView, ImapError> {
        self.authenticate_through(
            login,
            password,
            connection_key,
            None,
            Credentials::MailClient,
        )
        .await
    }

    /// [`Self::authenticate`] for a login through `onion_identity`'s onion (when given): an
    /// account that does not own that identity fails exactly as a wrong password does, in the
    /// reply and in the back-off, so its own correct password tells the caller nothing about
    /// which onions share this carrier (issue 18, item 2).
    pub async fn authenticate_through(
        &self,
        login: &str,
        password: &str,
        connection_key: &str,
        onion_identity: Option<&str>,
        credentials: Credentials,
    ) -> Result<AccountView, ImapError> {
        let login = self
            .login_on_onion(&login.trim().to_ascii_lowercase(), onion_identity)
            .await?;
        // Failures count in the scope of the listener they came through and nowhere else: a
        // login backed off through one identity's onion (or the carrier-wide listener) must
        // not be backed off through another's, or failing a made-up login on X's onion and
        // timing it on Y's would tell that X and Y share this carrier (issue 18, item 4). A
        // guesser gains one scope per onion the account owns, no more: through any other onion
        // even the right password fails.
        let scoped = match onion_identity {
            Some(identity_id) => format!("onion:{identity_id}/{login}"),
            None => login.clone(),
        };
        let backoff = &self.inner.backoff;
        if let Some(retry_after_secs) = backoff.check(&scoped, connection_key, self.now()) {
            return Err(ImapError::BackOff { retry_after_secs });
        }
        let record = match self.check_password(&login, password, credentials).await? {
            Some(record) if self.owns(&record, onion_identity).await? => record,
            _ => {
                backoff.failed(&scoped, connection_key, self.now());
                tracing::debug!("login failed");
                return Err(ImapError::Unauthenticated);
            }
        };
        backoff.succeeded(&scoped);
        self.allowed_to_log_in(record)
    }

    /// The login to check for `login` given through `onion_identity`'s onion: the identity's own
    /// address stands for its owner's login there (what the autoconfig document on that onion
    /// tells mail clients to send, since the account's login would link its identities), and
    /// nowhere else. Any other text is returned unchanged.
    pub async fn login_on_onion(
        &self,
        login: &str,
        onion_identity: Option<&str>,
    ) -> Result<String, ImapError> {
        let Some(identity_id) = onion_identity.filter(|_| login.contains('@')) else {
            return Ok(login.to_owned());
        };
        let Some(identity) = self.inner.store.identity(identity_id).await? else {
            return Ok(login.to_owned());
        };
        if !identity.address.eq_ignore_ascii_case(login) {
            return Ok(login.to_owned());
        }
        Ok(
            match self.inner.store.account(&identity.account_id).await? {
                Some(account) => account.login,
                None => login.to_owned(),
            },
        )
    }

    /// Whether `account` owns `identity_id`; true when no identity is named.
    async fn owns(
        &self,
        account: &AccountRecord,
        identity_id: Option<&str>,
    ) -> Result<bool, ImapError> {
        let Some(identity_id) = identity_id else {
            return Ok(true);
        };
        Ok(self
            .inner
            .store
            .identity(identity_id)
            .await?
            .is_some_and(|identity| identity.account_id == account.account_id))
    }

    /// Checks a login and password without the service's back-off, for a caller that keeps
    /// its own: each IMAP listener does, so that failures through one identity's onion never
    /// show through another's (issue 18, item 4).
    pub async fn verify_login(
        &self,
        login: &str,
        password: &str,
    ) -> Result<AccountView, ImapError> {
        let login = login.trim().to_ascii_lowercase();
        let Some(record) = self
            .check_password(&login, password, Credentials::MailClient)
            .await?
        else {
            tracing::debug!("login failed");
            return Err(ImapError::Unauthenticated);
        };
        self.allowed_to_log_in(record)
    }

    /// The account whose login and password these are, or `None`. A mail client's password
    /// may be one of the account's app passwords (a lookup by hash), else the account's own is
    /// verified (argon2id) unless the carrier requires app passwords. The slow hash runs
    /// whether or not the login exists (against a decoy), so both take the same time.
    async fn check_password(
        &self,
        login: &str,
        password: &str,
        credentials: Credentials,
    ) -> Result<Option<AccountRecord>, ImapError> {
        let record = if login.len() <= MAX_LOGIN_LEN && password.len() <= MAX_PASSWORD_BYTES {
            self.inner.store.account_by_login(login).await?
        } else {
            None
        };
        // Looked up for an unknown login too (under no account), so the lookup's time says
        // nothing about whether the login exists.
        let app_password = match voucher_bytes(password) {
            Some(bytes) if credentials == Credentials::MailClient => {
                let account_id = record
                    .as_ref()
                    .map_or("", |found| found.account_id.as_str());
                let hash = sha2::Sha256::digest(&bytes).to_vec();
                self.inner
                    .store
                    .app_password_matches(account_id, &hash)
                    .await?
            }
            _ => false,
        };
        // The slow hash runs even when an app password matched: a login whose app password is
        // right but which may not use this onion must fail in the time any failure takes, or an
        // account holder could time, through a stranger's onion, whether it shares the carrier.
        let own_password_opens = credentials == Credentials::AccountPassword
            || !self.inner.settings.require_app_passwords;
        let hash = match &record {
            Some(record) if own_password_opens && !app_password => record.password_hash.clone(),
            _ => decoy_hash().to_owned(),
        };
        let matches = verify_password(password.to_owned(), hash).await?;
        Ok(record.filter(|_| app_password || (matches && own_password_opens)))
    }

    fn allowed_to_log_in(&self, record: AccountRecord) -> Result<AccountView, ImapError> {
        let view = self.view(record);
        if view.state == AccountState::Suspended {
            return Err(ImapError::PermissionDenied);
        }
        Ok(view)
    }

    // App passwords.

    /// Makes an app password for an account: its record and the code, shown once.
    pub async fn create_app_password(
        &self,
        account_id: &str,
        name: &str,
    ) -> Result<(AppPasswordRecord, String), ImapError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(ImapError::invalid(
                "name",
                "1 to 64 characters, no control characters",
            ));
        }
        self.account_record(account_id).await?;
        let mut bytes = [0u8; VOUCHER_BYTES];
        os_random(&mut bytes);
        let record = AppPasswordRecord {
            app_password_id: random_id("app"),
            account_id: account_id.to_owned(),
            name: name.to_owned(),
            password_hash: sha2::Sha256::digest(bytes).to_vec(),
            created_at_ms: to_ms(self.now()),
        };
        self.inner.store.insert_app_password(&record).await?;
        tracing::info!(account_id, app_password_id = %record.app_password_id, "app password created");
        Ok((record, voucher_code(&bytes)))
    }

    /// An account's app passwords, oldest first.
    pub async fn app_passwords(
        &self,
        account_id: &str,
    ) -> Result<Vec<AppPasswordRecord>, ImapError> {
        self.account_record(account_id).await?;
        Ok(self.inner.store.app_passwords(account_id).await?)
    }

    /// Revokes one of an account's app passwords.
    pub async fn revoke_app_password(
        &self,
        account_id: &str,
        app_password_id: &str,
    ) -> Result<(), ImapError> {
        if !self
            .inner
            .store
            .delete_app_password(account_id, app_password_id)
            .await?
        {
            return Err(ImapError::NotFound("app password"));
        }
        tracing::info!(account_id, app_password_id, "app password revoked");
        Ok(())
    }

    // Identities.

    fn identity_view(&self, record: IdentityRecord, account: &AccountView) -> IdentityView {
        IdentityView {
            record,
            account_state: account.state,
            gateway_allowed: account.record.plan.gateway_allowed,
        }
    }

    /// Records an identity for an account, within the plan's number of identities.
    pub async fn add_identity(
        &self,
        identity_id: &str,
        account_id: &str,
        address: &str,
        display_name: &str,
    ) -> Result<IdentityView, ImapError> {
        let identity_id = identity_id.trim();
        if identity_id.is_empty() || identity_id.len() > 128 {
            return Err(ImapError::invalid(
                "identity_id",
                "must be 1 to 128 characters",
            ));
        }
        let (address, onion) = canonical_address(address)?;
        check_display_name(display_name)?;
        let account = self.account(account_id).await?;
        let record = IdentityRecord {
            identity_id: identity_id.to_owned(),
            account_id: account_id.to_owned(),
            address,
            onion,
            display_name: display_name.to_owned(),
            created_at_ms: to_ms(self.now()),
        };
        match self
            .inner
            .store
            .insert_identity(&record, account.record.plan.identities_allowed)
            .await
        {
            Ok(AddIdentityOutcome::Added) => Ok(self.identity_view(record, &account)),
            Ok(AddIdentityOutcome::LimitReached) => Err(ImapError::FailedPrecondition(format!(
                "the plan allows {} identities",
                account.record.plan.identities_allowed
            ))),
            Ok(AddIdentityOutcome::NoAccount) => Err(ImapError::NotFound("account")),
            Err(StoreError::Duplicate) => Err(ImapError::AlreadyExists(
                "the identity id or address is recorded already".to_owned(),
            )),
            Err(error) => Err(error.into()),
        }
    }

    async fn with_account(&self, record: IdentityRecord) -> Result<IdentityView, ImapError> {
        let account = self.account(&record.account_id).await?;
        Ok(self.identity_view(record, &account))
    }

    pub async fn identity(&self, identity_id: &str) -> Result<IdentityView, ImapError> {
        let record = self
            .inner
            .store
            .identity(identity_id)
            .await?
            .ok_or(ImapError::NotFound("identity"))?;
        self.with_account(record).await
    }

    pub async fn identity_by_address(&self, address: &str) -> Result<IdentityView, ImapError> {
        let (address, _) = canonical_address(address)?;
        let record = self
            .inner
            .store
            .identity_by_address(&address)
            .await?
            .ok_or(ImapError::NotFound("identity"))?;
        self.with_account(record).await
    }

    pub async fn identity_by_onion(&self, onion: &str) -> Result<IdentityView, ImapError> {
        let onion = canonical_onion(onion).map_err(|_| {
            ImapError::invalid(
                "onion",
                "must be a v3 onion host (56 base32 characters then .onion)",
            )
        })?;
        let record = self
            .inner
            .store
            .identity_by_onion(&onion)
            .await?
            .ok_or(ImapError::NotFound("identity"))?;
        self.with_account(record).await
    }

    pub async fn list_identities(&self, account_id: &str) -> Result<Vec<IdentityView>, ImapError> {
        let account = self.account(account_id).await?;
        let records = self.inner.store.identities(account_id).await?;
        Ok(records
            .into_iter()
            .map(|record| self.identity_view(record, &account))
            .collect())
    }

    pub async fn remove_identity(&self, identity_id: &str) -> Result<(), ImapError> {
        if !self.inner.store.remove_identity(identity_id).await? {
            return Err(ImapError::NotFound("identity"));
        }
        Ok(())
    }

    // Vouchers.

    /// Mints `count` codes worth `days` on `plan_id`; returns the batch id and the codes,
    /// which are stored only as SHA-256 hashes.
    pub async fn mint_vouchers(
        &self,
        plan_id: &str,
        days: u32,
        count: u32,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(String, Vec<String>), ImapError> {
        if self.inner.store.plan(plan_id).await?.is_none() {
            return Err(ImapError::invalid("plan_id", "no such plan"));
        }
        if days == 0 || days > 36_500 {
            return Err(ImapError::invalid("days", "must be 1 to 36500"));
        }
        if count == 0 || count > MAX_VOUCHERS_PER_BATCH {
            return Err(ImapError::invalid(
                "count",
                format!("must be 1 to {MAX_VOUCHERS_PER_BATCH}"),
            ));
        }
        let now = self.now();
        if expires_at.is_some_and(|expires| expires <= now) {
            return Err(ImapError::invalid("expires_at", "must be in the future"));
        }
        let batch = VoucherBatch {
            batch_id: random_id("batch"),
            plan_id: plan_id.to_owned(),
            days: i64::from(days),
            expires_at_ms: expires_at.map(to_ms),
            minted_at_ms: to_ms(now),
        };
        let mut codes = Vec::with_capacity(count as usize);
        let mut hashes = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let mut bytes = [0u8; VOUCHER_BYTES];
            os_random(&mut bytes);
            hashes.push(sha2::Sha256::digest(bytes).to_vec());
            codes.push(voucher_code(&bytes));
        }
        self.inner.store.insert_vouchers(&batch, &hashes).await?;
        tracing::info!(batch_id = %batch.batch_id, count, days, "vouchers minted");
        Ok((batch.batch_id, codes))
    }

    /// Redeems a code: extends paid-until from the later of now and paid-until, and moves the
    /// account to the voucher's plan.
    pub async fn redeem_voucher(
        &self,
        account_id: &str,
        code: &str,
    ) -> Result<AccountView, ImapError> {
        let bytes = voucher_bytes(code).ok_or(ImapError::NotFound("voucher"))?;
        let hash = sha2::Sha256::digest(&bytes).to_vec();
        let now = to_ms(self.now());
        let outcome = self
            .inner
            .store
            .redeem_voucher(account_id, &hash, now)
            .await?;
        redeemed(outcome)?;
        tracing::info!(account_id, "voucher redeemed");
        self.account(account_id).await
    }

    // Mail.

    /// Seals a message for an account: the dedup key and both sealed parts.
    pub(crate) fn seal_blob(&self, key: &AccountKey, bytes: &[u8]) -> NewBlob {
        let dedup_key = key.keyed_hash("blob", &[bytes]);
        let header = message::header_section(bytes);
        NewBlob {
            header_sealed: key.seal(header, &dedup_key, SealedPart::Header),
            full_sealed: key.seal(bytes, &dedup_key, SealedPart::Full),
            size: bytes.len() as i64,
            dedup_key,
        }
    }

    /// Puts a message into an identity's account (see `Deliver` in imap.proto).
    pub async fn deliver(&self, delivery: Delivery) -> Result<Delivered, ImapError> {
        let refused = |refusal| Delivered {
            refusal: Some(refusal),
            ..Delivered::default()
        };
        let Some(identity) = self.inner.store.identity(&delivery.identity_id).await? else {
            return Ok(refused(Refusal::UnknownIdentity));
        };
        let Some(record) = self.inner.store.account(&identity.account_id).await? else {
            return Ok(refused(Refusal::UnknownIdentity));
        };
        let account = self.view(record);
        match account.state {
            AccountState::Active => {}
            AccountState::Grace | AccountState::Suspended => {
                return Ok(refused(Refusal::AccountUnavailable));
            }
            AccountState::Expired => return Ok(refused(Refusal::AccountExpired)),
        }
        let key = self.account_key(&account.record)?;
        let original = message::strip_header(&delivery.message, message::VERIFICATION_HEADER);
        let role = delivery.mailbox.role();
        let message_id = message::message_id(&original).unwrap_or_default();
        let delivery_key = key.keyed_hash(
            "delivery",
            &[role.as_bytes(), message_id.as_bytes(), &original],
        );
        let stored = message::prepend_header(
            &original,
            message::VERIFICATION_HEADER,
            &verification_value(delivery.verification, &delivery.verification_detail),
        );
        let blob = self.seal_blob(&key, &stored);
        let flags = crate::flags::canonical_flags(&delivery.flags)
            .map_err(|reason| ImapError::invalid("flags", reason))?
            .join(" ");
        let now = to_ms(self.now());
        let target = MailboxRef::Role(role);
        let append = || {
            self.inner.store.append(
                &account.record.account_id,
                &target,
                &blob,
                &flags,
                now,
                account.record.plan.quota_bytes,
                Some(&delivery_key),
                now,
            )
        };
        let mut outcome = append().await?;
        if matches!(outcome, AppendOutcome::NoMailbox)
            && let Some((name, _)) = DEFAULT_MAILBOXES.iter().find(|(_, r)| *r == role)
        {
            // An account made before this mailbox was one of every account's: made now.
            self.inner
                .store
                .create_mailboxes(
                    &account.record.account_id,
                    &[NewMailbox {
                        name: (*name).to_owned(),
                        special_use: Some(role.to_owned()),
                        uid_validity: random_uid_validity(),
                    }],
                )
                .await?;
            outcome = append().await?;
        }
        match outcome {
            AppendOutcome::Stored {
                mailbox_id,
                uid_validity,
                uid,
            } => {
                self.announce(&account.record.account_id, &[mailbox_id])
                    .await;
                tracing::info!(
                    account_id = %account.record.account_id,
                    mailbox = role,
                    uid,
                    size = stored.len(),
                    "message delivered"
                );
                Ok(Delivered {
                    refusal: None,
                    duplicate: false,
                    uid_validity,
                    uid,
                })
            }
            AppendOutcome::Duplicate { uid_validity, uid } => Ok(Delivered {
                refusal: None,
                duplicate: true,
                uid_validity,
                uid,
            }),
            AppendOutcome::OverQuota { .. } => Ok(refused(Refusal::OverQuota)),
            AppendOutcome::NoAccount => Ok(refused(Refusal::UnknownIdentity)),
            AppendOutcome::NoMailbox => Err(ImapError::Internal(format!(
                "account has no {role} mailbox"
            ))),
        }
    }

    pub async fn quota(&self, account_id: &str) -> Result<QuotaUsage, ImapError> {
        let record = self.account_record(account_id).await?;
        Ok(QuotaUsage {
            used_bytes: u64::try_from(record.used_bytes).unwrap_or(0),
            limit_bytes: u64::try_from(record.plan.quota_bytes).unwrap_or(0),
            messages: u64::try_from(record.message_count).unwrap_or(0),
        })
    }

    pub async fn stats(&self) -> Result<Stats, ImapError> {
        let now = self.now();
        let now_ms = to_ms(now);
        let mut counts: HashMap<AccountState, u64> = HashMap::new();
        for (paid_until, suspended) in self.inner.store.account_dates().await? {
            *counts
                .entry(self.state_of(paid_until, suspended, now_ms))
                .or_default() += 1;
        }
        let midnight = now
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .map(|time| time.and_utc())
            .unwrap_or(now);
        Ok(Stats {
            accounts_by_state: AccountState::ALL
                .iter()
                .map(|state| (*state, counts.get(state).copied().unwrap_or(0)))
                .collect(),
            identities: u64::try_from(self.inner.store.identity_total().await?).unwrap_or(0),
            messages_delivered_today: u64::try_from(
                self.inner.store.delivered_since(to_ms(midnight)).await?,
            )
            .unwrap_or(0),
            stored_bytes: u64::try_from(self.inner.store.stored_bytes().await?).unwrap_or(0),
            imap_sessions_open: self.inner.sessions.current(),
        })
    }
}

/// The value of the verification header: `verified; signer=<detail>` and so on. The detail is
/// reduced to one printable line so it cannot add headers.
fn verification_value(verification: Verification, detail: &str) -> String {
    let detail: String = detail
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    let detail = detail.trim();
    match (verification, detail.is_empty()) {
        (_, true) => verification.as_str().to_owned(),
        (Verification::Verified, false) => format!("verified; signer={detail}"),
        (other, false) => format!("{}; {detail}", other.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Hashes running now and the most seen at once.
    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static MOST: AtomicUsize = AtomicUsize::new(0);

    /// Counts one running hash until dropped.
    pub(super) struct Hashing;

    impl Hashing {
        pub(super) fn start() -> Hashing {
            let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
            MOST.fetch_max(now, Ordering::SeqCst);
            Hashing
        }
    }

    impl Drop for Hashing {
        fn drop(&mut self) {
            RUNNING.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_password_hashing_is_bounded_and_queued() {
        let limit = hashing_limit();
        let checks: Vec<_> = (0..limit * 3)
            .map(|_| {
                tokio::spawn(bounded_hashing(|| {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }))
            })
            .collect();
        for check in checks {
            // Queued, not refused: every check completes.
            check.await.unwrap().unwrap();
        }
        let most = MOST.load(Ordering::SeqCst);
        assert!(most <= limit, "{most} hashes at once, limit {limit}");
        assert!(most >= 2, "hashes still run in parallel: {most}");
    }

    #[test]
    fn shared_address_forms_imap_canonicalises_every_spelling_and_refuses_bad_ones() {
        use onionpost_proto::address::examples;
        let host = OnionHost::from_ed25519(&[b'i'; 32]);
        for form in examples::accepted_forms(&host) {
            let (address, onion) = canonical_address(&format!("Bob@{form}")).unwrap();
            assert_eq!(address, format!("bob@{host}"), "{form}");
            assert_eq!(onion, host.as_str(), "{form}");
            assert_eq!(canonical_onion(&form).unwrap(), host.as_str(), "{form}");
        }
        for (form, kind) in examples::refused_forms(&host) {
            let error = canonical_address(&format!("bob@{form}")).unwrap_err();
            assert!(
                error.to_string().contains(&kind.to_string()),
                "{form}: {error}"
            );
            assert!(canonical_onion(&form).is_err(), "{form}");
        }
    }

    #[test]
    fn logins_addresses_and_codes() {
        assert_eq!(validate_login(" Alice.B ").unwrap(), "alice.b");
        assert!(validate_login("").is_err());
        assert!(validate_login(&"a".repeat(65)).is_err());
        assert!(validate_login("-x").is_err());
        assert!(validate_login("a b").is_err());
        // A real v3 onion: the checksum is verified since addresses use the carrier-wide parser.
        let onion = OnionHost::from_ed25519(&[7; 32]).to_string();
        let (address, host) = canonical_address(&format!("Bob@www.{onion}")).unwrap();
        assert_eq!(address, format!("bob@{onion}"));
        assert_eq!(host, onion);
        assert!(canonical_address("bob@example.com").is_err());
        let bytes = [7u8; VOUCHER_BYTES];
        let code = voucher_code(&bytes);
        assert_eq!(code.len(), 24 + 5);
        assert_eq!(voucher_bytes(&code).unwrap(), bytes);
        assert_eq!(
            voucher_bytes(&code.to_lowercase().replace('-', " ")).unwrap(),
            bytes
        );
        assert!(voucher_bytes("ABCD").is_none());
        assert_eq!(
            verification_value(Verification::Verified, "AB12\r\nBcc: x"),
            "verified; signer=AB12  Bcc: x"
        );
    }
}
