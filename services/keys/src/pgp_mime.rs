//! Whole messages as PGP/MIME (RFC 3156), signed then encrypted, with protected headers.
//!
//! # What goes on the wire
//!
//! [`seal`] turns an RFC 5322 message into (RFC 3156 §4, §6.2: one OpenPGP message that is
//! both signed and encrypted):
//!
//! ```text
//! From, To, Cc, Date, Message-ID, Autocrypt   (copied as they were)
//! Subject: ...                                (only if the message had a Subject)
//! MIME-Version: 1.0
//! Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary=...
//!
//! --boundary
//! Content-Type: application/pgp-encrypted            "Version: 1"
//! --boundary
//! Content-Type: application/octet-stream             the armored OpenPGP message
//! --boundary--
//! ```
//!
//! The OpenPGP message holds the *cryptographic payload*: the original body with its `Content-*`
//! fields, `protected-headers="v1"` on its Content-Type, and a copy of every other header field
//! ("Protected Headers for Cryptographic E-mail", draft-autocrypt-lamps-protected-headers-02,
//! §2). Outside, only what transport and de-duplication need stays readable; Subject becomes
//! `...`, and threading fields (In-Reply-To, References), Reply-To and the like travel inside
//! only. `Bcc` is dropped altogether: Bcc recipients get their own sealed copy from the caller,
//! or every recipient would learn their key IDs. `Autocrypt` stays outside only (Autocrypt
//! Level 1 §2.1). No "legacy display" part is added: our peers read protected headers.
//!
//! The payload is signed (with Intended Recipient Fingerprint subpackets, so a signed message
//! cannot be re-encrypted to someone else unnoticed) and then encrypted to every recipient and to
//! the sender (for the Sent folder). Not compressed: compression before encryption leaks
//! length information and buys little for mail.
//!
//! [`open`] undoes this: it decrypts, verifies the signature against the certificates it is
//! given, and restores the protected header fields over the outer ones. It reads messages made
//! by other PGP/MIME software too (GnuPG, Thunderbird) as long as they use the combined
//! signed-and-encrypted form of RFC 3156 §6.2. The nested form of §6.1 (a `multipart/signed`
//! inside the encryption) is decrypted but not yet verified: it is reported as
//! [`Verification::Unsigned`].

use std::io::Write;

use sequoia_openpgp::crypto::{KeyPair, SessionKey};
use sequoia_openpgp::packet::{PKESK, SKESK};
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageLayer, MessageStructure, VerificationError,
    VerificationHelper,
};
use sequoia_openpgp::serialize::stream::{Armorer, Encryptor, LiteralWriter, Message, Signer};
use sequoia_openpgp::types::SymmetricAlgorithm;
use sequoia_openpgp::{Cert, Fingerprint, KeyHandle};

use crate::certs::{POLICY, check_can_encrypt_to};
use crate::mime::{ContentType, Entity, HeaderField, split_multipart, write_fields};
use crate::{Address, IdentityKey, KeysError, cert_holds_address};

/// The Subject that stands outside in place of the real one.
pub const OBSCURED_SUBJECT: &str = "...";

/// Header fields that stay readable outside the encryption, as they were.
const OUTER_FIELDS: &[&str] = &["From", "To", "Cc", "Date", "Message-ID", "Autocrypt"];
/// Header fields never copied into the encrypted part.
const NOT_PROTECTED: &[&str] = &["Bcc", "MIME-Version", "Autocrypt"];
/// The default Content-Type of a message without one (RFC 2045 §5.2).
const DEFAULT_CONTENT_TYPE: &str = "text/plain; charset=us-ascii";
const PGP_ENCRYPTED: &str = "application/pgp-encrypted";

/// Signs `message` with the sender's key, encrypts it to `recipients` and to the sender, and
/// wraps it as PGP/MIME with protected headers. `message` is a whole RFC 5322 message.
pub fn seal(
    message: &[u8],
    sender: &IdentityKey,
    recipients: &[Cert],
) -> Result<Vec<u8>, KeysError> {
    let original = Entity::parse(message).map_err(KeysError::MalformedMessage)?;
    if original.fields.is_empty() {
        return Err(KeysError::MalformedMessage("no header fields".into()));
    }
    let (outer_fields, payload) = protect_headers(&original);

    let mut to_certs: Vec<Cert> = vec![sender.public_cert()];
    for cert in recipients {
        if to_certs
            .iter()
            .all(|known| known.fingerprint() != cert.fingerprint())
        {
            to_certs.push(cert.clone());
        }
    }
    let armored = sign_and_encrypt(&payload, Some(sender.signing_keypair()?), &to_certs)?;
    Ok(wrap_pgp_mime(outer_fields, &armored))
}

/// Like [`seal`], but signed by nobody: for messages no identity of this carrier wrote, such as
/// a carrier's delivery-status notification to a sender it carried mail for. The recipient's
/// carrier records such mail as unsigned.
pub fn seal_unsigned(message: &[u8], recipients: &[Cert]) -> Result<Vec<u8>, KeysError> {
    let original = Entity::parse(message).map_err(KeysError::MalformedMessage)?;
    if original.fields.is_empty() {
        return Err(KeysError::MalformedMessage("no header fields".into()));
    }
    if recipients.is_empty() {
        return Err(KeysError::MalformedMessage("no recipients".into()));
    }
    let (outer_fields, payload) = protect_headers(&original);
    let armored = sign_and_encrypt(&payload, None, recipients)?;
    Ok(wrap_pgp_mime(outer_fields, &armored))
}

/// Splits a message into the fields that stay outside and the protected payload.
fn protect_headers(original: &Entity) -> (Vec<HeaderField>, Vec<u8>) {
    let is_any = |field: &HeaderField, names: &[&str]| names.iter().any(|name| field.is(name));

    let content_type_value = original
        .field("Content-Type")
        .map(HeaderField::value)
        .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned());
    let parsed = ContentType::parse(&content_type_value);
    let base_value = if parsed.param("protected-headers").is_some() {
        parsed.render_without("protected-headers")
    } else {
        content_type_value
    };
    let mut payload_fields = vec![HeaderField::new(
        "Content-Type",
        &format!("{base_value}; protected-headers=\"v1\""),
    )];
    payload_fields.extend(
        original
            .fields
            .iter()
            .filter(|field| field.is_content_field() && !field.is("Content-Type"))
            .cloned(),
    );
    payload_fields.extend(
        original
            .fields
            .iter()
            .filter(|field| !field.is_content_field() && !is_any(field, NOT_PROTECTED))
            .cloned(),
    );
    let payload = Entity {
        fields: payload_fields,
        body: original.body.clone(),
    }
    .to_bytes();

    let mut outer_fields: Vec<HeaderField> = original
        .fields
        .iter()
        .filter(|field| is_any(field, OUTER_FIELDS))
        .cloned()
        .collect();
    if original.field("Subject").is_some() {
        outer_fields.push(HeaderField::new("Subject", OBSCURED_SUBJECT));
    }
    (outer_fields, payload)
}

/// One OpenPGP message: signed by `signer` (when given), then encrypted to every valid encryption subkey of
/// every cert; ASCII-armored.
fn sign_and_encrypt(
    payload: &[u8],
    signer: Option<KeyPair>,
    to_certs: &[Cert],
) -> Result<String, KeysError> {
    for cert in to_certs {
        check_can_encrypt_to(cert)?;
    }
    let mut recipient_keys = Vec::new();
    for cert in to_certs {
        let valid = cert.with_policy(&POLICY, None).map_err(KeysError::crypto)?;
        recipient_keys.extend(
            valid
                .keys()
                .supported()
                .alive()
                .revoked(false)
                .for_transport_encryption(),
        );
    }
    let mut armored = Vec::with_capacity(payload.len() * 4 / 3 + 2048);
    let message = Armorer::new(Message::new(&mut armored))
        .build()
        .map_err(KeysError::crypto)?;
    let message = Encryptor::for_recipients(message, recipient_keys)
        .build()
        .map_err(KeysError::crypto)?;
    let message = match signer {
        Some(signer) => {
            let mut signer = Signer::new(message, signer).map_err(KeysError::crypto)?;
            for cert in to_certs {
                signer = signer.add_intended_recipient(cert);
            }
            signer.build().map_err(KeysError::crypto)?
        }
        None => message,
    };
    let mut literal = LiteralWriter::new(message)
        .build()
        .map_err(KeysError::crypto)?;
    literal.write_all(payload).map_err(KeysError::crypto)?;
    literal.finalize().map_err(KeysError::crypto)?;
    String::from_utf8(armored).map_err(KeysError::crypto)
}

/// The RFC 3156 §4 structure around an armored OpenPGP message.
fn wrap_pgp_mime(mut outer_fields: Vec<HeaderField>, armored: &str) -> Vec<u8> {
    let mut random = [0u8; 16];
    sequoia_openpgp::crypto::random(&mut random).expect("the system RNG works");
    // Starts with letters, so it can never be a prefix of an armor line ("-----BEGIN ...").
    let boundary = format!("op-{}", hex::encode(random));
    outer_fields.push(HeaderField::new("MIME-Version", "1.0"));
    outer_fields.push(HeaderField::new(
        "Content-Type",
        &format!(
            "multipart/encrypted;\r\n protocol=\"{PGP_ENCRYPTED}\";\r\n boundary=\"{boundary}\""
        ),
    ));
    let mut out = Vec::with_capacity(armored.len() + 1024);
    write_fields(&mut out, &outer_fields);
    out.extend_from_slice(
        format!(
            "\r\nThis is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n\
             --{boundary}\r\n\
             Content-Type: {PGP_ENCRYPTED}\r\n\
             Content-Description: PGP/MIME version identification\r\n\
             \r\n\
             Version: 1\r\n\
             \r\n\
             --{boundary}\r\n\
             Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\
             Content-Description: OpenPGP encrypted message\r\n\
             Content-Disposition: inline; filename=\"encrypted.asc\"\r\n\
             \r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(&crate::mime::to_crlf(armored.as_bytes()));
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// What a signature check found.
#[derive(Clone, Debug, PartialEq)]
pub enum Verification {
    /// A good signature by a key we know (its primary fingerprint), valid when it was made.
    Good {
        /// Primary fingerprint of the signing certificate.
        signer: Fingerprint,
        /// Whether that certificate holds the restored message's From address.
        signer_holds_from: bool,
    },
    /// A signature by a known key that does not verify (or a revoked or unbound signing key).
    Bad {
        /// The signing certificate, when the signature could be matched to one.
        signer: Option<Fingerprint>,
        /// Why it failed.
        reason: String,
    },
    /// Signed, but by keys we were not given.
    UnknownSigner {
        /// The issuer key IDs or fingerprints named by the signatures.
        issuers: Vec<KeyHandle>,
    },
    /// No signature at all.
    Unsigned,
}

/// A decrypted message.
#[derive(Clone, Debug)]
pub struct Opened {
    /// The restored RFC 5322 message: protected header fields back in place, the payload's
    /// body and `Content-*` fields, CRLF line endings.
    pub message: Vec<u8>,
    /// The signature check.
    pub verification: Verification,
    /// The primary fingerprint of our key that decrypted the message.
    pub decrypted_by: Fingerprint,
    /// Whether the payload carried protected headers (`protected-headers="v1"`).
    pub protected_headers: bool,
}

impl Opened {
    /// The signer, if and only if the signature is good and its key holds the From address;
    /// otherwise the reason as an error (bad signature, unknown signer, unsigned, mismatch).
    pub fn verified_sender(&self) -> Result<&Fingerprint, KeysError> {
        match &self.verification {
            Verification::Good {
                signer,
                signer_holds_from: true,
            } => Ok(signer),
            Verification::Good { signer, .. } => Err(KeysError::SenderMismatch {
                signer: signer.to_hex(),
            }),
            Verification::Bad { reason, .. } => Err(KeysError::BadSignature(reason.clone())),
            Verification::UnknownSigner { issuers } => Err(KeysError::UnknownSigner(
                issuers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
            Verification::Unsigned => Err(KeysError::Unsigned),
        }
    }
}

/// Decrypts a PGP/MIME message with any of `keys`, verifies its signature against
/// `signer_certs` (and our own keys), and restores protected headers.
///
/// Errors are about the message itself (not PGP/MIME, corrupted or truncated, not for us); the
/// signature's verdict is in [`Opened::verification`], so that mail from a not-yet-known
/// sender can be kept and checked once the key is fetched. [`Opened::verified_sender`] turns
/// the verdict into an error where a good signature is required.
pub fn open(
    message: &[u8],
    keys: &[&IdentityKey],
    signer_certs: &[Cert],
) -> Result<Opened, KeysError> {
    let outer = Entity::parse(message).map_err(KeysError::NotPgpMime)?;
    let armored = encrypted_part(&outer)?;

    let mut helper = OpenHelper::new(keys, signer_certs);
    let mut plaintext = Vec::new();
    // sequoia-openpgp 2.4.2 panics (an unwrap in its SEIP parser, parse.rs) on a message whose
    // encrypted packet is cut short right after a session key we can decrypt, as the fuzz
    // target pgp_mime_open found. Any onion can send such a message, so the panic is caught and
    // read as the corrupt message it is; nothing it touched outlives this call.
    let decrypted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut decryptor = DecryptorBuilder::from_bytes(&armored)
            .map_err(classify_decryption_error)?
            .buffer_size(crate::bounded::PARSER_BUFFER_BYTES)
            .with_policy(&POLICY, None, &mut helper)
            .map_err(classify_decryption_error)?;
        crate::bounded::read_bounded(
            &mut decryptor,
            &mut plaintext,
            crate::bounded::opened_limit(armored.len()),
            "the encrypted message",
        )
    }));
    match decrypted {
        Ok(result) => result?,
        Err(_) => {
            return Err(KeysError::CorruptMessage(
                "the encrypted message is truncated".into(),
            ));
        }
    }
    let decrypted_by = helper
        .decrypted_by
        .clone()
        .ok_or_else(|| KeysError::CorruptMessage("no session key was recovered".into()))?;
    let verification = helper
        .verification
        .take()
        .ok_or_else(|| KeysError::CorruptMessage("the message structure was not checked".into()))?;

    let payload = Entity::parse(&plaintext).map_err(|why| {
        KeysError::NotPgpMime(format!("the decrypted part is not a MIME entity: {why}"))
    })?;
    let (restored, protected_headers) = restore_headers(&outer, payload);
    let verification = match verification {
        Verification::Good { signer, .. } => {
            let signer_holds_from = from_address(&restored).is_some_and(|from| {
                helper
                    .cert(&signer)
                    .is_some_and(|cert| cert_holds_address(cert, &from))
            });
            Verification::Good {
                signer,
                signer_holds_from,
            }
        }
        other => other,
    };
    Ok(Opened {
        message: restored.to_bytes(),
        verification,
        decrypted_by,
        protected_headers,
    })
}

/// Finds the armored OpenPGP message of a `multipart/encrypted` entity (RFC 3156 §4).
fn encrypted_part(outer: &Entity) -> Result<Vec<u8>, KeysError> {
    let content_type = outer
        .field("Content-Type")
        .map(|field| ContentType::parse(&field.value()))
        .ok_or_else(|| KeysError::NotPgpMime("no Content-Type".into()))?;
    if content_type.mime_type != "multipart/encrypted" {
        return Err(KeysError::NotPgpMime(format!(
            "Content-Type is {}",
            content_type.mime_type
        )));
    }
    let protocol = content_type.param("protocol").unwrap_or_default();
    if !protocol.eq_ignore_ascii_case(PGP_ENCRYPTED) {
        return Err(KeysError::NotPgpMime(format!("protocol is {protocol:?}")));
    }
    let boundary = content_type
        .param("boundary")
        .ok_or_else(|| KeysError::NotPgpMime("multipart without boundary".into()))?;
    let parts = split_multipart(&outer.body, boundary).ok_or_else(|| {
        KeysError::CorruptMessage("multipart/encrypted ends before its closing boundary".into())
    })?;
    let [control, data] = parts.as_slice() else {
        return Err(KeysError::NotPgpMime(format!(
            "multipart/encrypted has {} parts, not 2",
            parts.len()
        )));
    };
    let control = Entity::parse(control).map_err(KeysError::NotPgpMime)?;
    let control_type = control
        .field("Content-Type")
        .map(|field| ContentType::parse(&field.value()).mime_type);
    if control_type.as_deref() != Some(PGP_ENCRYPTED) {
        return Err(KeysError::NotPgpMime(
            "first part is not application/pgp-encrypted".into(),
        ));
    }
    let data = Entity::parse(data).map_err(KeysError::NotPgpMime)?;
    let encoding = data
        .field("Content-Transfer-Encoding")
        .map(|field| field.value().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("7bit") | Some("8bit") | Some("binary") => Ok(data.body),
        Some("base64") => {
            use base64::Engine as _;
            let compact: Vec<u8> = data
                .body
                .iter()
                .copied()
                .filter(|byte| !byte.is_ascii_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|error| KeysError::CorruptMessage(format!("bad base64: {error}")))
        }
        Some(other) => Err(KeysError::NotPgpMime(format!(
            "unsupported transfer encoding {other}"
        ))),
    }
}

/// The restored message: outer fields, overridden by the payload's protected ones.
fn restore_headers(outer: &Entity, payload: Entity) -> (Entity, bool) {
    let protected = payload
        .field("Content-Type")
        .map(|field| ContentType::parse(&field.value()))
        .is_some_and(|ct| ct.param("protected-headers").is_some());
    let inner_names: Vec<&str> = payload
        .fields
        .iter()
        .filter(|field| !field.is_content_field())
        .map(|field| field.name.as_str())
        .collect();
    let mut fields: Vec<HeaderField> = outer
        .fields
        .iter()
        .filter(|field| !field.is_content_field())
        .filter(|field| !(protected && inner_names.iter().any(|name| field.is(name))))
        .cloned()
        .collect();
    fields.extend(
        payload
            .fields
            .iter()
            .filter(|field| !field.is_content_field())
            .cloned(),
    );
    for field in payload
        .fields
        .iter()
        .filter(|field| field.is_content_field())
    {
        if protected && field.is("Content-Type") {
            let rendered = ContentType::parse(&field.value()).render_without("protected-headers");
            fields.push(HeaderField::new(&field.name, &rendered));
        } else {
            fields.push(field.clone());
        }
    }
    (
        Entity {
            fields,
            body: payload.body,
        },
        protected,
    )
}

/// The onion address in the From field, if it holds one.
fn from_address(message: &Entity) -> Option<Address> {
    let value = message.field("From")?.value();
    let address = match (value.rfind('<'), value.rfind('>')) {
        (Some(start), Some(end)) if start < end => &value[start + 1..end],
        _ => value.as_str(),
    };
    Address::parse(address.trim()).ok()
}

fn classify_decryption_error(error: anyhow::Error) -> KeysError {
    match error.downcast::<KeysError>() {
        Ok(ours) => ours,
        Err(other) => KeysError::CorruptMessage(other.to_string()),
    }
}

/// Feeds sequoia's streaming decryptor our secret keys and the known certificates, and keeps
/// what it learns.
struct OpenHelper {
    /// (primary fingerprint, public cert, decryption key pair) for each of our keys.
    decryptors: Vec<(Fingerprint, Cert, KeyPair)>,
    /// Certificates a signature may be verified against: the given ones and our own.
    certs: Vec<Cert>,
    decrypted_by: Option<Fingerprint>,
    verification: Option<Verification>,
}

impl OpenHelper {
    fn new(keys: &[&IdentityKey], signer_certs: &[Cert]) -> Self {
        let mut decryptors = Vec::new();
        let mut certs: Vec<Cert> = signer_certs.to_vec();
        for key in keys {
            let public = key.public_cert();
            for pair in key.decryption_keypairs() {
                decryptors.push((key.fingerprint(), public.clone(), pair));
            }
            certs.push(public);
        }
        OpenHelper {
            decryptors,
            certs,
            decrypted_by: None,
            verification: None,
        }
    }

    fn cert(&self, fingerprint: &Fingerprint) -> Option<&Cert> {
        self.certs
            .iter()
            .find(|cert| &cert.fingerprint() == fingerprint)
    }
}

impl DecryptionHelper for &mut OpenHelper {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> sequoia_openpgp::Result<Option<Cert>> {
        let mut addressed_to_us = false;
        let mut opened_by: Option<(Fingerprint, Cert)> = None;
        'pkesks: for pkesk in pkesks {
            let recipient = pkesk.recipient();
            for (fingerprint, public, pair) in self.decryptors.iter_mut() {
                let ours = match &recipient {
                    Some(handle) => handle.aliases(pair.public().key_handle()),
                    // A wildcard ("anonymous") recipient: try every key.
                    None => true,
                };
                if !ours {
                    continue;
                }
                addressed_to_us |= recipient.is_some();
                let opened = pkesk
                    .decrypt(pair, sym_algo)
                    .is_some_and(|(algo, session_key)| decrypt(algo, &session_key));
                if opened {
                    opened_by = Some((fingerprint.clone(), public.clone()));
                    break 'pkesks;
                }
            }
        }
        if let Some((fingerprint, public)) = opened_by {
            self.decrypted_by = Some(fingerprint);
            return Ok(Some(public));
        }
        if addressed_to_us {
            Err(KeysError::CorruptMessage(
                "the session key addressed to our key does not decrypt".into(),
            )
            .into())
        } else {
            Err(KeysError::NotForUs.into())
        }
    }
}

impl VerificationHelper for &mut OpenHelper {
    fn get_certs(&mut self, ids: &[KeyHandle]) -> sequoia_openpgp::Result<Vec<Cert>> {
        Ok(crate::certs::holding_any(&self.certs, ids))
    }

    fn check(&mut self, structure: MessageStructure) -> sequoia_openpgp::Result<()> {
        let mut bad: Option<Verification> = None;
        let mut unknown: Vec<KeyHandle> = Vec::new();
        for layer in structure.into_iter() {
            let MessageLayer::SignatureGroup { results } = layer else {
                continue;
            };
            for result in results {
                match result {
                    Ok(good) => {
                        self.verification = Some(Verification::Good {
                            signer: good.ka.cert().fingerprint(),
                            signer_holds_from: false,
                        });
                        return Ok(());
                    }
                    Err(VerificationError::MissingKey { sig }) => {
                        unknown.extend(sig.get_issuers());
                    }
                    Err(error) => {
                        let signer = match &error {
                            VerificationError::BadSignature { ka, .. }
                            | VerificationError::BadKey { ka, .. } => Some(ka.cert().fingerprint()),
                            VerificationError::UnboundKey { cert, .. } => Some(cert.fingerprint()),
                            _ => None,
                        };
                        bad.get_or_insert(Verification::Bad {
                            signer,
                            reason: error.to_string(),
                        });
                    }
                }
            }
        }
        self.verification = Some(if let Some(bad) = bad {
            bad
        } else if !unknown.is_empty() {
            Verification::UnknownSigner { issuers: unknown }
        } else {
            Verification::Unsigned
        });
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use sequoia_openpgp::packet::prelude::*;
    use sequoia_openpgp::serialize::Serialize;
    use sequoia_openpgp::types::{DataFormat, SignatureType};

    use std::io::Read;

    use super::*;
    use crate::identity_key::tests::{alice, bob, carol};

    /// Found by the fuzz target pgp_mime_open: a message whose encrypted packet ends right
    /// after a session key for Alice made sequoia panic inside `open`.
    #[test]
    fn a_message_cut_short_after_its_session_key_is_corrupt_not_a_panic() {
        let key = IdentityKey::import_secret(include_bytes!("../tests/data/fuzz-alice.key"), None)
            .unwrap();
        let message = include_bytes!("../tests/data/truncated-seip.eml");
        let opened = open(message, &[&key], &[]);
        assert!(
            matches!(opened, Err(KeysError::CorruptMessage(_))),
            "{opened:?}"
        );
    }

    pub(crate) fn sample_message(from: &IdentityKey, to: &IdentityKey) -> Vec<u8> {
        format!(
            "From: Alice <{}>\r\n\
             To: {}\r\n\
             Subject: The launch codes\r\n\
             Date: Mon, 23 Nov 2026 09:00:00 +0000\r\n\
             Message-ID: <1234@{}>\r\n\
             In-Reply-To: <1000@{}>\r\n\
             Bcc: hidden@example.org\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: 8bit\r\n\
             \r\n\
             Meet at the old mill at noon.\r\n\
             Grüße\r\n",
            from.address(),
            to.address(),
            from.address().onion_host(),
            to.address().onion_host(),
        )
        .into_bytes()
    }

    fn field(message: &[u8], name: &str) -> Option<String> {
        Entity::parse(message)
            .unwrap()
            .field(name)
            .map(HeaderField::value)
    }

    #[test]
    fn round_trip_restores_protected_headers() {
        let plain = sample_message(alice(), bob());
        let sealed = seal(&plain, alice(), &[bob().public_cert()]).unwrap();

        // Nothing private on the wire.
        let wire = String::from_utf8(sealed.clone()).unwrap();
        assert!(!wire.contains("launch codes"));
        assert!(!wire.contains("old mill"));
        assert!(!wire.contains("In-Reply-To"));
        assert!(!wire.contains("hidden@example.org"));
        assert_eq!(field(&sealed, "Subject").as_deref(), Some("..."));
        assert_eq!(field(&sealed, "From"), field(&plain, "From"));
        assert_eq!(field(&sealed, "Message-ID"), field(&plain, "Message-ID"));
        assert!(
            field(&sealed, "Content-Type")
                .unwrap()
                .starts_with("multipart/encrypted;")
        );

        let opened = open(&sealed, &[bob()], &[alice().public_cert()]).unwrap();
        assert!(opened.protected_headers);
        assert_eq!(opened.decrypted_by, bob().fingerprint());
        assert_eq!(opened.verified_sender().unwrap(), &alice().fingerprint());
        let restored = &opened.message;
        assert_eq!(
            field(restored, "Subject").as_deref(),
            Some("The launch codes")
        );
        assert_eq!(field(restored, "In-Reply-To"), field(&plain, "In-Reply-To"));
        assert_eq!(
            field(restored, "Content-Type").as_deref(),
            Some("text/plain; charset=\"utf-8\"")
        );
        assert_eq!(field(restored, "Bcc"), None);
        let text = String::from_utf8(restored.clone()).unwrap();
        assert_eq!(text.matches("Subject:").count(), 1);
        assert!(text.ends_with("\r\n\r\nMeet at the old mill at noon.\r\nGrüße\r\n"));
    }

    #[test]
    fn sender_can_read_own_copy_and_several_recipients_each_theirs() {
        let plain = sample_message(alice(), bob());
        let sealed = seal(
            &plain,
            alice(),
            &[bob().public_cert(), carol().public_cert()],
        )
        .unwrap();
        for reader in [alice(), bob(), carol()] {
            let opened = open(&sealed, &[reader], &[alice().public_cert()]).unwrap();
            assert_eq!(opened.decrypted_by, reader.fingerprint());
            assert!(opened.verified_sender().is_ok());
        }
    }

    #[test]
    fn message_for_someone_else_is_not_for_us() {
        let sealed = seal(
            &sample_message(alice(), bob()),
            alice(),
            &[bob().public_cert()],
        )
        .unwrap();
        let error = open(&sealed, &[carol()], &[alice().public_cert()]).unwrap_err();
        assert!(matches!(error, KeysError::NotForUs), "{error}");
    }

    #[test]
    fn unknown_signer_is_reported_not_fatal() {
        let sealed = seal(
            &sample_message(alice(), bob()),
            alice(),
            &[bob().public_cert()],
        )
        .unwrap();
        let opened = open(&sealed, &[bob()], &[]).unwrap();
        assert!(matches!(
            opened.verification,
            Verification::UnknownSigner { ref issuers } if !issuers.is_empty()
        ));
        assert!(matches!(
            opened.verified_sender(),
            Err(KeysError::UnknownSigner(_))
        ));
    }

    #[test]
    fn signer_must_hold_the_from_address() {
        // Carol signs a message whose From says Alice.
        let sealed = seal(
            &sample_message(alice(), bob()),
            carol(),
            &[bob().public_cert()],
        )
        .unwrap();
        let opened = open(&sealed, &[bob()], &[carol().public_cert()]).unwrap();
        assert!(matches!(
            opened.verification,
            Verification::Good {
                signer_holds_from: false,
                ..
            }
        ));
        assert!(matches!(
            opened.verified_sender(),
            Err(KeysError::SenderMismatch { .. })
        ));
    }

    #[test]
    fn truncated_message_is_corrupt() {
        let sealed = seal(
            &sample_message(alice(), bob()),
            alice(),
            &[bob().public_cert()],
        )
        .unwrap();
        // Cut in the middle of the armored data: the MIME structure is incomplete.
        let cut = &sealed[..sealed.len() * 2 / 3];
        let error = open(cut, &[bob()], &[alice().public_cert()]).unwrap_err();
        assert!(matches!(error, KeysError::CorruptMessage(_)), "{error}");

        // The MIME structure intact, the OpenPGP data cut short inside it.
        let text = String::from_utf8(sealed).unwrap();
        let begin = text.find("-----BEGIN PGP MESSAGE-----").unwrap();
        let end = text.find("-----END PGP MESSAGE-----").unwrap();
        let armored_lines: Vec<&str> = text[begin..end].lines().collect();
        let keep = armored_lines.len() / 2;
        let shortened = format!(
            "{}{}\r\n{}",
            &text[..begin],
            armored_lines[..keep].join("\r\n"),
            &text[end..]
        );
        let error = open(shortened.as_bytes(), &[bob()], &[alice().public_cert()]).unwrap_err();
        assert!(matches!(error, KeysError::CorruptMessage(_)), "{error}");
    }

    #[test]
    fn corrupted_ciphertext_is_detected() {
        let payload = b"Content-Type: text/plain\r\n\r\nhello\r\n";
        let armored = sign_and_encrypt(
            payload,
            Some(alice().signing_keypair().unwrap()),
            &[bob().public_cert()],
        )
        .unwrap();
        let mut binary = Vec::new();
        let mut reader = sequoia_openpgp::armor::Reader::from_bytes(
            armored.as_bytes(),
            sequoia_openpgp::armor::ReaderMode::Tolerant(None),
        );
        reader.read_to_end(&mut binary).unwrap();
        let near_end = binary.len() - 30;
        binary[near_end] ^= 0x40;
        let mut rearmored = Vec::new();
        let mut writer = sequoia_openpgp::armor::Writer::new(
            &mut rearmored,
            sequoia_openpgp::armor::Kind::Message,
        )
        .unwrap();
        writer.write_all(&binary).unwrap();
        writer.finalize().unwrap();
        let message = wrap_pgp_mime(
            vec![HeaderField::new("From", &alice().address().to_string())],
            std::str::from_utf8(&rearmored).unwrap(),
        );
        let error = open(&message, &[bob()], &[alice().public_cert()]).unwrap_err();
        assert!(matches!(error, KeysError::CorruptMessage(_)), "{error}");
    }

    /// An OpenPGP message whose signature was made over other content than its literal data.
    fn forged_signature_message(signed: &[u8], sent: &[u8], to: &Cert) -> String {
        let mut keypair = alice().signing_keypair().unwrap();
        let signature = SignatureBuilder::new(SignatureType::Binary)
            .sign_message(&mut keypair, signed)
            .unwrap();
        let mut ops = OnePassSig3::try_from(&signature).unwrap();
        ops.set_last(true);
        let mut literal = Literal::new(DataFormat::Binary);
        literal.set_body(sent.to_vec());

        let mut armored = Vec::new();
        let message = Armorer::new(Message::new(&mut armored)).build().unwrap();
        let valid = to.with_policy(&POLICY, None).unwrap();
        let keys: Vec<_> = valid.keys().for_transport_encryption().collect();
        let mut message = Encryptor::for_recipients(message, keys).build().unwrap();
        Packet::from(OnePassSig::from(ops))
            .serialize(&mut message)
            .unwrap();
        Packet::from(literal).serialize(&mut message).unwrap();
        Packet::from(signature).serialize(&mut message).unwrap();
        message.finalize().unwrap();
        String::from_utf8(armored).unwrap()
    }

    #[test]
    fn bad_signature_is_reported() {
        let real = b"Content-Type: text/plain\r\n\r\npay 10 coins\r\n";
        let tampered = b"Content-Type: text/plain\r\n\r\npay 99 coins\r\n";
        let armored = forged_signature_message(real, tampered, &bob().public_cert());
        let message = wrap_pgp_mime(
            vec![HeaderField::new("From", &alice().address().to_string())],
            &armored,
        );
        let opened = open(&message, &[bob()], &[alice().public_cert()]).unwrap();
        assert!(
            matches!(
                opened.verification,
                Verification::Bad { signer: Some(ref signer), .. } if signer == &alice().fingerprint()
            ),
            "{:?}",
            opened.verification
        );
        assert!(matches!(
            opened.verified_sender(),
            Err(KeysError::BadSignature(_))
        ));

        // The same construction with matching content verifies: the test forges only the content.
        let armored = forged_signature_message(real, real, &bob().public_cert());
        let message = wrap_pgp_mime(
            vec![HeaderField::new("From", &alice().address().to_string())],
            &armored,
        );
        let opened = open(&message, &[bob()], &[alice().public_cert()]).unwrap();
        assert!(
            opened.verified_sender().is_ok(),
            "{:?}",
            opened.verification
        );
    }

    /// An unsigned PGP/MIME message to `to` (compressed when asked) whose literal data `write`
    /// writes, with the length of its armored OpenPGP part.
    fn unsigned_pgp_mime(
        to: &Cert,
        compressed: bool,
        write: impl FnOnce(&mut dyn Write),
    ) -> (Vec<u8>, usize) {
        use sequoia_openpgp::serialize::stream::Compressor;
        use sequoia_openpgp::types::CompressionAlgorithm;

        let mut armored = Vec::new();
        let message = Armorer::new(Message::new(&mut armored)).build().unwrap();
        let valid = to.with_policy(&POLICY, None).unwrap();
        let keys: Vec<_> = valid.keys().for_transport_encryption().collect();
        let mut message = Encryptor::for_recipients(message, keys).build().unwrap();
        if compressed {
            message = Compressor::new(message)
                .algo(CompressionAlgorithm::Zip)
                .build()
                .unwrap();
        }
        let mut literal = LiteralWriter::new(message).build().unwrap();
        write(&mut literal);
        literal.finalize().unwrap();
        let armored_len = armored.len();
        let message = wrap_pgp_mime(vec![], std::str::from_utf8(&armored).unwrap());
        (message, armored_len)
    }

    /// A compressed packet of 100 MiB of zeros is about 100 KiB on the wire: opening it stops
    /// at the ceiling with a clear error instead of filling memory.
    #[test]
    fn a_compression_bomb_is_refused_at_the_ceiling() {
        let (message, armored_len) = unsigned_pgp_mime(&bob().public_cert(), true, |literal| {
            literal
                .write_all(b"Content-Type: text/plain\r\n\r\n")
                .unwrap();
            let zeros = vec![0u8; 1024 * 1024];
            for _ in 0..100 {
                literal.write_all(&zeros).unwrap();
            }
        });
        assert!(armored_len < 1024 * 1024, "{armored_len} bytes");
        let refused = open(&message, &[bob()], &[]).unwrap_err();
        assert!(
            matches!(&refused, KeysError::TooLarge { .. }),
            "{refused:?}"
        );
    }

    #[test]
    fn unsigned_message_is_reported() {
        let (message, _) = unsigned_pgp_mime(&bob().public_cert(), false, |literal| {
            literal
                .write_all(b"Content-Type: text/plain\r\n\r\nhi\r\n")
                .unwrap();
        });
        let opened = open(&message, &[bob()], &[]).unwrap();
        assert_eq!(opened.verification, Verification::Unsigned);
        assert!(!opened.protected_headers);
        assert!(matches!(opened.verified_sender(), Err(KeysError::Unsigned)));
    }

    #[test]
    fn sealed_without_a_signer_opens_as_unsigned_with_protected_headers() {
        let plain = sample_message(alice(), bob());
        let sealed = seal_unsigned(&plain, &[bob().public_cert()]).unwrap();
        let wire = String::from_utf8(sealed.clone()).unwrap();
        assert!(!wire.contains("launch codes"));
        assert_eq!(field(&sealed, "Subject").as_deref(), Some("..."));
        let opened = open(&sealed, &[bob()], &[alice().public_cert()]).unwrap();
        assert_eq!(opened.verification, Verification::Unsigned);
        assert!(opened.protected_headers);
        // Only the recipient can read it: not even the carrier that made it keeps a copy.
        assert!(open(&sealed, &[alice()], &[]).is_err());
        assert!(seal_unsigned(&plain, &[]).is_err());
    }

    #[test]
    fn plain_mail_is_not_pgp_mime() {
        let plain = sample_message(alice(), bob());
        assert!(matches!(
            open(&plain, &[bob()], &[]),
            Err(KeysError::NotPgpMime(_))
        ));
        let signed_only = b"Content-Type: multipart/signed; protocol=\"application/pgp-signature\"; boundary=x\r\n\r\n--x\r\n\r\nhi\r\n--x--\r\n";
        assert!(matches!(
            open(signed_only, &[bob()], &[]),
            Err(KeysError::NotPgpMime(_))
        ));
    }

    #[test]
    fn sealing_refuses_unusable_input() {
        assert!(matches!(
            seal(b"", alice(), &[bob().public_cert()]),
            Err(KeysError::MalformedMessage(_))
        ));
        assert!(matches!(
            seal(b"not a header\r\n\r\nbody", alice(), &[bob().public_cert()]),
            Err(KeysError::MalformedMessage(_))
        ));
        let (revoked, _) = crate::revocation::tests::revoked_copy(carol());
        assert!(matches!(
            seal(&sample_message(alice(), carol()), alice(), &[revoked]),
            Err(KeysError::UnusableKey(_))
        ));
    }

    #[test]
    fn message_without_content_type_gets_the_default() {
        let plain = format!(
            "From: {}\r\nTo: {}\r\nSubject: hi\r\n\r\nplain body\r\n",
            alice().address(),
            bob().address()
        );
        let sealed = seal(plain.as_bytes(), alice(), &[bob().public_cert()]).unwrap();
        let opened = open(&sealed, &[bob()], &[alice().public_cert()]).unwrap();
        assert_eq!(
            field(&opened.message, "Content-Type").as_deref(),
            Some("text/plain; charset=\"us-ascii\"")
        );
        assert_eq!(field(&opened.message, "Subject").as_deref(), Some("hi"));
        assert_eq!(
            field(&opened.message, "MIME-Version").as_deref(),
            Some("1.0")
        );
    }
}
