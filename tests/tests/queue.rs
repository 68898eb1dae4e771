//! The queue with the real smtp-out over the private Tor network: a queued message reaches an
//! SMTP sink behind an onion; a destination that answers 421 is retried and delivered once when
//! it recovers; and past the lifetime a message to an onion nobody serves fails with a DSN
//! queued for the sender's INBOX. (DSN delivery into imap is covered with a fake imap server
//! in services/queue/tests/scheduler.rs.)

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::ensure;
use onionpost_e2e::TorNet;
use onionpost_e2e::smtp_sink::SmtpSink;
use onionpost_proto::ServiceName;
use onionpost_proto::smtp_out::v1::smtp_out_server::SmtpOutServer;
use onionpost_queue::service::Enqueue;
use onionpost_queue::store::{self, DsnReturn, NewRecipient, Origin, RecipientState};
use onionpost_queue::{ManualClock, QueueError, QueueService, RetryPolicy, Scheduler};
use onionpost_runtime::seal::CarrierSecret;
use onionpost_runtime::{Database, Directory};
use onionpost_smtp_out::grpc::SmtpOutGrpc;
use onionpost_smtp_out::session::Timeouts;
use onionpost_smtp_out::{SmtpOutService, SocksEndpoint};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const ONION_TIMEOUT: Duration = Duration::from_secs(90);

fn request(key: &str, to: &str) -> Enqueue {
    Enqueue {
        idempotency_key: key.into(),
        origin: Origin::Submission,
        account_id: "acct-a".into(),
        sender_identity_id: "id-alice".into(),
        reverse_path: format!("alice@{}.onion", "a".repeat(56)),
        recipients: vec![NewRecipient {
            address: to.into(),
            notify: vec![],
            original_recipient: String::new(),
        }],
        message: format!("Message-ID: <{key}@a.onion>\r\nSubject: {key}\r\n\r\nhello {key}\r\n")
            .into_bytes(),
        message_id: format!("<{key}@a.onion>"),
        envelope_id: String::new(),
        dsn_return: DsnReturn::Unspecified,
        fan_out_immediately: false,
    }
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, check: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        ensure!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn gone(service: &QueueService, queue_id: &str) -> bool {
    matches!(service.get(queue_id).await, Err(QueueError::NotFound(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_mail_reaches_an_onion_is_retried_and_expires_with_a_dsn() -> anyhow::Result<()> {
    let tornet = TorNet::start(2).await?;
    let sink = SmtpSink::start().await?;
    let refusing = sink.refusing.clone();
    let messages = sink.seen.clone();
    let mut control = tornet.client(0).control().await?;
    control.set_events(&["HS_DESC"]).await?;
    let (service_id, _key) = control.add_onion_new(&[(25, sink.address)]).await?;
    control
        .wait_hs_desc_uploaded(&service_id, ONION_TIMEOUT)
        .await?;
    let onion = format!("{service_id}.onion");

    // The real smtp-out, served over gRPC on loopback, dialling through client 1's SOCKS port.
    let smtp_out = SmtpOutService::new(SocksEndpoint::Fixed(tornet.client(1).socks_addr()))
        .with_timeouts(Timeouts::default(), Duration::from_secs(30));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let grpc_address = listener.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SmtpOutServer::new(SmtpOutGrpc::new(smtp_out)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let directory = Directory::default();
    directory
        .register_remote(ServiceName::SmtpOut, &format!("http://{grpc_address}"))
        .map_err(|error| anyhow::anyhow!("{error}"))?;

    let dir = tempfile::tempdir()?;
    let database =
        Database::open_sqlite(&dir.path().join("queue.sqlite3"), store::MIGRATIONS).await?;
    let clock = ManualClock::at_ms(chrono_now_ms());
    let service = QueueService::new(
        store::for_database(database),
        CarrierSecret::from_text(&"s".repeat(40))?.sealer("queue-body"),
        Arc::new(clock.clone()),
        RetryPolicy {
            retry_min: Duration::from_secs(60),
            retry_max: Duration::from_secs(3600),
            lifetime: Duration::from_secs(600),
        },
    );
    let shutdown = CancellationToken::new();
    let scheduler = tokio::spawn(Scheduler::new(service.clone(), directory).run(shutdown.clone()));

    // 1. Straight through: queued, delivered over tor, gone from the queue.
    let first = service
        .enqueue(request("e2e-1", &format!("carol@{onion}")))
        .await?;
    // A fresh onion can take a few tries before its descriptor is fetchable from client 1;
    // the queue's own retries (clock moved on) cover that.
    let started = tokio::time::Instant::now();
    wait_until("first message delivered", ONION_TIMEOUT, || async {
        if gone(&service, &first.queue_id).await {
            return true;
        }
        if let Ok(message) = service.get(&first.queue_id).await
            && message.recipients[0].state == RecipientState::TemporaryFailure
        {
            clock.advance_ms(75_000);
            service.wake();
        }
        false
    })
    .await?;
    println!(
        "queue over tor: first message delivered in {:?}",
        started.elapsed()
    );
    ensure!(sink.messages() == 1);

    // 2. The destination answers 421: retried on the schedule, delivered once when it recovers.
    refusing.store(true, Ordering::SeqCst);
    let second = service
        .enqueue(request("e2e-2", &format!("carol@{onion}")))
        .await?;
    wait_until("a temporary failure", ONION_TIMEOUT, || async {
        service
            .get(&second.queue_id)
            .await
            .is_ok_and(|message| message.recipients[0].attempts >= 1)
    })
    .await?;
    let message = service.get(&second.queue_id).await?;
    ensure!(message.recipients[0].state == RecipientState::TemporaryFailure);
    ensure!(
        message.recipients[0]
            .last_reply
            .as_ref()
            .is_some_and(|reply| reply.code == 421)
    );
    refusing.store(false, Ordering::SeqCst);
    clock.advance_ms(75_000);
    service.wake();
    wait_until("second message delivered", ONION_TIMEOUT, || {
        gone(&service, &second.queue_id)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    {
        let seen = &messages.lock().unwrap().messages;
        ensure!(seen.len() == 2, "one copy each, got {}", seen.len());
        ensure!(String::from_utf8_lossy(&seen[1]).contains("hello e2e-2"));
    }

    // 3. An onion nobody serves, past the lifetime: permanent failure and a DSN for alice.
    let absent = onionpost_keys::onion_host_from_ed25519(&[9u8; 32]);
    let third = service
        .enqueue(request("e2e-3", &format!("dave@{absent}")))
        .await?;
    wait_until("attempt to the absent onion", ONION_TIMEOUT, || async {
        service
            .get(&third.queue_id)
            .await
            .is_ok_and(|message| message.recipients[0].attempts >= 1)
    })
    .await?;
    clock.advance_ms(601_000);
    service.wake();
    wait_until("expired", ONION_TIMEOUT, || gone(&service, &third.queue_id)).await?;
    let (local, _) = service
        .list(
            &store::ListFilter {
                origin: Some(Origin::Local),
                ..Default::default()
            },
            10,
            "",
        )
        .await?;
    ensure!(local.len() == 1, "one DSN queued for alice's INBOX");
    let report = service
        .open_body(&local[0].queue_id)
        .await?
        .unwrap_or_default();
    let report = String::from_utf8_lossy(&report);
    ensure!(
        report.contains(&format!("Final-Recipient: rfc822; dave@{absent}")),
        "{report}"
    );
    ensure!(
        report.contains("Action: failed\r\nStatus: 4.4.7"),
        "{report}"
    );
    ensure!(report.contains("Subject: e2e-3"), "{report}");

    shutdown.cancel();
    scheduler.await?;
    drop(control);
    tornet.shutdown();
    Ok(())
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}
