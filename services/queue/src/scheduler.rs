//! The scheduler: the background loop that delivers due recipients.
//!
//! It wakes on the next due time, on a nudge (Enqueue, RetryNow, Release, Flush, a finished
//! session) or on shutdown; claims due recipients with a lease (so several workers can share a
//! PostgreSQL queue, and a crashed one's work comes back when its leases run out); groups a
//! message's recipients by destination onion into one SMTP session each through smtp-out; and
//! records every recipient's outcome, with its retry time, final state and DSN, in one
//! transaction. Local messages (DSNs) go to the imap service instead, and so do received ones
//! (mail for an identity of this carrier whose sender's key was not pinned), once the keys
//! service has checked them against the key from the sender's onion.

use onionpost_proto::clients;
use onionpost_runtime::time;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use onionpost_proto::ServiceName;
use onionpost_proto::address::{OnionHost, is_onion_name};
use onionpost_proto::gateway::v1 as gateway_pb;
use onionpost_proto::imap::v1 as imap_pb;
use onionpost_proto::keys::v1 as keys_pb;
use onionpost_proto::smtp_out::v1 as smtp_pb;
use onionpost_runtime::Directory;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::dsn::{self, Action, Reported};
use crate::service::{QueueService, is_v3_onion, random_id};
use crate::store::{
    AfterRecord, Claim, DsnReturn, MessageRecord, Notify, Origin, RecipientRecord, RecipientState,
    RecipientUpdate, Reply, domain_of,
};

/// SMTP sessions (or imap deliveries) in flight at once.
const SESSIONS: usize = 16;

/// How long a claim lasts unless renewed. A live worker renews its leases every
/// [`LEASE_RENEWAL`] for as long as a session runs (RFC 5321 §4.5.3.2 lets one take many
/// minutes), so it never loses a recipient it is still delivering; a worker killed mid-session
/// has its recipients tried again by the next worker (or itself, restarted) within a minute.
const LEASE: Duration = Duration::from_secs(60);

/// How often a worker renews its leases: a third of [`LEASE`], so two renewals can fail
/// (a database hiccup) before a lease runs out.
const LEASE_RENEWAL: Duration = Duration::from_secs(20);

/// The longest the loop sleeps without looking, in case a nudge was missed.
const MAX_IDLE: Duration = Duration::from_secs(30);

/// How long encrypting a carried DSN may take (a WKD fetch over the sender's onion).
const CARRIED_DSN_TIMEOUT: Duration = Duration::from_secs(60);

/// How often queue gauges are refreshed.
const GAUGE_INTERVAL_MS: i64 = 15_000;

/// Delivers what is due.
#[derive(Clone)]
pub struct Scheduler {
    service: QueueService,
    directory: Directory,
    /// This worker's name in `claimed_by`.
    worker: Arc<str>,
    sessions: Arc<Semaphore>,
}

/// What became of one recipient in one attempt.
enum Outcome {
    Delivered(Reply),
    Temporary(Reply),
    Permanent(Reply),
}

impl Scheduler {
    pub fn new(service: QueueService, directory: Directory) -> Self {
        Scheduler {
            service,
            directory,
            worker: Arc::from(format!("worker-{}", &random_id()[..12])),
            sessions: Arc::new(Semaphore::new(SESSIONS)),
        }
    }

    /// Every [`LEASE_RENEWAL`], extends this worker's leases by [`LEASE`]; runs until aborted.
    async fn renew_leases(self) {
        loop {
            tokio::time::sleep(LEASE_RENEWAL).await;
            let now = self.service.now_ms();
            let until = now.saturating_add(time::duration_ms(LEASE));
            match self
                .service
                .store()
                .renew_leases(&self.worker, now, until)
                .await
            {
                Ok(renewed) if renewed > 0 => tracing::debug!(renewed, "queue leases renewed"),
                Ok(_) => {}
                Err(error) => tracing::warn!(error = %error, "renewing queue leases failed"),
            }
        }
    }

    /// Runs until `shutdown`; in-flight sessions are given a few seconds, then left to their
    /// leases.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(worker = %self.worker, "queue scheduler started");
        // Stops with the scheduler: aborted below once the sessions it renews for are gone.
        let renewal = tokio::spawn(
            self.clone()
                .renew_leases()
                .instrument(tracing::info_span!("task", task = "queue-lease-renewal")),
        );
        let mut tasks = JoinSet::new();
        let mut gauges_at = i64::MIN;
        loop {
            while tasks.try_join_next().is_some() {}
            let now = self.service.now_ms();
            if now.saturating_sub(gauges_at) >= GAUGE_INTERVAL_MS {
                gauges_at = now;
                self.refresh_gauges().await;
            }
            let available = self.sessions.available_permits();
            let mut wait = MAX_IDLE;
            if available > 0 {
                let lease_until = now.saturating_add(time::duration_ms(LEASE));
                // At most as many recipients as free sessions: every group claimed starts at
                // once, so no lease ticks away while its recipient waits for a slot.
                match self
                    .service
                    .store()
                    .claim_due(&self.worker, now, lease_until, available as u32)
                    .await
                {
                    Ok(claims) if !claims.is_empty() => {
                        for (queue_id, idxs) in group_by_message(claims) {
                            let Ok(permit) = self.sessions.clone().acquire_owned().await else {
                                break;
                            };
                            let scheduler = self.clone();
                            tasks.spawn(async move {
                                scheduler.deliver_message(&queue_id, &idxs).await;
                                drop(permit);
                                scheduler.service.wake();
                            });
                        }
                        continue;
                    }
                    Ok(_) => match self.service.store().next_wake().await {
                        Ok(Some(at)) => {
                            let ms = at
                                .saturating_sub(now)
                                .clamp(10, time::duration_ms(MAX_IDLE));
                            wait = Duration::from_millis(ms as u64);
                        }
                        Ok(None) => {}
                        Err(error) => {
                            tracing::warn!(error = %error, "queue next wake time unavailable");
                            wait = Duration::from_secs(5);
                        }
                    },
                    Err(error) => {
                        tracing::warn!(error = %error, "claiming due recipients failed");
                        wait = Duration::from_secs(5);
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.service.woken() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(5), drain)
            .await
            .is_err()
        {
            tracing::info!(
                "queue scheduler stopped with sessions in flight; their leases will expire"
            );
        }
        renewal.abort();
        tracing::info!("queue scheduler stopped");
    }

    async fn refresh_gauges(&self) {
        let Ok(stats) = self.service.stats().await else {
            return;
        };
        for state in RecipientState::ALL {
            let count = stats
                .by_state
                .iter()
                .find(|(counted, _)| *counted == state)
                .map_or(0, |(_, count)| *count);
            metrics::gauge!("onionpost_queue_recipients", "state" => state.as_str())
                .set(count as f64);
        }
        metrics::gauge!("onionpost_queue_messages").set(stats.messages as f64);
        metrics::gauge!("onionpost_queue_held_messages").set(stats.held_messages as f64);
        metrics::gauge!("onionpost_queue_stored_bytes").set(stats.stored_bytes as f64);
        let oldest_age = stats
            .oldest_enqueued_at_ms
            .map_or(0, |at| self.service.now_ms().saturating_sub(at).max(0));
        metrics::gauge!("onionpost_queue_oldest_age_seconds").set(oldest_age as f64 / 1000.0);
    }

    /// One message's claimed recipients: an SMTP session per destination onion (or an imap
    /// delivery for a local message), then the results recorded.
    async fn deliver_message(&self, queue_id: &str, idxs: &[i32]) {
        let message = match self.service.store().get_message(queue_id).await {
            Ok(Some(message)) => message,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(queue_id, error = %error, "loading a queued message failed");
                return;
            }
        };
        let claimed: Vec<&RecipientRecord> = message
            .recipients
            .iter()
            .filter(|recipient| idxs.contains(&recipient.idx))
            .filter(|recipient| recipient.claimed_by.as_deref() == Some(&*self.worker))
            .collect();
        if claimed.is_empty() {
            return;
        }
        let body = match self.service.open_body(queue_id).await {
            Ok(Some(body)) => body,
            Ok(None) => return,
            Err(error) => {
                tracing::error!(queue_id, error = %error, "queued body cannot be read");
                return;
            }
        };
        let started = self.service.now_ms();
        let mut outcomes: Vec<(&RecipientRecord, Outcome, bool)> = Vec::new();
        if started >= message.expires_at_ms {
            // Claimed after the lifetime ran out (the carrier was down): no last attempt.
            for recipient in claimed {
                let reply = expired_reply(recipient.last_reply.as_ref(), recipient.attempts);
                outcomes.push((recipient, Outcome::Permanent(reply), false));
            }
        } else if message.origin == Origin::Local {
            for recipient in claimed {
                let outcome = self.deliver_local(&message, &body).await;
                outcomes.push((recipient, outcome, true));
            }
        } else if message.origin == Origin::Received {
            for recipient in claimed {
                let outcome = self.deliver_received(&message, &body).await;
                outcomes.push((recipient, outcome, true));
            }
        } else {
            let mut by_destination: BTreeMap<String, Vec<&RecipientRecord>> = BTreeMap::new();
            for recipient in claimed {
                by_destination
                    .entry(domain_of(&recipient.address))
                    .or_default()
                    .push(recipient);
            }
            for (destination, recipients) in by_destination {
                // Sender policy: hand the message to the carriers before the direct attempt,
                // not after it failed.
                if message.fan_out_immediately {
                    self.fan_out(&message, &destination, &recipients, &body)
                        .await;
                }
                let results = self
                    .deliver_remote(&message, &destination, &recipients, &body)
                    .await;
                let waiting: Vec<&RecipientRecord> = recipients
                    .iter()
                    .zip(&results)
                    .filter(|(_, outcome)| matches!(outcome, Outcome::Temporary(_)))
                    .map(|(recipient, _)| *recipient)
                    .collect();
                // (With the policy above the carriers were asked already in this round; the
                // recipient snapshot would not show that yet.)
                if !message.fan_out_immediately {
                    self.fan_out(&message, &destination, &waiting, &body).await;
                }
                for (recipient, outcome) in recipients.into_iter().zip(results) {
                    outcomes.push((recipient, outcome, true));
                }
            }
        }
        self.record(&message, &body, outcomes).await;
    }

    async fn record(
        &self,
        message: &MessageRecord,
        body: &[u8],
        outcomes: Vec<(&RecipientRecord, Outcome, bool)>,
    ) {
        let now = self.service.now_ms();
        let policy = self.service.policy();
        let mut updates = Vec::new();
        let mut lines = Vec::new();
        for (recipient, outcome, attempted) in outcomes {
            let (state, next, reply, label) = match outcome {
                Outcome::Delivered(reply) => (RecipientState::Delivered, None, reply, "delivered"),
                Outcome::Permanent(reply) => (
                    RecipientState::PermanentFailure,
                    None,
                    reply,
                    "permanent_failure",
                ),
                Outcome::Temporary(reply) => {
                    let attempts = recipient.attempts + u32::from(attempted);
                    match policy.next_attempt_ms(attempts, now, message.expires_at_ms) {
                        Some(next) => (
                            RecipientState::TemporaryFailure,
                            Some(next),
                            reply,
                            "temporary_failure",
                        ),
                        // The next try would fall after the lifetime: give up now.
                        None => (
                            RecipientState::PermanentFailure,
                            None,
                            expired_reply(Some(&reply), attempts),
                            "expired",
                        ),
                    }
                }
            };
            metrics::counter!("onionpost_queue_attempts_total", "outcome" => label).increment(1);
            let action = match state {
                RecipientState::Delivered => Some(Action::Delivered),
                RecipientState::PermanentFailure => Some(Action::Failed),
                _ => None,
            };
            // A copy the recipient already had (through a carrier or directly) was reported by
            // whoever delivered first.
            let already_delivered = state == RecipientState::Delivered
                && reply.text.contains(onionpost_proto::ALREADY_DELIVERED_TEXT);
            if let Some(action) = action
                && dsn::wants(&recipient.notify, action)
                && !already_delivered
            {
                lines.push(Reported {
                    recipient,
                    action,
                    reply: Some(reply.clone()),
                    at_ms: now,
                });
            }
            updates.push(RecipientUpdate {
                idx: recipient.idx,
                state,
                attempted,
                attempted_at_ms: now,
                next_attempt_at_ms: next,
                reply: Some(reply),
            });
        }
        let dsn = if message.origin == Origin::Carry {
            self.carried_dsn(message, body, &lines).await
        } else {
            self.service.dsn_for(message, body, &lines)
        };
        match self
            .service
            .store()
            .record(&self.worker, &message.queue_id, &updates, dsn.as_ref())
            .await
        {
            Ok(AfterRecord::Finished) => {
                tracing::debug!(queue_id = %message.queue_id, "message done and removed");
            }
            Ok(AfterRecord::Pending) => {}
            // The lease keeps the recipients; they are tried again when it runs out.
            Err(error) => {
                tracing::warn!(queue_id = %message.queue_id, error = %error, "recording results failed");
            }
        }
    }

    /// Fan-out (design.md, "Carriers"): hands a submitted message, already encrypted to its
    /// recipients, to each recipient's carriers from the sender's address book (those the
    /// account designated, then those the recipient publishes), one SMTP session per carrier. Each carrier queues it and retries on its own schedule, and
    /// releases it to the recipient's onion only. A carrier is handed the message once per
    /// recipient (`handed_to_carriers`); this carrier keeps trying directly as well, and the
    /// recipient drops the copies it already has (Message-ID and body digest). A hand-off that
    /// fails is tried again after the next failed direct attempt.
    async fn fan_out(
        &self,
        message: &MessageRecord,
        destination: &str,
        recipients: &[&RecipientRecord],
        body: &[u8],
    ) {
        // Only own mail fans out: carried mail is already with a carrier, and a chain of
        // carriers would spread it beyond whom the recipient trusts.
        if message.origin != Origin::Submission
            || recipients.is_empty()
            || !is_v3_onion(destination)
        {
            return;
        }
        let Ok(keys) = self.directory.transport(ServiceName::Keys) else {
            return;
        };
        let mut client = clients::keys(keys);
        let mut by_carrier: BTreeMap<String, Vec<&RecipientRecord>> = BTreeMap::new();
        for recipient in recipients {
            let request = keys_pb::GetContactRequest {
                account_id: message.account_id.clone(),
                contact: Some(keys_pb::get_contact_request::Contact::Address(
                    recipient.address.clone(),
                )),
            };
            let contact = match client.get_contact(request).await {
                Ok(contact) => contact.into_inner(),
                Err(status) if status.code() == tonic::Code::NotFound => continue,
                Err(status) => {
                    tracing::debug!(error = %status.message(), "designated carriers unavailable");
                    continue;
                }
            };
            // The carriers the sender's account named for the contact first, then those the
            // contact publishes itself (its signed carrier list).
            let mut carriers: Vec<String> = Vec::new();
            for carrier in contact
                .designated_carriers
                .into_iter()
                .chain(contact.preferred_carriers)
            {
                let carrier = carrier.to_ascii_lowercase();
                if carrier == destination
                    || !is_v3_onion(&carrier)
                    || recipient.handed_to_carriers.contains(&carrier)
                    || carriers.contains(&carrier)
                {
                    continue;
                }
                carriers.push(carrier);
            }
            for carrier in carriers {
                by_carrier.entry(carrier).or_default().push(recipient);
            }
        }
        for (carrier, handed) in by_carrier {
            let results = self.deliver_remote(message, &carrier, &handed, body).await;
            for (recipient, outcome) in handed.iter().zip(results) {
                let label = match outcome {
                    Outcome::Delivered(_) => "handed",
                    Outcome::Temporary(_) => "temporary_failure",
                    Outcome::Permanent(_) => "refused",
                };
                metrics::counter!("onionpost_queue_fan_out_total", "outcome" => label).increment(1);
                if label != "handed" {
                    tracing::debug!(queue_id = %message.queue_id, outcome = label, "hand-off to a carrier failed");
                    continue;
                }
                if let Err(error) = self
                    .service
                    .store()
                    .note_handed(&message.queue_id, recipient.idx, &carrier)
                    .await
                {
                    // The carrier has it; at worst it is handed over once more later.
                    tracing::warn!(queue_id = %message.queue_id, error = %error, "hand-off not recorded");
                }
            }
        }
    }

    /// A DSN about carried mail (RFC 3464), for a sender that is not one of this carrier's
    /// accounts: it goes back over the sender's onion like any mail, so it must be encrypted
    /// (design.md: end-to-end encryption required). The keys service encrypts it, signed by
    /// nobody, to the key bound to the sender's onion. When that cannot be done now the notice
    /// is dropped (logged and counted): the message itself was delivered or failed all the same.
    async fn carried_dsn(
        &self,
        message: &MessageRecord,
        body: &[u8],
        lines: &[Reported<'_>],
    ) -> Option<crate::store::NewMessage> {
        if lines.is_empty() || message.reverse_path.is_empty() {
            return None;
        }
        let report = dsn::build(message, body, lines, self.service.now_ms());
        let keys = self.directory.transport(ServiceName::Keys).ok()?;
        let request = keys_pb::SignAndEncryptRequest {
            signer_identity_id: String::new(),
            recipients: vec![message.reverse_path.clone()],
            message: report,
            add_autocrypt_header: false,
        };
        let mut client = clients::keys(keys);
        let encrypted = client.sign_and_encrypt(request);
        match tokio::time::timeout(CARRIED_DSN_TIMEOUT, encrypted).await {
            Ok(Ok(response)) => Some(
                self.service
                    .carried_dsn(message, response.into_inner().message),
            ),
            Ok(Err(status)) => {
                metrics::counter!("onionpost_queue_carried_dsns_dropped_total").increment(1);
                // keys' text names the carried mail's sender (its MAIL FROM): debug only.
                tracing::info!(queue_id = %message.queue_id, "carried dsn not sent: no key for the sender");
                tracing::debug!(queue_id = %message.queue_id, error = %status.message(), "carried dsn not sent: no key for the sender");
                None
            }
            Err(_) => {
                metrics::counter!("onionpost_queue_carried_dsns_dropped_total").increment(1);
                tracing::info!(queue_id = %message.queue_id, "carried dsn not sent: the sender's key did not arrive in time");
                None
            }
        }
    }

    /// One SMTP session through smtp-out to `destination` for `recipients`.
    async fn deliver_remote(
        &self,
        message: &MessageRecord,
        destination: &str,
        recipients: &[&RecipientRecord],
        body: &[u8],
    ) -> Vec<Outcome> {
        let all = |outcome: &dyn Fn() -> Outcome| recipients.iter().map(|_| outcome()).collect();
        if !is_v3_onion(destination) {
            // A name under .onion that is no v3 onion (a typing error: its checksum, length or
            // version is wrong) is never sent to the clearnet, and no retry can reach it.
            if let Err(error) = OnionHost::parse(destination)
                && is_onion_name(destination)
            {
                return all(&|| {
                    Outcome::Permanent(Reply {
                        code: 553,
                        enhanced_status: "5.1.3".into(),
                        text: error.to_string(),
                    })
                });
            }
            return self.deliver_clearnet(message, recipients, body).await;
        }
        let transport = match self.directory.transport(ServiceName::SmtpOut) {
            Ok(transport) => transport,
            Err(error) => {
                let text = error.to_string();
                return all(&|| Outcome::Temporary(local_reply(&text)));
            }
        };
        let mut client = clients::smtp_out(transport);
        // Own mail is isolated by the sending identity; carried mail by its recipient, so that
        // nothing links the people a carrier holds mail for.
        let isolation_key = match message.origin {
            Origin::Carry => recipients[0].address.clone(),
            _ => message.sender_identity_id.clone(),
        };
        let request = smtp_pb::DeliverRequest {
            queue_id: message.queue_id.clone(),
            destination: destination.to_owned(),
            port: 0,
            isolation_key,
            reverse_path: message.reverse_path.clone(),
            recipients: recipients
                .iter()
                .map(|recipient| smtp_pb::Recipient {
                    address: recipient.address.clone(),
                    notify: recipient
                        .notify
                        .iter()
                        .map(|n| smtp_notify(*n) as i32)
                        .collect(),
                    original_recipient: recipient.original_recipient.clone(),
                })
                .collect(),
            envelope_id: message.envelope_id.clone(),
            dsn_return: match message.dsn_return {
                DsnReturn::Full => smtp_pb::DsnReturn::Full,
                DsnReturn::Headers => smtp_pb::DsnReturn::Headers,
                DsnReturn::Unspecified => smtp_pb::DsnReturn::Unspecified,
            } as i32,
            message: body.to_vec(),
        };
        let response = match client.deliver(request).await {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                let text = status.message().to_owned();
                return all(&|| {
                    Outcome::Permanent(Reply {
                        code: 554,
                        enhanced_status: "5.1.2".into(),
                        text: text.clone(),
                    })
                });
            }
            Err(status) => {
                let text = format!("smtp-out unavailable: {}", status.message());
                return all(&|| Outcome::Temporary(local_reply(&text)));
            }
        };
        recipients
            .iter()
            .enumerate()
            .map(|(position, _)| {
                let Some(result) = response.recipients.get(position) else {
                    return Outcome::Temporary(local_reply("smtp-out returned no result"));
                };
                let reply = match &result.reply {
                    Some(reply) => Reply {
                        code: reply.code,
                        enhanced_status: reply.enhanced_status.clone(),
                        text: reply.text.clone(),
                    },
                    None => local_reply(if response.connection_error.is_empty() {
                        "no reply"
                    } else {
                        &response.connection_error
                    }),
                };
                match result.outcome() {
                    smtp_pb::Outcome::Delivered => Outcome::Delivered(reply),
                    smtp_pb::Outcome::PermanentFailure => Outcome::Permanent(reply),
                    _ => Outcome::Temporary(reply),
                }
            })
            .collect()
    }

    /// Clearnet recipients through the gateway's SendOutbound: only submitted mail, queued by
    /// smtp-in as plaintext after the gateway's CheckOutbound allowed it.
    async fn deliver_clearnet(
        &self,
        message: &MessageRecord,
        recipients: &[&RecipientRecord],
        body: &[u8],
    ) -> Vec<Outcome> {
        let all = |outcome: &dyn Fn() -> Outcome| recipients.iter().map(|_| outcome()).collect();
        let permanent = |text: &str| {
            Outcome::Permanent(Reply {
                code: 554,
                enhanced_status: "5.1.2".into(),
                text: text.to_owned(),
            })
        };
        if message.origin != Origin::Submission {
            return all(&|| permanent("destination is not a v3 onion"));
        }
        let Ok(transport) = self.directory.transport(ServiceName::Gateway) else {
            return all(&|| {
                permanent(
                    "destination is not a v3 onion; clearnet delivery needs the gateway, \
                     which this carrier does not run",
                )
            });
        };
        let mut client = clients::gateway(transport);
        let request = gateway_pb::SendOutboundRequest {
            queue_id: message.queue_id.clone(),
            account_id: message.account_id.clone(),
            sender_identity_id: message.sender_identity_id.clone(),
            recipients: recipients.iter().map(|r| r.address.clone()).collect(),
            message: body.to_vec(),
            envelope_id: message.envelope_id.clone(),
        };
        let response = match client.send_outbound(request).await {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                let text = status.message().to_owned();
                return all(&|| permanent(&text));
            }
            Err(status) => {
                let text = format!("gateway unavailable: {}", status.message());
                return all(&|| Outcome::Temporary(local_reply(&text)));
            }
        };
        (0..recipients.len())
            .map(|position| {
                let Some(result) = response.recipients.get(position) else {
                    return Outcome::Temporary(local_reply("gateway returned no result"));
                };
                let reply = match &result.reply {
                    Some(reply) => Reply {
                        code: reply.code,
                        enhanced_status: reply.enhanced_status.clone(),
                        text: reply.text.clone(),
                    },
                    None => local_reply(if result.connection_error.is_empty() {
                        "no reply"
                    } else {
                        &result.connection_error
                    }),
                };
                match result.outcome() {
                    gateway_pb::Outcome::Delivered => Outcome::Delivered(reply),
                    gateway_pb::Outcome::PermanentFailure => Outcome::Permanent(reply),
                    _ => Outcome::Temporary(reply),
                }
            })
            .collect()
    }

    /// A local message (a DSN) into the sending identity's INBOX through the imap service.
    async fn deliver_local(&self, message: &MessageRecord, body: &[u8]) -> Outcome {
        let request = imap_pb::DeliverRequest {
            identity_id: message.sender_identity_id.clone(),
            mailbox: imap_pb::Mailbox::Inbox as i32,
            message: body.to_vec(),
            verification: imap_pb::SenderVerification::Local as i32,
            verification_detail: String::new(),
            flags: Vec::new(),
        };
        self.deliver_to_imap(request, true).await
    }

    /// Received mail (`Origin::Received`): smtp-in answered 250 without the sender's key, so
    /// the keys service fetches it from the sender's onion now (isolated on the receiving
    /// identity's circuit), decrypts and verifies; the result goes to the identity's INBOX (or,
    /// from a sender the identity does not correspond with, to its Requests mailbox).
    /// When the sender's onion does not answer, keys says so in the verification (the message
    /// is delivered unverified, as smtp-in would have), so a fetch never holds mail back.
    async fn deliver_received(&self, message: &MessageRecord, body: &[u8]) -> Outcome {
        let transport = match self.directory.transport(ServiceName::Keys) {
            Ok(transport) => transport,
            Err(error) => return Outcome::Temporary(local_reply(&error.to_string())),
        };
        let request = keys_pb::DecryptAndVerifyRequest {
            recipient_identity_id: message.sender_identity_id.clone(),
            message: body.to_vec(),
            fetch_sender_key: true,
        };
        let opened = match clients::keys(transport).decrypt_and_verify(request).await {
            Ok(opened) => opened.into_inner(),
            Err(status) if onionpost_runtime::grpc::is_transient(status.code()) => {
                return Outcome::Temporary(local_reply(&format!(
                    "keys unavailable: {}",
                    status.message()
                )));
            }
            Err(status) => {
                // smtp-in decrypted this very message before it answered 250: a refusal now
                // means the identity or its key went away since. Nothing to deliver to.
                tracing::warn!(queue_id = %message.queue_id, code = ?status.code(), "received mail can no longer be opened");
                tracing::debug!(queue_id = %message.queue_id, error = %status.message(), "received mail can no longer be opened");
                return Outcome::Permanent(Reply {
                    code: 550,
                    enhanced_status: "5.7.5".into(),
                    text: "the message can no longer be decrypted".into(),
                });
            }
        };
        let verification = match opened.signature() {
            keys_pb::SignatureStatus::Verified => imap_pb::SenderVerification::Verified,
            keys_pb::SignatureStatus::Unsigned => imap_pb::SenderVerification::Unsigned,
            _ => imap_pb::SenderVerification::Failed,
        };
        // A verified stranger's message waits for the account (accounts.contact_requests).
        let mailbox = if opened.contact_request {
            imap_pb::Mailbox::Requests
        } else {
            imap_pb::Mailbox::Inbox
        };
        let request = imap_pb::DeliverRequest {
            identity_id: message.sender_identity_id.clone(),
            mailbox: mailbox as i32,
            message: opened.message,
            verification: verification as i32,
            verification_detail: opened.signer_fingerprint,
            flags: Vec::new(),
        };
        // Answered 250 already: an account that expired since keeps its mail waiting here, for
        // the queue's lifetime, in case it is renewed.
        self.deliver_to_imap(request, false).await
    }

    /// One message into a mailbox through the imap service, its refusal as an outcome; an
    /// expired account is a final refusal only when `expired_is_final`.
    async fn deliver_to_imap(
        &self,
        request: imap_pb::DeliverRequest,
        expired_is_final: bool,
    ) -> Outcome {
        let transport = match self.directory.transport(ServiceName::Imap) {
            Ok(transport) => transport,
            Err(error) => return Outcome::Temporary(local_reply(&error.to_string())),
        };
        let mut client = clients::imap(transport);
        let response = match client.deliver(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                return Outcome::Temporary(local_reply(&format!(
                    "imap unavailable: {}",
                    status.message()
                )));
            }
        };
        let reply = |code: u32, enhanced: &str, text: &str| Reply {
            code,
            enhanced_status: enhanced.into(),
            text: text.into(),
        };
        match response.refusal() {
            imap_pb::Refusal::Unspecified => {
                Outcome::Delivered(reply(250, "2.0.0", "delivered to the mailbox"))
            }
            imap_pb::Refusal::UnknownIdentity => {
                Outcome::Permanent(reply(550, "5.1.1", "no such identity"))
            }
            imap_pb::Refusal::AccountExpired if expired_is_final => {
                Outcome::Permanent(reply(550, "5.2.1", "account expired"))
            }
            imap_pb::Refusal::AccountExpired => {
                Outcome::Temporary(reply(450, "4.2.1", "account expired"))
            }
            imap_pb::Refusal::AccountUnavailable => {
                Outcome::Temporary(reply(450, "4.2.1", "account unavailable"))
            }
            imap_pb::Refusal::OverQuota => {
                Outcome::Temporary(reply(452, "4.2.2", "mailbox over quota"))
            }
        }
    }
}

fn group_by_message(claims: Vec<Claim>) -> BTreeMap<String, Vec<i32>> {
    let mut groups: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for claim in claims {
        groups.entry(claim.queue_id).or_default().push(claim.idx);
    }
    groups
}

/// A reply of our own when no SMTP session said anything (RFC 3463 4.4.1: no answer from host).
fn local_reply(text: &str) -> Reply {
    Reply {
        code: 451,
        enhanced_status: "4.4.1".into(),
        text: text.to_owned(),
    }
}

/// The final reply of a recipient whose lifetime ran out (RFC 3463 4.4.7: delivery time
/// expired), keeping what the peer last said.
fn expired_reply(last: Option<&Reply>, attempts: u32) -> Reply {
    let last_words = last.map_or(String::new(), |reply| {
        format!(
            "; last reply: {} {} {}",
            reply.code, reply.enhanced_status, reply.text
        )
    });
    Reply {
        code: last.map_or(451, |reply| reply.code),
        enhanced_status: "4.4.7".into(),
        text: format!("message lifetime expired after {attempts} attempts{last_words}"),
    }
}

fn smtp_notify(notify: Notify) -> smtp_pb::DsnNotify {
    match notify {
        Notify::Never => smtp_pb::DsnNotify::Never,
        Notify::Success => smtp_pb::DsnNotify::Success,
        Notify::Failure => smtp_pb::DsnNotify::Failure,
        Notify::Delay => smtp_pb::DsnNotify::Delay,
    }
}
