//! The gRPC contracts of every onionpost service and the Rust generated from them. Services
//! never depend on one another's crates; they depend on this one, and reach each other through
//! the clients generated here whether the other service runs in the same process or across the
//! network. The `.proto` files under `onionpost/<service>/v1/` are the source of truth; this crate
//! adds only what every process needs around them: the names of the services (as command-line
//! targets and as gRPC service names for health checks), the descriptor set for reflection, and
//! the vocabulary the contracts' strings are written in ([`address`]: identity addresses and
//! onion hosts).
//! Service logic, storage and error mapping belong to the service crates.

use std::fmt;
use std::str::FromStr;

pub mod address;
pub mod clients;

/// The onion service: identity onion services on tor.
pub mod onion {
    /// Version 1 of the contract, package `onionpost.onion.v1`.
    pub mod v1 {
        tonic::include_proto!("onionpost.onion.v1");
    }
}

/// The keys service: OpenPGP keys, message crypto and address books.
pub mod keys {
    /// Version 1 of the contract, package `onionpost.keys.v1`.
    pub mod v1 {
        tonic::include_proto!("onionpost.keys.v1");
    }
}

/// The smtp-in service: SMTP server status and policy.
pub mod smtp_in {
    /// Version 1 of the contract, package `onionpost.smtp_in.v1`.
    pub mod v1 {
        tonic::include_proto!("onionpost.smtp_in.v1");
    }
}

/// The queue service: durable store-and-forward and carry agreements.
pub mod queue {
    /// Version 1 of the contract, package `onionpost.queue.v1`.
    pub mod v1 {
        tonic::include_proto!("onionpost.queue.v1");
    }
}

/// The smtp-out service: SMTP delivery to onions through tor.
pub mod smtp_out {
    /// Version 1 of the contract, package `onionpost.smtp_out.v1`.
    pub mod v1 {
        tonic::include_proto!("onionpost.smtp_out.v1");
    }
}

/// The imap service: accounts, plans, vouchers and the mail store.
pub mod imap {
    /// Version 1 of the contract, package `onionpost.imap.v1`.
    pub mod v1 {
        tonic::include_proto!("onionpost.imap.v1");
    }
}

/// The gateway service: the clearnet edge and its aliases.
pub mod gateway {
    /// Version 1 of the contract, package `onionpost.gateway.v1`.
    pub mod v1 {
        tonic::include_proto!("onionpost.gateway.v1");
    }
}

/// The portal service: account holders' own pages (its real interface is HTTP).
pub mod portal {
    /// Version 1 of the contract, package `onionpost.portal.v1`.
    pub mod v1 {
        tonic::include_proto!("onionpost.portal.v1");
    }
}

/// The admin service: carrier-wide statistics (its real interface is HTTP).
pub mod admin {
    /// Version 1 of the contract, package `onionpost.admin.v1`.
    pub mod v1 {
        tonic::include_proto!("onionpost.admin.v1");
    }
}

/// Largest gRPC message any contract carries inline (message bodies, key bundles), in both
/// directions: tonic's 4 MiB default raised once here for every server and client.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The text of the `250 2.0.0` an onion MX gives for a copy of a message the recipient already
/// has (the same message through several carriers and directly). A sender's queue that sees it
/// sends no success notice, so the sender hears of a delivery once, from whoever was first.
pub const ALREADY_DELIVERED_TEXT: &str = "Message accepted; a copy was already delivered";

/// The encoded `google.protobuf.FileDescriptorSet` of every contract, well-known types included
/// and comments kept, for the gRPC reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/onionpost_descriptor_set.bin"));

/// The target names of every service, as `onionpost serve --target` takes them, in the order of
/// [`ServiceName::ALL`]. Start order is the binary's business (it knows who depends on whom).
pub const SERVICE_NAMES: [&str; 9] = [
    ServiceName::ALL[0].as_str(),
    ServiceName::ALL[1].as_str(),
    ServiceName::ALL[2].as_str(),
    ServiceName::ALL[3].as_str(),
    ServiceName::ALL[4].as_str(),
    ServiceName::ALL[5].as_str(),
    ServiceName::ALL[6].as_str(),
    ServiceName::ALL[7].as_str(),
    ServiceName::ALL[8].as_str(),
];

/// One onionpost service, as a command-line target and as a gRPC service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceName {
    Onion,
    Keys,
    SmtpIn,
    Queue,
    SmtpOut,
    Imap,
    Gateway,
    Portal,
    Admin,
}

impl ServiceName {
    /// Every service: the edge towards tor first, the operator's view last.
    pub const ALL: [ServiceName; 9] = [
        ServiceName::Onion,
        ServiceName::Keys,
        ServiceName::SmtpIn,
        ServiceName::Queue,
        ServiceName::SmtpOut,
        ServiceName::Imap,
        ServiceName::Gateway,
        ServiceName::Portal,
        ServiceName::Admin,
    ];

    /// The target name used on the command line, in configuration and in logs: `smtp-in`, not
    /// `smtp_in`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ServiceName::Onion => "onion",
            ServiceName::Keys => "keys",
            ServiceName::SmtpIn => "smtp-in",
            ServiceName::Queue => "queue",
            ServiceName::SmtpOut => "smtp-out",
            ServiceName::Imap => "imap",
            ServiceName::Gateway => "gateway",
            ServiceName::Portal => "portal",
            ServiceName::Admin => "admin",
        }
    }

    /// The fully qualified gRPC service name, which grpc.health.v1 and reflection report and
    /// `onionpost healthcheck` asks about. Taken from the generated servers so it cannot drift
    /// from the `.proto` files.
    pub const fn grpc_name(self) -> &'static str {
        match self {
            ServiceName::Onion => onion::v1::onion_server::SERVICE_NAME,
            ServiceName::Keys => keys::v1::keys_server::SERVICE_NAME,
            ServiceName::SmtpIn => smtp_in::v1::smtp_in_server::SERVICE_NAME,
            ServiceName::Queue => queue::v1::queue_server::SERVICE_NAME,
            ServiceName::SmtpOut => smtp_out::v1::smtp_out_server::SERVICE_NAME,
            ServiceName::Imap => imap::v1::imap_server::SERVICE_NAME,
            ServiceName::Gateway => gateway::v1::gateway_server::SERVICE_NAME,
            ServiceName::Portal => portal::v1::portal_server::SERVICE_NAME,
            ServiceName::Admin => admin::v1::admin_server::SERVICE_NAME,
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for ServiceName {
    type Err = UnknownServiceName;

    /// Takes exactly the target names of [`ServiceName::as_str`]; groups such as `all` are the
    /// caller's to expand.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        ServiceName::ALL
            .into_iter()
            .find(|service| service.as_str() == name)
            .ok_or_else(|| UnknownServiceName {
                given: name.to_owned(),
            })
    }
}

/// A service name that is not one of [`SERVICE_NAMES`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownServiceName {
    /// What was given, so the message can quote it.
    pub given: String,
}

impl fmt::Display for UnknownServiceName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "unknown service `{}`; expected one of: {}",
            self.given,
            SERVICE_NAMES.join(", ")
        )
    }
}

impl std::error::Error for UnknownServiceName {}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use prost::Message;
    use prost_types::FileDescriptorSet;

    use super::*;

    /// Every fully qualified service name in the descriptor set.
    fn described_services() -> BTreeSet<String> {
        let descriptor_set =
            FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes");
        descriptor_set
            .file
            .iter()
            .flat_map(|file| {
                file.service
                    .iter()
                    .map(move |service| format!("{}.{}", file.package(), service.name()))
            })
            .collect()
    }

    #[test]
    fn descriptor_set_describes_every_service() {
        let described = described_services();
        for service in ServiceName::ALL {
            assert!(
                described.contains(service.grpc_name()),
                "{} is missing from the descriptor set",
                service.grpc_name()
            );
        }
        assert_eq!(described.len(), ServiceName::ALL.len(), "{described:?}");
    }

    #[test]
    fn descriptor_set_resolves_well_known_types() {
        let descriptor_set =
            FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes");
        let files: BTreeSet<&str> = descriptor_set.file.iter().map(|file| file.name()).collect();
        assert!(
            files.contains("google/protobuf/timestamp.proto"),
            "{files:?}"
        );
    }

    #[test]
    fn grpc_names_follow_the_package_convention() {
        assert_eq!(ServiceName::Keys.grpc_name(), "onionpost.keys.v1.Keys");
        assert_eq!(
            ServiceName::SmtpIn.grpc_name(),
            "onionpost.smtp_in.v1.SmtpIn"
        );
        assert_eq!(
            ServiceName::SmtpOut.grpc_name(),
            "onionpost.smtp_out.v1.SmtpOut"
        );
    }

    #[test]
    fn target_names_round_trip() {
        for service in ServiceName::ALL {
            assert_eq!(service.as_str().parse::<ServiceName>(), Ok(service));
        }
        let names: BTreeSet<&str> = SERVICE_NAMES.into_iter().collect();
        assert_eq!(names.len(), ServiceName::ALL.len());
    }

    #[test]
    fn unknown_target_names_are_refused_clearly() {
        let error = "smtp_in".parse::<ServiceName>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown service `smtp_in`; expected one of: onion, keys, smtp-in, queue, smtp-out, \
             imap, gateway, portal, admin"
        );
        assert!("all".parse::<ServiceName>().is_err());
        assert!("Keys".parse::<ServiceName>().is_err());
    }
}
