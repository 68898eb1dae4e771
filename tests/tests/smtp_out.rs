//! smtp-out over the private Tor network: a message reaches an SMTP server behind an onion
//! through tor's SOCKS port, each recipient gets the server's own verdict, ETRN reaches the
//! server, and a session to an onion that is not there is a temporary failure, not a hang.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use onionpost_e2e::TorNet;
use onionpost_e2e::smtp_sink::SmtpSink;
use onionpost_smtp_out::session::{Envelope, Notify, Outcome, Recipient, Timeouts};
use onionpost_smtp_out::{SmtpOutService, SocksEndpoint};

const ONION_TIMEOUT: Duration = Duration::from_secs(90);

fn recipient(address: &str, notify: Vec<Notify>) -> Recipient {
    Recipient {
        address: address.into(),
        notify,
        original_recipient: String::new(),
        stamp: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_through_tor_with_an_outcome_per_recipient() -> anyhow::Result<()> {
    let tornet = TorNet::start(2).await?;
    let sink = SmtpSink::start().await?;
    let seen = sink.seen.clone();
    let mut control = tornet.client(0).control().await?;
    control.set_events(&["HS_DESC"]).await?;
    let (service_id, _key) = control.add_onion_new(&[(25, sink.address)]).await?;
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
    let flushed = onionpost_proto::address::OnionHost::from_ed25519(&[b'c'; 32]).to_string();
    let reply = service
        .etrn(&onion, &flushed, "identity-c")
        .await?
        .map_err(anyhow::Error::msg)?;
    ensure!(reply.code == 250, "{reply:?}");
    ensure!(
        seen.lock()
            .unwrap()
            .commands
            .iter()
            .any(|command| command == &format!("ETRN {flushed}"))
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
