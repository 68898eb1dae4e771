//! Signed revocations of an identity's key and address, which peers verify and apply.
//!
//! A revocation is a small transferable public key (RFC 4880 §11.1): the primary key, a key
//! revocation signature (type 0x20) and the address's user ID with a certification revocation
//! (type 0x30), all made by the identity's own primary key. It is standard OpenPGP, so GnuPG
//! imports it too, and a peer applies it by merging it into the pinned certificate: sequoia
//! checks every self-signature while merging, so a forged revocation changes nothing and is
//! reported as a bad signature.
//!
//! The reason matters to the pinning rule: `Compromised` is a hard revocation (nothing the key
//! ever signed is trusted, including key transitions); `Superseded` and `Retired` are soft
//! (signatures made before the revocation stand).

use sequoia_openpgp::cert::prelude::*;
use sequoia_openpgp::packet::Packet;
use sequoia_openpgp::serialize::SerializeInto;
use sequoia_openpgp::types::{ReasonForRevocation, RevocationStatus};
use sequoia_openpgp::{Cert, Fingerprint};

use crate::certs::{POLICY, userid_address};
use crate::{Address, IdentityKey, KeysError};

/// Why an identity is revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevocationReason {
    /// The secret key may be in someone else's hands (hard revocation).
    Compromised,
    /// The identity is given up (soft).
    Retired,
    /// The identity moved to a new key (soft); see `pinning` for the handover.
    Superseded,
}

impl RevocationReason {
    fn to_openpgp(self) -> ReasonForRevocation {
        match self {
            RevocationReason::Compromised => ReasonForRevocation::KeyCompromised,
            RevocationReason::Retired => ReasonForRevocation::KeyRetired,
            RevocationReason::Superseded => ReasonForRevocation::KeySuperseded,
        }
    }

    fn from_openpgp(reason: Option<ReasonForRevocation>) -> Self {
        match reason {
            Some(ReasonForRevocation::KeyRetired) => RevocationReason::Retired,
            Some(ReasonForRevocation::KeySuperseded) => RevocationReason::Superseded,
            // RFC 4880 §5.2.3.23: anything else, or no reason, is to be treated as compromise.
            _ => RevocationReason::Compromised,
        }
    }

    /// Whether signatures made before the revocation remain trustworthy.
    pub fn is_soft(self) -> bool {
        !matches!(self, RevocationReason::Compromised)
    }
}

/// A revocation made by an identity, ready to send to its contacts.
#[derive(Clone, Debug)]
pub struct Revocation {
    /// The revoked key.
    pub fingerprint: Fingerprint,
    /// The revoked address.
    pub address: Address,
    /// Why.
    pub reason: RevocationReason,
    /// The revocation, ASCII-armored (a public key block).
    pub armored: String,
}

/// Revokes an identity's key and its address's user ID.
pub fn revoke(
    key: &IdentityKey,
    reason: RevocationReason,
    message: &str,
) -> Result<Revocation, KeysError> {
    let tsk = key.tsk();
    let mut signer = tsk
        .primary_key()
        .key()
        .clone()
        .parts_into_secret()
        .map_err(KeysError::crypto)?
        .into_keypair()
        .map_err(KeysError::crypto)?;
    let key_revocation = CertRevocationBuilder::new()
        .set_reason_for_revocation(reason.to_openpgp(), message.as_bytes())
        .map_err(KeysError::crypto)?
        .build(&mut signer, tsk, None)
        .map_err(KeysError::crypto)?;
    let address = key.address().clone();
    let userid = tsk
        .userids()
        .map(|uid| uid.userid().clone())
        .find(|userid| userid_address(userid).as_ref() == Some(&address))
        .ok_or_else(|| KeysError::AddressNotBound(address.to_string()))?;
    let userid_revocation = UserIDRevocationBuilder::new()
        .set_reason_for_revocation(ReasonForRevocation::UIDRetired, message.as_bytes())
        .map_err(KeysError::crypto)?
        .build(&mut signer, tsk, &userid, None)
        .map_err(KeysError::crypto)?;
    let public_primary = tsk.primary_key().key().clone().role_into_primary();
    let packets: Vec<Packet> = vec![
        public_primary.into(),
        key_revocation.into(),
        userid.into(),
        userid_revocation.into(),
    ];
    let cert = Cert::from_packets(packets.into_iter()).map_err(KeysError::crypto)?;
    let armored = String::from_utf8(cert.armored().to_vec().map_err(KeysError::crypto)?)
        .map_err(KeysError::crypto)?;
    Ok(Revocation {
        fingerprint: key.fingerprint(),
        address,
        reason,
        armored,
    })
}

/// A revocation checked against the pinned key.
#[derive(Clone, Debug)]
pub struct AppliedRevocation {
    /// The pinned certificate with the revocation merged in: store it in place of the pin.
    pub cert: Cert,
    /// The address whose user ID was revoked, if one was.
    pub address: Option<Address>,
    /// The stated reason.
    pub reason: RevocationReason,
    /// The stated explanation.
    pub message: String,
}

/// Verifies a revocation against the pinned certificate of the contact it claims to revoke.
pub fn apply(revocation: &[u8], pinned: &Cert) -> Result<AppliedRevocation, KeysError> {
    let parsed = crate::parse_cert(revocation)
        .map_err(|error| KeysError::MalformedRevocation(error.to_string()))?;
    if parsed.fingerprint() != pinned.fingerprint() {
        return Err(KeysError::MalformedRevocation(format!(
            "it revokes {}, not the pinned key {}",
            parsed.fingerprint(),
            pinned.fingerprint()
        )));
    }
    let merged = pinned
        .clone()
        .merge_public(parsed)
        .map_err(KeysError::crypto)?;
    let RevocationStatus::Revoked(signatures) = merged.revocation_status(&POLICY, None) else {
        return Err(KeysError::BadSignature(
            "no revocation signed by the pinned key".into(),
        ));
    };
    let newest = signatures
        .iter()
        .max_by_key(|signature| signature.signature_creation_time())
        .expect("revoked means at least one revocation");
    let (reason, message) = match newest.reason_for_revocation() {
        Some((reason, message)) => (Some(reason), String::from_utf8_lossy(message).into_owned()),
        None => (None, String::new()),
    };
    let address = merged.userids().find_map(|uid| {
        let revoked = matches!(
            uid.revocation_status(&POLICY, None),
            RevocationStatus::Revoked(_)
        );
        revoked.then(|| userid_address(uid.userid())).flatten()
    });
    Ok(AppliedRevocation {
        cert: merged,
        address,
        reason: RevocationReason::from_openpgp(reason),
        message,
    })
}

/// The most revocations taken from one message.
const MAX_REVOCATIONS_PER_MESSAGE: usize = 4;
/// How deep a message's multiparts are searched for them.
const MAX_DEPTH: usize = 4;

/// The plaintext message that announces `revocation` to one peer: a line of text and the
/// revocation as an `application/pgp-keys` part, which GnuPG-based clients import as it is.
/// The caller signs it with the key being revoked (before its secret is dropped) and encrypts
/// it to the peer, so the peer's carrier takes it from a verified message of that identity.
pub fn announcement(revocation: &Revocation, to: &Address, message_id: &str) -> Vec<u8> {
    let from = &revocation.address;
    let why = match revocation.reason {
        RevocationReason::Compromised => "its key may be in someone else's hands",
        RevocationReason::Retired => "it is no longer used",
        RevocationReason::Superseded => "it moved to a new key",
    };
    let mut part = b"Content-Type: application/pgp-keys\r\n\
        Content-Disposition: attachment; filename=\"revocation.asc\"\r\n\r\n"
        .to_vec();
    part.extend_from_slice(&crate::mime::to_crlf(revocation.armored.as_bytes()));
    crate::mime::mixed_message(
        &from.to_string(),
        &to.to_string(),
        "This address is revoked",
        message_id,
        &format!(
            "The address {from} is revoked: {why}. Mail to it will not be read.\n\
             The attached revocation is signed by its key; your carrier applies it."
        ),
        &part,
    )
}

/// The `application/pgp-keys` parts of a (decrypted) message, each a candidate revocation for
/// [`apply`]; base64 transfer encoding is undone, anything else is taken as it is.
pub fn find_in(message: &[u8]) -> Vec<Vec<u8>> {
    use crate::mime::Walk;
    use base64::Engine as _;

    let mut found = Vec::new();
    crate::mime::walk(message, MAX_DEPTH, &mut |entity, content_type| {
        if found.len() >= MAX_REVOCATIONS_PER_MESSAGE {
            return Walk::Stop;
        }
        if content_type.mime_type != "application/pgp-keys" {
            return Walk::Into;
        }
        let base64 = entity
            .field("Content-Transfer-Encoding")
            .is_some_and(|field| field.value().trim().eq_ignore_ascii_case("base64"));
        if base64 {
            let text: Vec<u8> = entity
                .body
                .iter()
                .copied()
                .filter(|byte| !byte.is_ascii_whitespace())
                .collect();
            if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(text) {
                found.push(bytes);
            }
        } else {
            found.push(entity.body.clone());
        }
        Walk::Over
    });
    found
}

#[cfg(test)]
pub(crate) mod tests {
    use sequoia_openpgp::serialize::Serialize;

    use super::*;
    use crate::identity_key::tests::{alice, bob, carol};

    /// A public copy of `key` with its revocation applied.
    pub(crate) fn revoked_copy(key: &IdentityKey) -> (Cert, Revocation) {
        let revocation = revoke(key, RevocationReason::Retired, "gone").unwrap();
        let applied = apply(revocation.armored.as_bytes(), &key.public_cert()).unwrap();
        (applied.cert, revocation)
    }

    #[test]
    fn an_announcement_carries_a_revocation_that_applies() {
        let revocation = revoke(alice(), RevocationReason::Retired, "moving on").unwrap();
        let to = bob().address().clone();
        let message = announcement(&revocation, &to, "<a@b>");
        let text = String::from_utf8(message.clone()).unwrap();
        assert!(text.contains(&format!("From: <{}>", alice().address())));
        assert!(text.contains("Content-Type: application/pgp-keys"));
        assert!(!text.contains("PRIVATE"));
        let found = find_in(&message);
        assert_eq!(found.len(), 1);
        let applied = apply(&found[0], &alice().public_cert()).unwrap();
        assert_eq!(applied.reason, RevocationReason::Retired);
        // Another key's revocation in the same shape is refused against this pin.
        assert!(apply(&found[0], &carol().public_cert()).is_err());
        // Base64 transfer encoding is undone.
        let encoded = format!(
            "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
             Content-Type: application/pgp-keys\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                revocation.armored.as_bytes()
            )
        );
        let found = find_in(encoded.as_bytes());
        assert_eq!(found.len(), 1);
        assert!(apply(&found[0], &alice().public_cert()).is_ok());
        assert!(find_in(b"Content-Type: text/plain\r\n\r\nhello").is_empty());
    }

    #[test]
    fn revocation_applies_to_the_pinned_key() {
        let revocation = revoke(alice(), RevocationReason::Compromised, "laptop stolen").unwrap();
        assert!(
            revocation
                .armored
                .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----")
        );
        assert!(!revocation.armored.contains("PRIVATE"));
        let applied = apply(revocation.armored.as_bytes(), &alice().public_cert()).unwrap();
        assert!(matches!(
            applied.cert.revocation_status(&POLICY, None),
            RevocationStatus::Revoked(_)
        ));
        assert_eq!(applied.reason, RevocationReason::Compromised);
        assert!(!applied.reason.is_soft());
        assert_eq!(applied.message, "laptop stolen");
        assert_eq!(applied.address.as_ref(), Some(alice().address()));
        assert!(!crate::cert_holds_address(&applied.cert, alice().address()));
    }

    #[test]
    fn soft_reasons_round_trip() {
        let (_, revocation) = revoked_copy(bob());
        let applied = apply(revocation.armored.as_bytes(), &bob().public_cert()).unwrap();
        assert_eq!(applied.reason, RevocationReason::Retired);
        assert!(applied.reason.is_soft());
    }

    #[test]
    fn revocation_of_another_key_is_refused() {
        let revocation = revoke(alice(), RevocationReason::Retired, "").unwrap();
        let error = apply(revocation.armored.as_bytes(), &bob().public_cert()).unwrap_err();
        assert!(
            matches!(error, KeysError::MalformedRevocation(_)),
            "{error}"
        );
    }

    #[test]
    fn forged_revocation_is_a_bad_signature() {
        // Carol signs a "revocation" of Alice's key.
        let mut carol_signer = carol()
            .tsk()
            .primary_key()
            .key()
            .clone()
            .parts_into_secret()
            .unwrap()
            .into_keypair()
            .unwrap();
        let forged = CertRevocationBuilder::new()
            .set_reason_for_revocation(ReasonForRevocation::KeyCompromised, b"ha")
            .unwrap()
            .build(&mut carol_signer, &alice().public_cert(), None)
            .unwrap();
        // Serialized packet by packet: a Cert would drop the signature that does not verify.
        let mut bytes = Vec::new();
        let primary: Packet = alice().public_cert().primary_key().key().clone().into();
        primary.serialize(&mut bytes).unwrap();
        Packet::from(forged).serialize(&mut bytes).unwrap();
        let error = apply(&bytes, &alice().public_cert()).unwrap_err();
        assert!(matches!(error, KeysError::BadSignature(_)), "{error}");
    }

    #[test]
    fn garbage_is_a_malformed_revocation() {
        assert!(matches!(
            apply(b"nonsense", &alice().public_cert()),
            Err(KeysError::MalformedRevocation(_))
        ));
    }
}
