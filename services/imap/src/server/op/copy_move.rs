//! COPY, MOVE, UID COPY and UID MOVE (RFC 3501 §6.4.7, RFC 6851) with COPYUID (RFC 4315 §3).

use std::num::NonZeroU32;

use imap_next::imap_types::core::{Tag, Vec1};
use imap_next::imap_types::extensions::uidplus::{UidElement, UidSet};
use imap_next::imap_types::mailbox::Mailbox;
use imap_next::imap_types::response::Code;
use imap_next::imap_types::sequence::SequenceSet;

use super::super::reply::{Handled, bad, ok, status_no, store_error, untagged_ok};
use super::super::session::{Session, mailbox_name};

impl Session {
    pub(crate) async fn copy(
        &mut self,
        tag: &Tag<'static>,
        set: &SequenceSet,
        mailbox: Mailbox<'static>,
        uid: bool,
        is_move: bool,
    ) -> Handled {
        let Some(selected) = self.selected.as_ref() else {
            return Err(bad(tag, "no mailbox selected"));
        };
        if is_move && selected.read_only {
            return Err(status_no(
                tag,
                None,
                "mailbox is read-only (EXAMINE); MOVE needs SELECT",
            ));
        }
        let uids = self.resolve(set, uid);
        let verb = if is_move {
            "MOVE completed"
        } else {
            "COPY completed"
        };
        if uids.is_empty() {
            return Ok(vec![ok(tag, None, verb)]);
        }
        let destination = mailbox_name(&mailbox);
        let from = selected.id;
        let copied = if is_move {
            self.shared
                .store
                .move_messages(self.account_id(), from, &uids, &destination)
                .await
        } else {
            self.shared
                .store
                .copy(self.account_id(), from, &uids, &destination)
                .await
        }
        .map_err(|e| store_error(tag, e, true))?;
        let code = copyuid(&copied);
        if !is_move {
            return Ok(vec![ok(tag, code, verb)]);
        }
        // RFC 6851 §4.3: COPYUID goes in an untagged OK before the EXPUNGEs.
        let mut out = Vec::new();
        if let Some(code) = code {
            out.push(untagged_ok(Some(code), "moved"));
        }
        let moved: Vec<u32> = copied.uids.iter().map(|(source, _)| *source).collect();
        out.extend(self.remove_from_view(&moved));
        out.push(ok(tag, None, verb));
        Ok(out)
    }
}

fn copyuid(copied: &crate::mailstore::Copied) -> Option<Code<'static>> {
    let validity = NonZeroU32::new(copied.uid_validity)?;
    let source = uid_set(copied.uids.iter().map(|(s, _)| *s))?;
    let destination = uid_set(copied.uids.iter().map(|(_, d)| *d))?;
    Some(Code::CopyUid {
        uid_validity: validity,
        source,
        destination,
    })
}

/// RFC 4315 §3 uid-set; order matters (source and destination correspond element by element),
/// so runs are only merged when consecutive in the given order.
fn uid_set(uids: impl Iterator<Item = u32>) -> Option<UidSet> {
    let mut elements: Vec<UidElement> = Vec::new();
    let mut run: Option<(u32, u32)> = None;
    for uid in uids {
        run = match run {
            Some((start, end)) if uid == end + 1 => Some((start, uid)),
            Some((start, end)) => {
                elements.push(uid_element(start, end)?);
                Some((uid, uid))
            }
            None => Some((uid, uid)),
        };
    }
    if let Some((start, end)) = run {
        elements.push(uid_element(start, end)?);
    }
    Vec1::try_from(elements).ok().map(UidSet)
}

fn uid_element(start: u32, end: u32) -> Option<UidElement> {
    let a = NonZeroU32::new(start)?;
    let b = NonZeroU32::new(end)?;
    Some(if a == b {
        UidElement::Single(a)
    } else {
        UidElement::Range(a, b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copyuid_sets_keep_order() {
        let copied = crate::mailstore::Copied {
            uid_validity: 7,
            uids: vec![(1, 10), (2, 11), (5, 12)],
        };
        let Some(Code::CopyUid {
            source,
            destination,
            ..
        }) = copyuid(&copied)
        else {
            panic!("no COPYUID");
        };
        assert_eq!(source.0.as_ref().len(), 2, "1:2,5");
        assert_eq!(destination.0.as_ref().len(), 1, "10:12");
    }
}
