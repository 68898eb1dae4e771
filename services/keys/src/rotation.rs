//! Key rotation: an identity moves to a new key on the same address (paper §5.1).
//!
//! The new key carries a key-transition certification by the old one on its user ID (see
//! [`crate::pinning`]), so wherever it travels (WKD over the onion, the Autocrypt header of the
//! identity's mail, an introduction) a peer that pinned the old key can check the handover
//! itself. Peers the identity corresponded with are also told in mail at once: a message signed
//! by the *old* key (the one they have pinned, so it verifies) carries the new key as an
//! `application/pgp-keys` part, which their carrier offers to the pinning rule and which moves
//! the pin without asking the account. The old key is not revoked: mail already on its way to it
//! still opens (the carrier keeps its secret, sealed), and signatures it made stay good.

use crate::{Address, IdentityKey, KeysError};

/// A new key for `old`'s address, certified by `old` as its successor.
pub fn successor(old: &IdentityKey) -> Result<IdentityKey, KeysError> {
    let new = IdentityKey::generate(old.address())?;
    let certified = crate::pinning::certify_transition(old, &new.public_cert())?;
    // Merging the public certificate keeps the new key's secret parts and adds the
    // certification to its user ID.
    let tsk = new
        .tsk()
        .clone()
        .merge_public(certified)
        .map_err(KeysError::crypto)?;
    IdentityKey::from_tsk(tsk)
}

/// The plaintext message that announces `new` (the identity's new key) to one peer: a line of
/// text and the public key as an `application/pgp-keys` part, which GnuPG-based clients import
/// as it is. The caller signs it with the *previous* key, which the peer has pinned, and
/// encrypts it to the peer.
pub fn announcement(
    new: &IdentityKey,
    to: &Address,
    message_id: &str,
) -> Result<Vec<u8>, KeysError> {
    let from = new.address();
    let armored = new.export_public()?;
    let mut part = b"Content-Type: application/pgp-keys\r\n\
        Content-Disposition: attachment; filename=\"new-key.asc\"\r\n\r\n"
        .to_vec();
    part.extend_from_slice(&crate::mime::to_crlf(armored.as_bytes()));
    Ok(crate::mime::mixed_message(
        &from.to_string(),
        &to.to_string(),
        "This address has a new key",
        message_id,
        &format!(
            "The address {from} moved to a new key, {}.\n\
             The attached key is certified by the previous one; your carrier moves to it.",
            new.fingerprint()
        ),
        &part,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity_key::tests::{alice, bob};
    use crate::pinning::{PinDecision, decide, is_transition_signed};

    #[test]
    fn the_successor_is_certified_by_the_old_key_and_a_peer_moves_to_it() {
        let new = successor(alice()).unwrap();
        assert_ne!(new.fingerprint(), alice().fingerprint());
        assert_eq!(new.address(), alice().address());
        assert!(new.tsk().is_tsk());
        let public = new.public_cert();
        assert!(is_transition_signed(
            &alice().public_cert(),
            &public,
            alice().address()
        ));
        // What WKD serves keeps the certification.
        let served = crate::wkd::bind_to_address(public.clone(), alice().address()).unwrap();
        let decision = decide(Some(&alice().public_cert()), &served, alice().address()).unwrap();
        assert!(
            matches!(decision, PinDecision::Transition { .. }),
            "{decision:?}"
        );
        // Another identity's key does not certify it.
        assert!(!is_transition_signed(
            &bob().public_cert(),
            &public,
            alice().address()
        ));
    }

    #[test]
    fn the_announcement_carries_the_new_public_key_only() {
        let new = successor(alice()).unwrap();
        let message = announcement(&new, bob().address(), "<m@x>").unwrap();
        let text = String::from_utf8(message.clone()).unwrap();
        assert!(text.contains(&format!("From: <{}>", alice().address())));
        assert!(text.contains(&new.fingerprint().to_string()));
        assert!(!text.contains("PRIVATE"));
        let found = crate::revocation::find_in(&message);
        assert_eq!(found.len(), 1);
        let cert = crate::parse_cert(&found[0]).unwrap();
        assert_eq!(cert.fingerprint(), new.fingerprint());
        assert!(!cert.is_tsk());
        assert!(is_transition_signed(
            &alice().public_cert(),
            &cert,
            alice().address()
        ));
    }
}
