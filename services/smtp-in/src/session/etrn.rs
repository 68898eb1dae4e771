//! ETRN (RFC 1985), on an identity's onion MX only: another carrier asks for the mail held
//! for its identity's onion. The reply is the same whatever is held, so ETRN tells nothing.

use tokio::io::{AsyncRead, AsyncWrite};

use onionpost_smtp_server::Connection;

use super::{ETRN_REPLY, Next, Session, State};
use crate::{Backend, message};

impl<B: Backend> Session<B> {
    pub(super) async fn etrn<S: AsyncRead + AsyncWrite>(
        &self,
        io: &mut Connection<S>,
        state: &mut State,
        name: String,
    ) -> Next {
        if !self.ingress() {
            return self.fail(io, state, "502 5.5.1 Command not implemented");
        }
        let name = name
            .trim()
            .trim_start_matches(['@', '#'])
            .to_ascii_lowercase();
        if let Some(onion) = message::onion_of(&format!("x@{name}"))
            && let Err(error) = self.backend.flush(&onion).await
        {
            tracing::warn!(%error, "etrn flush failed");
        }
        // The same reply whatever happened: ETRN must not tell what is held.
        io.reply(ETRN_REPLY);
        Next::Continue
    }
}
