//! The `onionpost.imap.v1.Imap` adapter: unwraps each request, calls [`ImapService`], and maps
//! [`ImapError`] to a gRPC status here, once. Storage failures are logged and reach callers only
//! as "internal error".

use std::sync::Arc;

use chrono::{DateTime, Utc};
use onionpost_proto::imap::v1 as pb;
use onionpost_proto::imap::v1::imap_server::Imap;
use onionpost_proto::keys::v1 as keys;
use onionpost_runtime::time;
use tonic::{Request, Response, Status};

use crate::error::ImapError;
use crate::lifecycle::{IdentityLifecycle, IdentityParts, NoParts};
use crate::service::{
    AccountState, AccountView, Credentials, Delivery, DeliveryMailbox, IdentityView, ImapService,
    PlanChanges, Refusal, Verification, from_ms,
};
use crate::store::{AppPasswordRecord, PlanRecord};

/// The gRPC face of the imap service.
#[derive(Clone, Debug)]
pub struct ImapGrpc {
    service: ImapService,
    lifecycle: IdentityLifecycle,
}

impl ImapGrpc {
    /// Without the onion and keys services: the identity lifecycle calls answer UNAVAILABLE
    /// until [`ImapGrpc::with_identity_parts`] wires them.
    pub fn new(service: ImapService) -> Self {
        let lifecycle = IdentityLifecycle::new(service.clone(), Arc::new(NoParts));
        ImapGrpc { service, lifecycle }
    }

    /// Creates and revokes identities' onions and keys through `parts`.
    pub fn with_identity_parts(mut self, parts: Arc<dyn IdentityParts>) -> Self {
        self.lifecycle = IdentityLifecycle::new(self.service.clone(), parts);
        self
    }
}

impl From<ImapError> for Status {
    fn from(error: ImapError) -> Status {
        let message = error.to_string();
        match error {
            ImapError::InvalidArgument { .. } => Status::invalid_argument(message),
            ImapError::NotFound(_) => Status::not_found(message),
            ImapError::AlreadyExists(_) => Status::already_exists(message),
            ImapError::FailedPrecondition(_) => Status::failed_precondition(message),
            ImapError::Unauthenticated => Status::unauthenticated(message),
            ImapError::BackOff { .. } => Status::resource_exhausted(message),
            ImapError::PermissionDenied => Status::permission_denied(message),
            ImapError::Upstream(status) => status,
            ImapError::SealBroken | ImapError::Store(_) | ImapError::Internal(_) => {
                tracing::error!(error = %message, "imap service failed");
                Status::internal("internal error")
            }
        }
    }
}

fn app_password_to_pb(record: AppPasswordRecord) -> pb::AppPassword {
    pb::AppPassword {
        app_password_id: record.app_password_id,
        name: record.name,
        created_at: timestamp(record.created_at_ms),
    }
}

fn timestamp(ms: i64) -> Option<prost_types::Timestamp> {
    Some(time::timestamp(ms))
}

fn from_timestamp(value: &prost_types::Timestamp) -> DateTime<Utc> {
    from_ms(time::timestamp_ms(value))
}

fn state_to_pb(state: AccountState) -> pb::AccountState {
    match state {
        AccountState::Active => pb::AccountState::Active,
        AccountState::Grace => pb::AccountState::Grace,
        AccountState::Expired => pb::AccountState::Expired,
        AccountState::Suspended => pb::AccountState::Suspended,
    }
}

fn account_to_pb(view: AccountView) -> pb::Account {
    let record = view.record;
    pb::Account {
        account_id: record.account_id,
        login: record.login,
        plan_id: record.plan.plan_id,
        state: state_to_pb(view.state) as i32,
        paid_until: timestamp(record.paid_until_ms),
        grace_until: timestamp(view.grace_until_ms),
        quota_bytes: u64::try_from(record.plan.quota_bytes).unwrap_or(0),
        used_bytes: u64::try_from(record.used_bytes).unwrap_or(0),
        identities_allowed: u32::try_from(record.plan.identities_allowed).unwrap_or(0),
        identities: u32::try_from(record.identity_count).unwrap_or(0),
        gateway_allowed: record.plan.gateway_allowed,
        created_at: timestamp(record.created_at_ms),
    }
}

fn identity_to_pb(view: IdentityView) -> pb::Identity {
    let record = view.record;
    pb::Identity {
        identity_id: record.identity_id,
        account_id: record.account_id,
        address: record.address,
        onion: record.onion,
        display_name: record.display_name,
        account_state: state_to_pb(view.account_state) as i32,
        gateway_allowed: view.gateway_allowed,
        created_at: timestamp(record.created_at_ms),
    }
}

fn plan_to_pb(plan: PlanRecord) -> pb::Plan {
    pb::Plan {
        plan_id: plan.plan_id,
        name: plan.name,
        quota_bytes: u64::try_from(plan.quota_bytes).unwrap_or(0),
        identities_allowed: u32::try_from(plan.identities_allowed).unwrap_or(0),
        gateway_allowed: plan.gateway_allowed,
        gateway_daily_limit: u32::try_from(plan.gateway_daily_limit).unwrap_or(0),
    }
}

fn required<'a>(value: &'a str, field: &'static str) -> Result<&'a str, Status> {
    if value.trim().is_empty() {
        return Err(ImapError::invalid(field, "is required").into());
    }
    Ok(value)
}

fn mask_paths(
    mask: Option<&prost_types::FieldMask>,
    field: &'static str,
) -> Result<Vec<String>, Status> {
    let paths = mask.map(|mask| mask.paths.clone()).unwrap_or_default();
    if paths.is_empty() {
        return Err(ImapError::invalid(field, "names no field to change").into());
    }
    Ok(paths)
}

#[tonic::async_trait]
impl Imap for ImapGrpc {
    async fn create_account(
        &self,
        request: Request<pb::CreateAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let request = request.into_inner();
        let view = if request.voucher_code.is_empty() {
            self.service
                .create_account(&request.login, &request.password, &request.plan_id)
                .await?
        } else if !request.plan_id.is_empty() {
            return Err(ImapError::invalid(
                "plan_id",
                "a voucher brings its own plan; leave it empty",
            )
            .into());
        } else {
            self.service
                .create_account_with_voucher(
                    &request.login,
                    &request.password,
                    &request.voucher_code,
                )
                .await?
        };
        Ok(Response::new(account_to_pb(view)))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let view = match request.into_inner().account {
            Some(pb::get_account_request::Account::AccountId(id)) => {
                self.service.account(required(&id, "account_id")?).await?
            }
            Some(pb::get_account_request::Account::Login(login)) => {
                self.service
                    .account_by_login(required(&login, "login")?)
                    .await?
            }
            None => return Err(ImapError::invalid("account", "give account_id or login").into()),
        };
        Ok(Response::new(account_to_pb(view)))
    }

    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let request = request.into_inner();
        let state = match pb::AccountState::try_from(request.state) {
            Ok(pb::AccountState::Unspecified) => None,
            Ok(pb::AccountState::Active) => Some(AccountState::Active),
            Ok(pb::AccountState::Grace) => Some(AccountState::Grace),
            Ok(pb::AccountState::Expired) => Some(AccountState::Expired),
            Ok(pb::AccountState::Suspended) => Some(AccountState::Suspended),
            Err(_) => return Err(ImapError::invalid("state", "unknown state").into()),
        };
        let (accounts, next_page_token) = self
            .service
            .list_accounts(state, request.page_size, &request.page_token)
            .await?;
        Ok(Response::new(pb::ListAccountsResponse {
            accounts: accounts.into_iter().map(account_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_account(
        &self,
        request: Request<pb::UpdateAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let request = request.into_inner();
        let account = request
            .account
            .ok_or_else(|| Status::from(ImapError::invalid("account", "is required")))?;
        let account_id = required(&account.account_id, "account.account_id")?;
        let mut plan_id = None;
        let mut suspended = None;
        for path in mask_paths(request.update_mask.as_ref(), "update_mask")? {
            match path.as_str() {
                "plan_id" => plan_id = Some(required(&account.plan_id, "account.plan_id")?),
                "state" => {
                    suspended = Some(match pb::AccountState::try_from(account.state) {
                        Ok(pb::AccountState::Suspended) => true,
                        Ok(pb::AccountState::Active) => false,
                        _ => {
                            return Err(ImapError::invalid(
                                "account.state",
                                "only SUSPENDED, or ACTIVE to resume (the dates decide the rest)",
                            )
                            .into());
                        }
                    })
                }
                other => {
                    return Err(ImapError::invalid(
                        "update_mask",
                        format!("{other} cannot be changed (plan_id, state)"),
                    )
                    .into());
                }
            }
        }
        let view = self
            .service
            .update_account(account_id, plan_id, suspended)
            .await?;
        Ok(Response::new(account_to_pb(view)))
    }

    async fn set_password(
        &self,
        request: Request<pb::SetPasswordRequest>,
    ) -> Result<Response<pb::SetPasswordResponse>, Status> {
        let request = request.into_inner();
        self.service
            .set_password(
                required(&request.account_id, "account_id")?,
                &request.password,
            )
            .await?;
        Ok(Response::new(pb::SetPasswordResponse {}))
    }

    async fn delete_account(
        &self,
        request: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<pb::DeleteAccountResponse>, Status> {
        let request = request.into_inner();
        self.service
            .delete_account(required(&request.account_id, "account_id")?)
            .await?;
        Ok(Response::new(pb::DeleteAccountResponse {}))
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let request = request.into_inner();
        let view = self
            .service
            .authenticate_through(
                &request.login,
                &request.password,
                &request.connection_key,
                Some(request.onion_identity_id.as_str()).filter(|id| !id.is_empty()),
                if request.account_password_only {
                    Credentials::AccountPassword
                } else {
                    Credentials::MailClient
                },
            )
            .await?;
        let identities = self
            .service
            .list_identities(&view.record.account_id)
            .await?
            .into_iter()
            .map(identity_to_pb)
            .collect();
        Ok(Response::new(pb::AuthenticateResponse {
            account: Some(account_to_pb(view)),
            identities,
        }))
    }

    async fn create_app_password(
        &self,
        request: Request<pb::CreateAppPasswordRequest>,
    ) -> Result<Response<pb::CreateAppPasswordResponse>, Status> {
        let request = request.into_inner();
        let (record, password) = self
            .service
            .create_app_password(required(&request.account_id, "account_id")?, &request.name)
            .await?;
        Ok(Response::new(pb::CreateAppPasswordResponse {
            app_password: Some(app_password_to_pb(record)),
            password,
        }))
    }

    async fn list_app_passwords(
        &self,
        request: Request<pb::ListAppPasswordsRequest>,
    ) -> Result<Response<pb::ListAppPasswordsResponse>, Status> {
        let request = request.into_inner();
        let records = self
            .service
            .app_passwords(required(&request.account_id, "account_id")?)
            .await?;
        Ok(Response::new(pb::ListAppPasswordsResponse {
            app_passwords: records.into_iter().map(app_password_to_pb).collect(),
        }))
    }

    async fn revoke_app_password(
        &self,
        request: Request<pb::RevokeAppPasswordRequest>,
    ) -> Result<Response<pb::RevokeAppPasswordResponse>, Status> {
        let request = request.into_inner();
        self.service
            .revoke_app_password(
                required(&request.account_id, "account_id")?,
                required(&request.app_password_id, "app_password_id")?,
            )
            .await?;
        Ok(Response::new(pb::RevokeAppPasswordResponse {}))
    }

    async fn create_identity(
        &self,
        request: Request<pb::CreateIdentityRequest>,
    ) -> Result<Response<pb::CreateIdentityResponse>, Status> {
        let request = request.into_inner();
        let created = self
            .lifecycle
            .create(
                &request.account_id,
                &request.local_part,
                &request.display_name,
            )
            .await?;
        Ok(Response::new(pb::CreateIdentityResponse {
            identity: Some(identity_to_pb(created.identity)),
            onion: Some(created.onion),
            key: Some(created.key),
        }))
    }

    async fn import_identity(
        &self,
        request: Request<pb::ImportIdentityRequest>,
    ) -> Result<Response<pb::Identity>, Status> {
        let request = request.into_inner();
        let view = self
            .lifecycle
            .import(
                &request.account_id,
                request.bundle,
                request.passphrase,
                &request.display_name,
            )
            .await?;
        Ok(Response::new(identity_to_pb(view)))
    }

    async fn revoke_identity(
        &self,
        request: Request<pb::RevokeIdentityRequest>,
    ) -> Result<Response<pb::RevokeIdentityResponse>, Status> {
        let request = request.into_inner();
        self.lifecycle
            .revoke(required(&request.identity_id, "identity_id")?)
            .await?;
        Ok(Response::new(pb::RevokeIdentityResponse {}))
    }

    async fn answer_contact_request(
        &self,
        request: Request<keys::AnswerContactRequestRequest>,
    ) -> Result<Response<pb::AnswerContactRequestResponse>, Status> {
        let request = request.into_inner();
        required(&request.account_id, "account_id")?;
        required(&request.contact_id, "contact_id")?;
        let answered = self.lifecycle.answer_contact_request(request).await?;
        Ok(Response::new(answered))
    }

    async fn release_contact_requests(
        &self,
        request: Request<pb::ReleaseContactRequestsRequest>,
    ) -> Result<Response<pb::ReleaseContactRequestsResponse>, Status> {
        let request = request.into_inner();
        let identity = self
            .service
            .identity(required(&request.identity_id, "identity_id")?)
            .await?;
        let messages_moved = self
            .service
            .release_requests(
                &identity.record.account_id,
                required(&request.address, "address")?,
                true,
            )
            .await?;
        Ok(Response::new(pb::ReleaseContactRequestsResponse {
            messages_moved,
        }))
    }

    async fn rotate_identity_key(
        &self,
        request: Request<pb::RotateIdentityKeyRequest>,
    ) -> Result<Response<pb::RotateIdentityKeyResponse>, Status> {
        let request = request.into_inner();
        let rotated = self
            .lifecycle
            .rotate_key(required(&request.identity_id, "identity_id")?)
            .await?;
        Ok(Response::new(pb::RotateIdentityKeyResponse {
            fingerprint: rotated.fingerprint,
            previous_fingerprint: rotated.previous_fingerprint,
            peers_announced: rotated.peers_announced,
        }))
    }

    async fn add_identity(
        &self,
        request: Request<pb::AddIdentityRequest>,
    ) -> Result<Response<pb::Identity>, Status> {
        let request = request.into_inner();
        let view = self
            .service
            .add_identity(
                &request.identity_id,
                required(&request.account_id, "account_id")?,
                &request.address,
                &request.display_name,
            )
            .await?;
        Ok(Response::new(identity_to_pb(view)))
    }

    async fn get_identity(
        &self,
        request: Request<pb::GetIdentityRequest>,
    ) -> Result<Response<pb::Identity>, Status> {
        use pb::get_identity_request::Identity as By;
        let view = match request.into_inner().identity {
            Some(By::IdentityId(id)) => {
                self.service.identity(required(&id, "identity_id")?).await?
            }
            Some(By::Address(address)) => self.service.identity_by_address(&address).await?,
            Some(By::Onion(onion)) => self.service.identity_by_onion(&onion).await?,
            None => {
                return Err(
                    ImapError::invalid("identity", "give identity_id, address or onion").into(),
                );
            }
        };
        Ok(Response::new(identity_to_pb(view)))
    }

    async fn list_identities(
        &self,
        request: Request<pb::ListIdentitiesRequest>,
    ) -> Result<Response<pb::ListIdentitiesResponse>, Status> {
        let request = request.into_inner();
        let identities = self
            .service
            .list_identities(required(&request.account_id, "account_id")?)
            .await?
            .into_iter()
            .map(identity_to_pb)
            .collect();
        Ok(Response::new(pb::ListIdentitiesResponse { identities }))
    }

    async fn remove_identity(
        &self,
        request: Request<pb::RemoveIdentityRequest>,
    ) -> Result<Response<pb::RemoveIdentityResponse>, Status> {
        let request = request.into_inner();
        self.service
            .remove_identity(required(&request.identity_id, "identity_id")?)
            .await?;
        Ok(Response::new(pb::RemoveIdentityResponse {}))
    }

    async fn create_plan(
        &self,
        request: Request<pb::CreatePlanRequest>,
    ) -> Result<Response<pb::Plan>, Status> {
        let plan = request
            .into_inner()
            .plan
            .ok_or_else(|| Status::from(ImapError::invalid("plan", "is required")))?;
        let created = self
            .service
            .create_plan(
                &plan.name,
                plan.quota_bytes,
                plan.identities_allowed,
                plan.gateway_allowed,
                plan.gateway_daily_limit,
            )
            .await?;
        Ok(Response::new(plan_to_pb(created)))
    }

    async fn update_plan(
        &self,
        request: Request<pb::UpdatePlanRequest>,
    ) -> Result<Response<pb::Plan>, Status> {
        let request = request.into_inner();
        let plan = request
            .plan
            .ok_or_else(|| Status::from(ImapError::invalid("plan", "is required")))?;
        let mut changes = PlanChanges::default();
        for path in mask_paths(request.update_mask.as_ref(), "update_mask")? {
            match path.as_str() {
                "name" => changes.name = Some(plan.name.clone()),
                "quota_bytes" => changes.quota_bytes = Some(plan.quota_bytes),
                "identities_allowed" => changes.identities_allowed = Some(plan.identities_allowed),
                "gateway_allowed" => changes.gateway_allowed = Some(plan.gateway_allowed),
                "gateway_daily_limit" => {
                    changes.gateway_daily_limit = Some(plan.gateway_daily_limit)
                }
                other => {
                    return Err(ImapError::invalid(
                        "update_mask",
                        format!("{other} is not a plan field"),
                    )
                    .into());
                }
            }
        }
        let updated = self
            .service
            .update_plan(required(&plan.plan_id, "plan.plan_id")?, changes)
            .await?;
        Ok(Response::new(plan_to_pb(updated)))
    }

    async fn list_plans(
        &self,
        _request: Request<pb::ListPlansRequest>,
    ) -> Result<Response<pb::ListPlansResponse>, Status> {
        let plans = self.service.list_plans().await?;
        Ok(Response::new(pb::ListPlansResponse {
            plans: plans.into_iter().map(plan_to_pb).collect(),
        }))
    }

    async fn mint_vouchers(
        &self,
        request: Request<pb::MintVouchersRequest>,
    ) -> Result<Response<pb::MintVouchersResponse>, Status> {
        let request = request.into_inner();
        let (batch_id, codes) = self
            .service
            .mint_vouchers(
                required(&request.plan_id, "plan_id")?,
                request.days,
                request.count,
                request.expires_at.as_ref().map(from_timestamp),
            )
            .await?;
        Ok(Response::new(pb::MintVouchersResponse { batch_id, codes }))
    }

    async fn redeem_voucher(
        &self,
        request: Request<pb::RedeemVoucherRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let request = request.into_inner();
        let view = self
            .service
            .redeem_voucher(
                required(&request.account_id, "account_id")?,
                required(&request.code, "code")?,
            )
            .await?;
        Ok(Response::new(account_to_pb(view)))
    }

    async fn deliver(
        &self,
        request: Request<pb::DeliverRequest>,
    ) -> Result<Response<pb::DeliverResponse>, Status> {
        let request = request.into_inner();
        let mailbox = match pb::Mailbox::try_from(request.mailbox) {
            Ok(pb::Mailbox::Unspecified | pb::Mailbox::Inbox) => DeliveryMailbox::Inbox,
            Ok(pb::Mailbox::Sent) => DeliveryMailbox::Sent,
            Ok(pb::Mailbox::Quarantine) => DeliveryMailbox::Quarantine,
            Ok(pb::Mailbox::Junk) => DeliveryMailbox::Junk,
            Ok(pb::Mailbox::Requests) => DeliveryMailbox::Requests,
            Err(_) => return Err(ImapError::invalid("mailbox", "unknown mailbox").into()),
        };
        let verification = match pb::SenderVerification::try_from(request.verification) {
            Ok(pb::SenderVerification::Unspecified) | Err(_) => Verification::Unspecified,
            Ok(pb::SenderVerification::Verified) => Verification::Verified,
            Ok(pb::SenderVerification::Unsigned) => Verification::Unsigned,
            Ok(pb::SenderVerification::Failed) => Verification::Failed,
            Ok(pb::SenderVerification::Clearnet) => Verification::Clearnet,
            Ok(pb::SenderVerification::Local) => Verification::Local,
            Ok(pb::SenderVerification::NotChecked) => Verification::NotChecked,
        };
        if request.message.is_empty() {
            return Err(ImapError::invalid("message", "is empty").into());
        }
        let delivered = self
            .service
            .deliver(Delivery {
                identity_id: required(&request.identity_id, "identity_id")?.to_owned(),
                mailbox,
                message: request.message,
                verification,
                verification_detail: request.verification_detail,
                flags: request.flags,
            })
            .await?;
        let refusal = match delivered.refusal {
            None => pb::Refusal::Unspecified,
            Some(Refusal::UnknownIdentity) => pb::Refusal::UnknownIdentity,
            Some(Refusal::AccountUnavailable) => pb::Refusal::AccountUnavailable,
            Some(Refusal::AccountExpired) => pb::Refusal::AccountExpired,
            Some(Refusal::OverQuota) => pb::Refusal::OverQuota,
        };
        Ok(Response::new(pb::DeliverResponse {
            refusal: refusal as i32,
            duplicate: delivered.duplicate,
            uid_validity: delivered.uid_validity,
            uid: delivered.uid,
        }))
    }

    async fn get_quota(
        &self,
        request: Request<pb::GetQuotaRequest>,
    ) -> Result<Response<pb::Quota>, Status> {
        let request = request.into_inner();
        let quota = self
            .service
            .quota(required(&request.account_id, "account_id")?)
            .await?;
        Ok(Response::new(pb::Quota {
            used_bytes: quota.used_bytes,
            limit_bytes: quota.limit_bytes,
            messages: quota.messages,
        }))
    }

    async fn get_stats(
        &self,
        _request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::ImapStats>, Status> {
        let stats = self.service.stats().await?;
        Ok(Response::new(pb::ImapStats {
            accounts_by_state: stats
                .accounts_by_state
                .into_iter()
                .map(|(state, accounts)| pb::AccountStateCount {
                    state: state_to_pb(state) as i32,
                    accounts,
                })
                .collect(),
            identities: stats.identities,
            messages_delivered_today: stats.messages_delivered_today,
            stored_bytes: stats.stored_bytes,
            imap_sessions_open: stats.imap_sessions_open,
        }))
    }
}
