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
use std::time::Duration;

use onionpost_proto::ServiceName;
use onionpost_proto::clients;
use onionpost_proto::keys::v1 as keys_pb;
use onionpost_proto::onion::v1 as onion_pb;
use onionpost_proto::smtp_out::v1 as smtp_pb;
use onionpost_runtime::Directory;
use onionpost_runtime::onions::OnionWatch;
use onionpost_runtime::time::timestamp_ms;
use tokio_util::sync::CancellationToken;

use crate::error::QueueError;
use crate::service::{QueueService, random_id};
use crate::store::{AgreementKey, AgreementRecord, DAY_MS, HeldRecord};

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

/// Carry agreements: recorded from signed statements, checked at RCPT time.
#[derive(Clone)]
pub struct CarryDesk {
    service: QueueService,
    directory: Directory,
    limits: CarryLimits,
}

impl CarryDesk {
    pub fn new(service: QueueService, directory: Directory, limits: CarryLimits) -> Self {
        CarryDesk {
            service,
            directory,
            limits,
        }
    }

    /// Whether to accept carried mail for `recipient` of `declared_size` bytes (0: unknown).
    pub async fn check(
        &self,
        recipient: &str,
        declared_size: u64,
    ) -> Result<CarryCheck, QueueError> {
        let address = recipient.trim().to_ascii_lowercase();
        let now = self.service.now_ms();
        let store = self.service.store();
        let Some(agreement) = store.active_agreement(&address, now).await? else {
            return Ok(CarryCheck::Refused);
        };
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
                    fingerprint: verified.fingerprint,
                    created_at_ms: now,
                    expires_at_ms,
                    revoked_at_ms: None,
                    max_held_bytes: self.limits.max_held_bytes,
                    max_messages_per_day: self.limits.max_messages_per_day,
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
        assert_eq!(desk.check(CAROL, 10).await.unwrap(), CarryCheck::Refused);
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
            })
            .await
            .unwrap();
        // The address is compared in lower case.
        assert_eq!(
            desk.check("Carol@C.onion", 10).await.unwrap(),
            CarryCheck::Accepted
        );
        let first = service.enqueue(carried("m1", 600)).await.unwrap();
        assert_eq!(
            first.recipients[0].next_attempt_at_ms,
            Some(1_000_000 + 60_000)
        );
        // 600 held + 500 declared is over 1,000 bytes: a temporary refusal.
        assert_eq!(desk.check(CAROL, 500).await.unwrap(), CarryCheck::OverLimit);
        assert_eq!(desk.check(CAROL, 300).await.unwrap(), CarryCheck::Accepted);
        // A sender that declared no SIZE passes RCPT; its real size is checked when stored.
        assert_eq!(desk.check(CAROL, 0).await.unwrap(), CarryCheck::Accepted);
        assert!(matches!(
            service.enqueue(carried("big", 500)).await,
            Err(QueueError::OverLimit(_))
        ));
        let second = service.enqueue(carried("m2", 10)).await.unwrap();
        let third = service.enqueue(carried("m3", 10)).await.unwrap();
        // Three carried today: the daily cap is reached, and stays reached when they are gone.
        assert_eq!(desk.check(CAROL, 1).await.unwrap(), CarryCheck::OverLimit);
        for message in [first, second, third] {
            service.delete(&message.queue_id, false).await.unwrap();
        }
        assert_eq!(desk.check(CAROL, 1).await.unwrap(), CarryCheck::OverLimit);
        // The next UTC day starts afresh.
        clock.advance_ms(DAY_MS);
        assert_eq!(desk.check(CAROL, 1).await.unwrap(), CarryCheck::Accepted);
        // Without a keys service a statement cannot be checked: unavailable, not accepted.
        assert!(matches!(
            desk.add(b"statement".to_vec()).await,
            Err(QueueError::Unavailable(_))
        ));
    }
}
