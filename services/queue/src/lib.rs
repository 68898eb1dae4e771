//! The queue service: the carrier's durable store-and-forward.
//!
//! Every message leaving the carrier passes through here. Enqueue returns only once the message
//! is committed (SQLite with `synchronous = FULL`, or PostgreSQL), so smtp-in may answer 250.
//! Each recipient carries its own state (scheduled, delivered, temporary or permanent failure);
//! the body is stored once, sealed with the carrier secret, and deleted with the message when
//! its last recipient is done. A scheduler delivers due recipients through smtp-out (one SMTP
//! session per destination onion), retries with exponential back-off and jitter, gives up after
//! the message's lifetime, and reports to the sender with RFC 3464 DSNs delivered into its own
//! INBOX by the imap service. It never talks SMTP or touches tor itself.
//!
//! It also carries mail for people who are offline (`carry`): it keeps carry agreements,
//! hands submitted mail that could not be delivered directly to the recipient's designated
//! carriers (fan-out, in the scheduler), and sends ETRN to an identity's carriers when it comes
//! online. The store claims work with leases (`FOR UPDATE SKIP LOCKED` on PostgreSQL), so
//! several worker processes can share one queue.

pub mod carry;
pub mod clock;
pub mod dsn;
pub mod error;
pub mod grpc;
pub mod module;
pub mod retry;
pub mod scheduler;
pub mod service;
pub mod store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::QueueError;
pub use module::QueueModule;
pub use retry::RetryPolicy;
pub use scheduler::Scheduler;
pub use service::QueueService;
