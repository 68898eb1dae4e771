//! tor's control port, spoken directly: "TC: A Tor control protocol (Version 1)",
//! <https://spec.torproject.org/control-spec/>. Section numbers below are those of the
//! `control-spec.txt` it was published as.
//!
//! Why not torut (shared/dependencies.md): its only way to add an onion service is its `v3`
//! feature, which takes client-generated keys only and pulls ed25519-dalek 1 and
//! curve25519-dalek 3 (RUSTSEC-2022-0093, RUSTSEC-2024-0344) and rand 0.7. Without that feature
//! it still cannot send a raw command, so neither `ADD_ONION NEW:ED25519-V3` (tor makes the key,
//! so no ed25519 crate is needed at all) nor the `PoWDefensesEnabled` keyword of tor ≥ 0.4.9.2
//! could be sent through it; and it reads asynchronous events only while a command is waiting
//! for its reply (its docs suggest polling with a no-op), where the service wants HS_DESC events
//! the moment they arrive. It has had no release since 2021. What the service needs is small:
//! authenticate (§3.5, §3.21, §3.24), GETINFO (§3.9), SETEVENTS (§3.4), ADD_ONION (§3.27) and
//! DEL_ONION (§3.38), and read replies and events (§2.3, §4.1). That is this module, and it keeps
//! the RustSec-flagged crates out of the build entirely.
//!
//! One [`ControlConnection`] is shared by every task of the service: commands are written one
//! at a time and tor answers them in order (§2.1, "replies are sent in the order the commands
//! arrived"), so a FIFO of waiting callers pairs replies with commands. A reader task hands
//! asynchronous events (status 650, §4.1) to an event channel as they arrive, and closes it
//! when the connection ends, which is how the supervisor learns that tor went away.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};

/// How long one command may wait for its reply. tor answers control commands at once; only a
/// wedged tor or a half-open connection takes longer, and then the connection is given up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest reply line accepted; tor's longest lines (GETINFO of a consensus) come as data
/// blocks, which are read line by line.
const MAX_LINE: usize = 1 << 20;

/// A failure talking to tor's control port. The texts are meant for operators: they say what
/// went wrong and, where there is one, what to change.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("cannot connect to tor's control port at {address}: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("tor rejected the control password ({reply}); check tor.control_password")]
    WrongPassword { reply: String },
    #[error("tor rejected control-port authentication ({reply})")]
    AuthRejected { reply: String },
    #[error(
        "cannot read tor's control auth cookie {path}: {reason}; set tor.cookie_file or tor.control_password"
    )]
    CookieUnreadable { path: String, reason: String },
    #[error("tor's control port needs a password (it offers {methods}); set tor.control_password")]
    PasswordNeeded { methods: String },
    #[error(
        "tor's SAFECOOKIE answer does not match the cookie: the control port is not the tor that wrote {path}"
    )]
    CookieMismatch { path: String },
    #[error("tor {version} cannot host v3 onion services through ADD_ONION (needs 0.3.5 or newer)")]
    NoOnionSupport { version: String },
    #[error("the control connection to tor closed")]
    Closed,
    #[error("tor did not answer `{command}` within {seconds} s")]
    Timeout { command: String, seconds: u64 },
    #[error("unexpected control-port reply: {0}")]
    Protocol(String),
    #[error("tor refused `{command}`: {code} {text}")]
    Refused {
        command: String,
        code: u16,
        text: String,
    },
}

/// One line of a reply (§2.3): the text after the status code and separator, and for a `+`
/// line the data block that follows it, dot-unescaped, lines joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyLine {
    pub text: String,
    pub data: Option<String>,
}

/// A whole reply (§2.3): every line shares one status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<ReplyLine>,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        self.code == 250
    }

    /// The text of the last line (`OK` for most successes, the reason for errors).
    pub fn end_text(&self) -> &str {
        self.lines.last().map_or("", |line| line.text.as_str())
    }

    /// The value of a `key=value` line, or of a `key=` data line.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.lines.iter().find_map(|line| {
            let rest = line.text.strip_prefix(key)?.strip_prefix('=')?;
            Some(line.data.as_deref().unwrap_or(rest))
        })
    }
}

/// What PROTOCOLINFO (§3.21) says before authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProtocolInfo {
    pub methods: Vec<String>,
    pub cookie_file: Option<PathBuf>,
    pub tor_version: String,
}

/// How to authenticate (§3.5).
#[derive(Debug, Clone)]
pub enum Credentials {
    /// Use what PROTOCOLINFO offers: no authentication, else the cookie it names.
    Auto,
    Cookie(PathBuf),
    Password(String),
}

/// An ADD_ONION request (§3.27).
#[derive(Debug, Clone)]
pub struct AddOnion<'a> {
    /// `NEW:ED25519-V3`, or `ED25519-V3:<base64>` to bring an existing service back.
    pub key: OnionKey<'a>,
    /// `(virtual port, "ip:port")` pairs.
    pub ports: Vec<(u16, String)>,
    /// Adds `PoWDefensesEnabled=1` (tor ≥ 0.4.9.2).
    pub pow_defense: bool,
    /// Most streams one rendezvous circuit may open to the service (`MaxStreams`); a circuit
    /// that asks for more is closed (`MaxStreamsCloseCircuit`). 0: tor's default, no limit.
    pub max_streams: u16,
}

#[derive(Debug, Clone, Copy)]
pub enum OnionKey<'a> {
    New,
    /// The key blob after `ED25519-V3:`.
    Existing(&'a str),
}

/// The ADD_ONION command line for `request`, in the order of §3.27 (key, flags, MaxStreams,
/// PoW, ports). It holds the private key when one is given, hence zeroized.
fn add_onion_command(request: &AddOnion<'_>) -> zeroize::Zeroizing<String> {
    let mut command = zeroize::Zeroizing::new(String::from("ADD_ONION "));
    let mut flags = Vec::new();
    match request.key {
        OnionKey::New => command.push_str("NEW:ED25519-V3"),
        OnionKey::Existing(blob) => {
            command.push_str("ED25519-V3:");
            command.push_str(blob);
            // The key is in our store already; tor need not send it back.
            flags.push("DiscardPK");
        }
    }
    if request.max_streams > 0 {
        flags.push("MaxStreamsCloseCircuit");
    }
    if !flags.is_empty() {
        command.push_str(" Flags=");
        command.push_str(&flags.join(","));
    }
    if request.max_streams > 0 {
        command.push_str(&format!(" MaxStreams={}", request.max_streams));
    }
    if request.pow_defense {
        command.push_str(" PoWDefensesEnabled=1");
    }
    for (virtual_port, target) in &request.ports {
        command.push_str(&format!(" Port={virtual_port},{target}"));
    }
    command
}

/// What ADD_ONION answers: the service id and, for `NEW`, the key blob tor generated.
#[derive(Clone)]
pub struct AddedOnion {
    pub service_id: String,
    pub private_key: Option<zeroize::Zeroizing<String>>,
}

impl std::fmt::Debug for AddedOnion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddedOnion")
            .field("service_id", &self.service_id)
            .finish_non_exhaustive()
    }
}

type Waiter = oneshot::Sender<Result<Reply, ControlError>>;

/// The state shared between callers and the reader task.
struct Shared {
    /// Callers waiting for a reply, in the order their commands were written.
    waiting: Mutex<VecDeque<Waiter>>,
    /// Set by the reader task when the connection ends; later commands fail at once.
    closed: Mutex<Option<ControlError>>,
}

/// An authenticated control connection, cheap to clone; see the module documentation.
#[derive(Clone)]
pub struct ControlConnection {
    writer: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    shared: Arc<Shared>,
    protocol_info: Arc<ProtocolInfo>,
}

impl std::fmt::Debug for ControlConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlConnection")
            .field("tor_version", &self.protocol_info.tor_version)
            .finish_non_exhaustive()
    }
}

/// Asynchronous events (650 replies, §4.1); ends when the connection closes.
pub type Events = mpsc::UnboundedReceiver<Reply>;

impl ControlConnection {
    /// Connects to `address` (`host:port`, the host may be a name), authenticates and returns the
    /// connection with its event channel.
    pub async fn connect(
        address: &str,
        credentials: &Credentials,
        connect_timeout: Duration,
    ) -> Result<(ControlConnection, Events), ControlError> {
        let unreachable = |reason: String| ControlError::Unreachable {
            address: address.to_owned(),
            reason,
        };
        let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| unreachable(format!("no answer within {connect_timeout:?}")))?
            .map_err(|error| unreachable(error.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let (events_sender, events) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            waiting: Mutex::new(VecDeque::new()),
            closed: Mutex::new(None),
        });
        tokio::spawn(read_replies(
            BufReader::new(read),
            shared.clone(),
            events_sender,
        ));
        let mut connection = ControlConnection {
            writer: Arc::new(tokio::sync::Mutex::new(write)),
            shared,
            protocol_info: Arc::new(ProtocolInfo::default()),
        };
        let info = connection.protocol_info_query().await?;
        connection.authenticate(&info, credentials).await?;
        connection.protocol_info = Arc::new(info);
        Ok((connection, events))
    }

    /// What PROTOCOLINFO said before authentication (tor's version among it).
    pub fn protocol_info(&self) -> &ProtocolInfo {
        &self.protocol_info
    }

    /// Sends one command line (without CRLF) and waits for its reply, whatever its status.
    pub async fn send(&self, command: &str) -> Result<Reply, ControlError> {
        // Shown in errors and logs; never the arguments, which can hold keys or passwords.
        let verb = command.split(' ').next().unwrap_or_default().to_owned();
        let (sender, receiver) = oneshot::channel();
        {
            let mut writer = self.writer.lock().await;
            if let Some(error) = self.closed_error() {
                return Err(error);
            }
            self.waiting().push_back(sender);
            let mut line = Vec::with_capacity(command.len() + 2);
            line.extend_from_slice(command.as_bytes());
            line.extend_from_slice(b"\r\n");
            let written = writer.write_all(&line).await;
            zeroize::Zeroize::zeroize(&mut line);
            if written.is_err() {
                return Err(ControlError::Closed);
            }
        }
        match tokio::time::timeout(REPLY_TIMEOUT, receiver).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(ControlError::Closed),
            Err(_) => {
                // A reply that never came leaves the FIFO out of step: give the connection up.
                self.close(ControlError::Timeout {
                    command: verb.clone(),
                    seconds: REPLY_TIMEOUT.as_secs(),
                })
                .await;
                Err(ControlError::Timeout {
                    command: verb,
                    seconds: REPLY_TIMEOUT.as_secs(),
                })
            }
        }
    }

    /// Sends a command and fails unless tor answers 250.
    pub async fn command(&self, command: &str) -> Result<Reply, ControlError> {
        let reply = self.send(command).await?;
        if reply.is_success() {
            Ok(reply)
        } else {
            Err(refused(command, &reply))
        }
    }

    /// GETINFO for one key (§3.9).
    pub async fn getinfo(&self, key: &str) -> Result<String, ControlError> {
        let reply = self.command(&format!("GETINFO {key}")).await?;
        reply
            .value(key)
            .map(str::to_owned)
            .ok_or_else(|| ControlError::Protocol(format!("GETINFO {key} answered without it")))
    }

    /// SETEVENTS (§3.4): replaces the set of events this connection receives.
    pub async fn set_events(&self, events: &[&str]) -> Result<(), ControlError> {
        self.command(&format!("SETEVENTS {}", events.join(" ")))
            .await
            .map(drop)
    }

    /// ADD_ONION (§3.27). The service belongs to this connection (no `Detach`): tor removes it
    /// when the connection closes, so tor never holds an onion the service's store does not.
    pub async fn add_onion(&self, request: &AddOnion<'_>) -> Result<AddedOnion, ControlError> {
        let reply = self.send(&add_onion_command(request)).await?;
        if !reply.is_success() {
            return Err(refused("ADD_ONION", &reply));
        }
        let service_id = reply
            .value("ServiceID")
            .ok_or_else(|| ControlError::Protocol("ADD_ONION answered without ServiceID".into()))?
            .to_owned();
        let private_key = reply
            .value("PrivateKey")
            .map(|key| zeroize::Zeroizing::new(key.to_owned()));
        Ok(AddedOnion {
            service_id,
            private_key,
        })
    }

    /// DEL_ONION (§3.38). `Ok(false)` when tor does not know the service (552).
    pub async fn del_onion(&self, service_id: &str) -> Result<bool, ControlError> {
        if !is_service_id(service_id) {
            return Err(ControlError::Protocol(format!(
                "`{service_id}` is not a v3 service id"
            )));
        }
        let reply = self.send(&format!("DEL_ONION {service_id}")).await?;
        match reply.code {
            250 => Ok(true),
            552 => Ok(false),
            _ => Err(refused("DEL_ONION", &reply)),
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiter>> {
        self.shared
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn closed_error(&self) -> Option<ControlError> {
        self.shared
            .closed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.closed_error().is_some()
    }

    /// Closes the connection; the reader task then ends and the event channel closes.
    pub async fn close(&self, why: ControlError) {
        mark_closed(&self.shared, why);
        let mut writer = self.writer.lock().await;
        let _ = writer.shutdown().await;
    }

    async fn protocol_info_query(&self) -> Result<ProtocolInfo, ControlError> {
        let reply = self.command("PROTOCOLINFO 1").await?;
        parse_protocol_info(&reply)
    }

    async fn authenticate(
        &self,
        info: &ProtocolInfo,
        credentials: &Credentials,
    ) -> Result<(), ControlError> {
        let offers = |method: &str| info.methods.iter().any(|offered| offered == method);
        let command = match credentials {
            Credentials::Password(password) => {
                zeroize::Zeroizing::new(format!("AUTHENTICATE {}", quote(password)))
            }
            Credentials::Cookie(path) => self.cookie_command(info, path).await?,
            Credentials::Auto if offers("NULL") => zeroize::Zeroizing::new("AUTHENTICATE".into()),
            Credentials::Auto => match &info.cookie_file {
                Some(path) if offers("SAFECOOKIE") || offers("COOKIE") => {
                    self.cookie_command(info, path).await?
                }
                _ => {
                    return Err(ControlError::PasswordNeeded {
                        methods: info.methods.join(","),
                    });
                }
            },
        };
        let reply = self.send(&command).await?;
        if reply.is_success() {
            return Ok(());
        }
        let text = format!("{} {}", reply.code, reply.end_text());
        match credentials {
            Credentials::Password(_) => Err(ControlError::WrongPassword { reply: text }),
            _ => Err(ControlError::AuthRejected { reply: text }),
        }
    }

    /// The AUTHENTICATE command for the cookie at `path`: SAFECOOKIE (§3.24) where offered, so a
    /// process posing as tor's control port learns nothing it could replay; plain COOKIE else.
    async fn cookie_command(
        &self,
        info: &ProtocolInfo,
        path: &Path,
    ) -> Result<zeroize::Zeroizing<String>, ControlError> {
        let cookie = zeroize::Zeroizing::new(tokio::fs::read(path).await.map_err(|error| {
            ControlError::CookieUnreadable {
                path: path.display().to_string(),
                reason: error.to_string(),
            }
        })?);
        if !info.methods.iter().any(|method| method == "SAFECOOKIE") {
            return Ok(zeroize::Zeroizing::new(format!(
                "AUTHENTICATE {}",
                hex::encode(&*cookie)
            )));
        }
        let mut client_nonce = [0_u8; 32];
        rand::rng().fill_bytes(&mut client_nonce);
        let reply = self
            .command(&format!(
                "AUTHCHALLENGE SAFECOOKIE {}",
                hex::encode(client_nonce)
            ))
            .await?;
        let text = reply.end_text();
        let field = |name: &str| -> Result<Vec<u8>, ControlError> {
            text.split(' ')
                .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
                .and_then(|value| hex::decode(value).ok())
                .ok_or_else(|| ControlError::Protocol(format!("AUTHCHALLENGE without {name}")))
        };
        let server_hash = field("SERVERHASH")?;
        let server_nonce = field("SERVERNONCE")?;
        let mut message = Vec::with_capacity(cookie.len() + 64);
        message.extend_from_slice(&cookie);
        message.extend_from_slice(&client_nonce);
        message.extend_from_slice(&server_nonce);
        let expected = safecookie_hmac(SAFECOOKIE_SERVER_KEY, &message);
        if !constant_time_eq(&expected, &server_hash) {
            return Err(ControlError::CookieMismatch {
                path: path.display().to_string(),
            });
        }
        let client_hash = safecookie_hmac(SAFECOOKIE_CLIENT_KEY, &message);
        Ok(zeroize::Zeroizing::new(format!(
            "AUTHENTICATE {}",
            hex::encode(client_hash)
        )))
    }
}

/// The HMAC keys of SAFECOOKIE (§3.24).
const SAFECOOKIE_SERVER_KEY: &[u8] = b"Tor safe cookie authentication server-to-controller hash";
const SAFECOOKIE_CLIENT_KEY: &[u8] = b"Tor safe cookie authentication controller-to-server hash";

fn safecookie_hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .fold(0_u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

fn refused(command: &str, reply: &Reply) -> ControlError {
    ControlError::Refused {
        command: command.split(' ').next().unwrap_or_default().to_owned(),
        code: reply.code,
        text: reply.end_text().to_owned(),
    }
}

fn mark_closed(shared: &Shared, why: ControlError) {
    let mut closed = shared.closed.lock().unwrap_or_else(PoisonError::into_inner);
    if closed.is_none() {
        *closed = Some(why);
    }
    drop(closed);
    let mut waiting = shared
        .waiting
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    for waiter in waiting.drain(..) {
        let _ = waiter.send(Err(ControlError::Closed));
    }
}

/// The reader task: replies to the FIFO of waiting callers, events to the event channel.
async fn read_replies(
    mut reader: BufReader<OwnedReadHalf>,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<Reply>,
) {
    let why = loop {
        match read_reply(&mut reader).await {
            Ok(reply) if reply.code == 650 => {
                // Nobody listening is fine: a connection used only for commands.
                let _ = events.send(reply);
            }
            Ok(reply) => {
                let waiter = shared
                    .waiting
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pop_front();
                match waiter {
                    Some(waiter) => {
                        let _ = waiter.send(Ok(reply));
                    }
                    None => {
                        break ControlError::Protocol(format!(
                            "reply {} `{}` to no command",
                            reply.code,
                            reply.end_text()
                        ));
                    }
                }
            }
            Err(error) => break error,
        }
    };
    tracing::debug!(reason = %why, "tor control connection ended");
    mark_closed(&shared, why);
}

/// Reads one reply (§2.3).
pub(crate) async fn read_reply<R>(reader: &mut R) -> Result<Reply, ControlError>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    let mut lines = Vec::new();
    let mut code = None;
    loop {
        let line = read_line(reader).await?;
        if line.len() < 4 {
            return Err(ControlError::Protocol(format!("short reply line `{line}`")));
        }
        let status: u16 = line[..3]
            .parse()
            .map_err(|_| ControlError::Protocol(format!("reply line without status: `{line}`")))?;
        if *code.get_or_insert(status) != status {
            return Err(ControlError::Protocol(
                "status code changed within a reply".into(),
            ));
        }
        let separator = line.as_bytes()[3];
        let text = line[4..].to_owned();
        match separator {
            b' ' => {
                lines.push(ReplyLine { text, data: None });
                return Ok(Reply {
                    code: status,
                    lines,
                });
            }
            b'-' => lines.push(ReplyLine { text, data: None }),
            b'+' => {
                let mut data = Vec::new();
                loop {
                    let data_line = read_line(reader).await?;
                    if data_line == "." {
                        break;
                    }
                    let unescaped = data_line.strip_prefix('.').unwrap_or(&data_line);
                    data.push(unescaped.to_owned());
                }
                lines.push(ReplyLine {
                    text,
                    data: Some(data.join("\n")),
                });
            }
            _ => {
                return Err(ControlError::Protocol(format!(
                    "unknown separator in `{line}`"
                )));
            }
        }
    }
}

async fn read_line<R>(reader: &mut R) -> Result<String, ControlError>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    let mut buffer = Vec::new();
    let read = (&mut *reader)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut buffer)
        .await
        .map_err(|_| ControlError::Closed)?;
    if read == 0 {
        return Err(ControlError::Closed);
    }
    if buffer.last() != Some(&b'\n') {
        return Err(ControlError::Protocol(
            "reply line too long or cut off".into(),
        ));
    }
    buffer.pop();
    if buffer.last() == Some(&b'\r') {
        buffer.pop();
    }
    String::from_utf8(buffer).map_err(|_| ControlError::Protocol("reply is not UTF-8".into()))
}

use tokio::io::AsyncReadExt as _;

/// Parses PROTOCOLINFO's reply (§3.21).
pub(crate) fn parse_protocol_info(reply: &Reply) -> Result<ProtocolInfo, ControlError> {
    let mut info = ProtocolInfo::default();
    let mut saw_auth = false;
    for line in &reply.lines {
        if let Some(rest) = line.text.strip_prefix("AUTH ") {
            saw_auth = true;
            for (key, value) in key_values(rest) {
                match key.as_str() {
                    "METHODS" => info.methods = value.split(',').map(str::to_owned).collect(),
                    "COOKIEFILE" => info.cookie_file = Some(PathBuf::from(value)),
                    _ => {}
                }
            }
        } else if let Some(rest) = line.text.strip_prefix("VERSION ") {
            for (key, value) in key_values(rest) {
                if key == "Tor" {
                    info.tor_version = value;
                }
            }
        }
    }
    if !saw_auth {
        return Err(ControlError::Protocol(
            "PROTOCOLINFO without AUTH line (is this tor's control port?)".into(),
        ));
    }
    Ok(info)
}

/// `KEY=value KEY="quoted value"` pairs of a reply line (§2.1, §3.21).
pub(crate) fn key_values(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let Some(equals) = rest.find('=') else { break };
        let key = rest[..equals].to_owned();
        let after = &rest[equals + 1..];
        let (value, remaining) = if after.starts_with('"') {
            unquote(after)
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (after[..end].to_owned(), &after[end..])
        };
        pairs.push((key, value));
        rest = remaining.trim_start();
    }
    pairs
}

/// Reads a QuotedString (§2.1) at the start of `text`; returns it and what follows.
fn unquote(text: &str) -> (String, &str) {
    let mut value = String::new();
    let mut chars = text.char_indices().skip(1);
    while let Some((index, character)) = chars.next() {
        match character {
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    value.push(match escaped {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        other => other,
                    });
                }
            }
            '"' => return (value, &text[index + 1..]),
            other => value.push(other),
        }
    }
    (value, "")
}

/// A QuotedString (§2.1): backslashes and double quotes escaped.
fn quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for character in text.chars() {
        if character == '"' || character == '\\' {
            quoted.push('\\');
        }
        quoted.push(character);
    }
    quoted.push('"');
    quoted
}

/// Whether `text` looks like a v3 service id: 56 characters of lowercase base32.
pub fn is_service_id(text: &str) -> bool {
    text.len() == 56
        && text
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || (b'2'..=b'7').contains(&byte))
}

/// An HS_DESC event (§4.1.25) about a service's own descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HsDescEvent {
    Uploaded { service_id: String },
    Failed { service_id: String, reason: String },
}

/// Parses `HS_DESC <Action> <HSAddress> <AuthType> <HsDir> [<DescriptorID>] [REASON=…] …`;
/// `None` for other events and other actions.
pub fn parse_hs_desc(event: &Reply) -> Option<HsDescEvent> {
    let text = &event.lines.first()?.text;
    let mut words = text.split(' ');
    if words.next()? != "HS_DESC" {
        return None;
    }
    let action = words.next()?;
    let service_id = words.next()?.to_owned();
    match action {
        "UPLOADED" => Some(HsDescEvent::Uploaded { service_id }),
        "FAILED" => {
            let reason = text
                .split(' ')
                .find_map(|word| word.strip_prefix("REASON="))
                .unwrap_or("UNKNOWN")
                .to_owned();
            Some(HsDescEvent::Failed { service_id, reason })
        }
        _ => None,
    }
}

/// Bootstrap progress from a `STATUS_CLIENT … BOOTSTRAP PROGRESS=n …` event (§4.1.10) or
/// from `GETINFO status/bootstrap-phase` (§3.9), which share the format.
pub fn parse_bootstrap_progress(text: &str) -> Option<u32> {
    if !text.contains("BOOTSTRAP") {
        return None;
    }
    text.split(' ')
        .find_map(|word| word.strip_prefix("PROGRESS="))
        .and_then(|value| value.parse().ok())
}

/// Whether a tor version string (`0.4.9.11`, `0.4.8.1-alpha (git-…)`) is at least `minimum`.
pub fn version_at_least(version: &str, minimum: [u32; 4]) -> bool {
    let numbers: Vec<u32> = version
        .split(|character: char| !character.is_ascii_digit())
        .take_while(|part| !part.is_empty())
        .take(4)
        .map(|part| part.parse().unwrap_or(0))
        .collect();
    if numbers.len() < 3 {
        return false;
    }
    let mut padded = [0_u32; 4];
    for (slot, number) in padded.iter_mut().zip(numbers) {
        *slot = number;
    }
    padded >= minimum
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(text: &str) -> Result<Reply, ControlError> {
        let mut reader = BufReader::new(text.as_bytes());
        read_reply(&mut reader).await
    }

    #[test]
    fn add_onion_limits_the_streams_of_each_circuit() {
        let ports = vec![(25, "127.0.0.1:10000".to_owned())];
        let new = AddOnion {
            key: OnionKey::New,
            ports: ports.clone(),
            pow_defense: true,
            max_streams: 32,
        };
        assert_eq!(
            add_onion_command(&new).as_str(),
            "ADD_ONION NEW:ED25519-V3 Flags=MaxStreamsCloseCircuit MaxStreams=32 \
             PoWDefensesEnabled=1 Port=25,127.0.0.1:10000"
        );
        let existing = AddOnion {
            key: OnionKey::Existing("KEY"),
            ports,
            pow_defense: false,
            max_streams: 32,
        };
        assert_eq!(
            add_onion_command(&existing).as_str(),
            "ADD_ONION ED25519-V3:KEY Flags=DiscardPK,MaxStreamsCloseCircuit MaxStreams=32 \
             Port=25,127.0.0.1:10000"
        );
        let unlimited = AddOnion {
            max_streams: 0,
            ..existing
        };
        assert_eq!(
            add_onion_command(&unlimited).as_str(),
            "ADD_ONION ED25519-V3:KEY Flags=DiscardPK Port=25,127.0.0.1:10000"
        );
    }

    #[tokio::test]
    async fn replies_with_mid_and_data_lines() {
        let reply = parse(
            "250-ServiceID=abc\r\n250+PrivateKey=\r\nED25519-V3:xyz\r\n..dot\r\n.\r\n250 OK\r\n",
        )
        .await
        .unwrap();
        assert_eq!(reply.code, 250);
        assert_eq!(reply.value("ServiceID"), Some("abc"));
        assert_eq!(reply.value("PrivateKey"), Some("ED25519-V3:xyz\n.dot"));
        assert_eq!(reply.end_text(), "OK");
        assert!(matches!(
            parse("250-a\r\n").await,
            Err(ControlError::Closed)
        ));
        assert!(matches!(
            parse("250-a\r\n251 b\r\n").await,
            Err(ControlError::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn protocol_info_is_understood() {
        let reply = parse(
            "250-PROTOCOLINFO 1\r\n250-AUTH METHODS=COOKIE,SAFECOOKIE,HASHEDPASSWORD \
             COOKIEFILE=\"/var/lib/tor/control_auth_cookie\"\r\n\
             250-VERSION Tor=\"0.4.9.11\"\r\n250 OK\r\n",
        )
        .await
        .unwrap();
        let info = parse_protocol_info(&reply).unwrap();
        assert_eq!(info.methods, ["COOKIE", "SAFECOOKIE", "HASHEDPASSWORD"]);
        assert_eq!(
            info.cookie_file.as_deref(),
            Some(Path::new("/var/lib/tor/control_auth_cookie"))
        );
        assert_eq!(info.tor_version, "0.4.9.11");
    }

    #[test]
    fn events_and_versions() {
        let event = |text: &str| Reply {
            code: 650,
            lines: vec![ReplyLine {
                text: text.into(),
                data: None,
            }],
        };
        assert_eq!(
            parse_hs_desc(&event("HS_DESC UPLOADED abc UNKNOWN $AAAA~relay")),
            Some(HsDescEvent::Uploaded {
                service_id: "abc".into()
            })
        );
        assert_eq!(
            parse_hs_desc(&event(
                "HS_DESC FAILED abc UNKNOWN $AAAA~relay REASON=UPLOAD_REJECTED"
            )),
            Some(HsDescEvent::Failed {
                service_id: "abc".into(),
                reason: "UPLOAD_REJECTED".into()
            })
        );
        assert_eq!(parse_hs_desc(&event("HS_DESC UPLOAD abc UNKNOWN x")), None);
        assert_eq!(
            parse_bootstrap_progress("NOTICE BOOTSTRAP PROGRESS=85 TAG=ap_conn SUMMARY=\"x\""),
            Some(85)
        );
        assert!(version_at_least("0.4.9.11", [0, 4, 9, 2]));
        assert!(version_at_least("0.4.9.2-alpha (git-abc)", [0, 4, 9, 2]));
        assert!(!version_at_least("0.4.8.13", [0, 4, 9, 2]));
        assert!(!version_at_least("0.2.4.0", [0, 3, 5, 0]));
        assert!(!version_at_least("garbage", [0, 3, 5, 0]));
    }

    #[test]
    fn quoting_and_ids() {
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(
            key_values("METHODS=NULL COOKIEFILE=\"/a b/\\\"c\" X=1"),
            vec![
                ("METHODS".into(), "NULL".into()),
                ("COOKIEFILE".into(), "/a b/\"c".into()),
                ("X".into(), "1".into())
            ]
        );
        assert!(is_service_id(&"a".repeat(56)));
        assert!(!is_service_id(&"A".repeat(56)));
        assert!(!is_service_id("abc def"));
    }
}
