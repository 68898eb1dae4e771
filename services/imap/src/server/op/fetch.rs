//! FETCH and UID FETCH (RFC 3501 §6.4.5, §6.4.8): which messages, setting \\Seen, and answering in
//! slices so a large FETCH streams instead of being built in memory whole. The data items
//! themselves (ENVELOPE, BODYSTRUCTURE, BODY[section]) are built in
//! [`fetch_items`](super::super::fetch_items).

use std::collections::HashMap;
use std::num::NonZeroU32;

use bytes::Bytes;
use imap_next::imap_types::core::{Tag, Vec1};
use imap_next::imap_types::fetch::{Macro, MacroOrMessageDataItemNames};
use imap_next::imap_types::response::Data;
use imap_next::imap_types::sequence::SequenceSet;

use super::super::fetch_items;
use super::super::reply::{Handled, Out, bad, ok, store_error};
use super::super::session::{PendingFetch, Session};
use crate::flags::has_flag;
use crate::mailstore::{Flag, FlagOperation};

impl Session {
    pub(crate) async fn fetch(
        &mut self,
        tag: &Tag<'static>,
        set: &SequenceSet,
        items: MacroOrMessageDataItemNames<'static>,
        uid: bool,
    ) -> Handled {
        let uids = self.resolve(set, uid);
        let Some(selected) = self.selected.as_ref() else {
            return Err(bad(tag, "no mailbox selected"));
        };
        let items = match items {
            MacroOrMessageDataItemNames::Macro(Macro::Fast) => fetch_items::fast(),
            MacroOrMessageDataItemNames::Macro(Macro::All) => fetch_items::all(),
            MacroOrMessageDataItemNames::Macro(Macro::Full) => fetch_items::full(),
            MacroOrMessageDataItemNames::Macro(_) => fetch_items::full(),
            MacroOrMessageDataItemNames::MessageDataItemNames(items) => items,
        };
        let plan = fetch_items::Plan::new(items, uid);
        let mailbox = selected.id;
        let read_only = selected.read_only;
        // RFC 3501 §6.4.5: BODY[...] (not PEEK) and RFC822/RFC822.TEXT set \Seen.
        let mut seen_now: HashMap<u32, Vec<Flag>> = HashMap::new();
        if plan.sets_seen && !read_only {
            let unseen: Vec<u32> = uids
                .iter()
                .copied()
                .filter(|uid| {
                    selected
                        .seq_of(*uid)
                        .is_some_and(|seq| !has_flag(&selected.flags[seq as usize - 1], "\\Seen"))
                })
                .collect();
            if !unseen.is_empty() {
                let changed = self
                    .shared
                    .store
                    .store_flags(
                        self.account_id(),
                        mailbox,
                        &unseen,
                        FlagOperation::Add,
                        &["\\Seen".to_owned()],
                    )
                    .await
                    .map_err(|e| store_error(tag, e, false))?;
                seen_now.extend(changed);
            }
        }
        let Some(selected) = self.selected.as_mut() else {
            return Err(bad(tag, "no mailbox selected"));
        };
        for (uid, flags) in &seen_now {
            if let Ok(index) = selected.uids.binary_search(uid) {
                selected.flags[index] = flags.clone();
                selected.metas[index].flags = flags.clone();
            }
        }
        self.pending_fetch = Some(PendingFetch {
            tag: tag.clone(),
            plan,
            uids,
            next: 0,
            seen_now,
            uid,
        });
        Ok(self.fetch_step().await)
    }

    /// Whether a FETCH is still being answered (the connection sends what is ready, then asks
    /// for the next slice before it reads more commands).
    pub(crate) fn has_pending_output(&self) -> bool {
        self.pending_fetch.is_some()
    }

    /// Answers the next slice of a pending FETCH: up to `Limits::fetch_slice_bytes` of message data,
    /// so `FETCH 1:* BODY[]` on a large mailbox streams instead of being built in memory
    /// whole. The last slice carries the tagged completion.
    pub(crate) async fn fetch_step(&mut self) -> Vec<Out> {
        let Some(mut pending) = self.pending_fetch.take() else {
            return Vec::new();
        };
        let account = self.account_id().to_owned();
        let Some(selected) = self.selected.as_ref() else {
            return vec![Out::Status(bad(&pending.tag, "no mailbox selected"))];
        };
        let mailbox = selected.id;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while pending.next < pending.uids.len() && bytes < self.shared.limits.fetch_slice_bytes {
            let end = (pending.next + fetch_items::BATCH).min(pending.uids.len());
            let chunk = &pending.uids[pending.next..end];
            pending.next = end;
            let bodies: HashMap<u32, Bytes> = match pending.plan.need {
                None => HashMap::new(),
                Some(part) => match self
                    .shared
                    .store
                    .fetch(&account, mailbox, chunk, part)
                    .await
                {
                    Ok(bodies) => bodies.into_iter().collect(),
                    Err(error) => {
                        out.push(Out::Status(store_error(&pending.tag, error, false)));
                        return out;
                    }
                },
            };
            for uid in chunk {
                let Ok(index) = selected.uids.binary_search(uid) else {
                    continue;
                };
                let body = bodies.get(uid);
                if pending.plan.need.is_some() && body.is_none() {
                    // Expunged by another session meanwhile: nothing to show (RFC 3501 §7.4.1
                    // allows omitting it; the EXPUNGE follows with the next resync).
                    continue;
                }
                bytes += body.map_or(64, |b| b.len());
                let items = fetch_items::items(
                    &pending.plan,
                    &selected.metas[index],
                    &selected.flags[index],
                    body.map(|b| b.as_ref()),
                    pending.seen_now.contains_key(uid),
                );
                if let (Some(seq), Ok(items)) =
                    (NonZeroU32::new(index as u32 + 1), Vec1::try_from(items))
                {
                    out.push(Out::Data(Data::Fetch { seq, items }));
                }
            }
        }
        if pending.next < pending.uids.len() {
            self.pending_fetch = Some(pending);
            return out;
        }
        // UID FETCH may report other sessions' changes (RFC 3501 §7.4.1); FETCH may not
        // report expunges.
        if pending.uid {
            out.extend(self.resync_selected().await);
        }
        out.push(ok(&pending.tag, None, "FETCH completed"));
        out
    }
}
