//! Proof-of-work stamps and contact requests for strangers over the private Tor network (issue
//! 22).
//!
//! Alice on carrier A writes to Carol on carrier C for the first time: C's onion MX asks A for a
//! stamp and A pays it by itself, and the message waits in Carol's Requests mailbox until Carol
//! accepts Alice (admin API); it then moves to her INBOX. Alice is Carol's correspondent from
//! then on and pays nothing. Bob, a second stranger, is refused in Carol's own account API: his
//! next message is refused at RCPT, and A tells Bob so.
//! Then 500 strangers flood Carol's onion MX through tor, each message stamped at the difficulty
//! Carol asks at that moment: her difficulty rises one bit per 50 (printed per step) while Dave's,
//! hosted on the same carrier, does not move, and Alice's next message still arrives without a
//! stamp. Over tor too: a stamp spent twice, or minted for another message, is refused with a
//! reply that says so.

mod admin_support;
mod mail_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use admin_support::http;
use anyhow::{Context as _, bail, ensure};
use mail_support::{Carrier, SUBMIT, newest_in_inbox, python, reply};
use serde_json::{Value, json};
use std::net::SocketAddr;

use onionpost_e2e::{TorNet, connect_onion};
use onionpost_runtime::stamp;
use tokio::io::{AsyncWriteExt as _, BufReader};
use tokio::time::Instant;

const BASE_BITS: u32 = 8;
const STEP: usize = 50;
const MAX_BITS: u32 = BASE_BITS + 12;
const FLOOD: usize = 500;
const FLOODERS: usize = 5;

/// A stranger's address: any onion, since nobody checks a stranger's claim before it paid.
const STRANGERS_ONION: &str = "mnrwgy3dmnrwgy3dmnrwgy3dmnrwgy3dmnrwgy3dmnrwgy3dmnrvkzqd.onion";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or(0)
}

/// One SMTP session through tor to an onion's MX.
struct Mx {
    stream: BufReader<tokio_socks::tcp::Socks5Stream<tokio::net::TcpStream>>,
    /// The XSTAMP difficulty its EHLO named.
    bits: u32,
}

impl Mx {
    async fn open(socks: SocketAddr, onion: &str) -> anyhow::Result<Mx> {
        let stream = connect_onion(socks, onion, 25, mail_support::TOR_TIMEOUT).await?;
        let mut mx = Mx {
            stream: BufReader::new(stream),
            bits: 0,
        };
        let greeting = reply(&mut mx.stream).await?;
        ensure!(greeting.starts_with("220"), "{greeting}");
        let ehlo = mx.command("EHLO stranger").await?;
        mx.bits = ehlo
            .lines()
            .find_map(|line| line[4..].strip_prefix("XSTAMP "))
            .context("no XSTAMP in EHLO")?
            .trim()
            .parse()?;
        Ok(mx)
    }

    async fn command(&mut self, line: &str) -> anyhow::Result<String> {
        self.stream
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await?;
        reply(&mut self.stream).await
    }

    /// One message from `sender` to `recipient` with `stamp`: the reply to RCPT if it was
    /// refused, else the reply to the end of data.
    async fn send(
        &mut self,
        sender: &str,
        recipient: &str,
        stamp: &str,
        body: &[u8],
    ) -> anyhow::Result<String> {
        let mail = self.command(&format!("MAIL FROM:<{sender}>")).await?;
        ensure!(mail.starts_with("250"), "MAIL: {mail}");
        let rcpt = self
            .command(&format!("RCPT TO:<{recipient}> XSTAMP={stamp}"))
            .await?;
        if !rcpt.starts_with("250") {
            self.command("RSET").await?;
            return Ok(rcpt);
        }
        let data = self.command("DATA").await?;
        ensure!(data.starts_with("354"), "DATA: {data}");
        self.stream.get_mut().write_all(body).await?;
        self.command(".").await
    }
}

/// A message body as the server keeps it (CRLF lines), and a stamp of `bits` for it.
fn stamped(recipient: &str, sender: &str, subject: &str, bits: u32) -> (Vec<u8>, String) {
    let body =
        format!("From: {sender}\r\nTo: {recipient}\r\nSubject: {subject}\r\n\r\nbuy now\r\n")
            .into_bytes();
    let digest = stamp::message_digest(&body);
    let minted = stamp::mint(
        recipient,
        sender,
        &digest,
        now(),
        bits,
        &AtomicBool::new(false),
    )
    .expect("minted");
    (body, minted.to_string())
}

/// The difficulty an onion's MX names in its EHLO now.
async fn difficulty(socks: SocketAddr, onion: &str) -> anyhow::Result<u32> {
    let mut mx = Mx::open(socks, onion).await?;
    let _ = mx.command("QUIT").await;
    Ok(mx.bits)
}

/// How many stamps a carrier's smtp-out has minted (its debug log says so, once each).
fn minted(carrier: &Carrier) -> usize {
    carrier.node.log_text().matches("stamp minted").count()
}

/// `login` (password `<login> password 1`) submits one message on `carrier`.
async fn submit(
    carrier: &Carrier,
    login: &str,
    from: &str,
    to: &str,
    subject: &str,
) -> anyhow::Result<()> {
    let (ok, out) = python(
        SUBMIT,
        &[
            carrier.submission.ip().to_string(),
            carrier.submission.port().to_string(),
            login.to_owned(),
            format!("{login} password 1"),
            from.to_owned(),
            to.to_owned(),
            subject.to_owned(),
            "hello Carol".to_owned(),
        ],
    )
    .await?;
    ensure!(ok, "submission: {out}\n{}", carrier.node.log_text());
    Ok(())
}

/// Alice submits one message to Carol on A and waits until it is in Carol's INBOX; how long
/// that took.
async fn alice_writes(
    a: &Carrier,
    c: &Carrier,
    alice: &str,
    carol: &str,
    subject: &str,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    submit(a, "alice", alice, carol, subject).await?;
    newest_in_inbox(c, "carol", "carol password 1", subject, a).await?;
    Ok(started.elapsed())
}

/// How many messages of Carol's `mailbox` have `subject`.
const COUNT_IN: &str = r#"
import imaplib, sys
host, port, login, password, mailbox, subject = sys.argv[1:7]
m = imaplib.IMAP4(host, int(port))
m.login(login, password)
m.select(mailbox)
typ, data = m.search(None, "SUBJECT", '"' + subject + '"')
print(len(data[0].split()))
m.logout()
"#;

async fn count_in(c: &Carrier, mailbox: &str, subject: &str) -> anyhow::Result<usize> {
    let (ok, out) = python(
        COUNT_IN,
        &[
            c.imap.ip().to_string(),
            c.imap.port().to_string(),
            "carol".to_owned(),
            "carol password 1".to_owned(),
            mailbox.to_owned(),
            subject.to_owned(),
        ],
    )
    .await?;
    ensure!(ok, "imaplib: {out}");
    Ok(out.trim().parse()?)
}

/// Waits until Carol's `mailbox` holds a message with `subject`.
async fn arrives_in(c: &Carrier, a: &Carrier, mailbox: &str, subject: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while count_in(c, mailbox, subject).await? == 0 {
        ensure!(
            started.elapsed() < Duration::from_secs(300),
            "{subject:?} never reached Carol's {mailbox}\nA:\n{}\nC:\n{}",
            a.node.log_text(),
            c.node.log_text()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

/// The id of the contact with `address` in an account's address book, among those with a
/// request waiting.
async fn requesting(c: &Carrier, account_id: &str, address: &str) -> anyhow::Result<String> {
    let page = c
        .op(
            "GET",
            &format!("/v1/accounts/{account_id}/contacts?requests=true"),
            Value::Null,
        )
        .await;
    page["contacts"]
        .as_array()
        .and_then(|contacts| {
            contacts
                .iter()
                .find(|contact| contact["address"] == address)
        })
        .and_then(|contact| contact["id"].as_str())
        .map(str::to_owned)
        .with_context(|| format!("no request from {address}: {page}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_pay_contacts_do_not_and_a_flood_moves_only_its_own_identity()
-> anyhow::Result<()> {
    let tornet = TorNet::start(2).await?;
    // Production limits (1,000 per identity and 100 per sender an hour) and a low base, so the
    // flood's 500 stamps cost the test seconds.
    let env = [
        ("ONIONPOST_SMTP_IN_STAMP_BITS", BASE_BITS.to_string()),
        ("ONIONPOST_SMTP_IN_STAMP_STEP_MESSAGES", STEP.to_string()),
        ("ONIONPOST_SMTP_IN_STAMP_MAX_BITS", MAX_BITS.to_string()),
        (
            "ONIONPOST_SMTP_IN_MAX_MESSAGES_PER_HOUR_PER_IDENTITY",
            "1000".to_owned(),
        ),
        (
            "ONIONPOST_SMTP_IN_MAX_MESSAGES_PER_HOUR_PER_SENDER",
            "100".to_owned(),
        ),
        ("ONIONPOST_ACCOUNTS_CONTACT_REQUESTS", "true".to_owned()),
    ];
    let a = Carrier::start(tornet.client(0), &env).await?;
    let c = Carrier::start(tornet.client(1), &env).await?;
    let (_, alice, _) = a.account("alice", "alice password 1").await?;
    let (carol_account, carol, carol_onion) = c.account("carol", "carol password 1").await?;
    let (_, _, dave_onion) = c.account("dave", "dave password 1").await?;
    let tor = tornet.client(0).socks_addr();

    // A stranger's carrier pays by itself; the message waits in Carol's Requests.
    ensure!(minted(&a) == 0);
    let started = Instant::now();
    submit(&a, "alice", &alice, &carol, "first contact").await?;
    arrives_in(&c, &a, "Requests", "first contact").await?;
    let first = started.elapsed();
    ensure!(count_in(&c, "INBOX", "first contact").await? == 0);
    let paid = minted(&a);
    ensure!(
        paid >= 1,
        "A delivered to a stranger without minting a stamp:\n{}",
        a.node.log_text()
    );
    println!("stamps: first contact in Carol's Requests after {first:?}, A minted {paid} stamp(s)");
    // Carol accepts Alice (admin API): the message moves to her INBOX.
    let alice_contact = requesting(&c, &carol_account, &alice).await?;
    let answered = c
        .op(
            "POST",
            &format!("/v1/accounts/{carol_account}/contacts/{alice_contact}/request"),
            json!({"accept": true}),
        )
        .await;
    ensure!(answered["messages_moved"] == 1, "{answered}");
    ensure!(count_in(&c, "INBOX", "first contact").await? == 1);
    ensure!(count_in(&c, "Requests", "first contact").await? == 0);
    println!("stamps: Carol accepted Alice; the first contact moved to her INBOX");

    // A correspondent pays nothing.
    let mut unloaded = Vec::new();
    for n in 0..3 {
        unloaded.push(alice_writes(&a, &c, &alice, &carol, &format!("contact {n}")).await?);
    }
    ensure!(
        minted(&a) == paid,
        "A minted for a correspondent:\n{}",
        a.node.log_text()
    );

    // The flood: strangers through tor, each paying what Carol asks at that moment.
    let carol_before = difficulty(tor, &carol_onion).await?;
    let dave_before = difficulty(tor, &dave_onion).await?;
    println!("stamps: before the flood Carol asks {carol_before} bits, Dave {dave_before}");
    ensure!(carol_before == BASE_BITS && dave_before == BASE_BITS);
    let sent = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut flooders = tokio::task::JoinSet::new();
    for flooder in 0..FLOODERS {
        let (tor, carol, carol_onion, sent) =
            (tor, carol.clone(), carol_onion.clone(), sent.clone());
        flooders.spawn(async move {
            let mut mx = Mx::open(tor, &carol_onion).await?;
            let mut bits = mx.bits;
            for n in (flooder..FLOOD).step_by(FLOODERS) {
                let sender = format!("stranger{n}@{STRANGERS_ONION}");
                let mut tries = 0;
                loop {
                    tries += 1;
                    let (body, stamp) = stamped(&carol, &sender, &format!("offer {n}"), bits);
                    let answer = mx.send(&sender, &carol, &stamp, &body).await?;
                    // The stamp was spent (and counted) before the plaintext was refused.
                    if answer.starts_with("550 5.7.1 End-to-end encryption required") {
                        break;
                    }
                    match stamp::asked_bits(answer.get(4..).unwrap_or_default()) {
                        Some(asked) if tries < 5 => bits = asked,
                        _ => bail!("flood message {n}: {answer}"),
                    }
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            let _ = mx.command("QUIT").await;
            anyhow::Ok(())
        });
    }
    // Carol's correspondent writes while the flood runs, from its second step on.
    let contact = async {
        while sent.load(Ordering::Relaxed) < 2 * STEP {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut during = Vec::new();
        for n in 0..3 {
            during.push(alice_writes(&a, &c, &alice, &carol, &format!("under load {n}")).await?);
        }
        anyhow::Ok((during, sent.load(Ordering::Relaxed)))
    };
    let flood = async {
        let mut printed = 0;
        loop {
            let done = sent.load(Ordering::Relaxed);
            if done >= printed + STEP || flooders.is_empty() {
                printed = done - done % STEP;
                let (carol_bits, dave_bits) = (
                    difficulty(tor, &carol_onion).await?,
                    difficulty(tor, &dave_onion).await?,
                );
                println!(
                    "stamps: after {done:>3} stranger messages ({:>5.1} s) Carol asks {carol_bits:>2} bits, Dave {dave_bits}",
                    started.elapsed().as_secs_f64()
                );
                ensure!(
                    dave_bits == BASE_BITS,
                    "a co-hosted identity's difficulty moved"
                );
            }
            if flooders.is_empty() {
                return anyhow::Ok(());
            }
            tokio::select! {
                joined = flooders.join_next() => {
                    if let Some(result) = joined {
                        result??;
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    };
    let (flooded, written) = tokio::join!(flood, contact);
    flooded?;
    let (mut loaded, sent_by_then) = written?;
    let carol_after = difficulty(tor, &carol_onion).await?;
    let expected = (BASE_BITS + ((FLOOD + 1) / STEP) as u32).min(MAX_BITS);
    ensure!(
        carol_after == expected,
        "Carol asks {carol_after} bits after {FLOOD} stranger messages, expected {expected}"
    );
    ensure!(difficulty(tor, &dave_onion).await? == BASE_BITS);

    // Carol's correspondent paid nothing under load either.
    ensure!(
        minted(&a) == paid,
        "A minted for a correspondent under load"
    );
    unloaded.sort();
    loaded.sort();
    println!(
        "stamps: Alice to Carol (submission to INBOX), median unloaded {:?}, during the flood {:?} (its last arrived after {sent_by_then} stranger messages); no stamp either time",
        unloaded[1], loaded[1]
    );

    // Spent once; bound to its message.
    let mut mx = Mx::open(tor, &carol_onion).await?;
    let sender = format!("replayer@{STRANGERS_ONION}");
    let (body, stamp) = stamped(&carol, &sender, "replayed", mx.bits);
    let answer = mx.send(&sender, &carol, &stamp, &body).await?;
    ensure!(answer.starts_with("550 5.7.1 End-to-end"), "{answer}");
    let again = mx.send(&sender, &carol, &stamp, &body).await?;
    ensure!(
        again.trim_end() == onionpost_smtp_in::inbound::STAMP_REUSED,
        "{again}"
    );
    let (_, other) = stamped(&carol, &sender, "another message", mx.bits);
    let mismatched = mx.send(&sender, &carol, &other, &body).await?;
    ensure!(
        mismatched.trim_end() == onionpost_smtp_in::inbound::STAMP_MISMATCH,
        "{mismatched}"
    );
    println!("stamps: a replayed stamp and a stamp for another message are refused, saying so");

    // Bob, another stranger, asks too; Carol refuses him in her own account API.
    let (_, bob, _) = a.account("bob", "bob password 1").await?;
    submit(&a, "bob", &bob, &carol, "bob asks").await?;
    arrives_in(&c, &a, "Requests", "bob asks").await?;
    let bob_contact = requesting(&c, &carol_account, &bob).await?;
    let login = json!({"login": "carol", "password": "carol password 1"}).to_string();
    let session = http(
        c.node.portal,
        "POST",
        "/account/v1/session",
        None,
        Some(&login),
    )
    .await
    .expect(201)
    .json();
    let token = session["token"].as_str().context("session token")?;
    let refused = http(
        c.node.portal,
        "POST",
        &format!("/account/v1/contacts/{bob_contact}/request"),
        Some(token),
        Some(&json!({"accept": false}).to_string()),
    )
    .await
    .expect(200)
    .json();
    ensure!(refused["messages_moved"] == 1, "{refused}");
    ensure!(count_in(&c, "Trash", "bob asks").await? == 1);
    // His next message is refused at RCPT, and A tells him why.
    submit(&a, "bob", &bob, &carol, "bob again").await?;
    let report = newest_in_inbox(
        &a,
        "bob",
        "bob password 1",
        "Delivery Status Notification (Failure)",
        &c,
    )
    .await?;
    ensure!(report.contains("refused mail from this sender"), "{report}");
    ensure!(count_in(&c, "Requests", "bob again").await? == 0);
    println!("stamps: Carol refused Bob; his next message was refused at RCPT");
    Ok(())
}
