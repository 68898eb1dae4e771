//! The IMAP4rev1 server (RFC 3501) in front of a [`MailStore`](crate::mailstore::MailStore).
//!
//! Layers, outside in; each imports only layers further in, never one further out:
//!
//! - [`start`]: binds the listeners the configuration asks for (`imap.listen` with STARTTLS,
//!   `imap.tls_listen`) and follows WatchOnions to keep one plain listener per identity's onion;
//!   `onionpost_runtime::tls` loads the certificate or generates a self-signed one.
//! - [`listen`]: accepting connections of each kind; each listener gets its own
//!   [`ListenerScope`] (login back-off, connections waiting to log in).
//! - [`connection`]: drives one connection: bytes in and out through imap-next's sans-I/O
//!   `Server` state machine (which owns literal handling, AUTHENTICATE continuations and the IDLE
//!   flow), the idle and pre-login timeouts, write timeouts, STARTTLS, IDLE wake-ups from
//!   [`MailStore::watch`], the line and literal bounds, and turning protocol errors (malformed
//!   commands, over-long lines and literals) into replies.
//! - [`session`]: the session state machine of RFC 3501 §3; it routes each parsed imap-types
//!   command to its handler in [`op`] (one file per command group: `op/fetch.rs` answers
//!   `FETCH` and `UID FETCH`, and so on).
//! - [`fetch_items`]: FETCH data items (ENVELOPE, BODYSTRUCTURE, sections) built with
//!   mail-parser.
//! - Underneath all of them: [`context`] (limits, server-wide and per-listener state, what a
//!   connection knows about itself) and [`reply`] (responses and their builders), which import
//!   no sibling; flags are the crate's [`flags`](crate::flags).
//!
//! The connection driver is ours rather than imap-next's `Stream` because that type only wraps
//! a `TcpStream`: ours works over any byte stream (an in-memory duplex in tests, a TLS stream
//! after STARTTLS) and can wait for socket input and mailbox changes at the same time during
//! IDLE.
//!
//! [`MailStore::watch`]: crate::mailstore::MailStore::watch

mod connection;
mod context;
mod fetch_items;
pub mod listen;
mod op;
pub(crate) mod parse;
mod reply;
mod session;
pub mod start;

pub use context::{ByteStream, ConnectionInfo, ListenerScope, Security};
pub use listen::{IdentityOwners, ImapServer, Limits, ListenerKind};
