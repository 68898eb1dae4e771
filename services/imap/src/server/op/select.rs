//! SELECT and EXAMINE (RFC 3501 §6.3.1, §6.3.2), CLOSE (§6.4.2) and UNSELECT (RFC 3691): entering
//! and leaving the selected state.

use std::num::NonZeroU32;

use imap_next::imap_types::core::Tag;
use imap_next::imap_types::flag::FlagPerm;
use imap_next::imap_types::mailbox::Mailbox;
use imap_next::imap_types::response::{Code, Data, Status};

use super::super::reply::{Handled, Out, ok, store_error, untagged_ok};
use super::super::session::{Selected, Session, mailbox_name};
use crate::flags::{has_flag, system_flags};

impl Session {
    pub(crate) async fn select(
        &mut self,
        tag: &Tag<'static>,
        mailbox: Mailbox<'static>,
        read_only: bool,
    ) -> Handled {
        // RFC 3501 §6.3.1: a SELECT deselects first, even when it fails.
        self.selected = None;
        let name = mailbox_name(&mailbox);
        let snapshot = self
            .shared
            .store
            .open_mailbox(self.account_id(), &name)
            .await
            .map_err(|e| store_error(tag, e, false))?;
        let selected = Selected::from_snapshot(name, read_only, &snapshot);
        let mut out = vec![
            Out::Data(Data::Flags(system_flags())),
            untagged_ok(
                Some(Code::PermanentFlags(if read_only {
                    Vec::new()
                } else {
                    let mut perm: Vec<FlagPerm> =
                        system_flags().into_iter().map(FlagPerm::Flag).collect();
                    perm.push(FlagPerm::Asterisk);
                    perm
                })),
                "flags permitted",
            ),
            Out::Data(Data::Exists(selected.uids.len() as u32)),
            Out::Data(Data::Recent(0)),
        ];
        if let Some(index) = snapshot
            .messages
            .iter()
            .position(|m| !has_flag(&m.flags, "\\Seen"))
            && let Some(seq) = NonZeroU32::new(index as u32 + 1)
        {
            out.push(untagged_ok(Some(Code::Unseen(seq)), "first unseen"));
        }
        if let Some(validity) = NonZeroU32::new(snapshot.status.uid_validity) {
            out.push(untagged_ok(Some(Code::UidValidity(validity)), "UIDs valid"));
        }
        if let Some(next) = NonZeroU32::new(snapshot.status.uid_next) {
            out.push(untagged_ok(Some(Code::UidNext(next)), "predicted next UID"));
        }
        let (code, verb) = if read_only {
            (Code::ReadOnly, "EXAMINE completed")
        } else {
            (Code::ReadWrite, "SELECT completed")
        };
        out.push(Out::Status(
            Status::ok(Some(tag.clone()), Some(code), verb).expect("valid"),
        ));
        self.selected = Some(selected);
        Ok(out)
    }

    /// RFC 3501 §6.4.2: CLOSE expunges silently (unless the mailbox is read-only) and deselects.
    pub(crate) async fn close(&mut self, tag: &Tag<'static>) -> Vec<Out> {
        if let Some(selected) = self.selected.as_ref()
            && !selected.read_only
        {
            let id = selected.id;
            let _ = self.shared.store.expunge(self.account_id(), id, None).await;
        }
        self.selected = None;
        vec![ok(tag, None, "CLOSE completed")]
    }

    /// RFC 3691: UNSELECT deselects without expunging.
    pub(crate) fn unselect(&mut self, tag: &Tag<'static>) -> Vec<Out> {
        self.selected = None;
        vec![ok(tag, None, "UNSELECT completed")]
    }
}
