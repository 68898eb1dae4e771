//! The outbound message as the clearnet sees it: sent from the alias, with no onion address and
//! nothing that identifies the carrier or the sender's software in its header.
//!
//! Headers are kept from an allow-list (RFC 5322 §3.6 origination, destination, identification
//! and informational fields, and the MIME fields of RFC 2045); everything else (Received,
//! Autocrypt, X-*, User-Agent, Sender, Reply-To, …) is dropped, since a deny-list would leak
//! whatever header a client invents next. In To and Cc, onion addresses are removed; in
//! In-Reply-To and References, message ids at an onion are. The Message-ID is replaced by a
//! random one at the gateway domain. The body is left as the sender wrote it; a message whose
//! body (nested MIME headers included) names an onion address is refused whole
//! ([`names_onion_address`]), since the body's bytes cannot be rewritten safely.
//!
//! Every check reads a field as its reader will: RFC 2047 encoded words are decoded first
//! (`=?utf-8?B?…?=` in a display name hides nothing), and in the body quoted-printable too.
//!
//! Hand-written rather than through a MIME library: only the header block is touched, field by
//! field, and the body's bytes must go out exactly as they came (the DKIM body hash covers them).

use onionpost_proto::address::is_onion_name;

/// Header fields that pass (lower case). From, To, Cc, Message-ID, In-Reply-To and References
/// are rewritten; the others pass unchanged unless they name an onion.
const KEPT: &[&str] = &[
    "subject",
    "date",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "content-language",
    "content-id",
    "content-description",
    "auto-submitted",
];

/// The header fields DKIM signs (RFC 6376 §5.4.1: From is required; the others are those a
/// reader sees or that change how the body is read).
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

/// One header field: its name as written and its unfolded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub value: String,
}

/// Splits a message into its header fields (unfolded) and its body (the bytes after the blank
/// line, unchanged).
pub fn split(message: &[u8]) -> (Vec<Field>, &[u8]) {
    let (head, body) = match find_blank_line(message) {
        Some((head_end, body_start)) => (&message[..head_end], &message[body_start..]),
        None => (message, &message[message.len()..]),
    };
    let text = String::from_utf8_lossy(head);
    let mut fields: Vec<Field> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.value.push(' ');
                last.value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            fields.push(Field {
                name: name.trim().to_owned(),
                value: value.trim().to_owned(),
            });
        }
    }
    (fields, body)
}

/// Where the header ends and the body starts: the first empty line, ended by CRLF or a bare
/// LF whatever ended the line before it (`\n\r\n` too), or a message that starts with one
/// (no header at all).
fn find_blank_line(message: &[u8]) -> Option<(usize, usize)> {
    let mut line_start = 0;
    while line_start < message.len() {
        let rest = &message[line_start..];
        if rest.starts_with(b"\r\n") {
            return Some((line_start, line_start + 2));
        }
        if rest.starts_with(b"\n") {
            return Some((line_start, line_start + 1));
        }
        line_start += rest.iter().position(|&byte| byte == b'\n')? + 1;
    }
    None
}

/// The first value of a header field, by name without case.
pub fn header(fields: &[Field], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|field| field.name.eq_ignore_ascii_case(name))
        .map(|field| field.value.clone())
}

/// Splits an address list (RFC 5322 §3.4) at commas outside quotes, comments and angle
/// brackets. Group syntax is kept as text.
pub fn split_address_list(value: &str) -> Vec<String> {
    let mut entries = Vec::new();
    let mut current = String::new();
    let (mut quoted, mut angle, mut comment) = (false, false, 0u32);
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            current.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' if comment == 0 => quoted = !quoted,
            '<' if !quoted && comment == 0 => angle = true,
            '>' if !quoted && comment == 0 => angle = false,
            '(' if !quoted => comment += 1,
            ')' if !quoted && comment > 0 => comment -= 1,
            ',' if !quoted && !angle && comment == 0 => {
                if !current.trim().is_empty() {
                    entries.push(current.trim().to_owned());
                }
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        entries.push(current.trim().to_owned());
    }
    entries
}

/// The address of one list entry: inside the angle brackets, else the entry itself.
pub fn address_of(entry: &str) -> String {
    let inner = match (entry.rfind('<'), entry.rfind('>')) {
        (Some(open), Some(close)) if open < close => &entry[open + 1..close],
        _ => entry,
    };
    crate::alias::normalize(inner)
}

/// Whether a header value, as its reader sees it (encoded words decoded), mentions an onion.
fn names_onion(value: &str) -> bool {
    decode_encoded_words(value)
        .to_ascii_lowercase()
        .contains(".onion")
}

/// Whether a message body names an onion address (`local@….onion`, any case, in plain text, in
/// quoted-printable, in an encoded word or in a nested part's header). Onion web addresses
/// without a mailbox pass: they say nothing about who sent the message.
pub fn names_onion_address(body: &[u8]) -> bool {
    let text = decode_encoded_words(&decode_quoted_printable(body));
    text.split(|c: char| c.is_whitespace() || "<>()[]{},;:\"'`?!*|/\\=".contains(c))
        .any(|token| {
            token
                .rsplit_once('@')
                .is_some_and(|(local, host)| !local.is_empty() && is_onion_name(host))
        })
}

/// The bytes with quoted-printable soft line breaks and `=XX` escapes decoded (RFC 2045 §6.7),
/// read as UTF-8. Applied to a whole body whatever its parts' encodings: it only serves the
/// onion check, and text that is no quoted-printable loses nothing that check needs.
fn decode_quoted_printable(body: &[u8]) -> String {
    let mut out = Vec::with_capacity(body.len());
    let mut index = 0;
    while index < body.len() {
        let byte = body[index];
        if byte != b'=' {
            out.push(byte);
            index += 1;
            continue;
        }
        let rest = &body[index + 1..];
        if rest.starts_with(b"\r\n") {
            index += 3;
        } else if rest.starts_with(b"\n") {
            index += 2;
        } else if let Some(value) = rest.get(..2).and_then(hex_byte) {
            out.push(value);
            index += 3;
        } else {
            out.push(byte);
            index += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_byte(digits: &[u8]) -> Option<u8> {
    let text = std::str::from_utf8(digits).ok()?;
    u8::from_str_radix(text, 16).ok()
}

/// The text with its RFC 2047 encoded words (`=?charset?B|Q?…?=`) decoded and the white space
/// between adjacent ones dropped (RFC 2047 §6.2). Decoded bytes are read as UTF-8: the checks
/// look for ASCII, which UTF-8 and the ISO 8859 and Windows charsets all write as ASCII.
fn decode_encoded_words(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut after_word = false;
    while let Some(start) = rest.find("=?") {
        let between = &rest[..start];
        let Some((decoded, used)) = decode_word(&rest[start + 2..]) else {
            out.push_str(&rest[..start + 2]);
            rest = &rest[start + 2..];
            after_word = false;
            continue;
        };
        if !(after_word && between.trim().is_empty()) {
            out.push_str(between);
        }
        out.push_str(&decoded);
        rest = &rest[start + 2 + used..];
        after_word = true;
    }
    out.push_str(rest);
    out
}

/// One encoded word after its `=?`: `charset?encoding?text?=`. The decoded text and the length
/// of what it took.
fn decode_word(word: &str) -> Option<(String, usize)> {
    let (charset, rest) = word.split_once('?')?;
    let (encoding, rest) = rest.split_once('?')?;
    let end = rest.find("?=")?;
    let encoded = &rest[..end];
    if charset.is_empty() || encoded.contains(char::is_whitespace) {
        return None;
    }
    let bytes = match encoding {
        "B" | "b" => {
            use base64::Engine as _;
            let lenient = base64::engine::GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
                    .with_decode_allow_trailing_bits(true),
            );
            lenient.decode(encoded).ok()?
        }
        "Q" | "q" => {
            let underscores = encoded.replace('_', " ");
            decode_quoted_printable(underscores.as_bytes()).into_bytes()
        }
        _ => return None,
    };
    let used = charset.len() + 1 + encoding.len() + 1 + end + 2;
    Some((String::from_utf8_lossy(&bytes).into_owned(), used))
}

/// The display name of the From field, when it has one that names no onion.
fn display_name(from: &str) -> Option<String> {
    let open = from.find('<')?;
    let name = from[..open].trim();
    if name.is_empty() || names_onion(name) {
        return None;
    }
    Some(name.to_owned())
}

/// A message id that names no onion.
fn clearnet_ids(value: &str) -> String {
    value
        .split_whitespace()
        .filter(|id| !names_onion(id))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The message as it leaves for the clearnet, from `alias_address`, with a fresh Message-ID at
/// `domain`. CRLF line endings in the header; the body unchanged.
pub fn for_clearnet(message: &[u8], alias_address: &str, domain: &str) -> Vec<u8> {
    let (fields, body) = split(message);
    let mut out = String::with_capacity(message.len().min(64 * 1024) + 256);
    let from = header(&fields, "From").unwrap_or_default();
    match display_name(&from) {
        Some(name) => out.push_str(&format!("From: {name} <{alias_address}>\r\n")),
        None => out.push_str(&format!("From: <{alias_address}>\r\n")),
    }
    let mut has_to = false;
    for field in &fields {
        let name = field.name.to_ascii_lowercase();
        match name.as_str() {
            "to" | "cc" => {
                let kept: Vec<String> = split_address_list(&field.value)
                    .into_iter()
                    .filter(|entry| !names_onion(entry))
                    .collect();
                if kept.is_empty() {
                    continue;
                }
                has_to |= name == "to";
                let label = if name == "to" { "To" } else { "Cc" };
                out.push_str(&format!("{label}: {}\r\n", kept.join(", ")));
            }
            "in-reply-to" | "references" => {
                let ids = clearnet_ids(&field.value);
                if !ids.is_empty() {
                    let label = if name == "in-reply-to" {
                        "In-Reply-To"
                    } else {
                        "References"
                    };
                    out.push_str(&format!("{label}: {ids}\r\n"));
                }
            }
            kept if KEPT.contains(&kept) => {
                if names_onion(&field.value) {
                    continue;
                }
                out.push_str(&format!("{}: {}\r\n", field.name, field.value));
            }
            _ => {}
        }
    }
    if !has_to {
        out.push_str("To: undisclosed-recipients:;\r\n");
    }
    if header(&fields, "Date").is_none() {
        out.push_str(&format!(
            "Date: {}\r\n",
            chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S +0000")
        ));
    }
    let id: [u8; 16] = rand::random();
    out.push_str(&format!("Message-ID: <{}@{domain}>\r\n", hex::encode(id)));
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

#[cfg(test)]
mod tests {
    /// The header ends at the first empty line however lines end, and a message that starts
    /// with one has no header: its first lines are body, never fields.
    #[test]
    fn the_header_ends_at_the_first_empty_line_whatever_ends_the_lines() {
        for (message, fields, body) in [
            (&b"A: 1\r\nB: 2\r\n\r\nbody\r\n"[..], 2, &b"body\r\n"[..]),
            (b"A: 1\nB: 2\n\nbody\n", 2, b"body\n"),
            (b"A: 1\n\r\nbody", 1, b"body"),
            (b"A: 1\r\n\nbody", 1, b"body"),
            (b"\r\nA: 1\r\n\r\nbody", 0, b"A: 1\r\n\r\nbody"),
            (b"\nA: 1\n\nbody", 0, b"A: 1\n\nbody"),
            (b"A: 1\r\n", 1, b""),
        ] {
            let (parsed, rest) = super::split(message);
            assert_eq!(
                parsed.len(),
                fields,
                "{:?}",
                String::from_utf8_lossy(message)
            );
            assert_eq!(rest, body, "{:?}", String::from_utf8_lossy(message));
        }
    }

    use super::*;

    fn onion() -> String {
        format!("{}.onion", "a".repeat(56))
    }

    #[test]
    fn the_clearnet_copy_names_no_onion_and_comes_from_the_alias() {
        let onion = onion();
        let message = format!(
            "From: Alice <alice@{onion}>\r\n\
             To: David <david@example.test>, bob@{onion}\r\n\
             Cc: \"Bob, the onion\" <bob@{onion}>\r\n\
             Subject: Hello\r\n\
             Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
             Message-ID: <abc@{onion}>\r\n\
             In-Reply-To: <orig@example.test>\r\n\
             References: <x@{onion}> <orig@example.test>\r\n\
             Autocrypt: addr=alice@{onion}; keydata=AAAA\r\n\
             X-Mailer: Something 1.0\r\n\
             Received: from localhost\r\n\
             Reply-To: alice@{onion}\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             \r\n\
             Hi David.\r\n"
        );
        let out = for_clearnet(message.as_bytes(), "xyz@gw.example", "gw.example");
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains(".onion"), "{text}");
        assert!(
            text.starts_with("From: Alice <xyz@gw.example>\r\n"),
            "{text}"
        );
        assert!(
            text.contains("To: David <david@example.test>\r\n"),
            "{text}"
        );
        assert!(!text.contains("Cc:"), "{text}");
        assert!(text.contains("In-Reply-To: <orig@example.test>\r\n"));
        assert!(text.contains("References: <orig@example.test>\r\n"));
        assert!(text.contains("Message-ID: <") && text.contains("@gw.example>\r\n"));
        for gone in ["Autocrypt:", "X-Mailer:", "Received:", "\nReply-To:"] {
            assert!(!text.contains(gone), "{gone} left in {text}");
        }
        assert!(text.contains("Subject: Hello\r\n"));
        assert!(text.ends_with("\r\n\r\nHi David.\r\n"), "{text}");
    }

    #[test]
    fn folded_fields_are_unfolded_and_a_missing_to_is_undisclosed() {
        let onion = onion();
        let message =
            format!("From: alice@{onion}\nTo: bob@{onion}\nSubject: a\n long subject\n\nbody\n");
        let out = for_clearnet(message.as_bytes(), "xyz@gw.example", "gw.example");
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("From: <xyz@gw.example>\r\n"), "{text}");
        assert!(text.contains("Subject: a long subject\r\n"));
        assert!(text.contains("To: undisclosed-recipients:;\r\n"));
        assert!(text.contains("Date: "));
        assert!(text.ends_with("\r\n\r\nbody\n"));
    }

    #[test]
    fn an_onion_in_an_encoded_word_does_not_pass_the_filter() {
        let onion = onion();
        // "alice@<onion>" in base64, and "Bob <bob@<onion>>" in Q, as mail clients write them.
        let b_word = {
            use base64::Engine as _;
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("alice@{onion}"));
            format!("=?utf-8?B?{encoded}?=")
        };
        let q_word = format!("=?iso-8859-1?Q?bob=40{}?=", onion.replace('.', "=2E"));
        let message = format!(
            "From: {b_word} <alice@{onion}>\r\n\
             To: David <david@example.test>, {q_word} <bob@example.test>\r\n\
             Subject: =?utf-8?Q?see_?= =?utf-8?Q?x{}?=\r\n\
             References: <=?utf-8?B?eEB4Lm9uaW9u?=>\r\n\
             \r\n\
             Hi.\r\n",
            onion.replace('.', "=2E")
        );
        let out = for_clearnet(message.as_bytes(), "xyz@gw.example", "gw.example");
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("From: <xyz@gw.example>\r\n"), "{text}");
        assert!(
            text.contains("To: David <david@example.test>\r\n"),
            "{text}"
        );
        assert!(!text.contains("Subject:"), "{text}");
        assert!(!text.contains("References:"), "{text}");
        assert!(!decode_encoded_words(&text).contains(".onion"), "{text}");
    }

    #[test]
    fn onion_addresses_in_bodies_and_nested_headers_are_found() {
        let onion = onion();
        let (head, tail) = onion.split_at(30);
        for body in [
            format!("On Monday, alice@{onion} wrote:\r\n> hi\r\n"),
            format!("Write to <Alice@WWW.{}>.\r\n", onion.to_uppercase()),
            format!("mailto:alice@{onion}?subject=x\r\n"),
            // Quoted-printable: a soft line break inside, the dot escaped.
            format!("alice@{head}=\r\n{}\r\n", tail.replace('.', "=2E")),
            // A forwarded message: the address is in the nested part's header.
            format!(
                "--b\r\nContent-Type: message/rfc822\r\n\r\nFrom: =?utf-8?Q?alice=40{onion}?=\r\n\r\nhi\r\n--b--\r\n"
            ),
        ] {
            assert!(names_onion_address(body.as_bytes()), "{body}");
        }
        for body in [
            "Hi David.\r\n".to_owned(),
            format!("The onion site http://{onion}/ is up.\r\n"),
            "Reach me at david@example.test.\r\n".to_owned(),
        ] {
            assert!(!names_onion_address(body.as_bytes()), "{body}");
        }
    }

    #[test]
    fn address_lists_split_outside_quotes_and_brackets() {
        let entries = split_address_list("\"Doe, J\" <j@x.test>, k@y.test , (c,m) <l@z.test>");
        assert_eq!(entries.len(), 3, "{entries:?}");
        assert_eq!(address_of(&entries[0]), "j@x.test");
        assert_eq!(address_of(&entries[1]), "k@y.test");
        assert_eq!(address_of(&entries[2]), "l@z.test");
    }
}
