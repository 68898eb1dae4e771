//! EHLO and HELO (RFC 5321 §4.1.1.1): the greeting names no host and no software, and EHLO
//! lists the extensions this listener offers (ETRN and XSTAMP on an onion MX; STARTTLS and AUTH on
//! submission where they may be used).

use tokio::io::{AsyncRead, AsyncWrite};

use onionpost_smtp_server::Connection;

use super::{Mode, Next, Session, State};
use crate::Backend;

impl<B: Backend> Session<B> {
    pub(super) fn ehlo<S: AsyncRead + AsyncWrite>(
        &self,
        io: &mut Connection<S>,
        state: &mut State,
    ) -> Next {
        state.greeted = true;
        state.transaction = None;
        let mut lines = vec![
            "ESMTP".to_owned(),
            "PIPELINING".to_owned(),
            format!("SIZE {}", self.policy.limits.max_message_bytes),
            "8BITMIME".to_owned(),
            "SMTPUTF8".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
            "DSN".to_owned(),
        ];
        match &self.mode {
            Mode::Ingress { identity_id } => {
                lines.push("ETRN".to_owned());
                // The difficulty this identity asks of strangers now (its own load only).
                let inbound = &self.policy.inbound;
                if inbound.stamps_asked() {
                    let bits = inbound.difficulty(identity_id, crate::inbound::unix_now());
                    lines.push(format!("{} {bits}", onionpost_runtime::stamp::KEYWORD));
                }
            }
            Mode::Submission { .. } => {
                if self.tls.is_some() && !state.secure {
                    lines.push("STARTTLS".to_owned());
                }
                if self.auth_allowed(state) {
                    lines.push("AUTH PLAIN LOGIN".to_owned());
                }
            }
        }
        let last = lines.len() - 1;
        for (index, text) in lines.iter().enumerate() {
            let separator = if index == last { ' ' } else { '-' };
            io.reply(&format!("250{separator}{text}"));
        }
        Next::Continue
    }

    pub(super) fn helo<S: AsyncRead + AsyncWrite>(
        &self,
        io: &mut Connection<S>,
        state: &mut State,
    ) -> Next {
        state.greeted = true;
        state.transaction = None;
        io.reply("250 ESMTP");
        Next::Continue
    }
}
