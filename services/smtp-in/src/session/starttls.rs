//! STARTTLS (RFC 3207), offered on the clearnet submission listener only; the handshake itself
//! is run by the engine (`Session::run`), which starts over with a fresh state after it.

use tokio::io::{AsyncRead, AsyncWrite};

use onionpost_smtp_server::Connection;

use super::{Next, Session, State};
use crate::Backend;

impl<B: Backend> Session<B> {
    pub(super) async fn starttls<S: AsyncRead + AsyncWrite>(
        &self,
        io: &mut Connection<S>,
        state: &mut State,
    ) -> Next {
        if self.tls.is_none() {
            return self.fail(io, state, "502 5.5.1 Command not implemented");
        }
        if state.secure {
            return self.fail(io, state, "503 5.5.1 TLS already active");
        }
        if io.has_buffered_input() {
            // Commands pipelined behind STARTTLS would be read as if sent over TLS (the
            // command injection of CVE-2011-0411); RFC 3207 forbids sending them.
            io.reply("554 5.5.1 Commands pipelined after STARTTLS; closing connection");
            return Next::Close;
        }
        io.reply("220 2.0.0 Ready to start TLS");
        if io.flush().await.is_err() {
            return Next::Close;
        }
        Next::StartTls
    }
}
