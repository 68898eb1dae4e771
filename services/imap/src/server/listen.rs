//! Listeners: accepting connections of each kind (clearnet with STARTTLS, implicit TLS, one
//! identity's onion). Each listener has its own [`ListenerScope`], so what happens on one (failed
//! logins, connections waiting to log in) never changes what another answers.
//!
//! The library never binds a port by itself: [`ImapServer::serve`] takes a bound listener and
//! a shutdown token (mini-redis style), so tests and the service module decide where to listen.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::connection;
use super::context::{ByteStream, ConnectionInfo, ListenerScope, Security, Shared};
pub use super::context::{Limits, SessionHook};
use crate::mailstore::{AccountId, SharedMailStore};

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

    /// The identity's address and its owner's login: on this onion the address may stand for
    /// the login (what the onion's autoconfig document tells mail clients to send, since the
    /// account's login would link its identities). `None`: no such alias.
    async fn login_alias(&self, _identity_id: &str) -> Option<(String, String)> {
        None
    }
}

/// The IMAP server: cheap to clone, one per process.
#[derive(Clone)]
pub struct ImapServer {
    shared: Arc<Shared>,
    /// The scope of sessions handed in through [`ImapServer::serve_stream`] (tests); each
    /// [`ImapServer::serve`] call has its own.
    default_scope: ListenerScope,
}

impl ImapServer {
    pub fn new(store: SharedMailStore, limits: Limits, tls: Option<TlsAcceptor>) -> Self {
        ImapServer {
            shared: Arc::new(Shared::new(store, limits, tls, None)),
            default_scope: ListenerScope::new(),
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
            shared: Arc::new(Shared::new(store, limits, tls, Some(hook))),
            default_scope: ListenerScope::new(),
        }
    }

    /// Accepts connections until `shutdown`; each runs in its own task, so one bad session
    /// never holds up another. The listener gets a [`ListenerScope`] of its own: its login
    /// back-off and its count of connections waiting to log in are shared with no other.
    pub async fn serve(
        &self,
        listener: TcpListener,
        kind: ListenerKind,
        shutdown: CancellationToken,
    ) {
        let local = listener.local_addr().ok();
        tracing::info!(listen = ?local, kind = kind_name(&kind), "imap listening");
        let scope = ListenerScope::new();
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
            let scope = scope.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = server.accept(stream, peer, kind, scope) => {}
                }
            });
        }
    }

    async fn accept(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        kind: ListenerKind,
        scope: ListenerScope,
    ) {
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
                    login_alias: None,
                };
                self.serve_stream_in(&scope, Box::new(stream), info).await;
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
                    login_alias: None,
                };
                self.serve_stream_in(&scope, Box::new(tls), info).await;
            }
            ListenerKind::Onion {
                identity_id,
                owners,
            } => {
                let owner = owners.owner_of(&identity_id).await;
                let login_alias = owners.login_alias(&identity_id).await;
                let info = ConnectionInfo {
                    // Every onion connection comes from tor on loopback: no per-peer back-off
                    // (it would let anyone lock the owner out); the listener's own scope keeps
                    // the per-login back-off apart from every other onion's.
                    connection_key: String::new(),
                    security: Security::Onion,
                    starttls: false,
                    required_account: Some(owner),
                    login_alias,
                };
                self.serve_stream_in(&scope, Box::new(stream), info).await;
            }
        }
    }

    /// Runs one session over any byte stream (tests use an in-memory duplex), in the scope
    /// every `serve_stream` session of this server shares.
    pub async fn serve_stream(&self, stream: Box<dyn ByteStream>, info: ConnectionInfo) {
        self.serve_stream_in(&self.default_scope, stream, info)
            .await;
    }

    /// Runs one session as if it had arrived on the listener that `scope` belongs to.
    pub async fn serve_stream_in(
        &self,
        scope: &ListenerScope,
        stream: Box<dyn ByteStream>,
        info: ConnectionInfo,
    ) {
        connection::run(self.shared.clone(), scope.clone(), stream, info).await;
    }
}

fn kind_name(kind: &ListenerKind) -> &'static str {
    match kind {
        ListenerKind::Clearnet => "clearnet",
        ListenerKind::ImplicitTls => "tls",
        ListenerKind::Onion { .. } => "onion",
    }
}
