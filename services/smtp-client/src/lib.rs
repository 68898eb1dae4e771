//! onionpost's SMTP client: one session (RFC 5321 §3.3, §4.1) over any byte stream. smtp-out
//! runs it over the SOCKS stream through tor, tests over an in-memory pipe, and the gateway over
//! TCP to the clearnet with [`deliver_with`], adding STARTTLS (RFC 3207) and AUTH PLAIN (RFC 4954), which
//! an onion session never needs (tor already encrypts and authenticates the peer).
//!
//! Why not mail-send's `SmtpClient`: it has one timeout for every command where RFC 5321
//! §4.5.3.2 sets one per stage, and it stops at the first refused RCPT where a queue needs the
//! outcome of every recipient. Replies are parsed with smtp-proto's `ResponseReceiver`; the
//! conversation itself is the few lines below.

use std::time::Duration;

use base64::Engine as _;
use smtp_proto::response::parser::ResponseReceiver;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

/// Per-stage time limits, RFC 5321 §4.5.3.2.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// §4.5.3.2.1: the 220 greeting, 5 minutes.
    pub greeting: Duration,
    /// §4.5.3.2.2/.3: MAIL and each RCPT (EHLO too), 5 minutes.
    pub command: Duration,
    /// §4.5.3.2.4: the 354 after DATA, 2 minutes.
    pub data_start: Duration,
    /// §4.5.3.2.5: each block of message data written, 3 minutes.
    pub data_block: Duration,
    /// §4.5.3.2.6: the reply after the final dot, 10 minutes.
    pub data_end: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            greeting: Duration::from_secs(300),
            command: Duration::from_secs(300),
            data_start: Duration::from_secs(120),
            data_block: Duration::from_secs(180),
            data_end: Duration::from_secs(600),
        }
    }
}

/// A reply as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// `class.subject.detail` (RFC 3463), empty when the server sent none.
    pub enhanced_status: String,
    pub text: String,
}

impl Reply {
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }
}

/// What one recipient ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered(Reply),
    Temporary(Reply),
    Permanent(Reply),
}

impl Outcome {
    fn from_reply(reply: Reply) -> Self {
        if reply.is_positive() {
            Outcome::Delivered(reply)
        } else if reply.is_permanent() {
            Outcome::Permanent(reply)
        } else {
            Outcome::Temporary(reply)
        }
    }
}

/// RFC 3461 NOTIFY, as this client passes it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notify {
    Never,
    Success,
    Failure,
    Delay,
}

/// One RCPT of the envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub address: String,
    /// Empty: no NOTIFY parameter (the next hop applies the RFC 3461 default).
    pub notify: Vec<Notify>,
    /// RFC 3461 ORCPT as `addr-type;address`, decoded: xtext-encoded here on output, so no
    /// byte of it can end the command line.
    pub original_recipient: String,
    /// A proof-of-work stamp for this recipient (onionpost_runtime::stamp), sent as the
    /// `XSTAMP=` parameter when the server offers XSTAMP.
    pub stamp: Option<String>,
}

/// RFC 3461 RET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnReturn {
    Full,
    Headers,
}

/// Everything one session sends.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Empty for the null reverse-path `<>`.
    pub reverse_path: String,
    pub recipients: Vec<Recipient>,
    pub envelope_id: String,
    pub dsn_return: Option<DsnReturn>,
}

/// What the session achieved: one outcome per recipient, in envelope order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionResult {
    pub outcomes: Vec<Outcome>,
    pub peer_offers_dsn: bool,
    /// The stamp difficulty the server's EHLO named (`XSTAMP <bits>`), if it asks stamps.
    pub peer_stamp_bits: Option<u32>,
}

/// Why a session ended before every recipient had an SMTP outcome. Every recipient without one
/// is a temporary failure.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("timed out waiting for the {0}")]
    Timeout(&'static str),
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed by the server")]
    Closed,
    #[error("malformed reply from the server")]
    Malformed,
    /// The greeting or EHLO was refused: no transaction was possible.
    #[error("server refused the session: {} {}", .0.code, .0.text)]
    Refused(Reply),
    /// TLS was required (or credentials were to be sent) and the server offers no STARTTLS.
    #[error("server offers no STARTTLS")]
    TlsUnavailable,
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    /// The server sent data after its STARTTLS reply, before the handshake (RFC 3207 §4.2:
    /// a plaintext injection attempt).
    #[error("server sent data before the TLS handshake")]
    TlsInjection,
    /// AUTH was refused: no transaction was possible.
    #[error("authentication refused: {} {}", .0.code, .0.text)]
    AuthRefused(Reply),
}

/// STARTTLS for a clearnet session.
#[derive(Clone)]
pub struct StartTls {
    pub connector: TlsConnector,
    /// The name the certificate is checked for (and sent as SNI).
    pub server_name: ServerName<'static>,
    /// Fail rather than go on in plaintext when the server offers no STARTTLS.
    pub required: bool,
}

/// What a clearnet session adds to the onion one.
#[derive(Clone, Default)]
pub struct Upgrade {
    /// STARTTLS when offered (or required).
    pub tls: Option<StartTls>,
    /// AUTH PLAIN user and password; sent only inside TLS.
    pub auth: Option<(String, String)>,
    /// The EHLO name; empty: [`EHLO_NAME`].
    pub ehlo_name: String,
}

/// The EHLO name every onionpost client sends. RFC 5321 §4.1.1.1 asks for the client's domain;
/// a carrier has none it may reveal (design.md: no host names), and every carrier sending the
/// same word keeps carriers indistinguishable.
const EHLO_NAME: &str = "localhost";

/// Runs one transaction: greeting, EHLO, MAIL, every RCPT, DATA (when a RCPT was accepted),
/// QUIT. The message is sent with CRLF line endings and dot-stuffed (§4.5.2).
pub async fn deliver<S>(
    stream: S,
    envelope: &Envelope,
    message: &[u8],
    timeouts: Timeouts,
) -> Result<SessionResult, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    deliver_with(stream, envelope, message, timeouts, &Upgrade::default()).await
}

/// [`deliver`] with STARTTLS and AUTH as `upgrade` asks: after EHLO, STARTTLS when offered
/// (an error when required and not offered), EHLO again inside TLS (RFC 3207 §4.2: everything
/// learnt before is forgotten), AUTH PLAIN, then the transaction.
pub async fn deliver_with<S>(
    stream: S,
    envelope: &Envelope,
    message: &[u8],
    timeouts: Timeouts,
    upgrade: &Upgrade,
) -> Result<SessionResult, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ehlo_name = if upgrade.ehlo_name.is_empty() {
        EHLO_NAME
    } else {
        upgrade.ehlo_name.as_str()
    };
    let mut connection = Connection::new(stream);
    let greeting = connection.reply(timeouts.greeting, "greeting").await?;
    if !greeting.is_positive() {
        return Err(SessionError::Refused(greeting));
    }
    let capabilities = connection.ehlo(ehlo_name, timeouts).await?;
    if let Some(tls) = &upgrade.tls {
        if capabilities.starttls {
            connection.send("STARTTLS\r\n").await?;
            let reply = connection.reply(timeouts.command, "STARTTLS reply").await?;
            if reply.code == 220 {
                if !connection.buffer.is_empty() {
                    return Err(SessionError::TlsInjection);
                }
                let handshake = tls
                    .connector
                    .connect(tls.server_name.clone(), connection.stream);
                let stream = tokio::time::timeout(timeouts.command, handshake)
                    .await
                    .map_err(|_| SessionError::Timeout("TLS handshake"))?
                    .map_err(SessionError::Tls)?;
                let mut secure = Connection::new(stream);
                let capabilities = secure.ehlo(ehlo_name, timeouts).await?;
                if let Some((user, password)) = &upgrade.auth {
                    secure.auth_plain(user, password, timeouts).await?;
                }
                return transaction(secure, capabilities, envelope, message, timeouts).await;
            }
            if tls.required || upgrade.auth.is_some() {
                return Err(SessionError::Refused(reply));
            }
        } else if tls.required || upgrade.auth.is_some() {
            let _ = connection.quit(timeouts.command).await;
            return Err(SessionError::TlsUnavailable);
        }
    } else if upgrade.auth.is_some() {
        // Credentials never cross the network in plaintext.
        let _ = connection.quit(timeouts.command).await;
        return Err(SessionError::TlsUnavailable);
    }
    transaction(connection, capabilities, envelope, message, timeouts).await
}

/// MAIL, every RCPT, DATA when a RCPT was accepted, QUIT.
async fn transaction<S>(
    mut connection: Connection<S>,
    capabilities: Capabilities,
    envelope: &Envelope,
    message: &[u8],
    timeouts: Timeouts,
) -> Result<SessionResult, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    connection
        .send(&mail_command(envelope, message, &capabilities))
        .await?;
    let mail = connection.reply(timeouts.command, "MAIL reply").await?;
    if !mail.is_positive() {
        let outcome = Outcome::from_reply(mail);
        let _ = connection.quit(timeouts.command).await;
        return Ok(SessionResult {
            outcomes: vec![outcome; envelope.recipients.len()],
            peer_offers_dsn: capabilities.dsn,
            peer_stamp_bits: capabilities.stamp_bits,
        });
    }

    // Outcomes so far: `None` for a recipient the server accepted, pending DATA.
    let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(envelope.recipients.len());
    for recipient in &envelope.recipients {
        connection
            .send(&rcpt_command(recipient, &capabilities))
            .await?;
        let reply = connection.reply(timeouts.command, "RCPT reply").await?;
        outcomes.push(if reply.is_positive() {
            None
        } else {
            Some(Outcome::from_reply(reply))
        });
    }

    if outcomes.iter().all(Option::is_some) {
        let _ = connection.quit(timeouts.command).await;
        return Ok(SessionResult {
            outcomes: outcomes.into_iter().flatten().collect(),
            peer_offers_dsn: capabilities.dsn,
            peer_stamp_bits: capabilities.stamp_bits,
        });
    }

    connection.send("DATA\r\n").await?;
    let data = connection.reply(timeouts.data_start, "DATA reply").await?;
    if data.code != 354 {
        let _ = connection.quit(timeouts.command).await;
        return Ok(finish(outcomes, &data, &capabilities));
    }
    for block in dot_stuffed(message).chunks(64 * 1024) {
        connection.write_block(block, timeouts.data_block).await?;
    }
    connection
        .write_block(b".\r\n", timeouts.data_block)
        .await?;
    let end = connection
        .reply(timeouts.data_end, "reply to the end of data")
        .await?;
    let _ = connection.quit(timeouts.command).await;
    Ok(finish(outcomes, &end, &capabilities))
}

/// Sends `ETRN <argument>` (RFC 1985) and returns the reply.
pub async fn etrn<S>(stream: S, argument: &str, timeouts: Timeouts) -> Result<Reply, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut connection = Connection::new(stream);
    let greeting = connection.reply(timeouts.greeting, "greeting").await?;
    if !greeting.is_positive() {
        return Err(SessionError::Refused(greeting));
    }
    connection.send(&format!("EHLO {EHLO_NAME}\r\n")).await?;
    let ehlo = connection.reply(timeouts.command, "EHLO reply").await?;
    if !ehlo.is_positive() {
        return Err(SessionError::Refused(ehlo));
    }
    connection.send(&format!("ETRN {argument}\r\n")).await?;
    let reply = connection.reply(timeouts.command, "ETRN reply").await?;
    let _ = connection.quit(timeouts.command).await;
    Ok(reply)
}

/// Every recipient's outcome: its own RCPT refusal, else the reply to DATA (or to its end).
fn finish(
    outcomes: Vec<Option<Outcome>>,
    data_reply: &Reply,
    capabilities: &Capabilities,
) -> SessionResult {
    SessionResult {
        outcomes: outcomes
            .into_iter()
            .map(|outcome| outcome.unwrap_or_else(|| Outcome::from_reply(data_reply.clone())))
            .collect(),
        peer_offers_dsn: capabilities.dsn,
        peer_stamp_bits: capabilities.stamp_bits,
    }
}

/// The EHLO keywords this client acts on.
#[derive(Debug, Default, Clone, Copy)]
struct Capabilities {
    dsn: bool,
    smtputf8: bool,
    eight_bit_mime: bool,
    size: bool,
    starttls: bool,
    /// `XSTAMP <bits>`: the server takes proof-of-work stamps (onionpost's own keyword).
    stamp_bits: Option<u32>,
}

impl Capabilities {
    fn from_ehlo(text: &str) -> Self {
        let mut capabilities = Capabilities::default();
        // The first line is the server's greeting name; keywords follow, one per line.
        for line in text.lines().skip(1) {
            let keyword = line
                .trim()
                .split_ascii_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            match keyword.as_str() {
                "DSN" => capabilities.dsn = true,
                "SMTPUTF8" => capabilities.smtputf8 = true,
                "8BITMIME" => capabilities.eight_bit_mime = true,
                "SIZE" => capabilities.size = true,
                "STARTTLS" => capabilities.starttls = true,
                "XSTAMP" => {
                    capabilities.stamp_bits = line
                        .split_ascii_whitespace()
                        .nth(1)
                        .and_then(|bits| bits.parse().ok());
                }
                _ => {}
            }
        }
        capabilities
    }
}

fn mail_command(envelope: &Envelope, message: &[u8], capabilities: &Capabilities) -> String {
    let mut command = format!("MAIL FROM:<{}>", envelope.reverse_path);
    if capabilities.size {
        command.push_str(&format!(" SIZE={}", message.len()));
    }
    if capabilities.eight_bit_mime && !message.is_ascii() {
        command.push_str(" BODY=8BITMIME");
    }
    let non_ascii_address = !envelope.reverse_path.is_ascii()
        || envelope
            .recipients
            .iter()
            .any(|recipient| !recipient.address.is_ascii());
    if capabilities.smtputf8 && non_ascii_address {
        command.push_str(" SMTPUTF8");
    }
    if capabilities.dsn {
        if let Some(dsn_return) = envelope.dsn_return {
            command.push_str(match dsn_return {
                DsnReturn::Full => " RET=FULL",
                DsnReturn::Headers => " RET=HDRS",
            });
        }
        if !envelope.envelope_id.is_empty() {
            command.push_str(&format!(" ENVID={}", xtext(&envelope.envelope_id)));
        }
    }
    command.push_str("\r\n");
    command
}

fn rcpt_command(recipient: &Recipient, capabilities: &Capabilities) -> String {
    let mut command = format!("RCPT TO:<{}>", recipient.address);
    if capabilities.dsn {
        if !recipient.notify.is_empty() {
            let values: Vec<&str> = recipient
                .notify
                .iter()
                .map(|notify| match notify {
                    Notify::Never => "NEVER",
                    Notify::Success => "SUCCESS",
                    Notify::Failure => "FAILURE",
                    Notify::Delay => "DELAY",
                })
                .collect();
            command.push_str(&format!(" NOTIFY={}", values.join(",")));
        }
        if let Some(orcpt) = orcpt(&recipient.original_recipient) {
            command.push_str(&format!(" ORCPT={orcpt}"));
        }
    }
    // A stamp is printable ASCII by construction; anything else is not sent.
    if let Some(stamp) = &recipient.stamp
        && capabilities.stamp_bits.is_some()
        && stamp.bytes().all(|b| b.is_ascii_graphic() && b != b'=')
    {
        command.push_str(&format!(" XSTAMP={stamp}"));
    }
    command.push_str("\r\n");
    command
}

/// The ORCPT parameter's value (RFC 3461 §4.2): `addr-type ";" xtext`, with the address
/// xtext-encoded. A value without an atom as its address type is dropped: ORCPT is optional,
/// and an invalid one would make the next hop refuse the recipient. A bare address is rfc822.
fn orcpt(original: &str) -> Option<String> {
    if original.is_empty() {
        return None;
    }
    let (kind, address) = original.split_once(';').unwrap_or(("rfc822", original));
    let atom = !kind.is_empty()
        && kind
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-');
    (atom && !address.is_empty()).then(|| format!("{kind};{}", xtext(address)))
}

/// RFC 3461 §4: xtext encodes `+`, `=` and anything outside printable ASCII as `+XX`.
fn xtext(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if (b'!'..=b'~').contains(&byte) && byte != b'+' && byte != b'=' {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("+{byte:02X}"));
        }
    }
    encoded
}

/// The message with every line ending in CRLF, lines starting with `.` doubled (§4.5.2), and a
/// final CRLF so the terminating `.` stands on its own line. A bare CR or LF becomes CRLF: no
/// bare CR ever leaves (RFC 5321 §2.3.8), so a lenient receiver cannot be made to see an end
/// of data the sender did not mean (SMTP smuggling).
fn dot_stuffed(message: &[u8]) -> Vec<u8> {
    line_ended(message, true)
}

/// The message as the server stores it once the dots are taken off again: every line ending in
/// CRLF, a final CRLF. What a proof-of-work stamp's message digest covers.
pub fn wire_text(message: &[u8]) -> Vec<u8> {
    line_ended(message, false)
}

/// [`dot_stuffed`] (with `stuff`) or [`wire_text`]: one conversion, so the digest a stamp is
/// minted over is always of the bytes that leave.
fn line_ended(message: &[u8], stuff: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 2);
    let mut at_line_start = true;
    let mut previous = 0u8;
    for (index, &byte) in message.iter().enumerate() {
        if stuff && at_line_start && byte == b'.' {
            out.push(b'.');
        }
        if byte == b'\n' && previous != b'\r' {
            out.push(b'\r');
        }
        out.push(byte);
        at_line_start = byte == b'\n';
        if byte == b'\r' && message.get(index + 1) != Some(&b'\n') {
            out.push(b'\n');
            at_line_start = true;
        }
        previous = byte;
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The stream with a reply reader that keeps bytes beyond the current reply.
struct Connection<S> {
    stream: S,
    receiver: ResponseReceiver,
    buffer: Vec<u8>,
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn new(stream: S) -> Self {
        Connection {
            stream,
            receiver: ResponseReceiver::default(),
            buffer: Vec::new(),
        }
    }

    async fn send(&mut self, command: &str) -> Result<(), SessionError> {
        self.stream.write_all(command.as_bytes()).await?;
        self.stream.flush().await?;
        Ok(())
    }

    async fn write_block(&mut self, block: &[u8], limit: Duration) -> Result<(), SessionError> {
        tokio::time::timeout(limit, async {
            self.stream.write_all(block).await?;
            self.stream.flush().await
        })
        .await
        .map_err(|_| SessionError::Timeout("server to take message data"))??;
        Ok(())
    }

    async fn reply(&mut self, limit: Duration, what: &'static str) -> Result<Reply, SessionError> {
        tokio::time::timeout(limit, self.read_reply())
            .await
            .map_err(|_| SessionError::Timeout(what))?
    }

    async fn read_reply(&mut self) -> Result<Reply, SessionError> {
        loop {
            if !self.buffer.is_empty() {
                let mut bytes = self.buffer.iter();
                let parsed = self.receiver.parse(&mut bytes);
                let left = bytes.as_slice().to_vec();
                self.buffer = left;
                match parsed {
                    Ok(response) => {
                        self.receiver.reset();
                        return Ok(Reply {
                            code: response.code,
                            enhanced_status: enhanced_status(response.esc),
                            text: response.message.trim_end().replace('\r', ""),
                        });
                    }
                    Err(smtp_proto::Error::NeedsMoreData { .. }) => {}
                    Err(_) => return Err(SessionError::Malformed),
                }
            }
            let mut chunk = [0u8; 4096];
            let read = self.stream.read(&mut chunk).await?;
            if read == 0 {
                return Err(SessionError::Closed);
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }

    /// EHLO and the capabilities its reply lists.
    async fn ehlo(&mut self, name: &str, timeouts: Timeouts) -> Result<Capabilities, SessionError> {
        self.send(&format!("EHLO {name}\r\n")).await?;
        let ehlo = self.reply(timeouts.command, "EHLO reply").await?;
        if !ehlo.is_positive() {
            return Err(SessionError::Refused(ehlo));
        }
        Ok(Capabilities::from_ehlo(&ehlo.text))
    }

    /// AUTH PLAIN with an initial response (RFC 4954 §4, RFC 4616).
    async fn auth_plain(
        &mut self,
        user: &str,
        password: &str,
        timeouts: Timeouts,
    ) -> Result<(), SessionError> {
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.send(&format!("AUTH PLAIN {token}\r\n")).await?;
        let reply = self.reply(timeouts.command, "AUTH reply").await?;
        if reply.code != 235 {
            return Err(SessionError::AuthRefused(reply));
        }
        Ok(())
    }

    async fn quit(&mut self, limit: Duration) -> Result<(), SessionError> {
        self.send("QUIT\r\n").await?;
        self.reply(limit, "QUIT reply").await?;
        Ok(())
    }
}

fn enhanced_status(esc: [u8; 3]) -> String {
    if esc[0] == 0 {
        return String::new();
    }
    format!("{}.{}.{}", esc[0], esc[1], esc[2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};

    /// A scripted server: for each line the client sends, the reply it gets. DATA content is
    /// collected until the lone dot.
    async fn server(
        stream: tokio::io::DuplexStream,
        script: Vec<(&'static str, &'static str)>,
    ) -> (Vec<String>, Vec<u8>) {
        let (read, mut write) = tokio::io::split(stream);
        let mut reader = BufReader::new(read);
        write.write_all(b"220 ready\r\n").await.unwrap();
        let mut seen = Vec::new();
        let mut data = Vec::new();
        let mut script = script.into_iter();
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).await.unwrap() == 0 {
                break;
            }
            seen.push(line.trim_end().to_string());
            let Some((expected_prefix, reply)) = script.next() else {
                break;
            };
            assert!(
                line.starts_with(expected_prefix),
                "client sent {line:?}, script expected {expected_prefix:?}"
            );
            write.write_all(reply.as_bytes()).await.unwrap();
            if expected_prefix == "DATA" && reply.starts_with("354") {
                loop {
                    let mut data_line = Vec::new();
                    reader.read_until(b'\n', &mut data_line).await.unwrap();
                    if data_line == b".\r\n" {
                        break;
                    }
                    data.extend_from_slice(&data_line);
                }
                let (_, end_reply) = script.next().unwrap();
                write.write_all(end_reply.as_bytes()).await.unwrap();
            }
            if expected_prefix == "QUIT" {
                break;
            }
        }
        (seen, data)
    }

    fn envelope(recipients: &[&str]) -> Envelope {
        Envelope {
            reverse_path: "alice@a.onion".into(),
            recipients: recipients
                .iter()
                .map(|address| Recipient {
                    address: (*address).into(),
                    notify: vec![Notify::Success, Notify::Failure],
                    original_recipient: String::new(),
                    stamp: None,
                })
                .collect(),
            envelope_id: "id+1".into(),
            dsn_return: Some(DsnReturn::Headers),
        }
    }

    #[tokio::test]
    async fn each_recipient_gets_its_own_outcome_and_data_is_dot_stuffed() {
        let (client, server_side) = tokio::io::duplex(1 << 16);
        let script = vec![
            ("EHLO localhost", "250-peer\r\n250-DSN\r\n250 SIZE 1000\r\n"),
            ("MAIL FROM:<alice@a.onion> SIZE=", "250 2.1.0 ok\r\n"),
            (
                "RCPT TO:<carol@c.onion> NOTIFY=SUCCESS,FAILURE",
                "250 2.1.5 ok\r\n",
            ),
            ("RCPT TO:<nobody@c.onion>", "550 5.1.1 no such user\r\n"),
            ("RCPT TO:<full@c.onion>", "452 4.2.2 mailbox full\r\n"),
            ("DATA", "354 go ahead\r\n"),
            ("", "250 2.0.0 queued\r\n"),
            ("QUIT", "221 bye\r\n"),
        ];
        let server = tokio::spawn(server(server_side, script));
        let result = deliver(
            client,
            &envelope(&["carol@c.onion", "nobody@c.onion", "full@c.onion"]),
            b"Subject: x\n\n.leading dot\nend",
            Timeouts::default(),
        )
        .await
        .unwrap();
        let (seen, data) = server.await.unwrap();
        assert!(seen[1].ends_with("RET=HDRS ENVID=id+2B1"), "{}", seen[1]);
        assert_eq!(data, b"Subject: x\r\n\r\n..leading dot\r\nend\r\n");
        assert!(result.peer_offers_dsn);
        assert!(
            matches!(&result.outcomes[0], Outcome::Delivered(reply) if reply.enhanced_status == "2.0.0")
        );
        assert!(
            matches!(&result.outcomes[1], Outcome::Permanent(reply) if reply.code == 550 && reply.text == "no such user")
        );
        assert!(matches!(&result.outcomes[2], Outcome::Temporary(reply) if reply.code == 452));
    }

    #[tokio::test]
    async fn no_data_when_every_recipient_is_refused_and_no_dsn_parameters_without_dsn() {
        let (client, server_side) = tokio::io::duplex(1 << 16);
        let script = vec![
            ("EHLO", "250 peer\r\n"),
            ("MAIL FROM:<alice@a.onion>\r\n", "250 ok\r\n"),
            ("RCPT TO:<x@c.onion>\r\n", "550 5.7.1 refused\r\n"),
            ("QUIT", "221 bye\r\n"),
        ];
        let server = tokio::spawn(server(server_side, script));
        let result = deliver(client, &envelope(&["x@c.onion"]), b"m", Timeouts::default())
            .await
            .unwrap();
        let (seen, _) = server.await.unwrap();
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert!(matches!(&result.outcomes[0], Outcome::Permanent(_)));
    }

    #[tokio::test]
    async fn a_refused_greeting_and_a_silent_server_are_errors() {
        let (client, mut server_side) = tokio::io::duplex(1024);
        server_side
            .write_all(b"554 5.7.1 go away\r\n")
            .await
            .unwrap();
        let error = deliver(client, &envelope(&["x@c.onion"]), b"m", Timeouts::default())
            .await
            .unwrap_err();
        assert!(matches!(error, SessionError::Refused(reply) if reply.code == 554));

        let (client, _server_side) = tokio::io::duplex(1024);
        let timeouts = Timeouts {
            greeting: Duration::from_millis(50),
            ..Timeouts::default()
        };
        let error = deliver(client, &envelope(&["x@c.onion"]), b"m", timeouts)
            .await
            .unwrap_err();
        assert!(matches!(error, SessionError::Timeout("greeting")));
    }

    #[test]
    fn xtext_and_dot_stuffing_follow_the_rfcs() {
        assert_eq!(xtext("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(dot_stuffed(b".\r\n.."), b"..\r\n...\r\n");
        assert_eq!(dot_stuffed(b"a\r\n"), b"a\r\n");
    }

    #[test]
    fn no_bare_cr_leaves_and_a_smuggled_end_of_data_is_stuffed() {
        assert_eq!(dot_stuffed(b"a\rb"), b"a\r\nb\r\n");
        // `\r.\r` would end DATA at a receiver that takes a bare CR as a line end.
        let out = dot_stuffed(b"a\r.\rMAIL FROM:<x@y>\r\n");
        assert_eq!(out, b"a\r\n..\r\nMAIL FROM:<x@y>\r\n");
        assert!(!out.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n'));
    }

    #[test]
    fn orcpt_keeps_its_type_and_is_xtext_encoded() {
        assert_eq!(
            orcpt("rfc822;george+x @tax.gov").as_deref(),
            Some("rfc822;george+2Bx+20@tax.gov")
        );
        // Control characters cannot end the command line.
        assert_eq!(
            orcpt("rfc822;a@b\r\nRCPT TO:<evil@x>").as_deref(),
            Some("rfc822;a@b+0D+0ARCPT+20TO:<evil@x>")
        );
        assert_eq!(orcpt("bob@b.onion").as_deref(), Some("rfc822;bob@b.onion"));
        assert_eq!(orcpt("bad type;bob@b.onion"), None);
        assert_eq!(orcpt(""), None);
        let recipient = Recipient {
            address: "bob@b.onion".into(),
            notify: vec![],
            original_recipient: "rfc822;a\r\nQUIT".into(),
            stamp: None,
        };
        assert_eq!(
            rcpt_command(&recipient, &with_dsn()),
            "RCPT TO:<bob@b.onion> ORCPT=rfc822;a+0D+0AQUIT\r\n"
        );
    }

    #[test]
    fn orcpt_from_the_queue_record_reaches_the_next_parser_unchanged() {
        // What smtp-in stores for `ORCPT=rfc822;george+2Bx+20@tax.gov`: type kept, decoded.
        let recipient = Recipient {
            address: "bob@b.onion".into(),
            notify: vec![],
            original_recipient: "rfc822;george+x @tax.gov".into(),
            stamp: None,
        };
        let line = rcpt_command(&recipient, &with_dsn());
        let request = smtp_proto::Request::parse(&mut line.as_bytes().iter()).unwrap();
        let smtp_proto::Request::Rcpt { to } = request else {
            panic!("not a RCPT: {line}");
        };
        assert_eq!(to.address, "bob@b.onion");
        assert_eq!(to.orcpt.as_deref(), Some("george+x @tax.gov"));
    }

    fn with_dsn() -> Capabilities {
        Capabilities {
            dsn: true,
            ..Capabilities::default()
        }
    }

    #[test]
    fn a_stamp_goes_only_to_a_server_that_offers_xstamp() {
        let recipient = Recipient {
            address: "carol@c.onion".into(),
            notify: Vec::new(),
            original_recipient: String::new(),
            stamp: Some("1.8.1800000000.00000000000000ff".into()),
        };
        assert_eq!(
            rcpt_command(&recipient, &with_dsn()),
            "RCPT TO:<carol@c.onion>\r\n"
        );
        let asks = Capabilities::from_ehlo("ESMTP\nDSN\nXSTAMP 22\nETRN");
        assert_eq!(asks.stamp_bits, Some(22));
        assert_eq!(
            rcpt_command(&recipient, &asks),
            "RCPT TO:<carol@c.onion> XSTAMP=1.8.1800000000.00000000000000ff\r\n"
        );
        let forged = Recipient {
            stamp: Some("1 QUIT".into()),
            ..recipient
        };
        assert_eq!(rcpt_command(&forged, &asks), "RCPT TO:<carol@c.onion>\r\n");
    }

    #[test]
    fn wire_text_is_what_the_server_keeps_after_unstuffing() {
        let message = b"A: b\n.hidden\r\nbare\rcr\n..two\nlast";
        let stuffed = dot_stuffed(message);
        let unstuffed: Vec<u8> = stuffed
            .split_inclusive(|b| *b == b'\n')
            .flat_map(|line| line.strip_prefix(b".").unwrap_or(line).to_vec())
            .collect();
        assert_eq!(wire_text(message), unstuffed);
        assert!(wire_text(message).ends_with(b"last\r\n"));
    }
}
