//! The gateway domain's MX (RFC 5321 server side; commands parsed by smtp-proto).
//!
//! RCPT is accepted only for a live alias at the gateway domain whose identity may still use the
//! gateway; every other address, unknown, revoked, of a disabled identity or at another domain
//! (a relay attempt), gets the same bytes back, so nobody can probe which aliases exist or once
//! existed. After DATA the message is checked with mail-auth (SPF for the MAIL FROM or HELO,
//! DKIM, DMARC), the results are recorded in an Authentication-Results field (RFC 8601; any such
//! field that came with the message is dropped first, §5), the configured DMARC policy is
//! applied, and the message is delivered into each alias's identity: encrypted to the identity's
//! key when the account keeps its own key, else handed to imap, which stores it encrypted at
//! rest. The gateway never bounces: every refusal happens inside the session.
//!
//! smtp-in's engine serves onion MXs and submission and is bound to their backend; this MX has
//! other rules (aliases, mail-auth, no AUTH), and a service does not depend on another's crate,
//! so the small command loop is written here. Its I/O is onionpost-smtp-server's, the same as
//! smtp-in's: line and DATA readers (a text line over 998 characters, a bare CR or a bare LF
//! refuses the message, RFC 5321 §4.5.3.1.6 and §2.3.8), read and write timeouts, and the
//! accept loop with its session limit.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{AuthenticatedMessage, AuthenticationResults, DmarcResult, MessageAuthenticator};
use onionpost_proto::imap::v1::{DeliverRequest, Mailbox, Refusal, SenderVerification};
use onionpost_proto::keys::v1::KeyCustody;
use onionpost_runtime::config::{DmarcPolicy, HostPort};
use onionpost_smtp_server::{
    Connection, DataLimits, DataOutcome, Line, MemoryBudget, SessionLimit, TIMEOUT, read_data,
};
use smtp_proto::Request;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::store::{AliasRecord, Counter};
use crate::{GatewayError, GatewayService, alias};
use onionpost_runtime::rate::RateLimiter;

/// The one refusal for every recipient that is not a live alias here.
pub const RECIPIENT_REJECTED: &str = "550 5.1.1 Recipient address rejected";
/// The refusal of a message whose sender domain's DMARC policy it fails.
pub const DMARC_REJECTED: &str =
    "550 5.7.1 Message rejected: it fails the DMARC policy of its From domain";
const TEMPORARY: &str = "451 4.3.0 Temporary failure, try again later";
const MAX_LINE: usize = smtp_proto::request::receiver::MAX_LINE_LENGTH;
const MAX_RECIPIENTS: usize = 50;
const MAX_ERRORS: u32 = 10;
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
const DATA_TIMEOUT: Duration = Duration::from_secs(180);
/// The longest a write of replies may take: a peer that never reads is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Sessions open at once; beyond it a new connection gets 421.
const MAX_SESSIONS: usize = 500;
/// Message text all sessions may hold in memory at once (never below the size limit); a
/// message beyond it is refused with a temporary 452, and the sending MTA tries again.
const MAX_BUFFERED_BYTES: u64 = 256 * 1024 * 1024;

/// Everything an inbound session needs.
pub struct Inbound {
    pub service: GatewayService,
    pub resolver: Arc<MessageAuthenticator>,
    pub dmarc_policy: DmarcPolicy,
    pub max_message_bytes: u64,
    /// Messages per alias per hour.
    pub rate: RateLimiter,
    sessions: SessionLimit,
    /// Message text all sessions may hold in memory at once.
    memory: MemoryBudget,
    /// The rspamd worker that scores each message (`gateway.rspamd`), if any.
    rspamd: Option<HostPort>,
}

impl Inbound {
    pub fn new(
        service: GatewayService,
        resolver: Arc<MessageAuthenticator>,
        dmarc_policy: DmarcPolicy,
        max_message_bytes: u64,
        per_hour: u32,
    ) -> Self {
        Inbound {
            service,
            resolver,
            dmarc_policy,
            max_message_bytes,
            rate: RateLimiter::per_hour(per_hour),
            sessions: SessionLimit::new(MAX_SESSIONS),
            memory: MemoryBudget::new(MAX_BUFFERED_BYTES.max(max_message_bytes)),
            rspamd: None,
        }
    }

    /// Scores every message with the rspamd worker at `at`.
    pub fn with_rspamd(mut self, at: Option<HostPort>) -> Self {
        self.rspamd = at;
        self
    }
}

/// Accepts connections until `stop`, one session task each, within the MX's session limit.
pub async fn serve(listener: TcpListener, inbound: Arc<Inbound>, stop: CancellationToken) {
    let limit = inbound.sessions.clone();
    onionpost_smtp_server::serve(listener, limit, stop, move |stream, peer| {
        run(inbound.clone(), stream, peer.ip())
    })
    .await;
}

#[derive(Default)]
struct Transaction {
    mail_from: String,
    recipients: Vec<AliasRecord>,
}

#[derive(Default)]
struct State {
    helo: Option<String>,
    errors: u32,
    transaction: Option<Transaction>,
}

/// Runs one session to its end.
pub async fn run<S>(inbound: Arc<Inbound>, stream: S, peer: IpAddr)
where
    S: AsyncRead + AsyncWrite + Send,
{
    let mut io = Connection::new(stream, WRITE_TIMEOUT);
    if let Err(error) = drive(&inbound, &mut io, peer).await {
        tracing::debug!(%error, "gateway mx session ended by i/o error");
    }
    io.finish().await;
}

async fn drive<S: AsyncRead + AsyncWrite>(
    inbound: &Inbound,
    io: &mut Connection<S>,
    peer: IpAddr,
) -> std::io::Result<()> {
    let domain = inbound.service.domain().to_owned();
    io.reply(&format!("220 {domain} ESMTP"));
    let mut state = State::default();
    loop {
        let line = match io.line(MAX_LINE, COMMAND_TIMEOUT).await? {
            Line::Data(line) => line,
            Line::Eof => return Ok(()),
            Line::Timeout => {
                io.reply(TIMEOUT);
                return Ok(());
            }
            Line::TooLong { .. } => {
                if fail(io, &mut state, "500 5.5.2 Line too long") {
                    return Ok(());
                }
                continue;
            }
        };
        let request = match Request::parse(&mut line.iter()) {
            Ok(request) => request.into_owned(),
            Err(smtp_proto::Error::UnknownCommand) => {
                if fail(io, &mut state, "500 5.5.1 Command unrecognized") {
                    return Ok(());
                }
                continue;
            }
            Err(_) => {
                if fail(io, &mut state, "501 5.5.2 Syntax error") {
                    return Ok(());
                }
                continue;
            }
        };
        let close = match request {
            Request::Ehlo { host } => {
                state.helo = Some(host);
                state.transaction = None;
                io.reply(&format!("250-{domain}"));
                io.reply("250-PIPELINING");
                io.reply(&format!("250-SIZE {}", inbound.max_message_bytes));
                io.reply("250-8BITMIME");
                io.reply("250 ENHANCEDSTATUSCODES");
                false
            }
            Request::Helo { host } => {
                state.helo = Some(host);
                state.transaction = None;
                io.reply(&format!("250 {domain}"));
                false
            }
            Request::Mail { from } => {
                if state.helo.is_none() {
                    fail(io, &mut state, "503 5.5.1 Send EHLO first")
                } else if state.transaction.is_some() {
                    fail(io, &mut state, "503 5.5.1 Nested MAIL command")
                } else if from.size as u64 > inbound.max_message_bytes {
                    fail(
                        io,
                        &mut state,
                        "552 5.3.4 Message size exceeds fixed maximum message size",
                    )
                } else {
                    state.transaction = Some(Transaction {
                        mail_from: alias::normalize(&from.address),
                        recipients: Vec::new(),
                    });
                    io.reply("250 2.1.0 Sender OK");
                    false
                }
            }
            Request::Rcpt { to } => rcpt(inbound, io, &mut state, &to.address).await,
            Request::Data => data(inbound, io, &mut state, peer).await?,
            Request::Rset => {
                state.transaction = None;
                io.reply("250 2.0.0 OK");
                false
            }
            Request::Noop { .. } => {
                io.reply("250 2.0.0 OK");
                false
            }
            Request::Vrfy { .. } => {
                io.reply("252 2.5.0 Cannot verify the address");
                false
            }
            Request::Help { .. } => {
                io.reply("214 2.0.0 See RFC 5321");
                false
            }
            Request::Quit => {
                io.reply("221 2.0.0 Bye");
                true
            }
            _ => fail(io, &mut state, "502 5.5.1 Command not implemented"),
        };
        if close {
            return Ok(());
        }
    }
}

/// Answers an error and counts it; true when the session must close.
fn fail<S: AsyncRead + AsyncWrite>(io: &mut Connection<S>, state: &mut State, reply: &str) -> bool {
    io.reply(reply);
    state.errors += 1;
    if state.errors >= MAX_ERRORS {
        io.reply("421 4.7.0 Too many errors, closing connection");
        return true;
    }
    false
}

async fn rcpt<S: AsyncRead + AsyncWrite>(
    inbound: &Inbound,
    io: &mut Connection<S>,
    state: &mut State,
    address: &str,
) -> bool {
    let Some(transaction) = &state.transaction else {
        return fail(io, state, "503 5.5.1 Need MAIL before RCPT");
    };
    if transaction.recipients.len() >= MAX_RECIPIENTS {
        return fail(io, state, "452 4.5.3 Too many recipients");
    }
    let record = match live_alias(inbound, address).await {
        Ok(record) => record,
        Err(error) => {
            // Its text may name the alias: debug only.
            tracing::warn!("alias lookup failed");
            tracing::debug!(%error, "alias lookup failed");
            return fail(io, state, TEMPORARY);
        }
    };
    let Some(record) = record else {
        inbound.service.count(Counter::InboundRefused).await;
        return fail(io, state, RECIPIENT_REJECTED);
    };
    if !inbound.rate.check(&record.local_part) {
        inbound.service.count(Counter::InboundRefused).await;
        return fail(
            io,
            state,
            "450 4.7.1 Too much mail for this recipient, try again later",
        );
    }
    if let Some(transaction) = &mut state.transaction
        && !transaction
            .recipients
            .iter()
            .any(|known| known.local_part == record.local_part)
    {
        transaction.recipients.push(record);
    }
    io.reply("250 2.1.5 Recipient OK");
    false
}

/// The live alias behind `address`, when its identity may still use the gateway.
async fn live_alias(inbound: &Inbound, address: &str) -> Result<Option<AliasRecord>, GatewayError> {
    let service = &inbound.service;
    let Some(local) = alias::local_part_of(address, service.domain()) else {
        return Ok(None);
    };
    let Some(record) = service.store().alias(&local).await? else {
        return Ok(None);
    };
    if !record.is_live() {
        return Ok(None);
    }
    match service.backend().identity(&record.identity_id).await {
        Ok(identity) if identity.gateway_allowed => Ok(Some(record)),
        Ok(_) | Err(GatewayError::NotFound(_)) => Ok(None),
        Err(error) => Err(error),
    }
}

/// DATA; true when the session must close.
async fn data<S: AsyncRead + AsyncWrite>(
    inbound: &Inbound,
    io: &mut Connection<S>,
    state: &mut State,
    peer: IpAddr,
) -> std::io::Result<bool> {
    let Some(transaction) = state.transaction.take() else {
        return Ok(fail(io, state, "503 5.5.1 Need MAIL before DATA"));
    };
    if transaction.recipients.is_empty() {
        state.transaction = Some(transaction);
        return Ok(fail(io, state, "554 5.5.1 No valid recipients"));
    }
    io.reply("354 Start mail input; end with <CRLF>.<CRLF>");
    let limits = DataLimits {
        max_message_bytes: inbound.max_message_bytes,
        timeout: DATA_TIMEOUT,
    };
    // Held until the reply is given.
    let mut grant = inbound.memory.grant();
    let body = match read_data(io, &limits, &mut grant).await? {
        DataOutcome::Message(body) => body,
        DataOutcome::Refused(refusal) => {
            inbound.service.count(Counter::InboundRefused).await;
            io.reply(refusal.reply());
            return Ok(false);
        }
        DataOutcome::Eof => return Ok(true),
        DataOutcome::Timeout => {
            io.reply(TIMEOUT);
            return Ok(true);
        }
    };
    let helo = state.helo.clone().unwrap_or_default();
    let reply = receive(inbound, &transaction, &helo, peer, &body).await;
    let counter = if reply.starts_with('2') {
        Counter::InboundAccepted
    } else {
        Counter::InboundRefused
    };
    inbound.service.count(counter).await;
    io.reply(&reply);
    Ok(false)
}

/// What the authentication checks found.
pub struct Checked {
    /// The Authentication-Results field, with its CRLF.
    pub header: String,
    /// `spf=pass dkim=pass dmarc=pass`, for the reader.
    pub summary: String,
    pub dmarc_failed: bool,
    /// The sender domain's own policy (p=).
    pub domain_policy: Policy,
}

/// SPF, DKIM and DMARC for one message.
pub async fn check(
    resolver: &MessageAuthenticator,
    authserv_id: &str,
    message: &AuthenticatedMessage<'_>,
    helo: &str,
    mail_from: &str,
    peer: IpAddr,
) -> Checked {
    let dkim = resolver.verify_dkim(message).await;
    let spf = if mail_from.is_empty() {
        resolver
            .verify_spf(SpfParameters::verify_ehlo(peer, helo, authserv_id))
            .await
    } else {
        resolver
            .verify_spf(SpfParameters::verify_mail_from(
                peer,
                helo,
                authserv_id,
                mail_from,
            ))
            .await
    };
    let mail_from_domain = mail_from
        .rsplit_once('@')
        .map_or(helo, |(_, domain)| domain);
    let dmarc = resolver
        .verify_dmarc(DmarcParameters::new(message, &dkim, mail_from_domain, &spf))
        .await;
    let from_domain = message
        .from
        .first()
        .and_then(|from| from.rsplit_once('@'))
        .map_or("", |(_, domain)| domain);
    let header = AuthenticationResults::new(authserv_id)
        .with_dkim_results(&dkim, from_domain)
        .with_spf_mailfrom_result(&spf, peer, mail_from, helo)
        .with_dmarc_result(&dmarc)
        .to_header();
    // Fail: the From domain publishes a record and neither an aligned SPF nor an aligned DKIM
    // pass was found (a temporary DNS error is not a failure).
    let dmarc_result = dmarc.result();
    let dmarc_failed = matches!(dmarc_result, DmarcResult::Fail(_));
    let dkim_word = if dkim.is_empty() {
        "none".to_owned()
    } else if dkim
        .iter()
        .any(|output| matches!(output.result(), mail_auth::DkimResult::Pass))
    {
        "pass".to_owned()
    } else {
        "fail".to_owned()
    };
    let dmarc_word = match dmarc_result {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    };
    let summary = format!(
        "spf={} dkim={dkim_word} dmarc={dmarc_word}",
        spf.result().to_string().to_ascii_lowercase()
    );
    Checked {
        header,
        summary,
        dmarc_failed,
        domain_policy: dmarc.policy(),
    }
}

/// After DATA: check, apply the DMARC policy, deliver to each alias's identity.
async fn receive(
    inbound: &Inbound,
    transaction: &Transaction,
    helo: &str,
    peer: IpAddr,
    body: &[u8],
) -> String {
    let Some(message) = AuthenticatedMessage::parse(body) else {
        return "550 5.6.0 Malformed message".to_owned();
    };
    let service = &inbound.service;
    let checked = check(
        &inbound.resolver,
        service.domain(),
        &message,
        helo,
        &transaction.mail_from,
        peer,
    )
    .await;
    let mut mailbox = Mailbox::Inbox;
    if checked.dmarc_failed {
        service.count(Counter::InboundDmarcFailed).await;
        let action = match inbound.dmarc_policy {
            DmarcPolicy::Follow => match checked.domain_policy {
                Policy::Reject => DmarcPolicy::Reject,
                Policy::Quarantine => DmarcPolicy::Quarantine,
                Policy::None | Policy::Unspecified => DmarcPolicy::Accept,
            },
            fixed => fixed,
        };
        match action {
            DmarcPolicy::Reject => return DMARC_REJECTED.to_owned(),
            DmarcPolicy::Quarantine => mailbox = Mailbox::Quarantine,
            DmarcPolicy::Accept | DmarcPolicy::Follow => {}
        }
    }
    let spam_status = match &inbound.rspamd {
        Some(at) => {
            let recipients: Vec<String> = transaction
                .recipients
                .iter()
                .map(|record| format!("{}@{}", record.local_part, service.domain()))
                .collect();
            let envelope = crate::rspamd::Envelope {
                peer,
                helo,
                mail_from: &transaction.mail_from,
                recipients: recipients.iter().map(String::as_str).collect(),
            };
            match crate::rspamd::scan(at, &envelope, body).await {
                Ok(verdict) => {
                    if verdict.is_spam() {
                        service.count(Counter::InboundSpam).await;
                        // Quarantine (a DMARC verdict) stays where it is.
                        if mailbox == Mailbox::Inbox {
                            mailbox = Mailbox::Junk;
                        }
                    }
                    Some(verdict.header_value())
                }
                Err(error) => {
                    tracing::warn!("rspamd unavailable: message taken unscored");
                    tracing::debug!(%error, "rspamd unavailable");
                    Some("Unchecked (rspamd unavailable)".to_owned())
                }
            }
        }
        None => None,
    };
    let mut stamped = checked.header.into_bytes();
    if let Some(status) = spam_status {
        stamped.extend_from_slice(format!("X-Spam-Status: {status}\r\n").as_bytes());
    }
    stamped.extend_from_slice(&without_verdict_fields(body));

    // One delivery per identity, whatever aliases of it were named.
    let mut identities: BTreeMap<&str, &AliasRecord> = BTreeMap::new();
    for record in &transaction.recipients {
        identities.entry(&record.identity_id).or_insert(record);
    }
    let mut worst: Option<String> = None;
    for record in identities.values() {
        let reply = deliver_to(inbound, record, mailbox, &stamped, &checked.summary).await;
        if !reply.starts_with('2') && worst.as_ref().is_none_or(|w| w.starts_with('5')) {
            worst = Some(reply);
        }
    }
    match worst {
        Some(reply) => reply,
        None => {
            for record in &transaction.recipients {
                if let Err(error) = service
                    .store()
                    .touch_alias(&record.local_part, crate::service::now_ms())
                    .await
                {
                    tracing::warn!("alias use not recorded");
                    tracing::debug!(%error, "alias use not recorded");
                }
            }
            "250 2.0.0 Message accepted".to_owned()
        }
    }
}

/// Encrypts (client-held keys) or hands over (carrier-held keys) and delivers.
async fn deliver_to(
    inbound: &Inbound,
    record: &AliasRecord,
    mailbox: Mailbox,
    message: &[u8],
    summary: &str,
) -> String {
    let backend = inbound.service.backend();
    let custody = match backend.custody(&record.identity_id).await {
        Ok(custody) => custody,
        Err(error) => return unavailable("identity key unavailable", &error),
    };
    let stored = if custody == KeyCustody::Client {
        let identity = match backend.identity(&record.identity_id).await {
            Ok(identity) => identity,
            Err(error) => return unavailable("identity unavailable", &error),
        };
        match backend.encrypt_to(&identity.address, message).await {
            Ok(encrypted) => encrypted,
            Err(error) => return unavailable("encryption to the identity failed", &error),
        }
    } else {
        message.to_vec()
    };
    let request = DeliverRequest {
        identity_id: record.identity_id.clone(),
        mailbox: mailbox as i32,
        message: stored,
        verification: SenderVerification::Clearnet as i32,
        verification_detail: summary.to_owned(),
        flags: Vec::new(),
    };
    match backend.deliver(request).await {
        Ok(response) => match Refusal::try_from(response.refusal) {
            Ok(Refusal::Unspecified) => "250 2.0.0 Message accepted".to_owned(),
            Ok(Refusal::AccountUnavailable) => {
                "451 4.2.1 Mailbox temporarily unavailable".to_owned()
            }
            Ok(Refusal::OverQuota) => "452 4.2.2 Mailbox full".to_owned(),
            Ok(Refusal::AccountExpired) => "550 5.2.1 Mailbox disabled".to_owned(),
            _ => RECIPIENT_REJECTED.to_owned(),
        },
        Err(error) => unavailable("delivery failed", &error),
    }
}

/// Whether a field name is one of the gateway's verdicts (see [`without_verdict_fields`]).
pub fn is_verdict_field(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"authentication-results")
        || name
            .get(..6)
            .is_some_and(|start| start.eq_ignore_ascii_case(b"x-spam"))
}

/// The temporary reply when another service failed. Its error text may name an address (the
/// identity's, the recipient's), so the text is logged at debug only and warn says what step
/// failed (issue 18, item 11: no address or onion at info or warn).
fn unavailable(step: &'static str, error: &dyn std::fmt::Display) -> String {
    tracing::warn!(step, "clearnet delivery to an identity failed");
    tracing::debug!(%error, step, "clearnet delivery to an identity failed");
    TEMPORARY.to_owned()
}

/// The message without the fields that carry the gateway's verdicts: Authentication-Results
/// (RFC 8601 §5: a receiver removes those that claim to be its own; none from outside can be
/// trusted, so all go) and the `X-Spam…` fields spam filters write (`X-Spam-Status`,
/// `X-Spam-Flag`, `X-Spamd-Result`…), which mail clients sort by.
///
/// Public only for the fuzz target `fuzz/fuzz_targets/gateway_inbound.rs`: the MX session that
/// calls it needs a store and DNS, too slow to fuzz.
pub fn without_verdict_fields(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    // A continuation line before any field belongs to no field here, but once our own
    // Authentication-Results is stamped above the message it would continue that one: a
    // message opening with " Authentication-Results: …; dkim=pass" wrote into our verdict
    // (found by the fuzz target gateway_inbound). So such lines go too.
    let mut dropping = true;
    let mut rest = message;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|byte| *byte == b'\n')
            .map_or(rest.len(), |at| at + 1);
        let line = &rest[..end];
        rest = &rest[end..];
        if line == b"\r\n" || line == b"\n" {
            out.extend_from_slice(line);
            out.extend_from_slice(rest);
            break;
        }
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            if !dropping {
                out.extend_from_slice(line);
            }
            continue;
        }
        // The field name ends at the colon; RFC 5322 §4.5.3 (obsolete syntax, which a receiver
        // must still read) allows white space before it, and a forged field so written is as
        // dangerous as any other. White space before the name (a form feed, which is not a
        // continuation) is no part of a valid name either, but lenient readers trim it and
        // then see the field (found by the fuzz target gateway_inbound).
        dropping = line
            .iter()
            .position(|byte| *byte == b':')
            .is_some_and(|colon| is_verdict_field(line[..colon].trim_ascii()));
        if !dropping {
            out.extend_from_slice(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_name_after_a_form_feed_is_dropped() {
        let message =
            b"From: a@b.example\r\n\x0c\x0cAuthentication-Results: mx; dkim=pass\r\n\r\nbody\r\n";
        let out = without_verdict_fields(message);
        assert_eq!(out, b"From: a@b.example\r\n\r\nbody\r\n");
    }

    #[test]
    fn a_continuation_line_before_any_field_is_dropped() {
        let message = b" Authentication-Results: mx; dkim=pass\r\n\tdmarc=pass\r\nFrom: a@b.example\r\n\r\nbody\r\n";
        let out = without_verdict_fields(message);
        assert_eq!(out, b"From: a@b.example\r\n\r\nbody\r\n");
    }

    #[test]
    fn incoming_authentication_results_are_dropped() {
        let message = b"Authentication-Results: gw.example; dkim=pass\r\n\tspf=pass\r\nFrom: a@b.test\r\n\r\nAuthentication-Results: in body\r\n";
        let out = without_verdict_fields(message);
        assert_eq!(
            out,
            b"From: a@b.test\r\n\r\nAuthentication-Results: in body\r\n"
        );
    }

    #[test]
    fn authentication_results_with_space_before_the_colon_are_dropped_too() {
        let message = b"Authentication-Results : gw.example; dkim=pass\r\nAUTHENTICATION-RESULTS\t: x; spf=pass\r\n\tfolded\r\nFrom: a@b.test\r\n\r\nbody\r\n";
        let out = without_verdict_fields(message);
        assert_eq!(out, b"From: a@b.test\r\n\r\nbody\r\n");
    }
}
