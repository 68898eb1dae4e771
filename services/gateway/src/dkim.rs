//! DKIM signing of outbound mail for the gateway domain (RFC 6376 rsa-sha256, RFC 8463
//! ed25519-sha256) with mail-auth.
//!
//! The key is a PEM file: RSA (PKCS#1 or PKCS#8, e.g. from `openssl genrsa`) or Ed25519
//! (PKCS#8). When none is configured, an Ed25519 key is generated once into the data directory
//! and the TXT record to publish is logged. RSA is what every receiver verifies; Ed25519 is
//! what ring can generate (it cannot make RSA keys), so operators facing the whole internet
//! should configure an RSA key.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dkim::{DkimSigner, Done};
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::rewrite::SIGNED_HEADERS;

/// The file name of a generated key under the data directory.
pub const GENERATED_KEY_FILE: &str = "gateway-dkim.pem";

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
    /// Loads `configured`, or the generated key under `data_dir` (making it the first time).
    pub fn load(
        configured: Option<&Path>,
        data_dir: &Path,
        domain: &str,
        selector: &str,
    ) -> Result<Self, DkimError> {
        let path = match configured {
            Some(path) => path.to_owned(),
            None => {
                let path = data_dir.join(GENERATED_KEY_FILE);
                if !path.exists() {
                    generate(&path)?;
                }
                path
            }
        };
        let pem = std::fs::read(&path).map_err(|source| DkimError::Read {
            path: path.clone(),
            source,
        })?;
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

/// Writes a new Ed25519 PKCS#8 key as PEM, readable by the owner only.
fn generate(path: &Path) -> Result<(), DkimError> {
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
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| DkimError::Write {
            path: path.to_owned(),
            source,
        })?;
    }
    write_private(path, pem.as_bytes()).map_err(|source| DkimError::Write {
        path: path.to_owned(),
        source,
    })?;
    tracing::info!(path = %path.display(), "generated a DKIM key for the gateway domain");
    Ok(())
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
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

    #[test]
    fn a_generated_key_signs_and_its_record_is_ed25519() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::load(None, dir.path(), "gw.example", "sel").unwrap();
        assert!(dir.path().join(GENERATED_KEY_FILE).exists());
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
        let again = Signer::load(None, dir.path(), "gw.example", "sel").unwrap();
        assert_eq!(again.dns_record(), signer.dns_record());
    }

    #[test]
    fn a_file_that_is_no_key_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.pem");
        std::fs::write(&path, "not a key").unwrap();
        let error = Signer::load(Some(&path), dir.path(), "gw.example", "sel")
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("bad.pem"), "{error}");
    }
}
