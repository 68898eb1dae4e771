//! The queue's operations: accepting messages durably, and what operators may do to them.
//! Delivery itself is the scheduler's (see `scheduler`).

use std::sync::Arc;

use onionpost_proto::address::OnionHost;
use onionpost_runtime::seal::Sealer;
use rand::RngCore;
use tokio::sync::Notify as WakeUp;

use crate::clock::Clock;
use crate::dsn::{self, Action, Reported};
use crate::error::QueueError;
use crate::retry::RetryPolicy;
use crate::store::{
    CarryCap, DsnReturn, ListFilter, MessageRecord, NewMessage, NewRecipient, Notify, Origin,
    PageAfter, QueueStore, Reply, StatsRecord,
};

/// Largest page of ListMessages.
const MAX_PAGE: u32 = 500;
const DEFAULT_PAGE: u32 = 50;

/// Age buckets of GetStats: 5 minutes, an hour, a day, the default lifetime.
pub const AGE_BOUNDS_MS: [i64; 4] = [300_000, 3_600_000, 86_400_000, 432_000_000];

/// A message as asked to be queued (queue.proto `EnqueueRequest`, validated).
#[derive(Clone)]
pub struct Enqueue {
    pub idempotency_key: String,
    pub origin: Origin,
    pub account_id: String,
    pub sender_identity_id: String,
    pub reverse_path: String,
    pub recipients: Vec<NewRecipient>,
    pub message: Vec<u8>,
    pub message_id: String,
    pub envelope_id: String,
    pub dsn_return: DsnReturn,
    pub fan_out_immediately: bool,
}

/// The queue service. Cheap to clone.
#[derive(Clone)]
pub struct QueueService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn QueueStore>,
    /// Seals bodies at rest (`queue-body`), bound to their queue id.
    sealer: Sealer,
    clock: Arc<dyn Clock>,
    policy: RetryPolicy,
    /// Wakes the scheduler: something may be due now.
    wake: WakeUp,
}

impl QueueService {
    pub fn new(
        store: Arc<dyn QueueStore>,
        sealer: Sealer,
        clock: Arc<dyn Clock>,
        policy: RetryPolicy,
    ) -> Self {
        QueueService {
            inner: Arc::new(Inner {
                store,
                sealer,
                clock,
                policy,
                wake: WakeUp::new(),
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn QueueStore> {
        &self.inner.store
    }

    pub fn now_ms(&self) -> i64 {
        onionpost_runtime::time::to_ms(self.inner.clock.now())
    }

    pub fn policy(&self) -> RetryPolicy {
        self.inner.policy
    }

    /// Tells the scheduler to look again (new work, or time moved in a test).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.inner.wake.notified().await;
    }

    /// Stores a message; it is on disk (committed) when this returns.
    pub async fn enqueue(&self, request: Enqueue) -> Result<MessageRecord, QueueError> {
        if request.idempotency_key.is_empty() {
            return Err(QueueError::InvalidArgument(
                "idempotency_key is required".into(),
            ));
        }
        if request.recipients.is_empty() {
            return Err(QueueError::InvalidArgument(
                "at least one recipient is required".into(),
            ));
        }
        if let Some(bad) = request
            .recipients
            .iter()
            .find(|recipient| !recipient.address.contains('@'))
        {
            return Err(QueueError::InvalidArgument(format!(
                "recipient {:?} is not an address",
                bad.address
            )));
        }
        if request.message.is_empty() {
            return Err(QueueError::InvalidArgument("message is empty".into()));
        }
        if matches!(
            request.origin,
            Origin::Submission | Origin::Local | Origin::Received
        ) && request.sender_identity_id.is_empty()
        {
            return Err(QueueError::InvalidArgument(
                "sender_identity_id is required for submitted, local and received messages".into(),
            ));
        }
        let now = self.now_ms();
        let mut message = self.new_message(request, now);
        if message.origin == Origin::Carry {
            // Carried mail arrives because its sender just failed to reach the recipient, so
            // trying at once would only fail again; the first attempt waits one retry interval,
            // and an ETRN from the recipient releases it sooner.
            message.first_attempt_at_ms = now.saturating_add(self.inner.policy.base_delay_ms(1));
        }
        let (stored, created) = if message.origin == Origin::Carry {
            self.enqueue_carried(&message, now).await?
        } else {
            self.inner.store.enqueue(&message).await?
        };
        if created {
            metrics::counter!("onionpost_queue_enqueued_total", "origin" => message.origin.as_str())
                .increment(1);
            tracing::debug!(queue_id = %stored.queue_id, recipients = stored.recipients.len(), "message queued");
            self.wake();
        }
        Ok(stored)
    }

    /// Stores carried mail within each recipient's agreement: CheckCarry at RCPT saw only the
    /// declared SIZE (or none) and what was held then, so the caps are checked again with the
    /// real size, in the transaction that stores the message.
    async fn enqueue_carried(
        &self,
        message: &NewMessage,
        now: i64,
    ) -> Result<(MessageRecord, bool), QueueError> {
        let mut caps = Vec::with_capacity(message.recipients.len());
        for recipient in &message.recipients {
            let address = recipient.address.trim().to_ascii_lowercase();
            let Some(agreement) = self.inner.store.active_agreement(&address, now).await? else {
                return Err(QueueError::Refused(
                    "no carry agreement for a recipient".into(),
                ));
            };
            caps.push(CarryCap {
                address,
                max_held_bytes: agreement.max_held_bytes,
                max_messages_per_day: agreement.max_messages_per_day,
            });
        }
        match self.inner.store.enqueue_within(message, &caps).await? {
            Some(stored) => Ok(stored),
            None => {
                metrics::counter!("onionpost_queue_carry_over_limit_total").increment(1);
                Err(QueueError::OverLimit(
                    "a recipient's carried mail is at its agreed limit".into(),
                ))
            }
        }
    }

    fn new_message(&self, request: Enqueue, now: i64) -> NewMessage {
        let queue_id = random_id();
        // Keyed: a plain SHA-256 of a clearnet body would let a copied volume confirm a guess.
        let body_digest = hex::encode(self.inner.sealer.keyed_digest(&[&request.message]));
        let sealed_body = self
            .inner
            .sealer
            .seal(&request.message, queue_id.as_bytes());
        NewMessage {
            idempotency_key: request.idempotency_key,
            origin: request.origin,
            account_id: request.account_id,
            sender_identity_id: request.sender_identity_id,
            reverse_path: request.reverse_path,
            message_id: request.message_id,
            envelope_id: request.envelope_id,
            dsn_return: request.dsn_return,
            fan_out_immediately: request.fan_out_immediately,
            size_bytes: request.message.len() as u64,
            sealed_body,
            body_digest,
            enqueued_at_ms: now,
            first_attempt_at_ms: now,
            expires_at_ms: now.saturating_add(self.inner.policy.lifetime_ms()),
            recipients: request.recipients,
            queue_id,
        }
    }

    /// Seals bytes the queue keeps beside messages (a carry statement received in mail), bound
    /// to `id`, with the same key as bodies.
    pub(crate) fn seal_aside(&self, bytes: &[u8], id: &str) -> Vec<u8> {
        self.inner.sealer.seal(bytes, id.as_bytes())
    }

    /// Opens what [`Self::seal_aside`] sealed for `id`.
    pub(crate) fn open_aside(&self, sealed: &[u8], id: &str) -> Result<Vec<u8>, QueueError> {
        Ok(self.inner.sealer.open(sealed, id.as_bytes())?.to_vec())
    }

    /// The body in the clear.
    pub async fn open_body(&self, queue_id: &str) -> Result<Option<Vec<u8>>, QueueError> {
        let Some(sealed) = self.inner.store.load_body(queue_id).await? else {
            return Ok(None);
        };
        let body = self.inner.sealer.open(&sealed, queue_id.as_bytes())?;
        Ok(Some(body.to_vec()))
    }

    /// A DSN about `lines` of `message`, as a local queue entry for the sender's INBOX; `None`
    /// when nothing is to be reported.
    pub(crate) fn dsn_for(
        &self,
        message: &MessageRecord,
        original: &[u8],
        lines: &[Reported<'_>],
    ) -> Option<NewMessage> {
        if lines.is_empty() || !dsn::sender_gets_dsns(message) {
            return None;
        }
        let now = self.now_ms();
        let report = dsn::build(message, original, lines, now);
        let request = Enqueue {
            idempotency_key: format!("dsn:{}:{}", message.queue_id, random_id()),
            origin: Origin::Local,
            account_id: message.account_id.clone(),
            sender_identity_id: message.sender_identity_id.clone(),
            // A DSN has a null reverse path: it never causes another one.
            reverse_path: String::new(),
            recipients: vec![NewRecipient {
                address: message.reverse_path.clone(),
                notify: vec![Notify::Never],
                original_recipient: String::new(),
            }],
            message: report,
            message_id: String::new(),
            envelope_id: String::new(),
            dsn_return: DsnReturn::Unspecified,
            fan_out_immediately: false,
        };
        metrics::counter!("onionpost_queue_dsns_total").increment(1);
        Some(self.new_message(request, now))
    }

    /// A carried message's DSN, already encrypted to its sender, as a queue entry that goes
    /// back over the sender's onion: null reverse path (it never causes another DSN), isolated
    /// like the carried mail it reports on.
    pub(crate) fn carried_dsn(&self, message: &MessageRecord, encrypted: Vec<u8>) -> NewMessage {
        let request = Enqueue {
            idempotency_key: format!("dsn:{}:{}", message.queue_id, random_id()),
            origin: Origin::Carry,
            account_id: String::new(),
            sender_identity_id: String::new(),
            reverse_path: String::new(),
            recipients: vec![NewRecipient {
                address: message.reverse_path.clone(),
                notify: vec![Notify::Never],
                original_recipient: String::new(),
            }],
            message: encrypted,
            message_id: String::new(),
            envelope_id: String::new(),
            dsn_return: DsnReturn::Unspecified,
            fan_out_immediately: false,
        };
        metrics::counter!("onionpost_queue_dsns_total").increment(1);
        self.new_message(request, self.now_ms())
    }

    pub async fn get(&self, queue_id: &str) -> Result<MessageRecord, QueueError> {
        self.inner
            .store
            .get_message(queue_id)
            .await?
            .ok_or_else(|| QueueError::NotFound(queue_id.to_owned()))
    }

    /// One page, and the token of the next one (empty at the end).
    pub async fn list(
        &self,
        filter: &ListFilter,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<MessageRecord>, String), QueueError> {
        let limit = match page_size {
            0 => DEFAULT_PAGE,
            size => size.min(MAX_PAGE),
        };
        let after = if page_token.is_empty() {
            None
        } else {
            let (at, queue_id) = page_token
                .split_once(':')
                .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id)))
                .ok_or_else(|| QueueError::InvalidArgument("page_token is not valid".into()))?;
            Some(PageAfter {
                enqueued_at_ms: at,
                queue_id: queue_id.to_owned(),
            })
        };
        let messages = self
            .inner
            .store
            .list_messages(filter, after.as_ref(), limit)
            .await?;
        let next = match messages.last() {
            Some(last) if messages.len() == limit as usize => {
                format!("{}:{}", last.enqueued_at_ms, last.queue_id)
            }
            _ => String::new(),
        };
        Ok((messages, next))
    }

    pub async fn retry_now(&self, queue_id: &str) -> Result<MessageRecord, QueueError> {
        if !self.inner.store.retry_now(queue_id, self.now_ms()).await? {
            return Err(QueueError::NotFound(queue_id.to_owned()));
        }
        self.wake();
        self.get(queue_id).await
    }

    pub async fn set_held(&self, queue_id: &str, held: bool) -> Result<MessageRecord, QueueError> {
        if !self.inner.store.set_held(queue_id, held).await? {
            return Err(QueueError::NotFound(queue_id.to_owned()));
        }
        if !held {
            self.wake();
        }
        self.get(queue_id).await
    }

    /// Removes a message; with `notify_sender`, a failure DSN for the unfinished recipients
    /// that asked for one is queued in the same transaction.
    pub async fn delete(&self, queue_id: &str, notify_sender: bool) -> Result<(), QueueError> {
        let message = self.get(queue_id).await?;
        let now = self.now_ms();
        let mut dsn = None;
        if notify_sender {
            let original = self.open_body(queue_id).await?.unwrap_or_default();
            let reply = Reply {
                code: 550,
                enhanced_status: "5.0.0".into(),
                text: "message deleted from the queue by the carrier's operator".into(),
            };
            let lines: Vec<Reported<'_>> = message
                .recipients
                .iter()
                .filter(|recipient| !recipient.state.is_final())
                .filter(|recipient| dsn::wants(&recipient.notify, Action::Failed))
                .map(|recipient| Reported {
                    recipient,
                    action: Action::Failed,
                    reply: Some(reply.clone()),
                    at_ms: now,
                })
                .collect();
            dsn = self.dsn_for(&message, &original, &lines);
        }
        if !self
            .inner
            .store
            .delete_message(queue_id, dsn.as_ref())
            .await?
        {
            return Err(QueueError::NotFound(queue_id.to_owned()));
        }
        if dsn.is_some() {
            self.wake();
        }
        Ok(())
    }

    pub async fn stats(&self) -> Result<StatsRecord, QueueError> {
        Ok(self
            .inner
            .store
            .stats(self.now_ms(), &AGE_BOUNDS_MS)
            .await?)
    }

    /// ETRN: everything for `onion` due now. Returns how many recipients.
    pub async fn flush(&self, onion: &str) -> Result<u64, QueueError> {
        let onion = OnionHost::parse(onion.trim())
            .map_err(|error| QueueError::InvalidArgument(format!("onion: {error}")))?
            .to_string();
        let due = self.inner.store.flush_domain(&onion, self.now_ms()).await?;
        if due > 0 {
            self.wake();
        }
        Ok(due)
    }
}

/// 128 random bits, hex.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A v3 onion host, checksum verified, in any case and with subdomain labels (what smtp-out
/// will dial once canonical): the carrier-wide parser of `onionpost_proto::address`.
pub fn is_v3_onion(host: &str) -> bool {
    OnionHost::parse(host).is_ok()
}

#[cfg(test)]
mod tests {
    use onionpost_proto::address::examples;

    use super::*;
    use crate::store::domain_of;

    #[test]
    fn shared_address_forms_queue_routes_every_spelling_to_the_canonical_onion() {
        let host = OnionHost::from_ed25519(&[b'q'; 32]);
        for form in examples::accepted_forms(&host) {
            assert!(is_v3_onion(&form), "{form}");
            assert_eq!(domain_of(&format!("carol@{form}")), host.as_str(), "{form}");
        }
        for (form, _) in examples::refused_forms(&host) {
            assert!(!is_v3_onion(&form), "{form}");
            // Still an onion name, so the scheduler never hands it to the gateway.
            assert!(onionpost_proto::address::is_onion_name(&domain_of(
                &format!("carol@{form}")
            )));
        }
    }
}
