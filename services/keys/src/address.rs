//! Identity addresses: `local@<56 base32>.onion`.
//!
//! The parsing is the carrier-wide one in `onionpost_proto::address` (v3 checksum verified,
//! subdomain labels dropped, local part lowercased); this type only adds what keys needs on
//! top: its error type and the onion of an identity's ed25519 key.

use std::fmt;
use std::str::FromStr;

use onionpost_proto::address::{self as proto_address, OnionHost};

use crate::KeysError;

/// A validated identity address: lowercase local part and a v3 onion.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(proto_address::Address);

impl Address {
    /// Parses `local@[labels.]<56 base32>.onion`.
    pub fn parse(text: &str) -> Result<Self, KeysError> {
        proto_address::Address::parse(text)
            .map(Address)
            .map_err(|error| KeysError::MalformedAddress(format!("{error}: {text:?}")))
    }

    /// `[labels.]<56 base32>.onion` in any case as the canonical `<56 base32>.onion`, or `None`
    /// when it is not a v3 onion host (checksum included).
    pub fn canonical_onion_host(text: &str) -> Option<String> {
        OnionHost::parse(text.trim())
            .ok()
            .map(|host| host.to_string())
    }

    /// Builds the address `local@<onion of this ed25519 key>.onion`.
    pub fn from_onion_key(local: &str, onion_ed25519_public: &[u8; 32]) -> Result<Self, KeysError> {
        Address::parse(&format!(
            "{local}@{}",
            onion_host_from_ed25519(onion_ed25519_public)
        ))
    }

    /// The local part, lowercase.
    pub fn local_part(&self) -> &str {
        self.0.local_part()
    }

    /// The 56 base32 characters of the onion, without `.onion`.
    pub fn onion(&self) -> &str {
        self.0.host().label()
    }

    /// The host name to hand to tor: `<56 base32>.onion`.
    pub fn onion_host(&self) -> String {
        self.0.host().to_string()
    }

    /// Whether `text` names this address (any case, subdomain labels allowed).
    pub fn matches(&self, text: &str) -> bool {
        self.0.matches(text)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Address {
    type Err = KeysError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Address::parse(text)
    }
}

/// The onion host name (`<56 base32>.onion`) of a v3 onion service with this ed25519 key.
pub fn onion_host_from_ed25519(public_key: &[u8; 32]) -> String {
    OnionHost::from_ed25519(public_key).to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid onion host for tests, derived from a fixed byte.
    pub(crate) fn test_onion(seed: u8) -> String {
        onion_host_from_ed25519(&[seed; 32])
    }

    pub(crate) fn test_address(local: &str, seed: u8) -> Address {
        Address::parse(&format!("{local}@{}", test_onion(seed))).unwrap()
    }

    #[test]
    fn parses_and_normalises() {
        let onion = test_onion(7);
        let address = Address::parse(&format!("Alice@sub.{}", onion.to_uppercase())).unwrap();
        assert_eq!(address.local_part(), "alice");
        assert_eq!(address.onion_host(), onion);
        assert_eq!(address.to_string(), format!("alice@{onion}"));
        assert!(address.matches(&format!("ALICE@{onion}")));
    }

    #[test]
    fn known_onion_address_checksums() {
        // The address of the Tor Project's own onion site (a real v3 address).
        let real = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion";
        assert!(Address::parse(&format!("web@{real}")).is_ok());
    }

    #[test]
    fn rejects_bad_addresses() {
        let onion = test_onion(1);
        let mut bad_checksum = onion.clone();
        bad_checksum.replace_range(0..1, if onion.starts_with('a') { "b" } else { "a" });
        for text in [
            "alice".to_owned(),
            format!("@{onion}"),
            format!("al..ice@{onion}"),
            format!("al ice@{onion}"),
            "alice@example.org".to_owned(),
            "alice@abc.onion".to_owned(),
            format!("alice@{bad_checksum}"),
        ] {
            assert!(
                matches!(Address::parse(&text), Err(KeysError::MalformedAddress(_))),
                "{text}"
            );
        }
    }
}
