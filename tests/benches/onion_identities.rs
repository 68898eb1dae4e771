//! Benchmark: 200 identities on one tor. Brings up the private Tor network, runs the onion
//! service in-process on one client tor, creates the identities through gRPC, and prints how
//! long until all are ONLINE (first descriptor upload), tor's resident memory before and
//! after, and how long until all are ONLINE again after the onion service restarts (every
//! key re-added from the store).
//!
//!   cargo bench --profile dev -p onionpost-e2e --bench onion_identities [-- <count>]
//!
//! The dev profile keeps the machine from a full release build; tor's side, which dominates,
//! is the same either way.

use std::time::Duration;

use anyhow::Context as _;
use onionpost_e2e::TorNet;
use onionpost_e2e::onion_service::{ControlAuth, OnionServiceRun, free_port_block, onion_env};
use onionpost_proto::onion::v1::CreateOnionRequest;
use tokio::time::Instant;

const DEFAULT_IDENTITIES: u32 = 200;
const ALL_ONLINE_TIMEOUT: Duration = Duration::from_secs(600);

/// tor's resident memory in MiB, from /proc.
fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    Ok(kib / 1024.0)
}

/// Waits until `count` onions are ONLINE, printing progress every ten seconds.
async fn wait_all_online(service: &OnionServiceRun, count: u32) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut reported = Instant::now();
    loop {
        let status = service.tor_status().await?;
        if status.onions_online >= count {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < ALL_ONLINE_TIMEOUT,
            "not all online after {ALL_ONLINE_TIMEOUT:?}: {status:?}"
        );
        if reported.elapsed() >= Duration::from_secs(10) {
            eprintln!(
                "  {:>5.1} s: {} online, {} publishing, {} failed",
                started.elapsed().as_secs_f64(),
                status.onions_online,
                status.onions_publishing,
                status.onions_failed
            );
            reported = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; the first number among the arguments is the count.
    let count = std::env::args()
        .skip(1)
        .find_map(|argument| argument.parse::<u32>().ok())
        .unwrap_or(DEFAULT_IDENTITIES);
    let tornet = TorNet::start(1).await?;
    let tor = tornet.client(0);
    let pid = tor.pid().context("tor has no pid")?;
    let data = tempfile::tempdir()?;
    let ports = u16::try_from(count * 4).context("too many identities")?;
    let env = onion_env(
        data.path(),
        tor.control_addr(),
        &ControlAuth::Cookie(tor.cookie_file().to_owned()),
        free_port_block(ports)?,
    );
    let service = OnionServiceRun::start(env.clone()).await?;
    service
        .wait_tor_status(Duration::from_secs(30), |status| status.control_connected)
        .await?;
    let rss_before = rss_mib(pid)?;

    let mut client = service.client().await?;
    let started = Instant::now();
    for index in 0..count {
        client
            .create_onion(CreateOnionRequest {
                identity_id: format!("identity-{index:04}"),
                purposes: Vec::new(),
            })
            .await?;
    }
    let created_in = started.elapsed();
    wait_all_online(&service, count).await?;
    let online_in = started.elapsed();
    let rss_after = rss_mib(pid)?;

    service.stop().await?;
    let restarted = Instant::now();
    let service = OnionServiceRun::start(env).await?;
    wait_all_online(&service, count).await?;
    let back_in = restarted.elapsed();
    let rss_restored = rss_mib(pid)?;
    service.stop().await?;
    tornet.shutdown();

    println!();
    println!("onion identities on one tor (private network, debug build)");
    println!("{:<52} {:>12}", "measure", "value");
    println!("{:<52} {:>12}", "identities", count);
    println!(
        "{:<52} {:>10.2} s",
        "CreateOnion of all (sequential)",
        created_in.as_secs_f64()
    );
    println!(
        "{:<52} {:>10.2} s",
        "from first CreateOnion to all ONLINE",
        online_in.as_secs_f64()
    );
    println!(
        "{:<52} {:>10.2} s",
        "service restart to all ONLINE again",
        back_in.as_secs_f64()
    );
    println!("{:<52} {:>8.1} MiB", "tor RSS with no onions", rss_before);
    println!(
        "{:<52} {:>8.1} MiB",
        "tor RSS with all onions online", rss_after
    );
    println!(
        "{:<52} {:>8.1} MiB",
        "tor RSS after the re-add", rss_restored
    );
    println!(
        "{:<52} {:>8.1} KiB",
        "tor RSS per identity",
        (rss_after - rss_before) * 1024.0 / f64::from(count.max(1))
    );
    Ok(())
}
