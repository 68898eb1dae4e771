//! An identity's preferred carriers, as it publishes them (design.md, "Carriers"): the onions
//! it asks correspondents to hand its mail to while it is offline. The list is a short text
//! signed by the identity's key ([`crate::statement`], binary), served next to the key by WKD
//! over the identity's own onion ([`crate::wkd`]) and carried in its Autocrypt-bearing mail
//! (the `Onionpost-Carriers` header inside the encrypted part, [`HEADER`]). Whoever reads it
//! checks it against the key pinned for the identity; a newer list replaces an older one.
//!
//! ```text
//! onionpost-carrier-list: 1
//! identity: alice@<56 base32>.onion
//! signed-at: 1795000000
//! carrier: <56 base32>.onion
//! carrier: <56 base32>.onion
//! ```

use base64::Engine as _;
use sequoia_openpgp::Cert;

use crate::mime::Entity;
use crate::statement::{self as signed_text, Encoding};
use crate::{Address, IdentityKey, KeysError};

const VERSION_LINE: &str = "onionpost-carrier-list: 1";
/// The header that carries the signed list (base64) inside an identity's encrypted mail.
pub const HEADER: &str = "Onionpost-Carriers";
/// Carriers one list may name; more would only make a sender's fan-out a flood.
pub const MAX_CARRIERS: usize = 16;
/// A signed list larger than this is refused (sixteen carriers and a signature are ~1.5 KiB).
pub const MAX_SIGNED_BYTES: usize = 8 * 1024;

/// The content of a carrier list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarrierList {
    pub identity: Address,
    /// Seconds since the Unix epoch.
    pub signed_at: i64,
    /// Carrier onion hosts, `<56 base32>.onion`, in order of preference.
    pub carriers: Vec<String>,
}

fn malformed(why: &str) -> KeysError {
    KeysError::MalformedMessage(format!("carrier list: {why}"))
}

fn onion_host(text: &str) -> Result<String, KeysError> {
    Address::canonical_onion_host(text)
        .ok_or_else(|| malformed(&format!("not a v3 onion host: {text:?}")))
}

impl CarrierList {
    fn to_text(&self) -> String {
        let mut text = format!(
            "{VERSION_LINE}\nidentity: {}\nsigned-at: {}\n",
            self.identity, self.signed_at
        );
        for carrier in &self.carriers {
            text.push_str(&format!("carrier: {carrier}\n"));
        }
        text
    }

    fn parse(text: &str) -> Result<Self, KeysError> {
        let mut lines = text.lines();
        if lines.next() != Some(VERSION_LINE) {
            return Err(malformed("unknown version"));
        }
        let (mut identity, mut signed_at, mut carriers) = (None, None, Vec::new());
        for line in lines {
            let (name, value) = line
                .split_once(": ")
                .ok_or_else(|| malformed("a line is not `name: value`"))?;
            match name {
                "identity" => identity = Some(Address::parse(value)?),
                "signed-at" => {
                    signed_at = Some(
                        value
                            .parse::<i64>()
                            .map_err(|_| malformed("not a number"))?,
                    );
                }
                "carrier" => {
                    let host = onion_host(value)?;
                    if !carriers.contains(&host) {
                        carriers.push(host);
                    }
                }
                _ => return Err(malformed("unknown field")),
            }
        }
        if carriers.len() > MAX_CARRIERS {
            return Err(malformed(&format!("more than {MAX_CARRIERS} carriers")));
        }
        Ok(CarrierList {
            identity: identity.ok_or_else(|| malformed("no identity"))?,
            signed_at: signed_at.ok_or_else(|| malformed("no signed-at"))?,
            carriers,
        })
    }
}

/// The `signed_at` (seconds) of a list that replaces one signed at `previous`: now, and newer
/// than the one before even within a second, since a correspondent keeps only the newest list
/// it has seen.
pub fn next_signed_at(previous: i64) -> i64 {
    onionpost_runtime::time::now_ms()
        .div_euclid(1000)
        .max(previous.saturating_add(1))
}

/// Signs `list` with the identity's key; its identity must be the key's address.
pub fn sign(key: &IdentityKey, list: &CarrierList) -> Result<Vec<u8>, KeysError> {
    if &list.identity != key.address() {
        return Err(KeysError::AddressNotBound(list.identity.to_string()));
    }
    if list.carriers.len() > MAX_CARRIERS {
        return Err(malformed(&format!("more than {MAX_CARRIERS} carriers")));
    }
    signed_text::sign(key, &list.to_text(), Encoding::Binary)
}

/// Reads a list without checking its signature (a list this carrier signed and stored).
pub fn peek(signed: &[u8]) -> Result<CarrierList, KeysError> {
    CarrierList::parse(&signed_text::peek(signed)?)
}

/// Verifies a signed list against `cert`, the key pinned for `identity`, and returns it. A list
/// signed for another identity (even by the same key) is refused: it is not this one's.
pub fn verify(signed: &[u8], cert: &Cert, identity: &Address) -> Result<CarrierList, KeysError> {
    if signed.len() > MAX_SIGNED_BYTES {
        return Err(malformed(&format!("over {MAX_SIGNED_BYTES} bytes")));
    }
    let (text, signer) = signed_text::verify(signed, cert)?;
    let list = CarrierList::parse(&text)?;
    if &list.identity != identity || !crate::cert_holds_address(cert, identity) {
        return Err(KeysError::SenderMismatch {
            signer: signer.to_hex(),
        });
    }
    Ok(list)
}

/// The header field that carries `signed` in mail: base64, folded so no line passes 78
/// characters (RFC 5322 §2.1.1).
pub fn header_field(signed: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(signed);
    let mut field = format!("{HEADER}: ");
    // The first line already holds the name; each continuation line starts with a space.
    let first = encoded.len().min(76 - field.len());
    field.push_str(&encoded[..first]);
    for chunk in encoded.as_bytes()[first..].chunks(76) {
        field.push_str("\r\n ");
        field.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
    }
    field
}

/// The signed list in a message's [`HEADER`], if the message's header section has one.
pub fn from_message(message: &[u8]) -> Option<Vec<u8>> {
    let entity = Entity::parse(message).ok()?;
    let value = entity.field(HEADER)?.value();
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .ok()
        .filter(|bytes| bytes.len() <= MAX_SIGNED_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity_key::tests::{alice, bob};

    fn list() -> CarrierList {
        CarrierList {
            identity: alice().address().clone(),
            signed_at: 1_795_000_000,
            carriers: vec![bob().address().onion_host()],
        }
    }

    #[test]
    fn a_signed_list_verifies_for_its_identity_only() {
        let signed = sign(alice(), &list()).unwrap();
        let cert = alice().public_cert();
        assert_eq!(verify(&signed, &cert, alice().address()).unwrap(), list());
        // Bob's key did not sign it; Bob's address is not the identity it names.
        assert!(verify(&signed, &bob().public_cert(), alice().address()).is_err());
        assert!(matches!(
            verify(&signed, &cert, bob().address()),
            Err(KeysError::SenderMismatch { .. })
        ));
        // Bob cannot sign Alice's list.
        assert!(sign(bob(), &list()).is_err());
        // A flipped byte breaks it.
        let mut tampered = signed.clone();
        let middle = tampered.len() / 2;
        tampered[middle] ^= 0x20;
        assert!(verify(&tampered, &cert, alice().address()).is_err());
    }

    #[test]
    fn the_header_round_trips_through_a_message() {
        let signed = sign(alice(), &list()).unwrap();
        let field = header_field(&signed);
        assert!(field.lines().all(|line| line.len() <= 78), "{field}");
        let message = format!("{field}\r\nSubject: hi\r\n\r\nbody\r\n");
        assert_eq!(from_message(message.as_bytes()).unwrap(), signed);
        assert_eq!(from_message(b"Subject: hi\r\n\r\nbody\r\n"), None);
    }

    #[test]
    fn bad_lists_are_refused_with_a_reason() {
        let text = format!(
            "{VERSION_LINE}\nidentity: {}\nsigned-at: 1\ncarrier: example.com\n",
            alice().address()
        );
        let error = CarrierList::parse(&text).unwrap_err();
        assert!(error.to_string().contains("not a v3 onion host"), "{error}");
        let many = CarrierList {
            carriers: (0..=MAX_CARRIERS)
                .map(|n| crate::onion_host_from_ed25519(&[n as u8; 32]))
                .collect(),
            ..list()
        };
        assert!(sign(alice(), &many).is_err());
    }
}
