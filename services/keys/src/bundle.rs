//! Identity bundles: an identity's OpenPGP secret key and its onion secret key in one OpenPGP
//! message encrypted with a passphrase (RFC 4880 §5.3, symmetric-key encrypted session key), for
//! moving the identity to another device or carrier.
//!
//! Inside the encryption the payload is text: a version line, the onion key (base64), an empty
//! line, then the ASCII-armoured transferable secret key. The whole message is armoured.

use std::io::Write;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sequoia_openpgp::Cert;
use sequoia_openpgp::crypto::{Password, SessionKey};
use sequoia_openpgp::packet::{PKESK, SKESK};
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageStructure, VerificationHelper,
};
use sequoia_openpgp::serialize::stream::{Armorer, Encryptor, LiteralWriter, Message};
use sequoia_openpgp::types::SymmetricAlgorithm;
use zeroize::Zeroizing;

use crate::certs::POLICY;
use crate::{IdentityKey, KeysError};

const VERSION_LINE: &str = "onionpost-identity-bundle: 1";
const ONION_KEY_FIELD: &str = "onion-key: ";
/// Shorter passphrases make the bundle guessable offline.
pub const MIN_PASSPHRASE_CHARS: usize = 8;

/// What a bundle holds.
pub struct Unpacked {
    pub key: IdentityKey,
    /// The 64-byte expanded ED25519-V3 onion secret key.
    pub onion_key: Zeroizing<Vec<u8>>,
}

/// Packs `key` and `onion_key` into a bundle encrypted with `passphrase`.
pub fn pack(key: &IdentityKey, onion_key: &[u8], passphrase: &str) -> Result<Vec<u8>, KeysError> {
    if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(KeysError::Crypto(format!(
            "the passphrase must have at least {MIN_PASSPHRASE_CHARS} characters"
        )));
    }
    let secret = Zeroizing::new(key.export_secret(None)?);
    let payload = Zeroizing::new(format!(
        "{VERSION_LINE}\n{ONION_KEY_FIELD}{}\n\n{}",
        BASE64.encode(onion_key),
        secret.as_str()
    ));
    let mut out = Vec::new();
    let message = Armorer::new(Message::new(&mut out))
        .build()
        .map_err(KeysError::crypto)?;
    let message = Encryptor::with_passwords(message, Some(Password::from(passphrase)))
        .build()
        .map_err(KeysError::crypto)?;
    let mut literal = LiteralWriter::new(message)
        .build()
        .map_err(KeysError::crypto)?;
    literal
        .write_all(payload.as_bytes())
        .map_err(KeysError::crypto)?;
    literal.finalize().map_err(KeysError::crypto)?;
    Ok(out)
}

/// Opens a bundle. A wrong passphrase and a damaged bundle both give
/// [`KeysError::CorruptMessage`] with words saying which is likely.
pub fn unpack(bundle: &[u8], passphrase: &str) -> Result<Unpacked, KeysError> {
    let helper = PassphraseHelper {
        password: Password::from(passphrase),
    };
    let mut plaintext = Zeroizing::new(Vec::new());
    let mut decryptor = DecryptorBuilder::from_bytes(bundle)
        .map_err(|error| KeysError::CorruptMessage(format!("not an identity bundle: {error}")))?
        .buffer_size(crate::bounded::PARSER_BUFFER_BYTES)
        .with_policy(&POLICY, None, helper)
        .map_err(|error| {
            KeysError::CorruptMessage(format!("wrong passphrase or damaged bundle: {error}"))
        })?;
    crate::bounded::read_bounded(
        &mut decryptor,
        &mut plaintext,
        crate::bounded::MAX_STATEMENT_BYTES,
        "the identity bundle",
    )?;
    let text = std::str::from_utf8(&plaintext)
        .map_err(|_| KeysError::CorruptMessage("bundle payload is not text".into()))?;
    let malformed = |why: &str| KeysError::CorruptMessage(format!("bundle payload: {why}"));
    let (head, armored_key) = text
        .split_once("\n\n")
        .ok_or_else(|| malformed("no key part"))?;
    let mut lines = head.lines();
    if lines.next() != Some(VERSION_LINE) {
        return Err(malformed("unknown version"));
    }
    let onion_key = lines
        .find_map(|line| line.strip_prefix(ONION_KEY_FIELD))
        .ok_or_else(|| malformed("no onion key"))?;
    let onion_key = Zeroizing::new(
        BASE64
            .decode(onion_key.trim())
            .map_err(|_| malformed("onion key is not base64"))?,
    );
    let key = IdentityKey::import_secret(armored_key.as_bytes(), None)?;
    Ok(Unpacked { key, onion_key })
}

struct PassphraseHelper {
    password: Password,
}

impl VerificationHelper for PassphraseHelper {
    fn get_certs(
        &mut self,
        _ids: &[sequoia_openpgp::KeyHandle],
    ) -> sequoia_openpgp::Result<Vec<Cert>> {
        Ok(Vec::new())
    }

    fn check(&mut self, _structure: MessageStructure) -> sequoia_openpgp::Result<()> {
        // Bundles are not signed: the passphrase is what authenticates them (SEIPD's MDC).
        Ok(())
    }
}

impl DecryptionHelper for PassphraseHelper {
    fn decrypt(
        &mut self,
        _pkesks: &[PKESK],
        skesks: &[SKESK],
        _sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> sequoia_openpgp::Result<Option<Cert>> {
        for skesk in skesks {
            if let Ok((algo, session_key)) = skesk.decrypt(&self.password)
                && decrypt(algo, &session_key)
            {
                return Ok(None);
            }
        }
        Err(KeysError::CorruptMessage("wrong passphrase".into()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity_key::tests::alice;

    #[test]
    fn round_trips_and_refuses_a_wrong_passphrase() {
        let onion_key = [7u8; 64];
        let bundle = pack(alice(), &onion_key, "correct horse").unwrap();
        assert!(bundle.starts_with(b"-----BEGIN PGP MESSAGE-----"));
        let unpacked = unpack(&bundle, "correct horse").unwrap();
        assert_eq!(unpacked.key.fingerprint(), alice().fingerprint());
        assert_eq!(unpacked.onion_key.as_slice(), &onion_key);
        assert!(matches!(
            unpack(&bundle, "wrong horse"),
            Err(KeysError::CorruptMessage(_))
        ));
        assert!(pack(alice(), &onion_key, "short").is_err());
    }
}
