//! One IMAP connection: the I/O loop around imap-next's sans-I/O server state machine.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use imap_next::imap_types::auth::AuthenticateData;
use imap_next::imap_types::core::{Tag, Text};
use imap_next::imap_types::response::{CommandContinuationRequest, Greeting, Status};
use imap_next::server::{Error as ProtocolError, Event, Options, Server};
use imap_next::{Interrupt, Io, State};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::broadcast;

use super::listen::Shared;
use super::session::{After, AuthStep, Out, Session};
use crate::mailstore::{AccountId, MailboxId};

/// A byte stream a session can run over: TCP, TLS over TCP, or an in-memory duplex in tests.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}

/// How the connection is protected, which decides whether LOGIN is allowed before STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS is active (implicit TLS, or after STARTTLS).
    Tls,
    /// Tor encrypts end to end; no TLS is needed (RFC 3501 §11.1's concern does not apply).
    Onion,
    /// Cleartext from a loopback peer: local clients and tests may log in without TLS.
    Loopback,
    /// Cleartext from the network: LOGINDISABLED until STARTTLS (RFC 3501 §6.2.3, §7.2.1).
    Cleartext,
}

/// What a connection knows about itself before the first command.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// Key for the per-connection login back-off (the peer address, or the identity for onion
    /// connections, which all come from tor's loopback address).
    pub connection_key: String,
    pub security: Security,
    /// Whether STARTTLS can be offered (a certificate is configured and TLS is not active).
    pub starttls: bool,
    /// For an identity's onion: the only account that may log in through it. `Some(None)` means
    /// the identity belongs to no hosted account, so every login fails.
    pub required_account: Option<Option<AccountId>>,
}

/// Runs one connection to its end. Errors only end this connection.
pub(crate) async fn run(shared: Arc<Shared>, stream: Box<dyn ByteStream>, info: ConnectionInfo) {
    let _open = shared.session_opened();
    let mut session = Session::new(shared.clone(), info);
    let mut stream = stream;
    let greeting = session.greeting();
    let mut server = Server::new(protocol_options(&shared), greeting);
    let mut buffer = vec![0u8; 64 * 1024];
    let mut watch: Option<broadcast::Receiver<MailboxId>> = None;
    let mut close_when_flushed = false;
    let mut starttls_when_flushed = false;
    let mut lines = LineGuard::new(shared.limits.max_line);
    let mut deferred: VecDeque<Event> = VecDeque::new();
    loop {
        let interrupt = match server.next() {
            Ok(event) => {
                if session.has_pending_output()
                    && !matches!(
                        event,
                        Event::GreetingSent { .. } | Event::ResponseSent { .. }
                    )
                {
                    // A pipelined command waits until the FETCH being streamed is complete,
                    // so responses never interleave.
                    deferred.push_back(event);
                    continue;
                }
                if close_when_flushed {
                    // Only the responses queued before closing still go out; commands that a
                    // client pipelined after LOGOUT or a BYE are not executed.
                    continue;
                }
                handle_event(&mut session, &mut server, event, &mut watch)
                    .await
                    .apply(&mut close_when_flushed, &mut starttls_when_flushed);
                close_if_asked(&mut session, &mut server, &mut close_when_flushed);
                continue;
            }
            Err(interrupt) => interrupt,
        };
        match interrupt {
            Interrupt::Io(Io::Output(bytes)) => {
                if stream.write_all(&bytes).await.is_err() || stream.flush().await.is_err() {
                    break;
                }
            }
            Interrupt::Io(Io::NeedMoreInput) => {
                // Everything queued has been written when imap-next asks for input.
                if close_when_flushed {
                    let _ = stream.shutdown().await;
                    break;
                }
                if session.has_pending_output() {
                    let slice = session.fetch_step().await;
                    enqueue_all(&mut server, slice);
                    continue;
                }
                if let Some(event) = deferred.pop_front() {
                    handle_event(&mut session, &mut server, event, &mut watch)
                        .await
                        .apply(&mut close_when_flushed, &mut starttls_when_flushed);
                    close_if_asked(&mut session, &mut server, &mut close_when_flushed);
                    continue;
                }
                if starttls_when_flushed {
                    starttls_when_flushed = false;
                    let Some(acceptor) = shared.tls.clone() else {
                        break;
                    };
                    match acceptor.accept(stream).await {
                        Ok(tls) => stream = Box::new(tls),
                        Err(error) => {
                            tracing::debug!(%error, "imap starttls handshake failed");
                            break;
                        }
                    }
                    session.tls_started();
                    // A fresh protocol state drops anything the client pipelined before the
                    // handshake (RFC 3501 §6.2.1: no commands may follow STARTTLS until TLS
                    // is up); its greeting is written to nobody.
                    server = fresh_server_without_greeting(&shared);
                    lines = LineGuard::new(shared.limits.max_line);
                    continue;
                }
                match read_or_wake(&mut stream, &mut buffer, &mut watch, &session, &shared).await {
                    Wake::Input(count) => {
                        if lines.feed(&buffer[..count]) {
                            server.enqueue_input(&buffer[..count]);
                        } else {
                            let text = format!(
                                "line too long (limit {} octets per command line)",
                                shared.limits.max_line
                            );
                            enqueue_all(&mut server, vec![Out::Status(bye(&text))]);
                            close_when_flushed = true;
                        }
                    }
                    Wake::Closed => break,
                    Wake::Timeout => {
                        enqueue_all(
                            &mut server,
                            vec![Out::Status(bye("autologout; idle for too long"))],
                        );
                        close_when_flushed = true;
                    }
                    Wake::Mailbox(id) => {
                        let updates = session.mailbox_changed(id).await;
                        enqueue_all(&mut server, updates);
                        close_if_asked(&mut session, &mut server, &mut close_when_flushed);
                    }
                    Wake::Lagged => {
                        let updates = session.resync_selected().await;
                        enqueue_all(&mut server, updates);
                        close_if_asked(&mut session, &mut server, &mut close_when_flushed);
                    }
                }
            }
            Interrupt::Error(error) => {
                let (outs, close) = session.protocol_error(&error, &shared.limits);
                enqueue_all(&mut server, outs);
                if close {
                    close_when_flushed = true;
                }
            }
        }
    }
    session.finish().await;
}

/// Ends the connection with a BYE when the session asks to.
fn close_if_asked(session: &mut Session, server: &mut Server, close: &mut bool) {
    if let Some(reason) = session.take_close_reason() {
        enqueue_all(server, vec![Out::Status(bye(reason))]);
        *close = true;
    }
}

enum Wake {
    Input(usize),
    Closed,
    Timeout,
    Mailbox(MailboxId),
    Lagged,
}

/// Waits for client bytes, the idle timeout, or (while IDLE) a change to the selected mailbox.
async fn read_or_wake(
    stream: &mut Box<dyn ByteStream>,
    buffer: &mut [u8],
    watch: &mut Option<broadcast::Receiver<MailboxId>>,
    session: &Session,
    shared: &Shared,
) -> Wake {
    let timeout = shared.limits.idle_timeout;
    let idling = session.is_idling();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            read = stream.read(buffer) => {
                return match read {
                    Ok(0) | Err(_) => Wake::Closed,
                    Ok(count) => Wake::Input(count),
                };
            }
            () = &mut deadline => return Wake::Timeout,
            changed = recv_watch(watch), if idling && watch.is_some() => {
                match changed {
                    Ok(id) if session.is_selected(id) => return Wake::Mailbox(id),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => return Wake::Lagged,
                    Err(broadcast::error::RecvError::Closed) => {
                        *watch = None;
                        continue;
                    }
                }
            }
        }
    }
}

async fn recv_watch(
    watch: &mut Option<broadcast::Receiver<MailboxId>>,
) -> Result<MailboxId, broadcast::error::RecvError> {
    match watch {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// What handling one event asks of the loop.
struct Next(After);

impl Next {
    fn apply(self, close: &mut bool, starttls: &mut bool) {
        match self.0 {
            After::Continue => {}
            After::Close => *close = true,
            After::StartTls => *starttls = true,
        }
    }
}

async fn handle_event(
    session: &mut Session,
    server: &mut Server,
    event: Event,
    watch: &mut Option<broadcast::Receiver<MailboxId>>,
) -> Next {
    match event {
        Event::GreetingSent { .. } | Event::ResponseSent { .. } => Next(After::Continue),
        Event::CommandReceived { command } => {
            let reply = session.handle(command).await;
            enqueue_all(server, reply.out);
            subscribe_once(session, watch);
            Next(reply.after)
        }
        Event::CommandAuthenticateReceived {
            command_authenticate,
        } => {
            let step = session
                .authenticate(
                    command_authenticate.tag,
                    command_authenticate.mechanism,
                    command_authenticate
                        .initial_response
                        .map(|secret| secret.declassify().to_vec()),
                )
                .await;
            finish_auth_step(server, step);
            subscribe_once(session, watch);
            Next(After::Continue)
        }
        Event::AuthenticateDataReceived { authenticate_data } => {
            let data = match authenticate_data {
                AuthenticateData::Continue(secret) => Some(secret.declassify().to_vec()),
                AuthenticateData::Cancel => None,
            };
            let step = session.authenticate_data(data).await;
            finish_auth_step(server, step);
            subscribe_once(session, watch);
            Next(After::Continue)
        }
        Event::IdleCommandReceived { tag } => {
            match session.idle_start(tag).await {
                Ok(updates) => {
                    // RFC 2177 §3: the continuation request says the server is idling.
                    let accept = CommandContinuationRequest::basic(None, "idling")
                        .expect("static continuation text is valid");
                    let _ = server.idle_accept(accept);
                    enqueue_all(server, updates);
                }
                Err(status) => {
                    let _ = server.idle_reject(status);
                }
            }
            Next(After::Continue)
        }
        Event::IdleDoneReceived => {
            let out = session.idle_done().await;
            enqueue_all(server, out);
            Next(After::Continue)
        }
    }
}

fn finish_auth_step(server: &mut Server, step: AuthStep) {
    match step {
        AuthStep::Continue => {
            // RFC 4616: PLAIN sends everything in one message; an empty challenge asks for it.
            let request = CommandContinuationRequest::base64(Vec::new());
            let _ = server.authenticate_continue(request);
        }
        AuthStep::Finish(status) => {
            let _ = server.authenticate_finish(status);
        }
    }
}

fn subscribe_once(session: &Session, watch: &mut Option<broadcast::Receiver<MailboxId>>) {
    if watch.is_none() {
        *watch = session.watch();
    }
}

fn enqueue_all(server: &mut Server, outs: Vec<Out>) {
    for out in outs {
        match out {
            Out::Data(data) => {
                server.enqueue_data(data);
            }
            Out::Status(status) => {
                server.enqueue_status(status);
            }
        }
    }
}

/// Bounds the length of command lines (RFC 3501 §4.3 and RFC 7162 §4 leave the limit to the
/// server; Dovecot also uses 64 KiB). It follows literal announcements (`{n}` / `{n+}` at the
/// end of a line, RFC 3501 §4.3, RFC 7888) so that literal data, which may be long and have no
/// line breaks, is not counted; imap-next bounds literals itself.
struct LineGuard {
    max_line: u32,
    line_length: u32,
    /// The last bytes of the current line, enough to recognise `{4294967295+}\r`.
    tail: Vec<u8>,
    literal_left: u64,
}

impl LineGuard {
    fn new(max_line: u32) -> Self {
        LineGuard {
            max_line,
            line_length: 0,
            tail: Vec::with_capacity(16),
            literal_left: 0,
        }
    }

    /// Returns false when a line goes over the limit.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        let mut index = 0;
        while index < bytes.len() {
            if self.literal_left > 0 {
                let skip = (self.literal_left.min((bytes.len() - index) as u64)) as usize;
                self.literal_left -= skip as u64;
                index += skip;
                continue;
            }
            let byte = bytes[index];
            index += 1;
            if byte == b'\n' {
                self.literal_left = literal_announced(&self.tail).unwrap_or(0);
                self.line_length = 0;
                self.tail.clear();
                continue;
            }
            self.line_length = self.line_length.saturating_add(1);
            if self.line_length > self.max_line {
                return false;
            }
            if self.tail.len() == 16 {
                self.tail.remove(0);
            }
            self.tail.push(byte);
        }
        true
    }
}

/// The length of a literal announced at the end of a line (`{n}` or `{n+}`, optional CR).
fn literal_announced(tail: &[u8]) -> Option<u64> {
    let tail = tail.strip_suffix(b"\r").unwrap_or(tail);
    let inner = tail.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|b| *b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    std::str::from_utf8(digits).ok()?.parse().ok()
}

pub(crate) fn bye(text: &str) -> Status<'static> {
    Status::bye(None, text.to_owned()).expect("bye text is valid")
}

fn protocol_options(shared: &Shared) -> Options {
    let mut options = Options::default();
    // Clients typed by hand (and some scripts) end lines with a bare LF; accepting it costs
    // nothing and RFC 3501 §2.2 does not forbid being lenient.
    options.crlf_relaxed = true;
    options.max_literal_size = shared.limits.max_message_size;
    // imap-next bounds the whole command including its literals; the lines between literals
    // are kept to `max_line` by `LineGuard` before the bytes reach imap-next.
    options.max_command_size = shared
        .limits
        .max_message_size
        .saturating_add(shared.limits.max_line);
    // imap-next sends this as the text of a tagged BAD before the literal is sent (RFC 3501
    // §7.5); it takes text only, so no `[TOOBIG]` code (RFC 4469) can go with it.
    let _ = options.set_literal_reject_text(format!(
        "literal exceeds the maximum message size of {} octets",
        shared.limits.max_message_size
    ));
    let _ = options.set_literal_accept_text("ready for literal data".to_owned());
    options
}

fn fresh_server_without_greeting(shared: &Shared) -> Server {
    let greeting = Greeting::ok(None, "unused").expect("static greeting is valid");
    let mut server = Server::new(protocol_options(shared), greeting);
    // Drain the greeting imap-next always queues; after STARTTLS none is sent (RFC 3501 §6.2.1).
    loop {
        match server.next() {
            Ok(Event::GreetingSent { .. }) => break,
            Ok(_) | Err(Interrupt::Io(Io::Output(_))) => continue,
            Err(_) => break,
        }
    }
    server
}

/// The tag at the start of a rejected command, when there is a valid one, so BAD can be tagged.
pub(crate) fn tag_of(discarded: &[u8]) -> Option<Tag<'static>> {
    let end = discarded
        .iter()
        .position(|byte| *byte == b' ' || *byte == b'\r' || *byte == b'\n')
        .unwrap_or(discarded.len());
    let candidate = &discarded[..end];
    if candidate.is_empty() || candidate.len() > 64 {
        return None;
    }
    Tag::try_from(candidate.to_vec()).ok()
}

pub(crate) fn text(value: &str) -> Text<'static> {
    let cleaned: String = value
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    Text::try_from(cleaned).unwrap_or_else(|_| Text::try_from("error".to_owned()).unwrap())
}

/// What imap-next reported, for the session to answer.
pub(crate) fn describe(error: &ProtocolError) -> &'static str {
    match error {
        ProtocolError::ExpectedCrlfGotLf { .. } => "expected CRLF",
        ProtocolError::MalformedMessage { .. } => "malformed command",
        ProtocolError::LiteralTooLong { .. } => "literal too long",
        ProtocolError::CommandTooLong { .. } => "line too long",
    }
}

pub(crate) const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30 * 60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_guard_skips_literal_data() {
        let mut guard = LineGuard::new(16);
        assert!(guard.feed(b"a APPEND X {40}\r\n"));
        // Forty octets of literal without a line break do not count as a line…
        assert!(guard.feed(&[b'x'; 40]));
        assert!(guard.feed(b"\r\nb NOOP\r\n"));
        // …a long line does, even when it arrives in pieces.
        assert!(guard.feed(b"c NOOP 12345"));
        assert!(!guard.feed(b"67890"));
    }

    #[test]
    fn literal_announcements() {
        assert_eq!(literal_announced(b"{12}\r"), Some(12));
        assert_eq!(literal_announced(b"{12+}"), Some(12));
        assert_eq!(literal_announced(b"NOOP"), None);
        assert_eq!(literal_announced(b"{x}"), None);
    }

    #[test]
    fn tags_of_rejected_commands() {
        assert_eq!(
            tag_of(b"a1 FOO\r\n").map(|t| t.as_ref().to_owned()),
            Some("a1".to_owned())
        );
        assert!(tag_of(b"\r\n").is_none());
        assert!(tag_of(b"+bad FOO").is_none());
    }
}
