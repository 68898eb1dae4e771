//! A crash in the middle of a burst: eight smtplib clients submit 1,000 messages from Alice on
//! carrier A to Carol on carrier C; after 300 of them have had their 250, A is killed with
//! SIGKILL and started again. Every message that got a 250 must reach Carol's INBOX exactly
//! once (design.md: 250 only once the message is durable), and none that did not may arrive
//! twice.

mod admin_support;
mod mail_support;

use std::collections::{BTreeSet, HashMap};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use mail_support::{Carrier, SUBMIT, newest_in_inbox, python};
use onionpost_e2e::TorNet;
use tokio::io::AsyncBufReadExt as _;
use tokio::time::Instant;

const MESSAGES: usize = 1000;
const KILL_AFTER: usize = 300;

/// Submits messages `burst 0000` … in `threads` threads, one SMTP session each, printing
/// `ACK n` once message n has had its 250. A thread stops at its first failure.
const BURST: &str = r#"
import smtplib, sys, threading
from email.message import EmailMessage
host, port, login, password, sender, rcpt, count, threads = sys.argv[1:9]
count, threads = int(count), int(threads)
lock = threading.Lock()
def say(text):
    with lock:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
def run(first):
    try:
        with smtplib.SMTP(host, int(port), timeout=120) as s:
            s.login(login, password)
            for n in range(first, count, threads):
                msg = EmailMessage()
                msg["From"] = sender
                msg["To"] = rcpt
                msg["Subject"] = "burst %04d" % n
                msg.set_content("message %d of the burst" % n)
                s.send_message(msg)
                say("ACK %d" % n)
    except Exception as error:
        say("STOP %r" % error)
workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
for w in workers: w.start()
for w in workers: w.join()
say("DONE")
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

async fn subjects(carrier: &Carrier) -> anyhow::Result<HashMap<String, usize>> {
    let (ok, out) = python(
        SUBJECTS,
        &[
            carrier.imap.ip().to_string(),
            carrier.imap.port().to_string(),
            "carol".to_owned(),
            "carol password 1".to_owned(),
        ],
    )
    .await?;
    ensure!(ok, "imaplib: {out}");
    out.lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (subject, n) = line.rsplit_once('\t').context("subject line")?;
            Ok((subject.to_owned(), n.parse()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_loses_and_duplicates_nothing_acknowledged() -> anyhow::Result<()> {
    let tornet = TorNet::start(2).await?;
    // The default hourly cap (500 per account) would refuse part of the burst.
    let mut a = Carrier::start(
        tornet.client(0),
        &[(
            "ONIONPOST_SMTP_IN_MAX_MESSAGES_PER_HOUR_PER_ACCOUNT",
            "5000".to_owned(),
        )],
    )
    .await?;
    let c = Carrier::start(tornet.client(1), &[]).await?;
    let (_, alice, _) = a.account("alice", "alice password 1").await?;
    let (_, carol, _) = c.account("carol", "carol password 1").await?;

    // A first message, so that A holds Carol's key and the circuits are built.
    let (ok, out) = python(
        SUBMIT,
        &[
            a.submission.ip().to_string(),
            a.submission.port().to_string(),
            "alice".to_owned(),
            "alice password 1".to_owned(),
            alice.clone(),
            carol.clone(),
            "warm-up".to_owned(),
            "first contact".to_owned(),
        ],
    )
    .await?;
    ensure!(ok, "warm-up submission: {out}\n{}", a.node.log_text());
    newest_in_inbox(&c, "carol", "carol password 1", "warm-up", &a).await?;

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
            MESSAGES.to_string(),
            "8".to_owned(),
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the burst")?;
    let mut lines = tokio::io::BufReader::new(burst.stdout.take().context("stdout")?).lines();
    let mut acknowledged = BTreeSet::new();
    let started = Instant::now();
    let mut killed_at = None;
    while let Some(line) = tokio::time::timeout(Duration::from_secs(300), lines.next_line())
        .await
        .context("the burst stalled")??
    {
        if let Some(n) = line.strip_prefix("ACK ") {
            acknowledged.insert(n.parse::<usize>()?);
            if acknowledged.len() == KILL_AFTER && killed_at.is_none() {
                a.node.kill().await;
                killed_at = Some(started.elapsed());
            }
        } else if line == "DONE" {
            break;
        }
    }
    let killed_at = killed_at.context("A was never killed: the burst ended first")?;
    let rate = KILL_AFTER as f64 / killed_at.as_secs_f64();
    println!(
        "mail_burst: {KILL_AFTER} acknowledged in {killed_at:?} ({rate:.0}/s); killed; {} acknowledged in all",
        acknowledged.len()
    );
    a.node.restart().await;

    // Every acknowledged message arrives; wait until the queue has caught up.
    let started = Instant::now();
    let counts = loop {
        let counts = subjects(&c).await?;
        let missing: Vec<&usize> = acknowledged
            .iter()
            .filter(|n| !counts.contains_key(&format!("burst {n:04}")))
            .collect();
        if missing.is_empty() {
            break counts;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(900),
            "{} acknowledged messages never arrived, e.g. {:?}\nA:\n{}",
            missing.len(),
            &missing[..missing.len().min(10)],
            a.node.log_text()
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    };
    println!(
        "mail_burst: all {} acknowledged messages delivered {:?} after the restart",
        acknowledged.len(),
        started.elapsed()
    );
    // Let any second attempt land, then count copies.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let counts = {
        let later = subjects(&c).await?;
        ensure!(later.len() >= counts.len());
        later
    };
    let duplicated: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    ensure!(
        duplicated.is_empty(),
        "delivered more than once: {duplicated:?}"
    );
    let unacknowledged = counts
        .keys()
        .filter(|subject| subject.starts_with("burst "))
        .count()
        - acknowledged.len();
    println!(
        "mail_burst: no duplicates; {unacknowledged} messages without a 250 (cut off by the kill) also arrived, once"
    );
    Ok(())
}
