//! What the queue scale-out test and benchmark share: several `onionpost serve --target
//! queue,smtp-out` worker processes on one PostgreSQL queue, draining queued recipients into one
//! SMTP sink. smtp-out reaches the sink through a SOCKS relay that stands in for tor (every onion
//! leads to the sink), so what is measured is the queue: claiming with `FOR UPDATE SKIP
//! LOCKED`, sessions, recording.
//!
//! The workers use the schema `queue` of the test database (`ONIONPOST_TEST_POSTGRES_URL`), as
//! a carrier would; every run empties it first, so two runs must not overlap.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use futures::StreamExt as _;
use onionpost_e2e::node::Node;
use onionpost_e2e::smtp_sink::SmtpSink;
use onionpost_e2e::socks_relay::SocksRelay;
use onionpost_proto::queue::v1 as queue_pb;
use onionpost_proto::queue::v1::queue_client::QueueClient;
use onionpost_queue::service::Enqueue;
use onionpost_queue::store::{self, DsnReturn, NewRecipient, Origin};
use onionpost_queue::{ManualClock, QueueService, RetryPolicy};
use onionpost_runtime::Database;
use onionpost_runtime::seal::CarrierSecret;
use tokio::time::Instant;

pub const POSTGRES_URL_ENV: &str = "ONIONPOST_TEST_POSTGRES_URL";
const SECRET: &str = "onionpost-e2e-queue-scale-secret-0123456789";
/// Destination onions; smtp-out opens at most two sessions to one onion at a time, so several
/// keep the workers busy, as a carrier's many peers would.
const DESTINATIONS: u8 = 20;

/// What one drain did.
pub struct Drained {
    pub workers: usize,
    pub recipients: usize,
    /// From making everything due to the last recipient recorded.
    pub elapsed: Duration,
    /// Message-ID → how many times the sink received it.
    pub received: BTreeMap<String, usize>,
    /// Messages still in the queue at the end.
    pub left_in_queue: u64,
}

impl Drained {
    pub fn per_second(&self) -> f64 {
        self.recipients as f64 / self.elapsed.as_secs_f64()
    }

    pub fn duplicates(&self) -> Vec<(&String, &usize)> {
        self.received.iter().filter(|(_, n)| **n > 1).collect()
    }
}

fn message_id(n: usize) -> String {
    format!("<scale-{n:05}@{}.onion>", "a".repeat(56))
}

/// Queues `recipients` messages of one recipient each (none due yet), starts `workers` worker
/// processes, makes everything due at once, and waits until the queue is empty.
pub async fn drain(url: &str, workers: usize, recipients: usize) -> anyhow::Result<Drained> {
    let database = Database::open_postgres(url, "queue", store::MIGRATIONS).await?;
    let Database::Postgres(pool) = &database else {
        anyhow::bail!("not PostgreSQL");
    };
    for table in ["recipients", "messages", "carry_agreements"] {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(pool)
            .await?;
    }
    let pool = pool.clone();

    // Queued an hour ahead, so nothing is due while the workers start.
    let far = chrono::Utc::now().timestamp_millis() + 3_600_000;
    let service = QueueService::new(
        store::for_database(database),
        CarrierSecret::from_text(SECRET)?.sealer(onionpost_queue::module::BODY_SEAL_PURPOSE),
        Arc::new(ManualClock::at_ms(far)),
        RetryPolicy {
            retry_min: Duration::from_secs(60),
            retry_max: Duration::from_secs(3600),
            lifetime: Duration::from_secs(86_400),
        },
    );
    let queued = Instant::now();
    let mut enqueues = futures::stream::iter(0..recipients)
        .map(|n| {
            let service = service.clone();
            async move {
                let destination = char::from(b'a' + (n % usize::from(DESTINATIONS)) as u8);
                let id = message_id(n);
                service
                    .enqueue(Enqueue {
                        idempotency_key: format!("scale-{n}"),
                        origin: Origin::Submission,
                        account_id: "acct-a".into(),
                        sender_identity_id: "id-alice".into(),
                        reverse_path: format!("alice@{}.onion", "a".repeat(56)),
                        recipients: vec![NewRecipient {
                            // A real v3 onion per destination: recipients are parsed with
                            // their checksum verified.
                            address: format!(
                                "rcpt{n}@{}",
                                onionpost_proto::address::OnionHost::from_ed25519(
                                    &[destination as u8; 32]
                                )
                            ),
                            notify: vec![],
                            original_recipient: String::new(),
                        }],
                        message: format!(
                            "Message-ID: {id}\r\nSubject: scale {n}\r\n\r\nmessage {n}\r\n"
                        )
                        .into_bytes(),
                        message_id: id,
                        envelope_id: String::new(),
                        dsn_return: DsnReturn::Unspecified,
                        fan_out_immediately: false,
                    })
                    .await
            }
        })
        .buffer_unordered(16);
    while let Some(result) = enqueues.next().await {
        result?;
    }
    eprintln!(
        "queue_scale: {recipients} recipients queued in {:?}",
        queued.elapsed()
    );

    let sink = SmtpSink::start().await?;
    let relay = SocksRelay::start(sink.address).await?;
    let mut nodes = Vec::with_capacity(workers);
    for _ in 0..workers {
        let node = Node::start(
            "queue,smtp-out",
            &[
                ("ONIONPOST_DATABASE_URL", url.to_owned()),
                ("ONIONPOST_SECRET", SECRET.to_owned()),
                ("ONIONPOST_TOR_SOCKS", relay.address.to_string()),
                ("ONIONPOST_LOG_LEVEL", "info".to_owned()),
            ],
        )
        .await;
        nodes.push(node);
    }

    // Everything due now; each worker is nudged (RetryNow wakes its scheduler) so all start
    // together rather than at their next idle check.
    let started = Instant::now();
    let now = chrono::Utc::now().timestamp_millis();
    sqlx::query("UPDATE recipients SET next_attempt_at_ms = $1")
        .bind(now)
        .execute(&pool)
        .await?;
    let any_queue_id: String = sqlx::query_scalar("SELECT queue_id FROM messages LIMIT 1")
        .fetch_one(&pool)
        .await?;
    for node in &nodes {
        let channel = node.grpc()?;
        QueueClient::new(channel)
            .retry_now(queue_pb::RetryNowRequest {
                queue_id: any_queue_id.clone(),
            })
            .await?;
    }
    let limit = Duration::from_secs(120 + (recipients as u64) / 10);
    let elapsed = loop {
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages")
            .fetch_one(&pool)
            .await?;
        if left == 0 {
            break started.elapsed();
        }
        ensure!(
            started.elapsed() < limit,
            "{left} messages still queued after {limit:?}; sink has {}\n{}",
            sink.messages(),
            nodes
                .iter()
                .map(Node::log_text)
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for node in &mut nodes {
        node.stop().await;
    }
    let mut received = BTreeMap::new();
    for body in &sink.seen.lock().unwrap().messages {
        let text = String::from_utf8_lossy(body);
        let id = text
            .lines()
            .find_map(|line| line.strip_prefix("Message-ID: "))
            .context("a message without Message-ID")?
            .trim()
            .to_owned();
        *received.entry(id).or_insert(0) += 1;
    }
    let left_in_queue: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages")
        .fetch_one(&pool)
        .await?;
    Ok(Drained {
        workers,
        recipients,
        elapsed,
        received,
        left_in_queue: u64::try_from(left_in_queue).unwrap_or_default(),
    })
}

/// Every message exactly once.
pub fn check(drained: &Drained) -> anyhow::Result<()> {
    let missing: Vec<String> = (0..drained.recipients)
        .map(message_id)
        .filter(|id| !drained.received.contains_key(id))
        .collect();
    ensure!(
        missing.is_empty(),
        "{} never delivered, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let duplicates = drained.duplicates();
    ensure!(
        duplicates.is_empty(),
        "{} delivered more than once, e.g. {:?}",
        duplicates.len(),
        &duplicates[..duplicates.len().min(5)]
    );
    ensure!(
        drained.received.len() == drained.recipients,
        "the sink got {} distinct messages, not {}",
        drained.received.len(),
        drained.recipients
    );
    ensure!(drained.left_in_queue == 0);
    Ok(())
}
