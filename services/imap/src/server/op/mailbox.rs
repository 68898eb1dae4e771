//! The mailbox commands of the authenticated state: CREATE, DELETE, RENAME, SUBSCRIBE,
//! UNSUBSCRIBE, LIST, LSUB and STATUS (RFC 3501 §6.3.3–§6.3.10), with RFC 6154 special-use
//! attributes.

use std::borrow::Cow;
use std::num::NonZeroU32;

use imap_next::imap_types::core::{Atom, Tag};
use imap_next::imap_types::flag::FlagNameAttribute;
use imap_next::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_next::imap_types::response::Data;
use imap_next::imap_types::status::{StatusDataItem, StatusDataItemName};

use super::super::reply::{Handled, Out, bad, ok, store_error};
use super::super::session::{Session, mailbox_name, string_of};
use crate::mailstore::SpecialUse;

impl Session {
    /// RFC 3501 §6.3.3 CREATE; a trailing delimiter is dropped.
    pub(crate) async fn create(
        &mut self,
        tag: &Tag<'static>,
        mailbox: Mailbox<'static>,
    ) -> Handled {
        let name = mailbox_name(&mailbox);
        let name = name.trim_end_matches('/');
        self.shared
            .store
            .create_mailbox(self.account_id(), name)
            .await
            .map_err(|e| store_error(tag, e, false))?;
        Ok(vec![ok(tag, None, "CREATE completed")])
    }

    /// RFC 3501 §6.3.4 DELETE; deleting the selected mailbox deselects it.
    pub(crate) async fn delete(
        &mut self,
        tag: &Tag<'static>,
        mailbox: Mailbox<'static>,
    ) -> Handled {
        let name = mailbox_name(&mailbox);
        if self.selected.as_ref().is_some_and(|s| s.name == name) {
            self.selected = None;
        }
        self.shared
            .store
            .delete_mailbox(self.account_id(), &name)
            .await
            .map_err(|e| store_error(tag, e, false))?;
        Ok(vec![ok(tag, None, "DELETE completed")])
    }

    /// RFC 3501 §6.3.5 RENAME.
    pub(crate) async fn rename(
        &mut self,
        tag: &Tag<'static>,
        from: Mailbox<'static>,
        to: Mailbox<'static>,
    ) -> Handled {
        self.shared
            .store
            .rename_mailbox(self.account_id(), &mailbox_name(&from), &mailbox_name(&to))
            .await
            .map_err(|e| store_error(tag, e, false))?;
        Ok(vec![ok(tag, None, "RENAME completed")])
    }

    pub(crate) async fn subscribe(
        &mut self,
        tag: &Tag<'static>,
        mailbox: Mailbox<'static>,
        subscribed: bool,
    ) -> Handled {
        self.shared
            .store
            .set_subscribed(self.account_id(), &mailbox_name(&mailbox), subscribed)
            .await
            .map_err(|e| store_error(tag, e, false))?;
        let verb = if subscribed {
            "SUBSCRIBE completed"
        } else {
            "UNSUBSCRIBE completed"
        };
        Ok(vec![ok(tag, None, verb)])
    }

    /// LIST and LSUB (RFC 3501 §6.3.8, §6.3.9) with RFC 6154 special-use attributes.
    pub(crate) async fn list(
        &mut self,
        tag: &Tag<'static>,
        reference: Mailbox<'static>,
        wildcard: ListMailbox<'static>,
        lsub: bool,
    ) -> Handled {
        let reference = mailbox_name(&reference);
        let pattern = match &wildcard {
            ListMailbox::Token(token) => string_of(token.as_ref()),
            ListMailbox::String(string) => string_of(string.as_ref()),
        };
        let verb = if lsub {
            "LSUB completed"
        } else {
            "LIST completed"
        };
        if pattern.is_empty() {
            // RFC 3501 §6.3.8: an empty pattern asks for the delimiter and root.
            let out = vec![
                Out::Data(Data::List {
                    items: vec![FlagNameAttribute::Noselect],
                    delimiter: Some('/'.try_into().expect("valid")),
                    mailbox: Mailbox::try_from("".to_owned()).expect("valid"),
                }),
                ok(tag, None, verb),
            ];
            return Ok(out);
        }
        let full_pattern = format!("{reference}{pattern}");
        let mailboxes = self
            .shared
            .store
            .list_mailboxes(self.account_id())
            .await
            .map_err(|e| store_error(tag, e, false))?;
        let names: Vec<&str> = mailboxes.iter().map(|m| m.name.as_str()).collect();
        let mut out = Vec::new();
        for mailbox in &mailboxes {
            if lsub && !mailbox.subscribed {
                continue;
            }
            if !list_matches(&full_pattern, &mailbox.name) {
                continue;
            }
            let prefix = format!("{}/", mailbox.name);
            let mut items = vec![if names.iter().any(|n| n.starts_with(&prefix)) {
                extension_attribute("HasChildren")
            } else {
                extension_attribute("HasNoChildren")
            }];
            if !lsub {
                if let Some(special) = mailbox.special_use.and_then(special_use_attribute) {
                    items.push(extension_attribute(special));
                }
                if mailbox.subscribed {
                    items.push(extension_attribute("Subscribed"));
                }
            }
            let Ok(name) = Mailbox::try_from(mailbox.name.clone()) else {
                continue;
            };
            let delimiter = Some('/'.try_into().expect("valid"));
            out.push(Out::Data(if lsub {
                Data::Lsub {
                    items,
                    delimiter,
                    mailbox: name,
                }
            } else {
                Data::List {
                    items,
                    delimiter,
                    mailbox: name,
                }
            }));
        }
        // RFC 3501 §6.3.8: a parent that does not exist as a mailbox (`a` for `a/b`) is still
        // listed for `%`, as \Noselect, so clients can walk the hierarchy.
        if !lsub {
            let mut implied: Vec<String> = Vec::new();
            for name in &names {
                let mut parent = *name;
                while let Some((head, _)) = parent.rsplit_once('/') {
                    if !names.contains(&head) && !implied.iter().any(|n| n == head) {
                        implied.push(head.to_owned());
                    }
                    parent = head;
                }
            }
            for name in implied {
                if !list_matches(&full_pattern, &name) {
                    continue;
                }
                let Ok(mailbox) = Mailbox::try_from(name) else {
                    continue;
                };
                out.push(Out::Data(Data::List {
                    items: vec![
                        FlagNameAttribute::Noselect,
                        extension_attribute("HasChildren"),
                    ],
                    delimiter: Some('/'.try_into().expect("valid")),
                    mailbox,
                }));
            }
        }
        out.push(ok(tag, None, verb));
        Ok(out)
    }

    pub(crate) async fn status(
        &mut self,
        tag: &Tag<'static>,
        mailbox: Mailbox<'static>,
        items: &[StatusDataItemName],
    ) -> Handled {
        let status = self
            .shared
            .store
            .status(self.account_id(), &mailbox_name(&mailbox))
            .await
            .map_err(|e| store_error(tag, e, false))?;
        let mut values = Vec::new();
        for item in items {
            match item {
                StatusDataItemName::Messages => {
                    values.push(StatusDataItem::Messages(status.messages))
                }
                StatusDataItemName::Recent => values.push(StatusDataItem::Recent(0)),
                StatusDataItemName::UidNext => {
                    if let Some(next) = NonZeroU32::new(status.uid_next) {
                        values.push(StatusDataItem::UidNext(next));
                    }
                }
                StatusDataItemName::UidValidity => {
                    if let Some(validity) = NonZeroU32::new(status.uid_validity) {
                        values.push(StatusDataItem::UidValidity(validity));
                    }
                }
                StatusDataItemName::Unseen => values.push(StatusDataItem::Unseen(status.unseen)),
                _ => {
                    return Err(bad(tag, "unsupported STATUS item"));
                }
            }
        }
        Ok(vec![
            Out::Data(Data::Status {
                mailbox,
                items: Cow::Owned(values),
            }),
            ok(tag, None, "STATUS completed"),
        ])
    }
}

/// RFC 3501 §6.3.8: `*` matches anything, `%` anything but the hierarchy delimiter. INBOX
/// matches case-insensitively.
pub(crate) fn list_matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some(b'*') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some(b'%') => {
                let limit = n.iter().position(|c| *c == b'/').unwrap_or(n.len());
                (0..=limit).any(|i| go(&p[1..], &n[i..]))
            }
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    let normalize = |value: &str| {
        if value.len() >= 5 && value[..5].eq_ignore_ascii_case("inbox") {
            format!("INBOX{}", &value[5..])
        } else {
            value.to_owned()
        }
    };
    go(normalize(pattern).as_bytes(), normalize(name).as_bytes())
}

fn special_use_attribute(special: SpecialUse) -> Option<&'static str> {
    // RFC 6154 §2; INBOX has no special-use attribute, quarantine is listed as \Junk.
    match special {
        SpecialUse::Inbox => None,
        SpecialUse::Sent => Some("Sent"),
        SpecialUse::Drafts => Some("Drafts"),
        SpecialUse::Trash => Some("Trash"),
        SpecialUse::Junk | SpecialUse::Quarantine => Some("Junk"),
        SpecialUse::Archive => Some("Archive"),
    }
}

fn extension_attribute(name: &'static str) -> FlagNameAttribute<'static> {
    FlagNameAttribute::from(Atom::try_from(name).expect("valid atom"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_wildcards() {
        assert!(list_matches("*", "Work/Old"));
        assert!(list_matches("%", "Work"));
        assert!(!list_matches("%", "Work/Old"));
        assert!(list_matches("Work/%", "Work/Old"));
        assert!(list_matches("inbox", "INBOX"));
        assert!(!list_matches("Sent", "Sent Items"));
    }
}
