//! Encryption at rest of an account's mail.
//!
//! Each account has a random 32-byte data key, stored sealed with the carrier secret (purpose
//! [`ACCOUNT_KEY_PURPOSE`], bound to the account id). Bodies are sealed under that key with
//! XChaCha20-Poly1305 (random 24-byte nonce per value), their associated data binding each
//! sealed value to its account, its dedup key and which part it is, so values cannot be swapped
//! between rows. Dedup and delivery keys are HMAC-SHA256 under the account key: a plain digest
//! of the plaintext would let whoever copies the volume confirm a guessed message. Deleting the
//! account row destroys the key, and with it every way to read what is left on disk.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use onionpost_runtime::seal::{CarrierSecret, Sealer};
use rand::TryRngCore;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

/// Sealer purpose of the account data keys.
pub const ACCOUNT_KEY_PURPOSE: &str = "mail-account-key";

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;

/// A sealed value that does not open: wrong carrier secret, or damaged or swapped bytes.
#[derive(Debug, thiserror::Error)]
#[error("sealed mail data does not open")]
pub struct Broken;

/// Fills `buffer` from the operating system's generator.
pub fn os_random(buffer: &mut [u8]) {
    OsRng
        .try_fill_bytes(buffer)
        .expect("the operating system's random generator is available");
}

/// Seals and opens account keys with the carrier secret.
#[derive(Clone, Debug)]
pub struct KeyWrapper {
    sealer: Sealer,
}

impl KeyWrapper {
    pub fn new(secret: &CarrierSecret) -> Self {
        KeyWrapper {
            sealer: secret.sealer(ACCOUNT_KEY_PURPOSE),
        }
    }

    /// A fresh account key and its sealed form, bound to `account_id`.
    pub fn generate(&self, account_id: &str) -> (AccountKey, Vec<u8>) {
        let mut key = Zeroizing::new([0u8; 32]);
        os_random(key.as_mut());
        let sealed = self.sealer.seal(key.as_ref(), account_id.as_bytes());
        (AccountKey::from_bytes(account_id, key.as_ref()), sealed)
    }

    pub fn open(&self, account_id: &str, sealed: &[u8]) -> Result<AccountKey, Broken> {
        let key = self
            .sealer
            .open(sealed, account_id.as_bytes())
            .map_err(|_| Broken)?;
        if key.len() != 32 {
            return Err(Broken);
        }
        Ok(AccountKey::from_bytes(account_id, &key))
    }
}

/// One account's data key, open in memory.
#[derive(Clone)]
pub struct AccountKey {
    account_id: String,
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccountKey(…)")
    }
}

/// Which part of a stored message a sealed value holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealedPart {
    Header,
    Full,
}

impl AccountKey {
    fn from_bytes(account_id: &str, bytes: &[u8]) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(bytes);
        AccountKey {
            account_id: account_id.to_owned(),
            key,
        }
    }

    /// HMAC-SHA256 under the account key of the `parts`, each length-prefixed so that
    /// different splits of the same bytes differ.
    pub fn keyed_hash(&self, label: &str, parts: &[&[u8]]) -> Vec<u8> {
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(self.key.as_ref())
            .expect("HMAC takes a key of any length");
        mac.update(label.as_bytes());
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }

    fn associated(&self, dedup_key: &[u8], part: SealedPart) -> Vec<u8> {
        let label: &[u8] = match part {
            SealedPart::Header => b"header",
            SealedPart::Full => b"full",
        };
        let mut associated = Vec::with_capacity(self.account_id.len() + dedup_key.len() + 8);
        associated.extend_from_slice(self.account_id.as_bytes());
        associated.push(0);
        associated.extend_from_slice(dedup_key);
        associated.push(0);
        associated.extend_from_slice(label);
        associated
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.key.as_ref().into())
    }

    pub fn seal(&self, plaintext: &[u8], dedup_key: &[u8], part: SealedPart) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        os_random(&mut nonce);
        let associated = self.associated(dedup_key, part);
        let ciphertext = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &associated,
                },
            )
            .expect("XChaCha20-Poly1305 encryption does not fail for in-memory buffers");
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        sealed.push(VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    pub fn open(
        &self,
        sealed: &[u8],
        dedup_key: &[u8],
        part: SealedPart,
    ) -> Result<Vec<u8>, Broken> {
        if sealed.len() < 1 + NONCE_LEN + 16 || sealed[0] != VERSION {
            return Err(Broken);
        }
        let (nonce, ciphertext) = sealed[1..].split_at(NONCE_LEN);
        let associated = self.associated(dedup_key, part);
        self.cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &associated,
                },
            )
            .map_err(|_| Broken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_bodies_round_trip_and_stay_bound() {
        let secret = CarrierSecret::from_text("0123456789abcdef0123456789abcdef").unwrap();
        let wrapper = KeyWrapper::new(&secret);
        let (key, sealed_key) = wrapper.generate("acct-1");
        assert!(wrapper.open("acct-2", &sealed_key).is_err());
        let reopened = wrapper.open("acct-1", &sealed_key).unwrap();
        let dedup = key.keyed_hash("blob", &[b"hello"]);
        assert_eq!(dedup, reopened.keyed_hash("blob", &[b"hello"]));
        assert_ne!(dedup, key.keyed_hash("blob", &[b"hell", b"o"]));
        let sealed = key.seal(b"secret body", &dedup, SealedPart::Full);
        assert!(!sealed.windows(6).any(|window| window == b"secret"));
        assert_eq!(
            reopened.open(&sealed, &dedup, SealedPart::Full).unwrap(),
            b"secret body"
        );
        assert!(reopened.open(&sealed, &dedup, SealedPart::Header).is_err());
        assert!(reopened.open(&sealed, b"other", SealedPart::Full).is_err());
        let (other, _) = wrapper.generate("acct-1");
        assert!(other.open(&sealed, &dedup, SealedPart::Full).is_err());
    }
}
