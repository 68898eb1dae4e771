//! Just enough RFC 5322 header handling for smtp-in's decisions: is the message PGP/MIME, who
//! is it From, and cleaning a submitted message before it is signed and encrypted.

use onionpost_proto::address::{Address, AddressError, OnionHost, is_onion_name};

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

/// An address as compared: lower case, and a v3 onion host in its canonical form (subdomain
/// labels and a trailing dot removed, `onionpost_proto::address`).
pub fn normalize(address: &str) -> String {
    let address = address.trim().to_ascii_lowercase();
    let Some((local, host)) = address.rsplit_once('@') else {
        return address;
    };
    match OnionHost::parse(host) {
        Ok(onion) => format!("{local}@{onion}"),
        Err(_) => address,
    }
}

/// The onion host of an address (`<56 base32>.onion`), when it is a v3 onion address with a
/// right checksum.
pub fn onion_of(address: &str) -> Option<String> {
    let (_, host) = address.trim().rsplit_once('@')?;
    OnionHost::parse(host).ok().map(|onion| onion.to_string())
}

/// Why a recipient at a `.onion` name cannot be delivered to, when it cannot: the name is no v3
/// onion (checksum, version or length wrong) or the local part is not a dot-atom. `None` for a
/// valid onion address and for any address outside `.onion`.
pub fn onion_address_error(address: &str) -> Option<AddressError> {
    let (_, host) = address.trim().rsplit_once('@')?;
    if !is_onion_name(host) {
        return None;
    }
    Address::parse(address.trim()).err()
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

    /// tor's example v3 onion (rend-spec-v3 §6): a real one, since its checksum is verified.
    const ONION: &str = "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd.onion";

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
