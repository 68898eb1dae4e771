//! DATA (RFC 5321 §4.1.1.4): the message text is read by onionpost-smtp-server's DATA reader
//! (dot-unstuffing, line and size limits, bare CR and LF refused), then handed to the policy of
//! the listener: ingress (`ingress.rs`) or submission (`submission.rs`).

use onionpost_smtp_server::{Connection, DataLimits, DataOutcome, TIMEOUT, read_data};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Mode, Next, PLAINTEXT_REFUSED, Session, State};
use crate::Backend;

impl<B: Backend> Session<B> {
    pub(super) async fn data<S: AsyncRead + AsyncWrite>(
        &self,
        io: &mut Connection<S>,
        state: &mut State,
    ) -> std::io::Result<Next> {
        let Some(transaction) = state.transaction.take() else {
            return Ok(self.fail(io, state, "503 5.5.1 Need MAIL before DATA"));
        };
        if transaction.recipients.is_empty() {
            state.transaction = Some(transaction);
            return Ok(self.fail(io, state, "554 5.5.1 No valid recipients"));
        }
        io.reply("354 Start mail input; end with <CRLF>.<CRLF>");
        let limits = DataLimits {
            max_message_bytes: self.policy.limits.max_message_bytes,
            timeout: self.policy.limits.data_timeout,
        };
        // Held until the reply is given: processing works on the text it covers.
        let mut grant = self.memory.grant();
        let body = match read_data(io, &limits, &mut grant).await? {
            DataOutcome::Message(body) => body,
            DataOutcome::Refused(refusal) => {
                self.policy.stats.refused();
                io.reply(refusal.reply());
                return Ok(Next::Continue);
            }
            DataOutcome::Eof => return Ok(Next::Close),
            DataOutcome::Timeout => {
                io.reply(TIMEOUT);
                return Ok(Next::Close);
            }
        };
        let reply = match &self.mode {
            Mode::Ingress { identity_id } => self.receive(identity_id, &transaction, body).await,
            Mode::Submission { onion_identity, .. } => match &state.account {
                Some(account) => {
                    self.submit(account, onion_identity.as_deref(), &transaction, body)
                        .await
                }
                None => "530 5.7.0 Authentication required".to_owned(),
            },
        };
        if reply.starts_with('2') {
            self.policy.stats.accepted();
        } else if reply != PLAINTEXT_REFUSED {
            self.policy.stats.refused();
        }
        io.reply(&reply);
        Ok(Next::Continue)
    }
}
