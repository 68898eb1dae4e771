//! The onion service's settings, validated from the process configuration.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use onionpost_runtime::Config;
use onionpost_runtime::config::TorAuth;

use crate::control::Credentials;
use crate::ports::PortPlan;

/// How the service reaches tor.
#[derive(Debug, Clone)]
pub enum TorConnection {
    /// A tor someone else runs (a container, the system's tor): its control port.
    External {
        address: String,
        credentials: Credentials,
    },
    /// A tor child process this service starts and supervises, its files under `dir`.
    Child {
        binary: PathBuf,
        dir: PathBuf,
        /// Included at the end of the child's torrc (`tor.child_torrc`).
        include: Option<PathBuf>,
    },
}

/// Everything the onion service is configured with.
#[derive(Debug, Clone)]
pub struct OnionSettings {
    pub tor: TorConnection,
    /// `tor.socks` when set; else tor's own SOCKS listener, learnt from the control port.
    pub socks: Option<String>,
    pub ports: PortPlan,
}

impl OnionSettings {
    pub fn from_config(config: &Config) -> Result<OnionSettings, String> {
        let tor = match &config.tor.control {
            Some(address) => TorConnection::External {
                address: address.to_string(),
                credentials: match &config.tor.auth {
                    TorAuth::Auto => Credentials::Auto,
                    TorAuth::Cookie(path) => Credentials::Cookie(path.clone()),
                    TorAuth::Password(secret) => Credentials::Password(secret.expose().to_owned()),
                },
            },
            None => TorConnection::Child {
                binary: config.tor.binary.clone(),
                dir: config.data_dir.join("tor"),
                include: config.tor.child_torrc.clone(),
            },
        };
        let target_host = config
            .tor
            .target_host
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let (first, last) = config.tor.target_ports;
        let ports = PortPlan::new(target_host, first, last)
            .map_err(|why| format!("tor.target_ports: {why}"))?;
        Ok(OnionSettings {
            tor,
            socks: config.tor.socks.as_ref().map(ToString::to_string),
            ports,
        })
    }
}
