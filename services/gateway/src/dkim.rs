//! DKIM signing of outbound mail for the gateway domain (RFC 6376 rsa-sha256, RFC 8463
//! ed25519-sha256) with mail-auth.
//!
//! The key is a PEM file: RSA (PKCS#1 or PKCS#8, e.g. from `openssl genrsa`) or Ed25519
//! (PKCS#8). When none is configured, an Ed25519 key is generated once into the data directory,
//! sealed with the carrier secret like every other private key at rest, and the TXT record to
//! publish is logged. RSA is what every receiver verifies; Ed25519 is
//! what ring can generate (it cannot make RSA keys), so operators facing the whole internet
//! should configure an RSA key.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dkim::{DkimSigner, Done};
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use onionpost_runtime::seal::Sealer;
use zeroize::Zeroizing;

use crate::rewrite::SIGNED_HEADERS;

/// The file name of a generated key under the data directory, sealed.
pub const GENERATED_KEY_FILE: &str = "gateway-dkim.sealed";
/// Where earlier versions kept the generated key, in the clear: sealed and removed at start.
pub const PLAINTEXT_KEY_FILE: &str = "gateway-dkim.pem";
/// The carrier secret's purpose for the generated key.
pub const SEAL_PURPOSE: &str = "gateway-dkim";

/// Why the DKIM key could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("cannot read DKIM key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write DKIM key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("DKIM key {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("DKIM signing failed: {0}")]
    Sign(String),
}

/// The gateway domain's signing key and selector.
pub struct Signer {
    signer: DkimSigner<DkimKey, Done>,
    /// `<selector>._domainkey.<domain>` and the TXT value to publish there.
    record: (String, String),
}

impl Signer {
    /// Loads `configured`, or the generated key under `data_dir`, sealed with `sealer`
    /// (making it the first time).
    pub fn load(
        configured: Option<&Path>,
        data_dir: &Path,
        sealer: &Sealer,
        domain: &str,
        selector: &str,
    ) -> Result<Self, DkimError> {
        let (path, pem) = match configured {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| DkimError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                (path.to_owned(), Zeroizing::new(pem))
            }
            None => (
                data_dir.join(GENERATED_KEY_FILE),
                generated_key(data_dir, sealer)?,
            ),
        };
        let invalid = |reason: String| DkimError::Invalid {
            path: path.clone(),
            reason,
        };
        let der = PrivateKeyDer::from_pem_slice(&pem)
            .map_err(|error| invalid(format!("not a PEM private key: {error}")))?;
        let engine = base64::engine::general_purpose::STANDARD;
        let rsa = match &der {
            PrivateKeyDer::Pkcs1(_) | PrivateKeyDer::Pkcs8(_) => {
                RsaKey::<Sha256>::from_key_der(der.clone_key()).ok()
            }
            _ => None,
        };
        let (key, value) = match (rsa, &der) {
            (Some(rsa), _) => {
                let value = format!(
                    "v=DKIM1; k=rsa; p={}",
                    engine.encode(rsa_spki(&rsa.public_key()))
                );
                (DkimKey::Rsa(rsa), value)
            }
            // OpenSSL writes PKCS#8 v1 Ed25519 keys without the public key; ring derives it
            // ("maybe unchecked").
            (None, PrivateKeyDer::Pkcs8(pkcs8)) => {
                let ed25519 = Ed25519Key::from_pkcs8_maybe_unchecked_der(pkcs8.secret_pkcs8_der())
                    .map_err(|_| invalid("neither an RSA nor an Ed25519 key".into()))?;
                let value = format!(
                    "v=DKIM1; k=ed25519; p={}",
                    engine.encode(ed25519.public_key())
                );
                (DkimKey::Ed25519(ed25519), value)
            }
            _ => return Err(invalid("neither an RSA nor an Ed25519 key".into())),
        };
        let signer = DkimSigner::from_key(key)
            .domain(domain)
            .selector(selector)
            .headers(SIGNED_HEADERS.iter().copied());
        Ok(Signer {
            signer,
            record: (format!("{selector}._domainkey.{domain}"), value),
        })
    }

    /// The TXT record to publish at `<selector>._domainkey.<domain>`: its name and value.
    pub fn dns_record(&self) -> (String, String) {
        self.record.clone()
    }

    /// The DKIM-Signature header field (with its CRLF) to put before `message`.
    pub fn sign(&self, message: &[u8]) -> Result<String, DkimError> {
        let signature = self
            .signer
            .sign(message)
            .map_err(|error| DkimError::Sign(error.to_string()))?;
        Ok(signature.to_header())
    }
}

/// The generated key's PEM: opened from its sealed file, made the first time (or taken over
/// from the plaintext file of an earlier version, which is then removed).
fn generated_key(data_dir: &Path, sealer: &Sealer) -> Result<Zeroizing<Vec<u8>>, DkimError> {
    let path = data_dir.join(GENERATED_KEY_FILE);
    let plaintext_path = data_dir.join(PLAINTEXT_KEY_FILE);
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| DkimError::Read {
            path: path.to_owned(),
            source,
        })
    };
    if !path.exists() {
        let pem = if plaintext_path.exists() {
            Zeroizing::new(read(&plaintext_path)?)
        } else {
            new_pem(&path)?
        };
        // Two gateway replicas may start at once: one key wins, and both read it.
        let created = onionpost_runtime::files::create_private_once(
            &path,
            &sealer.seal(&pem, GENERATED_KEY_FILE.as_bytes()),
        )
        .map_err(|source| DkimError::Write {
            path: path.clone(),
            source,
        })?;
        if created {
            tracing::info!(path = %path.display(), "generated a DKIM key for the gateway domain");
        }
    }
    let opened = sealer
        .open(&read(&path)?, GENERATED_KEY_FILE.as_bytes())
        .map_err(|error| DkimError::Invalid {
            path: path.clone(),
            reason: format!("does not open with the carrier secret: {error}"),
        })?;
    if plaintext_path.exists() {
        // Sealed now (by this start or an earlier one): the clear copy goes.
        std::fs::remove_file(&plaintext_path).map_err(|source| DkimError::Write {
            path: plaintext_path.clone(),
            source,
        })?;
        tracing::info!(
            "sealed the gateway's DKIM key of an earlier version and removed the clear copy"
        );
    }
    Ok(opened)
}

/// A new Ed25519 PKCS#8 key as PEM.
fn new_pem(path: &Path) -> Result<Zeroizing<Vec<u8>>, DkimError> {
    let der = Ed25519Key::generate_pkcs8().map_err(|error| DkimError::Invalid {
        path: path.to_owned(),
        reason: error.to_string(),
    })?;
    let body = base64::engine::general_purpose::STANDARD
        .encode(PrivatePkcs8KeyDer::from(der).secret_pkcs8_der());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok(Zeroizing::new(pem.into_bytes()))
}

/// ring gives an RSA public key as PKCS#1 `RSAPublicKey`; DKIM's `p=` wants the
/// SubjectPublicKeyInfo around it (RFC 6376 §3.6.1). The DER prefix is fixed but for the
/// lengths, which are written here.
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { rsaEncryption, NULL }
    const ALGORITHM: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bit_string = vec![0x00];
    bit_string.extend_from_slice(pkcs1);
    let mut inner = ALGORITHM.to_vec();
    inner.extend(der_tlv(0x03, &bit_string));
    der_tlv(0x30, &inner)
}

fn der_tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let length = value.len();
    if length < 0x80 {
        out.push(length as u8);
    } else {
        let bytes: Vec<u8> = length
            .to_be_bytes()
            .into_iter()
            .skip_while(|byte| *byte == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        onionpost_runtime::seal::CarrierSecret::from_text("0123456789abcdef0123456789abcdef")
            .unwrap()
            .sealer(SEAL_PURPOSE)
    }

    #[test]
    fn a_generated_key_signs_and_its_record_is_ed25519() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::load(None, dir.path(), &sealer(), "gw.example", "sel").unwrap();
        // Sealed at rest: no PEM armour, no key in the clear.
        let stored = std::fs::read(dir.path().join(GENERATED_KEY_FILE)).unwrap();
        assert!(!stored.windows(11).any(|w| w == b"PRIVATE KEY"));
        let (name, value) = signer.dns_record();
        assert_eq!(name, "sel._domainkey.gw.example");
        assert!(value.starts_with("v=DKIM1; k=ed25519; p="), "{value}");
        let header = signer
            .sign(b"From: <a@gw.example>\r\nSubject: x\r\n\r\nbody\r\n")
            .unwrap();
        assert!(header.starts_with("DKIM-Signature:"), "{header}");
        assert!(
            header.contains("d=gw.example") && header.contains("s=sel"),
            "{header}"
        );
        // Loaded again, the same key: same record.
        let again = Signer::load(None, dir.path(), &sealer(), "gw.example", "sel").unwrap();
        assert_eq!(again.dns_record(), signer.dns_record());
        // Another carrier secret cannot open it, and says so with the path.
        let other =
            onionpost_runtime::seal::CarrierSecret::from_text("fedcba9876543210fedcba9876543210")
                .unwrap()
                .sealer(SEAL_PURPOSE);
        let error = Signer::load(None, dir.path(), &other, "gw.example", "sel")
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains(GENERATED_KEY_FILE), "{error}");
    }

    #[test]
    fn a_clear_key_of_an_earlier_version_is_sealed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let pem = new_pem(dir.path()).unwrap();
        std::fs::write(dir.path().join(PLAINTEXT_KEY_FILE), &*pem).unwrap();
        let from_clear = Signer::load(
            Some(&dir.path().join(PLAINTEXT_KEY_FILE)),
            dir.path(),
            &sealer(),
            "gw.example",
            "sel",
        )
        .unwrap()
        .dns_record();
        let signer = Signer::load(None, dir.path(), &sealer(), "gw.example", "sel").unwrap();
        // The same key (the DNS record stays valid), sealed, and the clear file is gone.
        assert_eq!(signer.dns_record(), from_clear);
        assert!(!dir.path().join(PLAINTEXT_KEY_FILE).exists());
        assert!(dir.path().join(GENERATED_KEY_FILE).exists());
    }

    #[test]
    fn a_file_that_is_no_key_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.pem");
        std::fs::write(&path, "not a key").unwrap();
        let error = Signer::load(Some(&path), dir.path(), &sealer(), "gw.example", "sel")
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("bad.pem"), "{error}");
    }
}
