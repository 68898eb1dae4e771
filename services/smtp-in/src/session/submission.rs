//! Submission policy: after DATA, check From, resolve the onion recipients' keys, sign and
//! encrypt, queue, and keep a Sent copy; clearnet recipients are allowed at RCPT only when the
//! gateway's CheckOutbound says the account's plan and daily cap allow them.

use onionpost_proto::imap::v1::{
    AuthenticateResponse, DeliverRequest, Identity, Mailbox, SenderVerification,
};
use onionpost_proto::keys::v1::{RecipientKeyStatus, SignAndEncryptRequest};
use onionpost_proto::queue::v1::{EnqueueRequest, Origin, RecipientRequest};

use super::{
    Mode, RECIPIENT_REJECTED, Session, State, Transaction, enqueue_recipient, own_identity,
};
use crate::{Backend, SmtpInError, message};

impl<B: Backend> Session<B> {
    /// Submission after DATA: check From, resolve keys, sign and encrypt, queue, Sent copy.
    pub(super) async fn submit(
        &self,
        account: &AuthenticateResponse,
        onion_identity: Option<&str>,
        transaction: &Transaction,
        body: Vec<u8>,
    ) -> String {
        let from = message::header(&body, "From")
            .map(|from| message::addresses(&from))
            .unwrap_or_default();
        let sender = match from.as_slice() {
            [address] => own_identity(account, onion_identity, address),
            _ => None,
        };
        let Some(sender) = sender else {
            return "550 5.7.1 From address is not one of this account's identities".to_owned();
        };
        let account_id = account
            .account
            .as_ref()
            .map(|a| a.account_id.clone())
            .unwrap_or_default();
        if !self.policy.rate.check(&account_id) {
            return "450 4.7.0 Hourly sending limit reached, try again later".to_owned();
        }
        // Onion recipients get the signed and encrypted message; clearnet ones (accepted at RCPT
        // through the gateway's CheckOutbound) the plaintext, queued apart for the gateway.
        let recipients: Vec<String> = transaction
            .recipients
            .iter()
            .filter(|r| message::onion_of(&r.address).is_some())
            .map(|r| r.address.clone())
            .collect();
        let (prepared, message_id) = message::prepare_submission(&body, &sender.onion);
        let clearnet: Vec<RecipientRequest> = transaction
            .recipients
            .iter()
            .filter(|r| message::onion_of(&r.address).is_none())
            .map(enqueue_recipient)
            .collect();
        // The clearnet recipients count against the daily cap from acceptance (checked and
        // counted in one step by the gateway): the check at RCPT alone let concurrent
        // sessions of one account all pass it. Given back when nothing is queued after all.
        let reserved = u32::try_from(clearnet.len()).unwrap_or(u32::MAX);
        if reserved > 0
            && let Some(reply) = self
                .gateway_refusal(&account_id, &sender.identity_id, reserved, true)
                .await
        {
            return reply;
        }
        let release = || async {
            if reserved > 0
                && let Err(error) = self.backend.release_outbound(&account_id, reserved).await
            {
                error.log("gateway reservation not given back");
            }
        };
        if !recipients.is_empty()
            && let Err(reply) = self
                .submit_onion(
                    sender,
                    &account_id,
                    transaction,
                    &recipients,
                    &prepared,
                    &message_id,
                )
                .await
        {
            release().await;
            return reply;
        }
        if !clearnet.is_empty() {
            let request = EnqueueRequest {
                idempotency_key: hex::encode(rand::random::<[u8; 16]>()),
                origin: Origin::Submission as i32,
                account_id: account_id.clone(),
                sender_identity_id: sender.identity_id.clone(),
                reverse_path: message::normalize(&transaction.reverse_path),
                recipients: clearnet,
                message: prepared.clone(),
                message_id,
                envelope_id: transaction.envelope_id.clone(),
                dsn_return: transaction.dsn_return,
                fan_out_immediately: false,
            };
            if let Err(error) = self.backend.enqueue(request).await {
                error.log("enqueue of clearnet copy failed");
                release().await;
                return "451 4.3.0 Temporary failure, try again later".to_owned();
            }
        }
        // The message is queued: a failed Sent copy must not make the client send it again.
        let sent = DeliverRequest {
            identity_id: sender.identity_id.clone(),
            mailbox: Mailbox::Sent as i32,
            message: prepared,
            verification: SenderVerification::Local as i32,
            verification_detail: String::new(),
            flags: vec!["\\Seen".to_owned()],
        };
        if let Err(error) = self.backend.deliver(sent).await {
            error.log("sent copy not stored");
        }
        "250 2.0.0 Message queued".to_owned()
    }
}

/// Clearnet recipients of submission: through the gateway only.
impl<B: Backend> Session<B> {
    /// Why a clearnet RCPT is refused now, if it is: the gateway's CheckOutbound says whether
    /// the account's plan allows clearnet mail and its daily cap leaves room for one more.
    pub(super) async fn clearnet_refusal(&self, state: &State) -> Option<String> {
        let (Some(account), Some(transaction)) = (&state.account, &state.transaction) else {
            return Some("530 5.7.0 Authentication required".to_owned());
        };
        let Mode::Submission { onion_identity, .. } = &self.mode else {
            return Some(RECIPIENT_REJECTED.to_owned());
        };
        let reverse_path = message::normalize(&transaction.reverse_path);
        let Some(sender) = own_identity(account, onion_identity.as_deref(), &reverse_path) else {
            return Some(
                "550 5.7.1 Sender address is not one of this account's identities".to_owned(),
            );
        };
        let account_id = account
            .account
            .as_ref()
            .map(|a| a.account_id.clone())
            .unwrap_or_default();
        let clearnet = transaction
            .recipients
            .iter()
            .filter(|r| message::onion_of(&r.address).is_none())
            .count()
            + 1;
        let clearnet = u32::try_from(clearnet).unwrap_or(u32::MAX);
        self.gateway_refusal(&account_id, &sender.identity_id, clearnet, false)
            .await
    }

    /// The reply when the gateway refuses `clearnet` more recipients for the account (or
    /// cannot be asked); with `reserve` (at acceptance) it also counts them against the daily
    /// cap in the same step, which may refuse now although RCPT was allowed.
    async fn gateway_refusal(
        &self,
        account_id: &str,
        sender_identity_id: &str,
        clearnet: u32,
        reserve: bool,
    ) -> Option<String> {
        match self
            .backend
            .check_outbound(account_id, sender_identity_id, clearnet, reserve)
            .await
        {
            Ok(answer) if answer.allowed => None,
            Ok(answer) if answer.reason.is_empty() => {
                Some("550 5.7.1 Clearnet mail is not allowed for this account".to_owned())
            }
            Ok(answer) => Some(format!("550 5.7.1 {}", answer.reason)),
            Err(error) => {
                error.log("gateway check failed");
                Some("451 4.3.0 Temporary failure, try again later".to_owned())
            }
        }
    }

    /// Resolves the onion recipients' keys, signs and encrypts, and queues that copy; the
    /// reply to give when it fails.
    pub(super) async fn submit_onion(
        &self,
        sender: &Identity,
        account_id: &str,
        transaction: &Transaction,
        recipients: &[String],
        prepared: &[u8],
        message_id: &str,
    ) -> Result<(), String> {
        let keys = match self
            .backend
            .resolve_keys(&sender.identity_id, recipients)
            .await
        {
            Ok(keys) => keys,
            Err(error) => {
                error.log("key resolution failed");
                return Err("451 4.3.0 Temporary failure, try again later".to_owned());
            }
        };
        for address in recipients {
            let status = keys
                .iter()
                .find(|key| message::normalize(&key.address) == *address)
                .and_then(|key| RecipientKeyStatus::try_from(key.status).ok());
            match status {
                Some(RecipientKeyStatus::Pinned | RecipientKeyStatus::Fetched) => {}
                // Its owner revoked the address (announced in signed mail, or served by its
                // onion): permanent, and said so (RFC 3463 X.1.6: moved, no forwarding address).
                Some(RecipientKeyStatus::Revoked) => {
                    return Err(format!(
                        "550 5.1.6 <{address}> is revoked by its owner; mail to it is not read"
                    ));
                }
                _ => return Err(format!("450 4.7.0 no key for <{address}> yet; try again")),
            }
        }
        // RFC 5322 §3.6.3: the recipients the To and Cc fields name share one copy, sealed to
        // them alone; every other (blind) recipient gets a copy of its own. So no copy names a
        // blind recipient, in its headers (Bcc is removed from all) or in its OpenPGP packets
        // (key IDs and intended-recipient fingerprints are those of its own recipients).
        let named: Vec<String> = ["To", "Cc"]
            .iter()
            .filter_map(|field| message::header(prepared, field))
            .flat_map(|value| message::addresses(&value))
            .map(|address| message::normalize(&address))
            .collect();
        let (visible, blind): (Vec<&String>, Vec<&String>) = recipients
            .iter()
            .partition(|address| named.contains(address));
        let mut groups: Vec<Vec<String>> = Vec::new();
        if !visible.is_empty() {
            groups.push(visible.into_iter().cloned().collect());
        }
        groups.extend(blind.into_iter().map(|address| vec![address.clone()]));
        let stripped = message::without_bcc(prepared);
        // Every copy is sealed before any is queued, so a refusal queues nothing.
        let mut sealed = Vec::with_capacity(groups.len());
        for group in groups {
            let encrypted = self.seal(sender, &group, &stripped).await?;
            sealed.push((group, encrypted));
        }
        for (group, encrypted) in sealed {
            let request = EnqueueRequest {
                idempotency_key: hex::encode(rand::random::<[u8; 16]>()),
                origin: Origin::Submission as i32,
                account_id: account_id.to_owned(),
                sender_identity_id: sender.identity_id.clone(),
                reverse_path: message::normalize(&transaction.reverse_path),
                recipients: transaction
                    .recipients
                    .iter()
                    .filter(|r| group.contains(&r.address))
                    .map(enqueue_recipient)
                    .collect(),
                message: encrypted,
                message_id: message_id.to_owned(),
                envelope_id: transaction.envelope_id.clone(),
                dsn_return: transaction.dsn_return,
                fan_out_immediately: false,
            };
            if let Err(error) = self.backend.enqueue(request).await {
                error.log("enqueue failed");
                return Err("451 4.3.0 Temporary failure, try again later".to_owned());
            }
        }
        Ok(())
    }

    /// Signs and encrypts one copy to `recipients`; the reply to give when it fails.
    async fn seal(
        &self,
        sender: &Identity,
        recipients: &[String],
        message: &[u8],
    ) -> Result<Vec<u8>, String> {
        match self
            .backend
            .sign_and_encrypt(SignAndEncryptRequest {
                signer_identity_id: sender.identity_id.clone(),
                recipients: recipients.to_vec(),
                message: message.to_vec(),
                add_autocrypt_header: true,
            })
            .await
        {
            Ok(encrypted) => Ok(encrypted),
            Err(SmtpInError::Temporary(error)) => {
                // Another service's text may name an address: debug only.
                tracing::warn!("signing unavailable");
                tracing::debug!(%error, "signing unavailable");
                Err("451 4.3.0 Temporary failure, try again later".to_owned())
            }
            Err(error) => {
                error.log("signing refused");
                Err("554 5.6.0 Message could not be signed and encrypted".to_owned())
            }
        }
    }
}
