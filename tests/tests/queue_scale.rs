//! Scale-out (issue #7): three `onionpost serve --target queue,smtp-out` worker processes share
//! one PostgreSQL queue and drain 10,000 queued recipients into a local SMTP sink. Each claims
//! due recipients with `FOR UPDATE SKIP LOCKED`; none may be delivered twice and none lost.
//! (The benchmark `queue_workers` prints throughput for 1, 2 and 3 workers.)

mod queue_scale_support;

use queue_scale_support::{POSTGRES_URL_ENV, check, drain};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_drain_ten_thousand_recipients_once_each() -> anyhow::Result<()> {
    let url = std::env::var(POSTGRES_URL_ENV).map_err(|_| {
        anyhow::anyhow!(
            "{POSTGRES_URL_ENV} is not set: this test needs PostgreSQL (tests/run.sh starts it)"
        )
    })?;
    let drained = drain(&url, 3, 10_000).await?;
    check(&drained)?;
    println!(
        "queue_scale: 3 workers delivered {} recipients once each in {:?} ({:.0}/s)",
        drained.recipients,
        drained.elapsed,
        drained.per_second()
    );
    Ok(())
}
