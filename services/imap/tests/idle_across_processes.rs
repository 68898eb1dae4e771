//! Two imap processes on one PostgreSQL (issue 24): a change made through one wakes IDLE in the
//! other. Each instance is what an `onionpost serve --target imap` replica runs: an
//! [`ImapService`] with its own pool, change hub, change follower, IMAP listener and gRPC
//! server; the two share nothing but the database schema.
//!
//! Needs PostgreSQL (`ONIONPOST_TEST_POSTGRES_URL`, which tests/run.sh sets) by the rule of the
//! store suites: without it the test fails, unless `ONIONPOST_TEST_SKIP_POSTGRES=1`.

mod imap_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use imap_support::{Client, message};
use onionpost_imap::changes::LISTENER_NAME;
use onionpost_imap::grpc::ImapGrpc;
use onionpost_imap::server::{ImapServer, Limits, ListenerKind};
use onionpost_imap::service::{ImapService, default_settings};
use onionpost_imap::store::MIGRATIONS;
use onionpost_imap::{CarrierSecret, SystemClock};
use onionpost_proto::imap::v1 as pb;
use onionpost_proto::imap::v1::imap_client::ImapClient;
use onionpost_runtime::Database;
use onionpost_runtime::conformance::{drop_schema, fresh_schema, postgres_url};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

const LABEL: &str = "idle_across_processes";
const PASSWORD: &str = "correct horse battery";
/// What the issue asks of a wake-up from another process.
const WAKE_BOUND: Duration = Duration::from_secs(1);
/// How long a test waits for a wake-up before it fails.
const GIVE_UP: Duration = Duration::from_secs(5);

/// One imap replica.
struct Instance {
    service: ImapService,
    imap: SocketAddr,
    grpc: SocketAddr,
    _stop: DropGuard,
}

async fn instance(url: &str, schema: &str) -> Instance {
    let database = Database::open_postgres(url, schema, MIGRATIONS)
        .await
        .unwrap();
    let secret = CarrierSecret::from_text("idle-across-processes-secret-0123456789").unwrap();
    let service = ImapService::open(database, secret, Arc::new(SystemClock), default_settings())
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let follower = service
        .change_follower()
        .expect("on PostgreSQL the service follows other processes' changes");
    tokio::spawn(follower.run(stop.clone()));

    let imap_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let imap = imap_listener.local_addr().unwrap();
    let server = ImapServer::new(service.mail_store(), Limits::default(), None);
    let imap_stop = stop.clone();
    tokio::spawn(async move {
        server
            .serve(imap_listener, ListenerKind::Clearnet, imap_stop)
            .await
    });

    let grpc_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = grpc_listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::imap_server::ImapServer::new(ImapGrpc::new(
                service.clone(),
            )))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
                stop.clone().cancelled_owned(),
            ),
    );
    Instance {
        service,
        imap,
        grpc,
        _stop: stop.drop_guard(),
    }
}

/// Waits until `count` change listeners are connected and listening.
async fn listeners_ready(pool: &PgPool, count: i64) {
    let deadline = Instant::now() + GIVE_UP;
    loop {
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = $1 AND query LIKE 'LISTEN%'",
        )
        .bind(LISTENER_NAME)
        .fetch_one(pool)
        .await
        .unwrap();
        if listening >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{listening} of {count} change listeners after {GIVE_UP:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn logged_in(address: SocketAddr) -> Client {
    let (mut client, greeting) = Client::connect_tcp(address).await;
    assert!(greeting.starts_with("* OK"), "{greeting}");
    let reply = client
        .command("l", &format!("LOGIN alice \"{PASSWORD}\""))
        .await;
    assert!(reply.last().unwrap().starts_with("l OK"), "{reply:?}");
    client
}

/// Reads IDLE's untagged lines until `wanted`; how long after `since` it came.
async fn woken(idle: &mut Client, wanted: &str, since: Instant) -> Duration {
    let mut seen = Vec::new();
    let waited = tokio::time::timeout(GIVE_UP, async {
        loop {
            let line = idle.line().await;
            if line == wanted {
                return since.elapsed();
            }
            assert!(!line.is_empty(), "the IDLE session ended: {seen:?}");
            seen.push(line);
        }
    })
    .await;
    waited
        .unwrap_or_else(|_| panic!("IDLE on B did not see {wanted:?} within {GIVE_UP:?}: {seen:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_imap_process_wakes_idle_in_the_other() {
    let Some(url) = postgres_url(LABEL) else {
        return;
    };
    let schema = fresh_schema(LABEL);
    let a = instance(&url, &schema).await;
    let b = instance(&url, &schema).await;
    let database = Database::open_postgres(&url, &schema, MIGRATIONS)
        .await
        .unwrap();
    let Database::Postgres(pool) = &database else {
        unreachable!("opened on PostgreSQL");
    };
    listeners_ready(pool, 2).await;

    let account = a
        .service
        .create_account("alice", PASSWORD, "")
        .await
        .unwrap();
    let onion = onionpost_proto::address::OnionHost::from_ed25519(&[b'a'; 32]);
    a.service
        .add_identity(
            "id-alice",
            &account.record.account_id,
            &format!("alice@{onion}"),
            "Alice",
        )
        .await
        .unwrap();

    let mut idle = logged_in(b.imap).await;
    let reply = idle.command("s", "SELECT INBOX").await;
    assert!(reply.iter().any(|line| line == "* 0 EXISTS"), "{reply:?}");
    idle.send("i IDLE\r\n").await;
    assert_eq!(idle.line().await, "+ idling");

    // An APPEND from a mail client connected to A.
    let mut writer = logged_in(a.imap).await;
    let body = message("across", "bob@example.org", "appended through A");
    let sent = Instant::now();
    let reply = writer
        .command("a", &format!("APPEND INBOX {{{}+}}\r\n{body}", body.len()))
        .await;
    let appended = sent.elapsed();
    assert!(
        reply.last().unwrap().starts_with("a OK [APPENDUID"),
        "{reply:?}"
    );
    let latency = woken(&mut idle, "* 1 EXISTS", sent).await;
    println!(
        "{LABEL}: APPEND through A woke IDLE on B {latency:?} after it was sent \
         (the APPEND itself took {appended:?})"
    );
    assert!(latency < WAKE_BOUND, "woken after {latency:?}");

    // A delivery through A's gRPC, the queue's and smtp-in's path.
    let mut grpc = ImapClient::connect(format!("http://{}", a.grpc))
        .await
        .unwrap();
    let sent = Instant::now();
    let delivered = grpc
        .deliver(pb::DeliverRequest {
            identity_id: "id-alice".into(),
            mailbox: pb::Mailbox::Inbox as i32,
            message: message("delivered", "carol@example.org", "through gRPC").into_bytes(),
            verification: pb::SenderVerification::Unsigned as i32,
            verification_detail: String::new(),
            flags: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(delivered.uid, 2, "{delivered:?}");
    let latency = woken(&mut idle, "* 2 EXISTS", sent).await;
    println!("{LABEL}: a gRPC Deliver to A woke IDLE on B {latency:?} after it was sent");
    assert!(latency < WAKE_BOUND, "woken after {latency:?}");

    // Flags set through A.
    writer.command("s", "SELECT INBOX").await;
    let sent = Instant::now();
    writer
        .command("f", "STORE 1 +FLAGS.SILENT (\\Flagged)")
        .await;
    let latency = woken(&mut idle, "* 1 FETCH (FLAGS (\\Flagged) UID 1)", sent).await;
    println!("{LABEL}: STORE through A woke IDLE on B {latency:?} after it was sent");
    assert!(latency < WAKE_BOUND, "woken after {latency:?}");

    // A change nobody announces (written behind the service's back), then the listening
    // connections cut: once B listens again it wakes its sessions, which find the change.
    let changed = sqlx::query(
        "UPDATE messages SET flags = '\\Seen' WHERE uid = 2 AND mailbox_id = \
         (SELECT mailbox_id FROM mailboxes WHERE account_id = $1 AND name = 'INBOX')",
    )
    .bind(&account.record.account_id)
    .execute(pool)
    .await
    .unwrap();
    assert_eq!(changed.rows_affected(), 1);
    sqlx::query(
        "UPDATE mailboxes SET version = version + 1 WHERE account_id = $1 AND name = 'INBOX'",
    )
    .bind(&account.record.account_id)
    .execute(pool)
    .await
    .unwrap();
    let cut = Instant::now();
    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(LISTENER_NAME)
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(terminated.len() >= 2, "{terminated:?}");
    let latency = woken(&mut idle, "* 2 FETCH (FLAGS (\\Seen) UID 2)", cut).await;
    println!("{LABEL}: B listened again and woke IDLE {latency:?} after its connection was cut");

    // And B hears A again on its new connection.
    listeners_ready(pool, 2).await;
    let sent = Instant::now();
    let reply = writer
        .command("a2", &format!("APPEND INBOX {{{}+}}\r\n{body}", body.len()))
        .await;
    assert!(reply.last().unwrap().starts_with("a2 OK"), "{reply:?}");
    let latency = woken(&mut idle, "* 3 EXISTS", sent).await;
    println!(
        "{LABEL}: after the reconnection an APPEND through A woke IDLE on B {latency:?} after it was sent"
    );
    assert!(latency < WAKE_BOUND, "woken after {latency:?}");

    idle.send("DONE\r\n").await;
    assert_eq!(idle.line().await, "i OK IDLE terminated");
    drop((a, b));
    drop_schema(&database, &schema).await;
    database.close().await;
}
