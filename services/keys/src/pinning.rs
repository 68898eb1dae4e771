//! The key-pinning rule, as pure logic (design, "Keys bound to the onion"; issue: "Keys are
//! pinned on first use; a new key is accepted only when signed by the pinned one, otherwise it is
//! held for the account to confirm").
//!
//! # The key-transition statement
//!
//! When an identity moves to a new key, its old key *certifies the new key's user ID* for the
//! address: an ordinary OpenPGP third-party certification (signature type 0x10, RFC 4880
//! §5.2.1) by the old primary key over the new primary key and the user ID
//! `local@<onion>.onion`, carrying the notation `key-transition@onionpost=v1` (RFC 4880
//! §5.2.3.16), not critical so other software accepts the key.
//!
//! Why a certification and not a detached signature over a statement of our own making:
//!
//! - it travels *inside the new certificate*, so every way a key reaches a peer (WKD over the
//!   onion, Autocrypt keydata, an introduction, a manual import) carries the proof with it, and
//!   no new message type or storage is needed;
//! - it binds exactly what matters: the old key vouches that the new key speaks for this
//!   address, and it is checked with standard machinery (GnuPG shows it as a signature on the
//!   user ID and can make one with `--quick-sign-key` and `--cert-notation`);
//! - the notation keeps an ordinary certification (someone vouching for a friend's key) from
//!   being mistaken for a handover.
//!
//! A transition signed by a pinned key that was later revoked as compromised is not trusted: the
//! thief could have made it. A transition by a pinned key revoked as superseded or retired (the
//! normal end of a handover) is.

use sequoia_openpgp::packet::Packet;
use sequoia_openpgp::packet::signature::SignatureBuilder;
use sequoia_openpgp::types::{ReasonForRevocation, RevocationStatus, SignatureType};
use sequoia_openpgp::{Cert, Fingerprint};

use crate::certs::{POLICY, userid_address};
use crate::{Address, IdentityKey, KeysError, cert_holds_address};

/// Notation name marking a certification as a key transition.
pub const TRANSITION_NOTATION: &str = "key-transition@onionpost";
/// Its value: the version of this statement.
pub const TRANSITION_NOTATION_VALUE: &[u8] = b"v1";

/// Has the old identity key certify the new key for the identity's address, and returns the new
/// (public) certificate with that certification on its user ID.
pub fn certify_transition(old: &IdentityKey, new_cert: &Cert) -> Result<Cert, KeysError> {
    let address = old.address();
    let new_cert = new_cert.clone().strip_secret_key_material();
    let userid = new_cert
        .userids()
        .map(|uid| uid.userid().clone())
        .find(|userid| userid_address(userid).as_ref() == Some(address))
        .ok_or_else(|| KeysError::AddressNotBound(address.to_string()))?;
    let mut old_primary = old
        .tsk()
        .primary_key()
        .key()
        .clone()
        .parts_into_secret()
        .map_err(KeysError::crypto)?
        .into_keypair()
        .map_err(KeysError::crypto)?;
    let certification = SignatureBuilder::new(SignatureType::GenericCertification)
        .add_notation(TRANSITION_NOTATION, TRANSITION_NOTATION_VALUE, None, false)
        .map_err(KeysError::crypto)?
        .sign_userid_binding(&mut old_primary, new_cert.primary_key().key(), &userid)
        .map_err(KeysError::crypto)?;
    let (certified, _) = new_cert
        .insert_packets([Packet::from(userid), Packet::from(certification)])
        .map_err(KeysError::crypto)?;
    Ok(certified)
}

/// Whether `offered` carries a valid transition certification by `pinned` on a user ID with
/// `address`.
pub fn is_transition_signed(pinned: &Cert, offered: &Cert, address: &Address) -> bool {
    let issuer = pinned.primary_key().key().role_as_unspecified();
    offered.userids().any(|uid| {
        userid_address(uid.userid()).as_ref() == Some(address)
            && uid
                .valid_certifications_by_key(&POLICY, None, issuer)
                .any(|certification| {
                    certification
                        .notation(TRANSITION_NOTATION)
                        .any(|value| value == TRANSITION_NOTATION_VALUE)
                })
    })
}

/// What to do with a key offered for a contact.
#[derive(Clone, Debug)]
pub enum PinDecision {
    /// Nothing was pinned: pin this key (trust on first use).
    PinFirst(Cert),
    /// The pinned key itself, with whatever the offer adds (new subkeys, new signatures,
    /// revocations) merged in. Keep it as the pin.
    Unchanged(Cert),
    /// A different key that the pinned key certified: it replaces the pin.
    Transition {
        /// The new pin.
        new: Cert,
        /// The fingerprint of the key it replaces.
        replaces: Fingerprint,
    },
    /// A different key without a trusted transition: keep the old pin and hold this one until
    /// the account confirms it.
    Held {
        /// The key on hold.
        offered: Cert,
        /// Why it is held.
        reason: HoldReason,
    },
}

/// Why a key is held for confirmation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldReason {
    /// The pinned key did not certify the new one.
    NotCertifiedByPinnedKey,
    /// The pinned key certified it, but the pinned key is revoked as compromised.
    PinnedKeyCompromised,
    /// Nothing is pinned and the key came only from a message's Autocrypt header, which
    /// anyone can write: it waits for the key from the address's own onion, an introduction,
    /// or the account (design.md, "First keys come from the onion").
    Provisional,
    /// An introduced contact, and the account asked to confirm each introduction first.
    AwaitingConfirmation,
}

/// Applies the pinning rule to a key offered for `address` (from WKD, Autocrypt, an
/// introduction or a manual import). Fails if the offered key does not hold the address: such
/// a key is not held, it is refused.
pub fn decide(
    pinned: Option<&Cert>,
    offered: &Cert,
    address: &Address,
) -> Result<PinDecision, KeysError> {
    if !cert_holds_address(offered, address) {
        return Err(KeysError::AddressNotBound(address.to_string()));
    }
    let offered = offered.clone().strip_secret_key_material();
    let Some(pinned) = pinned else {
        return Ok(PinDecision::PinFirst(offered));
    };
    if pinned.fingerprint() == offered.fingerprint() {
        let merged = pinned
            .clone()
            .merge_public(offered)
            .map_err(KeysError::crypto)?;
        return Ok(PinDecision::Unchanged(merged));
    }
    if !is_transition_signed(pinned, &offered, address) {
        return Ok(PinDecision::Held {
            offered,
            reason: HoldReason::NotCertifiedByPinnedKey,
        });
    }
    if is_compromised(pinned) {
        return Ok(PinDecision::Held {
            offered,
            reason: HoldReason::PinnedKeyCompromised,
        });
    }
    Ok(PinDecision::Transition {
        new: offered,
        replaces: pinned.fingerprint(),
    })
}

/// Revoked with a reason that casts doubt on everything the key ever signed.
fn is_compromised(cert: &Cert) -> bool {
    let RevocationStatus::Revoked(revocations) = cert.revocation_status(&POLICY, None) else {
        return false;
    };
    revocations.iter().any(|revocation| {
        !matches!(
            revocation.reason_for_revocation().map(|(reason, _)| reason),
            Some(ReasonForRevocation::KeySuperseded) | Some(ReasonForRevocation::KeyRetired)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity_key::tests::{alice, bob};
    use crate::revocation::{RevocationReason, apply, revoke};

    fn new_alice_key() -> IdentityKey {
        IdentityKey::generate(alice().address()).unwrap()
    }

    #[test]
    fn first_key_is_pinned() {
        let offered = alice().public_cert();
        let decision = decide(None, &offered, alice().address()).unwrap();
        assert!(
            matches!(decision, PinDecision::PinFirst(cert) if cert.fingerprint() == alice().fingerprint())
        );
    }

    #[test]
    fn same_key_merges_updates() {
        let pinned = alice().public_cert();
        let decision = decide(Some(&pinned), &alice().public_cert(), alice().address()).unwrap();
        assert!(matches!(decision, PinDecision::Unchanged(_)));
    }

    #[test]
    fn signed_transition_is_accepted() {
        let pinned = alice().public_cert();
        let new_key = new_alice_key();
        let offered = certify_transition(alice(), &new_key.public_cert()).unwrap();
        assert!(is_transition_signed(&pinned, &offered, alice().address()));
        let decision = decide(Some(&pinned), &offered, alice().address()).unwrap();
        let PinDecision::Transition { new, replaces } = decision else {
            panic!("expected a transition, got {decision:?}");
        };
        assert_eq!(new.fingerprint(), new_key.fingerprint());
        assert_eq!(replaces, alice().fingerprint());
    }

    #[test]
    fn transition_survives_a_superseded_revocation_of_the_old_key() {
        let new_key = new_alice_key();
        let offered = certify_transition(alice(), &new_key.public_cert()).unwrap();
        let revocation =
            revoke(alice(), RevocationReason::Superseded, "moved to a new key").unwrap();
        let pinned = apply(revocation.armored.as_bytes(), &alice().public_cert())
            .unwrap()
            .cert;
        let decision = decide(Some(&pinned), &offered, alice().address()).unwrap();
        assert!(
            matches!(decision, PinDecision::Transition { .. }),
            "{decision:?}"
        );
    }

    #[test]
    fn transition_by_a_compromised_key_is_held() {
        let new_key = new_alice_key();
        let offered = certify_transition(alice(), &new_key.public_cert()).unwrap();
        let revocation = revoke(alice(), RevocationReason::Compromised, "laptop stolen").unwrap();
        let pinned = apply(revocation.armored.as_bytes(), &alice().public_cert())
            .unwrap()
            .cert;
        let decision = decide(Some(&pinned), &offered, alice().address()).unwrap();
        assert!(matches!(
            decision,
            PinDecision::Held {
                reason: HoldReason::PinnedKeyCompromised,
                ..
            }
        ));
    }

    #[test]
    fn unsigned_change_is_held() {
        let pinned = alice().public_cert();
        let new_key = new_alice_key();
        let decision = decide(Some(&pinned), &new_key.public_cert(), alice().address()).unwrap();
        assert!(matches!(
            decision,
            PinDecision::Held {
                reason: HoldReason::NotCertifiedByPinnedKey,
                ..
            }
        ));
    }

    #[test]
    fn certification_by_another_key_or_without_notation_is_not_a_transition() {
        let pinned = alice().public_cert();
        let new_key = new_alice_key();

        // Bob vouches for the new key: that is not Alice handing over.
        let mut bob_primary = bob()
            .tsk()
            .primary_key()
            .key()
            .clone()
            .parts_into_secret()
            .unwrap()
            .into_keypair()
            .unwrap();
        let userid = sequoia_openpgp::packet::UserID::from(alice().address().to_string());
        let by_bob = SignatureBuilder::new(SignatureType::GenericCertification)
            .add_notation(TRANSITION_NOTATION, TRANSITION_NOTATION_VALUE, None, false)
            .unwrap()
            .sign_userid_binding(
                &mut bob_primary,
                new_key.public_cert().primary_key().key(),
                &userid,
            )
            .unwrap();
        let offered = new_key
            .public_cert()
            .insert_packets([Packet::from(userid.clone()), Packet::from(by_bob)])
            .unwrap()
            .0;
        assert!(!is_transition_signed(&pinned, &offered, alice().address()));

        // Alice certifies the new key, but without the transition notation.
        let mut alice_primary = alice()
            .tsk()
            .primary_key()
            .key()
            .clone()
            .parts_into_secret()
            .unwrap()
            .into_keypair()
            .unwrap();
        let plain = SignatureBuilder::new(SignatureType::GenericCertification)
            .sign_userid_binding(
                &mut alice_primary,
                new_key.public_cert().primary_key().key(),
                &userid,
            )
            .unwrap();
        let offered = new_key
            .public_cert()
            .insert_packets([Packet::from(userid), Packet::from(plain)])
            .unwrap()
            .0;
        assert!(!is_transition_signed(&pinned, &offered, alice().address()));
        assert!(matches!(
            decide(Some(&pinned), &offered, alice().address()).unwrap(),
            PinDecision::Held { .. }
        ));
    }

    #[test]
    fn key_for_another_address_is_refused() {
        let error = decide(
            Some(&alice().public_cert()),
            &bob().public_cert(),
            alice().address(),
        )
        .unwrap_err();
        assert!(matches!(error, KeysError::AddressNotBound(_)));
    }
}
