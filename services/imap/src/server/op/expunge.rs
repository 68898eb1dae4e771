//! EXPUNGE (RFC 3501 §6.4.3) and UID EXPUNGE (RFC 4315 §2.1).

use imap_next::imap_types::core::Tag;

use super::super::reply::{Handled, bad, ok, status_no, store_error};
use super::super::session::Session;

impl Session {
    pub(crate) async fn expunge(&mut self, tag: &Tag<'static>, uids: Option<Vec<u32>>) -> Handled {
        let Some(selected) = self.selected.as_ref() else {
            return Err(bad(tag, "no mailbox selected"));
        };
        if selected.read_only {
            return Err(status_no(tag, None, "mailbox is read-only (EXAMINE)"));
        }
        let id = selected.id;
        let removed = self
            .shared
            .store
            .expunge(self.account_id(), id, uids.as_deref())
            .await
            .map_err(|e| store_error(tag, e, false))?;
        let mut out = self.remove_from_view(&removed);
        out.push(ok(tag, None, "EXPUNGE completed"));
        Ok(out)
    }
}
