//! End-to-end tests of onionpost: the whole system run as processes over a private Tor
//! network on loopback, with the real `tor`. This library is the test support that the
//! scenario tests in `tests/` share, and nothing in the product depends on it: [`tornet`]
//! brings up and tears down the network (authorities, relays, one client tor per carrier
//! node), [`control`] is a minimal control-port client that proves the network can host and
//! publish onion services (the product has its own in `onionpost_onion::control`), [`socks`]
//! connects to an onion through a client's SOCKS port, handing the name to tor, and
//! [`onion_service`] runs the onion service in-process for scenario tests and benchmarks, and
//! [`smtp_sink`] stands in for a peer carrier's MX, and [`socks_relay`] for tor in front of it;
//! [`capture`] records, with tshark, the DNS
//! queries and connections made during a scenario; [`postfix`] runs a private Postfix.

pub mod capture;
pub mod control;
pub mod node;
pub mod onion_service;
pub mod otlp;
pub mod postfix;
pub mod rspamd;
pub mod smtp_sink;
pub mod socks;
pub mod socks_relay;
pub mod tornet;

pub use control::{AddedOnion, ControlConnection, ControlError, Reply, ReplyLine};
pub use socks::{SocksError, connect_onion};
pub use tornet::{TorClient, TorNet, TorNetError};
