//! The DNS records the gateway domain needs, written once here so the start-up log and the
//! tests show the same text: MX (RFC 5321 §5.1), SPF (RFC 7208), DKIM (RFC 6376 §3.6.1) and
//! DMARC (RFC 7489 §6.3), each as one zone-file line with absolute names.
//!
//! The gateway greets as its domain, in its MX banner and in EHLO when it sends, so the MX host
//! is the domain itself (which then needs an A or AAAA record at the address where the MX port
//! is published). Every message leaves from an alias at the domain and is DKIM-signed for it,
//! so SPF and DKIM both align strictly and the domain can ask receivers to reject the rest: no
//! one else sends as the gateway domain.

use std::fmt;
use std::net::IpAddr;

/// The longest character-string of a TXT record (RFC 1035 §3.3): longer values, an RSA key's
/// `p=`, are written as several strings, which receivers join (RFC 7208 §3.3, RFC 6376 §3.6.2.2).
const MAX_TXT_STRING: usize = 255;

/// One record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    /// What the record is for: `MX`, `SPF`, `DKIM` or `DMARC`.
    pub purpose: &'static str,
    /// The owner name, absolute (with its final dot).
    pub name: String,
    /// `MX` or `TXT`.
    pub kind: &'static str,
    /// The record data as a zone file writes it (TXT strings quoted).
    pub data: String,
}

impl fmt::Display for DnsRecord {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} {} {}", self.name, self.kind, self.data)
    }
}

/// The records `domain` needs: `dkim` is the DKIM key's `(name, value)` (from
/// [`crate::dkim::Signer::dns_record`]), `smarthost` the relay's host when mail leaves through one
/// (then SPF names the relay rather than the MX host).
pub fn for_domain(
    domain: &str,
    dkim: &(String, String),
    smarthost: Option<&str>,
) -> Vec<DnsRecord> {
    let (dkim_name, dkim_value) = dkim;
    let sender = match smarthost {
        None => "mx".to_owned(),
        Some(host) => match host.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(IpAddr::V4(address)) => format!("ip4:{address}"),
            Ok(IpAddr::V6(address)) => format!("ip6:{address}"),
            Err(_) => format!("a:{}", host.trim_end_matches('.')),
        },
    };
    vec![
        DnsRecord {
            purpose: "MX",
            name: absolute(domain),
            kind: "MX",
            data: format!("10 {}", absolute(domain)),
        },
        DnsRecord {
            purpose: "SPF",
            name: absolute(domain),
            kind: "TXT",
            data: txt(&format!("v=spf1 {sender} -all")),
        },
        DnsRecord {
            purpose: "DKIM",
            name: absolute(dkim_name),
            kind: "TXT",
            data: txt(dkim_value),
        },
        DnsRecord {
            purpose: "DMARC",
            name: absolute(&format!("_dmarc.{domain}")),
            kind: "TXT",
            data: txt("v=DMARC1; p=reject; adkim=s; aspf=s"),
        },
    ]
}

fn absolute(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// A TXT value as quoted character-strings of at most [`MAX_TXT_STRING`] bytes. Every value
/// here is ASCII without quotes or backslashes (base64, tags), so no escaping is needed.
fn txt(value: &str) -> String {
    value
        .as_bytes()
        .chunks(MAX_TXT_STRING)
        .map(|chunk| format!("\"{}\"", String::from_utf8_lossy(chunk)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(records: &[DnsRecord]) -> Vec<String> {
        records.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_gateway_delivering_by_mx_asks_for_four_records() {
        let dkim = (
            "onionpost._domainkey.mail.example.org".to_owned(),
            "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=".to_owned(),
        );
        let records = for_domain("mail.example.org", &dkim, None);
        assert_eq!(
            lines(&records),
            [
                "mail.example.org. MX 10 mail.example.org.",
                "mail.example.org. TXT \"v=spf1 mx -all\"",
                "onionpost._domainkey.mail.example.org. TXT \"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\"",
                "_dmarc.mail.example.org. TXT \"v=DMARC1; p=reject; adkim=s; aspf=s\"",
            ]
        );
        let purposes: Vec<_> = records.iter().map(|record| record.purpose).collect();
        assert_eq!(purposes, ["MX", "SPF", "DKIM", "DMARC"]);
    }

    #[test]
    fn a_long_rsa_key_is_split_into_strings_of_255() {
        let key = "A".repeat(392);
        let dkim = (
            "sel._domainkey.gw.example".to_owned(),
            format!("v=DKIM1; k=rsa; p={key}"),
        );
        let records = for_domain("gw.example.", &dkim, None);
        let first = format!("v=DKIM1; k=rsa; p={}", "A".repeat(255 - 18));
        let rest = "A".repeat(392 - (255 - 18));
        assert_eq!(
            records[2].to_string(),
            format!("sel._domainkey.gw.example. TXT \"{first}\" \"{rest}\"")
        );
        assert_eq!(records[0].to_string(), "gw.example. MX 10 gw.example.");
    }

    #[test]
    fn through_a_smarthost_spf_names_the_relay() {
        let dkim = (
            "s._domainkey.gw.example".to_owned(),
            "v=DKIM1; k=rsa; p=X".to_owned(),
        );
        let spf = |host| for_domain("gw.example", &dkim, Some(host))[1].to_string();
        assert_eq!(
            spf("relay.example.net"),
            "gw.example. TXT \"v=spf1 a:relay.example.net -all\""
        );
        assert_eq!(
            spf("192.0.2.7"),
            "gw.example. TXT \"v=spf1 ip4:192.0.2.7 -all\""
        );
        assert_eq!(
            spf("[2001:db8::7]"),
            "gw.example. TXT \"v=spf1 ip6:2001:db8::7 -all\""
        );
    }
}
