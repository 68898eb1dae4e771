//! One file per command group, each adding its handlers to [`Session`](super::session::Session)
//! (Stalwart's `crates/imap/src/op/` has the same shape). Where a command is handled:
//!
//! | command | file |
//! |---|---|
//! | greeting, CAPABILITY, ID, NAMESPACE, ENABLE | [`capability`] |
//! | NOOP, CHECK | [`noop`] |
//! | LOGOUT | [`logout`] |
//! | STARTTLS, LOGIN, AUTHENTICATE | [`auth`] |
//! | SELECT, EXAMINE, CLOSE, UNSELECT | [`select`] |
//! | CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST, LSUB, STATUS | [`mailbox`] |
//! | APPEND | [`append`] |
//! | FETCH, UID FETCH | [`fetch`] |
//! | STORE, UID STORE (flags) | [`store`] |
//! | SEARCH, UID SEARCH | [`search`] |
//! | COPY, MOVE, UID COPY, UID MOVE | [`copy_move`] |
//! | EXPUNGE, UID EXPUNGE | [`expunge`] |
//! | IDLE, DONE | [`idle`] |
//! | GETQUOTA, GETQUOTAROOT, SETQUOTA | [`quota`] |
//!
//! Handlers see parsed imap-types commands and answer with imap-types responses, never bytes;
//! which handler runs in which state is decided in [`session`](super::session).

pub(crate) mod append;
pub(crate) mod auth;
pub(crate) mod capability;
pub(crate) mod copy_move;
pub(crate) mod expunge;
pub(crate) mod fetch;
pub(crate) mod idle;
pub(crate) mod logout;
pub(crate) mod mailbox;
pub(crate) mod noop;
pub(crate) mod quota;
pub(crate) mod search;
pub(crate) mod select;
pub(crate) mod store;
