//! The IMAP4rev1 server (RFC 3501) in front of a [`MailStore`](crate::mailstore::MailStore).
//!
//! Layers, outside in:
//!
//! - [`start`]: binds the listeners the configuration asks for (`imap.listen` with STARTTLS,
//!   `imap.tls_listen`) and follows WatchOnions to keep one plain listener per identity's onion;
//!   `onionpost_runtime::tls` loads the certificate or generates a self-signed one.
//! - [`listen`]: accepting connections of each kind and the limits that span sessions
//!   (connections per account, the `imap_sessions_open` gauge).
//! - [`connection`]: drives one connection: bytes in and out through imap-next's sans-I/O
//!   `Server` state machine (which owns literal handling, AUTHENTICATE continuations and the IDLE
//!   flow), the idle timeout, STARTTLS, IDLE wake-ups from [`MailStore::watch`], and turning
//!   protocol errors (malformed commands, over-long lines and literals) into replies.
//! - [`session`]: the session state machine of RFC 3501 §3 and one handler per command; it sees
//!   parsed imap-types commands and answers with imap-types responses, never bytes.
//! - [`fetch`] and [`search`]: FETCH data items (ENVELOPE, BODYSTRUCTURE, sections) built with
//!   mail-parser, and SEARCH evaluation.
//!
//! The connection driver is ours rather than imap-next's `Stream` because that type only wraps
//! a `TcpStream`: ours works over any byte stream (an in-memory duplex in tests, a TLS stream
//! after STARTTLS) and can wait for socket input and mailbox changes at the same time during
//! IDLE.
//!
//! [`MailStore::watch`]: crate::mailstore::MailStore::watch

mod connection;
mod fetch;
pub mod listen;
mod search;
mod session;
pub mod start;

pub use connection::{ConnectionInfo, Security};
pub use listen::{IdentityOwners, ImapServer, Limits, ListenerKind};
