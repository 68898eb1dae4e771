//! MAIL FROM (RFC 5321 §4.1.1.2, with SIZE from RFC 1870 and RET/ENVID from RFC 3461): opens a
//! transaction; on submission only for one of the authenticated account's identities.

use onionpost_proto::queue::v1::DsnReturn;
use tokio::io::{AsyncRead, AsyncWrite};

use onionpost_smtp_server::Connection;

use super::{Mode, Next, Session, State, Transaction, own_identity};
use crate::{Backend, message};

impl<B: Backend> Session<B> {
    pub(super) async fn mail<S: AsyncRead + AsyncWrite>(
        &self,
        io: &mut Connection<S>,
        state: &mut State,
        from: smtp_proto::MailFrom<String>,
    ) -> Next {
        if !state.greeted {
            return self.fail(io, state, "503 5.5.1 Send EHLO first");
        }
        if state.transaction.is_some() {
            return self.fail(io, state, "503 5.5.1 Nested MAIL command");
        }
        if let Mode::Submission { onion_identity, .. } = &self.mode {
            let Some(account) = &state.account else {
                return self.fail(io, state, "530 5.7.0 Authentication required");
            };
            let address = message::normalize(&from.address);
            if own_identity(account, onion_identity.as_deref(), &address).is_none() {
                return self.fail(
                    io,
                    state,
                    "550 5.7.1 Sender address is not one of this account's identities",
                );
            }
        }
        let size = from.size as u64;
        if size > self.policy.limits.max_message_bytes {
            return self.fail(
                io,
                state,
                "552 5.3.4 Message size exceeds fixed maximum message size",
            );
        }
        let dsn_return = if from.flags & smtp_proto::MAIL_RET_FULL != 0 {
            DsnReturn::Full as i32
        } else if from.flags & smtp_proto::MAIL_RET_HDRS != 0 {
            DsnReturn::Headers as i32
        } else {
            DsnReturn::Unspecified as i32
        };
        state.transaction = Some(Transaction {
            reverse_path: from.address,
            declared_size: size,
            envelope_id: from.env_id.unwrap_or_default(),
            dsn_return,
            recipients: Vec::new(),
        });
        io.reply("250 2.1.0 Sender OK");
        Next::Continue
    }
}
