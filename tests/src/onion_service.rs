//! The onion service run in-process over the real runtime (configuration, gRPC server,
//! shutdown), for scenario tests and benchmarks: [`OnionServiceRun::start`] serves it on an
//! ephemeral loopback port and hands back a gRPC client; [`OnionServiceRun::stop`] shuts it
//! down the way SIGTERM would. Starting again with the same environment is a service restart:
//! same data directory, same carrier secret.

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::Path;
use std::time::Duration;

use onionpost_proto::onion::v1::onion_client::OnionClient;
use onionpost_proto::onion::v1::{GetTorStatusRequest, TorStatus};
use onionpost_runtime::Config;
use onionpost_runtime::Transport as Channel;
use onionpost_runtime::grpc_tls::GrpcTls;
use onionpost_runtime::seal::CarrierSecret;
use onionpost_runtime::service::{Listeners, run};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How the service authenticates to tor's control port.
#[derive(Debug, Clone)]
pub enum ControlAuth {
    Cookie(std::path::PathBuf),
    Password(String),
}

/// The `ONIONPOST_…` environment of an onion service using the tor at `control`, keeping its
/// files in `data_dir` and its targets in `target_ports`.
pub fn onion_env(
    data_dir: &Path,
    control: SocketAddr,
    auth: &ControlAuth,
    target_ports: (u16, u16),
) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "ONIONPOST_DATA_DIR".to_owned(),
            data_dir.display().to_string(),
        ),
        ("ONIONPOST_TOR_CONTROL".to_owned(), control.to_string()),
        (
            "ONIONPOST_TOR_TARGET_PORTS".to_owned(),
            format!("{}-{}", target_ports.0, target_ports.1),
        ),
        // Off the data directory, as operators are told to keep it.
        (
            "ONIONPOST_SECRET".to_owned(),
            "onionpost-e2e-carrier-secret-0123456789".to_owned(),
        ),
        ("ONIONPOST_METRICS_LISTEN".to_owned(), String::new()),
        (
            "ONIONPOST_SHUTDOWN_DRAIN_TIMEOUT_SECS".to_owned(),
            "5".to_owned(),
        ),
        // Onions still come back at random moments after a restart, within seconds.
        (
            "ONIONPOST_TOR_RESTORE_SPREAD_SECS".to_owned(),
            "3".to_owned(),
        ),
    ];
    match auth {
        ControlAuth::Cookie(path) => env.push((
            "ONIONPOST_TOR_COOKIE_FILE".to_owned(),
            path.display().to_string(),
        )),
        ControlAuth::Password(password) => env.push((
            "ONIONPOST_TOR_CONTROL_PASSWORD".to_owned(),
            password.clone(),
        )),
    }
    env
}

/// The environment of an onion service on a pool of tors: [`onion_env`] with every tor's
/// control address in `tor.control` and no `tor.cookie_file` (with several tors each names its
/// own cookie in PROTOCOLINFO).
pub fn pool_env(
    data_dir: &Path,
    controls: &[SocketAddr],
    target_ports: (u16, u16),
) -> Vec<(String, String)> {
    let listed: Vec<String> = controls.iter().map(ToString::to_string).collect();
    let mut env: Vec<(String, String)> = onion_env(
        data_dir,
        controls[0],
        &ControlAuth::Cookie(std::path::PathBuf::new()),
        target_ports,
    )
    .into_iter()
    .filter(|(key, _)| key != "ONIONPOST_TOR_COOKIE_FILE" && key != "ONIONPOST_TOR_CONTROL")
    .collect();
    env.push(("ONIONPOST_TOR_CONTROL".to_owned(), listed.join(",")));
    env
}

/// A block of `ports` free loopback ports (checked by binding each), below tornet's range
/// (20000 and up) and Linux's ephemeral range, from a random start.
pub fn free_port_block(ports: u16) -> std::io::Result<(u16, u16)> {
    let span = 9000_u64;
    let start = std::collections::hash_map::RandomState::new()
        .hash_one(std::time::SystemTime::now())
        % span;
    for step in 0..span / u64::from(ports) {
        let first = 10000 + u16::try_from((start + step * u64::from(ports)) % span).unwrap_or(0);
        let last = first + ports - 1;
        if last >= 19999 {
            continue;
        }
        let all_free = (first..=last).all(|port| StdTcpListener::bind(("127.0.0.1", port)).is_ok());
        if all_free {
            return Ok((first, last));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free block of target ports",
    ))
}

use std::hash::BuildHasher as _;

/// One running onion service.
#[derive(Debug)]
pub struct OnionServiceRun {
    address: SocketAddr,
    /// The carrier's gRPC credentials, from the same secret as the service's.
    tls: GrpcTls,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl OnionServiceRun {
    /// Starts the onion service with `env` and waits until its gRPC port answers.
    pub async fn start(env: Vec<(String, String)>) -> anyhow::Result<OnionServiceRun> {
        let config = Config::load(None, env)?;
        let tls = GrpcTls::from_secret(&CarrierSecret::load(&config)?)?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(
            config,
            vec![Box::new(onionpost_onion::OnionModule)],
            Listeners {
                grpc: listener,
                metrics: None,
            },
            shutdown.clone(),
        ));
        let service = OnionServiceRun {
            address,
            tls,
            shutdown,
            task,
        };
        let mut client = service.client().await?;
        let started = tokio::time::Instant::now();
        while client.get_tor_status(GetTorStatusRequest {}).await.is_err() {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "the onion service did not answer"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(service)
    }

    /// A gRPC client of it.
    pub async fn client(&self) -> anyhow::Result<OnionClient<Channel>> {
        let channel = onionpost_runtime::grpc::secured_transport(
            onionpost_proto::ServiceName::Onion,
            &format!("http://{}", self.address),
            &self.tls,
        )
        .map_err(|error| anyhow::anyhow!("{error}"))?;
        Ok(OnionClient::new(channel))
    }

    /// Its tor status.
    pub async fn tor_status(&self) -> anyhow::Result<TorStatus> {
        Ok(self
            .client()
            .await?
            .get_tor_status(GetTorStatusRequest {})
            .await?
            .into_inner())
    }

    /// Waits until `check` holds for the tor status, or fails after `within` with the last one.
    pub async fn wait_tor_status(
        &self,
        within: Duration,
        check: impl Fn(&TorStatus) -> bool,
    ) -> anyhow::Result<TorStatus> {
        let started = tokio::time::Instant::now();
        loop {
            let status = self.tor_status().await?;
            if check(&status) {
                return Ok(status);
            }
            anyhow::ensure!(
                started.elapsed() < within,
                "tor status not as expected after {within:?}: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Shuts it down as SIGTERM would and waits until it has stopped.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await??;
        Ok(())
    }
}
