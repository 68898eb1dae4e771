//! Listeners and the limits that span connections.
//!
//! The library never binds a port by itself: [`ImapServer::serve`] takes a bound listener and
//! a shutdown token (mini-redis style), so tests and the service module decide where to listen.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::connection::{self, ByteStream, ConnectionInfo, IDLE_TIMEOUT_DEFAULT, Security};
use crate::mailstore::{AccountId, SharedMailStore};

/// Limits with clear replies (issue 5, "Limits").
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest APPEND literal, in octets; bigger ones get `[TOOBIG]` before they are sent.
    pub max_message_size: u32,
    /// Longest command line outside literals, in octets (Dovecot uses 64 KiB too).
    pub max_line: u32,
    /// Sessions one account may have open at once; more get `NO [LIMIT]` at login.
    pub max_connections_per_account: usize,
    /// RFC 3501 §5.4: an inactivity autologout timer of at least 30 minutes.
    pub idle_timeout: Duration,
    /// Message data per FETCH slice: a large FETCH is written out slice by slice instead of
    /// being built in memory whole.
    pub fetch_slice_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 25 * 1024 * 1024,
            max_line: 64 * 1024,
            max_connections_per_account: 20,
            idle_timeout: IDLE_TIMEOUT_DEFAULT,
            fetch_slice_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Which listener a connection arrived on.
#[derive(Clone)]
pub enum ListenerKind {
    /// The clearnet listener (`imap.listen`): STARTTLS when a certificate is configured;
    /// LOGINDISABLED until then unless the peer is on loopback.
    Clearnet,
    /// Implicit TLS (`imap.tls_listen`, RFC 8314).
    ImplicitTls,
    /// One identity's onion: plain IMAP (tor encrypts), and only its owner may log in. The
    /// owner is looked up per connection, not once per listener: the onion (and so this
    /// listener) exists before the identity is recorded for its account.
    Onion {
        identity_id: String,
        owners: Arc<dyn IdentityOwners>,
    },
}

/// Who owns an identity, so the onion listener of identity X admits only X's account.
#[async_trait::async_trait]
pub trait IdentityOwners: Send + Sync + 'static {
    /// The account that owns the identity, or `None` when no hosted account does.
    async fn owner_of(&self, identity_id: &str) -> Option<AccountId>;
}

/// Called when a session opens; what it returns is dropped when the session ends (the imap
/// service's own session counter for GetStats, next to the `imap_sessions_open` gauge).
pub type SessionHook = Arc<dyn Fn() -> Box<dyn Send> + Send + Sync>;

/// What every session of a server shares.
pub(crate) struct Shared {
    pub store: SharedMailStore,
    pub limits: Limits,
    pub tls: Option<TlsAcceptor>,
    connections: Mutex<HashMap<AccountId, usize>>,
    session_hook: Option<SessionHook>,
}

impl Shared {
    /// Counts an open session in the `imap_sessions_open` gauge until the guard drops.
    pub(crate) fn session_opened(&self) -> SessionGuard {
        metrics::gauge!("imap_sessions_open").increment(1.0);
        SessionGuard {
            _hook: self.session_hook.as_ref().map(|hook| hook()),
        }
    }

    /// Takes one of the account's connection slots, if any is left.
    pub(crate) fn take_slot(self: &Arc<Self>, account: &str) -> Option<AccountSlot> {
        let mut connections = self.connections.lock().expect("lock");
        let count = connections.entry(account.to_owned()).or_default();
        if *count >= self.limits.max_connections_per_account {
            return None;
        }
        *count += 1;
        Some(AccountSlot {
            shared: self.clone(),
            account: account.to_owned(),
        })
    }
}

pub(crate) struct SessionGuard {
    _hook: Option<Box<dyn Send>>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        metrics::gauge!("imap_sessions_open").decrement(1.0);
    }
}

/// One logged-in session's claim on its account's connection budget.
pub(crate) struct AccountSlot {
    shared: Arc<Shared>,
    account: AccountId,
}

impl Drop for AccountSlot {
    fn drop(&mut self) {
        let mut connections = self.shared.connections.lock().expect("lock");
        if let Some(count) = connections.get_mut(&self.account) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                connections.remove(&self.account);
            }
        }
    }
}

/// The IMAP server: cheap to clone, one per process.
#[derive(Clone)]
pub struct ImapServer {
    shared: Arc<Shared>,
}

impl ImapServer {
    pub fn new(store: SharedMailStore, limits: Limits, tls: Option<TlsAcceptor>) -> Self {
        ImapServer {
            shared: Arc::new(Shared {
                store,
                limits,
                tls,
                connections: Mutex::new(HashMap::new()),
                session_hook: None,
            }),
        }
    }

    /// Like [`ImapServer::new`], calling `hook` for every session that opens.
    pub fn with_session_hook(
        store: SharedMailStore,
        limits: Limits,
        tls: Option<TlsAcceptor>,
        hook: SessionHook,
    ) -> Self {
        ImapServer {
            shared: Arc::new(Shared {
                store,
                limits,
                tls,
                connections: Mutex::new(HashMap::new()),
                session_hook: Some(hook),
            }),
        }
    }

    /// Accepts connections until `shutdown`; each runs in its own task, so one bad session
    /// never holds up another.
    pub async fn serve(
        &self,
        listener: TcpListener,
        kind: ListenerKind,
        shutdown: CancellationToken,
    ) {
        let local = listener.local_addr().ok();
        tracing::info!(listen = ?local, kind = kind_name(&kind), "imap listening");
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: wait a moment rather than spin.
                    tracing::warn!(%error, "imap accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let server = self.clone();
            let kind = kind.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = server.accept(stream, peer, kind) => {}
                }
            });
        }
    }

    async fn accept(&self, stream: TcpStream, peer: SocketAddr, kind: ListenerKind) {
        let _ = stream.set_nodelay(true);
        match kind {
            ListenerKind::Clearnet => {
                let security = if peer.ip().is_loopback() {
                    Security::Loopback
                } else {
                    Security::Cleartext
                };
                let info = ConnectionInfo {
                    connection_key: peer.ip().to_string(),
                    security,
                    starttls: self.shared.tls.is_some(),
                    required_account: None,
                };
                self.serve_stream(Box::new(stream), info).await;
            }
            ListenerKind::ImplicitTls => {
                let Some(acceptor) = self.shared.tls.clone() else {
                    return;
                };
                let handshake =
                    tokio::time::timeout(Duration::from_secs(30), acceptor.accept(stream)).await;
                let Ok(Ok(tls)) = handshake else {
                    tracing::debug!("imap tls handshake failed");
                    return;
                };
                let info = ConnectionInfo {
                    connection_key: peer.ip().to_string(),
                    security: Security::Tls,
                    starttls: false,
                    required_account: None,
                };
                self.serve_stream(Box::new(tls), info).await;
            }
            ListenerKind::Onion {
                identity_id,
                owners,
            } => {
                let owner = owners.owner_of(&identity_id).await;
                let info = ConnectionInfo {
                    // Every onion connection comes from tor on loopback; back off per identity.
                    connection_key: format!("onion:{identity_id}"),
                    security: Security::Onion,
                    starttls: false,
                    required_account: Some(owner),
                };
                self.serve_stream(Box::new(stream), info).await;
            }
        }
    }

    /// Runs one session over any byte stream (tests use an in-memory duplex).
    pub async fn serve_stream(&self, stream: Box<dyn ByteStream>, info: ConnectionInfo) {
        connection::run(self.shared.clone(), stream, info).await;
    }
}

fn kind_name(kind: &ListenerKind) -> &'static str {
    match kind {
        ListenerKind::Clearnet => "clearnet",
        ListenerKind::ImplicitTls => "tls",
        ListenerKind::Onion { .. } => "onion",
    }
}
