//! Carry statements: an identity asks a carrier to hold its mail while it is offline, or
//! withdraws that request (design.md, "Carriers"). The statement is a short text, inline-signed
//! by the identity's key and ASCII-armoured ([`crate::statement`]), so the carrier
//! can check it against the key bound to the identity's onion before it agrees to carry.
//!
//! ```text
//! onionpost-carry-statement: 1
//! identity: alice@<56 base32>.onion
//! carrier: <56 base32>.onion
//! kind: request
//! signed-at: 1795000000
//! expires-at: 1797592000
//! ```

use sequoia_openpgp::{Cert, Fingerprint};

use crate::statement::{self as signed_text, Encoding};
use crate::{Address, IdentityKey, KeysError};

const VERSION_LINE: &str = "onionpost-carry-statement: 1";

/// What a statement asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CarryKind {
    Request,
    Withdraw,
}

/// The content of a carry statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarryStatement {
    pub identity: Address,
    /// The carrier's onion host, `<56 base32>.onion`.
    pub carrier: String,
    pub kind: CarryKind,
    /// Seconds since the Unix epoch.
    pub signed_at: i64,
    pub expires_at: Option<i64>,
}

impl CarryStatement {
    fn to_text(&self) -> String {
        let kind = match self.kind {
            CarryKind::Request => "request",
            CarryKind::Withdraw => "withdraw",
        };
        let mut text = format!(
            "{VERSION_LINE}\nidentity: {}\ncarrier: {}\nkind: {kind}\nsigned-at: {}\n",
            self.identity, self.carrier, self.signed_at
        );
        if let Some(expires_at) = self.expires_at {
            text.push_str(&format!("expires-at: {expires_at}\n"));
        }
        text
    }

    fn parse(text: &str) -> Result<Self, KeysError> {
        let malformed = |why: &str| KeysError::MalformedMessage(format!("carry statement: {why}"));
        let mut lines = text.lines();
        if lines.next() != Some(VERSION_LINE) {
            return Err(malformed("unknown version"));
        }
        let (mut identity, mut carrier, mut kind, mut signed_at, mut expires_at) =
            (None, None, None, None, None);
        for line in lines {
            let (name, value) = line
                .split_once(": ")
                .ok_or_else(|| malformed("a line is not `name: value`"))?;
            let number = || value.parse::<i64>().map_err(|_| malformed("not a number"));
            match name {
                "identity" => identity = Some(Address::parse(value)?),
                "carrier" => carrier = Some(value.to_owned()),
                "kind" => {
                    kind = Some(match value {
                        "request" => CarryKind::Request,
                        "withdraw" => CarryKind::Withdraw,
                        _ => return Err(malformed("unknown kind")),
                    });
                }
                "signed-at" => signed_at = Some(number()?),
                "expires-at" => expires_at = Some(number()?),
                _ => return Err(malformed("unknown field")),
            }
        }
        Ok(CarryStatement {
            identity: identity.ok_or_else(|| malformed("no identity"))?,
            carrier: carrier.ok_or_else(|| malformed("no carrier"))?,
            kind: kind.ok_or_else(|| malformed("no kind"))?,
            signed_at: signed_at.ok_or_else(|| malformed("no signed-at"))?,
            expires_at,
        })
    }
}

/// Signs `statement` with the identity's key; its identity must be the key's address.
pub fn sign(key: &IdentityKey, statement: &CarryStatement) -> Result<Vec<u8>, KeysError> {
    if &statement.identity != key.address() {
        return Err(KeysError::AddressNotBound(statement.identity.to_string()));
    }
    signed_text::sign(key, &statement.to_text(), Encoding::Armored)
}

/// Reads a statement without checking its signature, to learn whose key to check it with.
pub fn peek(signed: &[u8]) -> Result<CarryStatement, KeysError> {
    CarryStatement::parse(&signed_text::peek(signed)?)
}

/// Verifies a statement against `cert`, the key bound to the identity it names, and returns
/// it with the signer's fingerprint.
pub fn verify(signed: &[u8], cert: &Cert) -> Result<(CarryStatement, Fingerprint), KeysError> {
    let (text, signer) = signed_text::verify(signed, cert)?;
    let statement = CarryStatement::parse(&text)?;
    if !crate::cert_holds_address(cert, &statement.identity) {
        return Err(KeysError::SenderMismatch {
            signer: signer.to_hex(),
        });
    }
    Ok((statement, signer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity_key::tests::{alice, bob};

    fn statement() -> CarryStatement {
        CarryStatement {
            identity: alice().address().clone(),
            carrier: bob().address().onion_host(),
            kind: CarryKind::Request,
            signed_at: 1_795_000_000,
            expires_at: Some(1_797_592_000),
        }
    }

    #[test]
    fn signed_statement_verifies_against_its_identity_only() {
        let signed = sign(alice(), &statement()).unwrap();
        assert_eq!(peek(&signed).unwrap(), statement());
        let (verified, signer) = verify(&signed, &alice().public_cert()).unwrap();
        assert_eq!(verified, statement());
        assert_eq!(signer, alice().fingerprint());
        assert!(matches!(
            verify(&signed, &bob().public_cert()),
            Err(KeysError::UnknownSigner(_))
        ));
        // Bob cannot sign for Alice.
        assert!(sign(bob(), &statement()).is_err());
    }
}
