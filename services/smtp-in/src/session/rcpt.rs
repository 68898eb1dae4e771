//! RCPT TO (RFC 5321 §4.1.1.3, with NOTIFY/ORCPT from RFC 3461). On an identity's onion MX
//! only that identity's own address is accepted (or carried for another carrier's identity);
//! every other address gets [`RECIPIENT_REJECTED`], byte for byte. On submission, clearnet
//! recipients are allowed only through the gateway (see `submission.rs`).

use onionpost_proto::imap::v1::AccountState;
use onionpost_proto::queue::v1::DsnNotify;
use tokio::io::{AsyncRead, AsyncWrite};

use onionpost_smtp_server::Connection;

use super::{
    BAD_ONION_ADDRESS, MAILBOX_FULL, Mode, Next, POSTMASTER_ALONE, RECIPIENT_REJECTED, Recipient,
    SENDER_REFUSED, Session, State,
};
use crate::backend::Correspondence;
use crate::inbound::{self, Inbound};
use crate::{Backend, SmtpInError, message};
use onionpost_runtime::stamp::{self, Stamp};

impl<B: Backend> Session<B> {
    pub(super) async fn rcpt<S: AsyncRead + AsyncWrite>(
        &self,
        io: &mut Connection<S>,
        state: &mut State,
        to: smtp_proto::RcptTo<String>,
        stamp: Option<String>,
    ) -> Next {
        let Some(transaction) = &state.transaction else {
            return self.fail(io, state, "503 5.5.1 Need MAIL before RCPT");
        };
        if transaction.recipients.len() >= self.policy.limits.max_recipients {
            return self.fail(io, state, "452 4.5.3 Too many recipients");
        }
        let declared_size = transaction.declared_size;
        let sender = transaction.reverse_path.clone();
        // A name under .onion that is no v3 onion is a typing error no retry can mend: refused
        // here with the reason (RFC 3463 5.1.3, bad destination mailbox address syntax), in
        // either mode, rather than accepted and then retried against an onion that cannot exist.
        if let Some(error) = message::onion_address_error(&to.address) {
            return self.fail(io, state, &format!("{BAD_ONION_ADDRESS} {error}"));
        }
        let address = message::normalize(&to.address);
        let mut notify = Vec::new();
        for (flag, value) in [
            (smtp_proto::RCPT_NOTIFY_NEVER, DsnNotify::Never),
            (smtp_proto::RCPT_NOTIFY_SUCCESS, DsnNotify::Success),
            (smtp_proto::RCPT_NOTIFY_FAILURE, DsnNotify::Failure),
            (smtp_proto::RCPT_NOTIFY_DELAY, DsnNotify::Delay),
        ] {
            if to.flags & flag != 0 {
                notify.push(value as i32);
            }
        }
        // RFC 3461 §4.2: the value arrives xtext-decoded, so it may hold any byte; a control
        // character in it could only be meant to end a command line somewhere downstream.
        let orcpt = to.orcpt.unwrap_or_default();
        if orcpt.chars().any(char::is_control) {
            return self.fail(
                io,
                state,
                "501 5.5.4 ORCPT address must not contain control characters",
            );
        }
        let mut recipient = Recipient {
            address: address.clone(),
            notify,
            // The address type is kept (smtp-proto accepts only rfc822), so the next hop gets
            // a valid ORCPT; smtp-client xtext-encodes the address on output.
            orcpt: if orcpt.is_empty() {
                orcpt
            } else {
                format!("rfc822;{orcpt}")
            },
            carry: false,
            postmaster: false,
            stamp: None,
            correspondent: false,
        };
        match &self.mode {
            Mode::Ingress { identity_id } => {
                let own = match self.backend.identity(identity_id).await {
                    Ok(identity) => Some(identity),
                    Err(SmtpInError::NotFound) => None,
                    Err(error) => {
                        error.log("identity lookup failed");
                        return self.fail(
                            io,
                            state,
                            "451 4.3.0 Temporary failure, try again later",
                        );
                    }
                };
                match own {
                    Some(identity) if message::normalize(&identity.address) == address => {
                        match AccountState::try_from(identity.account_state) {
                            Ok(AccountState::Grace | AccountState::Suspended) => {
                                return self.fail(
                                    io,
                                    state,
                                    "450 4.2.1 Mailbox temporarily unavailable",
                                );
                            }
                            Ok(AccountState::Expired) => {
                                return self.fail(io, state, "550 5.2.1 Mailbox disabled");
                            }
                            _ => {}
                        }
                        if let Err(refusal) = self.policy.inbound.admit(identity_id, &sender) {
                            return self.fail(io, state, refusal);
                        }
                        let standing = if sender.is_empty() {
                            Correspondence::Stranger
                        } else {
                            match self.backend.corresponds(identity_id, &sender).await {
                                Ok(standing) => standing,
                                Err(error) => {
                                    error.log("correspondent check failed");
                                    return self.fail(
                                        io,
                                        state,
                                        "451 4.3.0 Temporary failure, try again later",
                                    );
                                }
                            }
                        };
                        if standing == Correspondence::Blocked {
                            return self.fail(io, state, SENDER_REFUSED);
                        }
                        recipient.correspondent = standing == Correspondence::Correspondent;
                        if let Err(refusal) =
                            self.ask_stamp(identity_id, stamp.as_deref(), &mut recipient)
                        {
                            return self.fail(io, state, &refusal);
                        }
                    }
                    // The carrier's own mailbox on every onion: it takes signed carry
                    // statements (paper §4.2), checked after the reply. Every onion answers
                    // it alike, whatever it hosts.
                    Some(identity)
                        if address
                            .eq_ignore_ascii_case(&format!("postmaster@{}", identity.onion)) =>
                    {
                        recipient.postmaster = true;
                        // A carry statement comes from a stranger by nature: it pays too.
                        if let Err(refusal) =
                            self.ask_stamp(identity_id, stamp.as_deref(), &mut recipient)
                        {
                            return self.fail(io, state, &refusal);
                        }
                    }
                    // Carried only through the onion the carry request named: the agreement
                    // must not show on the carrier's other onions.
                    Some(identity) => match self
                        .backend
                        .check_carry(&address, &identity.onion, declared_size)
                        .await
                    {
                        Ok(answer) if answer.accepted => recipient.carry = true,
                        Ok(answer) if answer.over_limit => {
                            return self.fail(io, state, MAILBOX_FULL);
                        }
                        // One refusal for co-hosted, unknown and relayed addresses alike.
                        _ => return self.fail(io, state, RECIPIENT_REJECTED),
                    },
                    None => return self.fail(io, state, RECIPIENT_REJECTED),
                }
            }
            Mode::Submission { .. } => {
                if message::onion_of(&address).is_none()
                    && let Some(refusal) = self.clearnet_refusal(state).await
                {
                    return self.fail(io, state, &refusal);
                }
            }
        }
        if let Some(transaction) = &mut state.transaction {
            let mixed = transaction
                .recipients
                .iter()
                .any(|other| other.postmaster != recipient.postmaster);
            if mixed {
                return self.fail(io, state, POSTMASTER_ALONE);
            }
            transaction.recipients.push(recipient);
        }
        io.reply("250 2.1.5 Recipient OK");
        Next::Continue
    }

    /// Whether this recipient's sender must pay: nothing when no stamps are asked or the
    /// sender corresponds with the identity (`recipient.correspondent`, proved after DATA by
    /// its signature); else the
    /// stamp it brought, checked for syntax and time here and for its work after DATA, or the
    /// reply that asks for one. Depends on this identity's address book and load only.
    fn ask_stamp(
        &self,
        identity_id: &str,
        stamp: Option<&str>,
        recipient: &mut Recipient,
    ) -> Result<(), String> {
        let inbound = &self.policy.inbound;
        if !inbound.stamps_asked() {
            return Ok(());
        }
        let now = crate::inbound::unix_now();
        let Some(text) = stamp else {
            if recipient.correspondent {
                return Ok(());
            }
            return Err(inbound::stamp_required(
                inbound.difficulty(identity_id, now),
            ));
        };
        let stamp = Stamp::parse(text)
            .map_err(|error| format!("501 5.5.4 Bad {} parameter: {error}", stamp::KEYWORD))?;
        if !Inbound::in_time(&stamp, now) {
            return Err(inbound::stamp_out_of_time(
                inbound.difficulty(identity_id, now),
            ));
        }
        recipient.stamp = Some(stamp);
        Ok(())
    }
}
