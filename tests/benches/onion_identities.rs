//! Benchmark: many identities on one tor, and the same on a pool of tors, side by side. Brings
//! up the private Tor network, runs the onion service in-process, creates the identities
//! through gRPC, and prints for each layout how long until all are ONLINE (first descriptor
//! upload), each tor's CPU time and resident memory, and how long until all are ONLINE again
//! after the onion service restarts (every key re-added from the store).
//!
//!   cargo bench --profile dev -p onionpost-e2e --bench onion_identities [-- <count> [<tors>]]
//!
//! Defaults: 2000 identities, a pool of 4. The dev profile keeps the machine from a full
//! release build; tor's side, which dominates, is the same either way.

use std::time::Duration;

use anyhow::Context as _;
use onionpost_e2e::onion_service::{ControlAuth, OnionServiceRun, free_port_block, onion_env};
use onionpost_e2e::{TorClient, TorNet};
use onionpost_proto::onion::v1::CreateOnionRequest;
use tokio::time::Instant;

const DEFAULT_IDENTITIES: u32 = 2000;
const DEFAULT_POOL: usize = 4;
const ALL_ONLINE_TIMEOUT: Duration = Duration::from_secs(1800);

/// A process's resident memory in MiB, from /proc.
fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    Ok(kib / 1024.0)
}

/// A process's CPU time (user and system) in seconds, from /proc (clock ticks of 1/100 s).
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').context("no command name")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
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
                "  {:>6.1} s: {} online, {} publishing, {} failed",
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

/// What one layout measured.
struct Figures {
    tors: usize,
    created_in: Duration,
    online_in: Duration,
    back_in: Duration,
    /// Per tor: CPU seconds from start to all online, RSS before and after.
    per_tor: Vec<(f64, f64, f64)>,
}

/// `count` identities on the tors `pool`.
async fn run(pool: &[&TorClient], count: u32) -> anyhow::Result<Figures> {
    let pids: Vec<u32> = pool
        .iter()
        .map(|tor| tor.pid().context("tor has no pid"))
        .collect::<anyhow::Result<_>>()?;
    let data = tempfile::tempdir()?;
    let ports = u16::try_from(count * 4).context("too many identities for one port block")?;
    let controls: Vec<String> = pool
        .iter()
        .map(|tor| tor.control_addr().to_string())
        .collect();
    // Each tor names its own cookie file (no tor.cookie_file with a pool).
    let mut env: Vec<(String, String)> = onion_env(
        data.path(),
        pool[0].control_addr(),
        &ControlAuth::Cookie(pool[0].cookie_file().to_owned()),
        free_port_block(ports)?,
    )
    .into_iter()
    .filter(|(key, _)| key != "ONIONPOST_TOR_COOKIE_FILE" && key != "ONIONPOST_TOR_CONTROL")
    .collect();
    env.push(("ONIONPOST_TOR_CONTROL".to_owned(), controls.join(",")));
    let service = OnionServiceRun::start(env.clone()).await?;
    service
        .wait_tor_status(Duration::from_secs(30), |status| {
            status.tors.iter().all(|tor| tor.control_connected)
        })
        .await?;
    let before: Vec<(f64, f64)> = pids
        .iter()
        .map(|pid| Ok((cpu_seconds(*pid)?, rss_mib(*pid)?)))
        .collect::<anyhow::Result<_>>()?;

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
    let per_tor = pids
        .iter()
        .zip(&before)
        .map(|(pid, (cpu, rss))| Ok((cpu_seconds(*pid)? - cpu, *rss, rss_mib(*pid)?)))
        .collect::<anyhow::Result<_>>()?;

    service.stop().await?;
    let restarted = Instant::now();
    let service = OnionServiceRun::start(env).await?;
    wait_all_online(&service, count).await?;
    let back_in = restarted.elapsed();
    service.stop().await?;
    Ok(Figures {
        tors: pool.len(),
        created_in,
        online_in,
        back_in,
        per_tor,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; the numbers among the arguments are count and pool size.
    let numbers: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|argument| argument.parse::<u32>().ok())
        .collect();
    let count = numbers.first().copied().unwrap_or(DEFAULT_IDENTITIES);
    let pool_size = numbers
        .get(1)
        .map_or(DEFAULT_POOL, |size| *size as usize)
        .max(2);
    // Fresh tors for each layout: client 0 alone, then clients 1..=pool_size.
    let tornet = TorNet::start(1 + pool_size).await?;
    eprintln!("{count} identities on one tor");
    let single = run(&[tornet.client(0)], count).await?;
    eprintln!("{count} identities on a pool of {pool_size} tors");
    let pool: Vec<&TorClient> = (1..=pool_size).map(|index| tornet.client(index)).collect();
    let spread = run(&pool, count).await?;
    tornet.shutdown();

    let secs = |duration: Duration| format!("{:.1} s", duration.as_secs_f64());
    let per_tor = |figures: &Figures, pick: fn(&(f64, f64, f64)) -> f64, unit: &str| {
        figures
            .per_tor
            .iter()
            .map(|tor| format!("{:.1}", pick(tor)))
            .collect::<Vec<_>>()
            .join(" / ")
            + unit
    };
    println!();
    println!("{count} identities' onions: one tor against a pool (private network, debug build)");
    println!(
        "{:<40} {:>26} {:>34}",
        "measure",
        "1 tor",
        format!("{} tors", spread.tors)
    );
    let rows: Vec<(&str, String, String)> = vec![
        (
            "CreateOnion of all (sequential)",
            secs(single.created_in),
            secs(spread.created_in),
        ),
        (
            "first CreateOnion to all ONLINE",
            secs(single.online_in),
            secs(spread.online_in),
        ),
        (
            "service restart to all ONLINE again",
            secs(single.back_in),
            secs(spread.back_in),
        ),
        (
            "tor CPU to all ONLINE, each tor",
            per_tor(&single, |tor| tor.0, " s"),
            per_tor(&spread, |tor| tor.0, " s"),
        ),
        (
            "tor RSS before, each tor",
            per_tor(&single, |tor| tor.1, " MiB"),
            per_tor(&spread, |tor| tor.1, " MiB"),
        ),
        (
            "tor RSS with all ONLINE, each tor",
            per_tor(&single, |tor| tor.2, " MiB"),
            per_tor(&spread, |tor| tor.2, " MiB"),
        ),
    ];
    for (measure, one, many) in rows {
        println!("{measure:<40} {one:>26} {many:>34}");
    }
    println!(
        "{:<40} {:>26} {:>34}",
        "ratio all ONLINE (1 tor / pool)",
        "",
        format!(
            "{:.2}",
            single.online_in.as_secs_f64() / spread.online_in.as_secs_f64()
        )
    );
    Ok(())
}
