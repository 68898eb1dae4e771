//! Ingress policy after DATA on an identity's onion MX: plaintext refused or quarantined
//! (design.md: end-to-end encryption required), then decrypt, verify and deliver, or queue the
//! copy carried for another carrier's identity. Ingress never bounces: every refusal is the
//! reply to DATA.
//!
//! Nothing that depends on another identity of this carrier runs while the peer waits: the
//! message is decrypted with the recipient identity's own key and checked against the key its
//! account pinned. A sender with no pinned key is checked later, by the queue, against the key
//! from the sender's own onion (fetched over tor whether or not that onion is hosted here).

use onionpost_proto::imap::v1::{DeliverRequest, Mailbox, Refusal, SenderVerification};
use onionpost_proto::keys::v1::{KeyCustody, SignatureStatus};
use onionpost_proto::queue::v1::{DsnNotify, EnqueueRequest, Origin, RecipientRequest};
use onionpost_runtime::config::PlaintextPolicy;

use super::{
    EXPANDS_TOO_FAR, MAILBOX_FULL, PLAINTEXT_REFUSED, RECIPIENT_REJECTED, Recipient, Session,
    Transaction, enqueue_recipient,
};
use crate::inbound::{self, Spend};
use crate::{Backend, SmtpInError, message};
use onionpost_runtime::stamp::{self, Stamp};

impl<B: Backend> Session<B> {
    /// Ingress after DATA: decrypt, verify, learn the sender's key, deliver; or carry.
    pub(super) async fn receive(
        &self,
        identity_id: &str,
        transaction: &Transaction,
        body: Vec<u8>,
    ) -> String {
        if let Err(refusal) = self.spend_stamps(identity_id, transaction, &body) {
            return refusal;
        }
        if let Some(postmaster) = transaction.recipients.iter().find(|r| r.postmaster) {
            return self.take_carry_statement(&postmaster.address, &body).await;
        }
        let encrypted = message::is_pgp_mime(&body);
        let mut mailbox = Mailbox::Inbox;
        if !encrypted {
            match self.policy.plaintext {
                PlaintextPolicy::Refuse => {
                    self.policy.stats.plaintext_refused();
                    return PLAINTEXT_REFUSED.to_owned();
                }
                PlaintextPolicy::Quarantine => mailbox = Mailbox::Quarantine,
                PlaintextPolicy::Accept => {}
            }
            // Plaintext proves no sender: a claimed correspondent pays like a stranger.
            if let Some(refusal) = self.unproven_correspondent(identity_id, transaction) {
                return refusal;
            }
        }
        let carried: Vec<&Recipient> = transaction.recipients.iter().filter(|r| r.carry).collect();
        if !carried.is_empty() {
            // Carried mail leaves again for another carrier's identity: whatever the local
            // policy, it goes on only encrypted.
            if !encrypted {
                self.policy.stats.plaintext_refused();
                return PLAINTEXT_REFUSED.to_owned();
            }
            let request = EnqueueRequest {
                idempotency_key: hex::encode(rand::random::<[u8; 16]>()),
                origin: Origin::Carry as i32,
                reverse_path: transaction.reverse_path.clone(),
                recipients: carried.iter().map(|r| enqueue_recipient(r)).collect(),
                message_id: message::header(&body, "Message-ID").unwrap_or_default(),
                message: body.clone(),
                envelope_id: transaction.envelope_id.clone(),
                dsn_return: transaction.dsn_return,
                ..Default::default()
            };
            match self.backend.enqueue(request).await {
                Ok(()) => {}
                Err(SmtpInError::Full) => return MAILBOX_FULL.to_owned(),
                Err(error) => {
                    error.log("enqueue of carried mail failed");
                    return "451 4.3.0 Temporary failure, try again later".to_owned();
                }
            }
        }
        if transaction.recipients.iter().all(|r| r.carry) {
            return "250 2.0.0 Message accepted".to_owned();
        }
        let custody = if encrypted {
            match self.backend.custody(identity_id).await {
                Ok(custody) => custody,
                Err(error) => {
                    error.log("identity key unavailable");
                    return "451 4.3.0 Temporary failure, try again later".to_owned();
                }
            }
        } else {
            KeyCustody::Unspecified
        };
        let (delivered, verification, detail) = if !encrypted {
            (
                body,
                SenderVerification::Unsigned,
                "not encrypted".to_owned(),
            )
        } else if custody == KeyCustody::Client {
            // The account keeps its own key: store the ciphertext as it came, and learn the
            // sender's key from its Autocrypt header so replies can be encrypted.
            let outer_from = message::header(&body, "From")
                .map(|from| message::addresses(&from))
                .and_then(|list| list.into_iter().next());
            if let (Some(from), Some(header)) = (outer_from, message::header(&body, "Autocrypt"))
                && let Err(error) = self
                    .backend
                    .learn_autocrypt(identity_id, &from, &header)
                    .await
            {
                tracing::debug!(%error, "autocrypt header not learned");
            }
            (body, SenderVerification::NotChecked, String::new())
        } else {
            // Decrypted with this identity's own key and checked against the key the account
            // pinned, nothing else: no fetch while the peer waits (below).
            let decrypted = match self.backend.decrypt_and_verify(identity_id, &body).await {
                Ok(decrypted) => decrypted,
                Err(SmtpInError::Temporary(error)) => {
                    // Another service's text may name an address: debug only.
                    tracing::warn!("decryption unavailable");
                    tracing::debug!(%error, "decryption unavailable");
                    return "451 4.3.0 Temporary failure, try again later".to_owned();
                }
                Err(SmtpInError::TooLarge(_)) => return EXPANDS_TOO_FAR.to_owned(),
                Err(error) => {
                    tracing::debug!(%error, "message could not be decrypted");
                    return "550 5.7.5 Message could not be decrypted".to_owned();
                }
            };
            let verified =
                SignatureStatus::try_from(decrypted.signature) == Ok(SignatureStatus::Verified);
            if (decrypted.sender_key_unpinned || !verified)
                && let Some(refusal) = self.unproven_correspondent(identity_id, transaction)
            {
                return refusal;
            }
            let correspondent = transaction
                .recipients
                .iter()
                .any(|r| !r.carry && r.correspondent);
            if decrypted.sender_key_unpinned || !correspondent {
                // The sender's key must come from its onion, and how long that takes would
                // tell the peer whether the sender is hosted here too (issue 18, oracle 1).
                // The queue keeps the message durably, fetches and verifies after this reply.
                // A sender that is no correspondent of this identity takes the same path even
                // when the account pinned its key (through another of its identities): were it
                // delivered here while the peer waits, the reply's timing would tell the peer
                // that this identity shares an account with the one it corresponds with.
                return self.receive_later(identity_id, transaction, body).await;
            }
            if decrypted.contact_request {
                // Verified, from a sender this identity does not correspond with yet: it waits
                // for the account (accounts.contact_requests).
                mailbox = Mailbox::Requests;
            }
            let verification = match SignatureStatus::try_from(decrypted.signature) {
                Ok(SignatureStatus::Verified) => SenderVerification::Verified,
                Ok(SignatureStatus::Unsigned) => SenderVerification::Unsigned,
                _ => SenderVerification::Failed,
            };
            (
                decrypted.message,
                verification,
                decrypted.signer_fingerprint,
            )
        };
        let request = DeliverRequest {
            identity_id: identity_id.to_owned(),
            mailbox: mailbox as i32,
            message: delivered,
            verification: verification as i32,
            verification_detail: detail,
            flags: Vec::new(),
        };
        self.deliver(request).await
    }

    /// Checks the stamp of every recipient that brought one (RCPT XSTAMP) against this
    /// message, then spends it: a stamp that does not hold its work here, one spent before, or
    /// one weaker than the identity asks now (its load may have risen since RCPT) is refused
    /// with a reply that says which. One SHA-256 of the message and one per stamp.
    fn spend_stamps(
        &self,
        identity_id: &str,
        transaction: &Transaction,
        body: &[u8],
    ) -> Result<(), String> {
        let inbound = &self.policy.inbound;
        let stamped: Vec<(&Recipient, &Stamp)> = transaction
            .recipients
            .iter()
            .filter(|r| !r.carry)
            .filter_map(|r| Some((r, r.stamp.as_ref()?)))
            .collect();
        if stamped.is_empty() || !inbound.stamps_asked() {
            return Ok(());
        }
        let digest = stamp::message_digest(body);
        let now = inbound::unix_now();
        for (recipient, presented) in stamped {
            let stamp::Check::Valid { hash } = stamp::check(
                &recipient.address,
                &transaction.reverse_path,
                &digest,
                presented,
            ) else {
                return Err(inbound::STAMP_MISMATCH.to_owned());
            };
            let asked = inbound.difficulty(identity_id, now);
            if presented.bits < asked {
                return Err(inbound::stamp_required(asked));
            }
            match inbound.spend(identity_id, hash, presented, now) {
                Spend::Fresh => {}
                Spend::Reused => return Err(inbound::STAMP_REUSED.to_owned()),
                Spend::Full => return Err(inbound::STAMPS_BUSY.to_owned()),
            }
        }
        Ok(())
    }

    /// The reply asking for a stamp when a recipient took the sender as a correspondent at
    /// RCPT (no stamp asked) and the message does not prove it: plaintext, a signature that
    /// does not verify against the pinned key, or none. A forged correspondent's address buys
    /// nothing.
    fn unproven_correspondent(
        &self,
        identity_id: &str,
        transaction: &Transaction,
    ) -> Option<String> {
        let inbound = &self.policy.inbound;
        let unproven = transaction
            .recipients
            .iter()
            .any(|r| !r.carry && r.correspondent && r.stamp.is_none());
        (inbound.stamps_asked() && unproven)
            .then(|| inbound::stamp_required(inbound.difficulty(identity_id, inbound::unix_now())))
    }

    /// Hands an encrypted message whose sender has no pinned key to the queue
    /// (`Origin::Received`), which verifies it against the key from the sender's onion and
    /// delivers it; 250 once the queue holds it durably.
    async fn receive_later(
        &self,
        identity_id: &str,
        transaction: &Transaction,
        body: Vec<u8>,
    ) -> String {
        // One copy per identity, however many of its local parts were named.
        let Some(recipient) = transaction.recipients.iter().find(|r| !r.carry) else {
            return RECIPIENT_REJECTED.to_owned();
        };
        let request = EnqueueRequest {
            idempotency_key: hex::encode(rand::random::<[u8; 16]>()),
            origin: Origin::Received as i32,
            sender_identity_id: identity_id.to_owned(),
            reverse_path: transaction.reverse_path.clone(),
            recipients: vec![RecipientRequest {
                address: recipient.address.clone(),
                // Ingress never bounces: its refusals were the reply to DATA.
                notify: vec![DsnNotify::Never as i32],
                original_recipient: String::new(),
            }],
            message_id: message::header(&body, "Message-ID").unwrap_or_default(),
            message: body,
            ..Default::default()
        };
        match self.backend.enqueue(request).await {
            Ok(()) => "250 2.0.0 Message accepted".to_owned(),
            Err(SmtpInError::Full) => MAILBOX_FULL.to_owned(),
            Err(error) => {
                error.log("enqueue of received mail failed");
                "451 4.3.0 Temporary failure, try again later".to_owned()
            }
        }
    }

    /// A carry statement sent to `postmaster@<onion>`: the signed, ASCII-armoured block is
    /// handed to the queue, which keeps it durably (then 250) and verifies it after this reply
    /// against the key the identity's own onion serves; the operator's policy decides. The
    /// reply depends on the message alone, never on what the carrier hosts or carries.
    async fn take_carry_statement(&self, postmaster: &str, body: &[u8]) -> String {
        const BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";
        const END: &[u8] = b"-----END PGP MESSAGE-----";
        let Some(onion) = postmaster.rsplit_once('@').map(|(_, onion)| onion) else {
            return RECIPIENT_REJECTED.to_owned();
        };
        let block = find(body, BEGIN).and_then(|start| {
            find(&body[start..], END).map(|end| body[start..start + end + END.len()].to_vec())
        });
        let Some(statement) = block else {
            return "550 5.6.0 postmaster@ takes only a signed carry statement (an ASCII-armoured OpenPGP message)".to_owned();
        };
        if statement.len() > MAX_STATEMENT_BYTES {
            return format!(
                "552 5.3.4 A carry statement is at most {} KiB",
                MAX_STATEMENT_BYTES / 1024
            );
        }
        match self.backend.submit_carry_statement(statement, onion).await {
            Ok(()) => {
                "250 2.0.0 Carry statement kept: this carrier verifies it and answers by its policy"
                    .to_owned()
            }
            Err(SmtpInError::Permanent(_)) => {
                "550 5.6.0 The carry statement was refused as malformed".to_owned()
            }
            Err(error) => {
                error.log("carry statement not kept");
                "451 4.3.0 Temporary failure, try again later".to_owned()
            }
        }
    }

    /// imap Deliver, its refusal as the reply to DATA.
    async fn deliver(&self, request: DeliverRequest) -> String {
        match self.backend.deliver(request).await {
            Ok(response) => match Refusal::try_from(response.refusal) {
                Ok(Refusal::Unspecified) if response.duplicate => {
                    format!("250 2.0.0 {}", onionpost_proto::ALREADY_DELIVERED_TEXT)
                }
                Ok(Refusal::Unspecified) => "250 2.0.0 Message accepted".to_owned(),
                Ok(Refusal::AccountUnavailable) => {
                    "451 4.2.1 Mailbox temporarily unavailable".to_owned()
                }
                Ok(Refusal::OverQuota) => "452 4.2.2 Mailbox full".to_owned(),
                Ok(Refusal::AccountExpired) => "550 5.2.1 Mailbox disabled".to_owned(),
                _ => RECIPIENT_REJECTED.to_owned(),
            },
            Err(error) => {
                error.log("delivery failed");
                "451 4.3.0 Temporary failure, try again later".to_owned()
            }
        }
    }
}

/// The largest carry statement taken (the queue's own limit is the same).
const MAX_STATEMENT_BYTES: usize = 64 * 1024;

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
