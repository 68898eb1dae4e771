//! Aliases: `<local part>@<gateway domain>`, one per identity and correspondent.
//!
//! The local part is 26 characters of lower-case base32 over 128 random bits: unguessable, well
//! inside RFC 5321's 64-octet limit, and the same for every identity, so an alias says nothing
//! about who stands behind it. It is reversible only through the gateway's store.

use onionpost_proto::address::is_onion_name;

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

/// Whether `address` is at a `.onion` name, valid onion or not (never sent to the clearnet,
/// never looked up in DNS): `onionpost_proto::address::is_onion_name`.
pub fn is_onion(address: &str) -> bool {
    normalize(address)
        .rsplit_once('@')
        .is_some_and(|(_, host)| is_onion_name(host))
}

/// Whether `host` is an IP address written as a name (`127.0.0.1`): no top-level domain is all
/// digits (RFC 3696 §2), so such a host is an address, and the gateway never connects to an
/// address a sender typed (it could be one inside the carrier's network).
pub fn is_ip_like(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    host.parse::<std::net::IpAddr>().is_ok()
        || host
            .rsplit('.')
            .next()
            .is_some_and(|tld| !tld.is_empty() && tld.bytes().all(|b| b.is_ascii_digit()))
}

/// A plausible clearnet mailbox: one `@`, a non-empty local part, a dotted host of letters,
/// digits and hyphens, not an onion and not an IP address (nor an address literal, RFC 5321
/// §4.1.3: its brackets are no host characters).
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
        && !is_ip_like(host)
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
    fn shared_address_forms_gateway_keeps_every_onion_spelling_off_the_clearnet() {
        use onionpost_proto::address::{OnionHost, examples};
        let host = OnionHost::from_ed25519(&[b'g'; 32]);
        let refused = examples::refused_forms(&host)
            .into_iter()
            .map(|(form, _)| form);
        for form in examples::accepted_forms(&host).into_iter().chain(refused) {
            let address = format!("alice@{form}");
            assert!(is_onion(&address), "{address}");
            assert!(!is_clearnet_mailbox(&address), "{address}");
        }
    }

    #[test]
    fn ip_addresses_and_address_literals_are_no_clearnet_mailboxes() {
        for address in [
            "x@127.0.0.1",
            "x@127.0.0.1.",
            "x@10.1.2.3",
            "x@[127.0.0.1]",
            "x@[IPv6:::1]",
            "x@0x7f.0.0.1",
            "x@2130706433",
        ] {
            assert!(!is_clearnet_mailbox(address), "{address}");
        }
        assert!(is_ip_like("192.168.0.1"));
        assert!(!is_ip_like("mx1.example.test"));
        assert!(is_clearnet_mailbox("x@123.example.test"));
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
