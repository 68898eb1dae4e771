//! The TLS certificate of a clearnet listener (IMAP and submission, STARTTLS and implicit TLS).
//!
//! rustls with the ring provider: aws-lc needs cmake, which this build does not have. When no
//! certificate is configured, a self-signed one is generated once into the data directory so
//! that TLS works out of the box (clients must then trust it explicitly).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

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

/// Loads `cert` and `key` (PEM), or when both are absent the self-signed pair in `data_dir`,
/// generating it the first time. `section` is the configuration section the two come from
/// (`imap`, `submission`): it names the keys in errors and the generated files.
pub fn acceptor(
    section: &str,
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
) -> Result<TlsAcceptor, TlsError> {
    let (cert_path, key_path) = match (cert, key) {
        (Some(cert), Some(key)) => (cert.to_owned(), key.to_owned()),
        (None, None) => self_signed(section, data_dir)?,
        _ => {
            return Err(TlsError::Invalid(format!(
                "{section}.tls_cert and {section}.tls_key must be set together"
            )));
        }
    };
    let cert_pem = read(&cert_path)?;
    let key_pem = read(&key_path)?;
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
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", key_path.display())))?
        .ok_or_else(|| TlsError::Invalid(format!("{}: no private key", key_path.display())))?;
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

/// The generated pair's paths, created on first use.
fn self_signed(section: &str, data_dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert_path = data_dir.join(format!("{section}-tls-cert.pem"));
    let key_path = data_dir.join(format!("{section}-tls-key.pem"));
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .map_err(|e| TlsError::Invalid(format!("generating a self-signed certificate: {e}")))?;
    let write = |path: &Path, text: String| {
        std::fs::write(path, text).map_err(|source| TlsError::Write {
            path: path.to_owned(),
            source,
        })
    };
    write(&key_path, generated.key_pair.serialize_pem())?;
    restrict(&key_path);
    write(&cert_path, generated.cert.pem())?;
    tracing::info!(
        cert = %cert_path.display(),
        section,
        "tls: no certificate configured; generated a self-signed one"
    );
    Ok((cert_path, key_path))
}

#[cfg(unix)]
fn restrict(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict(_path: &Path) {}
