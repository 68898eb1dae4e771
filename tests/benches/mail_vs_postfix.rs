//! Submission throughput and end-to-end latency, side by side with Postfix.
//!
//! Throughput: 1,000 messages of about 600 bytes in 8 concurrent SMTP sessions, each message
//! acknowledged only once durable. Postfix (Debian's, a private instance whose queue lives
//! in a temporary directory on the same disk as onionpost's data) fsyncs each queue file
//! before its 250 and defers delivery; onionpost signs and encrypts each message and commits
//! it to its SQLite queue (synchronous FULL) before its 250, and starts delivering over tor at
//! once. Postfix is measured with its own `smtp-source` and with the client used for
//! onionpost (which adds AUTH PLAIN for onionpost's submission).
//!
//! Latency over the private Tor network: from the start of a submission on carrier A to the
//! moment the recipient's IMAP IDLE on carrier C reports the new message, next to the bare
//! onion round trip (a tor stream to C's onion MX: connect, 220 greeting, QUIT).
//!
//! Run: `cargo bench -p onionpost-e2e --bench mail_vs_postfix` (root: Postfix must be
//! installed; tests/run.sh installs it).

#[path = "../tests/admin_support/mod.rs"]
mod admin_support;
#[path = "../tests/mail_support/mod.rs"]
mod mail_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use base64::Engine as _;
use mail_support::{Carrier, SUBMIT, newest_in_inbox, python};
use onionpost_e2e::TorNet;
use onionpost_e2e::node::free_port;
use onionpost_e2e::postfix::Postfix;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

const MESSAGES: usize = 1000;
const SESSIONS: usize = 8;
const BODY_BYTES: usize = 600;
const LATENCY_ROUNDS: usize = 10;

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    // Postfix.
    let postfix = Postfix::start(
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        "mydestination =\nmynetworks = 127.0.0.0/8\nrelayhost = [127.0.0.1]:9\n\
         defer_transports = smtp\nsmtpd_recipient_restrictions = permit_mynetworks, reject",
    )
    .await?;
    let started = Instant::now();
    let status = tokio::process::Command::new("smtp-source")
        .args([
            "-s",
            &SESSIONS.to_string(),
            "-m",
            &MESSAGES.to_string(),
            "-l",
            &BODY_BYTES.to_string(),
            "-f",
            "sender@bench.invalid",
            "-t",
            "recipient@example.org",
            &postfix.smtp.to_string(),
        ])
        .status()
        .await
        .context("running smtp-source")?;
    let smtp_source = started.elapsed();
    ensure!(status.success(), "smtp-source failed");
    let same_client = submit_many(postfix.smtp, None, "sender@bench.invalid", "r@example.org")
        .await
        .context("our client against postfix")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let queued = postfix.queued();
    ensure!(
        queued >= 2 * MESSAGES,
        "postfix holds {queued} messages, expected {}",
        2 * MESSAGES
    );
    drop(postfix);

    // onionpost: two carriers over the private Tor network.
    let tornet = TorNet::start(2).await?;
    let a = Carrier::start(
        tornet.client(0),
        &[(
            "ONIONPOST_SMTP_IN_MAX_MESSAGES_PER_HOUR_PER_ACCOUNT",
            "100000".to_owned(),
        )],
    )
    .await?;
    let c = Carrier::start(tornet.client(1), &[]).await?;
    let (_, alice, _) = a.account("alice", "alice password 1").await?;
    let (_, carol, carol_onion) = c.account("carol", "carol password 1").await?;
    // First contact: A fetches Carol's key over her onion.
    let (ok, out) = python(
        SUBMIT,
        &[
            a.submission.ip().to_string(),
            a.submission.port().to_string(),
            "alice".to_owned(),
            "alice password 1".to_owned(),
            alice.clone(),
            carol.clone(),
            "first contact".to_owned(),
            "hello".to_owned(),
        ],
    )
    .await?;
    ensure!(ok, "first submission: {out}");
    newest_in_inbox(&c, "carol", "carol password 1", "first contact", &a).await?;

    // Latency first, on a quiet carrier.
    let mut idle = Idle::start(c.imap, "carol", "carol password 1").await?;
    let mut end_to_end = Vec::new();
    for round in 0..LATENCY_ROUNDS {
        let started = Instant::now();
        submit_one(
            a.submission,
            Some(("alice", "alice password 1")),
            &alice,
            &carol,
            &format!("latency {round}"),
        )
        .await?;
        idle.next_exists(Duration::from_secs(120)).await?;
        end_to_end.push(started.elapsed());
    }
    let mut bare = Vec::new();
    for _ in 0..LATENCY_ROUNDS {
        let started = Instant::now();
        let stream = tokio_socks::tcp::Socks5Stream::connect(
            tornet.client(0).socks_addr(),
            (carol_onion.as_str(), 25),
        )
        .await?;
        let mut stream = BufReader::new(stream);
        let mut line = String::new();
        stream.read_line(&mut line).await?;
        ensure!(line.starts_with("220 "), "{line}");
        stream.get_mut().write_all(b"QUIT\r\n").await?;
        line.clear();
        stream.read_line(&mut line).await?;
        bare.push(started.elapsed());
    }

    let onionpost = submit_many(
        a.submission,
        Some(("alice", "alice password 1")),
        &alice,
        &carol,
    )
    .await?;

    let rate = |elapsed: Duration| MESSAGES as f64 / elapsed.as_secs_f64();
    println!();
    println!(
        "accepted messages per second ({MESSAGES} messages, {SESSIONS} sessions, ~{BODY_BYTES} B, 250 after fsync)"
    );
    println!("  {:<44} {:>10}", "server (client)", "msg/s");
    println!(
        "  {:<44} {:>10.0}",
        "Postfix 3.7 (smtp-source)",
        rate(smtp_source)
    );
    println!(
        "  {:<44} {:>10.0}",
        "Postfix 3.7 (onionpost bench client)",
        rate(same_client)
    );
    println!(
        "  {:<44} {:>10.0}",
        "onionpost (bench client, AUTH, sign+encrypt)",
        rate(onionpost)
    );
    println!();
    println!("latency over the private Tor network ({LATENCY_ROUNDS} rounds)");
    println!("  {:<44} {:>10} {:>10}", "", "median", "max");
    println!(
        "  {:<44} {:>10.0?} {:>10.0?}",
        "submission on A -> IMAP IDLE EXISTS on C",
        median(&mut end_to_end),
        end_to_end.iter().max().copied().unwrap_or_default()
    );
    println!(
        "  {:<44} {:>10.0?} {:>10.0?}",
        "bare onion round trip (connect, 220, QUIT)",
        median(&mut bare),
        bare.iter().max().copied().unwrap_or_default()
    );
    Ok(())
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// Sends `MESSAGES` messages in `SESSIONS` sessions; returns the time until the last 250.
async fn submit_many(
    server: SocketAddr,
    auth: Option<(&str, &str)>,
    from: &str,
    to: &str,
) -> anyhow::Result<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut sessions = Vec::new();
    for _ in 0..SESSIONS {
        let next = next.clone();
        let auth = auth.map(|(login, password)| (login.to_owned(), password.to_owned()));
        let (from, to) = (from.to_owned(), to.to_owned());
        sessions.push(tokio::spawn(async move {
            let mut session = Smtp::connect(server, auth.as_ref()).await?;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= MESSAGES {
                    break;
                }
                session.send(&from, &to, &format!("bench {n}")).await?;
            }
            session.quit().await
        }));
    }
    for session in sessions {
        session.await??;
    }
    Ok(started.elapsed())
}

async fn submit_one(
    server: SocketAddr,
    auth: Option<(&str, &str)>,
    from: &str,
    to: &str,
    subject: &str,
) -> anyhow::Result<()> {
    let auth = auth.map(|(login, password)| (login.to_owned(), password.to_owned()));
    let mut session = Smtp::connect(server, auth.as_ref()).await?;
    session.send(from, to, subject).await?;
    session.quit().await
}

/// The bench's SMTP client: one command, one reply (no pipelining), as most MUAs submit.
struct Smtp {
    stream: BufReader<TcpStream>,
}

impl Smtp {
    async fn connect(server: SocketAddr, auth: Option<&(String, String)>) -> anyhow::Result<Smtp> {
        let mut smtp = Smtp {
            stream: BufReader::new(TcpStream::connect(server).await?),
        };
        smtp.reply("2").await?;
        smtp.command("EHLO bench", "2").await?;
        if let Some((login, password)) = auth {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("\0{login}\0{password}"));
            smtp.command(&format!("AUTH PLAIN {token}"), "235").await?;
        }
        Ok(smtp)
    }

    async fn reply(&mut self, expect: &str) -> anyhow::Result<String> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            ensure!(
                self.stream.read_line(&mut line).await? > 0,
                "connection closed"
            );
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        ensure!(all.starts_with(expect), "expected {expect}: {all}");
        Ok(all)
    }

    async fn command(&mut self, line: &str, expect: &str) -> anyhow::Result<String> {
        self.stream
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await?;
        self.reply(expect).await
    }

    async fn send(&mut self, from: &str, to: &str, subject: &str) -> anyhow::Result<()> {
        self.command(&format!("MAIL FROM:<{from}>"), "250").await?;
        self.command(&format!("RCPT TO:<{to}>"), "250").await?;
        self.command("DATA", "354").await?;
        let line = "x".repeat(76);
        let mut body = format!("From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\r\n");
        while body.len() < BODY_BYTES {
            body.push_str(&line);
            body.push_str("\r\n");
        }
        body.push_str(".\r\n");
        self.stream.get_mut().write_all(body.as_bytes()).await?;
        self.reply("250").await?;
        Ok(())
    }

    async fn quit(mut self) -> anyhow::Result<()> {
        self.command("QUIT", "221").await?;
        Ok(())
    }
}

/// An IMAP session in IDLE on INBOX, reporting each new message.
struct Idle {
    stream: BufReader<TcpStream>,
    exists: u64,
}

impl Idle {
    async fn start(server: SocketAddr, login: &str, password: &str) -> anyhow::Result<Idle> {
        let mut stream = BufReader::new(TcpStream::connect(server).await?);
        let mut line = String::new();
        stream.read_line(&mut line).await?;
        let mut idle = Idle { stream, exists: 0 };
        idle.tagged(&format!("a LOGIN \"{login}\" \"{password}\""), "a")
            .await?;
        idle.tagged("b SELECT INBOX", "b").await?;
        idle.stream.get_mut().write_all(b"c IDLE\r\n").await?;
        loop {
            line.clear();
            idle.stream.read_line(&mut line).await?;
            if line.starts_with('+') {
                return Ok(idle);
            }
        }
    }

    async fn tagged(&mut self, command: &str, tag: &str) -> anyhow::Result<()> {
        self.stream
            .get_mut()
            .write_all(format!("{command}\r\n").as_bytes())
            .await?;
        loop {
            let mut line = String::new();
            ensure!(self.stream.read_line(&mut line).await? > 0, "imap closed");
            if let Some(n) = exists(&line) {
                self.exists = n;
            }
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                ensure!(rest.starts_with("OK"), "{command}: {line}");
                return Ok(());
            }
        }
    }

    /// Waits for an EXISTS beyond the last one seen.
    async fn next_exists(&mut self, limit: Duration) -> anyhow::Result<()> {
        tokio::time::timeout(limit, async {
            loop {
                let mut line = String::new();
                ensure!(self.stream.read_line(&mut line).await? > 0, "imap closed");
                if let Some(n) = exists(&line)
                    && n > self.exists
                {
                    self.exists = n;
                    return Ok(());
                }
            }
        })
        .await
        .context("no new message within the limit")?
    }
}

fn exists(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("* ")?;
    let (n, word) = rest.trim_end().split_once(' ')?;
    (word == "EXISTS").then(|| n.parse().ok()).flatten()
}
