//! Introductions: Bob introduces Carol to Alice with a vCard 4.0 (RFC 6350) carrying Carol's
//! EMAIL and KEY, signed by Bob (design, "Introductions").
//!
//! The introduction is a `multipart/signed` MIME entity (RFC 3156 §5): the first part is the
//! vCard (`text/vcard`), the second Bob's detached OpenPGP signature over that first part,
//! headers included, exactly as it stands. It is an ordinary signed attachment, so any PGP/MIME
//! mail client can check it too; onionpost sends it inside an encrypted message. KEY is a `data:`
//! URI of Carol's binary certificate (RFC 6350 §6.8.1, RFC 2397).
//!
//! Verifying it gives the contact's address, their certificate (which must hold that address),
//! and the introducer's fingerprint; the address book records the introducer, and the pinning
//! rule decides about the key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::parse::stream::DetachedVerifierBuilder;
use sequoia_openpgp::serialize::SerializeInto;
use sequoia_openpgp::serialize::stream::{Armorer, Message, Signer};
use sequoia_openpgp::{Cert, Fingerprint};
use std::io::Write;

use crate::certs::POLICY;
use crate::mime::{ContentType, Entity, Walk, split_multipart};
use crate::statement::SignerCheck;
use crate::{Address, IdentityKey, KeysError, cert_holds_address};

/// RFC 6350 §3.2: lines longer than 75 octets are folded.
const VCARD_LINE_OCTETS: usize = 75;
const KEY_DATA_PREFIX: &str = "data:application/pgp-keys;base64,";

/// A verified introduction.
#[derive(Clone, Debug)]
pub struct Introduction {
    /// The introduced contact's address (EMAIL).
    pub contact: Address,
    /// Their certificate (KEY), holding that address.
    pub cert: Cert,
    /// Who signed the introduction.
    pub introducer: Fingerprint,
}

/// The vCard for a contact: FN and EMAIL are the address, KEY the certificate.
pub fn vcard(contact: &Address, cert: &Cert) -> Result<String, KeysError> {
    if !cert_holds_address(cert, contact) {
        return Err(KeysError::AddressNotBound(contact.to_string()));
    }
    let key_bytes = cert
        .clone()
        .strip_secret_key_material()
        .export_to_vec()
        .map_err(KeysError::crypto)?;
    let lines = [
        "BEGIN:VCARD".to_owned(),
        "VERSION:4.0".to_owned(),
        format!("FN:{contact}"),
        format!("EMAIL:{contact}"),
        format!("KEY:{KEY_DATA_PREFIX}{}", BASE64.encode(key_bytes)),
        "END:VCARD".to_owned(),
    ];
    Ok(lines.iter().map(|line| fold_vcard_line(line)).collect())
}

fn fold_vcard_line(line: &str) -> String {
    // Every character we write is ASCII, so octets and characters agree.
    let mut out = String::with_capacity(line.len() + line.len() / 70 * 3 + 2);
    let mut rest = line;
    let mut first = true;
    while !rest.is_empty() {
        let room = if first {
            VCARD_LINE_OCTETS
        } else {
            VCARD_LINE_OCTETS - 1
        };
        let (chunk, tail) = rest.split_at(room.min(rest.len()));
        if !first {
            out.push(' ');
        }
        out.push_str(chunk);
        out.push_str("\r\n");
        rest = tail;
        first = false;
    }
    out
}

/// Reads EMAIL and KEY from a vCard 4.0.
pub fn parse_vcard(text: &str) -> Result<(Address, Cert), KeysError> {
    let malformed = |why: &str| KeysError::MalformedIntroduction(why.to_owned());
    let unfolded = text
        .replace("\r\n ", "")
        .replace("\r\n\t", "")
        .replace("\n ", "");
    let lines: Vec<&str> = unfolded.lines().map(str::trim_end).collect();
    if !lines
        .first()
        .is_some_and(|line| line.eq_ignore_ascii_case("BEGIN:VCARD"))
    {
        return Err(malformed("does not start with BEGIN:VCARD"));
    }
    if !lines
        .iter()
        .any(|line| line.eq_ignore_ascii_case("VERSION:4.0"))
    {
        return Err(malformed("not a vCard 4.0"));
    }
    let mut email = None;
    let mut key = None;
    for line in &lines {
        let Some((name_and_params, value)) = line.split_once(':') else {
            continue;
        };
        let name = name_and_params.split(';').next().unwrap_or_default();
        // A property may carry a group prefix ("item1.EMAIL").
        let name = name.rsplit('.').next().unwrap_or(name);
        if name.eq_ignore_ascii_case("EMAIL") && email.is_none() {
            email = Some(value);
        } else if name.eq_ignore_ascii_case("KEY") && key.is_none() {
            key = Some(value);
        }
    }
    let email = email.ok_or_else(|| malformed("no EMAIL"))?;
    let contact = Address::parse(email)?;
    let key = key.ok_or_else(|| malformed("no KEY"))?;
    let encoded = key
        .strip_prefix(KEY_DATA_PREFIX)
        .ok_or_else(|| malformed("KEY is not a data:application/pgp-keys;base64 URI"))?;
    let key_bytes = BASE64
        .decode(encoded.trim())
        .map_err(|_| malformed("KEY is not base64"))?;
    let cert = crate::parse_cert(&key_bytes)?;
    if !cert_holds_address(&cert, &contact) {
        return Err(KeysError::AddressNotBound(contact.to_string()));
    }
    Ok((contact, cert))
}

/// The introducer signs a vCard for the contact; returns the `multipart/signed` MIME entity
/// (header fields, empty line, body) to attach to a message.
pub fn introduce(
    introducer: &IdentityKey,
    contact: &Address,
    cert: &Cert,
) -> Result<Vec<u8>, KeysError> {
    let card = vcard(contact, cert)?;
    let signed_part = format!(
        "Content-Type: text/vcard; charset=utf-8\r\n\
         Content-Disposition: attachment; filename=\"contact.vcf\"\r\n\
         Content-Transfer-Encoding: 7bit\r\n\
         \r\n\
         {card}"
    );
    let mut signature = Vec::new();
    let message = Armorer::new(Message::new(&mut signature))
        .kind(sequoia_openpgp::armor::Kind::Signature)
        .build()
        .map_err(KeysError::crypto)?;
    let mut signer = Signer::new(message, introducer.signing_keypair()?)
        .map_err(KeysError::crypto)?
        .detached()
        .build()
        .map_err(KeysError::crypto)?;
    signer
        .write_all(signed_part.as_bytes())
        .map_err(KeysError::crypto)?;
    signer.finalize().map_err(KeysError::crypto)?;
    let signature = String::from_utf8(signature).map_err(KeysError::crypto)?;

    let mut random = [0u8; 12];
    sequoia_openpgp::crypto::random(&mut random).map_err(KeysError::crypto)?;
    let boundary = format!("op-intro-{}", hex::encode(random));
    Ok(format!(
        "Content-Type: multipart/signed; micalg=pgp-sha512;\r\n \
         protocol=\"application/pgp-signature\"; boundary=\"{boundary}\"\r\n\
         Content-Description: introduction of {contact}\r\n\
         \r\n\
         --{boundary}\r\n\
         {signed_part}\r\n\
         --{boundary}\r\n\
         Content-Type: application/pgp-signature; name=\"signature.asc\"\r\n\
         \r\n\
         {signature}\r\n\
         --{boundary}--\r\n",
        signature = signature.replace("\r\n", "\n").replace('\n', "\r\n"),
    )
    .into_bytes())
}

/// The plaintext message that carries an introduction (`part`, from [`introduce`]) from
/// `from` to `to`: a line of text and the signed card, which travels byte for byte.
pub fn message(
    from: &Address,
    to: &Address,
    introduced: &Address,
    message_id: &str,
    part: &[u8],
) -> Vec<u8> {
    crate::mime::mixed_message(
        &from.to_string(),
        &to.to_string(),
        &format!("An introduction: {introduced}"),
        message_id,
        &format!(
            "I introduce {introduced} to you. The attached contact card holds their key, signed by\n\
             me; your carrier adds them to your address book, introduced by me."
        ),
        part,
    )
}

/// Checks an introduction made by [`introduce`] against the certificates of possible
/// introducers (the account's contacts).
pub fn verify(entity: &[u8], introducer_certs: &[Cert]) -> Result<Introduction, KeysError> {
    let malformed = |why: &str| KeysError::MalformedIntroduction(why.to_owned());
    let outer = Entity::parse(entity).map_err(|why| malformed(&why))?;
    let content_type = outer
        .field("Content-Type")
        .map(|field| ContentType::parse(&field.value()))
        .ok_or_else(|| malformed("no Content-Type"))?;
    let signed_by_pgp = content_type.mime_type == "multipart/signed"
        && content_type
            .param("protocol")
            .is_some_and(|protocol| protocol.eq_ignore_ascii_case("application/pgp-signature"));
    if !signed_by_pgp {
        return Err(malformed("not multipart/signed with an OpenPGP signature"));
    }
    let boundary = content_type
        .param("boundary")
        .ok_or_else(|| malformed("no boundary"))?;
    let parts = split_multipart(&outer.body, boundary)
        .ok_or_else(|| malformed("multipart/signed ends before its closing boundary"))?;
    let [signed_part, signature_part] = parts.as_slice() else {
        return Err(malformed("multipart/signed does not have two parts"));
    };
    let signature = Entity::parse(signature_part).map_err(|why| malformed(&why))?;

    let mut check = SignerCheck::new(introducer_certs);
    let verified = DetachedVerifierBuilder::from_bytes(&signature.body)
        .and_then(|builder| builder.with_policy(&POLICY, None, &mut check))
        .and_then(|mut verifier| verifier.verify_bytes(signed_part));
    let introducer = check.signer(verified, KeysError::BadSignature)?;

    let card = Entity::parse(signed_part).map_err(|why| malformed(&why))?;
    let card_type = card
        .field("Content-Type")
        .map(|field| ContentType::parse(&field.value()).mime_type);
    if card_type.as_deref() != Some("text/vcard") {
        return Err(malformed("signed part is not text/vcard"));
    }
    let text = String::from_utf8(card.body).map_err(|_| malformed("vCard is not UTF-8"))?;
    let (contact, cert) = parse_vcard(&text)?;
    Ok(Introduction {
        contact,
        cert,
        introducer,
    })
}

/// Most introductions taken from one message, and how deep its multiparts are searched.
pub const MAX_INTRODUCTIONS_PER_MESSAGE: usize = 8;
const MAX_DEPTH: usize = 4;

/// The introductions a (decrypted) message carries: every `multipart/signed` entity whose signed
/// part is a vCard, found in the message itself or in its multipart parts, byte for byte as
/// [`verify`] takes them. Nothing here is trusted: [`verify`] decides.
pub fn find_in(message: &[u8]) -> Vec<Vec<u8>> {
    let mut found = Vec::new();
    crate::mime::walk(message, MAX_DEPTH, &mut |entity, content_type| {
        if found.len() >= MAX_INTRODUCTIONS_PER_MESSAGE {
            return Walk::Stop;
        }
        if content_type.mime_type != "multipart/signed" {
            return Walk::Into;
        }
        let signs_a_card = content_type
            .param("boundary")
            .and_then(|boundary| split_multipart(&entity.body, boundary))
            .and_then(|parts| parts.first().and_then(|first| Entity::parse(first).ok()))
            .is_some_and(|first| {
                first.field("Content-Type").is_some_and(|field| {
                    ContentType::parse(&field.value()).mime_type == "text/vcard"
                })
            });
        if signs_a_card {
            found.push(entity.to_bytes());
        }
        Walk::Over
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity_key::tests::{alice, bob, carol};

    #[test]
    fn vcard_shape() {
        let card = vcard(carol().address(), &carol().public_cert()).unwrap();
        assert!(card.starts_with("BEGIN:VCARD\r\nVERSION:4.0\r\n"));
        assert!(card.ends_with("END:VCARD\r\n"));
        assert!(card.contains(&format!("\r\nEMAIL:{}\r\n", carol().address())));
        assert!(
            card.split("\r\n")
                .all(|line| line.len() <= VCARD_LINE_OCTETS)
        );
        let (address, cert) = parse_vcard(&card).unwrap();
        assert_eq!(&address, carol().address());
        assert_eq!(cert.fingerprint(), carol().fingerprint());
        assert!(!cert.is_tsk());
    }

    #[test]
    fn introduction_round_trip() {
        let entity = introduce(bob(), carol().address(), &carol().public_cert()).unwrap();
        let introduction = verify(&entity, &[alice().public_cert(), bob().public_cert()]).unwrap();
        assert_eq!(&introduction.contact, carol().address());
        assert_eq!(introduction.cert.fingerprint(), carol().fingerprint());
        assert_eq!(introduction.introducer, bob().fingerprint());
    }

    #[test]
    fn unknown_introducer() {
        let entity = introduce(bob(), carol().address(), &carol().public_cert()).unwrap();
        let error = verify(&entity, &[alice().public_cert()]).unwrap_err();
        assert!(matches!(error, KeysError::UnknownSigner(_)), "{error}");
    }

    #[test]
    fn altered_vcard_is_a_bad_signature() {
        let entity = introduce(bob(), carol().address(), &carol().public_cert()).unwrap();
        let text = String::from_utf8(entity).unwrap();
        // Swap Carol's key for Alice's inside the signed vCard.
        let carol_card = vcard(carol().address(), &carol().public_cert()).unwrap();
        let carol_key_line = carol_card
            .split("\r\n")
            .find(|line| line.starts_with("KEY:"))
            .unwrap();
        let tampered = text.replacen(carol_key_line, &carol_key_line.replace('A', "B"), 1);
        assert_ne!(tampered, text);
        let error = verify(tampered.as_bytes(), &[bob().public_cert()]).unwrap_err();
        assert!(matches!(error, KeysError::BadSignature(_)), "{error}");
    }

    #[test]
    fn key_must_hold_the_email() {
        assert!(matches!(
            vcard(carol().address(), &alice().public_cert()),
            Err(KeysError::AddressNotBound(_))
        ));
        let card = vcard(carol().address(), &carol().public_cert())
            .unwrap()
            .replace(
                &carol().address().to_string(),
                &alice().address().to_string(),
            );
        assert!(matches!(
            parse_vcard(&card),
            Err(KeysError::AddressNotBound(_))
        ));
    }

    #[test]
    fn malformed_introductions() {
        assert!(matches!(
            verify(b"Content-Type: text/plain\r\n\r\nhello\r\n", &[]),
            Err(KeysError::MalformedIntroduction(_))
        ));
        assert!(matches!(
            parse_vcard("BEGIN:VCARD\r\nVERSION:3.0\r\nEND:VCARD\r\n"),
            Err(KeysError::MalformedIntroduction(_))
        ));
        assert!(matches!(
            parse_vcard("BEGIN:VCARD\r\nVERSION:4.0\r\nEMAIL:x@y\r\nEND:VCARD\r\n"),
            Err(KeysError::MalformedAddress(_))
        ));
    }
}
