//! One IMAP connection: the I/O loop around imap-next's sans-I/O server state machine.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use imap_next::imap_types::auth::AuthenticateData;
use imap_next::imap_types::response::{CommandContinuationRequest, Greeting};
use imap_next::server::{Event, Options, Server};
use imap_next::{Interrupt, Io, State};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;

use super::context::{ByteStream, ConnectionInfo, Limits, ListenerScope, Shared};
use super::reply::{After, AuthStep, Out, bye};
use super::session::Session;
use crate::mailstore::MailboxId;

/// Time a TLS handshake after STARTTLS may take.
const STARTTLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs one connection to its end. Errors only end this connection.
pub(crate) async fn run(
    shared: Arc<Shared>,
    scope: ListenerScope,
    stream: Box<dyn ByteStream>,
    info: ConnectionInfo,
) {
    let mut stream = stream;
    let limits = &shared.limits;
    let Some(login_wait) = scope.wait_for_login(limits.max_pre_login_connections) else {
        // RFC 3501 §7.1.5: a server may greet with BYE and close. The limit is the listener's,
        // so it says nothing about any other listener (issue 18, item 3; issue 19).
        let refusal = b"* BYE too many connections waiting to log in; try again later\r\n";
        if write_all_within(&mut stream, refusal, limits.write_timeout).await {
            let _ = tokio::time::timeout(limits.write_timeout, stream.shutdown()).await;
        }
        return;
    };
    let _open = shared.session_opened();
    // Before login the timeout runs from here, not from the last byte: a peer that trickles
    // a byte now and then (slowloris) must not hold a pre-login slot for ever.
    let login_deadline = tokio::time::Instant::now() + limits.pre_login_timeout;
    let mut session = Session::new(shared.clone(), scope, info, Some(login_wait));
    let greeting = session.greeting();
    let mut server = Server::new(protocol_options(&shared), greeting);
    let mut buffer = vec![0u8; 64 * 1024];
    let mut watch: Option<broadcast::Receiver<MailboxId>> = None;
    let mut close_when_flushed = false;
    let mut starttls_when_flushed = false;
    let mut lines = LineGuard::before_login(limits);
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
                if !write_all_within(&mut stream, &bytes, limits.write_timeout).await {
                    tracing::debug!("imap write failed or timed out");
                    break;
                }
            }
            Interrupt::Io(Io::NeedMoreInput) => {
                // Everything queued has been written when imap-next asks for input.
                if close_when_flushed {
                    let _ = tokio::time::timeout(limits.write_timeout, stream.shutdown()).await;
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
                    let handshake =
                        tokio::time::timeout(STARTTLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(tls)) => stream = Box::new(tls),
                        Ok(Err(error)) => {
                            tracing::debug!(%error, "imap starttls handshake failed");
                            break;
                        }
                        Err(_) => {
                            tracing::debug!("imap starttls handshake timed out");
                            break;
                        }
                    }
                    session.tls_started();
                    // A fresh protocol state drops anything the client pipelined before the
                    // handshake (RFC 3501 §6.2.1: no commands may follow STARTTLS until TLS
                    // is up); its greeting is written to nobody.
                    server = fresh_server_without_greeting(&shared);
                    lines = LineGuard::before_login(limits);
                    continue;
                }
                let wake = read_or_wake(
                    &mut stream,
                    &mut buffer,
                    &mut watch,
                    &session,
                    &shared,
                    login_deadline,
                );
                match wake.await {
                    Wake::Input(count) => {
                        if session.is_authenticated() {
                            lines.logged_in(limits);
                        }
                        match lines.feed(&buffer[..count]) {
                            Verdict::Pass => server.enqueue_input(&buffer[..count]),
                            Verdict::LineTooLong => {
                                let text = format!(
                                    "line too long (limit {} octets per command line)",
                                    limits.max_line
                                );
                                enqueue_all(&mut server, vec![Out::Status(bye(&text))]);
                                close_when_flushed = true;
                            }
                            Verdict::LiteralBeforeLogin => {
                                let text = format!(
                                    "literal too large before login (limit {} octets); log in first",
                                    limits.literal_before_login()
                                );
                                enqueue_all(&mut server, vec![Out::Status(bye(&text))]);
                                close_when_flushed = true;
                            }
                        }
                    }
                    Wake::Closed => break,
                    Wake::Timeout => {
                        let login_late = !session.is_authenticated()
                            && tokio::time::Instant::now() >= login_deadline;
                        let text = if login_late {
                            format!(
                                "not logged in within {:?} of connecting",
                                limits.pre_login_timeout
                            )
                        } else {
                            "autologout; idle for too long".to_owned()
                        };
                        enqueue_all(&mut server, vec![Out::Status(bye(&text))]);
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

/// Waits for client bytes, the idle timeout (before login also `login_deadline`), or (while
/// IDLE) a change to the selected mailbox.
async fn read_or_wake(
    stream: &mut Box<dyn ByteStream>,
    buffer: &mut [u8],
    watch: &mut Option<broadcast::Receiver<MailboxId>>,
    session: &Session,
    shared: &Shared,
    login_deadline: tokio::time::Instant,
) -> Wake {
    let idle = tokio::time::Instant::now() + shared.limits.idle_timeout;
    let deadline_at = if session.is_authenticated() {
        idle
    } else {
        idle.min(login_deadline)
    };
    let idling = session.is_idling();
    let deadline = tokio::time::sleep_until(deadline_at);
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

/// Writes all of `bytes` and flushes, giving up when a write makes no progress for `timeout`
/// (a peer that stops reading). Progress resets the clock, so a large FETCH over a slow tor
/// circuit still goes out. Returns false when the connection is to be dropped.
async fn write_all_within(
    stream: &mut Box<dyn ByteStream>,
    bytes: &[u8],
    timeout: Duration,
) -> bool {
    let mut written = 0;
    while written < bytes.len() {
        match tokio::time::timeout(timeout, stream.write(&bytes[written..])).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return false,
            Ok(Ok(count)) => written += count,
        }
    }
    matches!(
        tokio::time::timeout(timeout, stream.flush()).await,
        Ok(Ok(()))
    )
}

/// What [`LineGuard::feed`] found.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Pass,
    /// A command line (or, before login, a whole command) went over `max_line`.
    LineTooLong,
    /// A literal over `pre_login_literal` was announced before login.
    LiteralBeforeLogin,
}

/// Bounds what a client may send before imap-next sees it (RFC 3501 §4.3 and RFC 7162 §4 leave
/// the limits to the server; Dovecot also uses 64 KiB lines). It follows literal announcements
/// (`{n}` / `{n+}` at the end of a line, RFC 3501 §4.3, RFC 7888) so that the data of an
/// accepted literal, which may be long and have no line breaks, is not counted as a line.
///
/// A literal imap-next refuses (larger than its `max_literal_size`) is not skipped: whatever
/// the client sends next is counted as line data, so announcing a huge literal never lifts the
/// line limit. Before login, literals over `pre_login_literal` end the connection (a
/// non-synchronizing one cannot be refused any other way, RFC 7888 §4, and nobody needs one to
/// log in), and a whole command, its literals included, is held to `max_line`.
struct LineGuard {
    max_line: u32,
    /// Largest literal whose data is let through uncounted.
    max_literal: u64,
    before_login: bool,
    line_length: u32,
    /// Octets of the current command so far, lines and literal data (bounded before login).
    command_length: u64,
    /// The last bytes of the current line, enough to recognise `{4294967295+}\r`.
    tail: Vec<u8>,
    literal_left: u64,
}

impl LineGuard {
    fn before_login(limits: &Limits) -> Self {
        LineGuard {
            max_line: limits.max_line,
            max_literal: u64::from(limits.literal_before_login()),
            before_login: true,
            line_length: 0,
            command_length: 0,
            tail: Vec::with_capacity(16),
            literal_left: 0,
        }
    }

    /// After login: literals up to the message size limit, as imap-next accepts them.
    fn logged_in(&mut self, limits: &Limits) {
        self.before_login = false;
        self.max_literal = u64::from(limits.max_message_size);
    }

    fn feed(&mut self, bytes: &[u8]) -> Verdict {
        let mut index = 0;
        while index < bytes.len() {
            if self.literal_left > 0 {
                let skip = self.literal_left.min((bytes.len() - index) as u64);
                self.literal_left -= skip;
                self.command_length = self.command_length.saturating_add(skip);
                index += skip as usize;
                if self.before_login && self.command_length > u64::from(self.max_line) {
                    return Verdict::LineTooLong;
                }
                continue;
            }
            let byte = bytes[index];
            index += 1;
            self.command_length = self.command_length.saturating_add(1);
            if byte == b'\n' {
                match literal_announced(&self.tail) {
                    Some(length) if length > self.max_literal => {
                        if self.before_login {
                            return Verdict::LiteralBeforeLogin;
                        }
                        // Refused by imap-next: what follows is not literal data.
                        self.literal_left = 0;
                        self.command_length = 0;
                    }
                    Some(length) => self.literal_left = length,
                    None => self.command_length = 0,
                }
                self.line_length = 0;
                self.tail.clear();
                continue;
            }
            self.line_length = self.line_length.saturating_add(1);
            if self.line_length > self.max_line {
                return Verdict::LineTooLong;
            }
            if self.before_login && self.command_length > u64::from(self.max_line) {
                return Verdict::LineTooLong;
            }
            if self.tail.len() == 16 {
                self.tail.remove(0);
            }
            self.tail.push(byte);
        }
        Verdict::Pass
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

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(max_line: u32, pre_login_literal: u32, max_message_size: u32) -> LineGuard {
        LineGuard::before_login(&Limits {
            max_line,
            pre_login_literal,
            max_message_size,
            ..Limits::default()
        })
    }

    fn logged_in_guard(max_line: u32, max_message_size: u32) -> LineGuard {
        let limits = Limits {
            max_line,
            max_message_size,
            ..Limits::default()
        };
        let mut guard = LineGuard::before_login(&limits);
        guard.logged_in(&limits);
        guard
    }

    #[test]
    fn line_guard_skips_literal_data() {
        let mut guard = logged_in_guard(16, 1000);
        assert_eq!(guard.feed(b"a APPEND X {40}\r\n"), Verdict::Pass);
        // Forty octets of literal without a line break do not count as a line…
        assert_eq!(guard.feed(&[b'x'; 40]), Verdict::Pass);
        assert_eq!(guard.feed(b"\r\nb NOOP\r\n"), Verdict::Pass);
        // …a long line does, even when it arrives in pieces.
        assert_eq!(guard.feed(b"c NOOP 12345"), Verdict::Pass);
        assert_eq!(guard.feed(b"67890"), Verdict::LineTooLong);
    }

    #[test]
    fn a_refused_literal_does_not_lift_the_line_limit() {
        let mut guard = logged_in_guard(32, 100);
        // imap-next refuses {5000}; what the client sends next is line data again.
        assert_eq!(guard.feed(b"a APPEND X {5000}\r\n"), Verdict::Pass);
        assert_eq!(guard.feed(&[b'x'; 40]), Verdict::LineTooLong);
    }

    #[test]
    fn before_login_literals_and_commands_are_small() {
        let mut guard = guard(64, 8, 1000);
        assert_eq!(
            guard.feed(b"a LOGIN {5}\r\nalice {6+}\r\nsecret\r\n"),
            Verdict::Pass
        );
        assert_eq!(guard.feed(b"b LOGIN {9+}\r\n"), Verdict::LiteralBeforeLogin);
        // Many small literals in one command add up to the line limit.
        let mut guard = guard_with_chain();
        let mut verdict = Verdict::Pass;
        for _ in 0..20 {
            verdict = guard.feed(b"12345678 {8+}\r\n");
            if verdict != Verdict::Pass {
                break;
            }
        }
        assert_eq!(verdict, Verdict::LineTooLong);
    }

    fn guard_with_chain() -> LineGuard {
        let mut chain = guard(64, 8, 1000);
        assert_eq!(chain.feed(b"a X {8+}\r\n"), Verdict::Pass);
        chain
    }

    #[test]
    fn literal_announcements() {
        assert_eq!(literal_announced(b"{12}\r"), Some(12));
        assert_eq!(literal_announced(b"{12+}"), Some(12));
        assert_eq!(literal_announced(b"NOOP"), None);
        assert_eq!(literal_announced(b"{x}"), None);
    }
}
