//! The smtp-out service: the carrier's SMTP client for onion destinations.
//!
//! It holds no state between calls. The queue decides what to send, when and to whom; smtp-out
//! opens one stream through tor's SOCKS5 port to `<onion>:25`, handing the name to tor (a
//! `.onion` is never looked up locally, and nothing but a v3 onion is ever dialled, so no onion
//! path produces clearnet traffic), runs one SMTP transaction with the RFC 5321 §4.5.3.2
//! timeouts, and reports the outcome of every recipient.
//!
//! SOCKS credentials choose the circuit (tor's IsolateSOCKSAuth): the username isolates
//! identities from each other, and the password names one circuit to one destination. It is
//! kept while connections through it succeed, so a burst to one onion reuses one rendezvous
//! circuit instead of building one per message (seconds each), and replaced after a failed
//! connection, so a retry after a tor restart or a moved introduction point builds afresh.

pub mod error;
pub mod grpc;
pub mod module;
pub mod service;
/// The SMTP client session (services/smtp-client), under the name smtp-out has always used.
pub use onionpost_smtp_client as session;

pub use error::SmtpOutError;
pub use module::SmtpOutModule;
pub use service::{SmtpOutService, SocksEndpoint};
