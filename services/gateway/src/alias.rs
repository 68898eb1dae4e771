//! Aliases: `<local part>@<gateway domain>`, one per identity and correspondent.
//!
//! The local part is 26 characters of lower-case base32 over 128 random bits: unguessable, well
//! inside RFC 5321's 64-octet limit, and the same for every identity, so an alias says nothing
//! about who stands behind it. It is reversible only through the gateway's store.

/// Characters in a local part.
pub const LOCAL_PART_LEN: usize = 26;

/// A fresh random local part.
pub fn new_local_part() -> String {
    let bytes: [u8; 16] = rand::random();
    base32::encode(base32::Alphabet::Rfc4648 { padding: false }, &bytes).to_ascii_lowercase()
}

/// Whether `local` could be a local part this gateway made (before any lookup, so made-up
/// strings never reach the store).
pub fn is_well_formed(local: &str) -> bool {
    local.len() == LOCAL_PART_LEN
        && local
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || (b'2'..=b'7').contains(&byte))
}

/// The local part of `address` when it is `<local>@<domain>` (domain compared without case).
pub fn local_part_of(address: &str, domain: &str) -> Option<String> {
    let address = address.trim().trim_start_matches('<').trim_end_matches('>');
    let (local, host) = address.rsplit_once('@')?;
    if !host.trim_end_matches('.').eq_ignore_ascii_case(domain) {
        return None;
    }
    let local = local.to_ascii_lowercase();
    is_well_formed(&local).then_some(local)
}

/// An address as the gateway compares it: angle brackets and spaces off, lower case.
pub fn normalize(address: &str) -> String {
    address
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_ascii_lowercase()
}

/// Whether `address` is at a `.onion` host (never sent to the clearnet, never looked up in DNS).
pub fn is_onion(address: &str) -> bool {
    normalize(address)
        .rsplit_once('@')
        .is_some_and(|(_, host)| host.trim_end_matches('.').ends_with(".onion"))
}

/// A plausible clearnet mailbox: one `@`, a non-empty local part, a dotted host of letters,
/// digits and hyphens, not an onion.
pub fn is_clearnet_mailbox(address: &str) -> bool {
    let address = normalize(address);
    let Some((local, host)) = address.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && !local.contains(['<', '>', ' ', '@'])
        && host.contains('.')
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && !is_onion(&address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_parts_are_random_well_formed_and_fit_the_limit() {
        let first = new_local_part();
        let second = new_local_part();
        assert_ne!(first, second);
        assert_eq!(first.len(), LOCAL_PART_LEN);
        assert!(first.len() <= 64);
        assert!(is_well_formed(&first));
        assert!(!is_well_formed("postmaster"));
        assert!(!is_well_formed(&first.to_ascii_uppercase()));
    }

    #[test]
    fn addresses_are_matched_against_the_gateway_domain() {
        let local = new_local_part();
        let address = format!("<{}@GW.Example.>", local.to_ascii_uppercase());
        assert_eq!(local_part_of(&address, "gw.example"), Some(local.clone()));
        assert_eq!(
            local_part_of(&format!("{local}@other.example"), "gw.example"),
            None
        );
        assert_eq!(local_part_of("postmaster@gw.example", "gw.example"), None);
    }

    #[test]
    fn onion_and_clearnet_addresses_are_told_apart() {
        let onion = format!("alice@{}.onion", "a".repeat(56));
        assert!(is_onion(&onion));
        assert!(!is_clearnet_mailbox(&onion));
        assert!(is_clearnet_mailbox("David@Example.test"));
        assert!(!is_clearnet_mailbox("david@localhost"));
        assert!(!is_clearnet_mailbox("no-at-sign"));
        assert!(!is_clearnet_mailbox("a@b..c"));
    }
}
