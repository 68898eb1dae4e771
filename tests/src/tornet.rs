//! A private Tor network on loopback, built the way Tor's `chutney` builds one (see
//! `shared/tornet.md`): three directory authorities, three relays, then one client tor per
//! carrier node, every listener on 127.0.0.1.
//!
//! [`TorNet::start`] returns once every authority's consensus lists every router and every
//! client has bootstrapped; clients started before the first full consensus can sit in
//! download back-off for a minute, so they wait for it. All state lives in one temporary
//! directory, one subdirectory per tor (its DataDirectory, holding `torrc`, `notice.log`,
//! `stdout.log` and `pid`). Dropping the [`TorNet`] kills every tor it started, also when a
//! test panics, and removes the directory unless `ONIONPOST_KEEP_TORNET=1`. As a last resort
//! every tor is told the test process's pid (`__OwningControllerProcess`) and exits on its own
//! when that process is gone, so not even a killed test run leaves one behind.
//!
//! The `tor` and `tor-gencert` binaries are found through `ONIONPOST_TOR` and
//! `ONIONPOST_TOR_GENCERT`, else on PATH, else in `/usr/sbin` and `/usr/bin` (Debian's `tor`
//! package installs both).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::hash::BuildHasher;
use std::io::{self, Read as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tokio_socks::tcp::Socks5Stream;

use crate::control::{ControlConnection, ControlError};
use crate::socks::{SocksError, connect_onion};

/// Authorities: the fewest that outvote a lagging one, as in chutney's basic networks.
const AUTHORITIES: usize = 3;
/// Plain relays. With the authorities that makes six routers; onion circuits need at least
/// four ("Failed to find node for hop #3" with fewer).
const RELAYS: usize = 3;

/// How long authorities and relays may take to agree on a consensus that lists them all.
/// About ten seconds is usual; the slack is for a machine busy compiling.
const CONSENSUS_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a client may take to bootstrap once a full consensus exists (usually 1-2 s).
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often files are checked while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Log lines quoted in a failure report.
const LOG_TAIL_LINES: usize = 40;

/// Environment variable: keep the network's directory after the test (for debugging).
pub const KEEP_ENV: &str = "ONIONPOST_KEEP_TORNET";
/// Environment variable: `info` or `debug` makes every tor also log at that level, to
/// `<level>.log` beside `notice.log` (for debugging; debug logs grow fast).
pub const LOG_LEVEL_ENV: &str = "ONIONPOST_TORNET_LOG";

/// The extra log level asked for through [`LOG_LEVEL_ENV`], if any.
fn verbose_log_level() -> Option<&'static str> {
    match std::env::var(LOG_LEVEL_ENV).ok()?.as_str() {
        "info" => Some("info"),
        "debug" => Some("debug"),
        _ => None,
    }
}

/// Why the network (or one of its tors) did not come up.
#[derive(Debug, thiserror::Error)]
pub enum TorNetError {
    /// A needed program is not installed.
    #[error("{program} not found (set {env}, or install Debian's `tor` package)")]
    ProgramNotFound {
        program: &'static str,
        env: &'static str,
    },
    /// A file-system or process operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A helper run of `tor` or `tor-gencert` failed or printed something unexpected.
    #[error("{what} failed: {detail}")]
    Helper { what: String, detail: String },
    /// A tor exited while the harness waited for it.
    #[error("{node} exited ({status}) while waiting for {waiting_for}; {log}:\n{tail}")]
    Exited {
        node: String,
        status: ExitStatus,
        waiting_for: String,
        log: PathBuf,
        tail: String,
    },
    /// Something did not happen in time.
    #[error("{what} did not happen within {waited:?}; {log}:\n{tail}")]
    Timeout {
        what: String,
        waited: Duration,
        log: PathBuf,
        tail: String,
    },
    /// `start` on a client whose tor runs.
    #[error("{0} is already running")]
    AlreadyRunning(String),
}

type Result<T, E = TorNetError> = std::result::Result<T, E>;

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> TorNetError {
    let what = what.into();
    move |source| TorNetError::Io { what, source }
}

/// A running private Tor network. See the module documentation.
#[derive(Debug)]
pub struct TorNet {
    /// Owns the directory; `None` once handed over to be kept.
    dir: Option<TempDir>,
    /// The same path, usable after `dir` is taken.
    root: PathBuf,
    tor: PathBuf,
    /// `DirAuthority` lines and every option all nodes share.
    common_torrc: String,
    authorities: Vec<TorProcess>,
    relays: Vec<TorProcess>,
    clients: Vec<TorClient>,
    ready_after: Duration,
    /// Where authorities and relays listen (their `Address`): 127.0.0.1, or a docker bridge's
    /// address when tors in containers join the network (tests/tests/compose.rs).
    address: Ipv4Addr,
}

impl TorNet {
    /// Brings up three authorities and three relays, waits until each authority's consensus
    /// lists all six, then starts `clients` client tors and waits until each has bootstrapped.
    pub async fn start(clients: usize) -> Result<TorNet> {
        TorNet::start_on(Ipv4Addr::LOCALHOST, clients).await
    }

    /// [`TorNet::start`] with authorities and relays on `address` instead of 127.0.0.1 (a
    /// host address that other machines, such as containers on a docker bridge, can reach).
    /// Clients still listen on 127.0.0.1.
    pub async fn start_on(address: Ipv4Addr, clients: usize) -> Result<TorNet> {
        let started = Instant::now();
        let tor = find_program("tor", "ONIONPOST_TOR")?;
        let tor_gencert = find_program("tor-gencert", "ONIONPOST_TOR_GENCERT")?;
        let dir = tempfile::Builder::new()
            .prefix("onionpost-tornet-")
            .tempdir()
            .map_err(io_error("creating the network directory"))?;
        let root = dir.path().to_owned();
        check_torrc_safe(&root)?;
        // An empty defaults file, so nothing from /etc/tor/torrc-defaults leaks in.
        File::create(root.join("torrc-defaults")).map_err(io_error("creating torrc-defaults"))?;
        tracing::info!(dir = %root.display(), clients, "starting private tor network");

        let authority_specs = (0..AUTHORITIES)
            .map(|index| AuthoritySpec::new(&root, index, address))
            .collect::<Result<Vec<_>>>()?;
        let identities = create_authority_keys(&tor, &tor_gencert, &authority_specs).await?;
        let common_torrc = common_torrc(&authority_specs, &identities);
        tracing::debug!(keys_after = ?started.elapsed(), "authority keys created");

        let mut net = TorNet {
            dir: Some(dir),
            root,
            tor,
            common_torrc,
            authorities: Vec::new(),
            relays: Vec::new(),
            clients: Vec::new(),
            ready_after: Duration::ZERO,
            address,
        };
        // From here on `net` owns every started tor: an early return drops it and kills them.
        for spec in &authority_specs {
            let torrc = format!(
                "{common}{server}\
                 DirPort {address}:{dir_port}\n\
                 AuthoritativeDirectory 1\n\
                 V3AuthoritativeDirectory 1\n\
                 ContactInfo {nickname}@onionpost.invalid\n\
                 TestingV3AuthInitialVotingInterval 5\n\
                 TestingV3AuthInitialVoteDelay 2\n\
                 TestingV3AuthInitialDistDelay 2\n\
                 V3AuthVotingInterval 10\n\
                 V3AuthVoteDelay 2\n\
                 V3AuthDistDelay 2\n\
                 MaxConsensusAgeForDiffs 2 minutes\n",
                common = net.common_torrc,
                server = server_torrc(address, spec.or_port),
                address = spec.address,
                dir_port = spec.dir_port,
                nickname = spec.nickname,
            );
            let node = TorProcess::create(&net.root, &spec.nickname, &torrc)?;
            node.spawn(&net.tor, &net.root)?;
            net.authorities.push(node);
        }
        for index in 0..RELAYS {
            let nickname = format!("relay{index}");
            let or_port = free_port_on(address)?;
            // DirCache 0: clients then fetch only from the authorities, which always hold the
            // newest consensus; a lagging cache costs 20-90 s of back-off.
            let torrc = format!(
                "{common}{server}DirCache 0\n",
                common = net.common_torrc,
                server = server_torrc(address, or_port),
            );
            let node = TorProcess::create(&net.root, &nickname, &torrc)?;
            node.spawn(&net.tor, &net.root)?;
            net.relays.push(node);
        }
        // Clients' ports, passwords and torrcs are made while the authorities vote.
        let mut pending = Vec::with_capacity(clients);
        for index in 0..clients {
            pending.push(net.create_client(index).await?);
        }
        net.wait_for_full_consensus().await?;
        let consensus_after = started.elapsed();
        tracing::info!(?consensus_after, "consensus lists every router");

        for client in pending {
            client.spawn()?;
            net.clients.push(client);
        }
        for client in &net.clients {
            client.wait_bootstrapped(0).await?;
        }
        net.ready_after = started.elapsed();
        tracing::info!(
            ready_after = ?net.ready_after,
            clients,
            "private tor network ready"
        );
        Ok(net)
    }

    /// How long [`TorNet::start`] took until every client had bootstrapped.
    /// The `DirAuthority` lines and options every node of this network shares: what a tor
    /// started by someone else (the onion service's own tor child) needs to join it.
    pub fn common_torrc(&self) -> &str {
        &self.common_torrc
    }

    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// Where the authorities and relays listen.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// The clients, in the order they were started.
    pub fn clients(&self) -> &[TorClient] {
        &self.clients
    }

    /// Client `index`.
    ///
    /// # Panics
    ///
    /// If there is no such client (a bug in the test).
    pub fn client(&self, index: usize) -> &TorClient {
        &self.clients[index]
    }

    /// The directory holding every tor's files.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Starts one more client tor and waits until it has bootstrapped.
    pub async fn add_client(&mut self) -> Result<&TorClient> {
        let client = self.create_client(self.clients.len()).await?;
        client.spawn()?;
        self.clients.push(client);
        let added = &self.clients[self.clients.len() - 1];
        let took = added.wait_bootstrapped(0).await?;
        tracing::info!(client = %added.name(), ?took, "client added");
        Ok(added)
    }

    /// Stops every tor and removes the directory (unless kept); the same as dropping.
    pub fn shutdown(self) {
        drop(self);
    }

    /// Ports, password and torrc of client `index`, not yet started.
    async fn create_client(&self, index: usize) -> Result<TorClient> {
        let name = format!("client{index}");
        let socks_addr = loopback(free_port()?);
        let control_addr = loopback(free_port()?);
        let control_password = random_hex(16)?;
        let hashed_password = hash_password(&self.tor, &control_password).await?;
        let torrc = format!(
            "{common}\
             SocksPort {socks_addr}\n\
             ControlPort {control_addr}\n\
             CookieAuthentication 1\n\
             HashedControlPassword {hashed_password}\n",
            common = self.common_torrc,
        );
        let process = TorProcess::create(&self.root, &name, &torrc)?;
        let cookie_file = process.dir.join("control_auth_cookie");
        Ok(TorClient {
            name,
            process,
            tor: self.tor.clone(),
            root: self.root.clone(),
            socks_addr,
            control_addr,
            cookie_file,
            control_password,
        })
    }

    /// Waits until the microdescriptor consensus of every authority lists every router: the
    /// first vote often lists only some, and one authority can be a round behind.
    async fn wait_for_full_consensus(&self) -> Result<()> {
        let routers = self.authorities.len() + self.relays.len();
        let started = Instant::now();
        loop {
            for node in self.authorities.iter().chain(&self.relays) {
                node.check_alive("a consensus listing every router")?;
            }
            let mut counts = Vec::with_capacity(self.authorities.len());
            for authority in &self.authorities {
                counts.push(count_consensus_routers(&authority.dir)?);
            }
            if counts.iter().all(|count| *count >= routers) {
                return Ok(());
            }
            if started.elapsed() >= CONSENSUS_TIMEOUT {
                let behind = counts
                    .iter()
                    .position(|count| *count < routers)
                    .unwrap_or_default();
                let authority = &self.authorities[behind];
                return Err(TorNetError::Timeout {
                    what: format!(
                        "consensus listing all {routers} routers (authorities list {counts:?})"
                    ),
                    waited: started.elapsed(),
                    log: authority.log_file(),
                    tail: authority.log_tail(),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for TorNet {
    fn drop(&mut self) {
        for client in &self.clients {
            client.process.kill();
        }
        for node in self.relays.iter().chain(&self.authorities) {
            node.kill();
        }
        let keep = std::env::var(KEEP_ENV).is_ok_and(|value| value == "1");
        if let Some(dir) = self.dir.take() {
            if keep {
                let kept = dir.keep();
                tracing::info!(dir = %kept.display(), "tor network stopped, directory kept");
            } else {
                drop(dir);
                tracing::info!("tor network stopped");
            }
        }
    }
}

/// One client tor: a SocksPort for the carrier's outbound connections and a ControlPort (with
/// cookie and password authentication) for its onion services.
#[derive(Debug)]
pub struct TorClient {
    name: String,
    process: TorProcess,
    tor: PathBuf,
    root: PathBuf,
    socks_addr: SocketAddr,
    control_addr: SocketAddr,
    cookie_file: PathBuf,
    control_password: String,
}

impl TorClient {
    /// Its nickname in the network (`client0`, `client1`, …).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Tor's SOCKS5 listener: every outbound connection of this node goes through it.
    pub fn socks_addr(&self) -> SocketAddr {
        self.socks_addr
    }

    /// Tor's control port.
    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// The file tor writes the control cookie to (anew each start).
    pub fn cookie_file(&self) -> &Path {
        &self.cookie_file
    }

    /// The password `HashedControlPassword` accepts.
    pub fn control_password(&self) -> &str {
        &self.control_password
    }

    /// Its DataDirectory (also holds `torrc`, `notice.log`, `pid`).
    pub fn data_dir(&self) -> &Path {
        &self.process.dir
    }

    /// Tor's log at notice level.
    pub fn log_file(&self) -> PathBuf {
        self.process.log_file()
    }

    /// The tor process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Whether its tor runs.
    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// A control connection authenticated with the cookie.
    pub async fn control(&self) -> Result<ControlConnection, ControlError> {
        ControlConnection::connect_with_cookie(self.control_addr, &self.cookie_file).await
    }

    /// A control connection authenticated with the password.
    pub async fn control_with_password(&self) -> Result<ControlConnection, ControlError> {
        ControlConnection::connect_with_password(self.control_addr, &self.control_password).await
    }

    /// Connects through this client's SOCKS port to `host:port` (an onion name), retrying
    /// while the onion is not reachable yet; see [`connect_onion`].
    pub async fn connect_onion(
        &self,
        host: &str,
        port: u16,
        within: Duration,
    ) -> Result<Socks5Stream<tokio::net::TcpStream>, SocksError> {
        connect_onion(self.socks_addr, host, port, within).await
    }

    /// Kills its tor (SIGKILL, the way a crash or an OOM kill ends it) and waits until it is
    /// gone. Its data directory and ports stay for [`TorClient::start`].
    pub fn stop(&self) {
        self.process.kill();
        tracing::info!(client = %self.name, "client stopped");
    }

    /// Starts its tor again with the same torrc, data directory and ports, and waits until it
    /// has bootstrapped; returns how long that took.
    pub async fn start(&self) -> Result<Duration> {
        if self.is_running() {
            return Err(TorNetError::AlreadyRunning(self.name.clone()));
        }
        let log_offset = self.process.log_len();
        let started = Instant::now();
        self.spawn()?;
        self.wait_bootstrapped(log_offset).await?;
        let took = started.elapsed();
        tracing::info!(client = %self.name, ?took, "client started");
        Ok(took)
    }

    /// [`TorClient::stop`] then [`TorClient::start`].
    pub async fn restart(&self) -> Result<Duration> {
        self.stop();
        self.start().await
    }

    fn spawn(&self) -> Result<()> {
        self.process.spawn(&self.tor, &self.root)
    }

    /// Waits for "Bootstrapped 100%" in the log after byte `log_offset` (a restarted tor
    /// appends to the log of its earlier run). Returns the time waited.
    async fn wait_bootstrapped(&self, log_offset: u64) -> Result<Duration> {
        let started = Instant::now();
        let waiting_for = format!("{} to bootstrap", self.name);
        loop {
            self.process.check_alive(&waiting_for)?;
            if self
                .process
                .log_contains_after(log_offset, "Bootstrapped 100%")
            {
                return Ok(started.elapsed());
            }
            if started.elapsed() >= BOOTSTRAP_TIMEOUT {
                return Err(self.process.timeout(waiting_for, started.elapsed()));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// One tor daemon of the network: its directory (torrc, DataDirectory, logs) and, while it
/// runs, its process.
#[derive(Debug)]
struct TorProcess {
    nickname: String,
    dir: PathBuf,
    /// Behind a lock so that a shared `&TorClient` can stop and start it.
    child: Mutex<Option<Child>>,
}

impl TorProcess {
    /// Creates the node's directory (mode 0700, as tor wants its DataDirectory) and torrc.
    fn create(root: &Path, nickname: &str, torrc: &str) -> Result<Self> {
        let dir = node_dir(root, nickname)?;
        let mut full_torrc = format!(
            "Nickname {nickname}\n\
             DataDirectory {dir}\n\
             PidFile {dir}/pid\n\
             Log notice file {dir}/notice.log\n",
            dir = dir.display(),
        );
        if let Some(level) = verbose_log_level() {
            let _ = writeln!(full_torrc, "Log {level} file {}/{level}.log", dir.display());
        }
        full_torrc.push_str(torrc);
        let torrc_path = dir.join("torrc");
        fs::write(&torrc_path, full_torrc)
            .map_err(io_error(format!("writing {}", torrc_path.display())))?;
        Ok(Self {
            nickname: nickname.to_owned(),
            dir,
            child: Mutex::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Option<Child>> {
        // A panic while holding the lock leaves a valid Option<Child>; carry on with it.
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn spawn(&self, tor: &Path, root: &Path) -> Result<()> {
        let stdout_path = self.dir.join("stdout.log");
        let stdout = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stdout_path)
            .map_err(io_error(format!("opening {}", stdout_path.display())))?;
        let stderr = stdout
            .try_clone()
            .map_err(io_error("duplicating the stdout handle"))?;
        let mut child_slot = self.lock();
        let child = Command::new(tor)
            .arg("-f")
            .arg(self.dir.join("torrc"))
            .arg("--defaults-torrc")
            .arg(root.join("torrc-defaults"))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(io_error(format!("starting tor for {}", self.nickname)))?;
        tracing::debug!(node = %self.nickname, pid = child.id(), "tor started");
        *child_slot = Some(child);
        Ok(())
    }

    /// SIGKILL and reap, if running. Tor is never asked to shut down gracefully: tests want
    /// the crash case, and nothing here needs tor's state saved.
    fn kill(&self) {
        let mut child_slot = self.lock();
        if let Some(mut child) = child_slot.take() {
            if let Err(error) = child.kill() {
                tracing::warn!(node = %self.nickname, %error, "cannot kill tor");
            }
            if let Err(error) = child.wait() {
                tracing::warn!(node = %self.nickname, %error, "cannot reap tor");
            }
            // Tor removes its PidFile only on a clean exit.
            let _ = fs::remove_file(self.dir.join("pid"));
        }
    }

    fn pid(&self) -> Option<u32> {
        self.lock().as_ref().map(Child::id)
    }

    fn is_running(&self) -> bool {
        let mut child_slot = self.lock();
        match child_slot.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) | None => false,
        }
    }

    /// Fails with the log's tail if the tor exited (it was never stopped on purpose, so any
    /// exit is a failure).
    fn check_alive(&self, waiting_for: &str) -> Result<()> {
        let mut child_slot = self.lock();
        let Some(child) = child_slot.as_mut() else {
            return Err(TorNetError::Helper {
                what: format!("waiting for {waiting_for}"),
                detail: format!("{} is not running", self.nickname),
            });
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                *child_slot = None;
                Err(TorNetError::Exited {
                    node: self.nickname.clone(),
                    status,
                    waiting_for: waiting_for.to_owned(),
                    log: self.log_file(),
                    tail: self.log_tail(),
                })
            }
            Err(source) => Err(TorNetError::Io {
                what: format!("checking on {}", self.nickname),
                source,
            }),
        }
    }

    fn timeout(&self, what: String, waited: Duration) -> TorNetError {
        TorNetError::Timeout {
            what,
            waited,
            log: self.log_file(),
            tail: self.log_tail(),
        }
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("notice.log")
    }

    fn log_len(&self) -> u64 {
        fs::metadata(self.log_file()).map_or(0, |metadata| metadata.len())
    }

    fn log_contains_after(&self, offset: u64, needle: &str) -> bool {
        let Ok(log) = fs::read(self.log_file()) else {
            return false;
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(log.len());
        String::from_utf8_lossy(&log[start..]).contains(needle)
    }

    /// The last lines of the notice log, and of stdout (where tor reports a torrc it cannot
    /// parse, before any log file is open).
    fn log_tail(&self) -> String {
        let mut report = tail_of_file(&self.log_file(), LOG_TAIL_LINES);
        let stdout = tail_of_file(&self.dir.join("stdout.log"), 10);
        if !stdout.trim().is_empty() {
            let _ = write!(report, "\n--- {}/stdout.log:\n{stdout}", self.dir.display());
        }
        report
    }
}

impl Drop for TorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where one authority listens, before it runs.
struct AuthoritySpec {
    nickname: String,
    dir: PathBuf,
    address: Ipv4Addr,
    or_port: u16,
    dir_port: u16,
}

impl AuthoritySpec {
    fn new(root: &Path, index: usize, address: Ipv4Addr) -> Result<Self> {
        let nickname = format!("auth{index}");
        let dir = node_dir(root, &nickname)?;
        let keys = dir.join("keys");
        DirBuilder::new()
            .mode(0o700)
            .create(&keys)
            .map_err(io_error(format!("creating {}", keys.display())))?;
        Ok(Self {
            nickname,
            dir,
            address,
            or_port: free_port_on(address)?,
            dir_port: free_port_on(address)?,
        })
    }
}

/// An authority's two fingerprints: of its v3 authority identity key (`v3ident`) and of its
/// relay identity key.
struct AuthorityIdentity {
    v3ident: String,
    fingerprint: String,
}

/// Creates each authority's v3 identity and signing keys and certificate with `tor-gencert`,
/// and its relay keys with `tor --list-fingerprint`, all at once.
async fn create_authority_keys(
    tor: &Path,
    tor_gencert: &Path,
    specs: &[AuthoritySpec],
) -> Result<Vec<AuthorityIdentity>> {
    let mut gencerts = Vec::with_capacity(specs.len());
    let mut fingerprints = Vec::with_capacity(specs.len());
    for spec in specs {
        let keys = spec.dir.join("keys");
        let mut gencert = tokio::process::Command::new(tor_gencert)
            .arg("--create-identity-key")
            .args(["--passphrase-fd", "0"])
            // Valid for 12 months: longer than any test run.
            .args(["-m", "12"])
            .arg("-i")
            .arg(keys.join("authority_identity_key"))
            .arg("-s")
            .arg(keys.join("authority_signing_key"))
            .arg("-c")
            .arg(keys.join("authority_certificate"))
            .arg("-a")
            .arg(format!("{}:{}", spec.address, spec.dir_port))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(io_error("starting tor-gencert"))?;
        if let Some(mut stdin) = gencert.stdin.take() {
            // An empty passphrase.
            stdin
                .write_all(b"\n")
                .await
                .map_err(io_error("writing tor-gencert's passphrase"))?;
        }
        gencerts.push(gencert);
        let fingerprint = tokio::process::Command::new(tor)
            .args(["--quiet", "--ignore-missing-torrc", "--orport", "1"])
            .arg("--datadirectory")
            .arg(&spec.dir)
            .arg("--list-fingerprint")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(io_error("starting tor --list-fingerprint"))?;
        fingerprints.push(fingerprint);
    }

    let mut identities = Vec::with_capacity(specs.len());
    for ((spec, gencert), fingerprint) in specs.iter().zip(gencerts).zip(fingerprints) {
        let what = format!("tor-gencert for {}", spec.nickname);
        helper_output(&what, gencert.wait_with_output().await)?;
        let certificate_path = spec.dir.join("keys").join("authority_certificate");
        let certificate = fs::read_to_string(&certificate_path)
            .map_err(io_error(format!("reading {}", certificate_path.display())))?;
        let v3ident = certificate
            .lines()
            .find_map(|line| line.strip_prefix("fingerprint "))
            .map(|value| value.trim().to_owned())
            .ok_or_else(|| TorNetError::Helper {
                what: what.clone(),
                detail: String::from("the certificate has no fingerprint line"),
            })?;

        let what = format!("tor --list-fingerprint for {}", spec.nickname);
        let stdout = helper_output(&what, fingerprint.wait_with_output().await)?;
        // "<nickname> XXXX XXXX … XXXX": the fingerprint in groups of four.
        let relay_fingerprint: String = stdout
            .lines()
            .last()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .collect();
        if relay_fingerprint.len() != 40
            || !relay_fingerprint
                .bytes()
                .all(|byte| byte.is_ascii_hexdigit())
        {
            return Err(TorNetError::Helper {
                what,
                detail: format!("unexpected output {stdout:?}"),
            });
        }
        identities.push(AuthorityIdentity {
            v3ident,
            fingerprint: relay_fingerprint,
        });
    }
    Ok(identities)
}

/// What every node's torrc shares: the options of a testing network and the authorities.
fn common_torrc(specs: &[AuthoritySpec], identities: &[AuthorityIdentity]) -> String {
    let hsdirs = identities
        .iter()
        .map(|identity| format!("${}", identity.fingerprint))
        .collect::<Vec<_>>()
        .join(",");
    let mut torrc = format!(
        "TestingTorNetwork 1\n\
         RunAsDaemon 0\n\
         ShutdownWaitLength 0\n\
         SafeLogging 0\n\
         PathsNeededToBuildCircuits 0.67\n\
         TestingDirAuthVoteExit *\n\
         TestingDirAuthVoteGuard *\n\
         TestingDirAuthVoteHSDir {hsdirs}\n\
         TestingDirAuthVoteHSDirIsStrict 1\n\
         TestingMinExitFlagThreshold 0\n\
         V3AuthNIntervalsValid 2\n\
         ClientUseIPv6 0\n\
         GeoIPFile\n\
         GeoIPv6File\n\
         __OwningControllerProcess {pid}\n",
        pid = std::process::id(),
    );
    for (spec, identity) in specs.iter().zip(identities) {
        let _ = writeln!(
            torrc,
            "DirAuthority {nickname} orport={or_port} no-v2 v3ident={v3ident} \
             {address}:{dir_port} {fingerprint}",
            nickname = spec.nickname,
            address = spec.address,
            or_port = spec.or_port,
            v3ident = identity.v3ident,
            dir_port = spec.dir_port,
            fingerprint = identity.fingerprint,
        );
    }
    torrc
}

/// What authorities and relays share: an ORPort on the network's address, no SOCKS, no exit.
fn server_torrc(address: Ipv4Addr, or_port: u16) -> String {
    format!(
        "Address {address}\n\
         ORPort {address}:{or_port}\n\
         SocksPort 0\n\
         ExitRelay 0\n\
         ExitPolicy reject *:*\n\
         AssumeReachable 1\n\
         ServerDNSDetectHijacking 0\n\
         ServerDNSTestAddresses\n"
    )
}

/// Routers listed in an authority's microdescriptor consensus (its `r ` lines); 0 while it
/// has none.
fn count_consensus_routers(authority_dir: &Path) -> Result<usize> {
    let path = authority_dir.join("cached-microdesc-consensus");
    match fs::read_to_string(&path) {
        Ok(consensus) => Ok(consensus
            .lines()
            .filter(|line| line.starts_with("r "))
            .count()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(TorNetError::Io {
            what: format!("reading {}", path.display()),
            source,
        }),
    }
}

/// `tor --hash-password`: the value for `HashedControlPassword` (a salted S2K, `16:…`).
async fn hash_password(tor: &Path, password: &str) -> Result<String> {
    let what = "tor --hash-password";
    let output = tokio::process::Command::new(tor)
        .args(["--quiet", "--hash-password", password])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    let stdout = helper_output(what, output)?;
    stdout
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("16:"))
        .map(str::to_owned)
        .ok_or_else(|| TorNetError::Helper {
            what: what.to_owned(),
            detail: format!("no 16:… hash in {stdout:?}"),
        })
}

/// The stdout of a finished helper run, or an error with its stderr.
fn helper_output(what: &str, output: io::Result<std::process::Output>) -> Result<String> {
    let output = output.map_err(io_error(format!("running {what}")))?;
    if !output.status.success() {
        return Err(TorNetError::Helper {
            what: what.to_owned(),
            detail: format!(
                "{}: {}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr),
                String::from_utf8_lossy(&output.stdout)
            ),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `<root>/<nickname>`, created with mode 0700 unless it exists.
fn node_dir(root: &Path, nickname: &str) -> Result<PathBuf> {
    let dir = root.join(nickname);
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io_error(format!("creating {}", dir.display())))?;
    Ok(dir)
}

/// Torrc values here are written unquoted (`Log notice file <path>` cannot be quoted), so the
/// directory must not hold white space, quotes or `#`.
fn check_torrc_safe(root: &Path) -> Result<()> {
    let text = root.to_string_lossy();
    if text
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '"' | '\\' | '#'))
    {
        return Err(TorNetError::Helper {
            what: String::from("choosing the network directory"),
            detail: format!("{text:?} cannot be written into a torrc; set TMPDIR to a plain path"),
        });
    }
    Ok(())
}

/// Looks for a program: the environment variable, then PATH, then Debian's places (`tor`
/// is in /usr/sbin, which a non-root PATH may lack).
fn find_program(program: &'static str, env: &'static str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Ok(PathBuf::from(path));
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let fallback_dirs = ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .into_iter()
        .map(PathBuf::from);
    path_dirs
        .into_iter()
        .chain(fallback_dirs)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or(TorNetError::ProgramNotFound { program, env })
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// The lowest and one past the highest port handed out. Below Linux's ephemeral range
/// (32768-60999): the tors' own outgoing connections take ports from that range, and one
/// could take a chosen port in the seconds before the tor meant to listen on it starts.
const PORT_RANGE: (u16, u16) = (20000, 32700);

/// Ports handed out by this process, never handed out twice (tests run in parallel threads).
static PORTS_HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A port on 127.0.0.1 that nothing listens on now (see [`free_port_on`]).
fn free_port() -> Result<u16> {
    free_port_on(Ipv4Addr::LOCALHOST)
}

/// A port on `address` that nothing listens on now: from a random start in [`PORT_RANGE`],
/// the first that this process has not handed out and that can be bound. Other processes
/// (other test binaries, other people's tests) each start at their own random place, which
/// makes a collision unlikely; the bind check excludes ports already in use.
fn free_port_on(address: Ipv4Addr) -> Result<u16> {
    let (low, high) = PORT_RANGE;
    let span = u64::from(high - low);
    let mut handed_out = PORTS_HANDED_OUT
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let start = std::collections::hash_map::RandomState::new().hash_one(handed_out.len()) % span;
    for step in 0..span {
        let offset = u16::try_from((start + step) % span).unwrap_or_default();
        let port = low + offset;
        if handed_out.contains(&port) {
            continue;
        }
        if TcpListener::bind(SocketAddr::from((address, port))).is_ok() {
            handed_out.insert(port);
            return Ok(port);
        }
    }
    Err(TorNetError::Io {
        what: String::from("finding a free port"),
        source: io::Error::new(io::ErrorKind::AddrInUse, "every port in the range is taken"),
    })
}

/// `bytes` random bytes from the kernel, hex-encoded.
fn random_hex(bytes: usize) -> Result<String> {
    let mut buffer = vec![0_u8; bytes];
    File::open("/dev/urandom")
        .and_then(|mut urandom| urandom.read_exact(&mut buffer))
        .map_err(io_error("reading /dev/urandom"))?;
    Ok(hex::encode(buffer))
}

/// The last `lines` lines of a file, or a note why there are none.
fn tail_of_file(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(error) => format!("(cannot read {}: {error})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_outside_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        assert!(ports.iter().all(|port| (20000..32700).contains(port)));
    }

    #[test]
    fn consensus_routers_are_counted_by_r_lines() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(count_consensus_routers(dir.path()).unwrap(), 0);
        fs::write(
            dir.path().join("cached-microdesc-consensus"),
            "network-status-version 3 microdesc\nr auth0 x\nm y\nr relay0 z\ns Fast\n",
        )
        .unwrap();
        assert_eq!(count_consensus_routers(dir.path()).unwrap(), 2);
    }

    #[test]
    fn paths_that_a_torrc_cannot_hold_are_refused() {
        assert!(check_torrc_safe(Path::new("/tmp/onionpost-tornet-abc")).is_ok());
        assert!(check_torrc_safe(Path::new("/tmp/with space")).is_err());
    }
}
