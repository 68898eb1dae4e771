//! ETRN (RFC 1985), on an identity's onion MX only: another carrier asks for the mail held
//! for its identity's onion. The reply is the same whatever is held and comes before the
//! flush runs, so ETRN tells nothing, neither in its bytes nor in its timing.

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
        // The same reply whatever is held, and before the flush runs: the flush's time
        // depends on what is held (rows changed force an fsync), so waiting for it would tell.
        io.reply(ETRN_REPLY);
        if let Some(onion) = message::onion_of(&format!("x@{name}")) {
            let backend = self.backend.clone();
            tokio::spawn(async move {
                if let Err(error) = backend.flush(&onion).await {
                    error.log("etrn flush failed");
                }
            });
        }
        Next::Continue
    }
}
