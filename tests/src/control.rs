//! A minimal client for tor's control port, for tests only.
//!
//! It exists to prove the private network works (authenticate, add an onion service, watch its
//! descriptor go out); the product's onion service has its own control client. It
//! follows the control protocol, "TC: A Tor control protocol (Version 1)"
//! (<https://spec.torproject.org/control-spec/>); section numbers below are those of the
//! `control-spec.txt` it was published as.
//!
//! One connection serves one task: commands are sent one at a time and each waits for its own
//! reply. Asynchronous events (status 650) that arrive meanwhile are queued and handed out by
//! [`ControlConnection::next_event`]. A call that fails or times out half-way through a reply
//! leaves the connection unusable; open a new one.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;

/// How long one command may wait for its reply. Tor answers local commands at once; this only
/// keeps a test from hanging on a wedged tor.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// A failure talking to tor's control port.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The TCP connection to the control port could not be made.
    #[error("cannot connect to tor's control port {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// Reading or writing the control connection failed.
    #[error("control connection: {0}")]
    Io(#[from] io::Error),
    /// Tor closed the connection (it exited, or refused authentication).
    #[error("tor closed the control connection")]
    Closed,
    /// A line that is not a reply line of control-spec §2.3.
    #[error("malformed control reply line {0:?}")]
    Malformed(String),
    /// Tor answered a command with an error status.
    #[error("tor refused {command}: {code} {text}")]
    Refused {
        /// The command keyword and arguments, without secrets.
        command: String,
        code: u16,
        text: String,
    },
    /// A successful reply lacked a field the command promises.
    #[error("reply to {command} has no {field}")]
    MissingField {
        command: &'static str,
        field: &'static str,
    },
    /// The authentication cookie could not be read.
    #[error("cannot read control cookie {path}: {source}")]
    Cookie {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Nothing came from tor within the time allowed.
    #[error("no {what} from tor within {waited:?}{seen}")]
    Timeout {
        what: String,
        waited: Duration,
        /// Related events seen meanwhile, for the failure report.
        seen: String,
    },
}

/// One line of a reply (control-spec §2.3): its text after the status code and separator, and
/// for a `+` line the data block that follows it, dot-unescaped, lines joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyLine {
    pub text: String,
    pub data: Option<String>,
}

/// A whole reply (control-spec §2.3): every line shares one status code; the last line is the
/// one with a space after the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<ReplyLine>,
}

impl Reply {
    /// A 2xx reply: the command succeeded.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// A 6xx reply: an asynchronous event, not the answer to a command (control-spec §4.1).
    pub fn is_event(&self) -> bool {
        (600..700).contains(&self.code)
    }

    /// The text of the last line (for a refusal, the reason).
    pub fn end_text(&self) -> &str {
        self.lines.last().map_or("", |line| line.text.as_str())
    }

    /// The value of a `key=value` line, or of a `key=` line followed by a data block, as in
    /// the replies to GETINFO (§3.9) and ADD_ONION (§3.27).
    pub fn value(&self, key: &str) -> Option<&str> {
        self.lines.iter().find_map(|line| {
            let value = line.text.strip_prefix(key)?.strip_prefix('=')?;
            match &line.data {
                Some(data) if value.is_empty() => Some(data.as_str()),
                _ => Some(value),
            }
        })
    }
}

/// An onion service created by ADD_ONION.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedOnion {
    /// The 56-character v3 address without `.onion`.
    pub service_id: String,
    /// `ED25519-V3:<base64>`, present when tor generated the key (`NEW:`) and was not told to
    /// discard it; pass it to [`ControlConnection::add_onion_with_key`] to bring the same
    /// address back.
    pub private_key: Option<String>,
}

/// An authenticated (or not yet authenticated) control connection to one tor.
#[derive(Debug)]
pub struct ControlConnection {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Events that arrived while a command waited for its reply.
    events: VecDeque<Reply>,
}

impl ControlConnection {
    /// Opens a TCP connection to a control port. Nothing but PROTOCOLINFO and AUTHENTICATE is
    /// allowed before authenticating (control-spec §3.5).
    pub async fn connect(addr: SocketAddr) -> Result<Self, ControlError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ControlError::Connect { addr, source })?;
        let (read_half, write_half) = stream.into_split();
        Ok(Self {
            reader: BufReader::new(read_half),
            writer: write_half,
            events: VecDeque::new(),
        })
    }

    /// Connects and authenticates with the cookie file tor wrote (`CookieAuthentication 1`).
    pub async fn connect_with_cookie(
        addr: SocketAddr,
        cookie_file: &Path,
    ) -> Result<Self, ControlError> {
        let mut connection = Self::connect(addr).await?;
        connection.authenticate_cookie(cookie_file).await?;
        Ok(connection)
    }

    /// Connects and authenticates with the password whose hash is `HashedControlPassword`.
    pub async fn connect_with_password(
        addr: SocketAddr,
        password: &str,
    ) -> Result<Self, ControlError> {
        let mut connection = Self::connect(addr).await?;
        connection.authenticate_password(password).await?;
        Ok(connection)
    }

    /// AUTHENTICATE with the COOKIE method (control-spec §3.5): the cookie file's 32 bytes,
    /// hex-encoded. The file is read now because tor writes a new cookie each time it starts.
    pub async fn authenticate_cookie(&mut self, cookie_file: &Path) -> Result<(), ControlError> {
        let cookie = tokio::fs::read(cookie_file)
            .await
            .map_err(|source| ControlError::Cookie {
                path: cookie_file.to_owned(),
                source,
            })?;
        let line = format!("AUTHENTICATE {}", hex::encode(cookie));
        self.expect_success(&line, "AUTHENTICATE (cookie)").await?;
        Ok(())
    }

    /// AUTHENTICATE with the HASHEDPASSWORD method (control-spec §3.5): the password as a
    /// QuotedString (§2.1).
    pub async fn authenticate_password(&mut self, password: &str) -> Result<(), ControlError> {
        let line = format!("AUTHENTICATE {}", quoted_string(password));
        self.expect_success(&line, "AUTHENTICATE (password)")
            .await?;
        Ok(())
    }

    /// Sends one command line and returns tor's reply to it, whatever its status. Events that
    /// arrive first are queued for [`Self::next_event`].
    pub async fn send(&mut self, command: &str) -> Result<Reply, ControlError> {
        self.write_line(command).await?;
        loop {
            let reply = self.read_reply_within(REPLY_TIMEOUT, "reply").await?;
            if !reply.is_event() {
                return Ok(reply);
            }
            self.events.push_back(reply);
        }
    }

    /// Sends one command line and fails unless tor answers 2xx.
    pub async fn command(&mut self, command: &str) -> Result<Reply, ControlError> {
        let keyword = command.split_whitespace().next().unwrap_or_default();
        self.expect_success(command, keyword).await
    }

    /// GETINFO for one key (control-spec §3.9); returns its value.
    pub async fn getinfo(&mut self, key: &str) -> Result<String, ControlError> {
        let reply = self.command(&format!("GETINFO {key}")).await?;
        reply
            .value(key)
            .map(str::to_owned)
            .ok_or(ControlError::MissingField {
                command: "GETINFO",
                field: "the asked key",
            })
    }

    /// SETEVENTS (control-spec §3.4): the events this connection receives from now on,
    /// replacing any set before.
    pub async fn set_events(&mut self, events: &[&str]) -> Result<(), ControlError> {
        let mut line = String::from("SETEVENTS");
        for event in events {
            line.push(' ');
            line.push_str(event);
        }
        self.command(&line).await?;
        Ok(())
    }

    /// ADD_ONION NEW:ED25519-V3 (control-spec §3.27): a new v3 onion service with a key tor
    /// generates, each `(virtual port, target)` pair one `Port=` argument. Targets must be
    /// IP:port (tor does not resolve host names here). The service lives as long as this
    /// connection unless made with [`Self::add_onion`] and `Detach`. Returns the service id
    /// and the private key.
    pub async fn add_onion_new(
        &mut self,
        ports: &[(u16, SocketAddr)],
    ) -> Result<(String, String), ControlError> {
        let added = self.add_onion("NEW:ED25519-V3", &[], ports).await?;
        let private_key = added.private_key.ok_or(ControlError::MissingField {
            command: "ADD_ONION",
            field: "PrivateKey",
        })?;
        Ok((added.service_id, private_key))
    }

    /// ADD_ONION with a key from an earlier `NEW:` (`ED25519-V3:<base64>`): brings the same
    /// onion address back, for example after tor restarted.
    pub async fn add_onion_with_key(
        &mut self,
        private_key: &str,
        ports: &[(u16, SocketAddr)],
    ) -> Result<String, ControlError> {
        let added = self.add_onion(private_key, &[], ports).await?;
        Ok(added.service_id)
    }

    /// ADD_ONION in general (control-spec §3.27): `key` is `NEW:ED25519-V3` or
    /// `ED25519-V3:<base64>`, `flags` are joined into `Flags=` (for example `Detach`,
    /// `DiscardPK`).
    pub async fn add_onion(
        &mut self,
        key: &str,
        flags: &[&str],
        ports: &[(u16, SocketAddr)],
    ) -> Result<AddedOnion, ControlError> {
        let mut line = String::from("ADD_ONION ");
        line.push_str(key);
        if !flags.is_empty() {
            line.push_str(" Flags=");
            line.push_str(&flags.join(","));
        }
        for (virtual_port, target) in ports {
            line.push_str(&format!(" Port={virtual_port},{target}"));
        }
        // The key is a secret: keep it out of error messages.
        let reply = self.expect_success(&line, "ADD_ONION").await?;
        let service_id = reply
            .value("ServiceID")
            .ok_or(ControlError::MissingField {
                command: "ADD_ONION",
                field: "ServiceID",
            })?
            .to_owned();
        let private_key = reply.value("PrivateKey").map(str::to_owned);
        Ok(AddedOnion {
            service_id,
            private_key,
        })
    }

    /// DEL_ONION (control-spec §3.28).
    pub async fn del_onion(&mut self, service_id: &str) -> Result<(), ControlError> {
        self.command(&format!("DEL_ONION {service_id}")).await?;
        Ok(())
    }

    /// The next asynchronous event (control-spec §4.1), queued or newly read.
    pub async fn next_event(&mut self, within: Duration) -> Result<Reply, ControlError> {
        if let Some(event) = self.events.pop_front() {
            return Ok(event);
        }
        let reply = self.read_reply_within(within, "event").await?;
        if reply.is_event() {
            Ok(reply)
        } else {
            // Only commands draw synchronous replies, and `send` consumes those.
            Err(ControlError::Malformed(format!(
                "unexpected synchronous reply {} {}",
                reply.code,
                reply.end_text()
            )))
        }
    }

    /// Waits for `650 HS_DESC UPLOADED <service_id> …` (control-spec §4.1.25): one HSDir has
    /// accepted the service's descriptor, so clients can now find it. Needs
    /// `SETEVENTS HS_DESC` on this connection before the service was added. Failed uploads to
    /// single HSDirs are normal and skipped; they are listed if the wait times out.
    pub async fn wait_hs_desc_uploaded(
        &mut self,
        service_id: &str,
        within: Duration,
    ) -> Result<(), ControlError> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = match self.next_event(left).await {
                Ok(event) => event,
                Err(ControlError::Timeout { .. }) => {
                    return Err(ControlError::Timeout {
                        what: format!("HS_DESC UPLOADED for {service_id}"),
                        waited: within,
                        seen: format_seen(&seen),
                    });
                }
                Err(other) => return Err(other),
            };
            let text = event.end_text();
            let mut fields = text.split(' ');
            if fields.next() != Some("HS_DESC") {
                continue;
            }
            let action = fields.next().unwrap_or_default();
            let address = fields.next().unwrap_or_default();
            if address != service_id {
                continue;
            }
            if action == "UPLOADED" {
                return Ok(());
            }
            seen.push(text.to_owned());
        }
    }

    /// Sends `line`; a non-2xx reply becomes [`ControlError::Refused`] naming `label` (not the
    /// line, which may hold a secret).
    async fn expect_success(&mut self, line: &str, label: &str) -> Result<Reply, ControlError> {
        let reply = self.send(line).await?;
        if reply.is_success() {
            return Ok(reply);
        }
        Err(ControlError::Refused {
            command: label.to_owned(),
            code: reply.code,
            text: reply.end_text().to_owned(),
        })
    }

    async fn write_line(&mut self, line: &str) -> Result<(), ControlError> {
        // Controllers send CRLF (control-spec §2.1).
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.writer.write_all(&bytes).await?;
        Ok(())
    }

    async fn read_reply_within(
        &mut self,
        within: Duration,
        what: &str,
    ) -> Result<Reply, ControlError> {
        match tokio::time::timeout(within, self.read_reply()).await {
            Ok(result) => result,
            Err(_elapsed) => Err(ControlError::Timeout {
                what: what.to_owned(),
                waited: within,
                seen: String::new(),
            }),
        }
    }

    /// Reads one reply (control-spec §2.3): `NNN-text` mid lines, `NNN+text` lines followed by
    /// a data block ending in a lone `.` (§2.4 CmdData), and the `NNN text` end line.
    async fn read_reply(&mut self) -> Result<Reply, ControlError> {
        let mut code = None;
        let mut lines = Vec::new();
        loop {
            let line = self.read_line().await?;
            let (line_code, separator, text) = split_reply_line(&line)?;
            if *code.get_or_insert(line_code) != line_code {
                return Err(ControlError::Malformed(line));
            }
            match separator {
                '-' => lines.push(ReplyLine { text, data: None }),
                '+' => {
                    let data = self.read_data_block().await?;
                    lines.push(ReplyLine {
                        text,
                        data: Some(data),
                    });
                }
                ' ' => {
                    lines.push(ReplyLine { text, data: None });
                    return Ok(Reply {
                        code: line_code,
                        lines,
                    });
                }
                _ => return Err(ControlError::Malformed(line)),
            }
        }
    }

    /// A CmdData block (control-spec §2.4): lines up to a lone `.`, with the leading `.` that
    /// escapes a line starting with `.` removed.
    async fn read_data_block(&mut self) -> Result<String, ControlError> {
        let mut data_lines = Vec::new();
        loop {
            let line = self.read_line().await?;
            if line == "." {
                return Ok(data_lines.join("\n"));
            }
            let unescaped = line.strip_prefix('.').unwrap_or(&line).to_owned();
            data_lines.push(unescaped);
        }
    }

    /// One line without its CRLF.
    async fn read_line(&mut self) -> Result<String, ControlError> {
        let mut bytes = Vec::new();
        let read = self.reader.read_until(b'\n', &mut bytes).await?;
        if read == 0 || bytes.last() != Some(&b'\n') {
            return Err(ControlError::Closed);
        }
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// Splits `NNNxtext` into status code, separator and text (control-spec §2.3).
fn split_reply_line(line: &str) -> Result<(u16, char, String), ControlError> {
    let malformed = || ControlError::Malformed(line.to_owned());
    let code_text = line.get(..3).ok_or_else(malformed)?;
    if !code_text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(malformed());
    }
    let code = code_text.parse().map_err(|_| malformed())?;
    let separator = line[3..].chars().next().ok_or_else(malformed)?;
    let text = line[3 + separator.len_utf8()..].to_owned();
    Ok((code, separator, text))
}

/// A QuotedString (control-spec §2.1): backslashes and double quotes escaped.
fn quoted_string(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for character in value.chars() {
        if character == '\\' || character == '"' {
            quoted.push('\\');
        }
        quoted.push(character);
    }
    quoted.push('"');
    quoted
}

fn format_seen(seen: &[String]) -> String {
    if seen.is_empty() {
        return String::from(" (no other HS_DESC events for it)");
    }
    format!("; HS_DESC events seen: {}", seen.join(" | "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_line_parts() {
        let (code, separator, text) = split_reply_line("250-ServiceID=abc").unwrap();
        assert_eq!(
            (code, separator, text.as_str()),
            (250, '-', "ServiceID=abc")
        );
        let (code, separator, text) = split_reply_line("650 HS_DESC UPLOADED x").unwrap();
        assert_eq!(
            (code, separator, text.as_str()),
            (650, ' ', "HS_DESC UPLOADED x")
        );
        assert!(split_reply_line("25").is_err());
        assert!(split_reply_line("2x0 OK").is_err());
        assert!(split_reply_line("250").is_err());
    }

    #[test]
    fn reply_values_from_lines_and_data() {
        let reply = Reply {
            code: 250,
            lines: vec![
                ReplyLine {
                    text: "ServiceID=abc".into(),
                    data: None,
                },
                ReplyLine {
                    text: "config-text=".into(),
                    data: Some("a\nb".into()),
                },
                ReplyLine {
                    text: "OK".into(),
                    data: None,
                },
            ],
        };
        assert_eq!(reply.value("ServiceID"), Some("abc"));
        assert_eq!(reply.value("config-text"), Some("a\nb"));
        assert_eq!(reply.value("Service"), None);
        assert_eq!(reply.end_text(), "OK");
        assert!(reply.is_success());
        assert!(!reply.is_event());
    }

    #[test]
    fn passwords_are_quoted() {
        assert_eq!(quoted_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    /// A whole exchange against a scripted peer: multi-line, data and event replies.
    #[tokio::test]
    async fn reads_mid_data_and_event_replies() {
        use tokio::io::AsyncReadExt;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buffer = [0_u8; 256];
            let read = socket.read(&mut buffer).await.unwrap();
            assert_eq!(&buffer[..read], b"GETINFO config-text\r\n");
            socket
                .write_all(
                    b"650 HS_DESC UPLOADED early x\r\n\
                      250+config-text=\r\nSocksPort 1\r\n..dot\r\n.\r\n250 OK\r\n\
                      650-STATUS_GENERAL NOTICE\r\n650 OK\r\n",
                )
                .await
                .unwrap();
        });
        let mut connection = ControlConnection::connect(addr).await.unwrap();
        let value = connection.getinfo("config-text").await.unwrap();
        assert_eq!(value, "SocksPort 1\n.dot");
        let first = connection.next_event(Duration::from_secs(5)).await.unwrap();
        assert_eq!(first.end_text(), "HS_DESC UPLOADED early x");
        let second = connection.next_event(Duration::from_secs(5)).await.unwrap();
        assert_eq!(second.lines.len(), 2);
        assert_eq!(second.code, 650);
        peer.await.unwrap();
    }
}
