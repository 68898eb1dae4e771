//! smtp-out over the private Tor network: a message reaches an SMTP server behind an onion
//! through tor's SOCKS port, each recipient gets the server's own verdict, ETRN reaches the
//! server, and a session to an onion that is not there is a temporary failure, not a hang.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use onionpost_e2e::TorNet;
use onionpost_smtp_out::session::{Envelope, Notify, Outcome, Recipient, Timeouts};
use onionpost_smtp_out::{SmtpOutService, SocksEndpoint};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const ONION_TIMEOUT: Duration = Duration::from_secs(90);

/// What the sink saw: every command line, and every message body.
#[derive(Default)]
struct Seen {
    commands: Vec<String>,
    messages: Vec<Vec<u8>>,
}

/// A small SMTP server standing in for a peer carrier's MX: it refuses `nobody@…` and accepts
/// everyone else.
async fn start_sink() -> anyhow::Result<(SocketAddr, Arc<Mutex<Seen>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = seen.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let seen = shared.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut reader = BufReader::new(read);
                let _ = write.write_all(b"220 sink ESMTP\r\n").await;
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let command = line.trim_end().to_string();
                    seen.lock().unwrap().commands.push(command.clone());
                    let upper = command.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") {
                        b"250-sink\r\n250-DSN\r\n250-SIZE 1000000\r\n250 8BITMIME\r\n"
                    } else if upper.starts_with("RCPT TO:<NOBODY@") {
                        b"550 5.1.1 mailbox unavailable\r\n"
                    } else if upper == "DATA" {
                        let _ = write.write_all(b"354 end with .\r\n").await;
                        let mut body = Vec::new();
                        loop {
                            let mut data_line = Vec::new();
                            if reader.read_until(b'\n', &mut data_line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if data_line == b".\r\n" {
                                break;
                            }
                            body.extend_from_slice(&data_line);
                        }
                        seen.lock().unwrap().messages.push(body);
                        b"250 2.0.0 accepted\r\n"
                    } else if upper.starts_with("ETRN") {
                        b"250 2.0.0 queuing started\r\n"
                    } else if upper == "QUIT" {
                        let _ = write.write_all(b"221 2.0.0 bye\r\n").await;
                        return;
                    } else {
                        b"250 2.0.0 ok\r\n"
                    };
                    let _ = write.write_all(reply).await;
                }
            });
        }
    });
    Ok((address, seen))
}

fn recipient(address: &str, notify: Vec<Notify>) -> Recipient {
    Recipient {
        address: address.into(),
        notify,
        original_recipient: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_through_tor_with_an_outcome_per_recipient() -> anyhow::Result<()> {
    let tornet = TorNet::start(2).await?;
    let (sink, seen) = start_sink().await?;
    let mut control = tornet.client(0).control().await?;
    control.set_events(&["HS_DESC"]).await?;
    let (service_id, _key) = control.add_onion_new(&[(25, sink)]).await?;
    control
        .wait_hs_desc_uploaded(&service_id, ONION_TIMEOUT)
        .await?;
    let onion = format!("{service_id}.onion");

    let service = SmtpOutService::new(SocksEndpoint::Fixed(tornet.client(1).socks_addr()));
    let envelope = Envelope {
        reverse_path: "alice@sender.onion".into(),
        recipients: vec![
            recipient(&format!("carol@{onion}"), vec![Notify::Success]),
            recipient(&format!("nobody@{onion}"), vec![]),
        ],
        envelope_id: "env-1".into(),
        dsn_return: None,
    };
    let message = b"Subject: ...\r\nMessage-ID: <x@sender.onion>\r\n\r\n.hidden dot\r\n";
    // A fresh onion can take a few tries before its descriptor is fetchable from the other side.
    let deadline = tokio::time::Instant::now() + ONION_TIMEOUT;
    let delivery = loop {
        let delivery = service
            .deliver(&onion, 25, "identity-a", &envelope, message)
            .await?;
        if delivery.connection_error.is_none() || tokio::time::Instant::now() > deadline {
            break delivery;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    ensure!(
        delivery.connection_error.is_none(),
        "no session: {:?}",
        delivery.connection_error
    );
    ensure!(delivery.peer_offers_dsn);
    ensure!(
        matches!(&delivery.outcomes[0], Outcome::Delivered(reply) if reply.code == 250),
        "{:?}",
        delivery.outcomes
    );
    ensure!(
        matches!(&delivery.outcomes[1], Outcome::Permanent(reply) if reply.code == 550 && reply.enhanced_status == "5.1.1"),
        "{:?}",
        delivery.outcomes
    );
    {
        let seen = seen.lock().unwrap();
        ensure!(seen.messages.len() == 1);
        ensure!(
            seen.messages[0]
                == b"Subject: ...\r\nMessage-ID: <x@sender.onion>\r\n\r\n..hidden dot\r\n",
            "the message arrived changed"
        );
        let rcpt = seen
            .commands
            .iter()
            .find(|command| command.starts_with("RCPT TO:<carol@"))
            .context("no RCPT for carol")?;
        ensure!(rcpt.ends_with("NOTIFY=SUCCESS"), "{rcpt}");
        ensure!(seen.commands[0] == "EHLO localhost", "{:?}", seen.commands);
    }
    println!(
        "smtp-out: one session through tor took {:?}",
        delivery.duration
    );

    // ETRN reaches the server and its reply comes back.
    let reply = service
        .etrn(&onion, &format!("{}.onion", "c".repeat(56)), "identity-c")
        .await?
        .map_err(anyhow::Error::msg)?;
    ensure!(reply.code == 250, "{reply:?}");
    ensure!(
        seen.lock()
            .unwrap()
            .commands
            .iter()
            .any(|command| command == &format!("ETRN {}.onion", "c".repeat(56)))
    );

    // An onion nobody serves: a temporary failure with the reason, within the connect limit.
    let quick = SmtpOutService::new(SocksEndpoint::Fixed(tornet.client(1).socks_addr()))
        .with_timeouts(Timeouts::default(), Duration::from_secs(30));
    // A well-formed address (valid checksum) whose key no tor holds.
    let absent = onionpost_keys::onion_host_from_ed25519(&[7u8; 32]);
    let delivery = quick
        .deliver(&absent, 25, "identity-a", &envelope, message)
        .await?;
    ensure!(delivery.connection_error.is_some());
    ensure!(
        delivery
            .outcomes
            .iter()
            .all(|outcome| matches!(outcome, Outcome::Temporary(_)))
    );

    // Anything but a v3 onion is refused before tor is asked.
    ensure!(
        service
            .deliver("example.com", 25, "identity-a", &envelope, message)
            .await
            .is_err()
    );
    drop(control);
    tornet.shutdown();
    Ok(())
}
