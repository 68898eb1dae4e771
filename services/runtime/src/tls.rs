//! The TLS certificate of a clearnet listener (IMAP and submission, STARTTLS and implicit TLS).
//!
//! rustls with the ring provider: aws-lc needs cmake, which this build does not have. When no
//! certificate is configured, a self-signed one is generated once into the data directory so
//! that TLS works out of the box (clients must then trust it explicitly); its key is sealed
//! with the carrier secret.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

use crate::seal::CarrierSecret;

/// Why the TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// What the generated TLS keys are sealed for (a key per `section`, the section as associated
/// data).
const SEAL_PURPOSE: &str = "tls-key";

/// Loads `cert` and `key` (PEM), or when both are absent the self-signed pair in `data_dir`,
/// generating it the first time. `section` is the configuration section the two come from
/// (`imap`, `submission`): it names the keys in errors and the generated files. A generated
/// key is kept sealed with the carrier secret (`<section>-tls-key.sealed`): a copied volume
/// holds no private key in the clear. Its certificate stays readable
/// (`<section>-tls-cert.pem`), for clients to trust.
pub fn acceptor(
    section: &str,
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
    secret: &CarrierSecret,
) -> Result<TlsAcceptor, TlsError> {
    let (cert_path, key_pem) = match (cert, key) {
        (Some(cert), Some(key)) => (cert.to_owned(), Zeroizing::new(read(key)?)),
        (None, None) => self_signed(section, data_dir, secret)?,
        _ => {
            return Err(TlsError::Invalid(format!(
                "{section}.tls_cert and {section}.tls_key must be set together"
            )));
        }
    };
    let key_name = key.map_or_else(
        || format!("{section}'s generated TLS key"),
        |key| key.display().to_string(),
    );
    let cert_pem = read(&cert_path)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", cert_path.display())))?;
    if certs.is_empty() {
        return Err(TlsError::Invalid(format!(
            "{}: no certificate in PEM file",
            cert_path.display()
        )));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| TlsError::Invalid(format!("{key_name}: {e}")))?
        .ok_or_else(|| TlsError::Invalid(format!("{key_name}: no private key")))?;
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    std::fs::write(path, bytes).map_err(|source| TlsError::Write {
        path: path.to_owned(),
        source,
    })
}

/// The generated pair: the certificate's path and the opened key, created on first use. A key
/// an earlier version left in the clear (`<section>-tls-key.pem`) is sealed and removed.
fn self_signed(
    section: &str,
    data_dir: &Path,
    secret: &CarrierSecret,
) -> Result<(PathBuf, Zeroizing<Vec<u8>>), TlsError> {
    let sealer = secret.sealer(SEAL_PURPOSE);
    let cert_path = data_dir.join(format!("{section}-tls-cert.pem"));
    let sealed_path = data_dir.join(format!("{section}-tls-key.sealed"));
    let clear_path = data_dir.join(format!("{section}-tls-key.pem"));
    if cert_path.exists() && sealed_path.exists() {
        let key = sealer
            .open(&read(&sealed_path)?, section.as_bytes())
            .map_err(|e| {
                TlsError::Invalid(format!(
                    "{}: {e} (sealed with another carrier secret?)",
                    sealed_path.display()
                ))
            })?;
        return Ok((cert_path, key));
    }
    if cert_path.exists() && clear_path.exists() {
        let key = Zeroizing::new(read(&clear_path)?);
        write(&sealed_path, &sealer.seal(&key, section.as_bytes()))?;
        restrict(&sealed_path);
        std::fs::remove_file(&clear_path).map_err(|source| TlsError::Write {
            path: clear_path.clone(),
            source,
        })?;
        tracing::info!(
            section,
            "tls: sealed the generated key an earlier version kept in the clear"
        );
        return Ok((cert_path, key));
    }
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .map_err(|e| TlsError::Invalid(format!("generating a self-signed certificate: {e}")))?;
    let key = Zeroizing::new(generated.key_pair.serialize_pem().into_bytes());
    write(&sealed_path, &sealer.seal(&key, section.as_bytes()))?;
    restrict(&sealed_path);
    write(&cert_path, generated.cert.pem().as_bytes())?;
    tracing::info!(
        cert = %cert_path.display(),
        section,
        "tls: no certificate configured; generated a self-signed one"
    );
    Ok((cert_path, key))
}

#[cfg(unix)]
fn restrict(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(fill: &str) -> CarrierSecret {
        CarrierSecret::from_text(&fill.repeat(40)).unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The generated key is never on disk in the clear; the same certificate comes back at the
    /// next start; another carrier's secret cannot open it.
    #[test]
    fn a_generated_key_is_sealed_and_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        acceptor("imap", None, None, dir.path(), &secret("a")).unwrap();
        assert_eq!(
            names(dir.path()),
            ["imap-tls-cert.pem", "imap-tls-key.sealed"]
        );
        let sealed = std::fs::read(dir.path().join("imap-tls-key.sealed")).unwrap();
        assert!(!sealed.windows(11).any(|window| window == b"PRIVATE KEY"));
        let cert = std::fs::read(dir.path().join("imap-tls-cert.pem")).unwrap();
        acceptor("imap", None, None, dir.path(), &secret("a")).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("imap-tls-cert.pem")).unwrap(),
            cert
        );
        let Err(error) = acceptor("imap", None, None, dir.path(), &secret("b")) else {
            panic!("another secret opened the key");
        };
        assert!(
            error.to_string().contains("another carrier secret"),
            "{error}"
        );
    }

    /// A key an earlier version wrote in the clear is sealed at the next start and removed.
    #[test]
    fn a_key_left_in_the_clear_is_sealed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(
            dir.path().join("submission-tls-key.pem"),
            generated.key_pair.serialize_pem(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("submission-tls-cert.pem"),
            generated.cert.pem(),
        )
        .unwrap();
        acceptor("submission", None, None, dir.path(), &secret("a")).unwrap();
        assert_eq!(
            names(dir.path()),
            ["submission-tls-cert.pem", "submission-tls-key.sealed"]
        );
        acceptor("submission", None, None, dir.path(), &secret("a")).unwrap();
    }
}
