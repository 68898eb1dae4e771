//! STORE and UID STORE (RFC 3501 §6.4.6, §6.4.8): changing flags. Flag names are given their
//! canonical spelling by the store ([`crate::flags`]).

use std::num::NonZeroU32;

use imap_next::imap_types::core::{Tag, Vec1};
use imap_next::imap_types::fetch::MessageDataItem;
use imap_next::imap_types::flag::{Flag as ImapFlag, StoreResponse, StoreType};
use imap_next::imap_types::response::{Code, CodeOther, Data};
use imap_next::imap_types::sequence::SequenceSet;

use super::super::reply::{Handled, Out, bad, ok, status_no, store_error};
use super::super::session::Session;
use crate::flags::{flag_fetch, flag_string};
use crate::mailstore::{Flag, FlagOperation};

impl Session {
    pub(crate) async fn store(
        &mut self,
        tag: &Tag<'static>,
        set: &SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: &[ImapFlag<'static>],
        uid: bool,
    ) -> Handled {
        let Some(selected) = self.selected.as_ref() else {
            return Err(bad(tag, "no mailbox selected"));
        };
        if selected.read_only {
            return Err(status_no(
                tag,
                Some(Code::Other(CodeOther::unvalidated(b"READ-ONLY".as_slice()))),
                "mailbox is read-only (EXAMINE)",
            ));
        }
        let mailbox = selected.id;
        let uids = self.resolve(set, uid);
        let operation = match kind {
            StoreType::Add => FlagOperation::Add,
            StoreType::Remove => FlagOperation::Remove,
            StoreType::Replace => FlagOperation::Replace,
        };
        let flags: Vec<Flag> = flags.iter().map(flag_string).collect();
        let changed = if uids.is_empty() {
            Vec::new()
        } else {
            self.shared
                .store
                .store_flags(self.account_id(), mailbox, &uids, operation, &flags)
                .await
                .map_err(|e| store_error(tag, e, false))?
        };
        let Some(selected) = self.selected.as_mut() else {
            return Err(bad(tag, "no mailbox selected"));
        };
        let mut out = Vec::new();
        for (uid, flags) in changed {
            let Ok(index) = selected.uids.binary_search(&uid) else {
                continue;
            };
            selected.flags[index] = flags.clone();
            selected.metas[index].flags = flags.clone();
            if response == StoreResponse::Answer {
                // UID is always included: RFC 3501 §6.4.8 requires it for UID STORE, and it
                // lets pipelining clients match responses for plain STORE too.
                let items = vec![
                    MessageDataItem::Flags(flag_fetch(&flags)),
                    MessageDataItem::Uid(NonZeroU32::new(uid).expect("uid > 0")),
                ];
                if let Some(seq) = NonZeroU32::new(index as u32 + 1) {
                    out.push(Out::Data(Data::Fetch {
                        seq,
                        items: Vec1::try_from(items).expect("non-empty"),
                    }));
                }
            }
        }
        out.push(ok(tag, None, "STORE completed"));
        Ok(out)
    }
}
