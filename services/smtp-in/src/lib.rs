//! The smtp-in service: the onion MX of every identity (virtual port 25 on the identity's own
//! onion, one onion = one identity) and SMTP submission for hosted accounts (the carrier-wide
//! `submission.listen` and virtual port 587 on each identity's onion).
//!
//! The SMTP engine ([`session`]) is generic over the connection and reaches the other services
//! through the [`Backend`] trait, so it is tested in memory; [`grpc_backend`] is the production
//! implementation over the imap, keys and queue contracts.

pub mod backend;
pub mod error;
pub mod grpc;
pub mod grpc_backend;
pub mod inbound;
pub mod message;
pub mod module;
pub mod session;
pub mod stats;

pub use backend::Backend;
pub use error::SmtpInError;
pub use inbound::InboundPolicy;
pub use module::SmtpInModule;
pub use session::{Limits, Mode, Policy, Session};
pub use stats::Stats;
