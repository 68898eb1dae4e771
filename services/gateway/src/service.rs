//! The gateway's domain logic behind its gRPC contract: who may send out, the send itself
//! (alias, rewrite, sign, deliver per recipient), aliases for the admin API, statistics.

use std::sync::Arc;

use onionpost_proto::gateway::v1 as pb;
use onionpost_proto::imap::v1::AccountState;
pub use onionpost_runtime::time::now_ms;
use onionpost_runtime::time::timestamp;
use onionpost_smtp_client::{Outcome, Reply};

use crate::backend::Backend;
use crate::dkim::Signer;
use crate::outbound::{Delivery, Outbound};
use crate::store::{AliasFilter, AliasRecord, Counter, GatewayStore};
use crate::{GatewayError, alias, rewrite};

/// Largest page of aliases.
const MAX_PAGE: u32 = 500;
/// The refusal of a message whose body names an onion address (`local@….onion`): sent to the
/// clearnet it would tie the alias to the identity.
pub const BODY_NAMES_AN_ONION: &str = "the message names an onion address in its body; the \
     gateway carries no onion address to the clearnet (remove it, e.g. from a quoted reply)";

/// The gateway service.
#[derive(Clone)]
pub struct GatewayService {
    store: Arc<dyn GatewayStore>,
    backend: Arc<dyn Backend>,
    /// The gateway domain, lower case.
    domain: String,
    /// Recipients per account per day when the plan sets none.
    daily_cap: u32,
    signer: Arc<Signer>,
    outbound: Outbound,
}

/// Today's UTC date, the key of daily counters.
pub fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

impl GatewayService {
    pub fn new(
        store: Arc<dyn GatewayStore>,
        backend: Arc<dyn Backend>,
        domain: &str,
        daily_cap: u32,
        signer: Arc<Signer>,
        outbound: Outbound,
    ) -> Self {
        GatewayService {
            store,
            backend,
            domain: domain.to_ascii_lowercase(),
            daily_cap,
            signer,
            outbound,
        }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn store(&self) -> &Arc<dyn GatewayStore> {
        &self.store
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// `<local>@<domain>`.
    pub fn address(&self, local_part: &str) -> String {
        format!("{local_part}@{}", self.domain)
    }

    /// Whether the account may send to `recipients` more clearnet recipients today.
    pub async fn check_outbound(
        &self,
        request: pb::CheckOutboundRequest,
    ) -> Result<pb::CheckOutboundResponse, GatewayError> {
        let refuse = |reason: &str| pb::CheckOutboundResponse {
            allowed: false,
            reason: reason.to_owned(),
            remaining_today: 0,
        };
        if request.account_id.trim().is_empty() {
            return Err(GatewayError::InvalidArgument(
                "account_id is required".into(),
            ));
        }
        let account = match self.backend.account(&request.account_id).await {
            Ok(account) => account,
            Err(GatewayError::NotFound(_)) => return Ok(refuse("no such account")),
            Err(error) => return Err(error),
        };
        if !account.gateway_allowed {
            return Ok(refuse("this account's plan does not include clearnet mail"));
        }
        if account.state != AccountState::Active as i32 {
            return Ok(refuse("this account is not active"));
        }
        if !request.sender_identity_id.is_empty() {
            let identity = match self.backend.identity(&request.sender_identity_id).await {
                Ok(identity) => Some(identity),
                Err(GatewayError::NotFound(_)) => None,
                Err(error) => return Err(error),
            };
            if identity.is_none_or(|identity| identity.account_id != request.account_id) {
                return Ok(refuse("the sender is not one of this account's identities"));
            }
        }
        let cap = match self.backend.plan_daily_limit(&account.plan_id).await? {
            0 => self.daily_cap,
            limit => limit,
        };
        let day = today();
        let wanted = u64::from(request.recipients.max(1));
        let reserved = request.reserve
            && self
                .store
                .reserve_sent(&request.account_id, &day, wanted, u64::from(cap))
                .await?;
        let sent = self.store.sent_on(&request.account_id, &day).await?;
        let remaining = u64::from(cap).saturating_sub(sent);
        let remaining_today = u32::try_from(remaining).unwrap_or(u32::MAX);
        let fits = if request.reserve {
            reserved
        } else {
            wanted <= remaining
        };
        if !fits {
            return Ok(pb::CheckOutboundResponse {
                allowed: false,
                reason: format!("daily limit of {cap} clearnet recipients reached"),
                remaining_today,
            });
        }
        Ok(pb::CheckOutboundResponse {
            allowed: true,
            reason: String::new(),
            remaining_today,
        })
    }

    /// Gives back what a reserving CheckOutbound counted, for a message that was not queued.
    pub async fn release_outbound(
        &self,
        request: pb::ReleaseOutboundRequest,
    ) -> Result<pb::ReleaseOutboundResponse, GatewayError> {
        if request.account_id.trim().is_empty() {
            return Err(GatewayError::InvalidArgument(
                "account_id is required".into(),
            ));
        }
        self.store
            .release_sent(&request.account_id, &today(), u64::from(request.recipients))
            .await?;
        Ok(pb::ReleaseOutboundResponse {})
    }

    /// Sends one message to its clearnet recipients, each from its own alias. The recipients
    /// were counted against the daily cap when smtp-in accepted the message (a reserving
    /// CheckOutbound), so a send counts nothing; the plan and the account are checked again
    /// here, as they may have changed while the message waited.
    pub async fn send_outbound(
        &self,
        request: pb::SendOutboundRequest,
    ) -> Result<pb::SendOutboundResponse, GatewayError> {
        if request.account_id.trim().is_empty() || request.sender_identity_id.trim().is_empty() {
            return Err(GatewayError::InvalidArgument(
                "account_id and sender_identity_id are required".into(),
            ));
        }
        if request.recipients.is_empty() {
            return Err(GatewayError::InvalidArgument(
                "recipients is required".into(),
            ));
        }
        if request.recipients.iter().any(|r| alias::is_onion(r)) {
            return Err(GatewayError::InvalidArgument(
                "an onion address cannot be sent through the gateway".into(),
            ));
        }
        let refusal = self.sender_refusal(&request).await?;
        let mut results = Vec::with_capacity(request.recipients.len());
        for recipient in &request.recipients {
            let result = match &refusal {
                Some(text) => result_of(
                    recipient,
                    String::new(),
                    Delivery {
                        outcome: Outcome::Permanent(Reply {
                            code: 550,
                            enhanced_status: "5.7.1".into(),
                            text: text.clone(),
                        }),
                        connection_error: None,
                    },
                ),
                None => self.send_one(&request, recipient).await?,
            };
            results.push(result);
        }
        Ok(pb::SendOutboundResponse {
            recipients: results,
        })
    }

    /// Why the sender may no longer use the gateway, if it may not.
    async fn sender_refusal(
        &self,
        request: &pb::SendOutboundRequest,
    ) -> Result<Option<String>, GatewayError> {
        // The header's onion addresses are rewritten; the body's cannot be, so it is refused.
        let (_, body) = rewrite::split(&request.message);
        if rewrite::names_onion_address(body) {
            return Ok(Some(BODY_NAMES_AN_ONION.into()));
        }
        let account = match self.backend.account(&request.account_id).await {
            Ok(account) => account,
            Err(GatewayError::NotFound(_)) => return Ok(Some("no such account".into())),
            Err(error) => return Err(error),
        };
        if !account.gateway_allowed {
            return Ok(Some(
                "the sender's plan does not include clearnet mail".into(),
            ));
        }
        let identity = match self.backend.identity(&request.sender_identity_id).await {
            Ok(identity) => identity,
            Err(GatewayError::NotFound(_)) => return Ok(Some("no such sender".into())),
            Err(error) => return Err(error),
        };
        if identity.account_id != request.account_id {
            return Ok(Some(
                "the sender is not one of the account's identities".into(),
            ));
        }
        Ok(None)
    }

    async fn send_one(
        &self,
        request: &pb::SendOutboundRequest,
        recipient: &str,
    ) -> Result<pb::RecipientResult, GatewayError> {
        let correspondent = alias::normalize(recipient);
        if !alias::is_clearnet_mailbox(&correspondent) {
            return Ok(result_of(
                recipient,
                String::new(),
                Delivery {
                    outcome: Outcome::Permanent(Reply {
                        code: 553,
                        enhanced_status: "5.1.3".into(),
                        text: "not a clearnet mailbox address".into(),
                    }),
                    connection_error: None,
                },
            ));
        }
        let record = self
            .store
            .alias_for(
                &request.sender_identity_id,
                &request.account_id,
                &correspondent,
                &alias::new_local_part(),
                now_ms(),
            )
            .await?;
        let alias_address = self.address(&record.local_part);
        let rewritten = rewrite::for_clearnet(&request.message, &alias_address, &self.domain);
        let signature = self
            .signer
            .sign(&rewritten)
            .map_err(|error| GatewayError::Internal(error.to_string()))?;
        let mut signed = Vec::with_capacity(signature.len() + rewritten.len());
        signed.extend_from_slice(signature.as_bytes());
        signed.extend_from_slice(&rewritten);
        let delivery = self
            .outbound
            .deliver(
                &alias_address,
                &correspondent,
                &signed,
                &request.envelope_id,
            )
            .await;
        let day = today();
        match &delivery.outcome {
            Outcome::Delivered(_) => {
                self.store.touch_alias(&record.local_part, now_ms()).await?;
                self.store
                    .count(&day, Counter::OutboundDelivered, 1)
                    .await?;
                metrics::counter!("onionpost_gateway_outbound_total", "outcome" => "delivered")
                    .increment(1);
            }
            Outcome::Permanent(_) => {
                self.store.count(&day, Counter::OutboundFailed, 1).await?;
                metrics::counter!("onionpost_gateway_outbound_total", "outcome" => "permanent_failure")
                    .increment(1);
            }
            Outcome::Temporary(_) => {
                metrics::counter!("onionpost_gateway_outbound_total", "outcome" => "temporary_failure")
                    .increment(1);
            }
        }
        tracing::debug!(queue_id = %request.queue_id, recipient = %correspondent, outcome = ?delivery.outcome, "clearnet delivery attempted");
        Ok(result_of(recipient, alias_address, delivery))
    }

    /// A page of aliases.
    pub async fn list_aliases(
        &self,
        request: pb::ListAliasesRequest,
    ) -> Result<pb::ListAliasesResponse, GatewayError> {
        let limit = match request.page_size {
            0 => 100,
            size => size.min(MAX_PAGE),
        };
        let non_empty = |text: &str| (!text.trim().is_empty()).then(|| text.trim().to_owned());
        let filter = AliasFilter {
            account_id: non_empty(&request.account_id),
            identity_id: non_empty(&request.identity_id),
            include_revoked: request.include_revoked,
            after: non_empty(&request.page_token),
            limit: limit + 1,
        };
        let mut records = self.store.list_aliases(&filter).await?;
        let more = records.len() > limit as usize;
        records.truncate(limit as usize);
        let next_page_token = if more {
            records
                .last()
                .map(|record| record.local_part.clone())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListAliasesResponse {
            aliases: records.iter().map(|record| self.to_proto(record)).collect(),
            next_page_token,
        })
    }

    /// Revokes an alias by address or local part.
    pub async fn revoke_alias(
        &self,
        request: pb::RevokeAliasRequest,
    ) -> Result<pb::Alias, GatewayError> {
        let given = alias::normalize(&request.address);
        let local = match given.rsplit_once('@') {
            Some(_) => alias::local_part_of(&given, &self.domain),
            None => alias::is_well_formed(&given).then_some(given.clone()),
        };
        let Some(local) = local else {
            return Err(GatewayError::NotFound("alias"));
        };
        if !request.account_id.is_empty()
            && self
                .store
                .alias(&local)
                .await?
                .is_none_or(|alias| alias.account_id != request.account_id)
        {
            return Err(GatewayError::NotFound("alias"));
        }
        match self.store.revoke_alias(&local, now_ms()).await? {
            Some(record) => {
                tracing::info!("gateway alias revoked");
                Ok(self.to_proto(&record))
            }
            None => Err(GatewayError::NotFound("alias")),
        }
    }

    /// Today's traffic and the live aliases.
    pub async fn stats(&self) -> Result<pb::GatewayStats, GatewayError> {
        let day = today();
        let counter = |counter| {
            let store = self.store.clone();
            let day = day.clone();
            async move { store.counter(&day, counter).await }
        };
        Ok(pb::GatewayStats {
            outbound_delivered_today: counter(Counter::OutboundDelivered).await?,
            outbound_failed_today: counter(Counter::OutboundFailed).await?,
            inbound_accepted_today: counter(Counter::InboundAccepted).await?,
            inbound_refused_today: counter(Counter::InboundRefused).await?,
            inbound_dmarc_failed_today: counter(Counter::InboundDmarcFailed).await?,
            inbound_spam_today: counter(Counter::InboundSpam).await?,
            live_aliases: self.store.live_aliases().await?,
        })
    }

    /// Counts an inbound event; a storage failure is logged, never fatal to the session.
    pub async fn count(&self, counter: Counter) {
        if let Err(error) = self.store.count(&today(), counter, 1).await {
            tracing::warn!(%error, "gateway counter not stored");
        }
    }

    pub fn to_proto(&self, record: &AliasRecord) -> pb::Alias {
        pb::Alias {
            address: self.address(&record.local_part),
            identity_id: record.identity_id.clone(),
            account_id: record.account_id.clone(),
            correspondent: record.correspondent.clone(),
            created_at: Some(timestamp(record.created_at_ms)),
            last_used_at: record.last_used_at_ms.map(timestamp),
            revoked_at: record.revoked_at_ms.map(timestamp),
        }
    }
}

fn result_of(recipient: &str, alias_address: String, delivery: Delivery) -> pb::RecipientResult {
    let (outcome, reply) = match delivery.outcome {
        Outcome::Delivered(reply) => (pb::Outcome::Delivered, reply),
        Outcome::Temporary(reply) => (pb::Outcome::TemporaryFailure, reply),
        Outcome::Permanent(reply) => (pb::Outcome::PermanentFailure, reply),
    };
    pb::RecipientResult {
        address: recipient.to_owned(),
        outcome: outcome as i32,
        reply: Some(pb::SmtpReply {
            code: u32::from(reply.code),
            enhanced_status: reply.enhanced_status,
            text: reply.text,
        }),
        alias_address,
        connection_error: delivery.connection_error.unwrap_or_default(),
    }
}
