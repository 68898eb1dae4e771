//! The adversary of issue 18 ("Unlinkability and sender authenticity hold against an active
//! adversary"), over the private Tor network. Carrier A hosts Xavier, Yara and an account the
//! adversary pays for (Mallory); carrier C hosts Zoe; the adversary speaks from a tor client of
//! its own. For each co-hosting oracle the adversary asks the same question through a
//! co-hosted onion and through a foreign one (C's), alternating, [`SAMPLES`] times each after
//! one discarded warm-up, and the test asks for:
//!
//! - byte-identical replies on both sides, and
//! - reply times that cannot be told apart: the two-sample Kolmogorov–Smirnov statistic D
//!   stays under its critical value at α = 0.001 (1.95 · √((n+m)/(n·m)), 0.62 for 20 and 20),
//!   unless the medians differ by less than [`JITTER_FLOOR`] (far below what two tor circuits
//!   differ by on the real network: a shift that small tells an adversary nothing).
//!
//! The oracles: (1) the reply to DATA for a message claiming to come from a co-hosted
//! identity, a foreign one and an onion nobody serves (the sender's key is never fetched while
//! the peer waits); (2) AUTH with the adversary's own credentials on another identity's onion;
//! (3) one identity's session limit filled, a co-hosted identity answering as a foreign one;
//! (4) IMAP and SMTP AUTH back-off after failed logins on a co-hosted onion; (5) ETRN for an
//! onion the carrier holds mail for. Every reply and figure is printed.

mod admin_support;
mod mail_support;

use std::time::Duration;

use anyhow::ensure;
use base64::Engine as _;
use mail_support::{Carrier, SUBMIT, python, reply};
use onionpost_e2e::{TorClient, TorNet};
use onionpost_proto::address::OnionHost;
use onionpost_proto::onion::v1::PortPurpose;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::time::Instant;

/// Timed questions per side and oracle (the issue asks for at least 20).
const SAMPLES: usize = 24;
/// A shift of the median below this is not counted as distinguishable (see the module doc).
const JITTER_FLOOR: Duration = Duration::from_millis(5);
/// How long the adversary waits for an onion to answer at first.
const REACH: Duration = Duration::from_secs(120);
/// smtp-in's per-listener session limit (services/smtp-in, `max_sessions_per_listener`).
const LISTENER_LIMIT: usize = 100;

/// Replies and reply times of one side of one oracle.
#[derive(Default)]
struct Side {
    replies: Vec<String>,
    times: Vec<Duration>,
}

impl Side {
    fn add(&mut self, reply: String, time: Duration) {
        self.replies.push(reply);
        self.times.push(time);
    }

    fn median(&self) -> Duration {
        let mut times = self.times.clone();
        times.sort();
        times[times.len() / 2]
    }
}

/// The two-sample Kolmogorov–Smirnov statistic: the largest gap between the two empirical
/// distribution functions.
fn ks_statistic(a: &[Duration], b: &[Duration]) -> f64 {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort();
    b.sort();
    let (mut i, mut j, mut d) = (0, 0, 0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    d
}

/// Fails unless the two sides answered with the same bytes at indistinguishable times.
fn indistinguishable(oracle: &str, names: (&str, &str), a: &Side, b: &Side) -> anyhow::Result<()> {
    let first = &a.replies[0];
    for reply in a.replies.iter().chain(&b.replies) {
        ensure!(
            reply == first,
            "{oracle}: replies differ between {} and {}: {first:?} vs {reply:?}",
            names.0,
            names.1
        );
    }
    let (n, m) = (a.times.len() as f64, b.times.len() as f64);
    let critical = 1.95 * ((n + m) / (n * m)).sqrt();
    let d = ks_statistic(&a.times, &b.times);
    let (median_a, median_b) = (a.median(), b.median());
    let shift = median_a.abs_diff(median_b);
    println!(
        "adversary: {oracle}: reply {:?}; {}: median {median_a:?}, {}: median {median_b:?}; \
         KS D = {d:.2} (critical {critical:.2} at α = 0.001, n = {n}, m = {m})",
        first.trim_end(),
        names.0,
        names.1
    );
    ensure!(
        d < critical || shift < JITTER_FLOOR,
        "{oracle}: reply times tell {} from {}: KS D = {d:.2} ≥ {critical:.2}, medians \
         {median_a:?} vs {median_b:?}\n{}: {:?}\n{}: {:?}",
        names.0,
        names.1,
        names.0,
        a.times,
        names.1,
        b.times
    );
    Ok(())
}

/// A line-based conversation over a stream (an onion through the adversary's tor, or a
/// loopback target port).
struct Talk<S> {
    reader: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Talk<S> {
    fn new(stream: S) -> Self {
        Talk {
            reader: BufReader::new(stream),
        }
    }

    /// One SMTP reply (all its lines).
    async fn smtp_reply(&mut self) -> anyhow::Result<String> {
        reply(&mut self.reader).await
    }

    /// Sends `line` (CRLF added) and returns the SMTP reply and how long it took.
    async fn smtp(&mut self, line: &str) -> anyhow::Result<(String, Duration)> {
        self.send(line).await?;
        let started = Instant::now();
        let answer = self.smtp_reply().await?;
        Ok((answer, started.elapsed()))
    }

    async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        let stream = self.reader.get_mut();
        stream.write_all(line.as_bytes()).await?;
        stream.write_all(b"\r\n").await?;
        stream.flush().await?;
        Ok(())
    }

    /// One IMAP line.
    async fn imap_line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        ensure!(
            self.reader.read_line(&mut line).await? > 0,
            "connection closed"
        );
        Ok(line)
    }
}

/// The adversary's stream to `onion:port` through its own tor client.
async fn onion_talk(
    tor: &TorClient,
    onion: &str,
    port: u16,
) -> anyhow::Result<Talk<tokio_socks::tcp::Socks5Stream<tokio::net::TcpStream>>> {
    // Tor may fail a stream now and then (a rendezvous circuit being replaced): a connection
    // is not what is timed, so try again.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match tor.connect_onion(onion, port, REACH).await {
            Ok(stream) => return Ok(Talk::new(stream)),
            Err(error) if attempt < 4 => {
                println!("adversary: reaching {onion}:{port}: {error}; again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => {
                return Err(anyhow::Error::new(error).context(format!("reaching {onion}:{port}")));
            }
        }
    }
}

/// Oracle 1: DATA on Yara's MX for a message that claims to be encrypted and to come from
/// `sender`; the reply and its time.
async fn data_reply(
    tor: &TorClient,
    yara_onion: &str,
    yara: &str,
    sender: &str,
) -> anyhow::Result<(String, Duration)> {
    let mut talk = onion_talk(tor, yara_onion, 25).await?;
    talk.smtp_reply().await?;
    talk.smtp("EHLO adversary").await?;
    let (mail, _) = talk.smtp(&format!("MAIL FROM:<{sender}>")).await?;
    ensure!(mail.starts_with("250"), "MAIL FROM: {mail}");
    let (rcpt, _) = talk.smtp(&format!("RCPT TO:<{yara}>")).await?;
    ensure!(rcpt.starts_with("250"), "RCPT TO: {rcpt}");
    let (data, _) = talk.smtp("DATA").await?;
    ensure!(data.starts_with("354"), "DATA: {data}");
    talk.send(&format!(
        "From: {sender}\r\nTo: {yara}\r\nSubject: ...\r\nContent-Type: multipart/encrypted; \
         protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b\r\n\
         Content-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b--\r\n."
    ))
    .await?;
    let started = Instant::now();
    let answer = talk.smtp_reply().await?;
    let took = started.elapsed();
    let _ = talk.send("QUIT").await;
    Ok((answer, took))
}

/// Oracle 2: AUTH PLAIN with the adversary's own login and password on an identity's onion
/// submission port; oracle 4 (submission): the same with a made-up login.
async fn auth_reply(
    tor: &TorClient,
    onion: &str,
    login: &str,
    password: &str,
) -> anyhow::Result<(String, Duration)> {
    let mut talk = onion_talk(tor, onion, 587).await?;
    talk.smtp_reply().await?;
    let (ehlo, _) = talk.smtp("EHLO adversary").await?;
    ensure!(ehlo.contains("AUTH"), "no AUTH offered on {onion}: {ehlo}");
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{login}\0{password}"));
    let answer = talk.smtp(&format!("AUTH PLAIN {token}")).await?;
    let _ = talk.send("QUIT").await;
    Ok(answer)
}

/// Oracle 4: one failed IMAP LOGIN of a made-up login on an identity's onion.
async fn imap_login_reply(tor: &TorClient, onion: &str) -> anyhow::Result<(String, Duration)> {
    let mut talk = onion_talk(tor, onion, 143).await?;
    let greeting = talk.imap_line().await?;
    ensure!(greeting.starts_with("* OK"), "IMAP greeting: {greeting}");
    talk.send("a LOGIN nobody \"not the password\"").await?;
    let started = Instant::now();
    let answer = loop {
        let line = talk.imap_line().await?;
        if line.starts_with("a ") {
            break line;
        }
    };
    let took = started.elapsed();
    let _ = talk.send("b LOGOUT").await;
    Ok((answer, took))
}

/// Oracle 3: the greeting and EHLO reply of an identity's MX (while another's is full), timed
/// from the open stream to the end of the EHLO reply.
async fn mx_reply(tor: &TorClient, onion: &str) -> anyhow::Result<(String, Duration)> {
    let mut talk = onion_talk(tor, onion, 25).await?;
    let started = Instant::now();
    let greeting = talk.smtp_reply().await?;
    let (ehlo, _) = talk.smtp("EHLO adversary").await?;
    let took = started.elapsed();
    let _ = talk.send("QUIT").await;
    Ok((format!("{greeting}{ehlo}"), took))
}

/// Oracle 5: ETRN for `onion` on an identity's MX.
async fn etrn_reply(tor: &TorClient, mx: &str, onion: &str) -> anyhow::Result<(String, Duration)> {
    let mut talk = onion_talk(tor, mx, 25).await?;
    talk.smtp_reply().await?;
    talk.smtp("EHLO adversary").await?;
    let answer = talk.smtp(&format!("ETRN {onion}")).await?;
    let _ = talk.send("QUIT").await;
    Ok(answer)
}

/// Asks `ask(side)` for both sides in turn, one warm-up each (discarded), then [`SAMPLES`]
/// alternating rounds.
async fn sample<F, Fut>(mut ask: F) -> anyhow::Result<(Side, Side)>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(String, Duration)>>,
{
    let (mut first, mut second) = (Side::default(), Side::default());
    ask(0).await?;
    ask(1).await?;
    for round in 0..SAMPLES {
        // Alternate which side goes first, so a drift in load lands on both.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let (answer, took) = ask(side).await?;
            if side == 0 {
                first.add(answer, took);
            } else {
                second.add(answer, took);
            }
        }
    }
    Ok((first, second))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn co_hosted_identities_cannot_be_told_from_foreign_ones() -> anyhow::Result<()> {
    let tornet = TorNet::start(3).await?;
    // Retries far apart: the message A holds for (5) is tried again only when ETRN asks, so
    // no retry loop loads one carrier and not the other while the adversary times them.
    // No stamps: the adversary's own SMTP sessions compare what follows RCPT (stamps.rs shows
    // that a stamp's difficulty is per identity).
    let slow_retries = [
        ("ONIONPOST_QUEUE_RETRY_MIN_SECS", "600".to_owned()),
        ("ONIONPOST_QUEUE_RETRY_MAX_SECS", "3600".to_owned()),
        ("ONIONPOST_SMTP_IN_STAMP_BITS", "0".to_owned()),
    ];
    let a = Carrier::start(tornet.client(0), &slow_retries).await?;
    let c = Carrier::start(tornet.client(1), &slow_retries).await?;
    let adversary = tornet.client(2);
    let (_, xavier_id, _, xavier_onion) = a
        .account_with_identity("xavier", "xavier password 1")
        .await?;
    let (_, _, yara, yara_onion) = a.account_with_identity("yara", "yara password 1").await?;
    let (mallory_account, mallory, _) = a.account("mallory", "mallory password 1").await?;
    let (_, _, _, zoe_onion) = c.account_with_identity("zoe", "zoe password 1").await?;
    // An onion nobody serves: a valid v3 address, never published.
    let nobody_onion = OnionHost::from_ed25519(&[7u8; 32]).to_string();
    let nobody = format!("nobody@{nobody_onion}");
    println!(
        "adversary: Xavier {xavier_onion}, Yara {yara_onion} (A); Zoe {zoe_onion} (C); nobody {nobody_onion}"
    );
    let log = |what: &str| {
        format!(
            "{what}\nA:\n{}\nC:\n{}",
            a.node.log_text(),
            c.node.log_text()
        )
    };

    // For (5): A holds mail for an onion nobody serves. Mallory had its key from elsewhere
    // (the address book), so submission queues her message, and the first attempt fails.
    let nobody_key =
        onionpost_keys::IdentityKey::generate(&onionpost_keys::Address::parse(&nobody)?)?;
    let armored = onionpost_keys::public_armored(&nobody_key.public_cert())?;
    let contact = a
        .op(
            "POST",
            &format!("/v1/accounts/{mallory_account}/contacts"),
            serde_json::json!({
                "address": nobody,
                "public_key": base64::engine::general_purpose::STANDARD.encode(armored),
            }),
        )
        .await;
    ensure!(
        contact["address"] == nobody.as_str(),
        "adding nobody: {contact}"
    );
    let (ok, out) = python(
        SUBMIT,
        &[
            a.submission.ip().to_string(),
            a.submission.port().to_string(),
            "mallory".to_owned(),
            "mallory password 1".to_owned(),
            mallory.clone(),
            nobody.clone(),
            "held".to_owned(),
            "for an onion nobody serves".to_owned(),
        ],
    )
    .await?;
    ensure!(
        ok,
        "{}",
        log(&format!("Mallory's message to nobody: {out}"))
    );
    // (1) DATA on Yara's MX, claiming to come from Xavier (co-hosted), from Zoe (foreign), and
    // from an onion nobody serves: no key is fetched while the adversary waits, so the three
    // read and time the same.
    // A fresh local part each time, so the account never has the claimed sender pinned (as a
    // carrier that fetched keys at DATA would, after the first).
    let onions = [
        xavier_onion.as_str(),
        zoe_onion.as_str(),
        nobody_onion.as_str(),
    ];
    let sender = |index: usize, round: usize| format!("claimed{round}@{}", onions[index]);
    let mut by_sender: Vec<Side> = (0..3).map(|_| Side::default()).collect();
    for index in 0..3 {
        data_reply(adversary, &yara_onion, &yara, &sender(index, SAMPLES)).await?;
    }
    for round in 0..SAMPLES {
        for index in 0..3 {
            let index = (index + round) % 3;
            let (answer, took) =
                data_reply(adversary, &yara_onion, &yara, &sender(index, round)).await?;
            by_sender[index].add(answer, took);
        }
    }
    indistinguishable(
        "(1) DATA from a claimed sender",
        ("co-hosted sender", "foreign sender"),
        &by_sender[0],
        &by_sender[1],
    )
    .map_err(|error| error.context(log("oracle 1")))?;
    indistinguishable(
        "(1) DATA from a claimed sender",
        ("co-hosted sender", "sender offline"),
        &by_sender[0],
        &by_sender[2],
    )
    .map_err(|error| error.context(log("oracle 1")))?;

    // (2) AUTH with Mallory's own credentials on Xavier's onion (same carrier, not hers) and on
    // Zoe's (another carrier, where she has no account).
    let onions = [xavier_onion.as_str(), zoe_onion.as_str()];
    let (cohosted, foreign) =
        sample(|side| auth_reply(adversary, onions[side], "mallory", "mallory password 1")).await?;
    indistinguishable(
        "(2) AUTH on another identity's onion",
        ("co-hosted onion", "foreign onion"),
        &cohosted,
        &foreign,
    )
    .map_err(|error| error.context(log("oracle 2")))?;

    // (4) IMAP: failed logins of a made-up login on Xavier's onion, until its back-off engages;
    // then the same login on Yara's onion (co-hosted) reads and times like on Zoe's.
    for _ in 0..6 {
        imap_login_reply(adversary, &xavier_onion)
            .await
            .map_err(|error| error.context(log("oracle 4: Xavier's onion IMAP")))?;
    }
    let onions = [yara_onion.as_str(), zoe_onion.as_str()];
    let (cohosted, foreign) = sample(|side| imap_login_reply(adversary, onions[side])).await?;
    indistinguishable(
        "(4) IMAP login after failures on a co-hosted onion",
        ("co-hosted onion", "foreign onion"),
        &cohosted,
        &foreign,
    )
    .map_err(|error| error.context(log("oracle 4")))?;

    // (4, submission) The same through the onions' submission ports: SMTP AUTH is checked by
    // imap's Authenticate, whose back-off once keyed a login carrier-wide, so failures through
    // Xavier's onion made Yara's answer the (hash-free, fast) back-off.
    for _ in 0..6 {
        auth_reply(adversary, &xavier_onion, "nobody", "not the password")
            .await
            .map_err(|error| error.context(log("oracle 4: Xavier's onion submission")))?;
    }
    let (cohosted, foreign) =
        sample(|side| auth_reply(adversary, onions[side], "nobody", "not the password")).await?;
    indistinguishable(
        "(4) SMTP AUTH after failures on a co-hosted onion",
        ("co-hosted onion", "foreign onion"),
        &cohosted,
        &foreign,
    )
    .map_err(|error| error.context(log("oracle 4, submission")))?;

    // (3) Xavier's MX filled to its session limit, through the port tor forwards it to (every
    // peer from tor arrives there); Yara's MX answers as always, Xavier's says it is busy.
    let xavier_mx = a.target(&xavier_id, PortPurpose::Smtp).await?;
    let mut held = Vec::new();
    for _ in 0..LISTENER_LIMIT {
        let mut talk = Talk::new(tokio::net::TcpStream::connect(xavier_mx).await?);
        let greeting = talk.smtp_reply().await?;
        ensure!(
            greeting.starts_with("220"),
            "filling Xavier's MX: {greeting}"
        );
        held.push(talk);
    }
    // Yara's MX (co-hosted) against Zoe's (foreign): the same greeting and EHLO, in times
    // that cannot be told apart.
    let onions = [yara_onion.as_str(), zoe_onion.as_str()];
    let (cohosted, foreign) = sample(|side| mx_reply(adversary, onions[side])).await?;
    let greeting = cohosted.replies[0].clone();
    ensure!(
        greeting.starts_with("220") && greeting.contains("250 "),
        "{}",
        log(&format!("(3) Yara's MX while Xavier's is full: {greeting}"))
    );
    indistinguishable(
        "(3) an MX while a co-hosted identity's MX is full",
        ("co-hosted onion", "foreign onion"),
        &cohosted,
        &foreign,
    )
    .map_err(|error| error.context(log("oracle 3")))?;
    let mut xavier_full = onion_talk(adversary, &xavier_onion, 25).await?;
    let busy = xavier_full.smtp_reply().await?;
    ensure!(
        busy.starts_with("421"),
        "(3) Xavier's MX past its limit answered {busy}"
    );
    println!(
        "adversary: (3) Xavier's MX holding {LISTENER_LIMIT} sessions answers {:?}; Yara's \
         answers {:?}",
        busy.trim_end(),
        greeting.lines().next().unwrap_or_default()
    );
    drop(held);

    // (5) ETRN for an onion A holds mail for (Mallory's message to nobody, above) on Yara's
    // MX, and for the same onion on Zoe's MX (C holds nothing for it).
    let onions = [yara_onion.as_str(), zoe_onion.as_str()];
    let (cohosted, foreign) =
        sample(|side| etrn_reply(adversary, onions[side], &nobody_onion)).await?;
    indistinguishable(
        "(5) ETRN",
        ("carrier holding mail", "foreign carrier"),
        &cohosted,
        &foreign,
    )
    .map_err(|error| error.context(log("oracle 5")))?;
    Ok(())
}
