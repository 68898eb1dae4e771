//! mail-parser, with the panics it has on hostile input read as "does not parse".
//!
//! mail-parser 0.11.9 panics (`Invalid part ID, could not find multipart.`, parsers/message.rs)
//! on some malformed multipart structures, as the fuzz target imap_fetch found. Any sender can
//! put such a message in a mailbox, and every FETCH of its ENVELOPE or BODYSTRUCTURE (a client
//! syncing, `1:*`) would then end the session: the mailbox could never be read again. So every
//! parse goes through here, and a panic is the unparsable message it is (the fetch falls back
//! to what it answers for one). Nothing the parser touched outlives the call.

use mail_parser::{Message, MessageParser};

/// The whole message, or `None` when mail-parser cannot read it (or panics on it).
pub(crate) fn message(raw: &[u8]) -> Option<Message<'_>> {
    std::panic::catch_unwind(|| MessageParser::default().parse(raw))
        .ok()
        .flatten()
}

/// The header only, as [`message`].
pub(crate) fn headers(raw: &[u8]) -> Option<Message<'_>> {
    std::panic::catch_unwind(|| MessageParser::default().parse_headers(raw))
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    /// The message fuzz/imap_fetch found: mail-parser 0.11.9 panics on it; here it is a
    /// message that does not parse, and the next one parses as ever.
    #[test]
    fn a_message_mail_parser_panics_on_does_not_parse() {
        let hostile = include_bytes!("testdata/mail-parser-panic.eml");
        assert!(super::message(hostile).is_none());
        let plain = b"Subject: hi\r\n\r\nhello\r\n";
        assert_eq!(super::message(plain).unwrap().subject(), Some("hi"));
        assert_eq!(super::headers(plain).unwrap().subject(), Some("hi"));
    }
}
