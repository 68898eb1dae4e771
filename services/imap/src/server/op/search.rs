//! SEARCH and UID SEARCH (RFC 3501 §6.4.4): the handler and the evaluation of search keys
//! against the selected mailbox.
//!
//! Keys on flags, sizes, dates and numbers need only the snapshot; header keys read the header
//! part from the store, BODY and TEXT the whole message, in batches.

use std::num::NonZeroU32;

use chrono::NaiveDate;
use imap_next::imap_types::core::{Charset, Tag, Vec1};
use imap_next::imap_types::response::{Code, Data};
use imap_next::imap_types::search::SearchKey;
use imap_next::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use super::super::fetch_items::{BATCH, field_value, header_fields, header_of, text_of};
use super::super::reply::{Handled, Out, bad, ok, status_no, store_error};
use super::super::session::Session;
use crate::flags::has_flag;
use crate::mailstore::{MailStore, MailStoreError, MailboxId, MessageMeta, Part};

impl Session {
    /// SEARCH and UID SEARCH; only UTF-8 and US-ASCII are accepted as charsets (RFC 3501
    /// §6.4.4 requires US-ASCII; UTF-8 covers it).
    pub(crate) async fn search(
        &mut self,
        tag: &Tag<'static>,
        charset: Option<Charset<'static>>,
        criteria: Vec1<SearchKey<'static>>,
        uid: bool,
    ) -> Handled {
        if let Some(charset) = charset {
            let name = charset.as_ref().to_ascii_uppercase();
            if name != "UTF-8" && name != "US-ASCII" {
                return Err(status_no(
                    tag,
                    Some(Code::BadCharset {
                        allowed: vec![
                            "UTF-8".try_into().expect("valid"),
                            "US-ASCII".try_into().expect("valid"),
                        ],
                    }),
                    "unsupported charset",
                ));
            }
        }
        let key = match criteria.into_iter().collect::<Vec<_>>() {
            mut keys if keys.len() == 1 => keys.remove(0),
            keys => SearchKey::And(Vec1::try_from(keys).expect("non-empty")),
        };
        let Some(selected) = self.selected.as_ref() else {
            return Err(bad(tag, "no mailbox selected"));
        };
        let part = need(&key);
        let matches = run(
            self.shared.store.as_ref(),
            self.account_id(),
            selected.id,
            &selected.metas,
            &key,
            part,
        )
        .await
        .map_err(|e| store_error(tag, e, false))?;
        let numbers: Vec<NonZeroU32> = matches
            .into_iter()
            .filter_map(|index| {
                let number = if uid {
                    selected.uids[index]
                } else {
                    index as u32 + 1
                };
                NonZeroU32::new(number)
            })
            .collect();
        Ok(vec![
            Out::Data(Data::Search(numbers)),
            ok(tag, None, "SEARCH completed"),
        ])
    }
}

/// The most of a message a key needs.
fn need(key: &SearchKey<'_>) -> Option<Part> {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().map(need).max_by_key(rank).flatten(),
        SearchKey::Not(key) => need(key),
        SearchKey::Or(a, b) => [need(a), need(b)].into_iter().max_by_key(rank).flatten(),
        SearchKey::Bcc(_)
        | SearchKey::Cc(_)
        | SearchKey::From(_)
        | SearchKey::To(_)
        | SearchKey::Subject(_)
        | SearchKey::Header(..)
        | SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_) => Some(Part::Header),
        SearchKey::Body(_) | SearchKey::Text(_) => Some(Part::Full),
        _ => None,
    }
}

fn rank(part: &Option<Part>) -> u8 {
    match part {
        None => 0,
        Some(Part::Header) => 1,
        Some(Part::Full) => 2,
    }
}

/// Returns the indexes (sequence number − 1) of the matching messages.
async fn run(
    store: &dyn MailStore,
    account: &str,
    mailbox: MailboxId,
    metas: &[MessageMeta],
    key: &SearchKey<'_>,
    need: Option<Part>,
) -> Result<Vec<usize>, MailStoreError> {
    let uids: Vec<u32> = metas.iter().map(|m| m.uid).collect();
    let mut matches = Vec::new();
    for (chunk_index, chunk) in metas.chunks(BATCH).enumerate() {
        let bodies: std::collections::HashMap<u32, bytes::Bytes> = match need {
            None => Default::default(),
            Some(part) => {
                let chunk_uids: Vec<u32> = chunk.iter().map(|m| m.uid).collect();
                store
                    .fetch(account, mailbox, &chunk_uids, part)
                    .await?
                    .into_iter()
                    .collect()
            }
        };
        for (offset, meta) in chunk.iter().enumerate() {
            let index = chunk_index * BATCH + offset;
            let message = Candidate {
                seq: index as u32 + 1,
                meta,
                raw: bodies.get(&meta.uid).map(|b| b.as_ref()),
                all_uids: &uids,
            };
            if message.matches(key) {
                matches.push(index);
            }
        }
    }
    Ok(matches)
}

struct Candidate<'a> {
    seq: u32,
    meta: &'a MessageMeta,
    raw: Option<&'a [u8]>,
    all_uids: &'a [u32],
}

impl Candidate<'_> {
    fn matches(&self, key: &SearchKey<'_>) -> bool {
        let flag = |name: &str| has_flag(&self.meta.flags, name);
        let date = self.meta.internal_date.date_naive();
        match key {
            SearchKey::And(keys) => keys.as_ref().iter().all(|k| self.matches(k)),
            SearchKey::Or(a, b) => self.matches(a) || self.matches(b),
            SearchKey::Not(k) => !self.matches(k),
            SearchKey::All => true,
            SearchKey::SequenceSet(set) => self.in_set(set, false),
            SearchKey::Uid(set) => self.in_set(set, true),
            SearchKey::Answered => flag("\\Answered"),
            SearchKey::Unanswered => !flag("\\Answered"),
            SearchKey::Deleted => flag("\\Deleted"),
            SearchKey::Undeleted => !flag("\\Deleted"),
            SearchKey::Draft => flag("\\Draft"),
            SearchKey::Undraft => !flag("\\Draft"),
            SearchKey::Flagged => flag("\\Flagged"),
            SearchKey::Unflagged => !flag("\\Flagged"),
            SearchKey::Seen => flag("\\Seen"),
            SearchKey::Unseen => !flag("\\Seen"),
            // No message is ever \Recent here (the flag is optional to maintain, RFC 3501
            // §2.3.2), so NEW = RECENT UNSEEN matches nothing and OLD everything.
            SearchKey::Recent | SearchKey::New => false,
            SearchKey::Old => true,
            SearchKey::Keyword(atom) => flag(atom.as_ref()),
            SearchKey::Unkeyword(atom) => !flag(atom.as_ref()),
            SearchKey::Larger(size) => self.meta.size > u64::from(*size),
            SearchKey::Smaller(size) => self.meta.size < u64::from(*size),
            SearchKey::Before(day) => date < *day.as_ref(),
            SearchKey::On(day) => date == *day.as_ref(),
            SearchKey::Since(day) => date >= *day.as_ref(),
            SearchKey::SentBefore(day) => self.sent().is_some_and(|d| d < *day.as_ref()),
            SearchKey::SentOn(day) => self.sent().is_some_and(|d| d == *day.as_ref()),
            SearchKey::SentSince(day) => self.sent().is_some_and(|d| d >= *day.as_ref()),
            SearchKey::Bcc(v) => self.header_contains("Bcc", v.as_ref()),
            SearchKey::Cc(v) => self.header_contains("Cc", v.as_ref()),
            SearchKey::From(v) => self.header_contains("From", v.as_ref()),
            SearchKey::To(v) => self.header_contains("To", v.as_ref()),
            SearchKey::Subject(v) => self.header_contains("Subject", v.as_ref()),
            SearchKey::Header(name, v) => {
                self.header_contains(&String::from_utf8_lossy(name.as_ref()), v.as_ref())
            }
            SearchKey::Body(v) => self.body_contains(v.as_ref()),
            SearchKey::Text(v) => {
                let raw = self.raw.unwrap_or_default();
                contains(header_of(raw), v.as_ref()) || self.body_contains(v.as_ref())
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Whether this message's UID or sequence number is in the set; `*` is the largest value
    /// in the mailbox and ranges may be given in either order (RFC 3501 §9, seq-range).
    fn in_set(&self, set: &SequenceSet, uid: bool) -> bool {
        let (value, largest) = if uid {
            (self.meta.uid, self.all_uids.last().copied().unwrap_or(0))
        } else {
            (self.seq, self.all_uids.len() as u32)
        };
        let bound = |v: &SeqOrUid| match v {
            SeqOrUid::Value(n) => n.get(),
            SeqOrUid::Asterisk => largest,
        };
        set.0.as_ref().iter().any(|sequence| match sequence {
            Sequence::Single(v) => bound(v) == value,
            Sequence::Range(a, b) => {
                let (a, b) = (bound(a), bound(b));
                (a.min(b)..=a.max(b)).contains(&value)
            }
        })
    }

    /// RFC 3501 §6.4.4: a substring match, case-insensitive; an empty string matches every
    /// message that has the field.
    fn header_contains(&self, name: &str, needle: &[u8]) -> bool {
        let raw = self.raw.unwrap_or_default();
        header_fields(header_of(raw))
            .into_iter()
            .filter(|(field, _)| field.eq_ignore_ascii_case(name))
            .any(|(_, field)| {
                let value = field_value(field);
                contains(value.as_bytes(), needle) || contains(decoded(&value).as_bytes(), needle)
            })
    }

    fn body_contains(&self, needle: &[u8]) -> bool {
        let raw = self.raw.unwrap_or_default();
        if contains(text_of(raw), needle) {
            return true;
        }
        // Also the decoded text parts, so quoted-printable and base64 bodies can be found.
        let Some(message) = crate::server::parse::message(raw) else {
            return false;
        };
        (0..message.text_body_count())
            .filter_map(|index| message.body_text(index))
            .any(|text| contains(text.as_bytes(), needle))
    }

    fn sent(&self) -> Option<NaiveDate> {
        let raw = self.raw?;
        let message = crate::server::parse::headers(raw)?;
        let date = message.date()?;
        NaiveDate::from_ymd_opt(
            i32::from(date.year),
            u32::from(date.month),
            u32::from(date.day),
        )
    }
}

/// Decodes RFC 2047 encoded words in a header value, through mail-parser.
fn decoded(value: &str) -> String {
    if !value.contains("=?") {
        return value.to_owned();
    }
    let header = format!("Subject: {value}\r\n\r\n");
    crate::server::parse::headers(header.as_bytes())
        .and_then(|m| m.subject().map(str::to_owned))
        .unwrap_or_else(|| value.to_owned())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    if needle.len() > haystack.len() {
        return false;
    }
    let needle: Vec<u8> = needle.iter().map(u8::to_ascii_lowercase).collect();
    haystack.windows(needle.len()).any(|window| {
        window
            .iter()
            .zip(&needle)
            .all(|(a, b)| a.to_ascii_lowercase() == *b)
    })
}
