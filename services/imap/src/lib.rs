//! The imap service: hosted accounts and their mail.
//!
//! It owns accounts (login, argon2id password hash, plan, quota, paid-until, state), the
//! operator's plans and prepaid vouchers, which identities belong to which account, and the mail
//! store: mailboxes, messages with flags and UIDs, one encrypted body however many mailboxes hold
//! it. Other services reach it through `onionpost.imap.v1.Imap` (gRPC); people reach it through
//! IMAP4rev1 on the clearnet listener and through each identity's onion.
//!
//! [`mailstore::MailStore`] is the boundary between the IMAP protocol layer and the store: the
//! protocol code never sees SQL, and the store never sees IMAP syntax.

pub mod backoff;
pub mod changes;
pub mod clock;
pub mod crypto;
pub mod error;
pub mod flags;
pub mod grpc;
pub mod lifecycle;
pub mod mail;
pub mod mailstore;
pub mod message;
pub mod module;
pub mod service;
pub mod store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::ImapError;
pub use module::ImapModule;
pub use onionpost_runtime::seal::CarrierSecret;
pub use service::{Credentials, ImapService, open_store};
pub mod server;
