//! FETCH data items (RFC 3501 §6.4.5, §7.4.2): what to read from the store for a request and
//! how to build ENVELOPE, BODYSTRUCTURE and BODY[section]<partial> from the message bytes.
//!
//! MIME structure comes from mail-parser 0.11; section numbering and the header/text split
//! follow RFC 3501 §6.4.5 and are ours, because mail-parser does not speak IMAP part numbers.

use std::num::NonZeroU32;

use chrono::{FixedOffset, Timelike};
use imap_next::imap_types::body::{
    BasicFields, Body, BodyStructure, MultiPartExtensionData, SinglePartExtensionData,
    SpecificFields,
};
use imap_next::imap_types::core::{AString, IString, Literal, NString, Vec1};
use imap_next::imap_types::datetime::DateTime as ImapDateTime;
use imap_next::imap_types::envelope::{Address as ImapAddress, Envelope};
use imap_next::imap_types::fetch::{MessageDataItem, MessageDataItemName, Section};
use mail_parser::{Address, Message, MimeHeaders, PartType};

use crate::flags::flag_fetch;
use crate::mailstore::{Flag, MessageMeta, Part};

/// How many messages one store call fetches.
pub(crate) const BATCH: usize = 256;

/// What a FETCH asks for, and what it needs from the store.
pub(crate) struct Plan {
    pub items: Vec<MessageDataItemName<'static>>,
    pub need: Option<Part>,
    pub sets_seen: bool,
}

impl Plan {
    pub(crate) fn new(mut items: Vec<MessageDataItemName<'static>>, uid: bool) -> Self {
        // RFC 3501 §6.4.8: UID FETCH responses always carry the UID.
        if uid && !items.contains(&MessageDataItemName::Uid) {
            items.push(MessageDataItemName::Uid);
        }
        let mut need = None;
        let mut sets_seen = false;
        for item in &items {
            let wanted = match item {
                MessageDataItemName::Flags
                | MessageDataItemName::Uid
                | MessageDataItemName::InternalDate
                | MessageDataItemName::Rfc822Size => None,
                MessageDataItemName::Envelope | MessageDataItemName::Rfc822Header => {
                    Some(Part::Header)
                }
                MessageDataItemName::BodyExt { section, peek, .. } => {
                    if !peek {
                        sets_seen = true;
                    }
                    match section {
                        Some(Section::Header(None))
                        | Some(Section::HeaderFields(None, _))
                        | Some(Section::HeaderFieldsNot(None, _)) => Some(Part::Header),
                        _ => Some(Part::Full),
                    }
                }
                MessageDataItemName::Rfc822 | MessageDataItemName::Rfc822Text => {
                    sets_seen = true;
                    Some(Part::Full)
                }
                _ => Some(Part::Full),
            };
            need = match (need, wanted) {
                (Some(Part::Full), _) | (_, Some(Part::Full)) => Some(Part::Full),
                (Some(Part::Header), _) | (_, Some(Part::Header)) => Some(Part::Header),
                _ => None,
            };
        }
        Plan {
            items,
            need,
            sets_seen,
        }
    }
}

pub(crate) fn fast() -> Vec<MessageDataItemName<'static>> {
    vec![
        MessageDataItemName::Flags,
        MessageDataItemName::InternalDate,
        MessageDataItemName::Rfc822Size,
    ]
}

pub(crate) fn all() -> Vec<MessageDataItemName<'static>> {
    let mut items = fast();
    items.push(MessageDataItemName::Envelope);
    items
}

pub(crate) fn full() -> Vec<MessageDataItemName<'static>> {
    let mut items = all();
    items.push(MessageDataItemName::Body);
    items
}

/// Builds the data items of one message. `body` is the header or the full message as
/// [`Plan::need`] asked.
pub(crate) fn items(
    plan: &Plan,
    meta: &MessageMeta,
    flags: &[Flag],
    body: Option<&[u8]>,
    seen_changed: bool,
) -> Vec<MessageDataItem<'static>> {
    let raw = body.unwrap_or_default();
    let parsed = match plan.need {
        Some(_) if needs_parse(&plan.items) => super::parse::message(raw),
        _ => None,
    };
    let mut out = Vec::with_capacity(plan.items.len() + 1);
    let mut flags_sent = false;
    for item in &plan.items {
        let value = match item {
            MessageDataItemName::Flags => {
                flags_sent = true;
                MessageDataItem::Flags(flag_fetch(flags))
            }
            MessageDataItemName::Uid => {
                MessageDataItem::Uid(NonZeroU32::new(meta.uid).expect("uids start at 1"))
            }
            MessageDataItemName::InternalDate => MessageDataItem::InternalDate(imap_date(meta)),
            MessageDataItemName::Rfc822Size => {
                MessageDataItem::Rfc822Size(u32::try_from(meta.size).unwrap_or(u32::MAX))
            }
            MessageDataItemName::Envelope => MessageDataItem::Envelope(match &parsed {
                Some(message) => envelope(message),
                None => empty_envelope(),
            }),
            MessageDataItemName::Body => MessageDataItem::Body(match &parsed {
                Some(message) => structure(message, 0, false, 0),
                None => plain_structure(raw),
            }),
            MessageDataItemName::BodyStructure => MessageDataItem::BodyStructure(match &parsed {
                Some(message) => structure(message, 0, true, 0),
                None => plain_structure(raw),
            }),
            MessageDataItemName::Rfc822 => MessageDataItem::Rfc822(nstring_bytes(raw)),
            MessageDataItemName::Rfc822Header => {
                MessageDataItem::Rfc822Header(nstring_bytes(header_of(raw)))
            }
            MessageDataItemName::Rfc822Text => {
                MessageDataItem::Rfc822Text(nstring_bytes(text_of(raw)))
            }
            MessageDataItemName::BodyExt {
                section, partial, ..
            } => {
                let content = section_bytes(raw, parsed.as_ref(), section.as_ref());
                let (content, origin) = match partial {
                    Some((start, length)) => {
                        let start_index = (*start as usize).min(content.len());
                        let end = start_index
                            .saturating_add(length.get() as usize)
                            .min(content.len());
                        (content[start_index..end].to_vec(), Some(*start))
                    }
                    None => (content, None),
                };
                MessageDataItem::BodyExt {
                    section: section.clone(),
                    origin,
                    data: nstring_bytes(&content),
                }
            }
            // BINARY is not advertised; answer it as BODY.PEEK[] would, without decoding.
            MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. } => {
                continue;
            }
        };
        out.push(value);
    }
    // RFC 3501 §6.4.5: when \Seen is set implicitly, the new flags are returned too.
    if seen_changed && !flags_sent {
        out.push(MessageDataItem::Flags(flag_fetch(flags)));
    }
    out
}

fn needs_parse(items: &[MessageDataItemName<'_>]) -> bool {
    items.iter().any(|item| {
        matches!(
            item,
            MessageDataItemName::Envelope
                | MessageDataItemName::Body
                | MessageDataItemName::BodyStructure
                | MessageDataItemName::BodyExt {
                    section: Some(
                        Section::Part(_)
                            | Section::Mime(_)
                            | Section::Header(Some(_))
                            | Section::Text(Some(_))
                            | Section::HeaderFields(Some(_), _)
                            | Section::HeaderFieldsNot(Some(_), _)
                    ),
                    ..
                }
        )
    })
}

fn imap_date(meta: &MessageMeta) -> ImapDateTime {
    let utc = FixedOffset::east_opt(0).expect("zero offset");
    let date = meta
        .internal_date
        .with_nanosecond(0)
        .unwrap_or(meta.internal_date)
        .with_timezone(&utc);
    ImapDateTime::try_from(date).unwrap_or_else(|_| {
        ImapDateTime::try_from(chrono::DateTime::UNIX_EPOCH.with_timezone(&utc))
            .expect("epoch is valid")
    })
}

/// A string for the wire: quoted when it can be, a literal otherwise. NUL cannot appear in
/// either (RFC 3501 §4.3), so it becomes a space; BINARY (RFC 3516) would be the clean way.
fn nstring_bytes(bytes: &[u8]) -> NString<'static> {
    NString(Some(istring(bytes)))
}

fn istring(bytes: &[u8]) -> IString<'static> {
    let cleaned: Vec<u8> = if bytes.contains(&0) {
        bytes
            .iter()
            .map(|b| if *b == 0 { b' ' } else { *b })
            .collect()
    } else {
        bytes.to_vec()
    };
    // Long values always go as literals; quoting them is legal but costs a scan for nothing.
    if cleaned.len() > 100 {
        return IString::Literal(Literal::try_from(cleaned).expect("no NUL"));
    }
    IString::try_from(cleaned).expect("no NUL")
}

fn nstring_opt(value: Option<&str>) -> NString<'static> {
    match value {
        Some(v) => nstring_bytes(v.as_bytes()),
        None => NString(None),
    }
}

/// Where the header ends: after the first empty line (RFC 5322 §2.1).
pub(crate) fn header_end(raw: &[u8]) -> usize {
    let mut index = 0;
    while index < raw.len() {
        if raw[index..].starts_with(b"\r\n\r\n") {
            return index + 4;
        }
        if raw[index..].starts_with(b"\n\n") {
            return index + 2;
        }
        if index == 0 && (raw.starts_with(b"\r\n") || raw.starts_with(b"\n")) {
            return if raw.starts_with(b"\r\n") { 2 } else { 1 };
        }
        index += 1;
    }
    raw.len()
}

pub(crate) fn header_of(raw: &[u8]) -> &[u8] {
    &raw[..header_end(raw)]
}

pub(crate) fn text_of(raw: &[u8]) -> &[u8] {
    &raw[header_end(raw)..]
}

/// Header fields as `(name, raw field including its line end)`, continuation lines kept.
pub(crate) fn header_fields(header: &[u8]) -> Vec<(String, &[u8])> {
    let mut fields = Vec::new();
    let mut start = 0;
    let mut index = 0;
    while index < header.len() {
        let line_end = header[index..]
            .iter()
            .position(|b| *b == b'\n')
            .map(|p| index + p + 1)
            .unwrap_or(header.len());
        let next_is_continuation =
            line_end < header.len() && (header[line_end] == b' ' || header[line_end] == b'\t');
        if !next_is_continuation {
            let field = &header[start..line_end];
            if let Some(colon) = field.iter().position(|b| *b == b':') {
                let name = String::from_utf8_lossy(&field[..colon]).trim().to_owned();
                fields.push((name, field));
            }
            start = line_end;
        }
        index = line_end;
    }
    fields
}

/// The value of a field, unfolded, without the name.
pub(crate) fn field_value(field: &[u8]) -> String {
    let colon = field.iter().position(|b| *b == b':').unwrap_or(0);
    let value = String::from_utf8_lossy(&field[colon + 1..]).into_owned();
    value
        .replace("\r\n", "")
        .replace('\n', "")
        .trim()
        .to_owned()
}

fn raw_header(header: &[u8], name: &str) -> Option<String> {
    header_fields(header)
        .into_iter()
        .find(|(field, _)| field.eq_ignore_ascii_case(name))
        .map(|(_, raw)| field_value(raw))
}

/// HEADER.FIELDS / HEADER.FIELDS.NOT (RFC 3501 §6.4.5): the chosen fields and the blank line.
fn filter_fields(header: &[u8], names: &Vec1<AString<'_>>, keep: bool) -> Vec<u8> {
    let wanted: Vec<String> = names
        .as_ref()
        .iter()
        .map(|n| String::from_utf8_lossy(n.as_ref()).to_ascii_lowercase())
        .collect();
    let mut out = Vec::new();
    for (name, raw) in header_fields(header) {
        if wanted.contains(&name.to_ascii_lowercase()) == keep {
            out.extend_from_slice(raw);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The bytes of a section of the message.
fn section_bytes(
    raw: &[u8],
    parsed: Option<&Message<'_>>,
    section: Option<&Section<'_>>,
) -> Vec<u8> {
    let Some(section) = section else {
        return raw.to_vec();
    };
    match section {
        Section::Header(None) => header_of(raw).to_vec(),
        Section::HeaderFields(None, names) => filter_fields(header_of(raw), names, true),
        Section::HeaderFieldsNot(None, names) => filter_fields(header_of(raw), names, false),
        Section::Text(None) => text_of(raw).to_vec(),
        Section::Part(part) => located(parsed, &part.0)
            .map(|(message, id)| part_body(message, id).to_vec())
            .unwrap_or_default(),
        Section::Mime(part) => located(parsed, &part.0)
            .map(|(message, id)| {
                let part = &message.parts[id];
                slice(&message.raw_message, part.offset_header, part.offset_body).to_vec()
            })
            .unwrap_or_default(),
        Section::Header(Some(part))
        | Section::HeaderFields(Some(part), _)
        | Section::HeaderFieldsNot(Some(part), _)
        | Section::Text(Some(part)) => {
            // These apply to a message/rfc822 part: its encapsulated message's header or text.
            let Some(nested) = located(parsed, &part.0).map(|(message, id)| part_body(message, id))
            else {
                return Vec::new();
            };
            match section {
                Section::Header(_) => header_of(nested).to_vec(),
                Section::HeaderFields(_, names) => filter_fields(header_of(nested), names, true),
                Section::HeaderFieldsNot(_, names) => {
                    filter_fields(header_of(nested), names, false)
                }
                _ => text_of(nested).to_vec(),
            }
        }
    }
}

fn slice(raw: &[u8], start: u32, end: u32) -> &[u8] {
    let start = (start as usize).min(raw.len());
    let end = (end as usize).clamp(start, raw.len());
    &raw[start..end]
}

fn part_body<'m>(message: &'m Message<'_>, id: usize) -> &'m [u8] {
    let part = &message.parts[id];
    slice(&message.raw_message, part.offset_body, part.offset_end)
}

/// Finds a part by its IMAP part number (RFC 3501 §6.4.5): the children of a multipart are
/// numbered from 1; a non-multipart message has one part, 1; the numbers after a
/// message/rfc822 part address the encapsulated message's parts.
fn located<'m>(
    parsed: Option<&'m Message<'m>>,
    path: &Vec1<NonZeroU32>,
) -> Option<(&'m Message<'m>, usize)> {
    let mut message = parsed?;
    let mut id = 0usize;
    for (depth, number) in path.as_ref().iter().enumerate() {
        let index = number.get() as usize - 1;
        let part = message.parts.get(id)?;
        match &part.body {
            PartType::Multipart(children) => id = *children.get(index)? as usize,
            PartType::Message(nested) if depth > 0 => {
                message = nested;
                match &message.parts.first()?.body {
                    PartType::Multipart(children) => id = *children.get(index)? as usize,
                    _ if index == 0 => id = 0,
                    _ => return None,
                }
            }
            _ if depth == 0 && index == 0 => id = 0,
            _ => return None,
        }
    }
    Some((message, id))
}

fn envelope(message: &Message<'_>) -> Envelope<'static> {
    // An encapsulated message shares its parent's `raw_message`; its own header is where its
    // root part says (mail-parser offsets are into the outermost message).
    let header = match message.parts.first() {
        Some(root) => slice(&message.raw_message, root.offset_header, root.offset_body),
        None => header_of(&message.raw_message),
    };
    let from = addresses(message.from());
    let sender = match message.sender() {
        Some(sender) => addresses(Some(sender)),
        None => from.clone(),
    };
    let reply_to = match message.reply_to() {
        Some(reply_to) => addresses(Some(reply_to)),
        None => from.clone(),
    };
    Envelope {
        date: nstring_opt(raw_header(header, "Date").as_deref()),
        subject: nstring_opt(raw_header(header, "Subject").as_deref()),
        from,
        sender,
        reply_to,
        to: addresses(message.to()),
        cc: addresses(message.cc()),
        bcc: addresses(message.bcc()),
        in_reply_to: nstring_opt(raw_header(header, "In-Reply-To").as_deref()),
        message_id: nstring_opt(raw_header(header, "Message-ID").as_deref()),
    }
}

fn empty_envelope() -> Envelope<'static> {
    Envelope {
        date: NString(None),
        subject: NString(None),
        from: Vec::new(),
        sender: Vec::new(),
        reply_to: Vec::new(),
        to: Vec::new(),
        cc: Vec::new(),
        bcc: Vec::new(),
        in_reply_to: NString(None),
        message_id: NString(None),
    }
}

/// RFC 3501 §7.4.2 address structures; groups are bracketed by a start (mailbox = group name,
/// host NIL) and an end marker (all NIL).
fn addresses(address: Option<&Address<'_>>) -> Vec<ImapAddress<'static>> {
    let mut out = Vec::new();
    let push = |out: &mut Vec<ImapAddress<'static>>, addr: &mail_parser::Addr<'_>| {
        let email = addr.address.as_deref().unwrap_or_default();
        let (local, domain) = email.rsplit_once('@').unwrap_or((email, ""));
        let name = addr.name.as_deref().map(encoded_word);
        out.push(ImapAddress {
            name: nstring_opt(name.as_deref()),
            adl: NString(None),
            mailbox: nstring_opt(Some(local)),
            host: nstring_opt(if domain.is_empty() {
                None
            } else {
                Some(domain)
            }),
        });
    };
    match address {
        None => {}
        Some(Address::List(list)) => {
            for addr in list {
                push(&mut out, addr);
            }
        }
        Some(Address::Group(groups)) => {
            for group in groups {
                if let Some(name) = group.name.as_deref() {
                    out.push(ImapAddress {
                        name: NString(None),
                        adl: NString(None),
                        mailbox: nstring_opt(Some(name)),
                        host: NString(None),
                    });
                }
                for addr in &group.addresses {
                    push(&mut out, addr);
                }
                if group.name.is_some() {
                    out.push(ImapAddress {
                        name: NString(None),
                        adl: NString(None),
                        mailbox: NString(None),
                        host: NString(None),
                    });
                }
            }
        }
    }
    out
}

/// mail-parser hands display names back decoded; ENVELOPE carries header text as it is on the
/// wire (RFC 3501 §7.4.2), so non-ASCII names go back into an RFC 2047 encoded word (Q form).
fn encoded_word(name: &str) -> String {
    if name.is_ascii() {
        return name.to_owned();
    }
    let mut out = String::from("=?utf-8?q?");
    for byte in name.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => out.push(byte as char),
            b' ' => out.push('_'),
            other => out.push_str(&format!("={other:02X}")),
        }
    }
    out.push_str("?=");
    out
}

fn plain_structure(raw: &[u8]) -> BodyStructure<'static> {
    let body = text_of(raw);
    BodyStructure::Single {
        body: Body {
            basic: BasicFields {
                parameter_list: vec![(istring(b"CHARSET"), istring(b"US-ASCII"))],
                id: NString(None),
                description: NString(None),
                content_transfer_encoding: istring(b"7BIT"),
                size: body.len() as u32,
            },
            specific: SpecificFields::Text {
                subtype: istring(b"PLAIN"),
                number_of_lines: count_lines(body),
            },
        },
        extension_data: None,
    }
}

/// A part described as opaque bytes (see [`MAX_STRUCTURE_DEPTH`]).
fn opaque_structure(body: &[u8]) -> BodyStructure<'static> {
    BodyStructure::Single {
        body: Body {
            basic: BasicFields {
                parameter_list: Vec::new(),
                id: NString(None),
                description: NString(None),
                content_transfer_encoding: istring(b"7BIT"),
                size: body.len() as u32,
            },
            specific: SpecificFields::Basic {
                r#type: istring(b"APPLICATION"),
                subtype: istring(b"OCTET-STREAM"),
            },
        },
        extension_data: None,
    }
}

fn count_lines(bytes: &[u8]) -> u32 {
    bytes.iter().filter(|b| **b == b'\n').count() as u32
}

/// How deep BODY / BODYSTRUCTURE describe nested multiparts and messages (the limit Dovecot's
/// message parser has had since CVE-2020-12100). A part at this depth that would nest further is shown
/// as one `APPLICATION/OCTET-STREAM` leaf, still fetchable by its section number: building and
/// encoding the description recurses once per level, and a message nested thousands deep,
/// which anyone can send, would otherwise overflow the session's stack and abort the process.
const MAX_STRUCTURE_DEPTH: usize = 100;

/// BODY / BODYSTRUCTURE (RFC 3501 §7.4.2) of part `id`, `depth` levels below the top;
/// `extended` adds the extension data BODYSTRUCTURE carries.
fn structure(
    message: &Message<'_>,
    id: usize,
    extended: bool,
    depth: usize,
) -> BodyStructure<'static> {
    let Some(part) = message.parts.get(id) else {
        return plain_structure(b"");
    };
    if depth >= MAX_STRUCTURE_DEPTH
        && matches!(part.body, PartType::Multipart(_) | PartType::Message(_))
    {
        return opaque_structure(slice(
            &message.raw_message,
            part.offset_body,
            part.offset_end,
        ));
    }
    let content_type = part.content_type();
    let (mut c_type, mut c_subtype) = match content_type {
        Some(ct) => (
            ct.ctype().to_ascii_uppercase(),
            ct.subtype().unwrap_or_default().to_ascii_uppercase(),
        ),
        None => ("TEXT".to_owned(), "PLAIN".to_owned()),
    };
    let mut parameters: Vec<(IString<'static>, IString<'static>)> = content_type
        .and_then(|ct| ct.attributes())
        .map(|attributes| {
            attributes
                .iter()
                .map(|a| {
                    (
                        istring(a.name.to_ascii_uppercase().as_bytes()),
                        istring(a.value.as_bytes()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if let PartType::Multipart(children) = &part.body {
        let bodies: Vec<BodyStructure<'static>> = children
            .iter()
            .map(|child| structure(message, *child as usize, extended, depth + 1))
            .collect();
        if let Ok(bodies) = Vec1::try_from(bodies) {
            if c_subtype.is_empty() {
                c_subtype = "MIXED".to_owned();
            }
            parameters.retain(|(name, _)| name.as_ref() != b"BOUNDARY" || extended);
            return BodyStructure::Multi {
                bodies,
                subtype: istring(c_subtype.as_bytes()),
                extension_data: extended.then_some(MultiPartExtensionData {
                    parameter_list: parameters,
                    tail: None,
                }),
            };
        }
        c_type = "TEXT".to_owned();
        c_subtype = "PLAIN".to_owned();
    }
    let body_bytes = slice(&message.raw_message, part.offset_body, part.offset_end);
    let part_header = slice(&message.raw_message, part.offset_header, part.offset_body);
    if c_type == "TEXT" && parameters.is_empty() {
        parameters.push((istring(b"CHARSET"), istring(b"US-ASCII")));
    }
    if c_subtype.is_empty() {
        c_subtype = if c_type == "TEXT" {
            "PLAIN"
        } else {
            "OCTET-STREAM"
        }
        .to_owned();
    }
    let encoding = raw_header(part_header, "Content-Transfer-Encoding")
        .map(|e| e.to_ascii_uppercase())
        .unwrap_or_else(|| "7BIT".to_owned());
    let basic = BasicFields {
        parameter_list: parameters,
        id: nstring_opt(raw_header(part_header, "Content-ID").as_deref()),
        description: nstring_opt(raw_header(part_header, "Content-Description").as_deref()),
        content_transfer_encoding: istring(encoding.as_bytes()),
        size: body_bytes.len() as u32,
    };
    let specific = match (&part.body, c_type.as_str()) {
        (PartType::Message(nested), _) => SpecificFields::Message {
            envelope: Box::new(envelope(nested)),
            body_structure: Box::new(structure(nested, 0, extended, depth + 1)),
            number_of_lines: count_lines(body_bytes),
        },
        (_, "TEXT") => SpecificFields::Text {
            subtype: istring(c_subtype.as_bytes()),
            number_of_lines: count_lines(body_bytes),
        },
        _ => SpecificFields::Basic {
            r#type: istring(c_type.as_bytes()),
            subtype: istring(c_subtype.as_bytes()),
        },
    };
    BodyStructure::Single {
        body: Body { basic, specific },
        extension_data: extended.then_some(SinglePartExtensionData {
            md5: NString(None),
            tail: None,
        }),
    }
}
