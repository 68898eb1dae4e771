//! The domain core of the onionpost keys service: every OpenPGP operation the carrier does for
//! its identities, as plain functions over [`sequoia_openpgp`] types.
//!
//! What lives here: identity keys (generation, export and import, sealing at rest), PGP/MIME
//! (RFC 3156) with protected headers, Autocrypt Level 1 headers, the Web Key Directory over the
//! onion (client and server), the key-pinning rule, signed introductions (vCard 4.0 with KEY),
//! `openpgp4fpr:` URIs and their QR codes, and signed revocations.
//!
//! On top of the domain modules, and keeping no cryptography of their own: the address-book and
//! identity-key [`store`] (SQLite or PostgreSQL), the use cases ([`service`]), the thin gRPC
//! adapter ([`grpc`]), the per-identity WKD listeners (`wkd_serve`) and the runtime module
//! ([`KeysModule`]). The domain modules read no environment, open no database and bind no
//! port: the WKD server is an [`axum::Router`] handed to whoever owns the listener, and the WKD
//! client is handed tor's SOCKS endpoint.
//!
//! All keys are v4 (RFC 4880 profile) and advertise SEIPDv1 only, so that GnuPG 2.2, still the
//! GnuPG of many systems, reads what onionpost writes (see `identity_key`).

mod address;
mod bounded;
mod certs;
mod error;
mod mime;

mod module;
mod wkd_serve;

pub mod autoconfig;
pub mod autocrypt;
pub mod bundle;
pub mod carrier_list;
pub mod carry;
pub mod fetch;
pub mod grpc;
pub mod identity_key;
pub mod introduction;
pub mod pgp_mime;
pub mod pinning;
pub mod qr;
pub mod revocation;
pub mod rotation;
pub mod service;
pub mod statement;
pub mod store;
pub mod wkd;

pub use address::{Address, onion_host_from_ed25519};
pub use certs::{cert_holds_address, parse_cert, public_armored};
pub use error::KeysError;
pub use identity_key::{IdentityKey, SealedKey};
pub use module::KeysModule;
/// The carrier secret type, from the runtime, re-exported for callers of [`IdentityKey::seal`].
pub use onionpost_runtime::seal::CarrierSecret;

/// The sequoia types that appear in this crate's API, so callers need not name the crate.
pub use sequoia_openpgp::{Cert, Fingerprint};
