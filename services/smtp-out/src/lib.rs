//! The smtp-out service: the carrier's SMTP client for onion destinations.
//!
//! It holds no state between calls. The queue decides what to send, when and to whom; smtp-out
//! opens one stream through tor's SOCKS5 port to `<onion>:25`, handing the name to tor (a
//! `.onion` is never looked up locally, and nothing but a v3 onion is ever dialled, so no onion
//! path produces clearnet traffic), runs one SMTP transaction with the RFC 5321 §4.5.3.2
//! timeouts, and reports the outcome of every recipient.
//!
//! Each attempt uses its own SOCKS credentials: the username isolates identities from each
//! other (tor's IsolateSOCKSAuth), and a fresh password per attempt keeps a retry after a tor
//! restart off a circuit to a stale introduction point.

pub mod error;
pub mod grpc;
pub mod module;
pub mod service;
pub mod session;

pub use error::SmtpOutError;
pub use module::SmtpOutModule;
pub use service::{SmtpOutService, SocksEndpoint};
