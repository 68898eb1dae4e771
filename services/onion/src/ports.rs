//! Which virtual ports an identity's onion opens and where tor forwards them.
//!
//! design.md, "one onion, one identity": the listening service must know which identity's
//! onion a connection came through. Tor forwards each identity's virtual ports to target ports
//! of that identity alone, so the port a connection arrives on names the identity. Every
//! identity owns a *slot*: a block of [`PORTS_PER_SLOT`] consecutive target ports, one per
//! purpose in a fixed order, so opening IMAP for an identity later never moves its SMTP port.
//! Slots are handed out lowest-free-first and freed on revocation.
//!
//! One address holds 2,500 slots in the default range (10000-19999). A carrier hosting more
//! identities gives tor several target addresses (`tor.target_host = 127.0.0.1,127.0.0.2`, or
//! addresses of its pod or container): each address holds the whole port range again, slots
//! filling the first address before the next. Unix-socket targets would need tor and the
//! listeners to share a file system, which separate containers do not.

use std::net::IpAddr;

use onionpost_proto::onion::v1::{PortMapping, PortPurpose};

/// Target ports per identity: one for each [`Purpose`].
pub const PORTS_PER_SLOT: u16 = 4;

/// What a virtual port carries (the contract's `PortPurpose`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Purpose {
    Smtp,
    Wkd,
    Imap,
    Submission,
    /// The account portal, on the carrier's own onion: an onion with no other port, so it
    /// takes the slot position of an identity's WKD port (an identity never has this one).
    Portal,
}

impl Purpose {
    /// Every purpose, in slot order (the portal's shares the WKD position).
    pub const ALL: [Purpose; 5] = [
        Purpose::Smtp,
        Purpose::Wkd,
        Purpose::Imap,
        Purpose::Submission,
        Purpose::Portal,
    ];

    /// What every identity gets when the caller names no purposes: its MX and its key
    /// directory.
    pub const DEFAULT: [Purpose; 2] = [Purpose::Smtp, Purpose::Wkd];

    /// The port peers dial on the onion, fixed by convention.
    pub fn virtual_port(self) -> u16 {
        match self {
            Purpose::Smtp => 25,
            Purpose::Wkd | Purpose::Portal => 80,
            Purpose::Imap => 143,
            Purpose::Submission => 587,
        }
    }

    fn offset(self) -> u16 {
        match self {
            Purpose::Smtp => 0,
            Purpose::Wkd | Purpose::Portal => 1,
            Purpose::Imap => 2,
            Purpose::Submission => 3,
        }
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Smtp => "smtp",
            Purpose::Wkd => "wkd",
            Purpose::Imap => "imap",
            Purpose::Submission => "submission",
            Purpose::Portal => "portal",
        }
    }

    pub fn parse(text: &str) -> Option<Purpose> {
        Purpose::ALL
            .into_iter()
            .find(|purpose| purpose.as_str() == text)
    }

    pub fn to_proto(self) -> PortPurpose {
        match self {
            Purpose::Smtp => PortPurpose::Smtp,
            Purpose::Wkd => PortPurpose::Wkd,
            Purpose::Imap => PortPurpose::Imap,
            Purpose::Submission => PortPurpose::Submission,
            Purpose::Portal => PortPurpose::Portal,
        }
    }

    pub fn from_proto(purpose: PortPurpose) -> Option<Purpose> {
        match purpose {
            PortPurpose::Unspecified => None,
            PortPurpose::Smtp => Some(Purpose::Smtp),
            PortPurpose::Wkd => Some(Purpose::Wkd),
            PortPurpose::Imap => Some(Purpose::Imap),
            PortPurpose::Submission => Some(Purpose::Submission),
            PortPurpose::Portal => Some(Purpose::Portal),
        }
    }
}

/// Where tor forwards identities' virtual ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPlan {
    /// The addresses tor connects to: IPs, since tor does not resolve target names. Each holds
    /// [`PortPlan::slots_per_host`] slots.
    pub target_hosts: Vec<IpAddr>,
    /// The first target port of slot 0.
    pub first_port: u16,
    /// How many slots fit in the range of one address.
    pub slots_per_host: u32,
    /// How many slots there are in all.
    pub slots: u32,
}

impl PortPlan {
    /// A plan over target ports `first..=last` of each of `target_hosts`.
    pub fn new(target_hosts: Vec<IpAddr>, first: u16, last: u16) -> Result<PortPlan, String> {
        if target_hosts.is_empty() {
            return Err("no target address".to_owned());
        }
        if first == 0 || last < first {
            return Err(format!("target port range {first}-{last} is empty"));
        }
        let slots = (u32::from(last) - u32::from(first) + 1) / u32::from(PORTS_PER_SLOT);
        if slots == 0 {
            return Err(format!(
                "target port range {first}-{last} holds fewer than {PORTS_PER_SLOT} ports"
            ));
        }
        let hosts = u32::try_from(target_hosts.len()).unwrap_or(u32::MAX);
        Ok(PortPlan {
            target_hosts,
            first_port: first,
            slots_per_host: slots,
            slots: slots.saturating_mul(hosts),
        })
    }

    /// The address `slot` is on.
    pub fn target_host(&self, slot: u32) -> IpAddr {
        let host = (slot / self.slots_per_host) as usize;
        self.target_hosts[host.min(self.target_hosts.len() - 1)]
    }

    /// The target port of `purpose` in `slot`.
    pub fn target_port(&self, slot: u32, purpose: Purpose) -> u16 {
        let port = u32::from(self.first_port)
            + (slot % self.slots_per_host) * u32::from(PORTS_PER_SLOT)
            + u32::from(purpose.offset());
        u16::try_from(port).expect("slots are bounded by the port range")
    }

    /// The mappings of one identity, in purpose order.
    pub fn mappings(&self, slot: u32, purposes: &[Purpose]) -> Vec<PortMapping> {
        purposes
            .iter()
            .map(|purpose| PortMapping {
                purpose: purpose.to_proto() as i32,
                virtual_port: u32::from(purpose.virtual_port()),
                target_host: self.target_host(slot).to_string(),
                target_port: u32::from(self.target_port(slot, *purpose)),
            })
            .collect()
    }

    /// `(virtual port, "ip:port")` pairs for ADD_ONION.
    pub fn add_onion_ports(&self, slot: u32, purposes: &[Purpose]) -> Vec<(u16, String)> {
        purposes
            .iter()
            .map(|purpose| {
                let target = std::net::SocketAddr::new(
                    self.target_host(slot),
                    self.target_port(slot, *purpose),
                );
                (purpose.virtual_port(), target.to_string())
            })
            .collect()
    }
}

/// The purposes of a request: deduplicated, in slot order, [`Purpose::DEFAULT`] when empty.
pub fn requested_purposes(purposes: &[i32]) -> Result<Vec<Purpose>, String> {
    let mut chosen = Vec::new();
    for value in purposes {
        let purpose = PortPurpose::try_from(*value)
            .ok()
            .and_then(Purpose::from_proto)
            .ok_or_else(|| format!("unknown port purpose {value}"))?;
        if !chosen.contains(&purpose) {
            chosen.push(purpose);
        }
    }
    if chosen.is_empty() {
        chosen.extend(Purpose::DEFAULT);
    }
    if chosen.contains(&Purpose::Portal) && chosen.len() > 1 {
        // The carrier's onion must never share an address with an identity's ports.
        return Err("the portal port goes on an onion of its own, with no other port".to_owned());
    }
    chosen.sort();
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_give_each_identity_its_own_ports() {
        let plan = PortPlan::new(vec!["10.0.0.5".parse().unwrap()], 20000, 20011).unwrap();
        assert_eq!(plan.slots, 3);
        assert_eq!(plan.target_port(0, Purpose::Smtp), 20000);
        assert_eq!(plan.target_port(1, Purpose::Smtp), 20004);
        assert_eq!(plan.target_port(2, Purpose::Submission), 20011);
        assert_eq!(
            plan.add_onion_ports(1, &[Purpose::Smtp, Purpose::Wkd]),
            vec![(25, "10.0.0.5:20004".into()), (80, "10.0.0.5:20005".into())]
        );
        let ipv6 = PortPlan::new(vec!["::1".parse().unwrap()], 20000, 20003).unwrap();
        assert_eq!(
            ipv6.add_onion_ports(0, &[Purpose::Imap])[0].1,
            "[::1]:20002"
        );
        assert!(PortPlan::new(vec!["127.0.0.1".parse().unwrap()], 20000, 20002).is_err());
        assert!(PortPlan::new(Vec::new(), 20000, 20011).is_err());
    }

    #[test]
    fn each_target_address_adds_the_whole_range() {
        let hosts = vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()];
        let plan = PortPlan::new(hosts, 10000, 19999).unwrap();
        assert_eq!(plan.slots, 5000);
        assert_eq!(
            plan.add_onion_ports(2499, &[Purpose::Submission]),
            vec![(587, "127.0.0.1:19999".into())]
        );
        assert_eq!(
            plan.add_onion_ports(2500, &[Purpose::Smtp]),
            vec![(25, "127.0.0.2:10000".into())]
        );
        assert_eq!(
            plan.mappings(4999, &[Purpose::Wkd])[0].target_host,
            "127.0.0.2"
        );
    }

    #[test]
    fn purposes_default_and_dedupe() {
        assert_eq!(requested_purposes(&[]).unwrap(), Purpose::DEFAULT);
        assert_eq!(
            requested_purposes(&[4, 1, 4]).unwrap(),
            vec![Purpose::Smtp, Purpose::Submission]
        );
        assert!(requested_purposes(&[0]).is_err());
        assert!(requested_purposes(&[9]).is_err());
        assert_eq!(requested_purposes(&[5]).unwrap(), vec![Purpose::Portal]);
        assert!(
            requested_purposes(&[1, 5]).is_err(),
            "the portal never shares an identity's onion"
        );
        for purpose in Purpose::ALL {
            assert_eq!(Purpose::parse(purpose.as_str()), Some(purpose));
        }
    }
}
