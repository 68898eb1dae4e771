//! Certificate helpers shared by the modules: the one policy, parsing with typed errors, and
//! the address binding check.

use sequoia_openpgp::Cert;
use sequoia_openpgp::cert::prelude::*;
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::parse::stream::{MessageLayer, MessageStructure, VerificationError};
use sequoia_openpgp::policy::StandardPolicy;
use sequoia_openpgp::serialize::SerializeInto;
use sequoia_openpgp::types::RevocationStatus;
use sequoia_openpgp::{Fingerprint, KeyHandle};

use crate::{Address, KeysError};

/// The one OpenPGP policy of the service: sequoia's standard policy (rejects SHA-1 signatures,
/// weak keys and the like) at the current time.
pub(crate) static POLICY: StandardPolicy<'static> = StandardPolicy::new();

/// Parses exactly one certificate, armored or binary.
pub fn parse_cert(bytes: &[u8]) -> Result<Cert, KeysError> {
    Cert::from_bytes(bytes).map_err(|error| KeysError::MalformedKey(error.to_string()))
}

/// The certificate without secret key material, ASCII-armored.
pub fn public_armored(cert: &Cert) -> Result<String, KeysError> {
    let bytes = cert.armored().to_vec().map_err(KeysError::crypto)?;
    String::from_utf8(bytes).map_err(KeysError::crypto)
}

/// Whether the certificate holds a valid, unrevoked user ID whose e-mail address is `address`
/// (a bare `local@onion.onion`, or a `Name <local@onion.onion>` from other software).
pub fn cert_holds_address(cert: &Cert, address: &Address) -> bool {
    let Ok(valid) = cert.with_policy(&POLICY, None) else {
        return false;
    };
    valid.userids().any(|uid| {
        !matches!(uid.revocation_status(), RevocationStatus::Revoked(_))
            && userid_address(uid.userid()).is_some_and(|found| &found == address)
    })
}

/// The onion address a user ID names, if it names one.
pub(crate) fn userid_address(userid: &sequoia_openpgp::packet::UserID) -> Option<Address> {
    let email = userid.email().ok().flatten()?;
    Address::parse(email).ok()
}

/// Fails unless the certificate is valid now, not revoked, and can receive encrypted mail.
pub(crate) fn check_can_encrypt_to(cert: &Cert) -> Result<(), KeysError> {
    let fingerprint = cert.fingerprint();
    let valid = cert
        .with_policy(&POLICY, None)
        .map_err(|error| KeysError::UnusableKey(format!("{fingerprint}: {error}")))?;
    if let RevocationStatus::Revoked(_) = valid.revocation_status() {
        return Err(KeysError::UnusableKey(format!("{fingerprint} is revoked")));
    }
    valid
        .alive()
        .map_err(|error| KeysError::UnusableKey(format!("{fingerprint}: {error}")))?;
    let has_encryption_key = valid
        .keys()
        .supported()
        .alive()
        .revoked(false)
        .for_transport_encryption()
        .next()
        .is_some();
    if !has_encryption_key {
        return Err(KeysError::UnusableKey(format!(
            "{fingerprint} has no valid encryption key"
        )));
    }
    Ok(())
}

/// The certificates among `certs` with a key one of `ids` names (sequoia's
/// `VerificationHelper::get_certs`).
pub(crate) fn holding_any(certs: &[Cert], ids: &[KeyHandle]) -> Vec<Cert> {
    certs
        .iter()
        .filter(|cert| {
            cert.keys()
                .any(|ka| ids.iter().any(|id| id.aliases(ka.key().key_handle())))
        })
        .cloned()
        .collect()
}

/// Settles a signature check (sequoia's `VerificationHelper::check`) for signed statements:
/// the signer of the first good signature, else the most telling failure (a bad signature,
/// then signers whose keys we lack, then no signature at all).
pub(crate) fn good_signer(structure: MessageStructure) -> Result<Fingerprint, KeysError> {
    let mut unknown = Vec::new();
    let mut bad = None;
    for layer in structure.into_iter() {
        let MessageLayer::SignatureGroup { results } = layer else {
            continue;
        };
        for result in results {
            match result {
                Ok(good) => return Ok(good.ka.cert().fingerprint()),
                Err(VerificationError::MissingKey { sig }) => {
                    unknown.extend(sig.get_issuers().iter().map(ToString::to_string));
                }
                Err(error) => {
                    bad.get_or_insert(KeysError::BadSignature(error.to_string()));
                }
            }
        }
    }
    Err(match bad {
        Some(bad) => bad,
        None if !unknown.is_empty() => KeysError::UnknownSigner(unknown.join(", ")),
        None => KeysError::Unsigned,
    })
}
