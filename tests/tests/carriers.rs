//! Carriers over the private Tor network (issue #7, the paper's Fig. 4): Alice on node A writes
//! to Carol on node C while C is offline; Bob's node B and Dan's node D carry for Carol, because
//! she asked them to with signed carry requests sent in mail from her identity to each carrier's
//! `postmaster@<onion>` (issue 21): B, whose policy is open, records it once it has checked it
//! against the key Carol's onion serves; D, whose operator approves each request, records it
//! when its operator says so in D's admin API. A request handed to the admin API by hand is
//! still checked the same way. Carol publishes B and D as her preferred carriers: A learns the
//! signed list from Carol's onion with her key, nobody types it into Alice's address book.
//!
//! - A's direct attempt fails, so A hands the encrypted message to B and D, which hold it.
//! - C comes back: its queue sends `ETRN <carol's onion>` to B and D, which deliver at once. A
//!   delivers too on its next retry. Carol's INBOX holds the message once, and Alice, who asked
//!   for a success notice, gets one, from whoever delivered first (C answers the later copies
//!   with "already delivered").
//! - Carol names B alone; A learns the new list from her next mail.
//! - B refuses to carry for an identity that never asked it to, with the same reply as any relay
//!   attempt, and for Carol too on its other onion (Bea's), which her request did not name: no
//!   RCPT tells which onions share a carrier. It refuses a carry request that names another
//!   carrier.
//! - B holds 500 messages for Carol while A is gone; B is killed with SIGKILL and started again;
//!   C comes back and all 500 arrive, each exactly once.

mod admin_support;
mod mail_support;

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use mail_support::{COUNT_SUBJECT, Carrier, SUBMIT, newest_in_inbox, python, reply};
use onionpost_e2e::TorNet;
use onionpost_proto::queue::v1 as queue_pb;
use onionpost_proto::queue::v1::queue_client::QueueClient;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::time::Instant;

const HELD: usize = 500;

/// Submits one message asking for success notices (RFC 3461 NOTIFY=SUCCESS).
const SUBMIT_NOTIFY: &str = r#"
import smtplib, sys
from email.message import EmailMessage
host, port, login, password, sender, rcpt, subject, body = sys.argv[1:9]
msg = EmailMessage()
msg["From"] = sender
msg["To"] = rcpt
msg["Subject"] = subject
msg.set_content(body)
with smtplib.SMTP(host, int(port), timeout=300) as s:
    s.ehlo("client")
    s.login(login, password)
    s.send_message(msg, rcpt_options=["NOTIFY=SUCCESS"])
print("sent")
"#;

/// Submits `count` messages `held 0000` … in `threads` SMTP sessions; prints DONE or STOP.
const BURST: &str = r#"
import smtplib, sys, threading
from email.message import EmailMessage
host, port, login, password, sender, rcpt, count, threads = sys.argv[1:9]
count, threads = int(count), int(threads)
failures = []
def run(first):
    try:
        with smtplib.SMTP(host, int(port), timeout=120) as s:
            s.login(login, password)
            for n in range(first, count, threads):
                msg = EmailMessage()
                msg["From"] = sender
                msg["To"] = rcpt
                msg["Subject"] = "held %04d" % n
                msg.set_content("message %d held by a carrier" % n)
                s.send_message(msg)
    except Exception as error:
        failures.append(repr(error))
workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
for w in workers: w.start()
for w in workers: w.join()
print("STOP %s" % failures if failures else "DONE")
"#;

/// Prints every message whose Subject contains the argument, separated by a line `=====`.
const READ_ALL: &str = r#"
import imaplib, sys
host, port, login, password, subject = sys.argv[1:6]
m = imaplib.IMAP4(host, int(port))
m.login(login, password)
m.select("INBOX")
typ, data = m.search(None, "SUBJECT", '"' + subject + '"')
for i in data[0].split():
    typ, item = m.fetch(i, "(RFC822)")
    sys.stdout.write(item[0][1].decode("utf-8", "replace"))
    sys.stdout.write("\n=====\n")
m.logout()
"#;

/// Prints `subject count` for every message in the INBOX.
const SUBJECTS: &str = r#"
import imaplib, sys, collections
host, port, login, password = sys.argv[1:5]
m = imaplib.IMAP4(host, int(port))
m.login(login, password)
typ, data = m.select("INBOX")
counts = collections.Counter()
if int(data[0]) > 0:
    typ, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    for item in data:
        if isinstance(item, tuple):
            header = item[1].decode("utf-8", "replace").strip()
            counts[header.split(":", 1)[1].strip() if ":" in header else ""] += 1
for subject, n in counts.items():
    print("%s\t%d" % (subject, n))
m.logout()
"#;

fn imap_args(carrier: &Carrier, login: &str, password: &str) -> Vec<String> {
    vec![
        carrier.imap.ip().to_string(),
        carrier.imap.port().to_string(),
        login.to_owned(),
        password.to_owned(),
    ]
}

async fn count_subject(carrier: &Carrier, subject: &str) -> anyhow::Result<usize> {
    let mut args = imap_args(carrier, "carol", "carol password 1");
    args.push(subject.to_owned());
    let (ok, out) = python(COUNT_SUBJECT, &args).await?;
    ensure!(ok, "imaplib failed: {out}");
    out.trim()
        .parse::<usize>()
        .with_context(|| format!("not a count: {out}"))
}

async fn subjects(carrier: &Carrier) -> anyhow::Result<HashMap<String, usize>> {
    let (ok, out) = python(SUBJECTS, &imap_args(carrier, "carol", "carol password 1")).await?;
    ensure!(ok, "imaplib: {out}");
    out.lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (subject, n) = line.rsplit_once('\t').context("subject line")?;
            Ok((subject.to_owned(), n.parse()?))
        })
        .collect()
}

/// Every message in this carrier's queue, recipients included.
async fn queued(
    carrier: &Carrier,
    origin: queue_pb::Origin,
) -> anyhow::Result<Vec<queue_pb::QueuedMessage>> {
    let mut client = QueueClient::new(carrier.grpc()?);
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_messages(queue_pb::ListMessagesRequest {
                origin: origin as i32,
                page_size: 500,
                page_token,
                ..Default::default()
            })
            .await?
            .into_inner();
        all.extend(page.messages);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let started = Instant::now();
    while !check().await? {
        ensure!(
            started.elapsed() < limit,
            "timed out after {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(started.elapsed())
}

/// Carol asks `carrier` (whose onion is `carrier_onion`) to carry for her: C signs the request
/// with her key, the carrier records it after checking it against the key her onion serves.
/// Both through the admin API; the carrier's answer is returned as it came (status, JSON).
async fn ask_to_carry(
    c: &Carrier,
    carol_identity: &str,
    carrier: &Carrier,
    carrier_onion: &str,
) -> anyhow::Result<(u16, Value)> {
    let signed = c
        .op(
            "POST",
            &format!("/v1/identities/{carol_identity}/carry-statements"),
            json!({ "carrier": carrier_onion, "kind": "request" }),
        )
        .await;
    let statement = signed["statement"]
        .as_str()
        .with_context(|| format!("no statement: {signed}"))?;
    ensure!(
        statement.starts_with("-----BEGIN PGP MESSAGE-----"),
        "{statement}"
    );
    let body = json!({ "statement": statement }).to_string();
    let answer = admin_support::http(
        carrier.node.admin,
        "POST",
        "/v1/carry-agreements",
        Some(admin_support::OPERATOR_TOKEN),
        Some(&body),
    )
    .await;
    Ok((answer.status, answer.json()))
}

/// Carol asks `carrier_onion`'s carrier to carry for her in mail: C signs the request with her
/// key and queues it to `postmaster@<carrier_onion>`.
async fn send_carry_request(
    c: &Carrier,
    carol_identity: &str,
    carrier_onion: &str,
) -> anyhow::Result<()> {
    let sent = c
        .op(
            "POST",
            &format!("/v1/identities/{carol_identity}/carry-statements"),
            json!({ "carrier": carrier_onion, "kind": "request", "send": true }),
        )
        .await;
    ensure!(
        sent["sent_to"] == format!("postmaster@{carrier_onion}"),
        "{sent}"
    );
    Ok(())
}

/// The carry requests a carrier received in mail, through its admin API.
async fn carry_requests(carrier: &Carrier) -> Vec<Value> {
    carrier.op("GET", "/v1/carry-requests", Value::Null).await["requests"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The replies of `onion`'s MX, reached through `tor`, to an RCPT for each of `recipients` in
/// one transaction from `from`.
async fn rcpt_replies(
    tor: &onionpost_e2e::TorClient,
    onion: &str,
    from: &str,
    recipients: &[String],
) -> anyhow::Result<Vec<String>> {
    let stream = tokio_socks::tcp::Socks5Stream::connect(tor.socks_addr(), (onion, 25))
        .await
        .with_context(|| format!("connecting to {onion}'s mx"))?;
    let (read, mut write) = tokio::io::split(stream);
    let mut read = BufReader::new(read);
    ensure!(reply(&mut read).await?.starts_with("220 "));
    let mut send = async |line: String| -> anyhow::Result<String> {
        write.write_all(format!("{line}\r\n").as_bytes()).await?;
        reply(&mut read).await
    };
    send("EHLO peer".to_owned()).await?;
    send(format!("MAIL FROM:<{from}>")).await?;
    let mut replies = Vec::with_capacity(recipients.len());
    for recipient in recipients {
        replies.push(send(format!("RCPT TO:<{recipient}>")).await?);
    }
    send("QUIT".to_owned()).await?;
    Ok(replies)
}

/// Alice's address-book entry for Carol, through A's admin API.
async fn contact_on(a: &Carrier, alice_account: &str, carol: &str) -> anyhow::Result<Value> {
    let book = a
        .op(
            "GET",
            &format!("/v1/accounts/{alice_account}/contacts"),
            Value::Null,
        )
        .await;
    book["contacts"]
        .as_array()
        .and_then(|contacts| contacts.iter().find(|c| c["address"] == carol))
        .cloned()
        .with_context(|| format!("no contact for carol: {book}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carriers_hold_mail_for_an_offline_recipient_and_release_it_on_etrn() -> anyhow::Result<()>
{
    let tornet = TorNet::start(4).await?;
    // A retries its direct attempts only every minute or so, so the carriers (released by ETRN)
    // deliver first; A's own retry comes later and must not make a second copy.
    let mut a = Carrier::start(
        tornet.client(0),
        &[
            ("ONIONPOST_QUEUE_RETRY_MIN_SECS", "60".to_owned()),
            ("ONIONPOST_QUEUE_RETRY_MAX_SECS", "60".to_owned()),
            (
                "ONIONPOST_SMTP_IN_MAX_MESSAGES_PER_HOUR_PER_ACCOUNT",
                "5000".to_owned(),
            ),
        ],
    )
    .await?;
    // The carriers retry on their own schedule only every ten minutes: what arrives quickly
    // was released by ETRN.
    let slow = [
        ("ONIONPOST_QUEUE_RETRY_MIN_SECS", "600".to_owned()),
        ("ONIONPOST_QUEUE_RETRY_MAX_SECS", "600".to_owned()),
    ];
    // B records carry requests that arrive in mail once verified; D (the default) waits for
    // its operator.
    let open = [
        slow[0].clone(),
        slow[1].clone(),
        ("ONIONPOST_QUEUE_CARRY_POLICY", "open".to_owned()),
    ];
    let mut b = Carrier::start(tornet.client(1), &open).await?;
    let mut c = Carrier::start(tornet.client(2), &[]).await?;
    let d = Carrier::start(tornet.client(3), &slow).await?;
    let (alice_account, _, alice, _) = a.account_with_identity("alice", "alice password 1").await?;
    let (_, _, _, bob_onion) = b.account_with_identity("bob", "bob password 1").await?;
    let (_, _, _, bea_onion) = b.account_with_identity("bea", "bea password 1").await?;
    let (_, carol_identity, carol, _) =
        c.account_with_identity("carol", "carol password 1").await?;
    let (_, _, _, dan_onion) = d.account_with_identity("dan", "dan password 1").await?;

    // Carol asks B and D to carry for her, in mail from her identity to each one's postmaster@
    // (issue 21), and publishes them as her preferred carriers (signed with her key, served over
    // her onion; C also sends ETRN to them when she is back).
    let asked = Instant::now();
    send_carry_request(&c, &carol_identity, &bob_onion).await?;
    send_carry_request(&c, &carol_identity, &dan_onion).await?;
    // B's policy is open: the agreement is recorded once B has checked the statement against
    // the key Carol's onion serves, for the onion it was sent to.
    wait_for(
        "B records Carol's carry request from her mail",
        Duration::from_secs(180),
        || async {
            let listed = b.op("GET", "/v1/carry-agreements", Value::Null).await;
            Ok(listed["agreements"].as_array().is_some_and(|all| {
                all.len() == 1 && all[0]["address"] == carol && all[0]["carrier"] == bob_onion
            }))
        },
    )
    .await
    .with_context(|| {
        format!(
            "B:
{}
C:
{}",
            b.node.log_text(),
            c.node.log_text()
        )
    })?;
    let at_b = carry_requests(&b).await;
    ensure!(
        at_b.len() == 1
            && at_b[0]["state"] == "accepted"
            && at_b[0]["address"] == carol
            && at_b[0]["kind"] == "request"
            && at_b[0]["onion"] == bob_onion,
        "{at_b:?}"
    );
    // D waits for its operator, who approves.
    wait_for(
        "D verifies Carol's carry request and waits for its operator",
        Duration::from_secs(180),
        || async {
            Ok(carry_requests(&d)
                .await
                .iter()
                .any(|request| request["state"] == "pending" && request["address"] == carol))
        },
    )
    .await
    .with_context(|| {
        format!(
            "D:
{}",
            d.node.log_text()
        )
    })?;
    ensure!(
        d.op("GET", "/v1/carry-agreements", Value::Null).await["agreements"] == json!([]),
        "D recorded an agreement before its operator approved"
    );
    let pending = carry_requests(&d).await.remove(0);
    let approved = d
        .op(
            "POST",
            &format!(
                "/v1/carry-requests/{}/approve",
                pending["id"].as_str().context("request id")?
            ),
            Value::Null,
        )
        .await;
    ensure!(
        approved["state"] == "accepted" && approved["agreement_id"].is_string(),
        "{approved}"
    );
    let listed = d.op("GET", "/v1/carry-agreements", Value::Null).await;
    ensure!(
        listed["agreements"].as_array().is_some_and(|all| {
            all.len() == 1 && all[0]["address"] == carol && all[0]["carrier"] == dan_onion
        }),
        "{listed}"
    );
    println!(
        "carriers: Carol's carry requests went in mail; B (open) and D (approved by its operator) agreed {:?} after she sent them",
        asked.elapsed()
    );
    let published = c
        .op(
            "PUT",
            &format!("/v1/identities/{carol_identity}/carriers"),
            json!({ "carriers": [&bob_onion, &dan_onion] }),
        )
        .await;
    ensure!(
        published["preferred_carriers"] == json!([&bob_onion, &dan_onion]),
        "{published}"
    );
    // A request that names another carrier is refused.
    let (status, refusal) = ask_to_carry(&c, &carol_identity, &b, &dan_onion).await?;
    ensure!(
        status == 409
            && refusal["detail"]
                .as_str()
                .is_some_and(|d| d.contains("another carrier")),
        "B took a request addressed to D: {status} {refusal}"
    );

    // A first message, directly: A pins Carol's key (fetched over her onion, with her signed
    // carrier list), C pins Alice's.
    let submit = |carrier: &Carrier, script: &'static str, subject: &str, body: &str| {
        let args = vec![
            carrier.submission.ip().to_string(),
            carrier.submission.port().to_string(),
            "alice".to_owned(),
            "alice password 1".to_owned(),
            alice.clone(),
            carol.clone(),
            subject.to_owned(),
            body.to_owned(),
        ];
        async move {
            let (ok, out) = python(script, &args).await?;
            ensure!(ok, "submission failed: {out}");
            Ok(())
        }
    };
    submit(&a, SUBMIT, "warm-up", "first contact").await?;
    newest_in_inbox(&c, "carol", "carol password 1", "warm-up", &a).await?;
    // Alice's address book learned Carol's carriers from her onion; the account designated none.
    let carol_contact = contact_on(&a, &alice_account, &carol).await?;
    ensure!(
        carol_contact["preferred_carriers"] == json!([&bob_onion, &dan_onion])
            && carol_contact["designated_carriers"] == json!([]),
        "{carol_contact}"
    );
    println!("carriers: A learned Carol's signed carrier list [B, D] from her onion");

    // B refuses to carry for Alice, who never asked it to: the same bytes as a made-up address
    // or any relay attempt. Carol is accepted.
    let nobody_onion = onionpost_proto::address::OnionHost::from_ed25519(&[b'x'; 32]);
    let nobody = format!("nobody@{nobody_onion}");
    let at_bob = rcpt_replies(
        tornet.client(3),
        &bob_onion,
        &carol,
        &[alice.clone(), nobody.clone(), carol.clone()],
    )
    .await?;
    let (not_asked, made_up, asked) = (&at_bob[0], &at_bob[1], &at_bob[2]);
    ensure!(not_asked == made_up, "{not_asked:?} vs {made_up:?}");
    ensure!(not_asked.starts_with("550 5.1.1 "), "{not_asked}");
    ensure!(asked.starts_with("250 "), "{asked}");
    // On Bea's onion (B's other identity), which Carol's request did not name, Carol is a
    // stranger like any other: the agreement shows on no onion but the one asked.
    let at_bea = rcpt_replies(
        tornet.client(3),
        &bea_onion,
        &alice,
        &[carol.clone(), nobody],
    )
    .await?;
    let (carol_elsewhere, made_up_here) = (&at_bea[0], &at_bea[1]);
    ensure!(
        carol_elsewhere == made_up_here && carol_elsewhere == not_asked,
        "{carol_elsewhere:?} vs {made_up_here:?}"
    );
    println!(
        "carriers: B refuses a recipient that never asked it to carry ({not_asked:?}), and Carol on its other onion"
    );

    // Carol goes offline. Alice writes, asking for a success notice.
    c.node.stop().await;
    let subject = "While you were away";
    submit(&a, SUBMIT_NOTIFY, subject, "Held by your carriers.").await?;
    let mut expected = vec![bob_onion.clone(), dan_onion.clone()];
    expected.sort();
    // Both carriers hold it, and A has recorded both hand-offs (a carrier's 250 comes before
    // A's own record of it).
    let handed = wait_for(
        "A hands the message to both of Carol's carriers",
        Duration::from_secs(300),
        || async {
            let mut held = 0;
            for carrier in [&b, &d] {
                let carried = queued(carrier, queue_pb::Origin::Carry).await?;
                if carried
                    .iter()
                    .any(|m| m.recipients.iter().any(|r| r.address == carol))
                {
                    held += 1;
                }
            }
            let own = queued(&a, queue_pb::Origin::Submission).await?;
            let mut handed_to: Vec<String> = own
                .iter()
                .flat_map(|m| m.recipients.iter())
                .flat_map(|r| r.handed_to_carriers.iter().cloned())
                .collect();
            handed_to.sort();
            Ok(held == 2 && handed_to == expected)
        },
    )
    .await
    .with_context(|| format!("A:\n{}\nB:\n{}", a.node.log_text(), b.node.log_text()))?;
    println!("carriers: C offline; A handed the message to B and D within {handed:?}");

    // Carol comes back: C sends ETRN to B and D, which deliver at once.
    c.node.restart().await;
    let back = Instant::now();
    let arrived = wait_for(
        "the message reaches Carol",
        Duration::from_secs(300),
        || async { Ok(count_subject(&c, subject).await? > 0) },
    )
    .await
    .with_context(|| format!("B:\n{}\nC:\n{}", b.node.log_text(), c.node.log_text()))?;
    wait_for(
        "B and D release what they held",
        Duration::from_secs(120),
        || async {
            Ok(queued(&b, queue_pb::Origin::Carry).await?.is_empty()
                && queued(&d, queue_pb::Origin::Carry).await?.is_empty())
        },
    )
    .await?;
    println!(
        "carriers: C back; Carol has the message {arrived:?} later, B and D released theirs after ETRN"
    );

    // Alice asked for a success notice and gets exactly one, from whoever delivered first (a
    // carrier after ETRN, as a rule: encrypted to her and decrypted by A). The later copies,
    // which C already had, are taken without a notice.
    let notices = async || -> anyhow::Result<Vec<String>> {
        let mut args = imap_args(&a, "alice", "alice password 1");
        args.push("Delivery Status Notification (Success)".to_owned());
        let (ok, out) = python(READ_ALL, &args).await?;
        ensure!(ok, "imaplib: {out}");
        Ok(out
            .split("\n=====\n")
            .filter(|text| !text.trim().is_empty())
            .map(str::to_owned)
            .collect())
    };
    wait_for(
        "a success DSN reaches Alice",
        Duration::from_secs(180),
        || async { Ok(!notices().await?.is_empty()) },
    )
    .await
    .with_context(|| format!("A:\n{}\nB:\n{}", a.node.log_text(), b.node.log_text()))?;
    let notice = notices().await?.remove(0);
    ensure!(
        notice.contains("Action: delivered")
            && notice.contains(&format!("Final-Recipient: rfc822; {carol}")),
        "{notice}"
    );
    let by = if notice.contains("this carrier held the message") {
        "a carrier"
    } else {
        "A itself"
    };

    // A still had the message and delivers it directly on its next retry; C drops that copy.
    wait_for("A's direct retry", Duration::from_secs(180), || async {
        Ok(queued(&a, queue_pb::Origin::Submission).await?.is_empty())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let all = notices().await?;
    ensure!(
        all.len() == 1,
        "Alice has {} success notices for one message:\n{}",
        all.len(),
        all.join("\n-----\n")
    );
    let copies = count_subject(&c, subject).await?;
    ensure!(
        copies == 1,
        "Carol has {copies} copies (from B, D and A directly)"
    );
    println!(
        "carriers: B, D and A all delivered; Carol has one copy ({:?} after C came back), Alice one success notice, from {by}",
        back.elapsed()
    );

    // Carol now names B alone. A learns the new list from her next mail to Alice (inside the
    // encryption, signed by the key A pinned), not from her onion.
    c.op(
        "PUT",
        &format!("/v1/identities/{carol_identity}/carriers"),
        json!({ "carriers": [&bob_onion] }),
    )
    .await;
    let args = [
        c.submission.ip().to_string(),
        c.submission.port().to_string(),
        "carol".to_owned(),
        "carol password 1".to_owned(),
        carol.clone(),
        alice.clone(),
        "new carriers".to_owned(),
        "Only B from now on.".to_owned(),
    ];
    let (ok, out) = python(SUBMIT, &args).await?;
    ensure!(ok, "carol's submission failed: {out}");
    newest_in_inbox(&a, "alice", "alice password 1", "new carriers", &c).await?;
    let learned = wait_for(
        "A learns Carol's new carrier list from her mail",
        Duration::from_secs(60),
        || async {
            Ok(
                contact_on(&a, &alice_account, &carol).await?["preferred_carriers"]
                    == json!([&bob_onion]),
            )
        },
    )
    .await?;
    println!("carriers: Carol's new list [B] reached A in her mail ({learned:?} after it arrived)");

    // B alone carries the next messages. C goes offline; Alice sends HELD messages; once B
    // holds them all (each tried once and waiting), A leaves, B is killed with SIGKILL and
    // started again, and C comes back.
    c.node.stop().await;
    let started = Instant::now();
    let mut burst = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(BURST)
        .args([
            a.submission.ip().to_string(),
            a.submission.port().to_string(),
            "alice".to_owned(),
            "alice password 1".to_owned(),
            alice.clone(),
            carol.clone(),
            HELD.to_string(),
            "8".to_owned(),
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the burst")?;
    let mut lines = BufReader::new(burst.stdout.take().context("stdout")?).lines();
    let outcome = tokio::time::timeout(Duration::from_secs(600), lines.next_line())
        .await
        .context("the burst stalled")??
        .unwrap_or_default();
    ensure!(outcome == "DONE", "burst: {outcome}\n{}", a.node.log_text());
    println!("carriers: {HELD} submitted on A in {:?}", started.elapsed());
    // B waits a retry interval (ten minutes here) before its first attempt at carried mail, so
    // nothing is in flight when it is killed: what it holds is only on disk.
    let held = wait_for(
        "B holds every message",
        Duration::from_secs(1200),
        || async {
            let carried = queued(&b, queue_pb::Origin::Carry).await?;
            let waiting = carried
                .iter()
                .filter(|m| {
                    m.recipients.iter().all(|r| {
                        r.address == carol && r.state == queue_pb::RecipientState::Scheduled as i32
                    })
                })
                .count();
            Ok(waiting == HELD)
        },
    )
    .await
    .with_context(|| format!("A:\n{}\nB:\n{}", a.node.log_text(), b.node.log_text()))?;
    let agreements = QueueClient::new(b.grpc()?)
        .list_carry_agreements(queue_pb::ListCarryAgreementsRequest::default())
        .await?
        .into_inner()
        .agreements;
    ensure!(
        agreements
            .iter()
            .any(|agreement| agreement.address == carol && agreement.held_messages == HELD as u64),
        "{agreements:?}"
    );
    println!(
        "carriers: B holds {HELD} messages for Carol ({:?} after the burst)",
        held
    );
    a.node.stop().await;
    b.node.kill().await;
    b.node.restart().await;
    let restarted = Instant::now();
    c.node.restart().await;
    loop {
        let counts = subjects(&c).await?;
        let missing = (0..HELD)
            .filter(|n| !counts.contains_key(&format!("held {n:04}")))
            .count();
        if missing == 0 {
            break;
        }
        ensure!(
            restarted.elapsed() < Duration::from_secs(900),
            "{missing} held messages never arrived\nB:\n{}\nC:\n{}",
            b.node.log_text(),
            c.node.log_text()
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    println!(
        "carriers: all {HELD} arrived {:?} after B's SIGKILL and restart",
        restarted.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let counts: BTreeMap<String, usize> = subjects(&c).await?.into_iter().collect();
    ensure!(counts.len() >= HELD);
    let duplicated: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    ensure!(
        duplicated.is_empty(),
        "delivered more than once: {duplicated:?}"
    );
    println!("carriers: each of the {HELD} exactly once");
    Ok(())
}
