//! Just enough raw RFC 5322 / MIME handling to move header fields between the outer message and
//! the encrypted part without re-encoding them: fields are kept byte for byte (folding included),
//! so what was signed is what is restored.

/// One header field as it appeared: `raw` is the whole field (name, colon, value, folding) in
/// CRLF form, without the final line break.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HeaderField {
    pub name: String,
    pub raw: Vec<u8>,
}

impl HeaderField {
    pub fn new(name: &str, value: &str) -> Self {
        HeaderField {
            name: name.to_owned(),
            raw: format!("{name}: {value}").into_bytes(),
        }
    }

    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    pub fn is_content_field(&self) -> bool {
        self.name.len() > 8 && self.name[..8].eq_ignore_ascii_case("content-")
    }

    /// The unfolded value, leading and trailing white space removed.
    pub fn value(&self) -> String {
        let text = String::from_utf8_lossy(&self.raw);
        let value = text.split_once(':').map_or("", |(_, value)| value);
        value.replace("\r\n", "").trim().to_owned()
    }
}

/// A message or MIME entity split into its header fields and its body (CRLF line endings).
#[derive(Clone, Debug)]
pub(crate) struct Entity {
    pub fields: Vec<HeaderField>,
    pub body: Vec<u8>,
}

impl Entity {
    /// Splits at the first empty line (RFC 5322 §2.1). Bare LF line endings are accepted and
    /// turned into CRLF. Fails on a header line that is neither a field nor a continuation.
    pub fn parse(raw: &[u8]) -> Result<Entity, String> {
        let text = to_crlf(raw);
        let mut fields: Vec<HeaderField> = Vec::new();
        let mut rest: &[u8] = &text;
        loop {
            if rest.is_empty() {
                return Ok(Entity {
                    fields,
                    body: Vec::new(),
                });
            }
            let line_end = find(rest, b"\r\n").unwrap_or(rest.len());
            let line = &rest[..line_end];
            let after = (line_end + 2).min(rest.len());
            if line.is_empty() {
                return Ok(Entity {
                    fields,
                    body: rest[after..].to_vec(),
                });
            }
            if line[0] == b' ' || line[0] == b'\t' {
                let Some(last) = fields.last_mut() else {
                    return Err("continuation line before any header field".into());
                };
                last.raw.extend_from_slice(b"\r\n");
                last.raw.extend_from_slice(line);
            } else {
                let colon = line
                    .iter()
                    .position(|&b| b == b':')
                    .ok_or("header line without a colon")?;
                let name = std::str::from_utf8(&line[..colon])
                    .map_err(|_| "header field name is not ASCII")?;
                let name_ok = !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b));
                if !name_ok {
                    return Err(format!("bad header field name {name:?}"));
                }
                fields.push(HeaderField {
                    name: name.to_owned(),
                    raw: line.to_vec(),
                });
            }
            rest = &rest[after..];
        }
    }

    pub fn field(&self, name: &str) -> Option<&HeaderField> {
        self.fields.iter().find(|field| field.is(name))
    }

    /// Header fields, an empty line, the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 1024);
        write_fields(&mut out, &self.fields);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

pub(crate) fn write_fields(out: &mut Vec<u8>, fields: &[HeaderField]) {
    for field in fields {
        out.extend_from_slice(&field.raw);
        out.extend_from_slice(b"\r\n");
    }
}

/// Turns bare LF (and bare CR) line endings into CRLF, leaving CRLF alone.
pub(crate) fn to_crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    let mut index = 0;
    while index < raw.len() {
        match raw[index] {
            b'\r' if raw.get(index + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                index += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            byte => out.push(byte),
        }
        index += 1;
    }
    out
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// A parsed `type/subtype; name=value; ...` header value (RFC 2045 §5.1). Parameter names are
/// lowercased; quoted values are unquoted. RFC 2231 continuations are not needed by the
/// parameters this crate reads (`protocol`, `boundary`, `protected-headers`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ContentType {
    pub mime_type: String,
    pub params: Vec<(String, String)>,
}

impl ContentType {
    pub fn parse(value: &str) -> ContentType {
        let mut pieces = split_unquoted(value, ';').into_iter();
        let mime_type = pieces
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let params = pieces
            .filter_map(|piece| {
                let (name, value) = piece.split_once('=')?;
                Some((name.trim().to_ascii_lowercase(), unquote(value.trim())))
            })
            .collect();
        ContentType { mime_type, params }
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(param, _)| param == name)
            .map(|(_, value)| value.as_str())
    }

    /// The value again, without the parameter `name`, quoting every parameter value.
    pub fn render_without(&self, name: &str) -> String {
        let mut out = self.mime_type.clone();
        for (param, value) in self.params.iter().filter(|(param, _)| param != name) {
            out.push_str(&format!("; {param}=\"{}\"", value.replace('"', "\\\"")));
        }
        out
    }
}

fn split_unquoted(value: &str, separator: char) -> Vec<String> {
    let mut pieces = vec![String::new()];
    let mut in_quotes = false;
    let mut escaped = false;
    for c in value.chars() {
        let current = pieces.last_mut().expect("never empty");
        if escaped {
            current.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => {
                current.push(c);
                escaped = true;
            }
            '"' => {
                current.push(c);
                in_quotes = !in_quotes;
            }
            c if c == separator && !in_quotes => pieces.push(String::new()),
            c => current.push(c),
        }
    }
    pieces
}

fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return value.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut escaped = false;
    for c in inner.chars() {
        if c == '\\' && !escaped {
            escaped = true;
            continue;
        }
        out.push(c);
        escaped = false;
    }
    out
}

/// Splits a multipart body into its parts (RFC 2046 §5.1.1): the CRLF before each delimiter
/// belongs to the delimiter; preamble and epilogue are dropped. `None` when the closing
/// delimiter is missing.
pub(crate) fn split_multipart<'a>(body: &'a [u8], boundary: &str) -> Option<Vec<&'a [u8]>> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    // Treat the body as if it started with a line break, so a delimiter on line one is found.
    let mut positions = Vec::new();
    let mut search_from = 0;
    while let Some(found) = find(&body[search_from..], delimiter.as_bytes()) {
        let at = search_from + found;
        let at_line_start = at == 0 || (at >= 2 && &body[at - 2..at] == b"\r\n");
        if at_line_start {
            positions.push(at);
        }
        search_from = at + delimiter.len();
    }
    let mut closed = false;
    for (index, &at) in positions.iter().enumerate() {
        let after = at + delimiter.len();
        if body[after..].starts_with(b"--") {
            closed = true;
            break;
        }
        let content_start = find(&body[after..], b"\r\n")? + after + 2;
        let next = *positions.get(index + 1)?;
        let content_end = next.saturating_sub(2).max(content_start);
        parts.push(&body[content_start..content_end]);
    }
    closed.then_some(parts)
}

/// A plain message the carrier writes for an identity: `From`, `To`, `Subject`, `Date` and
/// `Message-ID`, then a multipart/mixed of `text` and `part` (a whole MIME entity, headers
/// included), which travels byte for byte (a signature may cover it exactly as made). Written
/// out rather than built with a message builder for that reason; every field is ASCII, and
/// `subject` and `text` come from the carrier, not from a peer.
pub(crate) fn mixed_message(
    from: &str,
    to: &str,
    subject: &str,
    message_id: &str,
    text: &str,
    part: &[u8],
) -> Vec<u8> {
    let boundary = format!("op-mixed-{}", hex::encode(rand::random::<[u8; 12]>()));
    let mut message = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\
         Date: {date}\r\nMessage-ID: {message_id}\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n\
         --{boundary}\r\n",
        date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S +0000"),
        text = String::from_utf8_lossy(&to_crlf(text.as_bytes())),
    )
    .into_bytes();
    message.extend_from_slice(part);
    if !part.ends_with(b"\r\n") {
        message.extend_from_slice(b"\r\n");
    }
    message.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    message
}

/// What a walk over a message's MIME tree does after visiting one entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Walk {
    /// Visit the entity's parts, if it is a multipart.
    Into,
    /// Go on with the entity's siblings.
    Over,
    /// End the walk.
    Stop,
}

/// Visits `message` and its parts depth first, no deeper than `max_depth` multiparts: how a
/// verified message is searched for the signed things it carries (introductions, revocations).
/// Entities without a parseable Content-Type field are skipped with their parts.
pub(crate) fn walk(
    message: &[u8],
    max_depth: usize,
    visit: &mut dyn FnMut(&Entity, &ContentType) -> Walk,
) {
    if let Ok(entity) = Entity::parse(message) {
        walk_entity(&entity, 0, max_depth, visit);
    }
}

fn walk_entity(
    entity: &Entity,
    depth: usize,
    max_depth: usize,
    visit: &mut dyn FnMut(&Entity, &ContentType) -> Walk,
) -> Walk {
    let Some(content_type) = entity
        .field("Content-Type")
        .map(|field| ContentType::parse(&field.value()))
    else {
        return Walk::Over;
    };
    match visit(entity, &content_type) {
        Walk::Into => {}
        other => return other,
    }
    if depth >= max_depth || !content_type.mime_type.starts_with("multipart/") {
        return Walk::Over;
    }
    let Some(parts) = content_type
        .param("boundary")
        .and_then(|boundary| split_multipart(&entity.body, boundary))
    else {
        return Walk::Over;
    };
    for part in parts {
        if let Ok(inner) = Entity::parse(part)
            && walk_entity(&inner, depth + 1, max_depth, visit) == Walk::Stop
        {
            return Walk::Stop;
        }
    }
    Walk::Over
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_fields_and_body_keeping_folding() {
        let raw = b"Subject: a\n long one\nFrom: x@y\n\nbody\nline\n";
        let entity = Entity::parse(raw).unwrap();
        assert_eq!(entity.fields.len(), 2);
        assert_eq!(entity.fields[0].raw, b"Subject: a\r\n long one");
        assert_eq!(entity.fields[0].value(), "a long one");
        assert_eq!(entity.body, b"body\r\nline\r\n");
        assert_eq!(
            entity.to_bytes(),
            b"Subject: a\r\n long one\r\nFrom: x@y\r\n\r\nbody\r\nline\r\n"
        );
    }

    #[test]
    fn rejects_garbage_headers() {
        assert!(Entity::parse(b" leading continuation\r\n\r\n").is_err());
        assert!(Entity::parse(b"no colon here\r\n\r\n").is_err());
    }

    #[test]
    fn content_type_parameters() {
        let ct = ContentType::parse(
            "Multipart/Encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"a;b\"",
        );
        assert_eq!(ct.mime_type, "multipart/encrypted");
        assert_eq!(ct.param("protocol"), Some("application/pgp-encrypted"));
        assert_eq!(ct.param("boundary"), Some("a;b"));
        let plain = ContentType::parse("text/plain; charset=utf-8; protected-headers=\"v1\"");
        assert_eq!(
            plain.render_without("protected-headers"),
            "text/plain; charset=\"utf-8\""
        );
    }

    #[test]
    fn multipart_split() {
        let body = b"preamble\r\n--b\r\nA: 1\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b--\r\nepilogue";
        let parts = split_multipart(body, "b").unwrap();
        assert_eq!(parts, vec![&b"A: 1\r\n\r\none"[..], &b"\r\ntwo"[..]]);
        assert!(split_multipart(b"--b\r\n\r\none\r\n", "b").is_none());
    }
}
