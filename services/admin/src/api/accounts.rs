//! Hosted accounts (owned by the imap service).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use onionpost_proto::ServiceName;
use onionpost_proto::imap::v1 as imap;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::lookup::fetch_account;
use super::{corrupt, next_token, page_size, time};
use crate::AdminState;
use crate::error::{AdminError, Upstream as _};
use crate::extract::{ApiJson, ApiQuery};
use crate::validate;

/// Where an account stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccountState {
    /// Paid up: receives, reads, sends.
    Active,
    /// Past paid-until, within the grace period: new mail deferred, reading allowed.
    Grace,
    /// Past the grace period: new mail refused; data kept until deleted.
    Expired,
    /// Stopped by the operator.
    Suspended,
}

impl AccountState {
    pub fn from_proto(value: i32) -> Option<Self> {
        match imap::AccountState::try_from(value).ok()? {
            imap::AccountState::Active => Some(AccountState::Active),
            imap::AccountState::Grace => Some(AccountState::Grace),
            imap::AccountState::Expired => Some(AccountState::Expired),
            imap::AccountState::Suspended => Some(AccountState::Suspended),
            imap::AccountState::Unspecified => None,
        }
    }

    pub fn to_proto(self) -> imap::AccountState {
        match self {
            AccountState::Active => imap::AccountState::Active,
            AccountState::Grace => imap::AccountState::Grace,
            AccountState::Expired => imap::AccountState::Expired,
            AccountState::Suspended => imap::AccountState::Suspended,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AccountState::Active => "active",
            AccountState::Grace => "grace",
            AccountState::Expired => "expired",
            AccountState::Suspended => "suspended",
        }
    }
}

/// Storage use against the plan's quota.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Quota {
    pub limit_bytes: u64,
    pub used_bytes: u64,
}

/// A hosted account. Never holds the password.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Account {
    pub id: String,
    pub login: String,
    /// The plan's id.
    pub plan: String,
    pub state: AccountState,
    pub paid_until: Option<DateTime<Utc>>,
    /// When the grace period ends and the account's data may be deleted.
    pub grace_until: Option<DateTime<Utc>>,
    pub quota: Quota,
    pub identities_allowed: u32,
    pub identities: u32,
    /// Whether the account may use the clearnet gateway.
    pub gateway_allowed: bool,
    pub created_at: Option<DateTime<Utc>>,
}

impl Account {
    pub fn from_proto(account: imap::Account) -> Result<Self, AdminError> {
        Ok(Account {
            state: AccountState::from_proto(account.state)
                .ok_or_else(|| corrupt("account state"))?,
            id: account.account_id,
            login: account.login,
            plan: account.plan_id,
            paid_until: time(account.paid_until),
            grace_until: time(account.grace_until),
            quota: Quota {
                limit_bytes: account.quota_bytes,
                used_bytes: account.used_bytes,
            },
            identities_allowed: account.identities_allowed,
            identities: account.identities,
            gateway_allowed: account.gateway_allowed,
            created_at: time(account.created_at),
        })
    }
}

/// A new account.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// Letters, digits and `. _ @ + -`.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._@+-]{1,64}$")]
    pub login: String,
    #[schema(min_length = 8, max_length = 1024)]
    pub password: String,
    /// A plan id; absent means the operator's default plan.
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
}

#[utoipa::path(
    post, path = "/v1/accounts", tag = "accounts",
    request_body = CreateAccount,
    responses((status = 201, description = "The account was created", body = Account)),
)]
pub async fn create_account(
    State(state): State<AdminState>,
    ApiJson(request): ApiJson<CreateAccount>,
) -> Result<(StatusCode, Json<Account>), AdminError> {
    validate::login("login", &request.login)?;
    validate::password("password", &request.password)?;
    let account = state
        .directory
        .imap()?
        .create_account(imap::CreateAccountRequest {
            login: request.login,
            password: request.password,
            plan_id: request.plan.unwrap_or_default(),
            voucher_code: String::new(),
        })
        .await
        .upstream(ServiceName::Imap)?;
    tracing::info!(account_id = %account.account_id, "account created");
    Ok((StatusCode::CREATED, Json(Account::from_proto(account)?)))
}

/// Which accounts a page holds.
#[derive(Debug, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListAccountsQuery {
    /// Only accounts in this state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<AccountState>,
    /// Accounts per page (1 to 500, default 50).
    #[param(minimum = 1, maximum = 500)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// From the previous page's `next_page_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_token: Option<String>,
}

/// One page of accounts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AccountPage {
    pub accounts: Vec<Account>,
    /// Absent on the last page.
    pub next_page_token: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/accounts", tag = "accounts",
    params(ListAccountsQuery),
    responses((status = 200, description = "One page of accounts", body = AccountPage)),
)]
pub async fn list_accounts(
    State(state): State<AdminState>,
    ApiQuery(query): ApiQuery<ListAccountsQuery>,
) -> Result<Json<AccountPage>, AdminError> {
    let page = state
        .directory
        .imap()?
        .list_accounts(imap::ListAccountsRequest {
            state: query
                .state
                .map(|state| state.to_proto() as i32)
                .unwrap_or_default(),
            page_size: page_size(query.limit)?,
            page_token: query.page_token.unwrap_or_default(),
        })
        .await
        .upstream(ServiceName::Imap)?;
    Ok(Json(AccountPage {
        accounts: page
            .accounts
            .into_iter()
            .map(Account::from_proto)
            .collect::<Result<_, _>>()?,
        next_page_token: next_token(page.next_page_token),
    }))
}

#[utoipa::path(
    get, path = "/v1/accounts/{id}", tag = "accounts",
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, description = "The account", body = Account)),
)]
pub async fn get_account(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Account>, AdminError> {
    Ok(Json(Account::from_proto(
        fetch_account(&state, &id).await?,
    )?))
}

/// Suspend or resume.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StateChange {
    /// Back to what the account's dates say (active, grace or expired).
    Active,
    Suspended,
}

/// Changes to an account; absent members stay as they are.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccount {
    /// `suspended` stops the account; `active` resumes it.
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<StateChange>,
    /// A plan id.
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// A new password (operator reset).
    #[serde(default)]
    #[schema(min_length = 8, max_length = 1024)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

#[utoipa::path(
    patch, path = "/v1/accounts/{id}", tag = "accounts",
    params(("id" = String, Path, description = "Account id")),
    request_body = UpdateAccount,
    responses((status = 200, description = "The account as changed", body = Account)),
)]
pub async fn update_account(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<UpdateAccount>,
) -> Result<Json<Account>, AdminError> {
    if let Some(password) = &request.password {
        validate::password("password", password)?;
    }
    if let Some(plan) = &request.plan
        && plan.trim().is_empty()
    {
        return Err(AdminError::invalid("plan", "must not be empty"));
    }
    let mut imap = state.directory.imap()?;
    let mut paths = Vec::new();
    let mut change = imap::Account {
        account_id: id.clone(),
        ..Default::default()
    };
    if let Some(target) = request.state {
        paths.push("state".to_owned());
        change.state = match target {
            StateChange::Active => imap::AccountState::Active,
            StateChange::Suspended => imap::AccountState::Suspended,
        } as i32;
    }
    if let Some(plan) = request.plan {
        paths.push("plan_id".to_owned());
        change.plan_id = plan;
    }
    // The account must exist before a password is set, so a reset of a mistyped id is a 404
    // rather than a silent no-op.
    let mut account = fetch_account(&state, &id).await?;
    if !paths.is_empty() {
        account = imap
            .update_account(imap::UpdateAccountRequest {
                account: Some(change),
                update_mask: Some(prost_types::FieldMask { paths }),
            })
            .await
            .upstream(ServiceName::Imap)?;
        tracing::info!(account_id = %id, "account updated");
    }
    if let Some(password) = request.password {
        imap.set_password(imap::SetPasswordRequest {
            account_id: id.clone(),
            password,
        })
        .await
        .upstream(ServiceName::Imap)?;
        tracing::info!(account_id = %id, "account password reset");
    }
    Ok(Json(Account::from_proto(account)?))
}

#[utoipa::path(
    delete, path = "/v1/accounts/{id}", tag = "accounts",
    params(("id" = String, Path, description = "Account id")),
    responses((status = 204, description = "The account, its identities (revoked first) and its mail are gone")),
)]
pub async fn delete_account(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AdminError> {
    let mut imap = state.directory.imap()?;
    // imap refuses to delete an account whose identities are still reachable: revoke them first,
    // so no address stays online with nobody behind it.
    let identities = imap
        .list_identities(imap::ListIdentitiesRequest {
            account_id: id.clone(),
        })
        .await
        .upstream(ServiceName::Imap)?;
    for identity in identities.identities {
        imap.revoke_identity(imap::RevokeIdentityRequest {
            identity_id: identity.identity_id,
        })
        .await
        .upstream(ServiceName::Imap)?;
    }
    imap.delete_account(imap::DeleteAccountRequest {
        account_id: id.clone(),
    })
    .await
    .upstream(ServiceName::Imap)?;
    tracing::info!(account_id = %id, "account deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// A voucher code to redeem.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Redeem {
    #[schema(min_length = 1, max_length = 128)]
    pub code: String,
}

#[utoipa::path(
    post, path = "/v1/accounts/{id}/redeem", tag = "accounts",
    params(("id" = String, Path, description = "Account id")),
    request_body = Redeem,
    responses((status = 200, description = "Redeemed: paid-until extended", body = Account)),
)]
pub async fn redeem_voucher(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<Redeem>,
) -> Result<Json<Account>, AdminError> {
    let code = request.code.trim();
    if code.is_empty() || code.len() > 128 {
        return Err(AdminError::invalid("code", "must be 1 to 128 characters"));
    }
    let account = state
        .directory
        .imap()?
        .redeem_voucher(imap::RedeemVoucherRequest {
            account_id: id.clone(),
            code: code.to_owned(),
        })
        .await
        .upstream(ServiceName::Imap)?;
    tracing::info!(account_id = %id, "voucher redeemed");
    Ok(Json(Account::from_proto(account)?))
}

/// An account's storage use (what IMAP GETQUOTAROOT reports).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QuotaUse {
    pub used_bytes: u64,
    pub limit_bytes: u64,
    pub messages: u64,
}

#[utoipa::path(
    get, path = "/v1/accounts/{id}/quota", tag = "accounts",
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, description = "Storage use", body = QuotaUse)),
)]
pub async fn get_quota(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<QuotaUse>, AdminError> {
    let quota = state
        .directory
        .imap()?
        .get_quota(imap::GetQuotaRequest { account_id: id })
        .await
        .upstream(ServiceName::Imap)?;
    Ok(Json(QuotaUse {
        used_bytes: quota.used_bytes,
        limit_bytes: quota.limit_bytes,
        messages: quota.messages,
    }))
}
