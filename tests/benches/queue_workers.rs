//! Queue throughput with 1, 2 and 3 worker processes on one PostgreSQL queue, draining queued
//! recipients into a local SMTP sink (smtp-out through a SOCKS relay that stands in for tor, so
//! the queue is what is measured). Prints a table; needs `ONIONPOST_TEST_POSTGRES_URL`.
//!
//! `cargo bench --profile dev -p onionpost-e2e --bench queue_workers` (the workers are the
//! `onionpost` binary of the bench's profile, which the harness builds as a dev build);
//! `QUEUE_BENCH_RECIPIENTS` changes the size (default 5,000).

#[path = "../tests/queue_scale_support/mod.rs"]
mod queue_scale_support;

use queue_scale_support::{POSTGRES_URL_ENV, check, drain};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var(POSTGRES_URL_ENV).map_err(|_| {
        anyhow::anyhow!("{POSTGRES_URL_ENV} is not set: the bench needs PostgreSQL")
    })?;
    let recipients = std::env::var("QUEUE_BENCH_RECIPIENTS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(5_000);
    let mut rows = Vec::new();
    for workers in 1..=3 {
        let drained = drain(&url, workers, recipients).await?;
        check(&drained)?;
        rows.push((workers, drained.elapsed, drained.per_second()));
    }
    println!();
    println!("queue drain, {recipients} recipients, one PostgreSQL queue, local SMTP sink");
    println!(
        "{:>8} {:>12} {:>14} {:>9}",
        "workers", "seconds", "recipients/s", "speed-up"
    );
    let base = rows[0].2;
    for (workers, elapsed, rate) in rows {
        println!(
            "{workers:>8} {:>12.2} {rate:>14.0} {:>8.2}x",
            elapsed.as_secs_f64(),
            rate / base
        );
    }
    Ok(())
}
