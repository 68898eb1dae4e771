//! The ESMTP session engine (RFC 5321 with PIPELINING, SIZE, 8BITMIME, SMTPUTF8,
//! ENHANCEDSTATUSCODES, DSN, ETRN, AUTH PLAIN/LOGIN, STARTTLS on the clearnet submission
//! listener). Generic over the connection; commands are parsed by smtp-proto. No reply names a host or the software, and no Received header is ever
//! added: the carrier leaves no path in mail.
//!
//! Ingress (an identity's onion MX) accepts RCPT only for that identity's own address; every
//! other address, co-hosted or made up, and every relay attempt gets the same bytes back, so a
//! peer learns nothing about who else lives on the carrier. Ingress never bounces: every
//! refusal happens inside the session.
//!
//! This file is the engine: the session's types, the command loop and the dispatch. Each
//! command group has its own file (`ehlo.rs`, `starttls.rs`, `auth.rs`, `mail.rs`, `rcpt.rs`,
//! `data.rs`, `etrn.rs`), and the policy after DATA has one per listener (`ingress.rs`,
//! `submission.rs`). A child uses this file's types; only this file dispatches. Line and DATA
//! I/O, timeouts and the accept loop are onionpost-smtp-server's.

mod auth;
mod data;
mod ehlo;
mod etrn;
mod ingress;
mod mail;
mod rcpt;
mod starttls;
mod submission;

use std::sync::Arc;
use std::time::Duration;

use onionpost_proto::imap::v1::{AuthenticateResponse, Identity};
use onionpost_proto::queue::v1::RecipientRequest;
use onionpost_runtime::config::PlaintextPolicy;
use onionpost_smtp_server::{Connection, Line, MemoryBudget, SessionLimit, TIMEOUT};
use smtp_proto::{Error as ParseError, Request};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

use crate::Backend;
use crate::inbound::{Inbound, InboundPolicy};
use crate::message;
use crate::stats::Stats;
use onionpost_runtime::rate::RateLimiter;

/// The refusal for every address that is not this onion's identity: co-hosted, made up, or a
/// relay attempt. Byte-identical by construction.
pub const RECIPIENT_REJECTED: &str = "550 5.1.1 Recipient address rejected";
/// The start of the refusal of a recipient at a `.onion` name that is no v3 onion address; the
/// parser's sentence follows (e.g. "the onion address checksum is wrong (mistyped?)").
pub const BAD_ONION_ADDRESS: &str = "553 5.1.3 Bad recipient address:";
/// The refusal of plaintext from an onion peer (design.md: end-to-end encryption required).
pub const PLAINTEXT_REFUSED: &str = "550 5.7.1 End-to-end encryption required: this address accepts only OpenPGP-encrypted mail (RFC 3156)";
/// The one refusal of a login: wrong password, unknown login, or an account that does not own
/// the identity whose onion it came through (RFC 4954 §6). Byte-identical by construction.
pub const AUTH_INVALID: &str = "535 5.7.8 Authentication credentials invalid";
/// A recipient whose carried mail is at its agreed caps, at RCPT (declared SIZE) or after
/// DATA (the real size): the sender tries again later.
pub const MAILBOX_FULL: &str = "452 4.2.2 Mailbox full, try again later";
/// An encrypted message whose compressed contents expand beyond what the carrier opens
/// (RFC 3463 5.3.4, message too big for system): for good, so the sender does not retry it.
pub const EXPANDS_TOO_FAR: &str =
    "552 5.3.4 Message expands beyond the size limit when decompressed";
/// The one answer to ETRN (RFC 1985), whatever was or was not held.
pub const ETRN_REPLY: &str = "250 2.0.0 Queuing started";
/// A sender whose contact request this identity refused.
pub const SENDER_REFUSED: &str =
    "550 5.7.1 This address refused mail from this sender (its contact request was declined)";
/// A carry statement to `postmaster@<onion>` with other recipients in the same transaction.
pub const POSTMASTER_ALONE: &str = "452 4.5.3 postmaster@ takes carry statements in a transaction of its own: send the other recipients separately";
/// The refusal of a message with a text line over 998 characters (RFC 5321 §4.5.3.1.6), the
/// same bytes as the gateway's.
pub use onionpost_smtp_server::LINE_TOO_LONG;

/// Longest command line (smtp-proto's own limit).
const MAX_COMMAND_LINE: usize = smtp_proto::request::receiver::MAX_LINE_LENGTH;

/// Which listener a session came through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// An identity's onion MX (virtual port 25).
    Ingress { identity_id: String },
    /// Submission: carrier-wide (`onion_identity` None) or through an identity's onion, where
    /// only that identity may send. `auth_allowed` is false on a clearnet listener reached
    /// from outside loopback, where passwords would cross the network in the clear.
    Submission {
        onion_identity: Option<String>,
        auth_allowed: bool,
    },
}

/// Limits of one session.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_bytes: u64,
    pub max_recipients: usize,
    /// Errors (4xx/5xx to commands) before the session is closed with 421.
    pub max_errors: u32,
    /// RFC 5321 §4.5.3.2: 5 minutes for a command, 3 minutes for a data block.
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    /// The longest a write of replies may take: a peer that never reads them is dropped
    /// rather than holding its session.
    pub write_timeout: Duration,
    /// Sessions open at once in this process, all listeners together (the carrier-wide
    /// ceiling); beyond it a new connection gets 421 and is closed, so a flood cannot exhaust
    /// memory.
    pub max_sessions: usize,
    /// Sessions open at once through one listener. Below half the ceiling, so that one
    /// identity's two listeners (MX and submission) cannot fill it: a flood through one onion
    /// leaves the other identities answering and tells nobody who shares the carrier.
    pub max_sessions_per_listener: usize,
    /// Bytes of message text all sessions may hold in memory at once (the carrier-wide
    /// ceiling; see onionpost-smtp-server's `MemoryBudget`). Beyond it a message is refused
    /// with a temporary 452 after its end of data.
    pub max_buffered_bytes: u64,
    /// The same through one listener: below half the ceiling, as for sessions; never below
    /// `max_message_bytes`, so a message of the largest size always fits an idle listener.
    pub max_buffered_bytes_per_listener: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 25 * 1024 * 1024,
            max_recipients: 100,
            max_errors: 10,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            write_timeout: Duration::from_secs(60),
            max_sessions: 1000,
            max_sessions_per_listener: 100,
            max_buffered_bytes: 512 * 1024 * 1024,
            max_buffered_bytes_per_listener: 64 * 1024 * 1024,
        }
    }
}

/// What is shared by every session: policy, limits, the rate limiter and the counters.
pub struct Policy {
    pub plaintext: PlaintextPolicy,
    pub limits: Limits,
    pub rate: RateLimiter,
    pub stats: Stats,
    /// The ceiling on open sessions (`limits.max_sessions`); each listener's own limit
    /// (`limits.max_sessions_per_listener`) is taken within it.
    pub sessions: SessionLimit,
    /// The ceiling on message text held in memory (`limits.max_buffered_bytes`); each
    /// listener's own budget is taken within it.
    pub memory: MemoryBudget,
    /// Stamps and hourly limits of each identity's onion MX (none unless `with_inbound`).
    pub inbound: Inbound,
}

impl Policy {
    pub fn new(
        plaintext: PlaintextPolicy,
        limits: Limits,
        max_messages_per_hour_per_account: u32,
        stats: Stats,
    ) -> Self {
        Policy {
            plaintext,
            sessions: SessionLimit::new(limits.max_sessions),
            memory: MemoryBudget::new(limits.max_buffered_bytes),
            limits,
            rate: RateLimiter::per_hour(max_messages_per_hour_per_account),
            stats,
            inbound: Inbound::new(InboundPolicy::default()),
        }
    }

    /// Asks stamps of strangers and applies hourly limits on identities' onion MX.
    pub fn with_inbound(mut self, policy: InboundPolicy) -> Self {
        self.inbound = Inbound::new(policy);
        self
    }

    /// The session limit of one more listener, within the ceiling.
    pub fn listener_limit(&self) -> SessionLimit {
        self.sessions
            .listener(self.limits.max_sessions_per_listener)
    }

    /// The memory budget of one more listener, within the ceiling.
    pub fn listener_memory(&self) -> MemoryBudget {
        self.memory.listener(
            self.limits
                .max_buffered_bytes_per_listener
                .max(self.limits.max_message_bytes),
        )
    }
}

/// One SMTP session.
pub struct Session<B: Backend> {
    backend: Arc<B>,
    policy: Arc<Policy>,
    mode: Mode,
    /// Offered as STARTTLS (RFC 3207) when set: the clearnet submission listener.
    tls: Option<TlsAcceptor>,
    /// Where messages are held during DATA: the listener's budget (the policy's ceiling when
    /// the session was made outside a listener).
    memory: MemoryBudget,
}

/// A recipient accepted in this transaction.
#[derive(Debug, Clone)]
struct Recipient {
    address: String,
    notify: Vec<i32>,
    orcpt: String,
    /// Ingress: carried for another carrier's identity rather than delivered here.
    carry: bool,
    /// Ingress: `postmaster@<this onion>`, which takes signed carry statements (carry.rs).
    postmaster: bool,
    /// Ingress: the stamp the sender paid with (RCPT parameter XSTAMP), checked after DATA.
    stamp: Option<onionpost_runtime::stamp::Stamp>,
    /// Ingress, stamps asked: the reverse path is a correspondent of this identity, so no
    /// stamp was asked; the message must then prove it with a verified signature.
    correspondent: bool,
}

#[derive(Debug, Default)]
struct Transaction {
    reverse_path: String,
    declared_size: u64,
    envelope_id: String,
    dsn_return: i32,
    recipients: Vec<Recipient>,
}

/// What a session knows between commands.
#[derive(Default)]
struct State {
    /// TLS is up (after STARTTLS).
    secure: bool,
    greeted: bool,
    errors: u32,
    account: Option<AuthenticateResponse>,
    transaction: Option<Transaction>,
}

/// How a command ended the loop.
enum Next {
    Continue,
    Close,
    /// 220 sent to STARTTLS: the handshake comes next.
    StartTls,
}

impl<B: Backend> Session<B> {
    pub fn new(backend: Arc<B>, policy: Arc<Policy>, mode: Mode) -> Self {
        Session {
            memory: policy.memory.clone(),
            backend,
            policy,
            mode,
            tls: None,
        }
    }

    /// Holds messages within this listener's memory budget.
    pub fn with_memory(mut self, memory: MemoryBudget) -> Self {
        self.memory = memory;
        self
    }

    /// Offers STARTTLS with this certificate.
    pub fn with_starttls(mut self, acceptor: TlsAcceptor) -> Self {
        self.tls = Some(acceptor);
        self
    }

    fn ingress(&self) -> bool {
        matches!(self.mode, Mode::Ingress { .. })
    }

    /// Runs the session to its end. I/O errors end it silently; the peer went away.
    pub async fn run<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin,
    {
        let _open = self.policy.stats.session();
        let mut io = Connection::new(stream, self.policy.limits.write_timeout);
        io.reply("220 ESMTP ready");
        match self.drive(&mut io, State::default()).await {
            Ok(Next::StartTls) => {}
            Ok(_) => return io.finish().await,
            Err(error) => {
                tracing::debug!(%error, "smtp session ended by i/o error");
                return io.finish().await;
            }
        }
        let Some(acceptor) = self.tls.clone() else {
            return io.finish().await;
        };
        let stream = match acceptor.accept(io.into_inner()).await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, "smtp tls handshake failed");
                return;
            }
        };
        // RFC 3207 §4.2: everything learnt before the handshake is forgotten; the client
        // greets again.
        let mut io = Connection::new(stream, self.policy.limits.write_timeout);
        let state = State {
            secure: true,
            ..State::default()
        };
        if let Err(error) = self.drive(&mut io, state).await {
            tracing::debug!(%error, "smtp session ended by i/o error");
        }
        io.finish().await;
    }

    async fn drive<S: AsyncRead + AsyncWrite>(
        &self,
        io: &mut Connection<S>,
        mut state: State,
    ) -> std::io::Result<Next> {
        loop {
            let line = match io
                .line(MAX_COMMAND_LINE, self.policy.limits.command_timeout)
                .await?
            {
                Line::Data(line) => line,
                Line::Eof => return Ok(Next::Close),
                Line::Timeout => {
                    io.reply(TIMEOUT);
                    return Ok(Next::Close);
                }
                Line::TooLong { .. } => {
                    if self.error(io, &mut state, "500 5.5.2 Line too long") {
                        return Ok(Next::Close);
                    }
                    continue;
                }
            };
            let (line, stamp) = if self.ingress() {
                take_stamp_parameter(line)
            } else {
                (line, None)
            };
            let next = match Request::parse(&mut line.iter()) {
                Ok(request) => {
                    self.command(io, &mut state, request.into_owned(), stamp)
                        .await?
                }
                Err(ParseError::UnknownCommand) => {
                    self.fail(io, &mut state, "500 5.5.1 Command unrecognized")
                }
                Err(ParseError::InvalidSenderAddress) => {
                    self.fail(io, &mut state, "501 5.1.7 Bad sender address syntax")
                }
                Err(ParseError::InvalidRecipientAddress) => {
                    self.fail(io, &mut state, "501 5.1.3 Bad recipient address syntax")
                }
                Err(ParseError::UnsupportedParameter { .. }) => {
                    self.fail(io, &mut state, "555 5.5.4 Unsupported parameter")
                }
                Err(_) => self.fail(io, &mut state, "501 5.5.2 Syntax error"),
            };
            match next {
                Next::Continue => {}
                Next::Close | Next::StartTls => return Ok(next),
            }
        }
    }

    /// Answers an error and counts it; true when the session must close.
    fn error<S: AsyncRead + AsyncWrite>(
        &self,
        io: &mut Connection<S>,
        state: &mut State,
        reply: &str,
    ) -> bool {
        io.reply(reply);
        state.errors += 1;
        if state.errors >= self.policy.limits.max_errors {
            io.reply("421 4.7.0 Too many errors, closing connection");
            return true;
        }
        false
    }

    fn fail<S: AsyncRead + AsyncWrite>(
        &self,
        io: &mut Connection<S>,
        state: &mut State,
        reply: &str,
    ) -> Next {
        if self.error(io, state, reply) {
            Next::Close
        } else {
            Next::Continue
        }
    }

    async fn command<S: AsyncRead + AsyncWrite>(
        &self,
        io: &mut Connection<S>,
        state: &mut State,
        request: Request<String>,
        stamp: Option<String>,
    ) -> std::io::Result<Next> {
        let next = match request {
            Request::Ehlo { .. } => self.ehlo(io, state),
            Request::Helo { .. } => self.helo(io, state),
            Request::Lhlo { .. } => self.fail(io, state, "500 5.5.1 Command unrecognized"),
            Request::Noop { .. } => {
                io.reply("250 2.0.0 OK");
                Next::Continue
            }
            Request::Rset => {
                state.transaction = None;
                io.reply("250 2.0.0 OK");
                Next::Continue
            }
            Request::Quit => {
                io.reply("221 2.0.0 Bye");
                Next::Close
            }
            Request::Vrfy { .. } => {
                io.reply("252 2.5.0 Cannot verify the address");
                Next::Continue
            }
            Request::Help { .. } => {
                io.reply("214 2.0.0 See RFC 5321");
                Next::Continue
            }
            Request::StartTls => self.starttls(io, state).await,
            Request::Expn { .. }
            | Request::Bdat { .. }
            | Request::Burl { .. }
            | Request::Atrn { .. } => self.fail(io, state, "502 5.5.1 Command not implemented"),
            Request::Etrn { name } => self.etrn(io, state, name).await,
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(io, state, mechanism, initial_response).await?,
            Request::Mail { from } => self.mail(io, state, from).await,
            Request::Rcpt { to } => self.rcpt(io, state, to, stamp).await,
            Request::Data => self.data(io, state).await?,
        };
        Ok(next)
    }
}

/// The account's identity with this address; on an identity's onion, only that identity.
fn own_identity<'a>(
    account: &'a AuthenticateResponse,
    onion_identity: Option<&str>,
    address: &str,
) -> Option<&'a Identity> {
    account.identities.iter().find(|identity| {
        message::normalize(&identity.address) == address
            && onion_identity.is_none_or(|only| only == identity.identity_id)
    })
}

/// Takes the `XSTAMP=` parameter (issue 22) off a RCPT command line: smtp-proto refuses every
/// parameter it does not know, and this one is onionpost's own. Looked for only after the
/// closing `>` of the path, so no address can carry it.
fn take_stamp_parameter(line: Vec<u8>) -> (Vec<u8>, Option<String>) {
    let is_rcpt = line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"RCPT");
    let Some(path_end) = line.iter().position(|b| *b == b'>').filter(|_| is_rcpt) else {
        return (line, None);
    };
    let name = format!(" {}=", onionpost_runtime::stamp::KEYWORD);
    let Some(start) = line[path_end..]
        .windows(name.len())
        .position(|window| window.eq_ignore_ascii_case(name.as_bytes()))
        .map(|at| path_end + at)
    else {
        return (line, None);
    };
    let value_start = start + name.len();
    let value_end = line[value_start..]
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .map_or(line.len(), |at| value_start + at);
    let value = String::from_utf8_lossy(&line[value_start..value_end]).into_owned();
    let mut rest = line[..start].to_vec();
    rest.extend_from_slice(&line[value_end..]);
    (rest, Some(value))
}

fn enqueue_recipient(recipient: &Recipient) -> RecipientRequest {
    RecipientRequest {
        address: recipient.address.clone(),
        notify: recipient.notify.clone(),
        original_recipient: recipient.orcpt.clone(),
    }
}
