//! onionpost processes for end-to-end tests: start `onionpost serve` with a private data
//! directory and free loopback ports, wait until its services answer SERVING, and stop it (by
//! SIGTERM, so it flushes its spans) or kill it. The binary is built once per test run with the
//! same cargo and target directory as the tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// The `onionpost` binary, built on first use with the running test's cargo profile.
pub fn onionpost_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            // At run time cargo names the package directory of the running test; the
            // compile-time value would be stale for a test binary built elsewhere.
            let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
            let workspace = Path::new(&manifest_dir)
                .parent()
                .expect("workspace root")
                .to_owned();
            // target/<profile dir>/deps/<test> -> target/<profile dir>/onionpost, built with
            // the same profile as the test or benchmark running (`cargo bench` -> release).
            let exe = std::env::current_exe().expect("test executable path");
            let dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("target profile directory");
            let profile = match dir.file_name().and_then(|name| name.to_str()) {
                Some("debug") | None => "dev",
                Some(other) => other,
            };
            let mut build = std::process::Command::new(cargo);
            // Cargo describes the running test's own package in the environment
            // (CARGO_MANIFEST_DIR, CARGO_PKG_…); a plain `cargo build` has none of it. ring's
            // build script tracks CARGO_MANIFEST_DIR, so passing it on rebuilt ring and
            // everything above it (about a minute) here and again at the next plain build.
            for (key, _) in std::env::vars_os() {
                let key = key.to_string_lossy();
                if key.starts_with("CARGO_MANIFEST_")
                    || key.starts_with("CARGO_PKG_")
                    || key == "CARGO_CRATE_NAME"
                    || key == "CARGO_PRIMARY_PACKAGE"
                {
                    build.env_remove(key.as_ref());
                }
            }
            let status = build
                .args(["build", "--quiet", "--profile", profile])
                .args(["-p", "onionpost", "--bin", "onionpost"])
                .current_dir(&workspace)
                .status()
                .expect("running cargo build -p onionpost");
            assert!(status.success(), "cargo build -p onionpost failed");
            let binary = dir.join("onionpost");
            assert!(binary.exists(), "{} missing after build", binary.display());
            binary
        })
        .clone()
}

/// A gRPC transport to `url` with the credentials of the carrier whose secret is `secret`.
pub fn secured_transport(url: &str, secret: &str) -> anyhow::Result<onionpost_runtime::Transport> {
    use onionpost_runtime::grpc_tls::GrpcTls;
    use onionpost_runtime::seal::CarrierSecret;
    let tls = GrpcTls::from_secret(&CarrierSecret::from_text(secret)?)?;
    // The service name only labels the client's spans.
    onionpost_runtime::grpc::secured_transport(onionpost_proto::ServiceName::Admin, url, &tls)
        .map_err(|error| anyhow::anyhow!("{error}"))
}

/// A free TCP port on 127.0.0.1 (bound and released; the kernel does not hand it out again
/// at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("binding an ephemeral port")
}

/// One running `onionpost serve` process.
pub struct Node {
    child: Option<Child>,
    pub targets: String,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    /// The account portal's HTTP address (when the node runs it).
    pub portal: SocketAddr,
    pub data_dir: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Node {
    /// Starts `onionpost serve --target <targets>` with `env` added to its environment and waits
    /// until every target answers SERVING.
    pub async fn start(targets: &str, env: &[(&str, String)]) -> Node {
        let dir = tempfile::tempdir().expect("node directory");
        let data_dir = dir.path().join("data");
        let mut node = Node {
            child: None,
            targets: targets.to_owned(),
            grpc: SocketAddr::from(([127, 0, 0, 1], free_port())),
            admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
            portal: SocketAddr::from(([127, 0, 0, 1], free_port())),
            data_dir,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            log: dir.path().join("onionpost.log"),
            _dir: Some(dir),
        };
        node.spawn().await;
        node
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("node log file");
        let mut command = Command::new(onionpost_binary());
        command
            .args(["serve", "--target", &self.targets])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ONIONPOST_DATA_DIR", &self.data_dir)
            .env("ONIONPOST_GRPC_LISTEN", self.grpc.to_string())
            .env("ONIONPOST_ADMIN_LISTEN", self.admin.to_string())
            // The imap module binds its IMAP listener at start; several nodes share this host.
            .env(
                "ONIONPOST_IMAP_LISTEN",
                format!("127.0.0.1:{}", free_port()),
            )
            // So does the portal (in `all`, or when named).
            .env("ONIONPOST_PORTAL_LISTEN", self.portal.to_string())
            .env("ONIONPOST_METRICS_LISTEN", "")
            .env("ONIONPOST_LOG_FORMAT", "json")
            .env("ONIONPOST_LOG_LEVEL", "info,onionpost=debug")
            // Onions come back at once after a restart: a peer that tries while its onion is
            // away can wait on tor's stale descriptor for minutes, and these tests time the
            // restart path (the random moments are tested in runtime's backoff and onion.rs).
            // ETRN still waits its own random time, within seconds.
            .env("ONIONPOST_TOR_RESTORE_SPREAD_SECS", "0")
            .env("ONIONPOST_QUEUE_ETRN_SPREAD_SECS", "3")
            // Strangers pay stamps on every test carrier, cheaply (256 hashes): every first
            // contact goes through the asking reply and a second session. The hourly inbound
            // limits stay off here, since bursts to one identity are what several tests are
            // about; stamps.rs runs the production limits and real difficulties.
            .env("ONIONPOST_SMTP_IN_STAMP_BITS", "8")
            .env("ONIONPOST_SMTP_IN_MAX_MESSAGES_PER_HOUR_PER_IDENTITY", "0")
            .env("ONIONPOST_SMTP_IN_MAX_MESSAGES_PER_HOUR_PER_SENDER", "0")
            // First contacts land in the INBOX here, as most tests read them there; stamps.rs
            // runs the default (verified strangers wait in Requests until accepted).
            .env("ONIONPOST_ACCOUNTS_CONTACT_REQUESTS", "false")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .kill_on_drop(true);
        self.child = Some(command.spawn().expect("starting onionpost"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "onionpost --target {} exited with {status}:\n{}",
                    self.targets,
                    self.log_text()
                );
            }
            if self.healthcheck(&self.targets).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "onionpost --target {} not SERVING within 60 s:\n{}",
                self.targets,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the admin API answers `/readyz` with 200: every service SERVING and, with an
    /// onion service, tor's control connection up (SERVING alone does not say tor is there, and
    /// creating an identity needs it). Needs the admin target; fails with the log after 120 s.
    pub async fn until_ready(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let (status, body) = http_get(self.admin, "/readyz").await;
            if status == 200 {
                return Ok(());
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(120),
                "carrier not ready: {body}\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Runs `onionpost healthcheck --target <targets>` against this node; true on exit 0.
    pub async fn healthcheck(&self, targets: &str) -> bool {
        Command::new(onionpost_binary())
            .args(["healthcheck", "--timeout", "2", "--target", targets])
            .env_clear()
            .env("ONIONPOST_GRPC_LISTEN", self.grpc.to_string())
            // The carrier's secret (or the data directory holding it): gRPC asks for the
            // carrier's credentials.
            .env("ONIONPOST_DATA_DIR", &self.data_dir)
            .envs(
                self.env
                    .iter()
                    .filter(|(k, _)| k.starts_with("ONIONPOST_REMOTE_") || k == "ONIONPOST_SECRET")
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .map(|status| status.success())
            .unwrap_or(false)
    }

    /// The gRPC address other processes use to reach this node's services.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// A gRPC transport to this node's services, with the carrier's credentials (mutual TLS
    /// from its secret: the one in its environment, else the one it generated).
    pub fn grpc(&self) -> anyhow::Result<onionpost_runtime::Transport> {
        let secret = match self.env.iter().find(|(k, _)| k == "ONIONPOST_SECRET") {
            Some((_, secret)) => secret.clone(),
            None => std::fs::read_to_string(self.data_dir.join("secret"))?
                .trim()
                .to_owned(),
        };
        secured_transport(&self.grpc_url(), &secret)
    }

    /// The process id while the process runs, for tests that read its memory in /proc.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait for a clean exit (spans are flushed on the way out).
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
            Ok(Ok(status)) => assert!(
                status.success(),
                "onionpost exited with {status}:\n{}",
                self.log_text()
            ),
            _ => {
                let _ = child.kill().await;
                panic!(
                    "onionpost did not stop within 20 s of SIGTERM:\n{}",
                    self.log_text()
                );
            }
        }
    }

    /// SIGKILL, as a crash would.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts the process again with the same data directory, ports and environment.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }
}

/// A minimal HTTP/1.1 GET (tests only): status code and body.
pub async fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connecting over HTTP");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("sending request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("reading response");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}
