//! The supervisor against tors that cannot serve: a control port that is not a v3-capable tor
//! (faked in-process, answering as the control protocol says), and a tor child process that
//! is killed (the real `tor`, no network needed: its control port comes up before bootstrap).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use onionpost_onion::control::Credentials;
use onionpost_onion::ports::PortPlan;
use onionpost_onion::{Onions, Placement, TorConnection, store};
use onionpost_proto::onion::v1::TorStatus;
use onionpost_runtime::Database;
use onionpost_runtime::seal::CarrierSecret;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

async fn onions(dir: &Path) -> Arc<Onions> {
    let database = Database::open_sqlite(&dir.join("onion.sqlite3"), store::MIGRATIONS)
        .await
        .unwrap();
    let sealer = CarrierSecret::from_text("0123456789abcdef0123456789abcdef")
        .unwrap()
        .sealer(onionpost_onion::SEAL_PURPOSE);
    let plan = PortPlan::new(vec!["127.0.0.1".parse().unwrap()], 10000, 10099).unwrap();
    Onions::load(
        store::for_database(database),
        sealer,
        plan,
        None,
        Placement::single("tor", Duration::ZERO),
        Duration::ZERO,
    )
    .await
    .unwrap()
}

async fn wait_status(onions: &Onions, check: impl Fn(&TorStatus) -> bool) -> TorStatus {
    let started = tokio::time::Instant::now();
    loop {
        let status = onions.tor_status();
        if check(&status) {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "tor status not as expected: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A control port that answers PROTOCOLINFO as `version` with no authentication, and
/// `GETINFO onions/current` with `onions_reply`.
async fn fake_tor(version: &'static str, onions_reply: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let reply = if line.starts_with("PROTOCOLINFO") {
                        format!(
                            "250-PROTOCOLINFO 1\r\n250-AUTH METHODS=NULL\r\n\
                             250-VERSION Tor=\"{version}\"\r\n250 OK\r\n"
                        )
                    } else if line == "AUTHENTICATE" {
                        "250 OK\r\n".to_owned()
                    } else if line == "GETINFO onions/current" {
                        format!("{onions_reply}\r\n")
                    } else {
                        "510 Unrecognized command\r\n".to_owned()
                    };
                    if write.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    address
}

#[tokio::test]
async fn tor_without_onion_support_is_reported_and_retried() {
    for (version, onions_reply, expected) in [
        (
            "0.2.9.17",
            "250 OK",
            "tor 0.2.9.17 cannot host v3 onion services",
        ),
        (
            "0.4.9.11",
            "552 Unrecognized key \"onions/current\"",
            "cannot host v3 onion services",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let onions = onions(dir.path()).await;
        let address = fake_tor(version, onions_reply).await;
        let shutdown = CancellationToken::new();
        let supervisor = tokio::spawn(onionpost_onion::tor::supervise(
            onions.clone(),
            0,
            TorConnection::External {
                address,
                credentials: Credentials::Auto,
            },
            shutdown.clone(),
        ));
        let status = wait_status(&onions, |status| status.failed_connect_attempts >= 3).await;
        assert!(!status.control_connected);
        assert!(
            status.last_error.contains(expected),
            "{}",
            status.last_error
        );
        let refused = onions
            .create("alice", onionpost_onion::ports::Purpose::DEFAULT.to_vec())
            .await
            .unwrap_err();
        assert!(refused.to_string().contains(expected), "{refused}");
        shutdown.cancel();
        supervisor.await.unwrap();
    }
}

#[tokio::test]
async fn a_killed_tor_child_is_started_again() {
    let Some(tor) = ["/usr/bin/tor", "/usr/sbin/tor"]
        .into_iter()
        .find(|path| Path::new(path).exists())
    else {
        panic!("tor is not installed (tests/run.sh installs it)");
    };
    let dir = tempfile::tempdir().unwrap();
    let onions = onions(dir.path()).await;
    let shutdown = CancellationToken::new();
    let tor_dir = dir.path().join("tor");
    // No traffic off this machine: the child must not reach for the public Tor network, so its
    // only directory authority is a closed port on loopback (DisableNetwork would also close
    // the SOCKS port this test looks at).
    let include = dir.path().join("loopback-only.torrc");
    std::fs::write(
        &include,
        "UseDefaultFallbackDirs 0\n\
         DirAuthority nowhere orport=1 no-v2 v3ident=0000000000000000000000000000000000000001 \
         127.0.0.1:1 0000000000000000000000000000000000000001\n",
    )
    .unwrap();
    let supervisor = tokio::spawn(onionpost_onion::tor::supervise(
        onions.clone(),
        0,
        TorConnection::Child {
            index: 0,
            binary: tor.into(),
            dir: tor_dir.clone(),
            include: Some(include),
        },
        shutdown.clone(),
    ));
    let status = wait_status(&onions, |status| status.control_connected).await;
    assert!(status.tor_version.starts_with("0."), "{status:?}");
    let socks = onions.socks_endpoint().unwrap();
    assert!(socks.starts_with("127.0.0.1:"), "{socks}");
    let pid = std::fs::read_to_string(tor_dir.join("tor.pid")).unwrap();
    let pid = pid.trim().to_owned();

    let killed = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_status(&onions, |status| !status.control_connected).await;
    let started = tokio::time::Instant::now();
    wait_status(&onions, |status| status.control_connected).await;
    let new_pid = std::fs::read_to_string(tor_dir.join("tor.pid")).unwrap();
    assert_ne!(new_pid.trim(), pid, "tor was not started again");
    println!(
        "tor child started again and connected {:?} after the kill",
        started.elapsed()
    );

    shutdown.cancel();
    supervisor.await.unwrap();
    // Stopped with the supervisor.
    let alive = std::process::Command::new("kill")
        .args(["-0", new_pid.trim()])
        .status()
        .unwrap();
    assert!(!alive.success(), "the tor child outlived its supervisor");
}
