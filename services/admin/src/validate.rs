//! Input checks done here, before any service is called, so a refusal names the field.
//!
//! The owning services check again (they are the authority); these checks exist so an operator
//! learns which field is wrong rather than a service's general refusal.

use onionpost_proto::address::{OnionHost, is_onion_name};

use crate::error::AdminError;

/// Longest login: fits IMAP clients' and SMTP AUTH's comfortable sizes, and a log line.
pub const MAX_LOGIN_LEN: usize = 64;
pub const MIN_PASSWORD_LEN: usize = 8;
pub const MAX_PASSWORD_LEN: usize = 1024;
/// RFC 5321 §4.5.3.1.1.
pub const MAX_LOCAL_PART_LEN: usize = 64;
pub const MAX_DISPLAY_NAME_LEN: usize = 128;
pub const MAX_NAME_LEN: usize = 64;

/// Logins: `[A-Za-z0-9._@+-]{1,64}`, nothing an IMAP client would have to quote.
pub fn login(field: &str, text: &str) -> Result<(), AdminError> {
    if text.is_empty() {
        return Err(AdminError::invalid(field, "must not be empty"));
    }
    if text.chars().count() > MAX_LOGIN_LEN {
        return Err(AdminError::invalid(
            field,
            format!("longer than {MAX_LOGIN_LEN} characters"),
        ));
    }
    if !text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._@+-".contains(c))
    {
        return Err(AdminError::invalid(
            field,
            "only letters, digits and . _ @ + - are allowed",
        ));
    }
    Ok(())
}

pub fn password(field: &str, text: &str) -> Result<(), AdminError> {
    let length = text.chars().count();
    if length < MIN_PASSWORD_LEN {
        return Err(AdminError::invalid(
            field,
            format!("shorter than {MIN_PASSWORD_LEN} characters"),
        ));
    }
    if length > MAX_PASSWORD_LEN {
        return Err(AdminError::invalid(
            field,
            format!("longer than {MAX_PASSWORD_LEN} characters"),
        ));
    }
    Ok(())
}

/// A name for people (display names, token and plan names): bounded, no control characters.
pub fn name(field: &str, text: &str, max: usize, may_be_empty: bool) -> Result<(), AdminError> {
    if text.trim().is_empty() && !may_be_empty {
        return Err(AdminError::invalid(field, "must not be empty"));
    }
    if text.chars().count() > max {
        return Err(AdminError::invalid(
            field,
            format!("longer than {max} characters"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(AdminError::invalid(
            field,
            "must not hold control characters",
        ));
    }
    Ok(())
}

/// The local part of an address: an RFC 5322 dot-atom of at most 64 characters.
pub fn local_part(field: &str, text: &str) -> Result<(), AdminError> {
    if text.is_empty() || text.len() > MAX_LOCAL_PART_LEN {
        return Err(AdminError::invalid(
            field,
            format!("must be 1 to {MAX_LOCAL_PART_LEN} characters"),
        ));
    }
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    if text
        .split('.')
        .any(|atom| atom.is_empty() || !atom.chars().all(atext))
    {
        return Err(AdminError::invalid(
            field,
            "not a dot-atom (letters, digits and !#$%&'*+-/=?^_`{|}~, dots between)",
        ));
    }
    Ok(())
}

/// A v3 onion host, `[labels.]<56 base32>.onion`, with its checksum verified by the
/// carrier-wide parser (`onionpost_proto::address`). Returns the canonical `<56 base32>.onion`.
pub fn onion_host(field: &str, text: &str) -> Result<String, AdminError> {
    OnionHost::parse(text.trim())
        .map(|host| host.to_string())
        .map_err(|error| AdminError::invalid(field, error.to_string()))
}

/// An address `local@<onion>`, or for gateway correspondents a clearnet address.
pub fn address(field: &str, text: &str) -> Result<(), AdminError> {
    let (local, domain) = text
        .rsplit_once('@')
        .ok_or_else(|| AdminError::invalid(field, "not an address (no @)"))?;
    local_part(field, local)?;
    if is_onion_name(domain) {
        onion_host(field, domain)?;
    } else if domain.is_empty()
        || !domain.contains('.')
        || !domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    {
        return Err(AdminError::invalid(field, "not a valid domain"));
    }
    Ok(())
}

/// An OpenPGP fingerprint: 40 (v4) or 64 (v6) hex digits; returned in upper case.
pub fn fingerprint(field: &str, text: &str) -> Result<String, AdminError> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if !(compact.len() == 40 || compact.len() == 64)
        || !compact.chars().all(|c| c.is_ascii_hexdigit())
    {
        return Err(AdminError::invalid(
            field,
            "not an OpenPGP fingerprint (40 or 64 hex digits)",
        ));
    }
    Ok(compact.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tor's own example address (rend-spec-v3 §6 test vector, used in tor's unit tests).
    const GOOD: &str = "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd.onion";

    #[test]
    fn onion_checksums_are_verified() {
        assert_eq!(onion_host("onion", GOOD).unwrap(), GOOD);
        assert_eq!(
            onion_host("onion", &format!("mail.{}", GOOD.to_uppercase())).unwrap(),
            GOOD
        );
        // One character changed: same length, still base32, wrong checksum.
        let bad = GOOD.replacen('p', "q", 1);
        let error = onion_host("carriers[0]", &bad).unwrap_err();
        assert!(error.to_string().contains("checksum"), "{error}");
        assert_eq!(error.problem().field.as_deref(), Some("carriers[0]"));
        assert!(onion_host("onion", "short.onion").is_err());
        assert!(onion_host("onion", "example.com").is_err());
    }

    #[test]
    fn shared_address_forms_admin_validator_canonicalises_every_spelling_and_refuses_bad_ones() {
        use onionpost_proto::address::{OnionHost, examples};
        let host = OnionHost::parse(GOOD).unwrap();
        for form in examples::accepted_forms(&host) {
            assert_eq!(onion_host("onion", &form).unwrap(), GOOD, "{form}");
            assert!(
                address("address", &format!("alice@{form}")).is_ok(),
                "{form}"
            );
        }
        for (form, kind) in examples::refused_forms(&host) {
            let error = onion_host("onion", &form).unwrap_err();
            assert!(
                error.to_string().contains(&kind.to_string()),
                "{form}: {error}"
            );
            assert!(
                address("address", &format!("alice@{form}")).is_err(),
                "{form}"
            );
        }
    }

    #[test]
    fn logins_and_local_parts() {
        assert!(login("login", "alice.b+x@home").is_ok());
        assert!(login("login", &"a".repeat(65)).is_err());
        assert!(login("login", "").is_err());
        assert!(login("login", "a b").is_err());
        assert!(local_part("local_part", "alice.b").is_ok());
        assert!(local_part("local_part", ".alice").is_err());
        assert!(local_part("local_part", "a..b").is_err());
        assert!(address("address", &format!("bob@{GOOD}")).is_ok());
        assert!(address("address", "bob@example.org").is_ok());
        assert!(address("address", "bob").is_err());
    }
}
