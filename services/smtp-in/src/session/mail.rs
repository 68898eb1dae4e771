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
        if let Some(refusal) = sender_syntax_error(&from.address) {
            return self.fail(io, state, refusal);
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

/// The refusal of a reverse path whose bytes were not UTF-8. smtp-proto decodes addresses
/// lossily, so U+FFFD marks bytes the client sent that are no character at all: RFC 6531 allows
/// UTF-8 in addresses, never arbitrary octets, and a peer's path must not be rewritten silently
/// (it is where a carrier's delivery notices go).
const SENDER_NOT_UTF8: &str = "501 5.1.7 Bad sender address syntax: not valid UTF-8";

fn sender_syntax_error(address: &str) -> Option<&'static str> {
    address
        .contains(char::REPLACEMENT_CHARACTER)
        .then_some(SENDER_NOT_UTF8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reverse_path(line: &[u8]) -> String {
        match smtp_proto::Request::parse(&mut line.iter())
            .expect("parses")
            .into_owned()
        {
            smtp_proto::Request::Mail { from } => from.address,
            other => panic!("not MAIL: {other:?}"),
        }
    }

    #[test]
    fn a_reverse_path_that_was_not_utf8_is_refused() {
        let mangled = reverse_path(b"MAIL FROM:<\xff\xfe@b.onion>\r\n");
        assert_eq!(sender_syntax_error(&mangled), Some(SENDER_NOT_UTF8));
        let utf8 = reverse_path("MAIL FROM:<jörg@b.onion> SMTPUTF8\r\n".as_bytes());
        assert_eq!(sender_syntax_error(&utf8), None);
        assert_eq!(
            sender_syntax_error(&reverse_path(b"MAIL FROM:<>\r\n")),
            None
        );
    }
}
