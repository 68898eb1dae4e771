//! AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms, on submission only: on
//! loopback and onion listeners, or after STARTTLS on the clearnet one.

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncWrite};

use onionpost_proto::imap::v1::AuthenticateResponse;
use onionpost_smtp_server::{Connection, Line};

use super::{AUTH_INVALID, MAX_COMMAND_LINE, Mode, Next, Session, State};
use crate::{Backend, SmtpInError};

impl<B: Backend> Session<B> {
    /// Whether AUTH may be used now: on loopback and onion listeners, or once TLS is up.
    pub(super) fn auth_allowed(&self, state: &State) -> bool {
        match &self.mode {
            Mode::Submission { auth_allowed, .. } => *auth_allowed || state.secure,
            Mode::Ingress { .. } => false,
        }
    }

    pub(super) async fn auth<S: AsyncRead + AsyncWrite>(
        &self,
        io: &mut Connection<S>,
        state: &mut State,
        mechanism: u64,
        initial: String,
    ) -> std::io::Result<Next> {
        if self.ingress() {
            return Ok(self.fail(io, state, "502 5.5.1 Command not implemented"));
        }
        if !self.auth_allowed(state) {
            return Ok(self.fail(
                io,
                state,
                "538 5.7.11 Encryption required for requested authentication mechanism",
            ));
        }
        if !state.greeted {
            return Ok(self.fail(io, state, "503 5.5.1 Send EHLO first"));
        }
        if state.account.is_some() {
            return Ok(self.fail(io, state, "503 5.5.1 Already authenticated"));
        }
        if state.transaction.is_some() {
            return Ok(self.fail(
                io,
                state,
                "503 5.5.1 AUTH not allowed during a mail transaction",
            ));
        }
        let credentials = match mechanism {
            smtp_proto::AUTH_PLAIN => {
                let response = if initial.is_empty() {
                    match self.challenge(io, "334 ").await? {
                        Some(response) => response,
                        None => {
                            return Ok(self.fail(io, state, "501 5.7.0 Authentication cancelled"));
                        }
                    }
                } else {
                    initial
                };
                decode(&response).and_then(|plain| {
                    let mut parts = plain.split(|byte| *byte == 0);
                    let _authzid = parts.next()?;
                    let login = String::from_utf8(parts.next()?.to_vec()).ok()?;
                    let password = String::from_utf8(parts.next()?.to_vec()).ok()?;
                    Some((login, password))
                })
            }
            smtp_proto::AUTH_LOGIN => {
                let login = if initial.is_empty() {
                    self.challenge(io, "334 VXNlcm5hbWU6").await?
                } else {
                    Some(initial)
                };
                let Some(login) = login else {
                    return Ok(self.fail(io, state, "501 5.7.0 Authentication cancelled"));
                };
                let Some(password) = self.challenge(io, "334 UGFzc3dvcmQ6").await? else {
                    return Ok(self.fail(io, state, "501 5.7.0 Authentication cancelled"));
                };
                decode(&login)
                    .and_then(|login| String::from_utf8(login).ok())
                    .zip(decode(&password).and_then(|password| String::from_utf8(password).ok()))
            }
            _ => {
                return Ok(self.fail(io, state, "504 5.5.4 Unrecognized authentication type"));
            }
        };
        let Some((login, password)) = credentials else {
            return Ok(self.fail(io, state, "501 5.5.2 Cannot decode response"));
        };
        match self
            .backend
            .authenticate(
                &login,
                &password,
                &self.backoff_key(&login),
                self.onion_identity(),
            )
            .await
        {
            // Through an identity's onion only its owner may log in (design: co-hosting stays
            // invisible); any other account gets the wrong-password reply, byte for byte, after
            // the same password check, so neither the reply nor what follows tells them apart.
            Ok(account) if !self.owns_listener_identity(&account) => {
                Ok(self.fail(io, state, AUTH_INVALID))
            }
            Ok(account) => {
                state.account = Some(account);
                io.reply("235 2.7.0 Authentication successful");
                Ok(Next::Continue)
            }
            Err(SmtpInError::Temporary(error)) => {
                // Another service's text may name an address: debug only.
                tracing::warn!("authentication unavailable");
                tracing::debug!(%error, "authentication unavailable");
                Ok(self.fail(io, state, "454 4.7.0 Temporary authentication failure"))
            }
            Err(_) => Ok(self.fail(io, state, AUTH_INVALID)),
        }
    }

    /// Whether the account may log in through this listener: on an identity's onion, only if
    /// it owns that identity; on the carrier-wide listener, any account.
    /// Defence in depth: imap already refuses other accounts through an identity's onion (and
    /// counts them in its back-off, so a caller's own correct password reads like a wrong one).
    fn owns_listener_identity(&self, account: &AuthenticateResponse) -> bool {
        self.onion_identity().is_none_or(|only| {
            account
                .identities
                .iter()
                .any(|identity| identity.identity_id == only)
        })
    }

    /// The identity whose onion this submission session came through, if any.
    fn onion_identity(&self) -> Option<&str> {
        match &self.mode {
            Mode::Submission {
                onion_identity: Some(identity_id),
                ..
            } => Some(identity_id),
            _ => None,
        }
    }

    /// The back-off key of a login through this listener (imap's Authenticate keys failures
    /// by it): the listener and the login, so repeated guesses at one login through one
    /// listener back off across sessions (a key per session never would), while guesses
    /// through another identity's onion, or at another login, lock nobody else out. Back-off
    /// is answered with the same 535 as a wrong password (grpc_backend).
    fn backoff_key(&self, login: &str) -> String {
        let listener = match &self.mode {
            Mode::Submission {
                onion_identity: Some(identity_id),
                ..
            } => format!("smtp-onion:{identity_id}"),
            Mode::Submission { .. } => "smtp-submission".to_owned(),
            Mode::Ingress { identity_id } => format!("smtp-mx:{identity_id}"),
        };
        format!("{listener}/{}", login.trim().to_ascii_lowercase())
    }

    /// Sends an AUTH challenge and reads the answer; None when the client cancels with `*`.
    pub(super) async fn challenge<S: AsyncRead + AsyncWrite>(
        &self,
        io: &mut Connection<S>,
        prompt: &str,
    ) -> std::io::Result<Option<String>> {
        io.reply(prompt);
        match io
            .line(MAX_COMMAND_LINE, self.policy.limits.command_timeout)
            .await?
        {
            Line::Data(line) => {
                let text = String::from_utf8_lossy(&line).trim().to_owned();
                Ok((text != "*").then_some(text))
            }
            _ => Ok(None),
        }
    }
}

fn decode(text: &str) -> Option<Vec<u8>> {
    if text == "=" {
        return Some(Vec::new());
    }
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}
