//! Test support for the IMAP protocol tests: an in-memory [`MailStore`] (tests only; the real
//! SQL store is exercised by the live-client tests) and a line-per-command session driver over
//! an in-memory duplex stream or a TCP connection.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use onionpost_imap::mailstore::*;
use onionpost_imap::server::{ConnectionInfo, ImapServer, Limits, ListenerScope, Security};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream,
};
use tokio::sync::broadcast;

struct MemMessage {
    uid: u32,
    flags: Vec<Flag>,
    date: DateTime<Utc>,
    bytes: Bytes,
}

struct MemMailbox {
    id: MailboxId,
    uid_validity: u32,
    uid_next: u32,
    subscribed: bool,
    special: Option<SpecialUse>,
    version: u64,
    messages: Vec<MemMessage>,
}

#[derive(Default)]
struct MemAccount {
    mailboxes: BTreeMap<String, MemMailbox>,
}

/// An in-memory mail store with the semantics the trait documents.
pub struct MemStore {
    logins: HashMap<String, (String, AccountId)>,
    accounts: Mutex<HashMap<AccountId, MemAccount>>,
    watchers: Mutex<HashMap<AccountId, broadcast::Sender<MailboxId>>>,
    next_id: Mutex<i64>,
    pub quota_limit: u64,
}

impl MemStore {
    pub fn new(users: &[(&str, &str)]) -> Arc<Self> {
        let mut store = MemStore {
            logins: HashMap::new(),
            accounts: Mutex::new(HashMap::new()),
            watchers: Mutex::new(HashMap::new()),
            next_id: Mutex::new(1),
            quota_limit: 10 * 1024 * 1024,
        };
        for (login, password) in users {
            store.logins.insert(
                (*login).to_owned(),
                ((*password).to_owned(), format!("acct-{login}")),
            );
        }
        let store = Arc::new(store);
        for (login, _) in users {
            let account = format!("acct-{login}");
            for (name, special) in [
                ("INBOX", Some(SpecialUse::Inbox)),
                ("Sent", Some(SpecialUse::Sent)),
                ("Drafts", Some(SpecialUse::Drafts)),
                ("Trash", Some(SpecialUse::Trash)),
                ("Junk", Some(SpecialUse::Junk)),
            ] {
                store.insert_mailbox(&account, name, special);
            }
        }
        store
    }

    fn insert_mailbox(&self, account: &str, name: &str, special: Option<SpecialUse>) {
        let mut next = self.next_id.lock().unwrap();
        let id = *next;
        *next += 1;
        let mut accounts = self.accounts.lock().unwrap();
        accounts
            .entry(account.to_owned())
            .or_default()
            .mailboxes
            .insert(
                name.to_owned(),
                MemMailbox {
                    id,
                    uid_validity: 1000 + id as u32,
                    uid_next: 1,
                    subscribed: true,
                    special,
                    version: 1,
                    messages: Vec::new(),
                },
            );
    }

    fn notify(&self, account: &str, id: MailboxId) {
        if let Some(sender) = self.watchers.lock().unwrap().get(account) {
            let _ = sender.send(id);
        }
    }

    fn with<T>(
        &self,
        account: &str,
        f: impl FnOnce(&mut MemAccount) -> Result<T, MailStoreError>,
    ) -> Result<T, MailStoreError> {
        let mut accounts = self.accounts.lock().unwrap();
        let account = accounts.entry(account.to_owned()).or_default();
        f(account)
    }

    fn by_id(account: &mut MemAccount, id: MailboxId) -> Result<&mut MemMailbox, MailStoreError> {
        account
            .mailboxes
            .values_mut()
            .find(|m| m.id == id)
            .ok_or(MailStoreError::NoSuchMailbox)
    }

    fn normalize(name: &str) -> String {
        if name.eq_ignore_ascii_case("INBOX") {
            "INBOX".to_owned()
        } else {
            name.to_owned()
        }
    }

    fn status_of(m: &MemMailbox) -> MailboxStatus {
        MailboxStatus {
            id: m.id,
            uid_validity: m.uid_validity,
            uid_next: m.uid_next,
            messages: m.messages.len() as u32,
            unseen: m
                .messages
                .iter()
                .filter(|x| !x.flags.iter().any(|f| f == "\\Seen"))
                .count() as u32,
            version: m.version,
        }
    }

    fn header(bytes: &Bytes) -> Bytes {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + 4)
            .unwrap_or(bytes.len());
        bytes.slice(..end)
    }
}

fn apply(flags: &mut Vec<Flag>, op: FlagOperation, given: &[Flag]) {
    match op {
        FlagOperation::Replace => *flags = given.to_vec(),
        FlagOperation::Add => {
            for f in given {
                if !flags.iter().any(|x| x.eq_ignore_ascii_case(f)) {
                    flags.push(f.clone());
                }
            }
        }
        FlagOperation::Remove => flags.retain(|x| !given.iter().any(|f| f.eq_ignore_ascii_case(x))),
    }
}

#[async_trait::async_trait]
impl MailStore for MemStore {
    async fn login(&self, login: &str, password: &str) -> Result<LoggedIn, LoginError> {
        if login == "backoff" {
            return Err(LoginError::BackOff {
                retry_after_secs: 7,
            });
        }
        match self.logins.get(login) {
            Some((expected, account)) if expected == password => Ok(LoggedIn {
                account_id: account.clone(),
                login: login.to_owned(),
            }),
            _ => Err(LoginError::Invalid),
        }
    }

    async fn list_mailboxes(&self, account: &str) -> Result<Vec<MailboxInfo>, MailStoreError> {
        self.with(account, |a| {
            Ok(a.mailboxes
                .iter()
                .map(|(name, m)| MailboxInfo {
                    id: m.id,
                    name: name.clone(),
                    special_use: m.special,
                    subscribed: m.subscribed,
                })
                .collect())
        })
    }

    async fn create_mailbox(&self, account: &str, name: &str) -> Result<(), MailStoreError> {
        let name = Self::normalize(name);
        let exists = self.with(account, |a| Ok(a.mailboxes.contains_key(&name)))?;
        if exists {
            return Err(MailStoreError::MailboxExists);
        }
        self.insert_mailbox(account, &name, None);
        Ok(())
    }

    async fn delete_mailbox(&self, account: &str, name: &str) -> Result<(), MailStoreError> {
        let name = Self::normalize(name);
        if name == "INBOX" {
            return Err(MailStoreError::Cannot("INBOX cannot be deleted".to_owned()));
        }
        self.with(account, |a| {
            a.mailboxes
                .remove(&name)
                .map(|_| ())
                .ok_or(MailStoreError::NoSuchMailbox)
        })
    }

    async fn rename_mailbox(
        &self,
        account: &str,
        from: &str,
        to: &str,
    ) -> Result<(), MailStoreError> {
        let (from, to) = (Self::normalize(from), Self::normalize(to));
        self.with(account, |a| {
            if a.mailboxes.contains_key(&to) {
                return Err(MailStoreError::MailboxExists);
            }
            let mailbox = a
                .mailboxes
                .remove(&from)
                .ok_or(MailStoreError::NoSuchMailbox)?;
            a.mailboxes.insert(to, mailbox);
            Ok(())
        })
    }

    async fn set_subscribed(
        &self,
        account: &str,
        name: &str,
        subscribed: bool,
    ) -> Result<(), MailStoreError> {
        let name = Self::normalize(name);
        self.with(account, |a| {
            let m = a
                .mailboxes
                .get_mut(&name)
                .ok_or(MailStoreError::NoSuchMailbox)?;
            m.subscribed = subscribed;
            Ok(())
        })
    }

    async fn status(&self, account: &str, name: &str) -> Result<MailboxStatus, MailStoreError> {
        let name = Self::normalize(name);
        self.with(account, |a| {
            a.mailboxes
                .get(&name)
                .map(Self::status_of)
                .ok_or(MailStoreError::NoSuchMailbox)
        })
    }

    async fn open_mailbox(
        &self,
        account: &str,
        name: &str,
    ) -> Result<MailboxSnapshot, MailStoreError> {
        let name = Self::normalize(name);
        self.with(account, |a| {
            let m = a
                .mailboxes
                .get(&name)
                .ok_or(MailStoreError::NoSuchMailbox)?;
            Ok(MailboxSnapshot {
                status: Self::status_of(m),
                messages: m
                    .messages
                    .iter()
                    .map(|x| MessageMeta {
                        uid: x.uid,
                        flags: x.flags.clone(),
                        internal_date: x.date,
                        size: x.bytes.len() as u64,
                    })
                    .collect(),
            })
        })
    }

    async fn mailbox_version(
        &self,
        account: &str,
        mailbox: MailboxId,
    ) -> Result<u64, MailStoreError> {
        self.with(account, |a| Ok(Self::by_id(a, mailbox)?.version))
    }

    async fn fetch(
        &self,
        account: &str,
        mailbox: MailboxId,
        uids: &[u32],
        part: Part,
    ) -> Result<Vec<(u32, Bytes)>, MailStoreError> {
        self.with(account, |a| {
            let m = Self::by_id(a, mailbox)?;
            Ok(m.messages
                .iter()
                .filter(|x| uids.contains(&x.uid))
                .map(|x| {
                    let bytes = match part {
                        Part::Full => x.bytes.clone(),
                        Part::Header => Self::header(&x.bytes),
                    };
                    (x.uid, bytes)
                })
                .collect())
        })
    }

    async fn store_flags(
        &self,
        account: &str,
        mailbox: MailboxId,
        uids: &[u32],
        operation: FlagOperation,
        flags: &[Flag],
    ) -> Result<Vec<(u32, Vec<Flag>)>, MailStoreError> {
        let result = self.with(account, |a| {
            let m = Self::by_id(a, mailbox)?;
            let mut out = Vec::new();
            for x in m.messages.iter_mut().filter(|x| uids.contains(&x.uid)) {
                apply(&mut x.flags, operation, flags);
                out.push((x.uid, x.flags.clone()));
            }
            m.version += 1;
            Ok(out)
        })?;
        self.notify(account, mailbox);
        Ok(result)
    }

    async fn copy(
        &self,
        account: &str,
        from: MailboxId,
        uids: &[u32],
        to: &str,
    ) -> Result<Copied, MailStoreError> {
        let to = Self::normalize(to);
        let (copied, to_id) = self.with(account, |a| {
            let items: Vec<(u32, Vec<Flag>, DateTime<Utc>, Bytes)> = Self::by_id(a, from)?
                .messages
                .iter()
                .filter(|x| uids.contains(&x.uid))
                .map(|x| (x.uid, x.flags.clone(), x.date, x.bytes.clone()))
                .collect();
            let dest = a
                .mailboxes
                .get_mut(&to)
                .ok_or(MailStoreError::NoSuchMailbox)?;
            let mut pairs = Vec::new();
            for (uid, flags, date, bytes) in items {
                let new_uid = dest.uid_next;
                dest.uid_next += 1;
                dest.messages.push(MemMessage {
                    uid: new_uid,
                    flags,
                    date,
                    bytes,
                });
                pairs.push((uid, new_uid));
            }
            dest.version += 1;
            Ok((
                Copied {
                    uid_validity: dest.uid_validity,
                    uids: pairs,
                },
                dest.id,
            ))
        })?;
        self.notify(account, to_id);
        Ok(copied)
    }

    async fn move_messages(
        &self,
        account: &str,
        from: MailboxId,
        uids: &[u32],
        to: &str,
    ) -> Result<Copied, MailStoreError> {
        let copied = self.copy(account, from, uids, to).await?;
        self.with(account, |a| {
            let m = Self::by_id(a, from)?;
            m.messages.retain(|x| !uids.contains(&x.uid));
            m.version += 1;
            Ok(())
        })?;
        self.notify(account, from);
        Ok(copied)
    }

    async fn expunge(
        &self,
        account: &str,
        mailbox: MailboxId,
        uids: Option<&[u32]>,
    ) -> Result<Vec<u32>, MailStoreError> {
        let removed = self.with(account, |a| {
            let m = Self::by_id(a, mailbox)?;
            let mut removed = Vec::new();
            m.messages.retain(|x| {
                let chosen = uids.is_none_or(|u| u.contains(&x.uid));
                let gone = chosen && x.flags.iter().any(|f| f == "\\Deleted");
                if gone {
                    removed.push(x.uid);
                }
                !gone
            });
            m.version += 1;
            Ok(removed)
        })?;
        self.notify(account, mailbox);
        Ok(removed)
    }

    async fn append(
        &self,
        account: &str,
        mailbox: &str,
        flags: &[Flag],
        internal_date: Option<DateTime<Utc>>,
        message: Bytes,
    ) -> Result<(u32, u32), MailStoreError> {
        let name = Self::normalize(mailbox);
        let used = self.quota(account).await?.used_bytes;
        if used + message.len() as u64 > self.quota_limit {
            return Err(MailStoreError::OverQuota {
                used_bytes: used,
                limit_bytes: self.quota_limit,
            });
        }
        let (result, id) = self.with(account, |a| {
            let m = a
                .mailboxes
                .get_mut(&name)
                .ok_or(MailStoreError::NoSuchMailbox)?;
            let uid = m.uid_next;
            m.uid_next += 1;
            m.messages.push(MemMessage {
                uid,
                flags: flags.to_vec(),
                date: internal_date.unwrap_or_else(Utc::now),
                bytes: message,
            });
            m.version += 1;
            Ok(((m.uid_validity, uid), m.id))
        })?;
        self.notify(account, id);
        Ok(result)
    }

    async fn quota(&self, account: &str) -> Result<QuotaUsage, MailStoreError> {
        let limit = self.quota_limit;
        self.with(account, |a| {
            let mut used = 0u64;
            let mut count = 0u64;
            for m in a.mailboxes.values() {
                for x in &m.messages {
                    used += x.bytes.len() as u64;
                    count += 1;
                }
            }
            Ok(QuotaUsage {
                used_bytes: used,
                limit_bytes: limit,
                messages: count,
            })
        })
    }

    fn watch(&self, account: &str) -> broadcast::Receiver<MailboxId> {
        self.watchers
            .lock()
            .unwrap()
            .entry(account.to_owned())
            .or_insert_with(|| broadcast::channel(64).0)
            .subscribe()
    }
}

/// A client talking to one session, in memory or over TCP: write a line, read lines until the
/// tagged reply.
pub struct Client {
    pub reader: BufReader<Box<dyn AsyncRead + Send + Unpin>>,
    pub writer: Box<dyn AsyncWrite + Send + Unpin>,
    /// The in-memory session's task; `None` over TCP.
    pub task: Option<tokio::task::JoinHandle<()>>,
}

pub fn limits() -> Limits {
    Limits {
        max_message_size: 4096,
        max_line: 1024,
        max_connections_per_account: 3,
        idle_timeout: Duration::from_secs(30 * 60),
        fetch_slice_bytes: 1024,
        ..Limits::default()
    }
}

impl Client {
    pub async fn connect(server: &ImapServer, security: Security) -> (Client, String) {
        Self::connect_with(
            server,
            ConnectionInfo {
                connection_key: "test".to_owned(),
                security,
                starttls: false,
                required_account: None,
                login_alias: None,
            },
        )
        .await
    }

    pub async fn connect_with(server: &ImapServer, info: ConnectionInfo) -> (Client, String) {
        let (client, server_side) = tokio::io::duplex(1 << 20);
        let server = server.clone();
        let task = tokio::spawn(async move {
            server.serve_stream(Box::new(server_side), info).await;
        });
        Self::start(client, task).await
    }

    /// A session on the listener that `scope` stands for (its own back-off and pre-login count).
    pub async fn connect_in(
        server: &ImapServer,
        scope: &ListenerScope,
        info: ConnectionInfo,
    ) -> (Client, String) {
        let (client, server_side) = tokio::io::duplex(1 << 20);
        let server = server.clone();
        let scope = scope.clone();
        let task = tokio::spawn(async move {
            server
                .serve_stream_in(&scope, Box::new(server_side), info)
                .await;
        });
        Self::start(client, task).await
    }

    /// A session on a live listener at `address`.
    pub async fn connect_tcp(address: std::net::SocketAddr) -> (Client, String) {
        let stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (read, write) = stream.into_split();
        Self::greeted(Box::new(read), Box::new(write), None).await
    }

    async fn start(client: DuplexStream, task: tokio::task::JoinHandle<()>) -> (Client, String) {
        let (read, write) = tokio::io::split(client);
        Self::greeted(Box::new(read), Box::new(write), Some(task)).await
    }

    async fn greeted(
        read: Box<dyn AsyncRead + Send + Unpin>,
        write: Box<dyn AsyncWrite + Send + Unpin>,
        task: Option<tokio::task::JoinHandle<()>>,
    ) -> (Client, String) {
        let mut client = Client {
            reader: BufReader::new(read),
            writer: write,
            task,
        };
        let greeting = client.line().await;
        (client, greeting)
    }

    pub async fn send(&mut self, raw: &str) {
        self.writer.write_all(raw.as_bytes()).await.unwrap();
        self.writer.flush().await.unwrap();
    }

    /// One line exactly as the server wrote it, CRLF included (no literal handling).
    pub async fn raw_line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            self.reader.read_until(b'\n', &mut line),
        )
        .await
        .expect("server answered within 10 s")
        .unwrap();
        line
    }

    /// One line (with literals inlined), without the CRLF; empty at EOF.
    pub async fn line(&mut self) -> String {
        let mut out = Vec::new();
        loop {
            let mut line = Vec::new();
            let read = tokio::time::timeout(
                Duration::from_secs(10),
                self.reader.read_until(b'\n', &mut line),
            )
            .await
            .expect("server answered within 10 s")
            .unwrap();
            if read == 0 {
                break;
            }
            out.extend_from_slice(&line);
            // A literal `{n}\r\n` continues with n bytes and then the rest of the line.
            let trimmed = line.strip_suffix(b"\r\n").unwrap_or(&line);
            if let Some(open) = trimmed.iter().rposition(|b| *b == b'{')
                && trimmed.ends_with(b"}")
                && let Ok(count) = std::str::from_utf8(&trimmed[open + 1..trimmed.len() - 1])
                    .unwrap_or("x")
                    .parse::<usize>()
            {
                let mut literal = vec![0; count];
                self.reader.read_exact(&mut literal).await.unwrap();
                out.extend_from_slice(&literal);
                continue;
            }
            break;
        }
        let text = String::from_utf8_lossy(&out).into_owned();
        text.strip_suffix("\r\n").unwrap_or(&text).to_owned()
    }

    /// Sends `tag command` and returns every line up to and including the tagged reply.
    pub async fn command(&mut self, tag: &str, command: &str) -> Vec<String> {
        self.send(&format!("{tag} {command}\r\n")).await;
        self.until_tagged(tag).await
    }

    pub async fn until_tagged(&mut self, tag: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                lines.push("<eof>".to_owned());
                return lines;
            }
            let done = line.starts_with(&format!("{tag} "));
            lines.push(line);
            if done {
                return lines;
            }
        }
    }
}

/// A test message.
pub fn message(subject: &str, from: &str, body: &str) -> String {
    format!(
        "From: Alice Example <{from}>\r\nTo: bob@example.org\r\nSubject: {subject}\r\nDate: Mon, 7 Feb 1994 21:52:25 -0800\r\nMessage-ID: <{subject}@example.org>\r\n\r\n{body}\r\n"
    )
}
