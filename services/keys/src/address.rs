//! Identity addresses: `local@<56 base32>.onion`.
//!
//! The domain is a v3 onion address (tor rend-spec-v3 §6, "Encoding onion addresses"):
//! `base32(PUBKEY | CHECKSUM | VERSION)` with `CHECKSUM = SHA3-256(".onion checksum" | PUBKEY |
//! VERSION)[..2]` and `VERSION = 3`. The checksum is verified, so a mistyped address is refused
//! here rather than becoming a circuit that never completes.
//!
//! Local parts are compared without regard to ASCII case, as WKD and Autocrypt do; an
//! [`Address`] holds them lowercased. Subdomain labels before the onion are accepted and dropped:
//! tor ignores them (design, "Addresses").

use std::fmt;
use std::str::FromStr;

use sequoia_openpgp::types::HashAlgorithm;

use crate::KeysError;

/// Length of a v3 onion address without `.onion`.
const ONION_V3_LEN: usize = 56;
const ONION_V3_VERSION: u8 = 3;
const ONION_CHECKSUM_PREFIX: &[u8] = b".onion checksum";
/// RFC 5321 §4.5.3.1.1.
const MAX_LOCAL_PART_LEN: usize = 64;

/// A validated identity address: lowercase local part and a v3 onion.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    local: String,
    /// The 56 base32 characters, lowercase, without `.onion`.
    onion: String,
}

impl Address {
    /// Parses `local@[labels.]<56 base32>.onion`.
    pub fn parse(text: &str) -> Result<Self, KeysError> {
        let malformed = |why: &str| KeysError::MalformedAddress(format!("{why}: {text:?}"));
        let (local, domain) = text.rsplit_once('@').ok_or_else(|| malformed("no @"))?;
        let local = local.to_ascii_lowercase();
        if !is_dot_atom(&local) {
            return Err(malformed("local part is not a dot-atom"));
        }
        let domain = domain.to_ascii_lowercase();
        let host = domain
            .strip_suffix(".onion")
            .ok_or_else(|| malformed("domain is not .onion"))?;
        let onion = host.rsplit('.').next().unwrap_or(host);
        validate_onion_v3(onion).map_err(malformed)?;
        Ok(Address {
            local,
            onion: onion.to_owned(),
        })
    }

    /// `[labels.]<56 base32>.onion` in any case as the canonical `<56 base32>.onion`, or `None`
    /// when it is not a v3 onion host (checksum included).
    pub fn canonical_onion_host(text: &str) -> Option<String> {
        let host = text.trim().to_ascii_lowercase();
        Address::parse(&format!("carrier@{host}"))
            .ok()
            .map(|address| address.onion_host())
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
        &self.local
    }

    /// The 56 base32 characters of the onion, without `.onion`.
    pub fn onion(&self) -> &str {
        &self.onion
    }

    /// The host name to hand to tor: `<56 base32>.onion`.
    pub fn onion_host(&self) -> String {
        format!("{}.onion", self.onion)
    }

    /// Whether `text` names this address (any case, subdomain labels allowed).
    pub fn matches(&self, text: &str) -> bool {
        Address::parse(text).is_ok_and(|other| &other == self)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}.onion", self.local, self.onion)
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
    let mut raw = Vec::with_capacity(35);
    raw.extend_from_slice(public_key);
    raw.extend_from_slice(&onion_checksum(public_key, ONION_V3_VERSION));
    raw.push(ONION_V3_VERSION);
    let encoded = base32::encode(base32::Alphabet::Rfc4648Lower { padding: false }, &raw);
    format!("{encoded}.onion")
}

fn onion_checksum(public_key: &[u8], version: u8) -> [u8; 2] {
    let mut hash = HashAlgorithm::SHA3_256
        .context()
        .expect("the nettle backend has SHA3-256")
        .for_digest();
    hash.update(ONION_CHECKSUM_PREFIX);
    hash.update(public_key);
    hash.update(&[version]);
    let digest = hash.into_digest().expect("SHA3-256 digest");
    [digest[0], digest[1]]
}

fn validate_onion_v3(onion: &str) -> Result<(), &'static str> {
    if onion.len() != ONION_V3_LEN {
        return Err("onion is not 56 characters (v3)");
    }
    let raw = base32::decode(base32::Alphabet::Rfc4648Lower { padding: false }, onion)
        .ok_or("onion is not base32")?;
    let (public_key, rest) = raw.split_at(32);
    let (checksum, version) = rest.split_at(2);
    if version != [ONION_V3_VERSION] {
        return Err("onion version is not 3");
    }
    if checksum != onion_checksum(public_key, ONION_V3_VERSION) {
        return Err("onion checksum does not match");
    }
    Ok(())
}

/// RFC 5322 §3.2.3 dot-atom-text: atext runs separated by single dots.
fn is_dot_atom(local: &str) -> bool {
    let is_atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    !local.is_empty()
        && local.len() <= MAX_LOCAL_PART_LEN
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
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
