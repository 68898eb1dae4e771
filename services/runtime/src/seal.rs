//! Sealing secrets and mail at rest with the carrier's secret.
//!
//! design.md: "a copy of the data volume reveals no mail and no private key without the secret
//! that seals them". The carrier secret comes from configuration (`secret`,
//! `ONIONPOST_SECRET`), typically a container secret kept off the data volume; when it is absent
//! it is generated once into `data_dir/secret` (mode 0600), which protects against a copied
//! database file but not a copied volume, and the log says so.
//!
//! Each use derives its own key with HKDF-SHA256 from the secret and a purpose label
//! (`onion-key`, `openpgp-secret`, `mail-body`…), so one sealed value can never be opened as
//! another kind. Values are sealed with XChaCha20-Poly1305: a random 24-byte nonce per value is
//! safe at any volume, and the `associated` bytes (an identity id, a message digest) bind a
//! sealed value to the row it belongs to, so swapping ciphertexts between rows fails to open.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::config::Config;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const SECRET_FILE: &str = "secret";

/// Why a sealed value could not be opened or the secret not loaded.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("sealed value is truncated or of an unknown version")]
    Malformed,
    #[error("sealed value does not open with this carrier's secret (wrong secret, or tampered)")]
    Tampered,
    #[error("cannot read or create the carrier secret at {path}: {source}")]
    SecretFile {
        path: String,
        source: std::io::Error,
    },
    #[error("the carrier secret must be at least 32 characters")]
    WeakSecret,
}

/// Seals and opens values for one purpose.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    /// The HMAC key of [`Sealer::keyed_digest`], derived apart from the cipher's.
    digest_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(…)")
    }
}

/// The carrier secret, from which every [`Sealer`] is derived.
#[derive(Clone)]
pub struct CarrierSecret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for CarrierSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CarrierSecret(…)")
    }
}

impl CarrierSecret {
    /// The configured secret, or the one generated into `data_dir/secret` (created on first use).
    pub fn load(config: &Config) -> Result<Self, SealError> {
        if let Some(secret) = &config.secret {
            return Self::from_text(secret.expose());
        }
        Self::load_or_create_file(&config.data_dir.join(SECRET_FILE))
    }

    pub fn from_text(text: &str) -> Result<Self, SealError> {
        if text.len() < 32 {
            return Err(SealError::WeakSecret);
        }
        Ok(CarrierSecret(Zeroizing::new(text.as_bytes().to_vec())))
    }

    fn load_or_create_file(path: &Path) -> Result<Self, SealError> {
        let file_error = |source| SealError::SecretFile {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => return Self::from_text(text.trim()),
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(file_error(error));
            }
            Err(_) => {}
        }
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let text = hex::encode(bytes);
        // Another service of this process may create it at the same moment: one of the two
        // wins, and both use the winner's (see `files`).
        if crate::files::create_private_once(path, text.as_bytes()).map_err(file_error)? {
            tracing::warn!(
                path = %path.display(),
                "generated the carrier secret inside the data directory; set `secret` (ONIONPOST_SECRET) to keep it off the data volume"
            );
        }
        let text = std::fs::read_to_string(path).map_err(file_error)?;
        Self::from_text(text.trim())
    }

    /// A 32-byte key for one purpose other than sealing (the carrier CA of `grpc_tls`):
    /// independent of every sealer's key and of every other purpose's.
    pub fn derive_key(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"onionpost key v1"), &self.0);
        let mut key = Zeroizing::new([0u8; 32]);
        hkdf.expand(purpose.as_bytes(), key.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        key
    }

    /// The sealer for one purpose (`onion-key`, `openpgp-secret`, `mail-body`, …).
    pub fn sealer(&self, purpose: &str) -> Sealer {
        let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"onionpost seal v1"), &self.0);
        let mut key = Zeroizing::new([0u8; 32]);
        hkdf.expand(purpose.as_bytes(), key.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let mut digest_key = Zeroizing::new([0u8; 32]);
        hkdf.expand(
            format!("{purpose} keyed digest").as_bytes(),
            digest_key.as_mut(),
        )
        .expect("32 bytes is a valid HKDF-SHA256 output length");
        Sealer {
            cipher: XChaCha20Poly1305::new(key.as_ref().into()),
            digest_key,
        }
    }
}

impl Sealer {
    /// Seals `plaintext`, bound to `associated` (for example the id of the row it is stored in).
    pub fn seal(&self, plaintext: &[u8], associated: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: associated,
                },
            )
            .expect("XChaCha20-Poly1305 encryption does not fail for in-memory buffers");
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        sealed.push(VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// HMAC-SHA256 of `parts` (each length-prefixed, so parts cannot run into each other)
    /// under this purpose's key: equal inputs give equal digests on this carrier, so stored
    /// digests still find duplicates, but a copied volume cannot confirm a guessed input
    /// against them (a plain SHA-256 of a clearnet body would).
    pub fn keyed_digest(&self, parts: &[&[u8]]) -> [u8; 32] {
        use hkdf::hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(self.digest_key.as_ref())
            .expect("HMAC takes a key of any length");
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Opens a value sealed by [`Sealer::seal`] with the same purpose and `associated` bytes.
    pub fn open(&self, sealed: &[u8], associated: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() < 1 + NONCE_LEN + 16 || sealed[0] != VERSION {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = sealed[1..].split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: associated,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Tampered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> CarrierSecret {
        CarrierSecret::from_text("0123456789abcdef0123456789abcdef").unwrap()
    }

    #[test]
    fn keyed_digests_match_for_equal_input_and_need_the_secret() {
        let sealer = secret().sealer("queue-body");
        let digest = sealer.keyed_digest(&[b"hello"]);
        assert_eq!(
            digest,
            secret().sealer("queue-body").keyed_digest(&[b"hello"])
        );
        assert_ne!(digest, sealer.keyed_digest(&[b"hell", b"o"]));
        assert_ne!(
            digest,
            secret().sealer("mail-body").keyed_digest(&[b"hello"])
        );
        let other = CarrierSecret::from_text("fedcba9876543210fedcba9876543210").unwrap();
        assert_ne!(digest, other.sealer("queue-body").keyed_digest(&[b"hello"]));
        // Not the plain SHA-256 a copied volume could check a guess against.
        use sha2::Digest as _;
        assert_ne!(digest.as_slice(), sha2::Sha256::digest(b"hello").as_slice());
    }

    #[test]
    fn round_trip_and_binding() {
        let sealer = secret().sealer("onion-key");
        let sealed = sealer.seal(b"private key", b"identity-1");
        assert!(!sealed.windows(11).any(|w| w == b"private key"));
        assert_eq!(
            &**sealer.open(&sealed, b"identity-1").unwrap(),
            b"private key"
        );
        assert!(matches!(
            sealer.open(&sealed, b"identity-2"),
            Err(SealError::Tampered)
        ));
        let other_purpose = secret().sealer("mail-body");
        assert!(matches!(
            other_purpose.open(&sealed, b"identity-1"),
            Err(SealError::Tampered)
        ));
        let other_secret = CarrierSecret::from_text("ffffffffffffffffffffffffffffffff").unwrap();
        assert!(matches!(
            other_secret
                .sealer("onion-key")
                .open(&sealed, b"identity-1"),
            Err(SealError::Tampered)
        ));
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(
            sealer.open(&flipped, b"identity-1"),
            Err(SealError::Tampered)
        ));
        assert!(matches!(
            sealer.open(&sealed[..10], b"identity-1"),
            Err(SealError::Malformed)
        ));
    }

    #[test]
    fn generated_secret_file_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let first = CarrierSecret::load_or_create_file(&path).unwrap();
        let second = CarrierSecret::load_or_create_file(&path).unwrap();
        let sealed = first.sealer("x").seal(b"v", b"");
        assert_eq!(&**second.sealer("x").open(&sealed, b"").unwrap(), b"v");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            CarrierSecret::from_text("short"),
            Err(SealError::WeakSecret)
        ));
    }

    #[test]
    fn services_starting_together_share_one_generated_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = std::sync::Arc::new(dir.path().join("secret"));
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let sealed: Vec<Vec<u8>> = (0..8)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    // Before: a service reading between creation and write saw an empty file
                    // and failed with WeakSecret.
                    let secret = CarrierSecret::load_or_create_file(&path).unwrap();
                    secret.sealer("x").seal(b"v", b"")
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|thread| thread.join().unwrap())
            .collect();
        let secret = CarrierSecret::load_or_create_file(&path).unwrap();
        for sealed in sealed {
            assert_eq!(&**secret.sealer("x").open(&sealed, b"").unwrap(), b"v");
        }
    }
}
