//! Carrying mail for people who are offline (paper §4.2, Fig. 4; design.md, "Carriers").
//!
//! - **Agreements.** This carrier holds mail for a foreign identity only when that identity
//!   asked it to: a carry request signed by the identity's own key, verified by the keys
//!   service against the key bound to the identity's onion, and naming one of this carrier's
//!   onions. A newer request replaces an older one; a signed withdrawal or an operator ends it.
//!   Each agreement caps what is held for the identity (bytes, and messages a day), so one
//!   recipient cannot fill the carrier. Mail for anyone else is refused at RCPT exactly like a
//!   relay attempt (smtp-in asks [`CarryDesk::check`]).
//! - **Pickup.** When one of this carrier's identities comes online (its onion publishes a
//!   descriptor), [`pickup`] sends `ETRN <its onion>` (RFC 1985) through smtp-out to each
//!   carrier the identity named as preferred, so they deliver what they hold at once instead of
//!   at their next retry.
//!
//! Fan-out (handing a submitted message to the recipient's designated carriers) is the
//! scheduler's, next to the direct attempt it follows.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use onionpost_proto::ServiceName;
use onionpost_proto::clients;
use onionpost_proto::keys::v1 as keys_pb;
use onionpost_proto::onion::v1 as onion_pb;
use onionpost_proto::smtp_out::v1 as smtp_pb;
use onionpost_runtime::Directory;
use onionpost_runtime::config::CarryPolicy;
use onionpost_runtime::onions::OnionWatch;
use onionpost_runtime::time::timestamp_ms;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::error::QueueError;
use crate::retry::RetryPolicy;
use crate::service::{QueueService, random_id};
use crate::store::{
    AgreementKey, AgreementRecord, CarryRequestRecord, CarryRequestState, DAY_MS, HeldRecord,
};

/// The caps a new agreement gets (`queue.carry_max_held_bytes`,
/// `queue.carry_max_messages_per_day`), so one recipient cannot fill the carrier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CarryLimits {
    pub max_held_bytes: u64,
    pub max_messages_per_day: u32,
}

impl CarryLimits {
    pub fn from_settings(settings: &onionpost_runtime::config::QueueSettings) -> Self {
        CarryLimits {
            max_held_bytes: settings.carry_max_held_bytes,
            max_messages_per_day: settings.carry_max_messages_per_day,
        }
    }
}

/// ETRN attempts per carrier when an identity comes online; the carrier retries on its own
/// schedule anyway, so giving up only costs time.
const ETRN_ATTEMPTS: u32 = 5;
const ETRN_FIRST_BACKOFF: Duration = Duration::from_secs(5);

/// What CheckCarry answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CarryCheck {
    Accepted,
    /// An agreement exists but its cap is reached: a temporary refusal.
    OverLimit,
    /// No agreement: refused like a relay attempt.
    Refused,
}

/// Carry agreements: recorded from signed statements (handed in by the operator, or received
/// in mail and applied by the operator's policy), checked at RCPT time.
#[derive(Clone)]
pub struct CarryDesk {
    service: QueueService,
    directory: Directory,
    limits: CarryLimits,
    policy: CarryPolicy,
    /// Identity onions recorded under [`CarryPolicy::AllowList`].
    allow: Arc<Vec<String>>,
    /// Wakes the intake when a statement arrives in mail.
    intake: Arc<Notify>,
}

/// The largest carry statement taken from mail; a real one is about a kilobyte.
pub const MAX_STATEMENT_BYTES: usize = 64 * 1024;
/// How a statement received in mail is verified again while its identity's onion does not
/// answer (its key cannot be fetched): the queue's own schedule, from 30 s doubling to an
/// hour, and refused after a day.
const INTAKE_RETRY: RetryPolicy = RetryPolicy {
    retry_min: Duration::from_secs(30),
    retry_max: Duration::from_secs(3600),
    lifetime: Duration::from_secs(24 * 3600),
};
/// How long one verification attempt holds a request against other queue processes.
const INTAKE_LEASE_MS: i64 = 120 * 1000;
/// How often the intake looks for due requests when nothing wakes it.
const INTAKE_TICK: Duration = Duration::from_secs(15);

impl CarryDesk {
    pub fn new(service: QueueService, directory: Directory, limits: CarryLimits) -> Self {
        CarryDesk {
            service,
            directory,
            limits,
            policy: CarryPolicy::Approval,
            allow: Arc::new(Vec::new()),
            intake: Arc::new(Notify::new()),
        }
    }

    /// What becomes of carry requests received in mail (`queue.carry_policy`,
    /// `queue.carry_allow`); without it they wait for the operator.
    pub fn with_mail_policy(mut self, policy: CarryPolicy, allow: Vec<String>) -> Self {
        self.policy = policy;
        self.allow = Arc::new(allow);
        self
    }

    /// Whether to accept carried mail for `recipient` of `declared_size` bytes (0: unknown) on
    /// the MX of `onion`. Only the onion the carry request named accepts: were every onion of
    /// the carrier to accept, an RCPT for an identity that names one of them would tell which
    /// other onions share this carrier (issue 18).
    pub async fn check(
        &self,
        recipient: &str,
        onion: &str,
        declared_size: u64,
    ) -> Result<CarryCheck, QueueError> {
        let address = recipient.trim().to_ascii_lowercase();
        let now = self.service.now_ms();
        let store = self.service.store();
        let Some(agreement) = store.active_agreement(&address, now).await? else {
            return Ok(CarryCheck::Refused);
        };
        if agreement.carrier.is_empty() || !agreement.carrier.eq_ignore_ascii_case(onion.trim()) {
            return Ok(CarryCheck::Refused);
        }
        let held = store.held_for(&address, now.div_euclid(DAY_MS)).await?;
        let over_bytes = held.bytes.saturating_add(declared_size) > agreement.max_held_bytes;
        let over_count = held.accepted_on_day >= u64::from(agreement.max_messages_per_day);
        if over_bytes || over_count {
            metrics::counter!("onionpost_queue_carry_over_limit_total").increment(1);
            return Ok(CarryCheck::OverLimit);
        }
        Ok(CarryCheck::Accepted)
    }

    /// Records the agreement a signed carry request asks for, or ends the ones a signed
    /// withdrawal names.
    pub async fn add(
        &self,
        statement: Vec<u8>,
    ) -> Result<(AgreementRecord, HeldRecord), QueueError> {
        if statement.is_empty() {
            return Err(QueueError::InvalidArgument("statement is required".into()));
        }
        let verified = self.verify(statement).await?;
        let carrier = verified.carrier.trim().to_ascii_lowercase();
        if !self.is_own_onion(&carrier).await? {
            return Err(QueueError::Refused(
                "the statement names another carrier, not this one".into(),
            ));
        }
        self.apply(&verified, &carrier).await
    }

    /// Records the agreement a verified request asks for (on `carrier`, one of this carrier's
    /// onions), or ends the agreements a verified withdrawal names.
    async fn apply(
        &self,
        verified: &keys_pb::CarryStatement,
        carrier: &str,
    ) -> Result<(AgreementRecord, HeldRecord), QueueError> {
        let address = verified.address.trim().to_ascii_lowercase();
        let now = self.service.now_ms();
        match verified.kind() {
            keys_pb::CarryStatementKind::Request => {
                let expires_at_ms = verified.expires_at.as_ref().map(timestamp_ms);
                if expires_at_ms.is_some_and(|at| at <= now) {
                    return Err(QueueError::InvalidArgument(
                        "the carry request has expired".into(),
                    ));
                }
                let agreement = AgreementRecord {
                    agreement_id: random_id(),
                    address: address.clone(),
                    fingerprint: verified.fingerprint.clone(),
                    created_at_ms: now,
                    expires_at_ms,
                    revoked_at_ms: None,
                    max_held_bytes: self.limits.max_held_bytes,
                    max_messages_per_day: self.limits.max_messages_per_day,
                    carrier: carrier.to_owned(),
                };
                self.service.store().add_agreement(&agreement).await?;
                tracing::info!(agreement_id = %agreement.agreement_id, "carry agreement recorded");
                let held = self.held(&address).await?;
                Ok((agreement, held))
            }
            keys_pb::CarryStatementKind::Withdraw => {
                let ended = self
                    .service
                    .store()
                    .revoke_agreement(&AgreementKey::Address(address.clone()), now)
                    .await?;
                let Some(last) = ended.into_iter().last() else {
                    return Err(QueueError::NotFound(format!(
                        "no carry agreement for {address}"
                    )));
                };
                let held = self.held(&address).await?;
                Ok((last, held))
            }
            keys_pb::CarryStatementKind::Unspecified => Err(QueueError::InvalidArgument(
                "the statement neither requests nor withdraws".into(),
            )),
        }
    }

    /// Ends an agreement by id, or by a signed withdrawal.
    pub async fn revoke(&self, key: RevokeBy) -> Result<(AgreementRecord, HeldRecord), QueueError> {
        let key = match key {
            RevokeBy::Id(id) => AgreementKey::Id(id),
            RevokeBy::Statement(statement) => {
                let verified = self.verify(statement).await?;
                if verified.kind() != keys_pb::CarryStatementKind::Withdraw {
                    return Err(QueueError::InvalidArgument(
                        "the statement is not a withdrawal".into(),
                    ));
                }
                if !self
                    .is_own_onion(&verified.carrier.trim().to_ascii_lowercase())
                    .await?
                {
                    return Err(QueueError::Refused(
                        "the statement names another carrier, not this one".into(),
                    ));
                }
                AgreementKey::Address(verified.address.trim().to_ascii_lowercase())
            }
        };
        let ended = self
            .service
            .store()
            .revoke_agreement(&key, self.service.now_ms())
            .await?;
        let Some(last) = ended.into_iter().last() else {
            return Err(QueueError::NotFound("no active carry agreement".into()));
        };
        let held = self.held(&last.address).await?;
        Ok((last, held))
    }

    /// One page of agreements with what is held for each, and the next page's token.
    pub async fn list(
        &self,
        include_ended: bool,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<(AgreementRecord, HeldRecord)>, String), QueueError> {
        let limit = match page_size {
            0 => 50,
            size => size.min(500),
        };
        let agreements = self
            .service
            .store()
            .list_agreements(include_ended, self.service.now_ms(), page_token, limit)
            .await?;
        let next = match agreements.last() {
            Some(last) if agreements.len() == limit as usize => last.agreement_id.clone(),
            _ => String::new(),
        };
        let mut page = Vec::with_capacity(agreements.len());
        for agreement in agreements {
            let held = self.held(&agreement.address).await?;
            page.push((agreement, held));
        }
        Ok((page, next))
    }

    async fn held(&self, address: &str) -> Result<HeldRecord, QueueError> {
        let day = self.service.now_ms().div_euclid(DAY_MS);
        Ok(self.service.store().held_for(address, day).await?)
    }

    /// The keys service checks the signature against the key bound to the identity's onion.
    async fn verify(&self, statement: Vec<u8>) -> Result<keys_pb::CarryStatement, QueueError> {
        let transport = self
            .directory
            .transport(ServiceName::Keys)
            .map_err(|error| QueueError::Unavailable(error.to_string()))?;
        clients::keys(transport)
            .verify_carry_statement(keys_pb::VerifyCarryStatementRequest { statement })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| match status.code() {
                tonic::Code::InvalidArgument
                | tonic::Code::PermissionDenied
                | tonic::Code::FailedPrecondition
                | tonic::Code::NotFound => QueueError::Refused(format!(
                    "the carry statement does not verify: {}",
                    status.message()
                )),
                _ => QueueError::Unavailable(format!("keys: {}", status.message())),
            })
    }

    /// Whether `onion` is one of this carrier's (unrevoked) onions.
    async fn is_own_onion(&self, onion: &str) -> Result<bool, QueueError> {
        let transport = self
            .directory
            .transport(ServiceName::Onion)
            .map_err(|error| QueueError::Unavailable(error.to_string()))?;
        let mut client = clients::onion(transport);
        let mut page_token = String::new();
        loop {
            let page = client
                .list_onions(onion_pb::ListOnionsRequest {
                    state: onion_pb::OnionState::Unspecified as i32,
                    page_size: 500,
                    page_token,
                })
                .await
                .map_err(|status| QueueError::Unavailable(format!("onion: {}", status.message())))?
                .into_inner();
            if page
                .onions
                .iter()
                .any(|service| service.onion_address.eq_ignore_ascii_case(onion))
            {
                return Ok(true);
            }
            if page.next_page_token.is_empty() {
                return Ok(false);
            }
            page_token = page.next_page_token;
        }
    }
}

/// Carry statements received in mail: kept, verified after the reply, applied by policy.
impl CarryDesk {
    /// Keeps a statement that arrived at `postmaster@<onion>` on `onion`'s MX; durable when it
    /// returns, so smtp-in may answer 250. Nothing about it is checked here beyond its size:
    /// verifying means fetching the identity's key from its onion, seconds the peer must not
    /// wait for (nor learn anything from).
    pub async fn submit(
        &self,
        statement: Vec<u8>,
        onion: &str,
    ) -> Result<CarryRequestRecord, QueueError> {
        if statement.is_empty() {
            return Err(QueueError::InvalidArgument("statement is required".into()));
        }
        if statement.len() > MAX_STATEMENT_BYTES {
            return Err(QueueError::InvalidArgument(format!(
                "a carry statement is at most {MAX_STATEMENT_BYTES} bytes"
            )));
        }
        let onion = onionpost_proto::address::OnionHost::parse(onion.trim())
            .map_err(|_| QueueError::InvalidArgument("onion is not a v3 onion".into()))?
            .to_string();
        let now = self.service.now_ms();
        let request_id = random_id();
        let request = CarryRequestRecord {
            sealed_statement: self.service.seal_aside(&statement, &request_id),
            request_id,
            onion,
            state: CarryRequestState::Verifying,
            address: String::new(),
            fingerprint: String::new(),
            kind: String::new(),
            expires_at_ms: None,
            detail: String::new(),
            attempts: 0,
            received_at_ms: now,
            next_attempt_at_ms: Some(now),
            decided_at_ms: None,
            agreement_id: String::new(),
        };
        self.service.store().insert_carry_request(&request).await?;
        metrics::counter!("onionpost_queue_carry_requests_received_total").increment(1);
        self.intake.notify_one();
        Ok(request)
    }

    /// Verifies and applies due statements received in mail until `shutdown`.
    pub async fn run_intake(self, shutdown: CancellationToken) {
        loop {
            if let Err(error) = self.intake_due().await {
                tracing::warn!(%error, "carry requests could not be read");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.intake.notified() => {}
                () = tokio::time::sleep(INTAKE_TICK) => {}
            }
        }
    }

    /// One pass over the due statements.
    pub async fn intake_due(&self) -> Result<(), QueueError> {
        let now = self.service.now_ms();
        let store = self.service.store();
        for request in store.due_carry_requests(now, 32).await? {
            if store
                .claim_carry_request(&request.request_id, request.attempts, now + INTAKE_LEASE_MS)
                .await?
            {
                let attempts = request.attempts + 1;
                self.verify_request(CarryRequestRecord {
                    attempts,
                    ..request
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Verifies one statement against the key its identity's onion serves and applies it.
    async fn verify_request(&self, mut request: CarryRequestRecord) -> Result<(), QueueError> {
        let now = self.service.now_ms();
        let statement = self
            .service
            .open_aside(&request.sealed_statement, &request.request_id)?;
        match self.verify(statement).await {
            Ok(verified) => {
                request.address = verified.address.trim().to_ascii_lowercase();
                request.fingerprint = verified.fingerprint.clone();
                request.kind = match verified.kind() {
                    keys_pb::CarryStatementKind::Request => "request",
                    keys_pb::CarryStatementKind::Withdraw => "withdraw",
                    keys_pb::CarryStatementKind::Unspecified => "",
                }
                .to_owned();
                request.expires_at_ms = verified.expires_at.as_ref().map(timestamp_ms);
                request.next_attempt_at_ms = None;
                let carrier = verified.carrier.trim().to_ascii_lowercase();
                if carrier != request.onion {
                    // Applied on another onion of this carrier, it would show that the two
                    // share it: only the onion it was sent to counts.
                    self.decide_now(
                        &mut request,
                        Err("the statement names another onion, not the one it was sent to".into()),
                    );
                } else {
                    let outcome = self.by_policy(&verified, &carrier).await;
                    self.decide_now(&mut request, outcome);
                }
            }
            Err(QueueError::Refused(why)) => self.decide_now(&mut request, Err(why)),
            Err(error) => {
                if now - request.received_at_ms >= INTAKE_RETRY.lifetime_ms() {
                    self.decide_now(
                        &mut request,
                        Err(format!(
                            "the identity's key could not be had from its onion for a day: {error}"
                        )),
                    );
                } else {
                    request.next_attempt_at_ms =
                        Some(now + INTAKE_RETRY.base_delay_ms(request.attempts));
                    request.detail = format!("waiting to verify: {error}");
                    tracing::debug!(%error, "a carry request waits to be verified");
                }
            }
        }
        self.service
            .store()
            .update_carry_request(&request, Some(CarryRequestState::Verifying))
            .await?;
        Ok(())
    }

    /// What the operator's policy makes of a verified statement: applied, left for the
    /// operator, or refused (`Err(why)`). A withdrawal is applied whatever the policy.
    async fn by_policy(
        &self,
        verified: &keys_pb::CarryStatement,
        carrier: &str,
    ) -> Result<Applied, String> {
        if verified.kind() == keys_pb::CarryStatementKind::Withdraw {
            return match self.apply(verified, carrier).await {
                Ok(_) => Ok(Applied::Withdrawn),
                Err(QueueError::NotFound(_)) => Ok(Applied::NothingToWithdraw),
                Err(error) => Err(error.to_string()),
            };
        }
        let onion = verified
            .address
            .rsplit_once('@')
            .map(|(_, onion)| onion.to_ascii_lowercase())
            .unwrap_or_default();
        match self.policy {
            CarryPolicy::Approval => return Ok(Applied::Pending),
            CarryPolicy::AllowList if !self.allow.contains(&onion) => {
                return Err("this carrier carries only for the onions its operator allows".into());
            }
            CarryPolicy::AllowList | CarryPolicy::Open => {}
        }
        match self.apply(verified, carrier).await {
            Ok((agreement, _)) => Ok(Applied::Agreement(agreement.agreement_id)),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Writes an outcome into `request`.
    fn decide_now(&self, request: &mut CarryRequestRecord, outcome: Result<Applied, String>) {
        let now = self.service.now_ms();
        request.next_attempt_at_ms = None;
        match outcome {
            Ok(Applied::Pending) => {
                request.state = CarryRequestState::Pending;
                request.detail = "waits for the operator's decision".into();
                return;
            }
            Ok(Applied::Agreement(agreement_id)) => {
                request.state = CarryRequestState::Accepted;
                request.detail = "agreement recorded".into();
                request.agreement_id = agreement_id;
            }
            Ok(Applied::Withdrawn) => {
                request.state = CarryRequestState::Accepted;
                request.detail = "agreements ended".into();
            }
            Ok(Applied::NothingToWithdraw) => {
                request.state = CarryRequestState::Accepted;
                request.detail = "there was no agreement to end".into();
            }
            Err(why) => {
                request.state = CarryRequestState::Refused;
                request.detail = why;
            }
        }
        request.decided_at_ms = Some(now);
        tracing::info!(
            request_id = %request.request_id,
            state = request.state.as_str(),
            "carry request received in mail decided"
        );
    }

    /// The operator's decision on a request waiting for approval.
    pub async fn decide(
        &self,
        request_id: &str,
        approve: bool,
    ) -> Result<CarryRequestRecord, QueueError> {
        let store = self.service.store();
        let Some(mut request) = store.carry_request(request_id).await? else {
            return Err(QueueError::NotFound(format!(
                "carry request {request_id:?}"
            )));
        };
        if request.state != CarryRequestState::Pending {
            return Err(QueueError::Conflict(format!(
                "the carry request is {}, not waiting for a decision",
                request.state.as_str()
            )));
        }
        let outcome = if approve {
            let verified = keys_pb::CarryStatement {
                address: request.address.clone(),
                fingerprint: request.fingerprint.clone(),
                carrier: request.onion.clone(),
                kind: keys_pb::CarryStatementKind::Request as i32,
                signed_at: None,
                expires_at: request
                    .expires_at_ms
                    .map(onionpost_runtime::time::timestamp),
            };
            match self.apply(&verified, &request.onion).await {
                Ok((agreement, _)) => Ok(Applied::Agreement(agreement.agreement_id)),
                Err(error) => Err(error.to_string()),
            }
        } else {
            Err("refused by the operator".to_owned())
        };
        self.decide_now(&mut request, outcome);
        if !store
            .update_carry_request(&request, Some(CarryRequestState::Pending))
            .await?
        {
            return Err(QueueError::Conflict(
                "the carry request was decided meanwhile".into(),
            ));
        }
        Ok(request)
    }

    /// One page of carry requests received in mail, and the next page's token.
    pub async fn list_requests(
        &self,
        state: Option<CarryRequestState>,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<CarryRequestRecord>, String), QueueError> {
        let limit = match page_size {
            0 => 50,
            size => size.min(500),
        };
        let requests = self
            .service
            .store()
            .list_carry_requests(state, page_token, limit)
            .await?;
        let next = match requests.last() {
            Some(last) if requests.len() == limit as usize => last.request_id.clone(),
            _ => String::new(),
        };
        Ok((requests, next))
    }
}

/// What applying a verified statement did.
enum Applied {
    /// Waits for the operator.
    Pending,
    /// A request recorded as this agreement.
    Agreement(String),
    /// A withdrawal ended the identity's agreements.
    Withdrawn,
    /// A withdrawal found none.
    NothingToWithdraw,
}

/// How RevokeCarryAgreement names what to end.
pub enum RevokeBy {
    Id(String),
    Statement(Vec<u8>),
}

/// Follows the onion service's WatchOnions and, each time an identity's onion turns online,
/// sends ETRN for it to each of its preferred carriers, after a wait drawn for that identity
/// alone within `spread`: after a restart every identity comes online within seconds, and
/// ETRNs for co-hosted identities arriving together would tell a carrier they share one
/// (issue 18, 6). Runs until `shutdown`.
pub async fn pickup(directory: Directory, spread: Duration, shutdown: CancellationToken) {
    let Ok(transport) = directory.transport(ServiceName::Onion) else {
        tracing::info!("onion service not configured; no etrn pickup");
        return;
    };
    let mut online: HashMap<String, bool> = HashMap::new();
    let mut watch = OnionWatch::new(transport, shutdown.clone());
    while let Some(update) = watch.next().await {
        // A new watch starts from a snapshot: what is online then counts as coming online
        // again, and a repeated ETRN costs the carriers nothing.
        if update.snapshot {
            online.clear();
        }
        for service in update.onions {
            let now_online = service.state() == onion_pb::OnionState::Online;
            let was_online = online
                .insert(service.identity_id.clone(), now_online)
                .unwrap_or(false);
            if now_online && !was_online {
                let directory = directory.clone();
                let shutdown = shutdown.clone();
                let wait = onionpost_runtime::backoff::random_within(spread);
                tokio::spawn(async move {
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = async {
                            tokio::time::sleep(wait).await;
                            send_etrns(&directory, &service).await;
                        } => {}
                    }
                });
            }
        }
    }
}

/// ETRN for one identity's onion to each of its preferred carriers, each retried a few times.
async fn send_etrns(directory: &Directory, service: &onion_pb::OnionService) {
    let Ok(keys) = directory.transport(ServiceName::Keys) else {
        return;
    };
    let identity = clients::keys(keys)
        .get_identity_key(keys_pb::GetIdentityKeyRequest {
            identity: Some(keys_pb::get_identity_key_request::Identity::IdentityId(
                service.identity_id.clone(),
            )),
        })
        .await;
    let carriers = match identity {
        Ok(identity) => identity.into_inner().preferred_carriers,
        Err(status) => {
            tracing::debug!(error = %status.message(), "no key record for an online identity");
            return;
        }
    };
    let onion = service.onion_address.to_ascii_lowercase();
    let mut sends = Vec::new();
    for carrier in carriers {
        if carrier.eq_ignore_ascii_case(&onion) {
            continue;
        }
        let directory = directory.clone();
        let onion = onion.clone();
        let isolation_key = service.identity_id.clone();
        sends.push(async move {
            let mut wait = ETRN_FIRST_BACKOFF;
            for attempt in 1..=ETRN_ATTEMPTS {
                match etrn_once(&directory, &carrier, &onion, &isolation_key).await {
                    Ok(()) => {
                        metrics::counter!("onionpost_queue_etrn_sent_total", "outcome" => "accepted")
                            .increment(1);
                        tracing::debug!(attempt, "etrn sent to a carrier");
                        return;
                    }
                    Err(error) => {
                        tracing::debug!(attempt, %error, "etrn to a carrier failed");
                    }
                }
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
            metrics::counter!("onionpost_queue_etrn_sent_total", "outcome" => "gave_up")
                .increment(1);
            tracing::info!("etrn to a carrier gave up; it will deliver on its own schedule");
        });
    }
    futures::future::join_all(sends).await;
}

async fn etrn_once(
    directory: &Directory,
    carrier: &str,
    onion: &str,
    isolation_key: &str,
) -> Result<(), String> {
    let transport = directory
        .transport(ServiceName::SmtpOut)
        .map_err(|error| error.to_string())?;
    let response = clients::smtp_out(transport)
        .etrn(smtp_pb::EtrnRequest {
            carrier: carrier.to_owned(),
            onion: onion.to_owned(),
            isolation_key: isolation_key.to_owned(),
        })
        .await
        .map_err(|status| status.message().to_owned())?
        .into_inner();
    match response.reply {
        // RFC 1985 §5: 250 (started), 251 (nothing pending) and 252/253 all mean "taken".
        Some(reply) if (250..=253).contains(&reply.code) => Ok(()),
        Some(reply) => Err(format!("{} {}", reply.code, reply.text)),
        None => Err(response.connection_error),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use onionpost_runtime::Database;
    use onionpost_runtime::seal::CarrierSecret;

    use super::*;
    use crate::clock::ManualClock;
    use crate::retry::RetryPolicy;
    use crate::service::Enqueue;
    use crate::store::{DsnReturn, NewRecipient, Origin};

    const CAROL: &str = "carol@c.onion";
    /// The carrier onion Carol's request named, and another onion of the same carrier.
    const HERE: &str = "hereaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.onion";
    const ELSEWHERE: &str = "elsewhereaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.onion";

    fn carried(key: &str, size: usize) -> Enqueue {
        Enqueue {
            idempotency_key: key.into(),
            origin: Origin::Carry,
            account_id: String::new(),
            sender_identity_id: String::new(),
            reverse_path: "alice@a.onion".into(),
            recipients: vec![NewRecipient {
                address: CAROL.into(),
                notify: vec![],
                original_recipient: String::new(),
            }],
            message: vec![b'x'; size],
            message_id: format!("<{key}@a.onion>"),
            envelope_id: String::new(),
            dsn_return: DsnReturn::Unspecified,
            fan_out_immediately: false,
        }
    }

    /// The byte cap is checked against what is held now, the daily cap against what was accepted
    /// today (delivered or not); carried mail waits one retry interval before its first attempt.
    #[tokio::test]
    async fn an_agreement_admits_carried_mail_up_to_its_caps() {
        let dir = tempfile::tempdir().unwrap();
        let database =
            Database::open_sqlite(&dir.path().join("q.sqlite3"), crate::store::MIGRATIONS)
                .await
                .unwrap();
        let clock = ManualClock::at_ms(1_000_000);
        let service = QueueService::new(
            crate::store::for_database(database),
            CarrierSecret::from_text(&"s".repeat(40))
                .unwrap()
                .sealer("queue-body"),
            Arc::new(clock.clone()),
            RetryPolicy {
                retry_min: Duration::from_secs(60),
                retry_max: Duration::from_secs(3600),
                lifetime: Duration::from_secs(86_400),
            },
        );
        let limits = CarryLimits {
            max_held_bytes: 1,
            max_messages_per_day: 1,
        };
        let desk = CarryDesk::new(service.clone(), Directory::default(), limits);
        // No agreement: refused like a relay attempt.
        assert_eq!(
            desk.check(CAROL, HERE, 10).await.unwrap(),
            CarryCheck::Refused
        );
        service
            .store()
            .add_agreement(&AgreementRecord {
                agreement_id: "a1".into(),
                address: CAROL.into(),
                fingerprint: "F".repeat(40),
                created_at_ms: 1_000_000,
                expires_at_ms: None,
                revoked_at_ms: None,
                max_held_bytes: 1_000,
                max_messages_per_day: 3,
                carrier: HERE.into(),
            })
            .await
            .unwrap();
        // The address and the onion are compared in lower case.
        assert_eq!(
            desk.check("Carol@C.onion", &HERE.to_ascii_uppercase(), 10)
                .await
                .unwrap(),
            CarryCheck::Accepted
        );
        // Another onion of this carrier answers as if there were no agreement.
        assert_eq!(
            desk.check(CAROL, ELSEWHERE, 10).await.unwrap(),
            CarryCheck::Refused
        );
        let first = service.enqueue(carried("m1", 600)).await.unwrap();
        assert_eq!(
            first.recipients[0].next_attempt_at_ms,
            Some(1_000_000 + 60_000)
        );
        // 600 held + 500 declared is over 1,000 bytes: a temporary refusal.
        assert_eq!(
            desk.check(CAROL, HERE, 500).await.unwrap(),
            CarryCheck::OverLimit
        );
        assert_eq!(
            desk.check(CAROL, HERE, 300).await.unwrap(),
            CarryCheck::Accepted
        );
        // A sender that declared no SIZE passes RCPT; its real size is checked when stored.
        assert_eq!(
            desk.check(CAROL, HERE, 0).await.unwrap(),
            CarryCheck::Accepted
        );
        assert!(matches!(
            service.enqueue(carried("big", 500)).await,
            Err(QueueError::OverLimit(_))
        ));
        let second = service.enqueue(carried("m2", 10)).await.unwrap();
        let third = service.enqueue(carried("m3", 10)).await.unwrap();
        // Three carried today: the daily cap is reached, and stays reached when they are gone.
        assert_eq!(
            desk.check(CAROL, HERE, 1).await.unwrap(),
            CarryCheck::OverLimit
        );
        for message in [first, second, third] {
            service.delete(&message.queue_id, false).await.unwrap();
        }
        assert_eq!(
            desk.check(CAROL, HERE, 1).await.unwrap(),
            CarryCheck::OverLimit
        );
        // The next UTC day starts afresh.
        clock.advance_ms(DAY_MS);
        assert_eq!(
            desk.check(CAROL, HERE, 1).await.unwrap(),
            CarryCheck::Accepted
        );
        // Without a keys service a statement cannot be checked: unavailable, not accepted.
        assert!(matches!(
            desk.add(b"statement".to_vec()).await,
            Err(QueueError::Unavailable(_))
        ));
    }
}
