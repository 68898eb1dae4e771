//! One OpenPGP key per identity: generation, export and import, and sealing at rest.
//!
//! # The key
//!
//! An Ed25519 primary key that certifies and signs, and a Cv25519 subkey that encrypts (for
//! transport and storage), with one user ID: the bare address `local@<onion>.onion`. The key is
//! v4 (RFC 4880 profile) and its features say SEIPDv1 only: sequoia 2.x otherwise announces
//! SEIPDv2, which GnuPG 2.2 cannot read ("packet(1) with unknown version 6"). Senders then pick
//! SEIPDv1 (with MDC) for us, which every OpenPGP implementation in use reads. The key does not
//! expire: the onion address is its anchor, and retirement is done by a signed revocation
//! (`revocation`) that peers apply, not by a clock.
//!
//! # Sealing at rest
//!
//! The carrier keeps hosted identities' secret keys sealed with the carrier secret (design, "Key
//! custody"). [`IdentityKey::seal`] uses the runtime's sealer (`onionpost_runtime::seal`:
//! XChaCha20-Poly1305 under a key derived by HKDF-SHA256 from the carrier secret) for the
//! purpose [`SEAL_PURPOSE`], over the whole serialized secret key, with the key's fingerprint as
//! associated data. We do not use OpenPGP's own password protection of secret key material,
//! because:
//!
//! - the carrier secret is a random key, not a password: OpenPGP's S2K would stretch it for
//!   nothing, on every decryption of every incoming message;
//! - v4 secret-key protection (S2K usage 254: CFB plus a SHA-1 checksum) encrypts only the secret
//!   numbers and leaves the public parameters unauthenticated, which allows key-overwriting
//!   attacks by whoever can modify the stored blob (Bruseghini, Huigens, Paterson, "Victory by
//!   KO", CCS 2022). An AEAD over the whole key authenticates every byte, and the fingerprint
//!   as associated data stops one identity's sealed key from being swapped into another's row;
//! - one sealing scheme for everything the carrier keeps at rest (onion keys, OpenPGP keys, mail
//!   bodies), each purpose with its own derived key.
//!
//! Export for the user's own mail client is a different matter: there the user types a
//! passphrase into GnuPG or Thunderbird, so [`IdentityKey::export_secret`] uses OpenPGP's
//! standard passphrase protection, which those programs understand.

use std::fmt;

use onionpost_runtime::seal::CarrierSecret;
use sequoia_openpgp::cert::prelude::*;
use sequoia_openpgp::crypto::{KeyPair, Password};
use sequoia_openpgp::packet::Packet;
use sequoia_openpgp::serialize::SerializeInto;
use sequoia_openpgp::types::{Features, KeyFlags, RevocationStatus};
use sequoia_openpgp::{Cert, Fingerprint, Profile};
use zeroize::Zeroizing;

use crate::certs::{POLICY, userid_address};
use crate::{Address, KeysError};

/// The runtime sealer purpose under which identity keys are sealed.
pub const SEAL_PURPOSE: &str = "openpgp-secret";

/// An identity's OpenPGP key with its secret parts, unsealed, in memory.
#[derive(Clone)]
pub struct IdentityKey {
    tsk: Cert,
    address: Address,
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKey")
            .field("fingerprint", &self.tsk.fingerprint())
            .finish_non_exhaustive()
    }
}

impl IdentityKey {
    /// Generates the key of a new identity (see the module documentation for its shape).
    pub fn generate(address: &Address) -> Result<Self, KeysError> {
        let (tsk, _revocation) = CertBuilder::new()
            .set_profile(Profile::RFC4880)
            .map_err(KeysError::crypto)?
            .set_features(Features::empty().set_seipdv1())
            .map_err(KeysError::crypto)?
            .set_cipher_suite(CipherSuite::Cv25519)
            .set_primary_key_flags(KeyFlags::empty().set_certification().set_signing())
            .set_validity_period(None)
            .add_userid(address.to_string())
            .add_subkey(
                KeyFlags::empty()
                    .set_transport_encryption()
                    .set_storage_encryption(),
                None,
                None,
            )
            .generate()
            .map_err(KeysError::crypto)?;
        IdentityKey::from_tsk(tsk)
    }

    /// Takes a certificate with unencrypted secret keys and checks that it can serve as an
    /// identity key: valid and unrevoked, a secret signing key, a secret encryption key, and a
    /// user ID that is an onion address (the primary one if there are several).
    pub fn from_tsk(tsk: Cert) -> Result<Self, KeysError> {
        let fingerprint = tsk.fingerprint();
        let unusable = |why: &str| KeysError::MalformedKey(format!("{fingerprint}: {why}"));
        if !tsk.is_tsk() {
            return Err(unusable("no secret key material"));
        }
        let valid = tsk
            .with_policy(&POLICY, None)
            .map_err(|error| unusable(&error.to_string()))?;
        if let RevocationStatus::Revoked(_) = valid.revocation_status() {
            return Err(unusable("key is revoked"));
        }
        valid
            .alive()
            .map_err(|error| unusable(&error.to_string()))?;
        let usable_secret_keys = || {
            valid
                .keys()
                .unencrypted_secret()
                .supported()
                .alive()
                .revoked(false)
        };
        if usable_secret_keys().for_signing().next().is_none() {
            return Err(unusable("no usable secret signing key"));
        }
        if usable_secret_keys()
            .for_transport_encryption()
            .next()
            .is_none()
        {
            return Err(unusable("no usable secret encryption key"));
        }
        let primary_address = valid
            .primary_userid()
            .ok()
            .and_then(|uid| userid_address(uid.userid()));
        let address = primary_address
            .or_else(|| valid.userids().find_map(|uid| userid_address(uid.userid())))
            .ok_or_else(|| unusable("no user ID is an onion address"))?;
        Ok(IdentityKey { tsk, address })
    }

    /// The identity's address (from the key's user ID).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The primary key's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.tsk.fingerprint()
    }

    /// The certificate without secrets: what peers get.
    pub fn public_cert(&self) -> Cert {
        self.tsk.clone().strip_secret_key_material()
    }

    /// The certificate with its (unencrypted) secret keys.
    pub fn tsk(&self) -> &Cert {
        &self.tsk
    }

    /// The public certificate, ASCII-armored.
    pub fn export_public(&self) -> Result<String, KeysError> {
        crate::public_armored(&self.tsk)
    }

    /// The secret key, ASCII-armored, for the user's own mail client or another device. With a
    /// passphrase, every secret key is protected by it (OpenPGP S2K, readable by GnuPG).
    pub fn export_secret(&self, passphrase: Option<&str>) -> Result<String, KeysError> {
        let tsk = match passphrase {
            None => self.tsk.clone(),
            Some(passphrase) => {
                let password = Password::from(passphrase);
                let mut protected: Vec<Packet> = Vec::new();
                for ka in self.tsk.keys().unencrypted_secret() {
                    let key = ka
                        .key()
                        .clone()
                        .encrypt_secret(&password)
                        .map_err(KeysError::crypto)?;
                    protected.push(if ka.primary() {
                        key.role_into_primary().into()
                    } else {
                        key.role_into_subordinate().into()
                    });
                }
                let (tsk, _) = self
                    .tsk
                    .clone()
                    .insert_packets(protected)
                    .map_err(KeysError::crypto)?;
                tsk
            }
        };
        let armored = Zeroizing::new(tsk.as_tsk().armored().to_vec().map_err(KeysError::crypto)?);
        String::from_utf8(armored.to_vec()).map_err(KeysError::crypto)
    }

    /// Reads a secret key exported by [`IdentityKey::export_secret`] (or by GnuPG's
    /// `--export-secret-keys`), unlocking protected secret keys with the passphrase.
    pub fn import_secret(bytes: &[u8], passphrase: Option<&str>) -> Result<Self, KeysError> {
        let cert = crate::parse_cert(bytes)?;
        let locked: Vec<_> = cert
            .keys()
            .secret()
            .filter(|ka| !ka.key().has_unencrypted_secret())
            .map(|ka| (ka.primary(), ka.key().clone()))
            .collect();
        if locked.is_empty() {
            return IdentityKey::from_tsk(cert);
        }
        let password =
            Password::from(passphrase.ok_or_else(|| {
                KeysError::MalformedKey("secret key is passphrase-protected".into())
            })?);
        let mut unlocked: Vec<Packet> = Vec::new();
        for (primary, key) in locked {
            let key = key
                .decrypt_secret(&password)
                .map_err(|_| KeysError::MalformedKey("wrong passphrase".into()))?;
            unlocked.push(if primary {
                key.role_into_primary().into()
            } else {
                key.role_into_subordinate().into()
            });
        }
        let (cert, _) = cert.insert_packets(unlocked).map_err(KeysError::crypto)?;
        IdentityKey::from_tsk(cert)
    }

    /// Seals the secret key with the carrier secret (see the module documentation).
    pub fn seal(&self, secret: &CarrierSecret) -> Result<SealedKey, KeysError> {
        let plaintext = Zeroizing::new(self.tsk.as_tsk().to_vec().map_err(KeysError::crypto)?);
        let fingerprint = self.fingerprint();
        let sealed = secret
            .sealer(SEAL_PURPOSE)
            .seal(&plaintext, fingerprint.as_bytes());
        Ok(SealedKey {
            fingerprint,
            sealed,
        })
    }

    /// Opens a sealed key. Fails with [`KeysError::SealBroken`] on a wrong carrier secret, any
    /// change to the sealed bytes, or a sealed key stored under another fingerprint.
    pub fn unseal(sealed: &SealedKey, secret: &CarrierSecret) -> Result<Self, KeysError> {
        let plaintext = secret
            .sealer(SEAL_PURPOSE)
            .open(&sealed.sealed, sealed.fingerprint.as_bytes())
            .map_err(|_| KeysError::SealBroken)?;
        let tsk = crate::parse_cert(&plaintext)?;
        if tsk.fingerprint() != sealed.fingerprint {
            return Err(KeysError::SealBroken);
        }
        IdentityKey::from_tsk(tsk)
    }

    /// The key pair that signs messages.
    pub(crate) fn signing_keypair(&self) -> Result<KeyPair, KeysError> {
        let valid = self
            .tsk
            .with_policy(&POLICY, None)
            .map_err(KeysError::crypto)?;
        let ka = valid
            .keys()
            .unencrypted_secret()
            .supported()
            .alive()
            .revoked(false)
            .for_signing()
            .next()
            .ok_or_else(|| KeysError::UnusableKey("no usable signing key".into()))?;
        ka.key().clone().into_keypair().map_err(KeysError::crypto)
    }

    /// Every secret key pair that may decrypt: also those of expired or revoked subkeys, since
    /// old mail stays encrypted to them.
    pub(crate) fn decryption_keypairs(&self) -> Vec<KeyPair> {
        self.tsk
            .keys()
            .unencrypted_secret()
            .filter_map(|ka| ka.key().clone().into_keypair().ok())
            .collect()
    }
}

/// A sealed identity key as stored: the fingerprint (in the clear, it names the row) and the
/// sealed secret key, bound to that fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedKey {
    /// The primary fingerprint of the sealed key.
    pub fingerprint: Fingerprint,
    /// The runtime sealer's output.
    pub sealed: Vec<u8>,
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::OnceLock;

    use sequoia_openpgp::types::{PublicKeyAlgorithm, SymmetricAlgorithm};

    use super::*;
    use crate::address::tests::test_address;

    /// Key generation costs a few milliseconds; tests share a few keys.
    pub(crate) fn alice() -> &'static IdentityKey {
        static KEY: OnceLock<IdentityKey> = OnceLock::new();
        KEY.get_or_init(|| IdentityKey::generate(&test_address("alice", 1)).unwrap())
    }

    pub(crate) fn bob() -> &'static IdentityKey {
        static KEY: OnceLock<IdentityKey> = OnceLock::new();
        KEY.get_or_init(|| IdentityKey::generate(&test_address("bob", 2)).unwrap())
    }

    pub(crate) fn carol() -> &'static IdentityKey {
        static KEY: OnceLock<IdentityKey> = OnceLock::new();
        KEY.get_or_init(|| IdentityKey::generate(&test_address("carol", 3)).unwrap())
    }

    #[test]
    fn generated_key_has_the_agreed_shape() {
        let key = alice();
        let cert = key.public_cert();
        assert!(!cert.is_tsk());
        assert_eq!(key.address(), &test_address("alice", 1));
        assert_eq!(cert.primary_key().key().version(), 4);
        assert_eq!(
            cert.primary_key().key().pk_algo(),
            PublicKeyAlgorithm::EdDSA
        );
        let valid = cert.with_policy(&POLICY, None).unwrap();
        let features = valid.features().unwrap();
        assert!(features.supports_seipdv1());
        assert!(!features.supports_seipdv2());
        let primary_flags = valid.primary_key().key_flags().unwrap();
        assert!(primary_flags.for_certification() && primary_flags.for_signing());
        let subkeys: Vec<_> = valid.keys().subkeys().collect();
        assert_eq!(subkeys.len(), 1);
        assert_eq!(subkeys[0].key().pk_algo(), PublicKeyAlgorithm::ECDH);
        assert!(subkeys[0].key_flags().unwrap().for_transport_encryption());
        assert!(valid.primary_key().key_expiration_time().is_none());
        let userids: Vec<_> = valid.userids().map(|uid| uid.userid().clone()).collect();
        assert_eq!(userids.len(), 1);
        assert_eq!(userids[0].value(), key.address().to_string().as_bytes());
        assert!(
            valid
                .preferred_symmetric_algorithms()
                .unwrap()
                .contains(&SymmetricAlgorithm::AES256)
        );
    }

    #[test]
    fn export_and_import_round_trip() {
        let key = alice();
        let plain = key.export_secret(None).unwrap();
        assert!(plain.starts_with("-----BEGIN PGP PRIVATE KEY BLOCK-----"));
        let imported = IdentityKey::import_secret(plain.as_bytes(), None).unwrap();
        assert_eq!(imported.fingerprint(), key.fingerprint());
        assert_eq!(imported.address(), key.address());

        let locked = key.export_secret(Some("correct horse")).unwrap();
        let locked_cert = crate::parse_cert(locked.as_bytes()).unwrap();
        assert!(
            locked_cert
                .keys()
                .secret()
                .all(|ka| !ka.key().has_unencrypted_secret())
        );
        assert!(matches!(
            IdentityKey::import_secret(locked.as_bytes(), None),
            Err(KeysError::MalformedKey(_))
        ));
        assert!(matches!(
            IdentityKey::import_secret(locked.as_bytes(), Some("wrong")),
            Err(KeysError::MalformedKey(_))
        ));
        let unlocked =
            IdentityKey::import_secret(locked.as_bytes(), Some("correct horse")).unwrap();
        assert_eq!(unlocked.fingerprint(), key.fingerprint());
        unlocked.signing_keypair().unwrap();
    }

    #[test]
    fn import_refuses_public_keys_and_garbage() {
        let public = alice().export_public().unwrap();
        assert!(public.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
        assert!(matches!(
            IdentityKey::import_secret(public.as_bytes(), None),
            Err(KeysError::MalformedKey(_))
        ));
        assert!(matches!(
            IdentityKey::import_secret(b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nAAAA\n", None),
            Err(KeysError::MalformedKey(_))
        ));
        let truncated = &public.as_bytes()[..public.len() / 2];
        assert!(matches!(
            crate::parse_cert(truncated),
            Err(KeysError::MalformedKey(_))
        ));
    }

    #[test]
    fn import_refuses_keys_without_onion_user_id() {
        let (tsk, _) = CertBuilder::general_purpose(Some("Eve <eve@example.org>"))
            .generate()
            .unwrap();
        let armored = String::from_utf8(tsk.as_tsk().armored().to_vec().unwrap()).unwrap();
        let error = IdentityKey::import_secret(armored.as_bytes(), None).unwrap_err();
        assert!(error.to_string().contains("onion"), "{error}");
    }

    fn carrier_secret(text: &str) -> CarrierSecret {
        CarrierSecret::from_text(&format!("{text:0<32}")).unwrap()
    }

    #[test]
    fn seal_round_trip_and_tamper_detection() {
        let key = alice();
        let secret = carrier_secret("carrier one");
        let sealed = key.seal(&secret).unwrap();
        assert_eq!(sealed.fingerprint, key.fingerprint());
        let opened = IdentityKey::unseal(&sealed, &secret).unwrap();
        assert_eq!(opened.fingerprint(), key.fingerprint());
        assert!(opened.tsk().is_tsk());

        assert!(matches!(
            IdentityKey::unseal(&sealed, &carrier_secret("carrier two")),
            Err(KeysError::SealBroken)
        ));

        let mut flipped = sealed.clone();
        *flipped.sealed.last_mut().unwrap() ^= 1;
        assert!(matches!(
            IdentityKey::unseal(&flipped, &secret),
            Err(KeysError::SealBroken)
        ));

        // Bob's sealed key stored in Alice's row: the associated data no longer matches.
        let relabelled = SealedKey {
            fingerprint: key.fingerprint(),
            sealed: bob().seal(&secret).unwrap().sealed,
        };
        assert!(matches!(
            IdentityKey::unseal(&relabelled, &secret),
            Err(KeysError::SealBroken)
        ));
    }

    #[test]
    fn sealed_key_does_not_contain_the_secret() {
        let key = alice();
        let sealed = key.seal(&carrier_secret("carrier one")).unwrap();
        let plain = key.tsk().as_tsk().to_vec().unwrap();
        // No 32-byte window of the serialized secret key appears in the sealed bytes.
        assert!(
            plain
                .windows(32)
                .all(|window| crate::mime::find(&sealed.sealed, window).is_none())
        );
    }
}
