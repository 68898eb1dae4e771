//! What every layer of the IMAP server sees: the limits, the state the whole server shares, the
//! state one listener's sessions share, and what a connection knows about itself.
//!
//! This module imports no sibling: `listen`, `connection`, `session` and the command handlers in
//! `op` all build on it, so none of them has to reach back into a layer further out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

use crate::backoff::LoginBackOff;
use crate::mailstore::{AccountId, SharedMailStore};

/// RFC 3501 §5.4: an inactivity autologout timer of at least 30 minutes (once logged in).
pub(crate) const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30 * 60);

/// Limits with clear replies (issue 5, "Limits"; issue 19, "IMAP before login").
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest APPEND literal, in octets; bigger ones get `[TOOBIG]` before they are sent.
    pub max_message_size: u32,
    /// Longest command line outside literals, in octets (Dovecot uses 64 KiB too). Before
    /// login it also bounds a whole command, literals included.
    pub max_line: u32,
    /// Sessions one account may have open at once; more get `NO [LIMIT]` at login.
    pub max_connections_per_account: usize,
    /// RFC 3501 §5.4: an inactivity autologout timer of at least 30 minutes.
    pub idle_timeout: Duration,
    /// Message data per FETCH slice: a large FETCH is written out slice by slice instead of
    /// being built in memory whole.
    pub fetch_slice_bytes: usize,
    /// Connections one listener holds that have not logged in yet; one more is greeted with
    /// BYE and closed. Per listener, so filling one identity's onion leaves every other
    /// listener (and so every co-hosted identity) answering normally.
    pub max_pre_login_connections: usize,
    /// Largest literal accepted before login, in octets. LOGIN's two strings and an
    /// AUTHENTICATE response fit in far less; anything larger is a peer making the server hold
    /// data for nobody, so the connection is closed (non-synchronizing literals included,
    /// RFC 7888 §4: they cannot be refused any other way).
    pub pre_login_literal: u32,
    /// Time from connecting within which a client must log in, or the connection is closed,
    /// however many bytes it trickles meanwhile (slowloris). RFC 3501 §5.4's 30 minutes of
    /// inactivity are for logged-in users; a peer that has not logged in gets much less.
    pub pre_login_timeout: Duration,
    /// Time a write may make no progress before the connection is dropped, so a peer that never
    /// reads cannot hold its session (and its slots) forever.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 25 * 1024 * 1024,
            max_line: 64 * 1024,
            max_connections_per_account: 20,
            idle_timeout: IDLE_TIMEOUT_DEFAULT,
            fetch_slice_bytes: 4 * 1024 * 1024,
            max_pre_login_connections: 100,
            pre_login_literal: 8 * 1024,
            pre_login_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
        }
    }
}

impl Limits {
    /// The largest literal accepted before login: `pre_login_literal`, or the message size
    /// limit when that is smaller.
    pub(crate) fn literal_before_login(&self) -> u32 {
        self.pre_login_literal.min(self.max_message_size)
    }
}

/// Called when a session opens; what it returns is dropped when the session ends (the imap
/// service's own session counter for GetStats, next to the `imap_sessions_open` gauge).
pub type SessionHook = Arc<dyn Fn() -> Box<dyn Send> + Send + Sync>;

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
    /// Key for the per-peer login back-off within the listener (the peer address). Empty for
    /// onion connections: they all come from tor's loopback address, so a per-peer record
    /// would let anyone lock the owner out of their own onion.
    pub connection_key: String,
    pub security: Security,
    /// Whether STARTTLS can be offered (a certificate is configured and TLS is not active).
    pub starttls: bool,
    /// For an identity's onion: the only account that may log in through it. `Some(None)` means
    /// the identity belongs to no hosted account, so every login fails.
    pub required_account: Option<Option<AccountId>>,
    /// For an identity's onion: its address, which stands for its owner's login here, and that
    /// login.
    pub login_alias: Option<(String, String)>,
}

/// What the sessions of one listener share and no other listener sees: the failed-login
/// back-off and the count of connections that have not logged in yet.
///
/// Keeping these per listener is what stops one identity's onion from telling anything about
/// another's (issue 18, item 4): failures through X's onion never change a reply through Y's,
/// whether or not X and Y share a carrier. Cheap to clone; clones share the state.
#[derive(Clone, Default)]
pub struct ListenerScope {
    inner: Arc<ScopeState>,
}

#[derive(Default)]
struct ScopeState {
    backoff: LoginBackOff,
    waiting_for_login: AtomicUsize,
}

impl ListenerScope {
    /// A scope of its own, for one listener.
    pub fn new() -> Self {
        ListenerScope::default()
    }

    pub(crate) fn backoff(&self) -> &LoginBackOff {
        &self.inner.backoff
    }

    /// Counts a connection that has not logged in yet, unless `limit` are already waiting.
    pub(crate) fn wait_for_login(&self, limit: usize) -> Option<LoginWait> {
        let counter = &self.inner.waiting_for_login;
        let mut current = counter.load(Ordering::Relaxed);
        loop {
            if current >= limit {
                return None;
            }
            match counter.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(LoginWait {
                        scope: self.clone(),
                    });
                }
                Err(seen) => current = seen,
            }
        }
    }
}

/// A connection's place among those waiting to log in; dropped at login or when it closes.
pub(crate) struct LoginWait {
    scope: ListenerScope,
}

impl Drop for LoginWait {
    fn drop(&mut self) {
        self.scope
            .inner
            .waiting_for_login
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// What every session of a server shares.
pub(crate) struct Shared {
    pub store: SharedMailStore,
    pub limits: Limits,
    pub tls: Option<TlsAcceptor>,
    connections: Mutex<HashMap<AccountId, usize>>,
    session_hook: Option<SessionHook>,
}

impl Shared {
    pub(crate) fn new(
        store: SharedMailStore,
        limits: Limits,
        tls: Option<TlsAcceptor>,
        session_hook: Option<SessionHook>,
    ) -> Self {
        Shared {
            store,
            limits,
            tls,
            connections: Mutex::new(HashMap::new()),
            session_hook,
        }
    }

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
