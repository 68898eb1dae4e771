//! Autocrypt Level 1 headers (<https://autocrypt.org/level1.html>, §2.1 and §2.3).
//!
//! Every outgoing message carries `Autocrypt: addr=...; prefer-encrypt=mutual; keydata=...` in
//! its outer header (design, "Keys bound to the onion"). The keydata is the sender's minimal
//! certificate: primary key, the user ID of `addr` (with any key-transition certifications on
//! it, see `pinning`), and the current encryption subkey.
//!
//! Incoming headers are parsed by the Level 1 rules: `addr` and `keydata` are required, only
//! `mutual` is a recognised `prefer-encrypt` value, attributes starting with `_` are ignored and
//! any other unknown attribute makes the header invalid. [`AutocryptHeader::from_message`] then
//! applies §2.3: a header counts only if its `addr` is the From address, and a message with more
//! than one such header teaches nothing. What to do with the key is the pinning rule's business.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sequoia_openpgp::Cert;
use sequoia_openpgp::serialize::SerializeInto;

use crate::certs::{POLICY, check_can_encrypt_to, userid_address};
use crate::mime::Entity;
use crate::{Address, IdentityKey, KeysError};

/// Header lines are folded before this many characters (RFC 5322 §2.1.1 recommends 78).
const FOLD_WIDTH: usize = 76;

/// The sender's `prefer-encrypt` setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreferEncrypt {
    /// `prefer-encrypt=mutual`: encrypt whenever both sides say so. What onionpost identities
    /// always send, since end-to-end encryption is required between onions.
    Mutual,
    /// No `prefer-encrypt` attribute (or a value other than `mutual`).
    NoPreference,
}

/// One Autocrypt header: who, their preference, their key.
#[derive(Clone, Debug)]
pub struct AutocryptHeader {
    /// The `addr` attribute.
    pub addr: Address,
    /// The `prefer-encrypt` attribute.
    pub prefer_encrypt: PreferEncrypt,
    /// The certificate from `keydata`.
    pub cert: Cert,
}

impl AutocryptHeader {
    /// The header an identity puts on its outgoing mail.
    pub fn for_identity(key: &IdentityKey) -> Result<Self, KeysError> {
        AutocryptHeader::new(
            key.address().clone(),
            &key.public_cert(),
            PreferEncrypt::Mutual,
        )
    }

    /// A header for `addr` carrying the minimal form of `cert` (see the module documentation).
    pub fn new(
        addr: Address,
        cert: &Cert,
        prefer_encrypt: PreferEncrypt,
    ) -> Result<Self, KeysError> {
        check_can_encrypt_to(cert)?;
        let valid = cert.with_policy(&POLICY, None).map_err(KeysError::crypto)?;
        let newest_encryption_key = valid
            .keys()
            .subkeys()
            .supported()
            .alive()
            .revoked(false)
            .for_transport_encryption()
            .max_by_key(|ka| ka.key().creation_time())
            .map(|ka| ka.key().fingerprint());
        let minimal = cert
            .clone()
            .strip_secret_key_material()
            .retain_userids(|uid| userid_address(uid.userid()).as_ref() == Some(&addr))
            .retain_subkeys(|ka| Some(ka.key().fingerprint()) == newest_encryption_key);
        if minimal.userids().next().is_none() {
            return Err(KeysError::AddressNotBound(addr.to_string()));
        }
        Ok(AutocryptHeader {
            addr,
            prefer_encrypt,
            cert: minimal,
        })
    }

    /// The header's value, unfolded: `addr=...; prefer-encrypt=mutual; keydata=...`.
    pub fn value(&self) -> Result<String, KeysError> {
        let keydata = BASE64.encode(self.cert.export_to_vec().map_err(KeysError::crypto)?);
        let prefer = match self.prefer_encrypt {
            PreferEncrypt::Mutual => " prefer-encrypt=mutual;",
            PreferEncrypt::NoPreference => "",
        };
        Ok(format!("addr={};{prefer} keydata={keydata}", self.addr))
    }

    /// The whole header field, folded (CRLF and a space) between attributes and within keydata
    /// so that no line but the `addr` one exceeds 78 characters; without a final CRLF.
    pub fn to_header_field(&self) -> Result<String, KeysError> {
        let value = self.value()?;
        let (head, keydata) = value
            .split_once("keydata=")
            .expect("value() always writes keydata");
        // One attribute a line: an onion address alone nearly fills a line.
        let head = head.trim_end().replace("; ", ";\r\n ");
        let mut out = format!("Autocrypt: {head}\r\n keydata=");
        for chunk in keydata.as_bytes().chunks(FOLD_WIDTH) {
            out.push_str("\r\n ");
            out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        }
        Ok(out)
    }

    /// Parses a header value (folded or not).
    pub fn parse(value: &str) -> Result<Self, KeysError> {
        let malformed = |why: String| KeysError::MalformedAutocrypt(why);
        let mut addr = None;
        let mut prefer_encrypt = PreferEncrypt::NoPreference;
        let mut keydata = None;
        for attribute in value.split(';') {
            let attribute = attribute.trim();
            if attribute.is_empty() {
                continue;
            }
            let (name, attr_value) = attribute
                .split_once('=')
                .ok_or_else(|| malformed(format!("attribute without value: {attribute:.20}")))?;
            let name = name.trim();
            match name {
                "addr" => addr = Some(attr_value.trim()),
                "prefer-encrypt" if attr_value.trim() == "mutual" => {
                    prefer_encrypt = PreferEncrypt::Mutual;
                }
                "prefer-encrypt" => {}
                "keydata" => keydata = Some(attr_value),
                ignored if ignored.starts_with('_') => {}
                unknown => return Err(malformed(format!("unknown critical attribute {unknown}"))),
            }
        }
        let addr = addr.ok_or_else(|| malformed("no addr".into()))?;
        let addr = Address::parse(addr).map_err(|error| malformed(error.to_string()))?;
        let keydata = keydata.ok_or_else(|| malformed("no keydata".into()))?;
        let compact: String = keydata.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = BASE64
            .decode(compact)
            .map_err(|error| malformed(format!("keydata is not base64: {error}")))?;
        let cert = crate::parse_cert(&bytes)?;
        check_can_encrypt_to(&cert)?;
        Ok(AutocryptHeader {
            addr,
            prefer_encrypt,
            cert,
        })
    }

    /// The Autocrypt header of a received message, by §2.3: `None` when there is none, when
    /// none is valid and names the From address, or when more than one does.
    pub fn from_message(message: &[u8]) -> Result<Option<Self>, KeysError> {
        let entity = Entity::parse(message).map_err(KeysError::MalformedMessage)?;
        let Some(from) = entity.field("From").map(|field| field.value()) else {
            return Ok(None);
        };
        let from = match (from.rfind('<'), from.rfind('>')) {
            (Some(start), Some(end)) if start < end => from[start + 1..end].to_owned(),
            _ => from,
        };
        let Ok(from) = Address::parse(from.trim()) else {
            return Ok(None);
        };
        let mut found: Vec<AutocryptHeader> = entity
            .fields
            .iter()
            .filter(|field| field.is("Autocrypt"))
            .filter_map(|field| AutocryptHeader::parse(&field.value()).ok())
            .filter(|header| header.addr == from)
            .collect();
        if found.len() == 1 {
            Ok(found.pop())
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use sequoia_openpgp::cert::prelude::*;

    use super::*;
    use crate::identity_key::tests::{alice, bob};

    #[test]
    fn header_round_trip() {
        let header = AutocryptHeader::for_identity(alice()).unwrap();
        let field = header.to_header_field().unwrap();
        assert!(field.starts_with(&format!(
            "Autocrypt: addr={};\r\n prefer-encrypt=mutual;\r\n keydata=\r\n ",
            alice().address()
        )));
        assert!(field.split("\r\n").skip(1).all(|line| line.len() <= 78));

        let value = field.strip_prefix("Autocrypt: ").unwrap();
        let parsed = AutocryptHeader::parse(value).unwrap();
        assert_eq!(&parsed.addr, alice().address());
        assert_eq!(parsed.prefer_encrypt, PreferEncrypt::Mutual);
        assert_eq!(parsed.cert.fingerprint(), alice().fingerprint());
        assert!(!parsed.cert.is_tsk());
    }

    #[test]
    fn keydata_is_minimal() {
        // A key with an extra user ID and an extra signing subkey: both are left out.
        let address = alice().address().clone();
        let (cert, _) = CertBuilder::new()
            .add_userid(address.to_string())
            .add_userid("Alice <alice@example.org>")
            .add_signing_subkey()
            .add_transport_encryption_subkey()
            .generate()
            .unwrap();
        let header = AutocryptHeader::new(address, &cert, PreferEncrypt::NoPreference).unwrap();
        assert_eq!(header.cert.userids().count(), 1);
        assert_eq!(header.cert.keys().subkeys().count(), 1);
        assert!(!header.value().unwrap().contains("prefer-encrypt"));
    }

    #[test]
    fn parse_rules() {
        let good = AutocryptHeader::for_identity(alice())
            .unwrap()
            .value()
            .unwrap();
        let keydata = good.split_once("keydata=").unwrap().1;
        let addr = alice().address();

        let with_ignored = format!("addr={addr}; _extra=1; keydata={keydata}");
        assert!(AutocryptHeader::parse(&with_ignored).is_ok());

        let unknown_critical = format!("addr={addr}; color=blue; keydata={keydata}");
        assert!(matches!(
            AutocryptHeader::parse(&unknown_critical),
            Err(KeysError::MalformedAutocrypt(_))
        ));
        assert!(matches!(
            AutocryptHeader::parse(&format!("keydata={keydata}")),
            Err(KeysError::MalformedAutocrypt(_))
        ));
        assert!(matches!(
            AutocryptHeader::parse(&format!("addr={addr}")),
            Err(KeysError::MalformedAutocrypt(_))
        ));
        assert!(matches!(
            AutocryptHeader::parse(&format!("addr={addr}; keydata=!!!")),
            Err(KeysError::MalformedAutocrypt(_))
        ));
        assert!(matches!(
            AutocryptHeader::parse(&format!("addr={addr}; keydata=AAAAAAAA")),
            Err(KeysError::MalformedKey(_))
        ));
        let prefer_other = format!("addr={addr}; prefer-encrypt=always; keydata={keydata}");
        assert_eq!(
            AutocryptHeader::parse(&prefer_other)
                .unwrap()
                .prefer_encrypt,
            PreferEncrypt::NoPreference
        );
    }

    #[test]
    fn from_message_applies_the_from_rule() {
        let alice_field = AutocryptHeader::for_identity(alice())
            .unwrap()
            .to_header_field()
            .unwrap();
        let bob_field = AutocryptHeader::for_identity(bob())
            .unwrap()
            .to_header_field()
            .unwrap();
        let message = |from: &str, fields: &[&str]| {
            format!(
                "From: Alice <{from}>\r\n{}\r\n\r\nbody\r\n",
                fields.join("\r\n")
            )
            .into_bytes()
        };
        let from_alice = alice().address().to_string();

        let learned = AutocryptHeader::from_message(&message(&from_alice, &[&alice_field]))
            .unwrap()
            .unwrap();
        assert_eq!(learned.cert.fingerprint(), alice().fingerprint());

        // Bob's header on Alice's mail teaches nothing.
        assert!(
            AutocryptHeader::from_message(&message(&from_alice, &[&bob_field]))
                .unwrap()
                .is_none()
        );
        // Two headers for the From address: ambiguous, ignored.
        assert!(
            AutocryptHeader::from_message(&message(&from_alice, &[&alice_field, &alice_field]))
                .unwrap()
                .is_none()
        );
        assert!(
            AutocryptHeader::from_message(&message(&from_alice, &[]))
                .unwrap()
                .is_none()
        );
    }
}
