//! Mail between identities on two carriers over the private Tor network: Alice (an account on
//! carrier A) submits with Python's smtplib on A's submission listener; Carol (an account on
//! carrier C) reads it with Python's imaplib on C, with the original Subject and body and the
//! carrier's verdict that it was signed by Alice's key. No key was exchanged by hand: A fetches
//! Carol's key by WKD over Carol's onion. Also checks, through C's onion MX from a tor client,
//! that a co-hosted and a made-up address get byte-identical refusals, and that plaintext is
//! refused with a reply that says end-to-end encryption is required.

mod admin_support;

use std::net::SocketAddr;
use std::time::Duration;

use admin_support::{OPERATOR_TOKEN, http};
use anyhow::{Context as _, ensure};
use onionpost_e2e::node::{Node, free_port};
use onionpost_e2e::onion_service::free_port_block;
use onionpost_e2e::{TorClient, TorNet};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::time::Instant;

const TOR_TIMEOUT: Duration = Duration::from_secs(180);

struct Carrier {
    node: Node,
    submission: SocketAddr,
    imap: SocketAddr,
}

impl Carrier {
    async fn start(tor: &TorClient) -> anyhow::Result<Carrier> {
        let (first, last) = free_port_block(32)?;
        let submission = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let imap = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let env = vec![
            ("ONIONPOST_TOR_CONTROL", tor.control_addr().to_string()),
            (
                "ONIONPOST_TOR_COOKIE_FILE",
                tor.cookie_file().display().to_string(),
            ),
            ("ONIONPOST_TOR_TARGET_PORTS", format!("{first}-{last}")),
            (
                "ONIONPOST_SECRET",
                "onionpost-e2e-carrier-secret-0123456789".to_owned(),
            ),
            ("ONIONPOST_ADMIN_TOKEN", OPERATOR_TOKEN.to_owned()),
            ("ONIONPOST_SUBMISSION_LISTEN", submission.to_string()),
            ("ONIONPOST_IMAP_LISTEN", imap.to_string()),
            // Retries within seconds, so the offline-recipient case finishes quickly.
            ("ONIONPOST_QUEUE_RETRY_MIN_SECS", "2".to_owned()),
            ("ONIONPOST_QUEUE_RETRY_MAX_SECS", "4".to_owned()),
        ];
        let node = Node::start("onion,keys,imap,queue,smtp-out,smtp-in,admin", &env).await;
        let carrier = Carrier {
            node,
            submission,
            imap,
        };
        let started = Instant::now();
        loop {
            let answer = http(carrier.node.admin, "GET", "/readyz", None, None).await;
            if answer.status == 200 {
                break;
            }
            ensure!(
                started.elapsed() < Duration::from_secs(120),
                "carrier not ready: {}\n{}",
                answer.text(),
                carrier.node.log_text()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(carrier)
    }

    async fn op(&self, method: &str, path: &str, body: Value) -> Value {
        let text = (!body.is_null()).then(|| body.to_string());
        let answer = http(
            self.node.admin,
            method,
            path,
            Some(OPERATOR_TOKEN),
            text.as_deref(),
        )
        .await;
        assert!(
            answer.status == 200 || answer.status == 201,
            "{method} {path}: {} {}",
            answer.status,
            answer.text()
        );
        answer.json()
    }

    /// Creates an account with one identity and waits until its onion is online; returns the
    /// account id, the identity's address and its onion.
    async fn account(
        &self,
        login: &str,
        password: &str,
    ) -> anyhow::Result<(String, String, String)> {
        let account = self
            .op(
                "POST",
                "/v1/accounts",
                json!({"login": login, "password": password}),
            )
            .await;
        let account_id = account["id"].as_str().context("account id")?.to_owned();
        let identity = self
            .op(
                "POST",
                &format!("/v1/accounts/{account_id}/identities"),
                json!({"local_part": login}),
            )
            .await;
        let identity_id = identity["id"].as_str().context("identity id")?.to_owned();
        let address = identity["address"].as_str().context("address")?.to_owned();
        let onion = identity["onion"].as_str().context("onion")?.to_owned();
        let started = Instant::now();
        loop {
            let answer = http(
                self.node.admin,
                "GET",
                &format!("/v1/identities/{identity_id}"),
                Some(OPERATOR_TOKEN),
                None,
            )
            .await
            .json();
            if answer["state"] == "online" {
                break;
            }
            ensure!(started.elapsed() < TOR_TIMEOUT, "not online: {answer}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok((account_id, address, onion))
    }
}

async fn python(script: &str, args: &[String]) -> anyhow::Result<(bool, String)> {
    let output = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .await
        .context("running python3")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.success(), text))
}

const SUBMIT: &str = r#"
import smtplib, sys
from email.message import EmailMessage
host, port, login, password, sender, rcpt, subject, body = sys.argv[1:9]
msg = EmailMessage()
msg["From"] = sender
msg["To"] = rcpt
msg["Subject"] = subject
msg["X-Mailer"] = "Leaky Mailer 1.0"
msg.set_content(body)
with smtplib.SMTP(host, int(port), timeout=300) as s:
    s.ehlo("client")
    s.login(login, password)
    s.send_message(msg)
print("sent")
"#;

const READ: &str = r#"
import imaplib, sys, email
host, port, login, password = sys.argv[1:5]
m = imaplib.IMAP4(host, int(port))
m.login(login, password)
m.select("INBOX")
typ, data = m.search(None, "ALL")
ids = data[0].split()
if not ids:
    print("EMPTY")
    sys.exit(0)
typ, data = m.fetch(ids[-1], "(RFC822)")
sys.stdout.write(data[0][1].decode("utf-8", "replace"))
m.logout()
"#;

/// One SMTP reply over a raw stream, lines joined.
async fn reply<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> anyhow::Result<String> {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        ensure!(reader.read_line(&mut line).await? > 0, "connection closed");
        all.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(all);
        }
    }
}

/// Polls an account's INBOX over IMAP until a message is there; returns the newest.
async fn newest_in_inbox(
    carrier: &Carrier,
    login: &str,
    password: &str,
    sender: &Carrier,
) -> anyhow::Result<String> {
    let started = Instant::now();
    loop {
        let (ok, out) = python(
            READ,
            &[
                carrier.imap.ip().to_string(),
                carrier.imap.port().to_string(),
                login.to_owned(),
                password.to_owned(),
            ],
        )
        .await?;
        ensure!(ok, "imaplib failed: {out}");
        if !out.starts_with("EMPTY") {
            return Ok(out);
        }
        ensure!(
            started.elapsed() < Duration::from_secs(300),
            "nothing arrived for {login}\nsender:\n{}\nrecipient:\n{}",
            sender.node.log_text(),
            carrier.node.log_text()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_on_a_writes_to_carol_on_c_over_onions() -> anyhow::Result<()> {
    let tornet = TorNet::start(3).await?;
    let a = Carrier::start(tornet.client(0)).await?;
    let mut c = Carrier::start(tornet.client(1)).await?;
    let (alice_id, alice, alice_onion) = a.account("alice", "alice password 1").await?;
    let (carol_id, carol, carol_onion) = c.account("carol", "carol password 1").await?;
    let (_, dave, _) = c.account("dave", "dave password 1").await?;

    // Submission on A; the 250 comes once the message is signed, encrypted and queued.
    let (ok, out) = python(
        SUBMIT,
        &[
            a.submission.ip().to_string(),
            a.submission.port().to_string(),
            "alice".to_owned(),
            "alice password 1".to_owned(),
            alice.clone(),
            carol.clone(),
            "Lunch at noon?".to_owned(),
            "Shall we meet at the usual place?".to_owned(),
        ],
    )
    .await?;
    ensure!(
        ok,
        "smtplib submission failed: {out}\n{}",
        a.node.log_text()
    );

    // Carol reads it on C.
    let message = newest_in_inbox(&c, "carol", "carol password 1", &a).await?;
    ensure!(message.contains("Subject: Lunch at noon?"), "{message}");
    ensure!(
        message.contains("Shall we meet at the usual place?"),
        "{message}"
    );
    ensure!(
        message.contains("Onionpost-Verification: verified"),
        "{message}"
    );
    ensure!(message.contains(&alice), "{message}");
    // Nothing about the sender's client or path travelled; the Message-ID names only her onion.
    ensure!(!message.contains("Leaky Mailer"), "{message}");
    ensure!(!message.contains("Received:"), "{message}");
    ensure!(message.contains(&format!("@{alice_onion}>")), "{message}");

    // Carol replies the same way; Alice reads the reply on A, verified as Carol's.
    let (ok, out) = python(
        SUBMIT,
        &[
            c.submission.ip().to_string(),
            c.submission.port().to_string(),
            "carol".to_owned(),
            "carol password 1".to_owned(),
            carol.clone(),
            alice.clone(),
            "Re: Lunch at noon?".to_owned(),
            "Yes, see you there.".to_owned(),
        ],
    )
    .await?;
    ensure!(ok, "smtplib reply failed: {out}\n{}", c.node.log_text());
    let reply_text = newest_in_inbox(&a, "alice", "alice password 1", &c).await?;
    ensure!(
        reply_text.contains("Subject: Re: Lunch at noon?"),
        "{reply_text}"
    );
    ensure!(reply_text.contains("Yes, see you there."), "{reply_text}");
    ensure!(
        reply_text.contains("Onionpost-Verification: verified"),
        "{reply_text}"
    );

    // No key was exchanged by hand, yet both address books now hold each other's key.
    for (carrier, account_id, other) in [(&a, &alice_id, &carol), (&c, &carol_id, &alice)] {
        let book = carrier
            .op(
                "GET",
                &format!("/v1/accounts/{account_id}/contacts"),
                Value::Null,
            )
            .await;
        let pinned = book["contacts"].as_array().is_some_and(|contacts| {
            contacts.iter().any(|contact| {
                contact["address"] == other.as_str()
                    && contact["fingerprint"]
                        .as_str()
                        .is_some_and(|f| f.len() == 40)
            })
        });
        ensure!(pinned, "{account_id}: {book}");
    }

    // C's onion MX from a third tor client: co-hosted (dave) and made-up addresses get the
    // same bytes; plaintext for carol is refused with the reason.
    let stream = tokio_socks::tcp::Socks5Stream::connect(
        tornet.client(2).socks_addr(),
        (carol_onion.as_str(), 25),
    )
    .await
    .context("connecting to carol's onion mx")?;
    let (read, mut write) = tokio::io::split(stream);
    let mut read = BufReader::new(read);
    ensure!(reply(&mut read).await? == "220 ESMTP ready\r\n");
    let mut send = async |line: String| -> anyhow::Result<String> {
        write.write_all(format!("{line}\r\n").as_bytes()).await?;
        reply(&mut read).await
    };
    send("EHLO peer".to_owned()).await?;
    send(format!("MAIL FROM:<{alice}>")).await?;
    let co_hosted = send(format!("RCPT TO:<{dave}>")).await?;
    let made_up = send(format!("RCPT TO:<nobody@{carol_onion}>")).await?;
    ensure!(co_hosted == made_up, "{co_hosted:?} vs {made_up:?}");
    ensure!(co_hosted.starts_with("550 5.1.1 "), "{co_hosted}");
    let etrn_a = send(format!("ETRN {alice_onion}")).await?;
    let etrn_b =
        send("ETRN nosuchonionnosuchonionnosuchonionnosuchonionnosuchonion2.onion".to_owned())
            .await?;
    ensure!(
        etrn_a == etrn_b && etrn_a == "250 2.0.0 Queuing started\r\n",
        "{etrn_a:?} {etrn_b:?}"
    );
    ensure!(
        send(format!("RCPT TO:<{carol}>"))
            .await?
            .starts_with("250 ")
    );
    ensure!(send("DATA".to_owned()).await?.starts_with("354 "));
    let refused = send("Subject: plain\r\n\r\nhello\r\n.".to_owned()).await?;
    ensure!(
        refused.starts_with("550 5.7.1 End-to-end encryption required"),
        "{refused}"
    );
    drop(read);
    drop(write);

    // Carol's carrier is offline: A accepts, tries, keeps the message, and delivers it once C
    // is back; Carol's INBOX then holds it exactly once.
    c.node.stop().await;
    let (ok, out) = python(
        SUBMIT,
        &[
            a.submission.ip().to_string(),
            a.submission.port().to_string(),
            "alice".to_owned(),
            "alice password 1".to_owned(),
            alice.clone(),
            carol.clone(),
            "While you were away".to_owned(),
            "This waited in the queue.".to_owned(),
        ],
    )
    .await?;
    ensure!(
        ok,
        "submission while C is offline: {out}\n{}",
        a.node.log_text()
    );
    let started = Instant::now();
    loop {
        let page = a
            .op("GET", "/v1/queue?state=temporary_failure", Value::Null)
            .await;
        let attempted = page["messages"].as_array().is_some_and(|messages| {
            messages.iter().any(|message| {
                message["recipients"][0]["address"] == carol.as_str()
                    && message["recipients"][0]["attempts"].as_u64() >= Some(1)
            })
        });
        if attempted {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(180),
            "A never tried to deliver while C was offline: {page}\n{}",
            a.node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    c.node.restart().await;
    let count = |carrier: &Carrier| {
        let args = vec![
            carrier.imap.ip().to_string(),
            carrier.imap.port().to_string(),
            "carol".to_owned(),
            "carol password 1".to_owned(),
            "While you were away".to_owned(),
        ];
        async move {
            let (ok, out) = python(COUNT_SUBJECT, &args).await?;
            ensure!(ok, "imaplib failed: {out}");
            out.trim()
                .parse::<usize>()
                .with_context(|| format!("not a count: {out}"))
        }
    };
    let started = Instant::now();
    while count(&c).await? == 0 {
        ensure!(
            started.elapsed() < Duration::from_secs(300),
            "the queued message never reached C\nA:\n{}\nC:\n{}",
            a.node.log_text(),
            c.node.log_text()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Give any second attempt time to arrive, then check there is exactly one copy and A's
    // queue is empty.
    tokio::time::sleep(Duration::from_secs(6)).await;
    ensure!(count(&c).await? == 1, "Carol has more than one copy");
    let stats = a.op("GET", "/v1/stats", Value::Null).await;
    ensure!(stats["queue_depth"] == 0, "A's queue is not empty: {stats}");
    println!(
        "mail_flow: recipient offline, delivered {:?} after C came back",
        started.elapsed()
    );
    Ok(())
}

const COUNT_SUBJECT: &str = r#"
import imaplib, sys
host, port, login, password, subject = sys.argv[1:6]
m = imaplib.IMAP4(host, int(port))
m.login(login, password)
m.select("INBOX")
typ, data = m.search(None, "SUBJECT", '"' + subject + '"')
print(len(data[0].split()))
m.logout()
"#;
