//! The server side of SMTP's I/O (RFC 5321), written once for every listener that speaks it:
//! smtp-in (each identity's onion MX and submission) and the gateway (the clearnet MX).
//!
//! - [`Connection`]: reads command lines within a length and a time limit, queues replies and
//!   writes them when the client has nothing more pipelined (RFC 2920), every write bounded by a
//!   timeout so a peer that never reads cannot hold a session.
//! - [`read_data`]: the DATA phase: dot-unstuffing, the 998-octet text line limit, the message
//!   size limit and the refusal of bare CR and bare LF (RFC 5321 §2.3.8), with the end of data
//!   recognised only as CRLF.CRLF, held within the listener's [`MemoryBudget`].
//! - [`serve`]: the accept loop, with a [`SessionLimit`] per listener (optionally within a
//!   ceiling shared by several listeners) and `421` for connections beyond it.
//!
//! Policy (which commands exist, what is accepted, what a reply says about a recipient) stays
//! with the services; this crate knows no backend and binds no port.

mod budget;
mod connection;
mod data;
mod listener;
mod quota;

pub use budget::{MemoryBudget, MemoryGrant, NO_ROOM, STEP_BYTES};
pub use connection::{Connection, Line, TIMEOUT};
pub use data::{
    BARE_LINE_ENDING, DataLimits, DataOutcome, LINE_TOO_LONG, MAX_TEXT_LINE, Refusal, TOO_BIG,
    read_data,
};
pub use listener::{SessionLimit, SessionPermit, TOO_BUSY, serve};
