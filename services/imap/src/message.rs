//! The few RFC 5322 header operations the store needs: finding the header section, reading
//! Message-ID, and adding or removing the carrier's verification header. Deliberately byte
//! based: the message may be any charset, and nothing else of it is interpreted here.

/// The header the carrier records its verification result in. A sender's own copy is dropped
/// at delivery so it cannot be forged.
pub const VERIFICATION_HEADER: &str = "Onionpost-Verification";

/// The header section, up to and including the blank line that ends it (the whole message when
/// there is no body).
pub fn header_section(message: &[u8]) -> &[u8] {
    let mut index = 0;
    while index < message.len() {
        let line_end = message[index..]
            .iter()
            .position(|byte| *byte == b'\n')
            .map_or(message.len(), |offset| index + offset + 1);
        let line = &message[index..line_end];
        if line == b"\r\n" || line == b"\n" {
            return &message[..line_end];
        }
        index = line_end;
    }
    message
}

/// Header fields as `(name, raw bytes of the field including folded lines)`.
fn fields(header: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut fields: Vec<(&[u8], &[u8])> = Vec::new();
    let mut start: Option<usize> = None;
    let mut index = 0;
    while index < header.len() {
        let line_end = header[index..]
            .iter()
            .position(|byte| *byte == b'\n')
            .map_or(header.len(), |offset| index + offset + 1);
        let line = &header[index..line_end];
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            if let Some(begin) = start.take() {
                fields.push(field(&header[begin..index]));
            }
            if line != b"\r\n" && line != b"\n" {
                start = Some(index);
            }
        }
        index = line_end;
    }
    if let Some(begin) = start {
        fields.push(field(&header[begin..]));
    }
    fields
}

fn field(raw: &[u8]) -> (&[u8], &[u8]) {
    let name = raw
        .iter()
        .position(|byte| *byte == b':')
        .map_or(&raw[..0], |colon| &raw[..colon]);
    (name, raw)
}

/// The Message-ID, unfolded and trimmed; `None` when absent.
pub fn message_id(message: &[u8]) -> Option<String> {
    fields(header_section(message))
        .into_iter()
        .find(|(name, _)| name.trim_ascii().eq_ignore_ascii_case(b"message-id"))
        .map(|(name, raw)| {
            let value = &raw[name.len() + 1..];
            String::from_utf8_lossy(value)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
}

/// The message without any `name` header field (folded lines included).
pub fn strip_header(message: &[u8], name: &str) -> Vec<u8> {
    let header = header_section(message);
    let mut out = Vec::with_capacity(message.len());
    let mut consumed = 0;
    for (field_name, raw) in fields(header) {
        let offset = raw.as_ptr() as usize - header.as_ptr() as usize;
        out.extend_from_slice(&header[consumed..offset]);
        consumed = offset + raw.len();
        if !field_name
            .trim_ascii()
            .eq_ignore_ascii_case(name.as_bytes())
        {
            out.extend_from_slice(raw);
        }
    }
    out.extend_from_slice(&message[consumed..]);
    out
}

/// The message with `name: value` as its first header field, in the message's line ending.
pub fn prepend_header(message: &[u8], name: &str, value: &str) -> Vec<u8> {
    let crlf = message
        .iter()
        .position(|byte| *byte == b'\n')
        .is_none_or(|index| index > 0 && message[index - 1] == b'\r');
    let line_end = if crlf { "\r\n" } else { "\n" };
    let mut out = Vec::with_capacity(message.len() + name.len() + value.len() + 4);
    out.extend_from_slice(format!("{name}: {value}{line_end}").as_bytes());
    out.extend_from_slice(message);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] = b"Subject: hi\r\nOnionpost-Verification: verified;\r\n forged\r\nMessage-ID:\r\n <a@b>\r\n\r\nbody\r\nOnionpost-Verification: in body\r\n";

    #[test]
    fn header_operations() {
        assert!(header_section(MESSAGE).ends_with(b"<a@b>\r\n\r\n"));
        assert_eq!(header_section(b"Subject: x\r\n"), b"Subject: x\r\n");
        assert_eq!(message_id(MESSAGE).as_deref(), Some("<a@b>"));
        assert_eq!(message_id(b"Subject: x\r\n\r\n"), None);
        let stripped = strip_header(MESSAGE, VERIFICATION_HEADER);
        assert_eq!(
            stripped,
            b"Subject: hi\r\nMessage-ID:\r\n <a@b>\r\n\r\nbody\r\nOnionpost-Verification: in body\r\n"
        );
        let stamped = prepend_header(&stripped, VERIFICATION_HEADER, "local");
        assert!(stamped.starts_with(b"Onionpost-Verification: local\r\nSubject: hi\r\n"));
        assert!(prepend_header(b"A: b\n\nc", "X", "y").starts_with(b"X: y\nA: b"));
    }
}
