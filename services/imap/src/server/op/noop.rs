//! NOOP and CHECK (RFC 3501 §6.1.2, §6.4.1): nothing to do but let the session report what other
//! sessions changed, which [`Session::handle`] does after every command that allows it.

use imap_next::imap_types::core::Tag;

use super::super::reply::{Out, ok};
use super::super::session::Session;

impl Session {
    pub(crate) fn noop(&self, tag: &Tag<'static>) -> Vec<Out> {
        vec![ok(tag, None, "NOOP completed")]
    }

    /// CHECK: every write is already durable when it is answered, so there is nothing to check.
    pub(crate) fn check(&self, tag: &Tag<'static>) -> Vec<Out> {
        vec![ok(tag, None, "CHECK completed")]
    }
}
