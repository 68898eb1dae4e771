//! What the mail tests share: a carrier (every service in one `onionpost serve` on a tor client
//! of the private network, with submission and IMAP on loopback), accounts with an online
//! identity, and Python's smtplib and imaplib as the mail clients.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use onionpost_e2e::TorClient;
use onionpost_e2e::node::{Node, free_port};
use onionpost_e2e::onion_service::free_port_block;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;
use tokio::time::Instant;

use crate::admin_support::{OPERATOR_TOKEN, http, operator_json};

pub const TOR_TIMEOUT: Duration = Duration::from_secs(180);

pub struct Carrier {
    pub node: Node,
    pub submission: SocketAddr,
    pub imap: SocketAddr,
}

impl Carrier {
    /// Starts a carrier on `tor`; `extra` adds or overrides environment settings.
    pub async fn start(tor: &TorClient, extra: &[(&str, String)]) -> anyhow::Result<Carrier> {
        let (first, last) = free_port_block(32)?;
        let submission = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let imap = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut env = vec![
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
            // The account portal on loopback only (portal.rs tests it on the carrier's onion).
            ("ONIONPOST_PORTAL_ONION", "false".to_owned()),
        ];
        env.retain(|(key, _)| !extra.iter().any(|(extra_key, _)| extra_key == key));
        env.extend(extra.iter().cloned());
        let node = Node::start("onion,keys,imap,queue,smtp-out,smtp-in,portal,admin", &env).await;
        let carrier = Carrier {
            node,
            submission,
            imap,
        };
        carrier.node.until_ready().await?;
        Ok(carrier)
    }

    pub async fn op(&self, method: &str, path: &str, body: Value) -> Value {
        operator_json(self.node.admin, method, path, body).await
    }

    /// Creates an account with one identity and waits until its onion is online; returns the
    /// account id, the identity's address and its onion.
    pub async fn account(
        &self,
        login: &str,
        password: &str,
    ) -> anyhow::Result<(String, String, String)> {
        let (account_id, _, address, onion) = self.account_with_identity(login, password).await?;
        Ok((account_id, address, onion))
    }

    /// As [`Carrier::account`], with the identity's id second.
    pub async fn account_with_identity(
        &self,
        login: &str,
        password: &str,
    ) -> anyhow::Result<(String, String, String, String)> {
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
        Ok((account_id, identity_id, address, onion))
    }

    /// Where tor forwards one of an identity's onion ports: the listener every peer from tor
    /// reaches.
    pub async fn target(
        &self,
        identity_id: &str,
        purpose: onionpost_proto::onion::v1::PortPurpose,
    ) -> anyhow::Result<SocketAddr> {
        let onion = onionpost_proto::onion::v1::onion_client::OnionClient::new(self.grpc()?)
            .get_onion(onionpost_proto::onion::v1::GetOnionRequest {
                identity_id: identity_id.to_owned(),
            })
            .await?
            .into_inner();
        let port = onion
            .ports
            .iter()
            .find(|port| port.purpose == purpose as i32)
            .with_context(|| format!("no {purpose:?} port: {onion:?}"))?;
        Ok(format!("{}:{}", port.target_host, port.target_port).parse()?)
    }

    /// A gRPC channel to the services of this carrier's process.
    pub fn grpc(&self) -> anyhow::Result<onionpost_runtime::Transport> {
        self.node.grpc()
    }
}

pub async fn python(script: &str, args: &[String]) -> anyhow::Result<(bool, String)> {
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

/// Submits one message; arguments after the eighth are RCPT parameters (RFC 3461 `NOTIFY=…`,
/// `ORCPT=…`), which smtplib sends only when the server offers DSN.
pub const SUBMIT: &str = r#"
import smtplib, sys
from email.message import EmailMessage
host, port, login, password, sender, rcpt, subject, body = sys.argv[1:9]
rcpt_options = sys.argv[9:]
msg = EmailMessage()
msg["From"] = sender
msg["To"] = rcpt
msg["Subject"] = subject
msg["X-Mailer"] = "Leaky Mailer 1.0"
msg.set_content(body)
with smtplib.SMTP(host, int(port), timeout=300) as s:
    s.ehlo("client")
    if rcpt_options and not s.has_extn("dsn"):
        sys.exit("the server does not offer DSN")
    s.login(login, password)
    s.send_message(msg, rcpt_options=rcpt_options)
print("sent")
"#;

pub const READ: &str = r#"
import imaplib, sys, email
host, port, login, password, subject = sys.argv[1:6]
m = imaplib.IMAP4(host, int(port))
m.login(login, password)
m.select("INBOX")
typ, data = m.search(None, "SUBJECT", '"' + subject + '"')
ids = data[0].split()
if not ids:
    print("EMPTY")
    sys.exit(0)
typ, data = m.fetch(ids[-1], "(RFC822)")
sys.stdout.write(data[0][1].decode("utf-8", "replace"))
m.logout()
"#;

/// One SMTP reply over a raw stream, lines joined.
pub async fn reply<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> anyhow::Result<String> {
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

/// Polls an account's INBOX over IMAP until a message whose Subject contains `subject` is
/// there; returns the newest such message.
pub async fn newest_in_inbox(
    carrier: &Carrier,
    login: &str,
    password: &str,
    subject: &str,
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
                subject.to_owned(),
            ],
        )
        .await?;
        ensure!(ok, "imaplib failed: {out}");
        if !out.starts_with("EMPTY") {
            return Ok(out);
        }
        ensure!(
            started.elapsed() < Duration::from_secs(300),
            "no message with subject {subject:?} arrived for {login}\nsender:\n{}\nrecipient:\n{}",
            sender.node.log_text(),
            carrier.node.log_text()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub const COUNT_SUBJECT: &str = r#"
import imaplib, sys
host, port, login, password, subject = sys.argv[1:6]
m = imaplib.IMAP4(host, int(port))
m.login(login, password)
m.select("INBOX")
typ, data = m.search(None, "SUBJECT", '"' + subject + '"')
print(len(data[0].split()))
m.logout()
"#;

/// Issue 18, "at rest": every file under `dir` (SQLite files with their WAL included), read as
/// bytes; fails naming every file and needle found (ASCII case ignored). Run on a stopped
/// carrier's data directory: a copied volume must show no correspondent's address or onion, no
/// subject, no body and no key material.
pub fn nothing_readable_at_rest(dir: &std::path::Path, needles: &[&str]) -> anyhow::Result<usize> {
    let mut files = 0;
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        for entry in std::fs::read_dir(&path)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
                continue;
            }
            files += 1;
            let bytes = std::fs::read(entry.path())?;
            for needle in needles {
                if bytes
                    .windows(needle.len())
                    .any(|window| window.eq_ignore_ascii_case(needle.as_bytes()))
                {
                    found.push(format!("{} holds {needle:?}", entry.path().display()));
                }
            }
        }
    }
    ensure!(found.is_empty(), "readable at rest:\n{}", found.join("\n"));
    Ok(files)
}
