//! Just enough RFC 5322 header handling for smtp-in's decisions: is the message PGP/MIME, who
//! is it From, and cleaning a submitted message before it is signed and encrypted.

/// Splits a message into its header block (with the blank line's preceding line ending) and body.
fn split(message: &[u8]) -> (&[u8], &[u8]) {
    for (index, window) in message.windows(2).enumerate() {
        if window == b"\n\n" {
            return message.split_at(index + 1);
        }
        if window == b"\n\r" && message.get(index + 2) == Some(&b'\n') {
            return message.split_at(index + 1);
        }
    }
    (message, &[])
}

/// The header fields, unfolded, as (name, value) in order.
pub fn headers(message: &[u8]) -> Vec<(String, String)> {
    let (head, _) = split(message);
    let text = String::from_utf8_lossy(head);
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    fields
}

/// The first value of a header field, by case-insensitive name.
pub fn header(message: &[u8], name: &str) -> Option<String> {
    headers(message)
        .into_iter()
        .find(|(field, _)| field.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
}

/// Whether the message is PGP/MIME encrypted (RFC 3156: multipart/encrypted with
/// protocol application/pgp-encrypted).
pub fn is_pgp_mime(message: &[u8]) -> bool {
    header(message, "Content-Type").is_some_and(|value| {
        let value = value.to_ascii_lowercase();
        value.starts_with("multipart/encrypted") && value.contains("application/pgp-encrypted")
    })
}

/// The addresses of a From (or To) field: `Name <a@b>` or a bare `a@b`, comma separated.
pub fn addresses(value: &str) -> Vec<String> {
    value
        .split(',')
        .filter_map(|part| {
            let part = part.trim();
            let address = match (part.rfind('<'), part.rfind('>')) {
                (Some(start), Some(end)) if start < end => &part[start + 1..end],
                _ => part,
            };
            let address = address.trim();
            address.contains('@').then(|| normalize(address))
        })
        .collect()
}

/// An address as compared: lower case, subdomain labels before a `.onion` host removed.
pub fn normalize(address: &str) -> String {
    let address = address.trim().to_ascii_lowercase();
    let Some((local, host)) = address.rsplit_once('@') else {
        return address;
    };
    if let Some(base) = host.strip_suffix(".onion") {
        let label = base.rsplit('.').next().unwrap_or(base);
        return format!("{local}@{label}.onion");
    }
    address
}

/// The onion host of an address (`<56 base32>.onion`), when it is an onion address.
pub fn onion_of(address: &str) -> Option<String> {
    let normalized = normalize(address);
    let (_, host) = normalized.rsplit_once('@')?;
    let base = host.strip_suffix(".onion")?;
    let valid = base.len() == 56
        && base
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || (b'2'..=b'7').contains(&byte));
    valid.then(|| host.to_owned())
}

/// The message without its Bcc fields (RFC 5322 §3.6.3), folded lines included; the same
/// bytes when it has none. Every copy that leaves goes without them, so no recipient learns of
/// a blind one.
pub fn without_bcc(message: &[u8]) -> Vec<u8> {
    let (head, body) = split(message);
    let mut out = Vec::with_capacity(message.len());
    let mut dropping = false;
    for line in head.split_inclusive(|byte| *byte == b'\n') {
        if !line.starts_with(b" ") && !line.starts_with(b"\t") {
            dropping = line
                .iter()
                .position(|byte| *byte == b':')
                .is_some_and(|colon| line[..colon].trim_ascii().eq_ignore_ascii_case(b"bcc"));
        }
        if !dropping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(body);
    out
}

/// Prepares a submitted message for leaving: drops headers that would reveal the client or a
/// path (Received, X-Mailer, User-Agent), and adds a random Message-ID at the sender's onion
/// and a Date in UTC when the client gave none. Returns the message and its Message-ID.
pub fn prepare_submission(message: &[u8], sender_onion: &str) -> (Vec<u8>, String) {
    let (head, body) = split(message);
    let text = String::from_utf8_lossy(head);
    let mut out: Vec<u8> = Vec::with_capacity(message.len() + 128);
    let mut dropping = false;
    let mut message_id = None;
    let mut has_date = false;
    for line in text.split_inclusive('\n') {
        if line.starts_with([' ', '\t']) {
            if !dropping {
                out.extend_from_slice(line.as_bytes());
            }
            continue;
        }
        let name = line
            .split_once(':')
            .map(|(name, _)| name.trim().to_ascii_lowercase());
        dropping = matches!(
            name.as_deref(),
            Some("received" | "x-mailer" | "user-agent")
        );
        match name.as_deref() {
            Some("message-id") => {
                message_id = line
                    .split_once(':')
                    .map(|(_, value)| value.trim().to_owned());
            }
            Some("date") => has_date = true,
            _ => {}
        }
        if !dropping && !line.trim().is_empty() {
            out.extend_from_slice(line.as_bytes());
        }
    }
    if out.last().is_some_and(|last| *last != b'\n') {
        out.extend_from_slice(b"\r\n");
    }
    let message_id = match message_id.filter(|id| !id.is_empty()) {
        Some(id) => id,
        None => {
            let id = format!(
                "<{}@{}>",
                hex::encode(rand::random::<[u8; 16]>()),
                sender_onion
            );
            out.extend_from_slice(format!("Message-ID: {id}\r\n").as_bytes());
            id
        }
    };
    if !has_date {
        let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S +0000");
        out.extend_from_slice(format!("Date: {date}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    let body = body
        .strip_prefix(b"\r\n")
        .or_else(|| body.strip_prefix(b"\n"))
        .unwrap_or(body);
    out.extend_from_slice(body);
    (out, message_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONION: &str = "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz2345.onion";

    #[test]
    fn pgp_mime_is_recognised_only_with_its_protocol() {
        let encrypted = b"Content-Type: multipart/encrypted;\r\n protocol=\"application/pgp-encrypted\"; boundary=x\r\n\r\nbody";
        assert!(is_pgp_mime(encrypted));
        assert!(!is_pgp_mime(b"Content-Type: text/plain\r\n\r\nhello"));
        assert!(!is_pgp_mime(b"Subject: hi\r\n\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\""));
    }

    #[test]
    fn addresses_are_normalised() {
        assert_eq!(
            addresses(&format!("Alice <Alice@www.{ONION}>")),
            vec![format!("alice@{ONION}")]
        );
        assert_eq!(onion_of(&format!("a@{ONION}")).as_deref(), Some(ONION));
        assert_eq!(onion_of("a@example.com"), None);
    }

    #[test]
    fn submission_is_cleaned_and_completed() {
        let input = b"Received: from x\r\n\tby y\r\nFrom: a@b\r\nX-Mailer: Foo\r\nUser-Agent: Bar\r\nSubject: hi\r\n\r\nbody\r\n";
        let (out, id) = prepare_submission(input, ONION);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("Received") && !text.contains("by y"));
        assert!(!text.contains("X-Mailer") && !text.contains("User-Agent"));
        assert!(text.contains("Subject: hi\r\n"));
        assert!(id.ends_with(&format!("@{ONION}>")));
        assert!(text.contains(&format!("Message-ID: {id}\r\n")));
        assert!(text.contains("Date: ") && text.contains("+0000\r\n"));
        assert!(text.ends_with("\r\n\r\nbody\r\n"));
    }
}
