//! IDLE (RFC 2177): the connection waits for socket input and mailbox changes at once and calls
//! these when IDLE starts, when the selected mailbox changes, and at DONE.

use imap_next::imap_types::core::Tag;
use imap_next::imap_types::response::Status;

use super::super::reply::{Out, bad, ok};
use super::super::session::Session;
use crate::mailstore::MailboxId;

impl Session {
    pub(crate) async fn idle_start(
        &mut self,
        tag: Tag<'static>,
    ) -> Result<Vec<Out>, Status<'static>> {
        if self.account.is_none() {
            return Err(bad(&tag, "IDLE is not valid before login; log in first"));
        }
        self.idle_tag = Some(tag);
        // Whatever changed before IDLE is reported right away (RFC 2177 §3).
        Ok(self.resync_selected().await)
    }

    pub(crate) async fn idle_done(&mut self) -> Vec<Out> {
        let Some(tag) = self.idle_tag.take() else {
            return Vec::new();
        };
        let mut out = self.resync_selected().await;
        out.push(ok(&tag, None, "IDLE terminated"));
        out
    }

    pub(crate) async fn mailbox_changed(&mut self, id: MailboxId) -> Vec<Out> {
        if !self.is_selected(id) {
            return Vec::new();
        }
        self.resync_selected().await
    }
}
