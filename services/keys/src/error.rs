//! The one error type of the keys service.
//!
//! Each variant says what went wrong in words an operator can act on; the gRPC adapter maps
//! them to status codes once. Messages carry fingerprints at most, never message content.

/// Everything that can go wrong in the keys service's domain logic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeysError {
    /// Not an address of the form `local@<56 base32>.onion`.
    #[error("malformed address: {0}")]
    MalformedAddress(String),

    /// The bytes are not an OpenPGP certificate (or key) this service accepts.
    #[error("malformed key: {0}")]
    MalformedKey(String),

    /// A well-formed key that cannot do what is asked: revoked, expired, no encryption subkey.
    #[error("key cannot be used: {0}")]
    UnusableKey(String),

    /// The certificate holds no valid user ID with this address.
    #[error("key does not hold the address {0}")]
    AddressNotBound(String),

    /// The input to be sealed is not an RFC 5322 message.
    #[error("malformed message: {0}")]
    MalformedMessage(String),

    /// A message that says it is PGP/MIME but whose OpenPGP data is cut short or damaged.
    #[error("truncated or corrupted message: {0}")]
    CorruptMessage(String),

    /// A message (or statement, or bundle) that opens to more than the carrier holds for it:
    /// a compressed packet that expands beyond its ceiling. Not damaged, too large.
    #[error("{what} expands beyond {limit} bytes")]
    TooLarge {
        /// What was being opened.
        what: String,
        /// The ceiling it passed.
        limit: usize,
    },

    /// The message is encrypted, but to none of the keys we were given.
    #[error("message is not encrypted to any of our keys")]
    NotForUs,

    /// A signature made by a known key that does not verify.
    #[error("bad signature: {0}")]
    BadSignature(String),

    /// A signature by a key we do not have.
    #[error("signed by an unknown key ({0})")]
    UnknownSigner(String),

    /// A signature was required and there is none.
    #[error("message is not signed")]
    Unsigned,

    /// A good signature, but the signing key does not hold the message's From address.
    #[error("signing key {signer} does not hold the From address")]
    SenderMismatch {
        /// Fingerprint of the key that signed.
        signer: String,
    },

    /// Not a `multipart/encrypted; protocol="application/pgp-encrypted"` message (RFC 3156 §4).
    #[error("not a PGP/MIME message: {0}")]
    NotPgpMime(String),

    /// A sealed identity key that does not open: wrong carrier secret, or damaged bytes.
    #[error("sealed key cannot be opened: wrong carrier secret or damaged data")]
    SealBroken,

    /// An Autocrypt header that does not follow Autocrypt Level 1.
    #[error("malformed Autocrypt header: {0}")]
    MalformedAutocrypt(String),

    /// An introduction (signed vCard) that cannot be read.
    #[error("malformed introduction: {0}")]
    MalformedIntroduction(String),

    /// A revocation that cannot be read or does not apply to the pinned key.
    #[error("malformed revocation: {0}")]
    MalformedRevocation(String),

    /// An `openpgp4fpr:` URI that cannot be read.
    #[error("malformed openpgp4fpr URI: {0}")]
    MalformedUri(String),

    /// The onion answered, but publishes no key for this address (WKD 404).
    #[error("no key published for this address")]
    KeyNotFound,

    /// Fetching a key over tor failed in a way that may pass: no circuit, timeout, reset.
    #[error("key fetch failed: {0}")]
    Fetch(String),

    /// A QR code could not be drawn (the data is too long).
    #[error("QR code cannot be made: {0}")]
    Qr(String),

    /// A failure inside the OpenPGP library that none of the above explains.
    #[error("cryptographic operation failed: {0}")]
    Crypto(String),
}

impl KeysError {
    /// Whether trying again later may succeed (network trouble), as opposed to a permanent
    /// verdict on the data.
    pub fn is_transient(&self) -> bool {
        matches!(self, KeysError::Fetch(_))
    }

    /// Wraps a sequoia error that none of the specific variants describes.
    pub(crate) fn crypto(error: impl std::fmt::Display) -> Self {
        KeysError::Crypto(error.to_string())
    }
}
