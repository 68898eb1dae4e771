//! What an account holder can do, written once for the pages and for `/account/v1`.
//!
//! Every operation takes the signed-in account's id from the session, never from the request, and
//! every object named by id in a request (an identity) is checked to belong to that account; one
//! that does not is "no such identity", exactly like one that does not exist. The data belongs to
//! other services: imap (the account, its identities, vouchers, passwords), keys (fingerprints,
//! QR codes) and onion (whether an identity is online). An identity is made and revoked by one
//! call on imap's contract, which ties its onion, key and record together.

use chrono::{DateTime, Utc};
use onionpost_proto::ServiceName;
use onionpost_proto::imap::v1 as imap;
use onionpost_proto::keys::v1 as keys;
use onionpost_proto::onion::v1 as onion;
use onionpost_runtime::time::{from_ms, now_ms, timestamp_ms};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::PortalState;
use crate::error::{PortalError, Upstream as _};
use crate::session::{self, NewSession};
use onionpost_runtime::config::SignupPolicy;

/// Longest login, password and local part the portal passes on; the owning service decides the
/// rest of what is acceptable.
const MAX_FIELD_BYTES: usize = 1024;
/// Longest display name (it goes into the key's user ID).
const MAX_DISPLAY_NAME_CHARS: usize = 128;

/// Where an account stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccountState {
    /// Paid up: receives, reads, sends.
    Active,
    /// Past paid-until: new mail is deferred; reading works; a voucher brings it back.
    Grace,
    /// Past the grace period: new mail is refused; a voucher brings it back.
    Expired,
    /// Stopped by the operator.
    Suspended,
}

impl AccountState {
    fn from_proto(value: i32) -> Self {
        match imap::AccountState::try_from(value) {
            Ok(imap::AccountState::Grace) => AccountState::Grace,
            Ok(imap::AccountState::Expired) => AccountState::Expired,
            Ok(imap::AccountState::Suspended) => AccountState::Suspended,
            _ => AccountState::Active,
        }
    }
}

/// The signed-in account.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Account {
    pub login: String,
    /// The plan's name.
    pub plan: String,
    pub state: AccountState,
    pub paid_until: Option<DateTime<Utc>>,
    /// When the grace period ends.
    pub grace_until: Option<DateTime<Utc>>,
    pub quota_bytes: u64,
    pub used_bytes: u64,
    pub identities_allowed: u32,
    pub identities: u32,
    /// Whether the plan includes the clearnet gateway.
    pub gateway_allowed: bool,
    pub created_at: Option<DateTime<Utc>>,
}

/// Where an identity's onion stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IdentityState {
    /// Added to tor; its descriptor is not published yet.
    Publishing,
    /// Published: correspondents can reach it.
    Online,
    /// Publishing failed; tor keeps trying.
    Failed,
    /// Revoked.
    Revoked,
}

impl IdentityState {
    fn from_proto(value: i32) -> Self {
        match onion::OnionState::try_from(value) {
            Ok(onion::OnionState::Online) => IdentityState::Online,
            Ok(onion::OnionState::Failed) => IdentityState::Failed,
            Ok(onion::OnionState::Revoked | onion::OnionState::Retiring) => IdentityState::Revoked,
            _ => IdentityState::Publishing,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IdentityState::Publishing => "publishing",
            IdentityState::Online => "online",
            IdentityState::Failed => "failed",
            IdentityState::Revoked => "revoked",
        }
    }
}

/// One of the account's identities.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Identity {
    pub id: String,
    /// `local@<56 base32>.onion`.
    pub address: String,
    pub display_name: String,
    /// The OpenPGP fingerprint (upper-case hex).
    pub fingerprint: Option<String>,
    /// What to scan to add this identity as a contact: `openpgp4fpr:<FINGERPRINT>#a=<address>`.
    pub openpgp4fpr: Option<String>,
    pub state: IdentityState,
    /// The port a mail client reads on through this identity's onion (IMAP), if it has one.
    pub imap_port: Option<u16>,
    /// The port a mail client sends on through this identity's onion (submission), if any.
    pub submission_port: Option<u16>,
    /// Carrier onions this identity asks its correspondents to use while it is offline (signed
    /// by its key, served over its onion and carried in its mail).
    pub preferred_carriers: Vec<String>,
    pub created_at: Option<DateTime<Utc>>,
}

/// The onion's virtual port for `purpose`, if it has one.
fn port_for(ports: &[onion::PortMapping], purpose: onion::PortPurpose) -> Option<u16> {
    ports
        .iter()
        .find(|mapping| mapping.purpose == purpose as i32)
        .and_then(|mapping| u16::try_from(mapping.virtual_port).ok())
}

fn time(timestamp: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    timestamp.map(|value| from_ms(timestamp_ms(&value)))
}

/// Refuses what no owning service would take, before any call: empty or oversized text.
fn bounded(field: &str, value: &str) -> Result<(), PortalError> {
    if value.is_empty() {
        return Err(PortalError::invalid(field, "is required"));
    }
    if value.len() > MAX_FIELD_BYTES {
        return Err(PortalError::invalid(field, "is too long"));
    }
    Ok(())
}

/// Signs in with a login, password and (when the account has two-factor sign-in on) a code: a
/// new session. A wrong login, password or code is one answer; password failures count in imap's
/// back-off, the same as IMAP and SMTP logins, and codes in the portal's own count per account.
pub async fn sign_in(
    state: &PortalState,
    login: &str,
    password: &str,
    code: &str,
) -> Result<NewSession, PortalError> {
    let account_id = check_password(state, login, password).await?;
    // With two-factor sign-in on, a right password and a wrong code read as a wrong password.
    crate::second_factor::check(state, &account_id, code).await?;
    session::start(state, &account_id).await
}

/// The account id whose login and password these are.
async fn check_password(
    state: &PortalState,
    login: &str,
    password: &str,
) -> Result<String, PortalError> {
    if login.is_empty()
        || password.is_empty()
        || login.len() > MAX_FIELD_BYTES
        || password.len() > MAX_FIELD_BYTES
    {
        return Err(PortalError::SignInFailed);
    }
    let answer = state
        .directory
        .imap()?
        .authenticate(imap::AuthenticateRequest {
            login: login.to_owned(),
            password: password.to_owned(),
            // Each HTTP request is its own connection: only the per-login back-off applies, so
            // one person's failures never lock out another.
            connection_key: session::random_token(),
            onion_identity_id: String::new(),
            // The portal opens with the account's own password only, never an app password.
            account_password_only: true,
        })
        .await;
    match answer {
        Ok(answer) => answer
            .into_inner()
            .account
            .map(|account| account.account_id)
            .ok_or(PortalError::Internal),
        Err(status) => Err(match status.code() {
            tonic::Code::Unauthenticated => PortalError::SignInFailed,
            tonic::Code::ResourceExhausted => PortalError::TooManyAttempts {
                retry_after_secs: retry_after(status.message()),
            },
            tonic::Code::PermissionDenied => PortalError::Suspended,
            _ => PortalError::from_status(ServiceName::Imap, status),
        }),
    }
}

/// The seconds in imap's "retry in N s", or a minute when the words change.
fn retry_after(message: &str) -> u64 {
    message
        .split_whitespace()
        .find_map(|word| word.parse().ok())
        .unwrap_or(60)
}

/// Creates an account by the carrier's sign-up policy and signs it in.
pub async fn sign_up(
    state: &PortalState,
    login: &str,
    password: &str,
    voucher: &str,
) -> Result<NewSession, PortalError> {
    let voucher = voucher.trim();
    match state.settings.signup {
        SignupPolicy::Closed => {
            return Err(PortalError::SignUpRefused(
                "sign-up is closed on this carrier; its operator makes accounts",
            ));
        }
        SignupPolicy::Voucher if voucher.is_empty() => {
            return Err(PortalError::SignUpRefused(
                "sign-up on this carrier needs a voucher code",
            ));
        }
        SignupPolicy::Voucher | SignupPolicy::Open => {}
    }
    bounded("login", login)?;
    bounded("password", password)?;
    if voucher.len() > MAX_FIELD_BYTES {
        return Err(PortalError::invalid("voucher", "is too long"));
    }
    if !state.signups.check("signup") {
        return Err(PortalError::Busy(
            "too many sign-ups on this carrier right now; try again in a while".to_owned(),
        ));
    }
    let created = state
        .directory
        .imap()?
        .create_account(imap::CreateAccountRequest {
            login: login.to_owned(),
            password: password.to_owned(),
            plan_id: String::new(),
            voucher_code: voucher.to_owned(),
        })
        .await
        .upstream(ServiceName::Imap)
        .map_err(|error| match error {
            PortalError::NotFound(_) => PortalError::invalid("voucher", "no such voucher"),
            other => other,
        })?;
    tracing::info!(account_id = %created.account_id, "account signed up in the portal");
    session::start(state, &created.account_id).await
}

/// The account as its holder sees it.
pub async fn account(state: &PortalState, account_id: &str) -> Result<Account, PortalError> {
    let record = account_record(state, account_id).await?;
    describe_account(state, record).await
}

/// The account as imap holds it.
pub(crate) async fn account_record(
    state: &PortalState,
    account_id: &str,
) -> Result<imap::Account, PortalError> {
    state
        .directory
        .imap()?
        .get_account(imap::GetAccountRequest {
            account: Some(imap::get_account_request::Account::AccountId(
                account_id.to_owned(),
            )),
        })
        .await
        .upstream(ServiceName::Imap)
        .map_err(|error| match error {
            // Deleted while a session still named it.
            PortalError::NotFound(_) => PortalError::SignedOut,
            other => other,
        })
}

async fn describe_account(
    state: &PortalState,
    record: imap::Account,
) -> Result<Account, PortalError> {
    let plans = state
        .directory
        .imap()?
        .list_plans(imap::ListPlansRequest {})
        .await
        .upstream(ServiceName::Imap)?
        .plans;
    let plan = plans
        .into_iter()
        .find(|plan| plan.plan_id == record.plan_id)
        .map_or_else(|| record.plan_id.clone(), |plan| plan.name);
    Ok(Account {
        login: record.login,
        plan,
        state: AccountState::from_proto(record.state),
        paid_until: time(record.paid_until),
        grace_until: time(record.grace_until),
        quota_bytes: record.quota_bytes,
        used_bytes: record.used_bytes,
        identities_allowed: record.identities_allowed,
        identities: record.identities,
        gateway_allowed: record.gateway_allowed,
        created_at: time(record.created_at),
    })
}

/// Redeems a voucher for the account: more paid time, the voucher's plan.
pub async fn redeem(
    state: &PortalState,
    account_id: &str,
    code: &str,
) -> Result<Account, PortalError> {
    bounded("code", code.trim())?;
    let record = state
        .directory
        .imap()?
        .redeem_voucher(imap::RedeemVoucherRequest {
            account_id: account_id.to_owned(),
            code: code.trim().to_owned(),
        })
        .await
        .upstream(ServiceName::Imap)
        .map_err(|error| match error {
            PortalError::NotFound(_) => PortalError::invalid("code", "no such voucher"),
            other => other,
        })?;
    describe_account(state, record).await
}

/// Replaces the password after checking the current one, and ends the account's other
/// sessions (a stolen session does not outlive a password change).
pub async fn change_password(
    state: &PortalState,
    session: &session::Session,
    current: &str,
    new: &str,
) -> Result<(), PortalError> {
    verify_own_password(state, &session.account_id, "current_password", current).await?;
    bounded("new_password", new)?;
    state
        .directory
        .imap()?
        .set_password(imap::SetPasswordRequest {
            account_id: session.account_id.clone(),
            password: new.to_owned(),
        })
        .await
        .upstream(ServiceName::Imap)
        .map_err(|error| match error {
            PortalError::Rejected(detail) => PortalError::invalid("new_password", detail),
            other => other,
        })?;
    let ended = state
        .store
        .delete_account_sessions(&session.account_id, Some(&session.session_hash))
        .await?;
    tracing::info!(account_id = %session.account_id, ended, "password changed in the portal");
    Ok(())
}

/// Checks that `password` is the signed-in account's own (through imap's back-off); a wrong one
/// is a refusal of `field`.
pub(crate) async fn verify_own_password(
    state: &PortalState,
    account_id: &str,
    field: &str,
    password: &str,
) -> Result<(), PortalError> {
    let login = account_record(state, account_id).await?.login;
    match check_password(state, &login, password).await {
        Ok(checked) if checked == account_id => Ok(()),
        Ok(_) | Err(PortalError::SignInFailed) => Err(PortalError::invalid(field, "is not right")),
        Err(other) => Err(other),
    }
}

/// Deletes the account for good: every identity revoked (onion, key), then its mail and its own
/// key, then its sessions.
pub async fn delete_account(
    state: &PortalState,
    account_id: &str,
    password: &str,
) -> Result<(), PortalError> {
    verify_own_password(state, account_id, "password", password).await?;
    for identity in list_records(state, account_id).await? {
        revoke_record(state, &identity.identity_id).await?;
    }
    state
        .directory
        .imap()?
        .delete_account(imap::DeleteAccountRequest {
            account_id: account_id.to_owned(),
        })
        .await
        .upstream(ServiceName::Imap)?;
    state
        .store
        .delete_account_sessions(account_id, None)
        .await?;
    tracing::info!(account_id, "account deleted in the portal");
    Ok(())
}

async fn list_records(
    state: &PortalState,
    account_id: &str,
) -> Result<Vec<imap::Identity>, PortalError> {
    Ok(state
        .directory
        .imap()?
        .list_identities(imap::ListIdentitiesRequest {
            account_id: account_id.to_owned(),
        })
        .await
        .upstream(ServiceName::Imap)?
        .identities)
}

/// The account's identities, oldest first.
pub async fn identities(
    state: &PortalState,
    account_id: &str,
) -> Result<Vec<Identity>, PortalError> {
    let mut described = Vec::new();
    for record in list_records(state, account_id).await? {
        described.push(describe_identity(state, record).await?);
    }
    Ok(described)
}

/// The identity `identity_id` if it is the account's own.
pub(crate) async fn own_record(
    state: &PortalState,
    account_id: &str,
    identity_id: &str,
) -> Result<imap::Identity, PortalError> {
    if identity_id.is_empty() || identity_id.len() > MAX_FIELD_BYTES {
        return Err(PortalError::no_such_identity());
    }
    let found = state
        .directory
        .imap()?
        .get_identity(imap::GetIdentityRequest {
            identity: Some(imap::get_identity_request::Identity::IdentityId(
                identity_id.to_owned(),
            )),
        })
        .await
        .upstream(ServiceName::Imap);
    match found {
        Ok(record) if record.account_id == account_id => Ok(record),
        Ok(_) | Err(PortalError::NotFound(_) | PortalError::Rejected(_)) => {
            Err(PortalError::no_such_identity())
        }
        Err(other) => Err(other),
    }
}

/// One of the account's identities.
pub async fn identity(
    state: &PortalState,
    account_id: &str,
    identity_id: &str,
) -> Result<Identity, PortalError> {
    let record = own_record(state, account_id, identity_id).await?;
    describe_identity(state, record).await
}

pub(crate) async fn describe_identity(
    state: &PortalState,
    record: imap::Identity,
) -> Result<Identity, PortalError> {
    let (onion_state, ports) = onion_of(state, &record.identity_id).await?;
    let key = state
        .directory
        .keys()?
        .get_identity_key(keys::GetIdentityKeyRequest {
            identity: Some(keys::get_identity_key_request::Identity::IdentityId(
                record.identity_id.clone(),
            )),
        })
        .await
        .upstream(ServiceName::Keys);
    let (fingerprint, openpgp4fpr, preferred_carriers) = match key {
        Ok(key) => (
            (!key.fingerprint.is_empty()).then_some(key.fingerprint),
            (!key.openpgp4fpr_uri.is_empty()).then_some(key.openpgp4fpr_uri),
            key.preferred_carriers,
        ),
        Err(PortalError::NotFound(_)) => (None, None, Vec::new()),
        Err(other) => return Err(other),
    };
    Ok(Identity {
        id: record.identity_id,
        address: record.address,
        display_name: record.display_name,
        fingerprint,
        openpgp4fpr,
        state: onion_state,
        imap_port: port_for(&ports, onion::PortPurpose::Imap),
        submission_port: port_for(&ports, onion::PortPurpose::Submission),
        preferred_carriers,
        created_at: time(record.created_at),
    })
}

/// Where an identity's onion stands and which ports it opens; a revoked onion opens none.
async fn onion_of(
    state: &PortalState,
    identity_id: &str,
) -> Result<(IdentityState, Vec<onion::PortMapping>), PortalError> {
    match state
        .directory
        .onion()?
        .get_onion(onion::GetOnionRequest {
            identity_id: identity_id.to_owned(),
        })
        .await
        .upstream(ServiceName::Onion)
    {
        Ok(service) => Ok((IdentityState::from_proto(service.state), service.ports)),
        Err(PortalError::NotFound(_)) => Ok((IdentityState::Revoked, Vec::new())),
        Err(other) => Err(other),
    }
}

/// The QR code of one of the account's identities, as SVG.
pub async fn identity_qr(
    state: &PortalState,
    account_id: &str,
    identity_id: &str,
) -> Result<Vec<u8>, PortalError> {
    let record = own_record(state, account_id, identity_id).await?;
    let qr = state
        .directory
        .keys()?
        .get_identity_qr(keys::GetIdentityQrRequest {
            identity_id: record.identity_id,
            format: keys::QrFormat::Unspecified as i32,
        })
        .await
        .upstream(ServiceName::Keys)
        .map_err(|error| match error {
            PortalError::NotFound(_) => PortalError::no_such_identity(),
            other => other,
        })?;
    Ok(qr.image)
}

/// A new identity: its onion, its key and the account's record, within the plan's number.
pub async fn create_identity(
    state: &PortalState,
    account_id: &str,
    local_part: &str,
    display_name: &str,
) -> Result<Identity, PortalError> {
    bounded("local_part", local_part.trim())?;
    if display_name.chars().count() > MAX_DISPLAY_NAME_CHARS {
        return Err(PortalError::invalid("display_name", "is too long"));
    }
    if display_name.chars().any(char::is_control) {
        return Err(PortalError::invalid(
            "display_name",
            "must not contain control characters",
        ));
    }
    let created = state
        .directory
        .imap()?
        .create_identity(imap::CreateIdentityRequest {
            account_id: account_id.to_owned(),
            local_part: local_part.trim().to_owned(),
            display_name: display_name.trim().to_owned(),
        })
        .await
        .upstream(ServiceName::Imap)
        .map_err(|error| match error {
            PortalError::Rejected(detail) => PortalError::invalid("local_part", detail),
            other => other,
        })?;
    let record = created.identity.ok_or(PortalError::Internal)?;
    tracing::info!(account_id, identity_id = %record.identity_id, "identity created in the portal");
    describe_identity(state, record).await
}

/// Revokes one of the account's identities for good (its key, its onion, its record).
pub async fn revoke_identity(
    state: &PortalState,
    account_id: &str,
    identity_id: &str,
) -> Result<(), PortalError> {
    let record = own_record(state, account_id, identity_id).await?;
    revoke_record(state, &record.identity_id).await?;
    tracing::info!(account_id, identity_id, "identity revoked in the portal");
    Ok(())
}

/// An identity's key after it moved to a new one.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RotatedKey {
    pub identity_id: String,
    /// The new key's fingerprint.
    pub fingerprint: String,
    /// The key it replaced (still kept to open mail on its way to it).
    pub previous_fingerprint: String,
    /// How many correspondents of this identity were sent the new key in mail.
    pub peers_announced: u32,
}

/// Replaces one of the account's identities' key: same onion, same address; correspondents
/// move to the new key, told in mail signed by the old one.
pub async fn rotate_key(
    state: &PortalState,
    account_id: &str,
    identity_id: &str,
) -> Result<RotatedKey, PortalError> {
    let record = own_record(state, account_id, identity_id).await?;
    let rotated = state
        .directory
        .imap()?
        .rotate_identity_key(imap::RotateIdentityKeyRequest {
            identity_id: record.identity_id.clone(),
        })
        .await
        .upstream(ServiceName::Imap)?;
    tracing::info!(
        account_id,
        identity_id,
        "identity key rotated in the portal"
    );
    Ok(RotatedKey {
        identity_id: record.identity_id,
        fingerprint: rotated.fingerprint,
        previous_fingerprint: rotated.previous_fingerprint,
        peers_announced: rotated.peers_announced,
    })
}

async fn revoke_record(state: &PortalState, identity_id: &str) -> Result<(), PortalError> {
    state
        .directory
        .imap()?
        .revoke_identity(imap::RevokeIdentityRequest {
            identity_id: identity_id.to_owned(),
        })
        .await
        .upstream(ServiceName::Imap)?;
    Ok(())
}

/// An app password as listed: never the code.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppPassword {
    pub id: String,
    pub name: String,
    pub created_at: Option<DateTime<Utc>>,
}

/// A new app password, with its code: shown this once, never again.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NewAppPassword {
    pub id: String,
    pub name: String,
    /// The code a mail client logs in with (with the account's login).
    pub password: String,
    /// Delta Chat's `dclogin:` for each identity whose onion carries IMAP and submission: scan
    /// it in Delta Chat to set the account up (then set tor's SOCKS proxy in Delta Chat).
    pub delta_chat: Vec<DeltaChatLogin>,
}

/// One identity's Delta Chat login.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeltaChatLogin {
    pub address: String,
    /// `dclogin:<address>?p=…&v=1&ih=…` (Delta Chat's DCLOGIN scheme, version 1).
    pub dclogin: String,
}

fn app_password_view(record: imap::AppPassword) -> AppPassword {
    AppPassword {
        id: record.app_password_id,
        name: record.name,
        created_at: time(record.created_at),
    }
}

/// The account's app passwords, oldest first.
pub async fn app_passwords(
    state: &PortalState,
    account_id: &str,
) -> Result<Vec<AppPassword>, PortalError> {
    Ok(state
        .directory
        .imap()?
        .list_app_passwords(imap::ListAppPasswordsRequest {
            account_id: account_id.to_owned(),
        })
        .await
        .upstream(ServiceName::Imap)?
        .app_passwords
        .into_iter()
        .map(app_password_view)
        .collect())
}

/// A new app password for one mail client or device, with Delta Chat logins for it.
pub async fn create_app_password(
    state: &PortalState,
    account_id: &str,
    name: &str,
) -> Result<NewAppPassword, PortalError> {
    bounded("name", name.trim())?;
    let created = state
        .directory
        .imap()?
        .create_app_password(imap::CreateAppPasswordRequest {
            account_id: account_id.to_owned(),
            name: name.to_owned(),
        })
        .await
        .upstream(ServiceName::Imap)
        .map_err(|error| match error {
            PortalError::Rejected(detail) => PortalError::invalid("name", detail),
            other => other,
        })?;
    let record = created.app_password.ok_or(PortalError::Internal)?;
    // Only the login and each identity's ports: no plan, key or QR code is needed here.
    let login = account_record(state, account_id).await?.login;
    let mut delta_chat = Vec::new();
    for record in list_records(state, account_id).await? {
        let (_, ports) = onion_of(state, &record.identity_id).await?;
        if let Some(dclogin) = dclogin(&record.address, &ports, &login, &created.password) {
            delta_chat.push(DeltaChatLogin {
                address: record.address,
                dclogin,
            });
        }
    }
    Ok(NewAppPassword {
        id: record.app_password_id,
        name: record.name,
        password: created.password,
        delta_chat,
    })
}

/// Delta Chat's `dclogin:` for an identity whose onion carries IMAP and submission: the
/// identity's address, the account's login and the app password, plain IMAP and SMTP through
/// the onion (tor encrypts; Delta Chat reaches the onion through tor's SOCKS port).
pub fn dclogin(
    address: &str,
    ports: &[onion::PortMapping],
    login: &str,
    password: &str,
) -> Option<String> {
    let imap_port = port_for(ports, onion::PortPurpose::Imap)?;
    let submission_port = port_for(ports, onion::PortPurpose::Submission)?;
    let host = address.rsplit_once('@')?.1;
    let query = [
        ("p", password.to_owned()),
        ("v", "1".to_owned()),
        ("ih", host.to_owned()),
        ("ip", imap_port.to_string()),
        ("iu", login.to_owned()),
        ("is", "plain".to_owned()),
        ("sh", host.to_owned()),
        ("sp", submission_port.to_string()),
        ("su", login.to_owned()),
        ("spw", password.to_owned()),
        ("ss", "plain".to_owned()),
    ]
    .iter()
    .map(|(key, value)| {
        format!(
            "{key}={}",
            form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>()
        )
    })
    .collect::<Vec<_>>()
    .join("&");
    Some(format!("dclogin:{address}?{query}"))
}

/// Revokes one of the account's app passwords.
pub async fn revoke_app_password(
    state: &PortalState,
    account_id: &str,
    app_password_id: &str,
) -> Result<(), PortalError> {
    if app_password_id.is_empty() || app_password_id.len() > MAX_FIELD_BYTES {
        return Err(PortalError::NotFound("no such app password".to_owned()));
    }
    state
        .directory
        .imap()?
        .revoke_app_password(imap::RevokeAppPasswordRequest {
            account_id: account_id.to_owned(),
            app_password_id: app_password_id.to_owned(),
        })
        .await
        .upstream(ServiceName::Imap)
        .map_err(|error| match error {
            PortalError::NotFound(_) | PortalError::Rejected(_) => {
                PortalError::NotFound("no such app password".to_owned())
            }
            other => other,
        })?;
    Ok(())
}

/// Sessions not yet expired, for the portal's statistics.
pub async fn sessions_open(state: &PortalState) -> Result<u64, PortalError> {
    Ok(state.store.count_live(now_ms()).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dclogin_names_the_onion_the_login_and_the_app_password() {
        let onion = "x".repeat(56);
        let address = format!("erin@{onion}.onion");
        let port = |purpose: onion::PortPurpose, virtual_port| onion::PortMapping {
            purpose: purpose as i32,
            virtual_port,
            target_host: "127.0.0.1".to_owned(),
            target_port: 10_000,
        };
        let ports = [
            port(onion::PortPurpose::Smtp, 25),
            port(onion::PortPurpose::Imap, 143),
            port(onion::PortPurpose::Submission, 587),
        ];
        let uri = dclogin(&address, &ports, "erin", "AB12-CD34 &x").unwrap();
        assert_eq!(
            uri,
            format!(
                "dclogin:erin@{onion}.onion?p=AB12-CD34+%26x&v=1&ih={onion}.onion&ip=143&iu=erin\
                 &is=plain&sh={onion}.onion&sp=587&su=erin&spw=AB12-CD34+%26x&ss=plain"
            )
        );
        assert_eq!(
            dclogin(&address, &ports[..2], "erin", "p"),
            None,
            "no submission port"
        );
    }

    #[test]
    fn retry_after_is_read_from_imaps_words() {
        assert_eq!(retry_after("too many failed logins; retry in 17 s"), 17);
        assert_eq!(retry_after("slow down"), 60);
    }
}
