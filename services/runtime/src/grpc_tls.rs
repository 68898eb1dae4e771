//! Mutual TLS between the services of one carrier (issue 18, item 12).
//!
//! In a distributed layout gRPC listens on a network that other containers share; without
//! authentication anything there could call keys' `ExportIdentity` and take every private key.
//! So every gRPC connection between processes is TLS 1.3 with a certificate on both sides,
//! issued by the **carrier CA**: an Ed25519 key derived from the carrier secret, which every
//! process of the carrier already holds (`ONIONPOST_SECRET`). Nothing is distributed by hand,
//! no file is written, and a process without the secret can neither serve nor call.
//!
//! Each process makes the CA certificate itself from the derived key (always the same subject
//! and key, which is all a verifier compares in a trust anchor) and a leaf certificate of its
//! own with a fresh key, signed by it, valid for one name, [`SERVER_NAME`], so the same pair
//! works under any host name (compose service names, Kubernetes DNS names, loopback).
//!
//! The one-process layout dispatches in memory and never reaches this; its gRPC listener, on
//! loopback for `onionpost healthcheck`, asks for the same credentials.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ED25519,
};
use tokio_rustls::rustls::pki_types::PrivatePkcs8KeyDer;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::seal::CarrierSecret;

/// The one name every service certificate holds and every client asks for.
pub const SERVER_NAME: &str = "services.onionpost.internal";

/// What the carrier CA's key is derived for (HKDF info).
const CA_PURPOSE: &str = "grpc carrier ca";

/// PKCS #8 v1 for an Ed25519 seed (RFC 8410 §7): this fixed prefix, then the 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A process's credentials for gRPC: the carrier CA's certificate and this process's own.
#[derive(Clone)]
pub struct GrpcTls {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for GrpcTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrpcTls(…)")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("gRPC credentials: {0}")]
pub struct GrpcTlsError(String);

impl GrpcTls {
    /// The carrier CA from `secret`, and a fresh certificate for this process issued by it.
    pub fn from_secret(secret: &CarrierSecret) -> Result<Self, GrpcTlsError> {
        let fail = |error: rcgen::Error| GrpcTlsError(error.to_string());
        let seed = secret.derive_key(CA_PURPOSE);
        let mut pkcs8 = zeroize::Zeroizing::new(Vec::with_capacity(48));
        pkcs8.extend_from_slice(&ED25519_PKCS8_PREFIX);
        pkcs8.extend_from_slice(seed.as_ref());
        let ca_key = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(pkcs8.as_slice()),
            &PKCS_ED25519,
        )
        .map_err(fail)?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name = rcgen::DistinguishedName::new();
        ca.distinguished_name
            .push(DnType::CommonName, "onionpost carrier CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca_cert = ca.self_signed(&ca_key).map_err(fail)?;

        let key = KeyPair::generate_for(&PKCS_ED25519).map_err(fail)?;
        let mut leaf = CertificateParams::new(vec![SERVER_NAME.to_owned()]).map_err(fail)?;
        leaf.distinguished_name = rcgen::DistinguishedName::new();
        leaf.distinguished_name
            .push(DnType::CommonName, "onionpost service");
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = leaf.signed_by(&key, &ca_cert, &ca_key).map_err(fail)?;
        Ok(GrpcTls {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The carrier CA's certificate (public).
    pub fn ca_certificate(&self) -> Certificate {
        Certificate::from_pem(&self.ca_pem)
    }

    /// This process's certificate and key.
    pub fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }

    /// For the gRPC server: present this process's certificate, require a client certificate
    /// from the carrier CA.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(self.ca_certificate())
            .timeout(std::time::Duration::from_secs(10))
    }

    /// For a gRPC client: trust only the carrier CA, present this process's certificate.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca_certificate())
            .identity(self.identity())
            .domain_name(SERVER_NAME)
    }
}
