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

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use onionpost_e2e::onion_service::{OnionServiceRun, free_port_block, pool_env};
use onionpost_e2e::{TorClient, TorNet};
use onionpost_proto::onion::v1::CreateOnionRequest;
use tokio::time::Instant;

const DEFAULT_IDENTITIES: u32 = 2000;
const DEFAULT_POOL: usize = 4;
/// How long one layout may take to bring every identity ONLINE before it is reported as not
/// getting there (one tor with thousands of onions stops answering its control port).
const LAYOUT_LIMIT: Duration = Duration::from_secs(900);

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

/// Waits until `count` onions are ONLINE, printing progress every ten seconds; `Err` with the
/// number online when `deadline` passes first.
async fn wait_all_online(
    service: &OnionServiceRun,
    count: u32,
    deadline: Instant,
) -> anyhow::Result<Result<Duration, u32>> {
    let started = Instant::now();
    let mut reported = Instant::now();
    loop {
        let status = service.tor_status().await?;
        if status.onions_online >= count {
            return Ok(Ok(started.elapsed()));
        }
        if Instant::now() >= deadline {
            return Ok(Err(status.onions_online));
        }
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
    /// CreateOnion calls that failed (tor did not answer in time) and were tried again.
    refusals: u32,
    /// `Err`: how many were created when the layout gave up.
    created_in: Result<Duration, u32>,
    /// `Err`: how many were ONLINE when the layout gave up.
    online_in: Result<Duration, u32>,
    back_in: Result<Duration, u32>,
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
    // Four target addresses, each with a quarter of the identities' ports (tor.target_host
    // with several addresses lifts the 2,500 ceiling of one address).
    let hosts = 4;
    let ports = u16::try_from(count.div_ceil(hosts) * 4).context("too many identities")?;
    let controls: Vec<SocketAddr> = pool.iter().map(|tor| tor.control_addr()).collect();
    let mut env = pool_env(data.path(), &controls, free_port_block(ports)?);
    env.push((
        "ONIONPOST_TOR_TARGET_HOST".to_owned(),
        (0..hosts)
            .map(|host| format!("127.0.0.{}", host + 2))
            .collect::<Vec<_>>()
            .join(","),
    ));
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
    let deadline = started + LAYOUT_LIMIT;
    let mut refusals = 0_u32;
    let mut created = 0;
    'create: for index in 0..count {
        // A tor with too many onions stops answering ADD_ONION in time: counted, and tried
        // again (CreateOnion is idempotent) until the timeout.
        while let Err(status) = client
            .create_onion(CreateOnionRequest {
                identity_id: format!("identity-{index:04}"),
                purposes: Vec::new(),
            })
            .await
        {
            refusals += 1;
            if refusals % 10 == 1 {
                eprintln!("  identity {index}: {}", status.message());
            }
            if Instant::now() >= deadline {
                break 'create;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        created = index + 1;
        if (index + 1) % 250 == 0 {
            eprintln!(
                "  {:>6.1} s: {} created",
                started.elapsed().as_secs_f64(),
                index + 1
            );
        }
    }
    let created_in = if created == count {
        Ok(started.elapsed())
    } else {
        Err(created)
    };
    let online_in = wait_all_online(&service, count, deadline)
        .await?
        .map(|_| started.elapsed());
    let per_tor = pids
        .iter()
        .zip(&before)
        .map(|(pid, (cpu, rss))| Ok((cpu_seconds(*pid)? - cpu, *rss, rss_mib(*pid)?)))
        .collect::<anyhow::Result<_>>()?;

    service.stop().await?;
    let back_in = match online_in {
        Ok(_) => {
            let service = OnionServiceRun::start(env).await?;
            let back = wait_all_online(&service, count, Instant::now() + LAYOUT_LIMIT).await?;
            service.stop().await?;
            back
        }
        Err(online) => Err(online),
    };
    Ok(Figures {
        tors: pool.len(),
        refusals,
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

    let secs = |outcome: Result<Duration, u32>| match outcome {
        Ok(duration) => format!("{:.1} s", duration.as_secs_f64()),
        Err(reached) => format!("gave up ({reached} of {count})"),
    };
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
            "CreateOnion failures (tried again)",
            single.refusals.to_string(),
            spread.refusals.to_string(),
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
    if let (Ok(one), Ok(many)) = (single.online_in, spread.online_in) {
        println!(
            "{:<40} {:>26} {:>34}",
            "ratio all ONLINE (1 tor / pool)",
            "",
            format!("{:.2}", one.as_secs_f64() / many.as_secs_f64())
        );
    }
    println!(
        "(a layout gives up after {} s: one tor with thousands of onions stops answering its \
         control port in time, and each reconnection adds every onion again)",
        LAYOUT_LIMIT.as_secs()
    );
    Ok(())
}
