//! Real IMAP clients against a live server with the real (SQLite) store: Python's imaplib
//! (tests/imap_support/imaplib_client.py) and mbsync (isync). TLS with the generated
//! self-signed certificate, implicit and via STARTTLS.
//!
//! Missing python3 or mbsync fails the test unless ONIONPOST_TEST_ALLOW_SKIP is set.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use onionpost_imap::mailstore::AccountId;
use onionpost_imap::server::{IdentityOwners, ImapServer, Limits, ListenerKind};
use onionpost_imap::service::{Delivery, DeliveryMailbox, ImapService, Verification};
use onionpost_runtime::Database;
use onionpost_runtime::config::AccountSettings;
use onionpost_runtime::seal::CarrierSecret;
use onionpost_runtime::tls;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Identity owners as the imap service records them, asked per connection like the real
/// onion listener does.
struct LiveOwners(ImapService);

#[async_trait::async_trait]
impl IdentityOwners for LiveOwners {
    async fn owner_of(&self, identity_id: &str) -> Option<AccountId> {
        self.0
            .identity(identity_id)
            .await
            .ok()
            .map(|view| view.record.account_id)
    }
}

struct Live {
    _dir: tempfile::TempDir,
    service: ImapService,
    plain: SocketAddr,
    tls: SocketAddr,
    cleartext_lan: Option<SocketAddr>,
    _stop: tokio_util::sync::DropGuard,
}

async fn live() -> Live {
    let dir = tempfile::tempdir().unwrap();
    let database = Database::open_sqlite(
        &dir.path().join("imap.sqlite3"),
        onionpost_imap::store::MIGRATIONS,
    )
    .await
    .unwrap();
    live_on(database, dir).await
}

async fn live_on(database: Database, dir: tempfile::TempDir) -> Live {
    let secret = CarrierSecret::from_text("imap-clients-test-secret-0123456789abcdef").unwrap();
    let service = ImapService::open(
        database,
        secret,
        Arc::new(onionpost_imap::clock::SystemClock),
        AccountSettings {
            grace_days: 30,
            initial_days: 30,
            default_plan: "standard".to_owned(),
            require_app_passwords: false,
            contact_requests: true,
        },
    )
    .await
    .unwrap();
    service
        .create_account("alice", "correct horse battery", "")
        .await
        .unwrap();
    service
        .create_account("bob", "another long password", "")
        .await
        .unwrap();
    let secret = onionpost_runtime::seal::CarrierSecret::from_text(&"t".repeat(40)).unwrap();
    let acceptor = tls::acceptor("imap", None, None, dir.path(), &secret).unwrap();
    let server = ImapServer::new(service.mail_store(), Limits::default(), Some(acceptor));
    let stop = CancellationToken::new();
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addresses = (
        plain.local_addr().unwrap(),
        tls_listener.local_addr().unwrap(),
    );
    for (listener, kind) in [
        (plain, ListenerKind::Clearnet),
        (tls_listener, ListenerKind::ImplicitTls),
    ] {
        let server = server.clone();
        let stop = stop.clone();
        tokio::spawn(async move { server.serve(listener, kind, stop).await });
    }
    // A non-loopback address of this host, to see LOGINDISABLED as a network client would.
    let lan_ip = local_non_loopback_ip();
    let cleartext_lan = match lan_ip {
        Some(ip) => {
            let listener = TcpListener::bind((ip, 0)).await.unwrap();
            let address = listener.local_addr().unwrap();
            let server = server.clone();
            let stop = stop.clone();
            tokio::spawn(async move { server.serve(listener, ListenerKind::Clearnet, stop).await });
            Some(address)
        }
        None => None,
    };
    Live {
        _dir: dir,
        service,
        plain: addresses.0,
        tls: addresses.1,
        cleartext_lan,
        _stop: stop.drop_guard(),
    }
}

fn local_non_loopback_ip() -> Option<std::net::IpAddr> {
    // Routing a UDP socket picks the interface without sending anything.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("10.255.255.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// Whether a tool exists; when it does not, the test fails unless skipping is allowed.
fn tool(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("ONIONPOST_TEST_ALLOW_SKIP").is_some(),
            "{name} is not installed (tests/run.sh installs it; set ONIONPOST_TEST_ALLOW_SKIP=1 to skip)"
        );
        eprintln!("skipping: {name} not installed");
    }
    found
}

async fn python(args: Vec<String>) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/imap_support/imaplib_client.py");
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .args(&args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "imaplib {args:?} failed:\n{stdout}\n{stderr}"
    );
    eprintln!("{stdout}");
}

fn args(scenario: &str, address: SocketAddr, rest: &[&str]) -> Vec<String> {
    let mut out = vec![
        scenario.to_owned(),
        address.ip().to_string(),
        address.port().to_string(),
    ];
    out.extend(rest.iter().map(|s| (*s).to_owned()));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imaplib_against_sql_store() {
    if !tool("python3") {
        return;
    }
    // The whole scenario on SQLite, then on PostgreSQL (tests/run.sh provides it).
    onionpost_runtime::conformance::each_backend(
        "imap_clients",
        onionpost_imap::store::MIGRATIONS,
        |database| async move {
            let live = live_on(database, tempfile::tempdir().unwrap()).await;
            imaplib_scenarios(&live).await;
        },
    )
    .await;
}

async fn imaplib_scenarios(live: &Live) {
    python(args(
        "basic",
        live.plain,
        &[
            "alice",
            "correct horse battery",
            "bob",
            "another long password",
        ],
    ))
    .await;
    python(args(
        "two_sessions",
        live.plain,
        &["alice", "correct horse battery"],
    ))
    .await;
    python(args("tls", live.tls, &["alice", "correct horse battery"])).await;
    python(args(
        "starttls",
        live.plain,
        &["alice", "correct horse battery"],
    ))
    .await;
    if let Some(lan) = live.cleartext_lan {
        python(args(
            "logindisabled",
            lan,
            &["alice", "correct horse battery"],
        ))
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn getquotaroot_reports_delivered_mail() {
    if !tool("python3") {
        return;
    }
    let live = live().await;
    let bob = account_id(&live, "bob").await;
    live.service
        .add_identity(
            "id-bob",
            &bob,
            &format!(
                "bob@{}",
                onionpost_proto::address::OnionHost::from_ed25519(&[b'b'; 32])
            ),
            "Bob",
        )
        .await
        .unwrap();
    python(args(
        "quota",
        live.plain,
        &["bob", "another long password", "0"],
    ))
    .await;
    // Delivery (what smtp-in does through gRPC) of about 40 KiB.
    let body = "x".repeat(76) + "\r\n";
    let message = format!(
        "From: a@example.org\r\nSubject: big\r\nMessage-ID: <big@example.org>\r\n\r\n{}",
        body.repeat(512)
    );
    let delivered = live
        .service
        .deliver(Delivery {
            identity_id: "id-bob".to_owned(),
            mailbox: DeliveryMailbox::Inbox,
            message: message.into_bytes(),
            verification: Verification::Local,
            verification_detail: String::new(),
            flags: Vec::new(),
        })
        .await
        .unwrap();
    assert!(delivered.refusal.is_none(), "{delivered:?}");
    python(args(
        "quota",
        live.plain,
        &["bob", "another long password", "40"],
    ))
    .await;
}

/// Through identity X's onion only X's account logs in; another account's correct password gets
/// the same reply as a wrong one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onion_listener_admits_only_the_owner() {
    if !tool("python3") {
        return;
    }
    let live = live().await;
    let bob = account_id(&live, "bob").await;
    let owners: Arc<dyn IdentityOwners> = Arc::new(LiveOwners(live.service.clone()));
    let server = ImapServer::new(live.service.mail_store(), Limits::default(), None);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let serve_stop = stop.clone();
    tokio::spawn(async move {
        server
            .serve(
                listener,
                ListenerKind::Onion {
                    identity_id: "id-bob".to_owned(),
                    owners,
                },
                serve_stop,
            )
            .await
    });
    // The identity is recorded after its listener is up, as when the admin API creates the
    // onion first: the owner is asked per connection, so it is found.
    live.service
        .add_identity(
            "id-bob",
            &bob,
            &format!(
                "bob@{}",
                onionpost_proto::address::OnionHost::from_ed25519(&[b'b'; 32])
            ),
            "Bob",
        )
        .await
        .unwrap();
    python(args(
        "onion",
        address,
        &[
            "bob",
            "another long password",
            "alice",
            "correct horse battery",
        ],
    ))
    .await;
    stop.cancel();
}

async fn account_id(live: &Live, login: &str) -> String {
    live.service
        .account_by_login(login)
        .await
        .unwrap()
        .record
        .account_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mbsync_syncs_both_ways() {
    if !tool("mbsync") {
        return;
    }
    let live = live().await;
    let home = tempfile::tempdir().unwrap();
    let maildir = home.path().join("mail");
    std::fs::create_dir_all(&maildir).unwrap();
    // A message on the server first.
    let mail = live.service.mail_store();
    let alice = account_id(&live, "alice").await;
    mail.append(
        &alice,
        "INBOX",
        &[],
        None,
        bytes::Bytes::from_static(
            b"From: a@example.org\r\nSubject: from server\r\n\r\nserver side\r\n",
        ),
    )
    .await
    .unwrap();
    let cert = live._dir.path().join("imap-tls-cert.pem");
    let config = format!(
        "IMAPAccount test\nHost {host}\nPort {port}\nUser alice\nPass \"correct horse battery\"\nSSLType IMAPS\nCertificateFile {cert}\n\n\
         IMAPStore remote\nAccount test\n\n\
         MaildirStore local\nPath {maildir}/\nInbox {maildir}/INBOX\nSubFolders Verbatim\n\n\
         Channel sync\nFar :remote:\nNear :local:\nPatterns INBOX\nCreate Both\nExpunge Both\nSyncState *\n",
        host = live.tls.ip(),
        port = live.tls.port(),
        cert = cert.display(),
        maildir = maildir.display(),
    );
    let rc = home.path().join("mbsyncrc");
    std::fs::write(&rc, config).unwrap();
    let run = |rc: std::path::PathBuf| async move {
        let output = tokio::process::Command::new("mbsync")
            .arg("-c")
            .arg(&rc)
            .arg("-a")
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "mbsync failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(rc.clone()).await;
    // Server → local.
    let new_dir = maildir.join("INBOX/new");
    let cur_dir = maildir.join("INBOX/cur");
    let local: Vec<_> = std::fs::read_dir(&new_dir)
        .unwrap()
        .chain(std::fs::read_dir(&cur_dir).unwrap())
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        local
            .iter()
            .any(|m| m.windows(11).any(|w| w == b"server side")),
        "not synced down"
    );
    // Local → server.
    std::fs::write(
        new_dir.join("1700000000.local.host"),
        b"From: b@example.org\r\nSubject: from local\r\n\r\nlocal side\r\n",
    )
    .unwrap();
    run(rc.clone()).await;
    let snapshot = mail.open_mailbox(&alice, "INBOX").await.unwrap();
    assert_eq!(snapshot.messages.len(), 2, "{snapshot:?}");
    let uids: Vec<u32> = snapshot.messages.iter().map(|m| m.uid).collect();
    let bodies = mail
        .fetch(
            &alice,
            snapshot.status.id,
            &uids,
            onionpost_imap::mailstore::Part::Full,
        )
        .await
        .unwrap();
    assert!(
        bodies
            .iter()
            .any(|(_, b)| b.windows(10).any(|w| w == b"local side"))
    );
    // A flag set locally reaches the server (mbsync renames to ...:2,S).
    for entry in std::fs::read_dir(&cur_dir)
        .unwrap()
        .chain(std::fs::read_dir(&new_dir).unwrap())
    {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let base = name.split(":2,").next().unwrap().to_owned();
        std::fs::rename(&path, cur_dir.join(format!("{base}:2,F"))).unwrap();
    }
    run(rc).await;
    let snapshot = mail.open_mailbox(&alice, "INBOX").await.unwrap();
    assert!(
        snapshot
            .messages
            .iter()
            .all(|m| m.flags.iter().any(|f| f == "\\Flagged")),
        "{snapshot:?}"
    );
}
