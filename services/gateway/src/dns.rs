//! The resolver for MX, A/AAAA, SPF, DKIM and DMARC lookups: mail-auth's authenticator over
//! hickory, pointed at `gateway.dns` when configured (a test network's own DNS server), else at
//! the system's resolv.conf. Onion names never reach it: the gateway refuses onion recipients
//! before any lookup.

use std::net::SocketAddr;
use std::time::Duration;

use mail_auth::MessageAuthenticator;
use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
};

/// Makes the authenticator for `server`, or for the system configuration.
pub fn authenticator(server: Option<SocketAddr>) -> anyhow::Result<MessageAuthenticator> {
    let Some(server) = server else {
        return MessageAuthenticator::new_system_conf()
            .map_err(|error| anyhow::anyhow!("system DNS configuration: {error}"));
    };
    let mut udp = ConnectionConfig::udp();
    udp.port = server.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = server.port();
    let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
        server.ip(),
        true,
        vec![udp, tcp],
    )]);
    let mut options = ResolverOpts::default();
    options.timeout = Duration::from_secs(5);
    options.attempts = 2;
    MessageAuthenticator::new(config, options)
        .map_err(|error| anyhow::anyhow!("DNS resolver at {server}: {error}"))
}
