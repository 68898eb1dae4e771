//! The gateway service: the carrier's only door to clearnet e-mail (paper Fig. 7).
//!
//! Outbound, the queue hands it a submitted message and its clearnet recipients
//! ([`service::GatewayService::send_outbound`]); each recipient gets the message from an alias
//! of the sending identity made for that correspondent ([`alias`]), with every onion address
//! and identifying header removed ([`rewrite`]), DKIM-signed for the gateway domain ([`dkim`])
//! and delivered by MX lookup or through a smarthost ([`outbound`]), STARTTLS whenever offered.
//!
//! Inbound, it is the gateway domain's MX ([`inbound`]): mail to a live alias is checked (SPF,
//! DKIM, DMARC with mail-auth), size- and rate-limited, and delivered into the identity's
//! account; every other recipient, unknown, revoked or foreign (relay), gets the same refusal.
//!
//! Only accounts whose plan allows the gateway send out, within a daily cap
//! ([`service::GatewayService::check_outbound`], asked by smtp-in at RCPT time). The gateway
//! reaches imap and keys through their contracts ([`backend`]) and keeps aliases, daily sends and
//! counters in its own store ([`store`]).

pub mod alias;
pub mod backend;
pub mod dkim;
pub mod dns;
pub mod error;
pub mod grpc;
pub mod inbound;
pub mod module;
pub mod outbound;
pub mod records;
pub mod rewrite;
pub mod rspamd;
pub mod service;
pub mod store;

pub use error::GatewayError;
pub use module::GatewayModule;
pub use service::GatewayService;
