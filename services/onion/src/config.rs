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
        /// Its place in the pool (`child N`).
        index: usize,
        binary: PathBuf,
        dir: PathBuf,
        /// Included at the end of the child's torrc (`tor.child_torrc`).
        include: Option<PathBuf>,
    },
}

impl TorConnection {
    /// How GetTorStatus names it: the control address, or `child N`.
    pub fn name(&self) -> String {
        match self {
            TorConnection::External { address, .. } => address.clone(),
            TorConnection::Child { index, .. } => format!("child {index}"),
        }
    }
}

/// Everything the onion service is configured with.
#[derive(Debug, Clone)]
pub struct OnionSettings {
    /// The pool: every tor the identities are spread over (one in most carriers).
    pub tors: Vec<TorConnection>,
    /// Onions one tor publishes at most (0: no limit).
    pub max_onions_per_tor: u32,
    /// How long a tor may be away before its onions are published on the others.
    pub failover: std::time::Duration,
    /// `tor.socks` when set; else tor's own SOCKS listener, learnt from the control port.
    pub socks: Option<String>,
    pub ports: PortPlan,
}

impl OnionSettings {
    pub fn from_config(config: &Config) -> Result<OnionSettings, String> {
        let credentials = match &config.tor.auth {
            TorAuth::Auto => Credentials::Auto,
            TorAuth::Cookie(path) => Credentials::Cookie(path.clone()),
            TorAuth::Password(secret) => Credentials::Password(secret.expose().to_owned()),
        };
        let tors: Vec<TorConnection> = if config.tor.control.is_empty() {
            (0..config.tor.instances as usize)
                .map(|index| TorConnection::Child {
                    index,
                    binary: config.tor.binary.clone(),
                    // The first keeps the directory of carriers from before pools.
                    dir: match index {
                        0 => config.data_dir.join("tor"),
                        _ => config.data_dir.join(format!("tor-{index}")),
                    },
                    include: config.tor.child_torrc.clone(),
                })
                .collect()
        } else {
            config
                .tor
                .control
                .iter()
                .map(|address| TorConnection::External {
                    address: address.to_string(),
                    credentials: credentials.clone(),
                })
                .collect()
        };
        let target_hosts = match config.tor.target_hosts.as_slice() {
            [] => vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            hosts => hosts.to_vec(),
        };
        let (first, last) = config.tor.target_ports;
        let ports = PortPlan::new(target_hosts, first, last)
            .map_err(|why| format!("tor.target_ports: {why}"))?;
        Ok(OnionSettings {
            tors,
            max_onions_per_tor: config.tor.max_onions_per_tor,
            failover: config.tor.failover,
            socks: config.tor.socks.as_ref().map(ToString::to_string),
            ports,
        })
    }
}
