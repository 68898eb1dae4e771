//! Short texts an identity signs about itself: carry statements ([`crate::carry`]) and its list
//! of preferred carriers ([`crate::carrier_list`]). Each is an OpenPGP signed message (RFC 4880
//! §11.3: one-pass signature, literal data, signature) made with the identity's key, so anyone
//! holding the key bound to the identity's onion can check it, whoever handed the text over.

use std::io::Write;

use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::parse::stream::{MessageStructure, VerificationHelper, VerifierBuilder};
use sequoia_openpgp::serialize::stream::{Armorer, LiteralWriter, Message, Signer};
use sequoia_openpgp::{Cert, Fingerprint, KeyHandle};

use crate::certs::{POLICY, good_signer};
use crate::{IdentityKey, KeysError};

/// How a signed text is written out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// ASCII armour, for texts people paste (carry statements).
    Armored,
    /// Binary packets, for texts that travel base64-encoded or over HTTP (carrier lists).
    Binary,
}

/// Signs `text` with `key` as a signed message.
pub fn sign(key: &IdentityKey, text: &str, encoding: Encoding) -> Result<Vec<u8>, KeysError> {
    let mut out = Vec::new();
    let message = Message::new(&mut out);
    let message = match encoding {
        Encoding::Armored => Armorer::new(message).build().map_err(KeysError::crypto)?,
        Encoding::Binary => message,
    };
    let message = Signer::new(message, key.signing_keypair()?)
        .map_err(KeysError::crypto)?
        .build()
        .map_err(KeysError::crypto)?;
    let mut literal = LiteralWriter::new(message)
        .build()
        .map_err(KeysError::crypto)?;
    literal
        .write_all(text.as_bytes())
        .map_err(KeysError::crypto)?;
    literal.finalize().map_err(KeysError::crypto)?;
    Ok(out)
}

/// The text of a signed message without checking its signature, to learn whose key to check
/// it with.
pub fn peek(signed: &[u8]) -> Result<String, KeysError> {
    let message = sequoia_openpgp::Message::from_bytes(signed)
        .map_err(|error| KeysError::CorruptMessage(error.to_string()))?;
    let body = message
        .body()
        .ok_or_else(|| KeysError::CorruptMessage("no literal data".into()))?;
    String::from_utf8(body.body().to_vec())
        .map_err(|_| KeysError::CorruptMessage("the signed text is not UTF-8".into()))
}

/// Verifies a signed message against `cert` and returns its text with the signer's
/// fingerprint. Whether the text speaks for the identity `cert` belongs to is the caller's
/// check.
pub fn verify(signed: &[u8], cert: &Cert) -> Result<(String, Fingerprint), KeysError> {
    let mut check = SignerCheck::new(std::slice::from_ref(cert));
    let mut text = Vec::new();
    let read = VerifierBuilder::from_bytes(signed)
        .and_then(|builder| {
            builder
                .buffer_size(crate::bounded::PARSER_BUFFER_BYTES)
                .with_policy(&POLICY, None, &mut check)
        })
        .and_then(|mut verifier| {
            crate::bounded::read_bounded(
                &mut verifier,
                &mut text,
                crate::bounded::MAX_STATEMENT_BYTES,
                "the signed statement",
            )
            .map_err(anyhow::Error::from)
        });
    let signer = check.signer(read, KeysError::CorruptMessage)?;
    let text = String::from_utf8(text)
        .map_err(|_| KeysError::CorruptMessage("the signed text is not UTF-8".into()))?;
    Ok((text, signer))
}

/// sequoia's verification helper for signatures by one of a few known keys (statements here,
/// the detached signatures of introductions): takes the first good signature, and otherwise
/// keeps the most telling failure ([`good_signer`]).
pub(crate) struct SignerCheck<'a> {
    certs: &'a [Cert],
    signer: Option<Fingerprint>,
    failure: Option<KeysError>,
}

impl<'a> SignerCheck<'a> {
    pub fn new(certs: &'a [Cert]) -> Self {
        SignerCheck {
            certs,
            signer: None,
            failure: None,
        }
    }

    /// The signer, once the verifier that used this check gave `result`; a failure that is not
    /// about the signature (the data cannot be read) becomes `unreadable`.
    pub fn signer<T>(
        mut self,
        result: sequoia_openpgp::Result<T>,
        unreadable: fn(String) -> KeysError,
    ) -> Result<Fingerprint, KeysError> {
        if let Err(error) = result {
            return Err(self
                .failure
                .take()
                .unwrap_or_else(|| unreadable(error.to_string())));
        }
        self.signer
            .take()
            .ok_or_else(|| KeysError::BadSignature("no good signature".into()))
    }
}

impl VerificationHelper for &mut SignerCheck<'_> {
    fn get_certs(&mut self, ids: &[KeyHandle]) -> sequoia_openpgp::Result<Vec<Cert>> {
        Ok(crate::certs::holding_any(self.certs, ids))
    }

    fn check(&mut self, structure: MessageStructure) -> sequoia_openpgp::Result<()> {
        match good_signer(structure) {
            Ok(signer) => {
                self.signer = Some(signer);
                Ok(())
            }
            Err(failure) => {
                let text = failure.to_string();
                self.failure = Some(failure);
                Err(anyhow::anyhow!(text))
            }
        }
    }
}
