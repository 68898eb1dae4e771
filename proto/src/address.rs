//! Identity addresses and onion hosts: the one parser every service uses.
//!
//! An identity address is `local@<56 base32>.onion` (design, "Addresses"). The host is a v3
//! onion address (tor rend-spec-v3 §6, "Encoding onion addresses"):
//! `base32(PUBKEY | CHECKSUM | VERSION)` with
//! `CHECKSUM = SHA3-256(".onion checksum" | PUBKEY | VERSION)[..2]` and `VERSION = 0x03`.
//! The checksum is verified, so a mistyped address is refused where it is typed rather than
//! becoming a message retried against a circuit that never completes.
//!
//! What is accepted, and what it becomes:
//! - Case does not matter: host names are case-insensitive (RFC 4343), and base32 is too; the
//!   canonical form is lowercase.
//! - Subdomain labels before the onion (`www.<onion>.onion`) are accepted and dropped: tor
//!   ignores them (rend-spec-v3 §6), so they name the same service. Each label must be a DNS
//!   label of letters, digits and hyphens (RFC 1035 §2.3.1).
//! - One trailing dot (the absolute form of a DNS name, RFC 1034 §3.1) is accepted and dropped.
//! - Local parts are compared without regard to ASCII case, as WKD and Autocrypt do, so an
//!   [`Address`] holds its local part lowercased. It must be an RFC 5322 §3.2.3 dot-atom of at
//!   most 64 octets (RFC 5321 §4.5.3.1.1); quoted local parts are not identity addresses.
//!
//! Each refusal is an [`AddressError`] whose text is a sentence fit for an SMTP, IMAP or HTTP
//! reply; the services choose their own codes for it.

use std::fmt;
use std::str::FromStr;

use sha3::{Digest, Sha3_256};

/// Length of the base32 label of a v3 onion address (35 bytes, rend-spec-v3 §6).
pub const ONION_V3_LABEL_LEN: usize = 56;
/// The version byte of a v3 onion address.
const ONION_V3_VERSION: u8 = 0x03;
const ONION_CHECKSUM_PREFIX: &[u8] = b".onion checksum";
/// RFC 5321 §4.5.3.1.1.
pub const MAX_LOCAL_PART_LEN: usize = 64;
const BASE32: base32::Alphabet = base32::Alphabet::Rfc4648Lower { padding: false };

/// Why a text is not an onion host or an identity address. The display text is a sentence
/// that can be sent back to whoever typed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressError {
    /// No `@`, or nothing after it.
    NotAnAddress,
    /// The local part is empty, too long or not a dot-atom.
    BadLocalPart,
    /// The host does not end in `.onion`, or a label before the onion is not a DNS label.
    NotOnion,
    /// The onion label is not 56 characters (a v2 address, or mistyped).
    WrongLength,
    /// The onion label has characters outside base32 (`a`–`z`, `2`–`7`).
    BadBase32,
    /// The version byte is not 3.
    WrongVersion,
    /// The two checksum bytes do not match the key: a typing error.
    BadChecksum,
}

impl AddressError {
    /// Whether this is about the onion host (as opposed to the address around it).
    pub fn is_host_error(self) -> bool {
        !matches!(
            self,
            AddressError::NotAnAddress | AddressError::BadLocalPart
        )
    }
}

impl fmt::Display for AddressError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            AddressError::NotAnAddress => "not an address (local@<onion>.onion)",
            AddressError::BadLocalPart => {
                "the local part is not valid (letters, digits and !#$%&'*+-/=?^_`{|}~, \
                 dots between, at most 64)"
            }
            AddressError::NotOnion => "the host is not a .onion name",
            AddressError::WrongLength => {
                "not a v3 onion address (56 base32 characters before .onion)"
            }
            AddressError::BadBase32 => "the onion address is not base32 (a-z, 2-7)",
            AddressError::WrongVersion => "the onion address is not version 3",
            AddressError::BadChecksum => "the onion address checksum is wrong (mistyped?)",
        })
    }
}

impl std::error::Error for AddressError {}

/// Whether `domain` names an onion at all (ends in `.onion`, any case, one trailing dot
/// allowed), valid or not. Such a name is never looked up in DNS nor sent to the clearnet: a
/// caller routes it to [`OnionHost::parse`] and refuses it if that fails.
pub fn is_onion_name(domain: &str) -> bool {
    let name = domain.strip_suffix('.').unwrap_or(domain);
    name.len() >= ".onion".len()
        && name[name.len() - ".onion".len()..].eq_ignore_ascii_case(".onion")
}

/// A v3 onion host, checksum verified, in canonical form `<56 base32>.onion`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OnionHost {
    /// `<56 lowercase base32>.onion`.
    canonical: String,
}

impl OnionHost {
    /// Parses `[labels.]<56 base32>.onion[.]` in any case.
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        if !is_onion_name(text) {
            return Err(AddressError::NotOnion);
        }
        let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
        let host = &name[..name.len() - ".onion".len()];
        let (labels, onion) = match host.rsplit_once('.') {
            Some((labels, onion)) => (Some(labels), onion),
            None => (None, host),
        };
        if onion.is_empty() || labels.is_some_and(|labels| !labels.split('.').all(is_dns_label)) {
            return Err(AddressError::NotOnion);
        }
        check_v3_label(onion)?;
        Ok(OnionHost {
            canonical: format!("{onion}.onion"),
        })
    }

    /// The onion host of a v3 onion service with this ed25519 public key.
    pub fn from_ed25519(public_key: &[u8; 32]) -> Self {
        let mut raw = Vec::with_capacity(35);
        raw.extend_from_slice(public_key);
        raw.extend_from_slice(&checksum(public_key, ONION_V3_VERSION));
        raw.push(ONION_V3_VERSION);
        OnionHost {
            canonical: format!("{}.onion", base32::encode(BASE32, &raw)),
        }
    }

    /// `<56 base32>.onion`, the name to hand to tor.
    pub fn as_str(&self) -> &str {
        &self.canonical
    }

    /// The 56 base32 characters, without `.onion`.
    pub fn label(&self) -> &str {
        &self.canonical[..ONION_V3_LABEL_LEN]
    }

    /// The service's ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        let raw = base32::decode(BASE32, self.label()).expect("checked at parse");
        raw[..32].try_into().expect("35 bytes")
    }
}

impl fmt::Display for OnionHost {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.canonical)
    }
}

impl FromStr for OnionHost {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        OnionHost::parse(text)
    }
}

impl AsRef<str> for OnionHost {
    fn as_ref(&self) -> &str {
        &self.canonical
    }
}

/// An identity address: lowercase dot-atom local part and a v3 onion host.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    local: String,
    host: OnionHost,
}

impl Address {
    /// Parses `local@[labels.]<56 base32>.onion[.]`. The host is checked first, so an address
    /// with both wrong says what is wrong with the onion (the likelier typing error).
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        let (local, host) = text.rsplit_once('@').ok_or(AddressError::NotAnAddress)?;
        if host.is_empty() {
            return Err(AddressError::NotAnAddress);
        }
        let host = OnionHost::parse(host)?;
        Address::new(local, host)
    }

    /// `local@host`, with the local part checked and lowercased.
    pub fn new(local: &str, host: OnionHost) -> Result<Self, AddressError> {
        let local = local.to_ascii_lowercase();
        if !is_dot_atom(&local) {
            return Err(AddressError::BadLocalPart);
        }
        Ok(Address { local, host })
    }

    /// The local part, lowercase.
    pub fn local_part(&self) -> &str {
        &self.local
    }

    /// The onion host.
    pub fn host(&self) -> &OnionHost {
        &self.host
    }

    /// Whether `text` names this address (any case, subdomain labels allowed).
    pub fn matches(&self, text: &str) -> bool {
        Address::parse(text).is_ok_and(|other| &other == self)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}@{}", self.local, self.host)
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Address::parse(text)
    }
}

/// Checks a lowercase onion label: length, alphabet, version, checksum (rend-spec-v3 §6).
fn check_v3_label(onion: &str) -> Result<(), AddressError> {
    if onion.len() != ONION_V3_LABEL_LEN {
        return Err(AddressError::WrongLength);
    }
    if !onion
        .bytes()
        .all(|byte| byte.is_ascii_lowercase() || (b'2'..=b'7').contains(&byte))
    {
        return Err(AddressError::BadBase32);
    }
    let raw = base32::decode(BASE32, onion).ok_or(AddressError::BadBase32)?;
    let (public_key, rest) = raw.split_at(32);
    if rest[2] != ONION_V3_VERSION {
        return Err(AddressError::WrongVersion);
    }
    if rest[..2] != checksum(public_key, ONION_V3_VERSION) {
        return Err(AddressError::BadChecksum);
    }
    Ok(())
}

fn checksum(public_key: &[u8], version: u8) -> [u8; 2] {
    let mut hash = Sha3_256::new();
    hash.update(ONION_CHECKSUM_PREFIX);
    hash.update(public_key);
    hash.update([version]);
    let digest = hash.finalize();
    [digest[0], digest[1]]
}

/// RFC 1035 §2.3.1 label: letters, digits and inner hyphens, at most 63 octets.
fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
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

/// Spellings of one onion, for the tests of every service: each form all of them accept (as
/// the same canonical onion), and each form all of them refuse, with the kind of refusal.
pub mod examples {
    use super::{AddressError, BASE32, ONION_V3_VERSION, OnionHost, checksum};

    /// `www.` before it, upper case, a trailing dot, and all three.
    pub fn accepted_forms(host: &OnionHost) -> Vec<String> {
        vec![
            host.to_string(),
            format!("www.{host}"),
            host.as_str().to_ascii_uppercase(),
            format!("{host}."),
            format!("Mail.Www.{}.", host.as_str().to_ascii_uppercase()),
        ]
    }

    /// A changed checksum, another version byte (checksum made for it), a character short, a
    /// character outside base32, and a v2-length name.
    pub fn refused_forms(host: &OnionHost) -> Vec<(String, AddressError)> {
        let raw = base32::decode(BASE32, host.label()).expect("a parsed onion is base32");
        let encode = |raw: &[u8]| format!("{}.onion", base32::encode(BASE32, raw));
        let mut bad_checksum = raw.clone();
        bad_checksum[32] ^= 0x01;
        let mut version_4 = raw.clone();
        version_4[32..34].copy_from_slice(&checksum(&raw[..32], 4));
        version_4[34] = 4;
        debug_assert_ne!(version_4[34], ONION_V3_VERSION);
        let label = host.label();
        vec![
            (encode(&bad_checksum), AddressError::BadChecksum),
            (encode(&version_4), AddressError::WrongVersion),
            (format!("{}.onion", &label[1..]), AddressError::WrongLength),
            (format!("1{}.onion", &label[1..]), AddressError::BadBase32),
            (format!("{}.onion", &label[..16]), AddressError::WrongLength),
        ]
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// tor's own example address (rend-spec-v3 §6 test vector, used in tor's unit tests).
    const TOR_EXAMPLE: &str = "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd.onion";

    /// The raw 35 bytes behind an onion label, to build wrong ones from.
    fn raw_of(host: &OnionHost) -> Vec<u8> {
        base32::decode(BASE32, host.label()).unwrap()
    }

    fn host_from_raw(raw: &[u8]) -> String {
        format!("{}.onion", base32::encode(BASE32, raw))
    }

    #[test]
    fn known_v3_addresses_are_accepted() {
        assert_eq!(OnionHost::parse(TOR_EXAMPLE).unwrap().as_str(), TOR_EXAMPLE);
        // The Tor Project's own onion site.
        let real = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion";
        assert!(OnionHost::parse(real).is_ok());
    }

    #[test]
    fn labels_case_and_trailing_dot_are_canonicalised() {
        let upper = TOR_EXAMPLE.to_uppercase();
        for text in [
            format!("www.{TOR_EXAMPLE}"),
            format!("a.b-c.{upper}"),
            format!("{TOR_EXAMPLE}."),
            format!("Mail.{upper}."),
        ] {
            assert_eq!(
                OnionHost::parse(&text).unwrap().as_str(),
                TOR_EXAMPLE,
                "{text}"
            );
        }
        let address = Address::parse(&format!("Alice@www.{upper}")).unwrap();
        assert_eq!(address.to_string(), format!("alice@{TOR_EXAMPLE}"));
        assert_eq!(address.local_part(), "alice");
        assert!(address.matches(&format!("ALICE@{TOR_EXAMPLE}.")));
    }

    #[test]
    fn each_bad_form_has_its_own_kind() {
        let good = OnionHost::parse(TOR_EXAMPLE).unwrap();
        let label = good.label();
        let cases = [
            ("example.org".to_owned(), AddressError::NotOnion),
            ("127.0.0.1".to_owned(), AddressError::NotOnion),
            (".onion".to_owned(), AddressError::NotOnion),
            (format!("..{TOR_EXAMPLE}"), AddressError::NotOnion),
            (format!("w w.{TOR_EXAMPLE}"), AddressError::NotOnion),
            (format!("{TOR_EXAMPLE}.."), AddressError::NotOnion),
            (format!("{TOR_EXAMPLE}.example.org"), AddressError::NotOnion),
            (
                "expyuzz4wqqyqhjn.onion".to_owned(),
                AddressError::WrongLength,
            ),
            (format!("{label}a.onion"), AddressError::WrongLength),
            (format!("{}1.onion", &label[1..]), AddressError::BadBase32),
            (TOR_EXAMPLE.replacen('p', "q", 1), AddressError::BadChecksum),
        ];
        for (text, kind) in cases {
            assert_eq!(OnionHost::parse(&text), Err(kind), "{text}");
        }
        let mut raw = raw_of(&good);
        raw[34] = 4;
        assert_eq!(
            OnionHost::parse(&host_from_raw(&raw)),
            Err(AddressError::WrongVersion)
        );
    }

    #[test]
    fn bad_addresses_are_refused() {
        for (text, kind) in [
            ("alice".to_owned(), AddressError::NotAnAddress),
            ("alice@".to_owned(), AddressError::NotAnAddress),
            (format!("@{TOR_EXAMPLE}"), AddressError::BadLocalPart),
            (format!("al..ice@{TOR_EXAMPLE}"), AddressError::BadLocalPart),
            (format!("al ice@{TOR_EXAMPLE}"), AddressError::BadLocalPart),
            (
                format!("{}@{TOR_EXAMPLE}", "a".repeat(65)),
                AddressError::BadLocalPart,
            ),
            ("alice@example.org".to_owned(), AddressError::NotOnion),
            ("alice@abc.onion".to_owned(), AddressError::WrongLength),
        ] {
            assert_eq!(Address::parse(&text), Err(kind), "{text}");
        }
    }

    #[test]
    fn the_examples_for_other_services_are_what_they_claim() {
        let host = OnionHost::from_ed25519(&[9; 32]);
        for form in examples::accepted_forms(&host) {
            assert_eq!(OnionHost::parse(&form).as_ref(), Ok(&host), "{form}");
        }
        for (form, kind) in examples::refused_forms(&host) {
            assert_eq!(OnionHost::parse(&form), Err(kind), "{form}");
        }
    }

    #[test]
    fn onion_names_are_told_apart_from_other_names() {
        assert!(is_onion_name("x.onion"));
        assert!(is_onion_name("X.ONION."));
        assert!(!is_onion_name("onion"));
        assert!(!is_onion_name("x.onion.example.org"));
        assert!(!is_onion_name("example.org"));
    }

    /// Lowercase or uppercase each character by the matching bit.
    fn mix_case(text: &str, mask: &[bool]) -> String {
        text.chars()
            .zip(mask.iter().cycle())
            .map(|(c, upper)| if *upper { c.to_ascii_uppercase() } else { c })
            .collect()
    }

    proptest! {
        #[test]
        fn every_accepted_form_round_trips(
            key in any::<[u8; 32]>(),
            labels in proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", 0..3),
            mask in proptest::collection::vec(any::<bool>(), 1..16),
            trailing_dot in any::<bool>(),
            local in "[a-z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\\.[a-z0-9_-]{1,10}){0,2}",
        ) {
            let host = OnionHost::from_ed25519(&key);
            prop_assert_eq!(host.public_key(), key);
            let reparsed = OnionHost::parse(host.as_str());
            prop_assert_eq!(reparsed.as_ref(), Ok(&host));
            let mut written = String::new();
            for label in &labels {
                written.push_str(label);
                written.push('.');
            }
            written.push_str(host.as_str());
            if trailing_dot {
                written.push('.');
            }
            let written = mix_case(&written, &mask);
            let parsed = OnionHost::parse(&written);
            prop_assert_eq!(parsed.as_ref(), Ok(&host));
            let address = Address::parse(&format!("{}@{written}", mix_case(&local, &mask)))
                .unwrap();
            prop_assert_eq!(address.local_part(), local.as_str());
            prop_assert_eq!(address.host(), &host);
            let reparsed = address.to_string().parse::<Address>();
            prop_assert_eq!(reparsed.as_ref(), Ok(&address));
        }

        #[test]
        fn a_changed_checksum_is_refused(key in any::<[u8; 32]>(), flip in 1u8..=255, byte in 32usize..34) {
            let mut raw = raw_of(&OnionHost::from_ed25519(&key));
            raw[byte] ^= flip;
            prop_assert_eq!(OnionHost::parse(&host_from_raw(&raw)), Err(AddressError::BadChecksum));
        }

        #[test]
        fn a_changed_key_is_refused(key in any::<[u8; 32]>(), flip in 1u8..=255, byte in 0usize..32) {
            let mut raw = raw_of(&OnionHost::from_ed25519(&key));
            raw[byte] ^= flip;
            // Two checksum bytes: one changed key in 65,536 still matches by chance.
            let checksum_matches = raw[32..34] == checksum(&raw[..32], ONION_V3_VERSION);
            prop_assume!(!checksum_matches);
            prop_assert_eq!(OnionHost::parse(&host_from_raw(&raw)), Err(AddressError::BadChecksum));
        }

        #[test]
        fn another_version_byte_is_refused(key in any::<[u8; 32]>(), version in any::<u8>()) {
            prop_assume!(version != ONION_V3_VERSION);
            let mut raw = raw_of(&OnionHost::from_ed25519(&key));
            // Even with the checksum recomputed for that version, only version 3 is taken.
            let made_for_version = checksum(&raw[..32], version);
            raw[32..34].copy_from_slice(&made_for_version);
            raw[34] = version;
            prop_assert_eq!(OnionHost::parse(&host_from_raw(&raw)), Err(AddressError::WrongVersion));
        }

        #[test]
        fn a_wrong_length_is_refused(key in any::<[u8; 32]>(), cut in 1usize..56, extra in "[a-z2-7]{1,8}") {
            let host = OnionHost::from_ed25519(&key);
            let shorter = format!("{}.onion", &host.label()[..ONION_V3_LABEL_LEN - cut]);
            let longer = format!("{}{extra}.onion", host.label());
            prop_assert_eq!(OnionHost::parse(&shorter), Err(AddressError::WrongLength));
            prop_assert_eq!(OnionHost::parse(&longer), Err(AddressError::WrongLength));
        }
    }
}
