//! The ESMTP session engine (RFC 5321 with PIPELINING, SIZE, 8BITMIME, SMTPUTF8,
//! ENHANCEDSTATUSCODES, DSN, ETRN, AUTH PLAIN/LOGIN, STARTTLS on the clearnet submission
//! listener). Generic over the connection; commands are parsed by smtp-proto. No reply names a host or the software, and no Received header is ever
//! added: the carrier leaves no path in mail.
//!
//! Ingress (an identity's onion MX) accepts RCPT only for that identity's own address; every
//! other address, co-hosted or made up, and every relay attempt gets the same bytes back, so a
//! peer learns nothing about who else lives on the carrier. Ingress never bounces: every
//! refusal happens inside the session.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use onionpost_proto::imap::v1::{
    AccountState, AuthenticateResponse, DeliverRequest, Identity, Mailbox, Refusal,
    SenderVerification,
};
use onionpost_proto::keys::v1::{
    KeyCustody, RecipientKeyStatus, SignAndEncryptRequest, SignatureStatus,
};
use onionpost_proto::queue::v1::{DsnNotify, DsnReturn, EnqueueRequest, Origin, RecipientRequest};
use onionpost_runtime::config::PlaintextPolicy;
use smtp_proto::{Error as ParseError, Request};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_rustls::TlsAcceptor;

use crate::message;
use crate::stats::Stats;
use crate::{Backend, SmtpInError};
use onionpost_runtime::rate::RateLimiter;

/// The refusal for every address that is not this onion's identity: co-hosted, made up, or a
/// relay attempt. Byte-identical by construction.
pub const RECIPIENT_REJECTED: &str = "550 5.1.1 Recipient address rejected";
/// The start of the refusal of a recipient at a `.onion` name that is no v3 onion address; the
/// parser's sentence follows (e.g. "the onion address checksum is wrong (mistyped?)").
pub const BAD_ONION_ADDRESS: &str = "553 5.1.3 Bad recipient address:";
/// The refusal of plaintext from an onion peer (design.md: end-to-end encryption required).
pub const PLAINTEXT_REFUSED: &str = "550 5.7.1 End-to-end encryption required: this address accepts only OpenPGP-encrypted mail (RFC 3156)";
/// The one answer to ETRN (RFC 1985), whatever was or was not held.
pub const ETRN_REPLY: &str = "250 2.0.0 Queuing started";

/// Longest command line (smtp-proto's own limit).
const MAX_COMMAND_LINE: usize = smtp_proto::request::receiver::MAX_LINE_LENGTH;
/// Longest line of message text, CRLF included (RFC 5321 §4.5.3.1.6; RFC 5322 §2.1.1 allows
/// 998 characters before it). Longer lines are refused rather than folded: folding would
/// change what the sender signed.
const MAX_TEXT_LINE: usize = 1000;
/// The refusal of a message with a longer line.
pub const LINE_TOO_LONG: &str = "550 5.6.0 Message has a line longer than 998 characters; send it encoded (quoted-printable or base64, RFC 5322 2.1.1)";

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
    /// Sessions open at once in this process, all listeners together; beyond it a new
    /// connection gets 421 and is closed, so a flood cannot exhaust memory.
    pub max_sessions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 25 * 1024 * 1024,
            max_recipients: 100,
            max_errors: 10,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            max_sessions: 1000,
        }
    }
}

/// What is shared by every session: policy, limits, the rate limiter and the counters.
pub struct Policy {
    pub plaintext: PlaintextPolicy,
    pub limits: Limits,
    pub rate: RateLimiter,
    pub stats: Stats,
    /// Permits for open sessions (`limits.max_sessions`).
    pub sessions: Arc<tokio::sync::Semaphore>,
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
            sessions: Arc::new(tokio::sync::Semaphore::new(limits.max_sessions)),
            limits,
            rate: RateLimiter::per_hour(max_messages_per_hour_per_account),
            stats,
        }
    }
}

/// One SMTP session.
pub struct Session<B: Backend> {
    backend: Arc<B>,
    policy: Arc<Policy>,
    mode: Mode,
    connection_key: String,
    /// Offered as STARTTLS (RFC 3207) when set: the clearnet submission listener.
    tls: Option<TlsAcceptor>,
}

/// A recipient accepted in this transaction.
#[derive(Debug, Clone)]
struct Recipient {
    address: String,
    notify: Vec<i32>,
    orcpt: String,
    /// Ingress: carried for another carrier's identity rather than delivered here.
    carry: bool,
}

#[derive(Debug, Default)]
struct Transaction {
    reverse_path: String,
    declared_size: u64,
    envelope_id: String,
    dsn_return: i32,
    recipients: Vec<Recipient>,
}

enum Line {
    Data(Vec<u8>),
    TooLong,
    Eof,
    Timeout,
}

struct Io<S> {
    reader: BufReader<tokio::io::ReadHalf<S>>,
    writer: tokio::io::WriteHalf<S>,
    pending: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite> Io<S> {
    fn new(stream: S) -> Self {
        let (read, write) = tokio::io::split(stream);
        Io {
            reader: BufReader::new(read),
            writer: write,
            pending: Vec::new(),
        }
    }

    /// The connection back, for the TLS handshake. Callers check first that nothing is
    /// buffered: bytes the client sent before the handshake must not count as sent inside it.
    fn into_inner(self) -> S
    where
        S: Unpin,
    {
        self.reader.into_inner().unsplit(self.writer)
    }

    async fn finish(&mut self) {
        let _ = self.flush().await;
        let _ = self.writer.shutdown().await;
    }

    fn reply(&mut self, text: &str) {
        self.pending.extend_from_slice(text.as_bytes());
        self.pending.extend_from_slice(b"\r\n");
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            self.writer.write_all(&self.pending).await?;
            self.writer.flush().await?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Reads one line (with its line ending). Replies are written only when the client has
    /// nothing more buffered, which is what PIPELINING asks (RFC 2920).
    async fn line(&mut self, limit: usize, timeout: Duration) -> std::io::Result<Line> {
        if self.reader.buffer().is_empty() {
            self.flush().await?;
        }
        let read = async {
            let mut line = Vec::new();
            let mut too_long = false;
            loop {
                let buffer = self.reader.fill_buf().await?;
                if buffer.is_empty() {
                    return Ok(Line::Eof);
                }
                let (chunk, done) = match buffer.iter().position(|byte| *byte == b'\n') {
                    Some(end) => (&buffer[..=end], true),
                    None => (buffer, false),
                };
                let used = chunk.len();
                if !too_long {
                    if line.len() + used > limit {
                        too_long = true;
                        line.clear();
                    } else {
                        line.extend_from_slice(chunk);
                    }
                }
                self.reader.consume(used);
                if done {
                    return Ok(if too_long {
                        Line::TooLong
                    } else {
                        Line::Data(line)
                    });
                }
            }
        };
        match tokio::time::timeout(timeout, read).await {
            Ok(result) => result,
            Err(_) => Ok(Line::Timeout),
        }
    }
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
            backend,
            policy,
            mode,
            connection_key: hex::encode(rand::random::<[u8; 12]>()),
            tls: None,
        }
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
        let mut io = Io::new(stream);
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
        let mut io = Io::new(stream);
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
        io: &mut Io<S>,
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
                    io.reply("421 4.4.2 Timeout, closing connection");
                    return Ok(Next::Close);
                }
                Line::TooLong => {
                    if self.error(io, &mut state, "500 5.5.2 Line too long") {
                        return Ok(Next::Close);
                    }
                    continue;
                }
            };
            let next = match Request::parse(&mut line.iter()) {
                Ok(request) => self.command(io, &mut state, request.into_owned()).await?,
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

    /// Whether AUTH may be used now: on loopback and onion listeners, or once TLS is up.
    fn auth_allowed(&self, state: &State) -> bool {
        match &self.mode {
            Mode::Submission { auth_allowed, .. } => *auth_allowed || state.secure,
            Mode::Ingress { .. } => false,
        }
    }

    async fn starttls<S: AsyncRead + AsyncWrite>(&self, io: &mut Io<S>, state: &mut State) -> Next {
        if self.tls.is_none() {
            return self.fail(io, state, "502 5.5.1 Command not implemented");
        }
        if state.secure {
            return self.fail(io, state, "503 5.5.1 TLS already active");
        }
        if !io.reader.buffer().is_empty() {
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

    /// Answers an error and counts it; true when the session must close.
    fn error<S: AsyncRead + AsyncWrite>(
        &self,
        io: &mut Io<S>,
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
        io: &mut Io<S>,
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
        io: &mut Io<S>,
        state: &mut State,
        request: Request<String>,
    ) -> std::io::Result<Next> {
        let next = match request {
            Request::Ehlo { .. } => {
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
                    Mode::Ingress { .. } => lines.push("ETRN".to_owned()),
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
            Request::Helo { .. } => {
                state.greeted = true;
                state.transaction = None;
                io.reply("250 ESMTP");
                Next::Continue
            }
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
            Request::Etrn { name } => {
                if !self.ingress() {
                    return Ok(self.fail(io, state, "502 5.5.1 Command not implemented"));
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
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(io, state, mechanism, initial_response).await?,
            Request::Mail { from } => self.mail(io, state, from).await,
            Request::Rcpt { to } => self.rcpt(io, state, to).await,
            Request::Data => self.data(io, state).await?,
        };
        Ok(next)
    }

    async fn auth<S: AsyncRead + AsyncWrite>(
        &self,
        io: &mut Io<S>,
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
            .authenticate(&login, &password, &self.connection_key)
            .await
        {
            Ok(account) => {
                state.account = Some(account);
                io.reply("235 2.7.0 Authentication successful");
                Ok(Next::Continue)
            }
            Err(SmtpInError::Temporary(error)) => {
                tracing::warn!(%error, "authentication unavailable");
                Ok(self.fail(io, state, "454 4.7.0 Temporary authentication failure"))
            }
            Err(_) => Ok(self.fail(io, state, "535 5.7.8 Authentication credentials invalid")),
        }
    }

    /// Sends an AUTH challenge and reads the answer; None when the client cancels with `*`.
    async fn challenge<S: AsyncRead + AsyncWrite>(
        &self,
        io: &mut Io<S>,
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

    async fn mail<S: AsyncRead + AsyncWrite>(
        &self,
        io: &mut Io<S>,
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

    async fn rcpt<S: AsyncRead + AsyncWrite>(
        &self,
        io: &mut Io<S>,
        state: &mut State,
        to: smtp_proto::RcptTo<String>,
    ) -> Next {
        let Some(transaction) = &state.transaction else {
            return self.fail(io, state, "503 5.5.1 Need MAIL before RCPT");
        };
        if transaction.recipients.len() >= self.policy.limits.max_recipients {
            return self.fail(io, state, "452 4.5.3 Too many recipients");
        }
        let declared_size = transaction.declared_size;
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
        let mut recipient = Recipient {
            address: address.clone(),
            notify,
            orcpt: to.orcpt.unwrap_or_default(),
            carry: false,
        };
        match &self.mode {
            Mode::Ingress { identity_id } => {
                let own = match self.backend.identity(identity_id).await {
                    Ok(identity) => Some(identity),
                    Err(SmtpInError::NotFound) => None,
                    Err(error) => {
                        tracing::warn!(%error, "identity lookup failed");
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
                    }
                    _ => match self.backend.check_carry(&address, declared_size).await {
                        Ok(answer) if answer.accepted => recipient.carry = true,
                        Ok(answer) if answer.over_limit => {
                            return self.fail(io, state, "452 4.2.2 Mailbox full, try again later");
                        }
                        // One refusal for co-hosted, unknown and relayed addresses alike.
                        _ => return self.fail(io, state, RECIPIENT_REJECTED),
                    },
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
            transaction.recipients.push(recipient);
        }
        io.reply("250 2.1.5 Recipient OK");
        Next::Continue
    }

    async fn data<S: AsyncRead + AsyncWrite>(
        &self,
        io: &mut Io<S>,
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
        let limit = self.policy.limits.max_message_bytes;
        let mut body: Vec<u8> = Vec::new();
        let mut over = false;
        let mut long_line = false;
        loop {
            let line = match io
                .line(MAX_TEXT_LINE, self.policy.limits.data_timeout)
                .await?
            {
                Line::Data(line) => line,
                Line::TooLong => {
                    // Read on to the end of the data, keeping nothing.
                    long_line = true;
                    body = Vec::new();
                    continue;
                }
                Line::Eof => return Ok(Next::Close),
                Line::Timeout => {
                    io.reply("421 4.4.2 Timeout, closing connection");
                    return Ok(Next::Close);
                }
            };
            if line == b".\r\n" || line == b".\n" {
                break;
            }
            let line = line.strip_prefix(b".").unwrap_or(&line);
            if long_line {
                continue;
            }
            if over || body.len() as u64 + line.len() as u64 > limit {
                // Keep reading to the end of the data so the session stays in step, but keep
                // nothing more.
                over = true;
                body = Vec::new();
                continue;
            }
            body.extend_from_slice(line);
        }
        if over {
            self.policy.stats.refused();
            io.reply("552 5.3.4 Message size exceeds fixed maximum message size");
            return Ok(Next::Continue);
        }
        if long_line {
            self.policy.stats.refused();
            io.reply(LINE_TOO_LONG);
            return Ok(Next::Continue);
        }
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

    /// Ingress after DATA: decrypt, verify, learn the sender's key, deliver; or carry.
    async fn receive(&self, identity_id: &str, transaction: &Transaction, body: Vec<u8>) -> String {
        let encrypted = message::is_pgp_mime(&body);
        let mut mailbox = Mailbox::Inbox;
        if !encrypted {
            match self.policy.plaintext {
                PlaintextPolicy::Refuse => {
                    self.policy.stats.plaintext_refused();
                    return PLAINTEXT_REFUSED.to_owned();
                }
                PlaintextPolicy::Quarantine => mailbox = Mailbox::Quarantine,
                PlaintextPolicy::Accept => {}
            }
        }
        let carried: Vec<&Recipient> = transaction.recipients.iter().filter(|r| r.carry).collect();
        if !carried.is_empty() {
            // Carried mail leaves again for another carrier's identity: whatever the local
            // policy, it goes on only encrypted.
            if !encrypted {
                self.policy.stats.plaintext_refused();
                return PLAINTEXT_REFUSED.to_owned();
            }
            let request = EnqueueRequest {
                idempotency_key: hex::encode(rand::random::<[u8; 16]>()),
                origin: Origin::Carry as i32,
                reverse_path: transaction.reverse_path.clone(),
                recipients: carried.iter().map(|r| enqueue_recipient(r)).collect(),
                message_id: message::header(&body, "Message-ID").unwrap_or_default(),
                message: body.clone(),
                envelope_id: transaction.envelope_id.clone(),
                dsn_return: transaction.dsn_return,
                ..Default::default()
            };
            if let Err(error) = self.backend.enqueue(request).await {
                tracing::warn!(%error, "enqueue of carried mail failed");
                return "451 4.3.0 Temporary failure, try again later".to_owned();
            }
        }
        if transaction.recipients.iter().all(|r| r.carry) {
            return "250 2.0.0 Message accepted".to_owned();
        }
        let custody = if encrypted {
            match self.backend.custody(identity_id).await {
                Ok(custody) => custody,
                Err(error) => {
                    tracing::warn!(%error, "identity key unavailable");
                    return "451 4.3.0 Temporary failure, try again later".to_owned();
                }
            }
        } else {
            KeyCustody::Unspecified
        };
        let (delivered, verification, detail) = if !encrypted {
            (
                body,
                SenderVerification::Unsigned,
                "not encrypted".to_owned(),
            )
        } else if custody == KeyCustody::Client {
            // The account keeps its own key: store the ciphertext as it came, and learn the
            // sender's key from its Autocrypt header so replies can be encrypted.
            let outer_from = message::header(&body, "From")
                .map(|from| message::addresses(&from))
                .and_then(|list| list.into_iter().next());
            if let (Some(from), Some(header)) = (outer_from, message::header(&body, "Autocrypt"))
                && let Err(error) = self
                    .backend
                    .learn_autocrypt(identity_id, &from, &header)
                    .await
            {
                tracing::debug!(%error, "autocrypt header not learned");
            }
            (body, SenderVerification::NotChecked, String::new())
        } else {
            // DecryptAndVerify pins the sender's key itself (WKD over the sender's onion, or
            // the Autocrypt header by the pinning rule).
            let decrypted = match self.backend.decrypt_and_verify(identity_id, &body).await {
                Ok(decrypted) => decrypted,
                Err(SmtpInError::Temporary(error)) => {
                    tracing::warn!(%error, "decryption unavailable");
                    return "451 4.3.0 Temporary failure, try again later".to_owned();
                }
                Err(error) => {
                    tracing::debug!(%error, "message could not be decrypted");
                    return "550 5.7.5 Message could not be decrypted".to_owned();
                }
            };
            let verification = match SignatureStatus::try_from(decrypted.signature) {
                Ok(SignatureStatus::Verified) => SenderVerification::Verified,
                Ok(SignatureStatus::Unsigned) => SenderVerification::Unsigned,
                _ => SenderVerification::Failed,
            };
            (
                decrypted.message,
                verification,
                decrypted.signer_fingerprint,
            )
        };
        let request = DeliverRequest {
            identity_id: identity_id.to_owned(),
            mailbox: mailbox as i32,
            message: delivered,
            verification: verification as i32,
            verification_detail: detail,
            flags: Vec::new(),
        };
        match self.backend.deliver(request).await {
            Ok(response) => match Refusal::try_from(response.refusal) {
                Ok(Refusal::Unspecified) if response.duplicate => {
                    format!("250 2.0.0 {}", onionpost_proto::ALREADY_DELIVERED_TEXT)
                }
                Ok(Refusal::Unspecified) => "250 2.0.0 Message accepted".to_owned(),
                Ok(Refusal::AccountUnavailable) => {
                    "451 4.2.1 Mailbox temporarily unavailable".to_owned()
                }
                Ok(Refusal::OverQuota) => "452 4.2.2 Mailbox full".to_owned(),
                Ok(Refusal::AccountExpired) => "550 5.2.1 Mailbox disabled".to_owned(),
                _ => RECIPIENT_REJECTED.to_owned(),
            },
            Err(error) => {
                tracing::warn!(%error, "delivery failed");
                "451 4.3.0 Temporary failure, try again later".to_owned()
            }
        }
    }

    /// Submission after DATA: check From, resolve keys, sign and encrypt, queue, Sent copy.
    async fn submit(
        &self,
        account: &AuthenticateResponse,
        onion_identity: Option<&str>,
        transaction: &Transaction,
        body: Vec<u8>,
    ) -> String {
        let from = message::header(&body, "From")
            .map(|from| message::addresses(&from))
            .unwrap_or_default();
        let sender = match from.as_slice() {
            [address] => own_identity(account, onion_identity, address),
            _ => None,
        };
        let Some(sender) = sender else {
            return "550 5.7.1 From address is not one of this account's identities".to_owned();
        };
        let account_id = account
            .account
            .as_ref()
            .map(|a| a.account_id.clone())
            .unwrap_or_default();
        if !self.policy.rate.check(&account_id) {
            return "450 4.7.0 Hourly sending limit reached, try again later".to_owned();
        }
        // Onion recipients get the signed and encrypted message; clearnet ones (accepted at RCPT
        // through the gateway's CheckOutbound) the plaintext, queued apart for the gateway.
        let recipients: Vec<String> = transaction
            .recipients
            .iter()
            .filter(|r| message::onion_of(&r.address).is_some())
            .map(|r| r.address.clone())
            .collect();
        let (prepared, message_id) = message::prepare_submission(&body, &sender.onion);
        if !recipients.is_empty()
            && let Err(reply) = self
                .submit_onion(
                    sender,
                    &account_id,
                    transaction,
                    &recipients,
                    &prepared,
                    &message_id,
                )
                .await
        {
            return reply;
        }
        let clearnet: Vec<RecipientRequest> = transaction
            .recipients
            .iter()
            .filter(|r| message::onion_of(&r.address).is_none())
            .map(enqueue_recipient)
            .collect();
        if !clearnet.is_empty() {
            let request = EnqueueRequest {
                idempotency_key: hex::encode(rand::random::<[u8; 16]>()),
                origin: Origin::Submission as i32,
                account_id,
                sender_identity_id: sender.identity_id.clone(),
                reverse_path: message::normalize(&transaction.reverse_path),
                recipients: clearnet,
                message: prepared.clone(),
                message_id,
                envelope_id: transaction.envelope_id.clone(),
                dsn_return: transaction.dsn_return,
                fan_out_immediately: false,
            };
            if let Err(error) = self.backend.enqueue(request).await {
                tracing::warn!(%error, "enqueue of clearnet copy failed");
                return "451 4.3.0 Temporary failure, try again later".to_owned();
            }
        }
        // The message is queued: a failed Sent copy must not make the client send it again.
        let sent = DeliverRequest {
            identity_id: sender.identity_id.clone(),
            mailbox: Mailbox::Sent as i32,
            message: prepared,
            verification: SenderVerification::Local as i32,
            verification_detail: String::new(),
            flags: vec!["\\Seen".to_owned()],
        };
        if let Err(error) = self.backend.deliver(sent).await {
            tracing::warn!(%error, "sent copy not stored");
        }
        "250 2.0.0 Message queued".to_owned()
    }
}

/// Clearnet recipients of submission: through the gateway only.
impl<B: Backend> Session<B> {
    /// Why a clearnet RCPT is refused now, if it is: the gateway's CheckOutbound says whether
    /// the account's plan allows clearnet mail and its daily cap leaves room for one more.
    async fn clearnet_refusal(&self, state: &State) -> Option<String> {
        let (Some(account), Some(transaction)) = (&state.account, &state.transaction) else {
            return Some("530 5.7.0 Authentication required".to_owned());
        };
        let Mode::Submission { onion_identity, .. } = &self.mode else {
            return Some(RECIPIENT_REJECTED.to_owned());
        };
        let reverse_path = message::normalize(&transaction.reverse_path);
        let Some(sender) = own_identity(account, onion_identity.as_deref(), &reverse_path) else {
            return Some(
                "550 5.7.1 Sender address is not one of this account's identities".to_owned(),
            );
        };
        let account_id = account
            .account
            .as_ref()
            .map(|a| a.account_id.clone())
            .unwrap_or_default();
        let clearnet = transaction
            .recipients
            .iter()
            .filter(|r| message::onion_of(&r.address).is_none())
            .count()
            + 1;
        let clearnet = u32::try_from(clearnet).unwrap_or(u32::MAX);
        match self
            .backend
            .check_outbound(&account_id, &sender.identity_id, clearnet)
            .await
        {
            Ok(answer) if answer.allowed => None,
            Ok(answer) if answer.reason.is_empty() => {
                Some("550 5.7.1 Clearnet mail is not allowed for this account".to_owned())
            }
            Ok(answer) => Some(format!("550 5.7.1 {}", answer.reason)),
            Err(error) => {
                tracing::warn!(%error, "gateway check failed");
                Some("451 4.3.0 Temporary failure, try again later".to_owned())
            }
        }
    }

    /// Resolves the onion recipients' keys, signs and encrypts, and queues that copy; the
    /// reply to give when it fails.
    async fn submit_onion(
        &self,
        sender: &Identity,
        account_id: &str,
        transaction: &Transaction,
        recipients: &[String],
        prepared: &[u8],
        message_id: &str,
    ) -> Result<(), String> {
        let keys = match self
            .backend
            .resolve_keys(&sender.identity_id, recipients)
            .await
        {
            Ok(keys) => keys,
            Err(error) => {
                tracing::warn!(%error, "key resolution failed");
                return Err("451 4.3.0 Temporary failure, try again later".to_owned());
            }
        };
        for address in recipients {
            let usable = keys.iter().any(|key| {
                message::normalize(&key.address) == *address
                    && matches!(
                        RecipientKeyStatus::try_from(key.status),
                        Ok(RecipientKeyStatus::Pinned | RecipientKeyStatus::Fetched)
                    )
            });
            if !usable {
                return Err(format!("450 4.7.0 no key for <{address}> yet; try again"));
            }
        }
        let encrypted = match self
            .backend
            .sign_and_encrypt(SignAndEncryptRequest {
                signer_identity_id: sender.identity_id.clone(),
                recipients: recipients.to_vec(),
                message: prepared.to_vec(),
                add_autocrypt_header: true,
            })
            .await
        {
            Ok(encrypted) => encrypted,
            Err(SmtpInError::Temporary(error)) => {
                tracing::warn!(%error, "signing unavailable");
                return Err("451 4.3.0 Temporary failure, try again later".to_owned());
            }
            Err(error) => {
                tracing::warn!(%error, "signing refused");
                return Err("554 5.6.0 Message could not be signed and encrypted".to_owned());
            }
        };
        let request = EnqueueRequest {
            idempotency_key: hex::encode(rand::random::<[u8; 16]>()),
            origin: Origin::Submission as i32,
            account_id: account_id.to_owned(),
            sender_identity_id: sender.identity_id.clone(),
            reverse_path: message::normalize(&transaction.reverse_path),
            recipients: transaction
                .recipients
                .iter()
                .filter(|r| message::onion_of(&r.address).is_some())
                .map(enqueue_recipient)
                .collect(),
            message: encrypted,
            message_id: message_id.to_owned(),
            envelope_id: transaction.envelope_id.clone(),
            dsn_return: transaction.dsn_return,
            fan_out_immediately: false,
        };
        if let Err(error) = self.backend.enqueue(request).await {
            tracing::warn!(%error, "enqueue failed");
            return Err("451 4.3.0 Temporary failure, try again later".to_owned());
        }
        Ok(())
    }
}

#[derive(Default)]
struct State {
    /// TLS is up (after STARTTLS).
    secure: bool,
    greeted: bool,
    errors: u32,
    account: Option<AuthenticateResponse>,
    transaction: Option<Transaction>,
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

fn enqueue_recipient(recipient: &Recipient) -> RecipientRequest {
    RecipientRequest {
        address: recipient.address.clone(),
        notify: recipient.notify.clone(),
        original_recipient: recipient.orcpt.clone(),
    }
}

fn decode(text: &str) -> Option<Vec<u8>> {
    if text == "=" {
        return Some(Vec::new());
    }
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}
