//! LOGOUT (RFC 3501 §6.1.3): BYE, the tagged OK, then the connection closes.

use imap_next::imap_types::core::Tag;

use super::super::reply::{Out, bye, ok};
use super::super::session::Session;

impl Session {
    pub(crate) fn logout(&mut self, tag: &Tag<'static>) -> Vec<Out> {
        self.logged_out = true;
        vec![
            Out::Status(bye("onionpost logging out")),
            ok(tag, None, "LOGOUT completed"),
        ]
    }
}
