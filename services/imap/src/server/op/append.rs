//! APPEND (RFC 3501 §6.3.11) with APPENDUID (RFC 4315). Literal size is bounded twice: imap-next
//! refuses an announced literal over the limit before it is sent, and the handler checks again.

use std::num::NonZeroU32;

use bytes::Bytes;
use imap_next::imap_types::core::Tag;
use imap_next::imap_types::datetime::DateTime as ImapDateTime;
use imap_next::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_next::imap_types::flag::Flag as ImapFlag;
use imap_next::imap_types::mailbox::Mailbox;
use imap_next::imap_types::response::Code;

use super::super::reply::{Handled, ok, status_no, store_error};
use super::super::session::{Session, mailbox_name};
use crate::flags::flag_string;
use crate::mailstore::Flag;

impl Session {
    pub(crate) async fn append(
        &mut self,
        tag: &Tag<'static>,
        mailbox: Mailbox<'static>,
        flags: Vec<ImapFlag<'static>>,
        date: Option<ImapDateTime>,
        message: LiteralOrLiteral8<'static>,
    ) -> Handled {
        let bytes: Vec<u8> = match message {
            LiteralOrLiteral8::Literal(literal) => literal.into_inner().into_owned(),
            LiteralOrLiteral8::Literal8(literal) => literal.data.into_owned(),
        };
        if bytes.len() as u64 > u64::from(self.shared.limits.max_message_size) {
            return Err(status_no(
                tag,
                Some(Code::TooBig),
                "message exceeds the maximum message size",
            ));
        }
        let flags: Vec<Flag> = flags.iter().map(flag_string).collect();
        let date = date.map(|d| d.as_ref().with_timezone(&chrono::Utc));
        let (validity, uid) = self
            .shared
            .store
            .append(
                self.account_id(),
                &mailbox_name(&mailbox),
                &flags,
                date,
                Bytes::from(bytes),
            )
            .await
            .map_err(|e| store_error(tag, e, true))?;
        let code = match (NonZeroU32::new(validity), NonZeroU32::new(uid)) {
            (Some(uid_validity), Some(uid)) => Some(Code::AppendUid { uid_validity, uid }),
            _ => None,
        };
        Ok(vec![ok(tag, code, "APPEND completed")])
    }
}
