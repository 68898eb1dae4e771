//! How the server answers: the responses a handler returns, what the connection does after
//! them, and the small builders every handler uses (tagged OK / NO / BAD, BYE, response codes,
//! store errors mapped to RFC 5530 codes, and the words for commands that could not be parsed).

use imap_next::imap_types::core::{Tag, Text};
use imap_next::imap_types::response::{Code, CodeOther, Data, Status};
use imap_next::server::Error as ProtocolError;

use crate::mailstore::MailStoreError;

/// One response to send.
pub(crate) enum Out {
    Data(Data<'static>),
    Status(Status<'static>),
}

/// What the connection does after sending a reply.
pub(crate) enum After {
    Continue,
    Close,
    StartTls,
}

pub(crate) struct Reply {
    pub out: Vec<Out>,
    pub after: After,
}

impl Reply {
    pub(crate) fn done(out: Vec<Out>) -> Self {
        Reply {
            out,
            after: After::Continue,
        }
    }
}

/// A step of AUTHENTICATE (RFC 3501 §6.2.2).
pub(crate) enum AuthStep {
    Continue,
    Finish(Status<'static>),
}

/// What a handler answers: its responses, or a single status when it fails.
pub(crate) type Handled = Result<Vec<Out>, Status<'static>>;

pub(crate) fn code_other(name: &'static str) -> Code<'static> {
    Code::Other(CodeOther::unvalidated(name.as_bytes()))
}

pub(crate) fn ok(tag: &Tag<'static>, code: Option<Code<'static>>, message: &str) -> Out {
    Out::Status(Status::ok(Some(tag.clone()), code, text(message)).expect("valid"))
}

pub(crate) fn untagged_ok(code: Option<Code<'static>>, message: &str) -> Out {
    Out::Status(Status::ok(None, code, text(message)).expect("valid"))
}

pub(crate) fn status_no(
    tag: &Tag<'static>,
    code: Option<Code<'static>>,
    message: &str,
) -> Status<'static> {
    Status::no(Some(tag.clone()), code, text(message)).expect("valid")
}

pub(crate) fn bad(tag: &Tag<'static>, message: &str) -> Status<'static> {
    Status::bad(Some(tag.clone()), None, text(message)).expect("valid")
}

/// RFC 5530 AUTHENTICATIONFAILED: the one reply for a wrong password, an unknown login, a
/// login through another identity's onion and a login during back-off, so none of them can be
/// told from another (issue 18, item 4).
pub(crate) fn invalid_credentials(tag: &Tag<'static>) -> Status<'static> {
    status_no(
        tag,
        Some(code_other("AUTHENTICATIONFAILED")),
        "invalid credentials",
    )
}

pub(crate) fn bye(text: &str) -> Status<'static> {
    Status::bye(None, text.to_owned()).expect("bye text is valid")
}

/// Status text from any string. RFC 3501's `TEXT-CHAR` is 7-bit without CR and LF: line
/// breaks become spaces and every other character outside printable ASCII (a client's NUL or
/// invalid UTF-8 quoted back) becomes `?`, so the reply still says what is wrong instead of
/// falling back to a bare "error".
pub(crate) fn text(value: &str) -> Text<'static> {
    let cleaned: String = value
        .chars()
        .map(|c| match c {
            '\r' | '\n' => ' ',
            ' ' => c,
            _ if c.is_ascii_graphic() => c,
            _ => '?',
        })
        .collect();
    Text::try_from(cleaned).unwrap_or_else(|_| Text::try_from("error".to_owned()).unwrap())
}

/// Maps a store error to its reply (RFC 5530 response codes). `try_create` is for APPEND,
/// COPY and MOVE, where a missing destination is `[TRYCREATE]` (RFC 3501 §6.3.11).
pub(crate) fn store_error(
    tag: &Tag<'static>,
    error: MailStoreError,
    try_create: bool,
) -> Status<'static> {
    let message = error.to_string();
    let code = match error {
        MailStoreError::NoSuchMailbox if try_create => Code::TryCreate,
        MailStoreError::NoSuchMailbox => code_other("NONEXISTENT"),
        MailStoreError::MailboxExists => code_other("ALREADYEXISTS"),
        MailStoreError::Cannot(_) => code_other("CANNOT"),
        MailStoreError::OverQuota { .. } => Code::OverQuota,
        MailStoreError::NotAccepting(_) => code_other("CONTACTADMIN"),
        MailStoreError::Internal => code_other("UNAVAILABLE"),
    };
    status_no(tag, Some(code), &message)
}

/// The tag at the start of a rejected command, when there is a valid one, so BAD can be tagged.
pub(crate) fn tag_of(discarded: &[u8]) -> Option<Tag<'static>> {
    let end = discarded
        .iter()
        .position(|byte| *byte == b' ' || *byte == b'\r' || *byte == b'\n')
        .unwrap_or(discarded.len());
    let candidate = &discarded[..end];
    if candidate.is_empty() || candidate.len() > 64 {
        return None;
    }
    Tag::try_from(candidate.to_vec()).ok()
}

/// What imap-next reported, for the session to answer.
pub(crate) fn describe(error: &ProtocolError) -> &'static str {
    match error {
        ProtocolError::ExpectedCrlfGotLf { .. } => "expected CRLF",
        ProtocolError::MalformedMessage { .. } => "malformed command",
        ProtocolError::LiteralTooLong { .. } => "literal too long",
        ProtocolError::CommandTooLong { .. } => "line too long",
    }
}

/// Says what is wrong with a command imap-codec could not parse, as precisely as a cheap look
/// at its first words allows.
pub(crate) fn explain_malformed(bytes: &[u8]) -> Option<String> {
    let line = bytes.split(|b| *b == b'\n').next()?;
    let line = String::from_utf8_lossy(line);
    let line = line.trim_end();
    let mut words = line.split(' ');
    let tag = words.next().unwrap_or_default();
    if tag.is_empty() {
        return Some("empty command line".to_owned());
    }
    let Some(name) = words.next().filter(|w| !w.is_empty()) else {
        return Some("missing command name after tag".to_owned());
    };
    if !name.chars().all(|c| c.is_ascii_graphic()) {
        return Some("command name is not printable ASCII".to_owned());
    }
    let mut upper = name.to_ascii_uppercase();
    if upper == "UID" {
        let sub = words.next().unwrap_or_default().to_ascii_uppercase();
        upper = format!("UID {sub}");
    }
    const KNOWN: &[&str] = &[
        "CAPABILITY",
        "NOOP",
        "LOGOUT",
        "STARTTLS",
        "AUTHENTICATE",
        "LOGIN",
        "SELECT",
        "EXAMINE",
        "CREATE",
        "DELETE",
        "RENAME",
        "SUBSCRIBE",
        "UNSUBSCRIBE",
        "LIST",
        "LSUB",
        "STATUS",
        "APPEND",
        "CHECK",
        "CLOSE",
        "EXPUNGE",
        "SEARCH",
        "FETCH",
        "STORE",
        "COPY",
        "MOVE",
        "UID FETCH",
        "UID STORE",
        "UID COPY",
        "UID MOVE",
        "UID SEARCH",
        "UID EXPUNGE",
        "IDLE",
        "NAMESPACE",
        "ENABLE",
        "GETQUOTA",
        "GETQUOTAROOT",
        "SETQUOTA",
        "UNSELECT",
        "ID",
    ];
    if KNOWN.contains(&upper.as_str()) {
        Some(format!("invalid arguments for {upper}"))
    } else {
        Some(format!("unknown command {upper}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_of_rejected_commands() {
        assert_eq!(
            tag_of(b"a1 FOO\r\n").map(|t| t.as_ref().to_owned()),
            Some("a1".to_owned())
        );
        assert!(tag_of(b"\r\n").is_none());
        assert!(tag_of(b"+bad FOO").is_none());
    }

    #[test]
    fn bad_bytes_are_explained_not_answered_with_error() {
        assert_eq!(
            explain_malformed(b"n3 \xff\xfe\xfd\r\n").as_deref(),
            Some("command name is not printable ASCII")
        );
        assert_eq!(
            explain_malformed(b"n4 NO\0OP\r\n").as_deref(),
            Some("command name is not printable ASCII")
        );
        assert_eq!(
            text("unknown \u{fffd}\0 x\r\ny").as_ref(),
            "unknown ?? x  y"
        );
    }
}
