//! onionpost's IMAP server (with the real SQLite store, bodies encrypted at rest) side by side
//! with Dovecot on the same 10,000-message mailbox, over real loopback IMAP connections.
//!
//! Run: `cargo bench -p onionpost-imap --bench imap_vs_dovecot` (needs `dovecot-imapd`; a
//! private dovecot runs from a config in a temporary directory, never the system service).
//! `IMAP_BENCH_MESSAGES` changes the mailbox size.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use onionpost_imap::server::{ImapServer, Limits, ListenerKind};
use onionpost_imap::service::ImapService;
use onionpost_runtime::Database;
use onionpost_runtime::config::AccountSettings;
use onionpost_runtime::seal::CarrierSecret;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "benchmark password";

fn message(index: usize) -> Vec<u8> {
    let mut body = String::new();
    for line in 0..(20 + index % 60) {
        body.push_str(&format!(
            "Line {line} of message {index}: the quick brown fox jumps over the lazy dog.\r\n"
        ));
    }
    format!(
        "Return-Path: <sender{s}@example.org>\r\nFrom: Sender {s} <sender{s}@example.org>\r\n\
         To: Bench User <bench@example.org>\r\nCc: list{c}@example.net\r\n\
         Subject: benchmark message {index} topic-{t}\r\n\
         Date: Mon, 23 Nov 2026 10:{m:02}:{sec:02} +0000\r\nMessage-ID: <bench-{index}@example.org>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}",
        s = index % 97,
        c = index % 13,
        t = index % 50,
        m = (index / 60) % 60,
        sec = index % 60,
    )
    .into_bytes()
}

/// A minimal IMAP client: sends a command, reads through literals to the tagged reply.
struct Client {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    next: u32,
}

impl Client {
    async fn connect(address: SocketAddr) -> Client {
        let stream = TcpStream::connect(address).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        let (read, write) = stream.into_split();
        let mut client = Client {
            reader: BufReader::with_capacity(1 << 20, read),
            writer: write,
            next: 0,
        };
        let mut greeting = Vec::new();
        client
            .reader
            .read_until(b'\n', &mut greeting)
            .await
            .unwrap();
        client
    }

    /// Returns the number of response bytes.
    async fn run(&mut self, command: &str) -> usize {
        self.next += 1;
        let tag = format!("b{}", self.next);
        self.writer
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .await
            .unwrap();
        let mut total = 0;
        loop {
            let mut line = Vec::new();
            let read = self.reader.read_until(b'\n', &mut line).await.unwrap();
            assert!(read > 0, "connection closed during {command}");
            total += read;
            if line.starts_with(tag.as_bytes()) {
                let text = String::from_utf8_lossy(&line);
                assert!(text.contains(" OK"), "{command}: {text}");
                return total;
            }
            let trimmed = line.strip_suffix(b"\r\n").unwrap_or(&line);
            if trimmed.ends_with(b"}")
                && let Some(open) = trimmed.iter().rposition(|b| *b == b'{')
                && let Ok(count) = std::str::from_utf8(&trimmed[open + 1..trimmed.len() - 1])
                    .unwrap_or("x")
                    .trim_end_matches('+')
                    .parse::<usize>()
            {
                let mut literal = vec![0; count];
                self.reader.read_exact(&mut literal).await.unwrap();
                total += count;
            }
        }
    }
}

struct Timings {
    select_cold: Duration,
    select_warm: Duration,
    fetch_envelopes: Duration,
    envelope_bytes: usize,
    uid_search: Duration,
    fetch_bodies: Duration,
}

async fn measure(address: SocketAddr, login: &str, count: usize) -> Timings {
    let mut client = Client::connect(address).await;
    client.run(&format!("LOGIN {login} \"{PASSWORD}\"")).await;
    let start = Instant::now();
    client.run("SELECT INBOX").await;
    let select_cold = start.elapsed();
    client.run("UNSELECT").await;
    let start = Instant::now();
    client.run("SELECT INBOX").await;
    let select_warm = start.elapsed();
    let start = Instant::now();
    let envelope_bytes = client.run("FETCH 1:* (FLAGS ENVELOPE)").await;
    let fetch_envelopes = start.elapsed();
    let needle = count / 2;
    let start = Instant::now();
    client
        .run(&format!(
            "UID SEARCH HEADER Message-ID \"<bench-{needle}@\""
        ))
        .await;
    let uid_search = start.elapsed();
    let first = count / 3;
    let start = Instant::now();
    client
        .run(&format!("FETCH {}:{} BODY.PEEK[]", first + 1, first + 100))
        .await;
    let fetch_bodies = start.elapsed();
    client.run("LOGOUT").await;
    Timings {
        select_cold,
        select_warm,
        fetch_envelopes,
        envelope_bytes,
        uid_search,
        fetch_bodies,
    }
}

async fn onionpost(dir: &Path, count: usize) -> (SocketAddr, CancellationToken, Duration) {
    let database =
        Database::open_sqlite(&dir.join("imap.sqlite3"), onionpost_imap::store::MIGRATIONS)
            .await
            .expect("database");
    let secret = CarrierSecret::from_text("benchmark-secret-0123456789abcdef0123456789").unwrap();
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
    .expect("service");
    let account = service
        .create_account("bench", PASSWORD, "")
        .await
        .expect("account");
    let account_id = account.record.account_id;
    let store = service.mail_store();
    let start = Instant::now();
    for index in 0..count {
        store
            .append(&account_id, "INBOX", &[], None, message(index).into())
            .await
            .expect("append");
    }
    let load = start.elapsed();
    let server = ImapServer::new(store, Limits::default(), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let serve_stop = stop.clone();
    tokio::spawn(async move {
        server
            .serve(listener, ListenerKind::Clearnet, serve_stop)
            .await
    });
    (address, stop, load)
}

/// A private dovecot: its own config, maildir and sockets in `dir`, on a free loopback port.
async fn dovecot(
    dir: &Path,
    count: usize,
) -> Option<(SocketAddr, tokio::process::Child, Duration)> {
    let binary = ["/usr/sbin/dovecot", "/usr/bin/dovecot"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    // dovecot refuses to run logins as root or deliver to uid 0: the mailbox belongs to the
    // `dovecot` system user, and the temporary directories are opened up for it.
    let (uid, gid) = (id("-u")?, id("-g")?);
    let home = dir.join("home/bench");
    let start = Instant::now();
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(home.join("Maildir").join(sub)).unwrap();
    }
    for index in 0..count {
        let name = format!("{}.M{index}P1.bench:2,", 1_700_000_000 + index);
        std::fs::write(home.join("Maildir/cur").join(name), message(index)).unwrap();
    }
    let load = start.elapsed();
    chown_tree(&dir.join("home"), uid, gid);
    for open in [dir, &dir.join("home"), &home] {
        let _ = std::fs::set_permissions(open, std::fs::Permissions::from_mode(0o755));
    }
    std::fs::create_dir_all(dir.join("run")).unwrap();
    std::fs::write(
        dir.join("passwd"),
        format!(
            "bench:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{}\n",
            home.display()
        ),
    )
    .unwrap();
    let config = format!(
        r#"protocols = imap
listen = 127.0.0.1
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
first_valid_uid = 1
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = {dir}/passwd
}}
userdb {{
  driver = passwd-file
  args = {dir}/passwd
}}
service imap-login {{
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
"#,
        dir = dir.display()
    );
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let conf = dir.join("dovecot.conf");
    std::fs::write(&conf, config).unwrap();
    let child = tokio::process::Command::new(binary)
        .arg("-F")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..100 {
        if TcpStream::connect(address).await.is_ok() {
            return Some((address, child, load));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "dovecot did not start; log: {}",
        std::fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default()
    );
    None
}

/// The `dovecot` system user's uid or gid (`id -u dovecot`).
fn id(flag: &str) -> Option<u32> {
    let output = std::process::Command::new("id")
        .args([flag, "dovecot"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), uid, gid);
        }
    }
}

fn ms(duration: Duration) -> String {
    format!("{:>10.1} ms", duration.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let count: usize = std::env::var("IMAP_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap();
    let onion_dir = dir.path().join("onionpost");
    let dove_dir = dir.path().join("dovecot");
    std::fs::create_dir_all(&onion_dir).unwrap();
    std::fs::create_dir_all(&dove_dir).unwrap();
    // dovecot's unprivileged processes must reach their directory inside ours.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    println!("loading {count} messages into onionpost (SQLite store, encrypted) …");
    let (onion_address, stop, onion_load) = onionpost(&onion_dir, count).await;
    println!("loading {count} messages into dovecot (maildir) …");
    let dovecot = dovecot(&dove_dir, count).await;

    let ours = measure(onion_address, "bench", count).await;
    let theirs = match &dovecot {
        Some((address, _, _)) => Some(measure(*address, "bench", count).await),
        None => {
            println!("dovecot is not available (apt-get install dovecot-imapd); onionpost only");
            None
        }
    };
    println!();
    println!("{count} messages, loopback, one connection");
    println!("{:<42}{:>13}{:>13}", "", "onionpost", "dovecot");
    let row = |label: &str, ours: Duration, theirs: Option<Duration>| {
        println!(
            "{label:<42}{}{}",
            ms(ours),
            theirs.map(ms).unwrap_or_else(|| format!("{:>13}", "-"))
        );
    };
    let dove_load = dovecot.as_ref().map(|(_, _, load)| *load);
    row(
        "load (APPEND via store / maildir files)",
        onion_load,
        dove_load,
    );
    row(
        "SELECT INBOX (first)",
        ours.select_cold,
        theirs.as_ref().map(|t| t.select_cold),
    );
    row(
        "SELECT INBOX (again)",
        ours.select_warm,
        theirs.as_ref().map(|t| t.select_warm),
    );
    row(
        "FETCH 1:* (FLAGS ENVELOPE)",
        ours.fetch_envelopes,
        theirs.as_ref().map(|t| t.fetch_envelopes),
    );
    row(
        "UID SEARCH HEADER Message-ID",
        ours.uid_search,
        theirs.as_ref().map(|t| t.uid_search),
    );
    row(
        "FETCH 100 x BODY.PEEK[]",
        ours.fetch_bodies,
        theirs.as_ref().map(|t| t.fetch_bodies),
    );
    println!(
        "FETCH 1:* (FLAGS ENVELOPE) response size: onionpost {} bytes, dovecot {}",
        ours.envelope_bytes,
        theirs
            .as_ref()
            .map(|t| format!("{} bytes", t.envelope_bytes))
            .unwrap_or_else(|| "-".to_owned())
    );
    stop.cancel();
    if let Some((_, mut child, _)) = dovecot {
        let _ = child.kill().await;
    }
}
