//! The clearnet gateway end to end (paper Fig. 7), on loopback, with real parts from Debian:
//! unbound serves the DNS of an outside domain (`outside.test`: MX, A, SPF, DKIM, DMARC), of the
//! gateway domain (`gw.test`) and of a domain whose DMARC policy rejects (`bad.test`); Postfix,
//! with its own configuration directory, is the outside correspondent's mail server on
//! 127.0.0.3:25, delivering to a maildir and relaying replies to the gateway's MX on 127.0.0.4.
//!
//! Alice (an account whose plan allows the gateway) submits with smtplib to David at
//! outside.test; David's mailbox gets it from `<alias>@gw.test`, with a DKIM signature dkimpy
//! verifies against the DNS and no onion address anywhere. David replies (signed for
//! outside.test with dkimpy, through his Postfix); Alice reads the reply in her IMAP INBOX with
//! SPF, DKIM and DMARC passed, and its text is nowhere in the carrier's files in the clear.
//! Refused, and tested: a relay attempt, an unknown and a revoked alias (one identical reply), a
//! plan without the gateway, and a message failing a p=reject DMARC policy.
//!
//! No tor network: identities need an onion key, so the onion service runs its own tor child,
//! told `DisableNetwork 1` (it makes the key and never connects anywhere).

mod admin_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use admin_support::{OPERATOR_TOKEN, http, operator_json};
use anyhow::{Context as _, bail, ensure};
use onionpost_e2e::node::{Node, free_port};
use onionpost_e2e::onion_service::free_port_block;
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The outside correspondent's mail server (Postfix) and the address it sends from.
const OUTSIDE_IP: &str = "127.0.0.3";
/// The gateway domain's MX.
const GATEWAY_IP: &str = "127.0.0.4";
const GATEWAY_DOMAIN: &str = "gw.test";
const PYTHON: &str = "/usr/bin/python3";

fn need(path: &str, package: &str) -> anyhow::Result<()> {
    ensure!(
        Path::new(path).exists(),
        "{path} is missing: install Debian's {package} (tests/run.sh does)"
    );
    Ok(())
}

async fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .await
        .with_context(|| format!("running {program}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(output.status.success(), "{program} {args:?} failed: {text}");
    Ok(text)
}

async fn python(script: &str, args: &[String]) -> anyhow::Result<(bool, String)> {
    let output = Command::new(PYTHON)
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

/// An RSA key for DKIM: the PEM file and the `p=` value of its DNS record.
async fn dkim_key(dir: &Path, name: &str) -> anyhow::Result<(PathBuf, String)> {
    let pem = dir.join(format!("{name}.pem"));
    let pem_text = pem.display().to_string();
    run("openssl", &["genrsa", "-out", &pem_text, "2048"]).await?;
    // The public key in PEM is the base64 of its DER, which is what `p=` holds.
    let public = run("openssl", &["rsa", "-in", &pem_text, "-pubout"]).await?;
    let p: String = public
        .lines()
        .filter(|line| !line.starts_with("-----") && !line.contains(' '))
        .collect();
    Ok((pem, p))
}

/// A TXT value as unbound's local-data wants it: quoted strings of at most 255 characters.
fn txt(value: &str) -> String {
    value
        .as_bytes()
        .chunks(200)
        .map(|chunk| format!("\"{}\"", String::from_utf8_lossy(chunk)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// unbound answering only for the test domains (everything else NXDOMAIN, nothing recursed).
async fn start_dns(
    dir: &Path,
    gateway_key: &str,
    outside_key: &str,
) -> anyhow::Result<(Child, SocketAddr)> {
    need("/usr/sbin/unbound", "unbound")?;
    let port = free_port();
    let dns = SocketAddr::from(([127, 0, 0, 1], port));
    let records = [
        "outside.test. IN MX 10 mx.outside.test.".to_owned(),
        format!("mx.outside.test. IN A {OUTSIDE_IP}"),
        format!(
            "outside.test. IN TXT {}",
            txt(&format!("v=spf1 ip4:{OUTSIDE_IP} -all"))
        ),
        format!(
            "sel._domainkey.outside.test. IN TXT {}",
            txt(&format!("v=DKIM1; k=rsa; p={outside_key}"))
        ),
        format!("_dmarc.outside.test. IN TXT {}", txt("v=DMARC1; p=reject")),
        format!("{GATEWAY_DOMAIN}. IN MX 10 mx.{GATEWAY_DOMAIN}."),
        format!("mx.{GATEWAY_DOMAIN}. IN A {GATEWAY_IP}"),
        format!(
            "{GATEWAY_DOMAIN}. IN TXT {}",
            txt("v=spf1 ip4:127.0.0.1 -all")
        ),
        format!(
            "gateway._domainkey.{GATEWAY_DOMAIN}. IN TXT {}",
            txt(&format!("v=DKIM1; k=rsa; p={gateway_key}"))
        ),
        format!(
            "_dmarc.{GATEWAY_DOMAIN}. IN TXT {}",
            txt("v=DMARC1; p=reject")
        ),
        format!("bad.test. IN TXT {}", txt("v=spf1 -all")),
        format!("_dmarc.bad.test. IN TXT {}", txt("v=DMARC1; p=reject")),
    ];
    let mut conf = format!(
        "server:\n  interface: 127.0.0.1@{port}\n  port: {port}\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{dir}\"\n  pidfile: \"{dir}/unbound.pid\"\n  use-syslog: no\n  logfile: \"{dir}/unbound.log\"\n  do-ip6: no\n  access-control: 127.0.0.0/8 allow\n  module-config: \"iterator\"\n  local-zone: \".\" static\n  local-zone: \"outside.test.\" static\n  local-zone: \"{GATEWAY_DOMAIN}.\" static\n  local-zone: \"bad.test.\" static\n",
        dir = dir.display()
    );
    for record in records {
        conf.push_str(&format!("  local-data: '{record}'\n"));
    }
    conf.push_str("remote-control:\n  control-enable: no\n");
    let conf_path = dir.join("unbound.conf");
    std::fs::write(&conf_path, conf)?;
    let conf_text = conf_path.display().to_string();
    run("/usr/sbin/unbound-checkconf", &[&conf_text]).await?;
    let daemon = Command::new("/usr/sbin/unbound")
        .args(["-d", "-c", &conf_text])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting unbound")?;
    // Answers once it serves: ask for the MX until it comes.
    let started = Instant::now();
    loop {
        let (ok, out) = python(
            DIG_MX,
            &[
                dns.ip().to_string(),
                port.to_string(),
                "outside.test".into(),
            ],
        )
        .await?;
        if ok && out.contains("mx.outside.test") {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(20),
            "unbound does not answer: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok((daemon, dns))
}

/// Postfix for outside.test on 127.0.0.3:25 with its own configuration, queue and maildirs.
/// Returns the maildir of david@outside.test.
async fn start_postfix(dir: &Path) -> anyhow::Result<(PostfixGuard, PathBuf)> {
    need("/usr/sbin/postfix", "postfix")?;
    let config = dir.join("postfix");
    let mail = dir.join("mail");
    std::fs::create_dir_all(config.join("queue"))?;
    std::fs::create_dir_all(config.join("data"))?;
    std::fs::create_dir_all(&mail)?;
    run(
        "chown",
        &["postfix", &config.join("data").display().to_string()],
    )
    .await?;
    // The virtual delivery agent writes as this uid (never root).
    run("chown", &["65534:65534", &mail.display().to_string()]).await?;
    let cert = config.join("cert.pem");
    let key = config.join("key.pem");
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=mx.outside.test",
            "-keyout",
            &key.display().to_string(),
            "-out",
            &cert.display().to_string(),
        ],
    )
    .await?;
    std::fs::write(
        config.join("vmailbox"),
        "david@outside.test outside.test/david/\n",
    )?;
    std::fs::write(
        config.join("transport"),
        format!("{GATEWAY_DOMAIN} smtp:[{GATEWAY_IP}]:25\n"),
    )?;
    let main_cf = format!(
        "compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.outside.test
mydomain = outside.test
myorigin = outside.test
mydestination =
inet_interfaces = all
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtp_bind_address = {OUTSIDE_IP}
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
virtual_mailbox_domains = outside.test
virtual_mailbox_base = {mail}
virtual_mailbox_maps = texthash:{config}/vmailbox
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
transport_maps = texthash:{config}/transport
smtpd_tls_security_level = may
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtp_tls_security_level = none
alias_maps =
alias_database =
local_recipient_maps =
smtputf8_enable = no
biff = no
maillog_file = {config}/maillog
maillog_file_prefixes = {config}
",
        queue = config.join("queue").display(),
        data = config.join("data").display(),
        mail = mail.display(),
        config = config.display(),
        cert = cert.display(),
        key = key.display(),
    );
    std::fs::write(config.join("main.cf"), main_cf)?;
    let master = std::fs::read_to_string("/etc/postfix/master.cf")
        .or_else(|_| std::fs::read_to_string("/usr/share/postfix/master.cf.dist"))
        .context("Postfix's master.cf")?;
    // Only 127.0.0.1 is on lo's interface list, so Postfix's own interface check refuses
    // `inet_interfaces = 127.0.0.3`; the listener is named in master.cf instead.
    let master = master.replacen("\nsmtp      inet", &format!("\n{OUTSIDE_IP}:smtp inet"), 1);
    ensure!(
        master.contains(&format!("{OUTSIDE_IP}:smtp inet")),
        "unexpected master.cf"
    );
    let master = if master.contains("postlogd") {
        master
    } else {
        format!("{master}\npostlog   unix-dgram n  -       n       -       1       postlogd\n")
    };
    std::fs::write(config.join("master.cf"), master)?;
    let config_text = config.display().to_string();
    run("/usr/sbin/postfix", &["-c", &config_text, "check"]).await?;
    run("/usr/sbin/postfix", &["-c", &config_text, "start"]).await?;
    let guard = PostfixGuard { config };
    let started = Instant::now();
    while tokio::net::TcpStream::connect((OUTSIDE_IP, 25))
        .await
        .is_err()
    {
        ensure!(
            started.elapsed() < Duration::from_secs(20),
            "Postfix does not listen on {OUTSIDE_IP}:25"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok((guard, mail.join("outside.test").join("david")))
}

/// Stops the test's Postfix (and only it) when dropped.
struct PostfixGuard {
    config: PathBuf,
}

impl Drop for PostfixGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("/usr/sbin/postfix")
            .args(["-c", &self.config.display().to_string(), "stop"])
            .output();
    }
}

impl PostfixGuard {
    fn log(&self) -> String {
        std::fs::read_to_string(self.config.join("maillog")).unwrap_or_default()
    }
}

struct Carrier {
    node: Node,
    submission: SocketAddr,
    imap: SocketAddr,
}

impl Carrier {
    async fn op(&self, method: &str, path: &str, body: Value) -> Value {
        operator_json(self.node.admin, method, path, body).await
    }

    /// An account on `plan` (None: the default plan) with one identity; returns the account id
    /// and the identity's address.
    async fn account(&self, login: &str, plan: Option<&str>) -> anyhow::Result<(String, String)> {
        let mut body = json!({"login": login, "password": PASSWORD});
        if let Some(plan) = plan {
            body["plan"] = json!(plan);
        }
        let account = self.op("POST", "/v1/accounts", body).await;
        let account_id = account["id"].as_str().context("account id")?.to_owned();
        let identity = self
            .op(
                "POST",
                &format!("/v1/accounts/{account_id}/identities"),
                json!({"local_part": login}),
            )
            .await;
        let address = identity["address"].as_str().context("address")?.to_owned();
        Ok((account_id, address))
    }

    async fn submit(
        &self,
        login: &str,
        from: &str,
        to: &str,
        subject: &str,
        body: &str,
    ) -> anyhow::Result<(bool, String)> {
        python(
            SUBMIT,
            &[
                self.submission.ip().to_string(),
                self.submission.port().to_string(),
                login.to_owned(),
                PASSWORD.to_owned(),
                from.to_owned(),
                to.to_owned(),
                subject.to_owned(),
                body.to_owned(),
            ],
        )
        .await
    }
}

const PASSWORD: &str = "correct horse battery";

const DIG_MX: &str = r#"
import sys, dns.resolver
r = dns.resolver.Resolver(configure=False)
r.nameservers = [sys.argv[1]]
r.port = int(sys.argv[2])
r.lifetime = 2
print(" ".join(str(a.exchange) for a in r.resolve(sys.argv[3], "MX")))
"#;

const SUBMIT: &str = r#"
import smtplib, sys
from email.message import EmailMessage
host, port, login, password, sender, rcpt, subject, body = sys.argv[1:9]
msg = EmailMessage()
msg["From"] = "Alice <%s>" % sender
msg["To"] = rcpt
msg["Subject"] = subject
msg["X-Mailer"] = "Leaky Mailer 1.0"
msg.set_content(body)
try:
    with smtplib.SMTP(host, int(port), timeout=120) as s:
        s.ehlo("client")
        s.login(login, password)
        s.send_message(msg)
    print("sent")
except smtplib.SMTPRecipientsRefused as e:
    for code, text in e.recipients.values():
        print("REFUSED %d %s" % (code, text.decode()))
    sys.exit(1)
"#;

/// Verifies the DKIM signature of a message file with dkimpy, asking the test's DNS.
const DKIM_VERIFY: &str = r#"
import sys, dkim, dns.resolver
path, server, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = dns.resolver.Resolver(configure=False)
r.nameservers = [server]
r.port = port
def dnsfunc(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    answer = r.resolve(name.rstrip("."), "TXT")
    return b"".join(b"".join(rdata.strings) for rdata in answer)
message = open(path, "rb").read()
print("DKIM-OK" if dkim.verify(message, dnsfunc=dnsfunc) else "DKIM-BAD")
"#;

/// David's reply, DKIM-signed for outside.test with dkimpy, sent through his Postfix.
const REPLY: &str = r#"
import smtplib, sys, dkim
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
host, to, subject, body, in_reply_to, key_path = sys.argv[1:7]
msg = EmailMessage()
msg["From"] = "David <david@outside.test>"
msg["To"] = to
msg["Subject"] = subject
msg["Date"] = formatdate(usegmt=True)
msg["Message-ID"] = make_msgid(domain="outside.test")
msg["In-Reply-To"] = in_reply_to
msg.set_content(body)
raw = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
sig = dkim.sign(raw, b"sel", b"outside.test", open(key_path, "rb").read(),
                include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
with smtplib.SMTP(host, 25, timeout=60) as s:
    s.sendmail("david@outside.test", [to], sig + raw)
print("sent")
"#;

/// One SMTP conversation with the gateway's MX from the outside's address; prints each reply.
const PROBE: &str = r#"
import smtplib, sys
host, source, mail_from, rcpt, message = sys.argv[1:6]
s = smtplib.SMTP(host, 25, source_address=(source, 0), timeout=60)
s.ehlo("mx.outside.test")
print("MAIL %d %s" % s.mail(mail_from))
code, text = s.rcpt(rcpt)
print("RCPT %d %s" % (code, text.decode()))
if code == 250:
    code, text = s.data(message.replace("\n", "\r\n").encode())
    print("DATA %d %s" % (code, text.decode()))
s.quit()
"#;

const READ_INBOX: &str = r#"
import imaplib, sys
host, port, login, password, needle = sys.argv[1:6]
mailbox = sys.argv[6] if len(sys.argv) > 6 else "INBOX"
m = imaplib.IMAP4(host, int(port))
m.login(login, password)
m.select(mailbox)
typ, data = m.search(None, "ALL")
for num in data[0].split():
    typ, parts = m.fetch(num, "(RFC822)")
    text = parts[0][1].decode("utf-8", "replace")
    if needle in text:
        sys.stdout.write(text)
        break
else:
    print("NOT-YET")
m.logout()
"#;

/// The newest message file in a maildir's `new`, waiting for it.
async fn wait_for_maildir(
    maildir: &Path,
    postfix: &PostfixGuard,
    node: &Node,
) -> anyhow::Result<(PathBuf, String)> {
    let started = Instant::now();
    loop {
        if let Ok(entries) = std::fs::read_dir(maildir.join("new")) {
            let mut files: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            files.sort();
            if let Some(path) = files.pop() {
                let text = std::fs::read_to_string(&path)?;
                return Ok((path, text));
            }
        }
        if started.elapsed() > Duration::from_secs(90) {
            bail!(
                "nothing reached the outside mailbox\n--- postfix ---\n{}\n--- carrier ---\n{}",
                postfix.log(),
                node.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message
        .lines()
        .take_while(|line| !line.is_empty())
        .find_map(|line| {
            let (field, value) = line.split_once(':')?;
            field.eq_ignore_ascii_case(name).then(|| value.trim())
        })
}

/// Whether any file under `dir` contains `needle`.
fn found_in_files(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|window| window == needle)
            {
                hits.push(path);
            }
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread")]
async fn mail_goes_out_through_an_alias_and_the_reply_comes_back() -> anyhow::Result<()> {
    need(PYTHON, "python3")?;
    let (ok, out) = python("import dkim, dns.resolver", &[]).await?;
    ensure!(
        ok,
        "dkimpy and dnspython are missing (Debian's python3-dkim, python3-dnspython): {out}"
    );
    let dir = tempfile::tempdir()?;
    // Postfix's daemons and its delivery agent run as other users and must reach into it.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    let (gateway_pem, gateway_public) = dkim_key(dir.path(), "gateway-dkim").await?;
    let (outside_pem, outside_public) = dkim_key(dir.path(), "outside-dkim").await?;
    let (_dns, dns) = start_dns(dir.path(), &gateway_public, &outside_public).await?;
    let (postfix, david_maildir) = start_postfix(dir.path()).await?;
    let rspamd = onionpost_e2e::rspamd::Rspamd::start().await?;

    // The carrier: no tor network; its onion service's tor child makes keys and stays offline.
    let torrc = dir.path().join("offline.torrc");
    std::fs::write(&torrc, "DisableNetwork 1\n")?;
    let (first, last) = free_port_block(32)?;
    let submission = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let imap = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let env = vec![
        ("ONIONPOST_TOR_CHILD_TORRC", torrc.display().to_string()),
        ("ONIONPOST_TOR_TARGET_PORTS", format!("{first}-{last}")),
        (
            "ONIONPOST_SECRET",
            "onionpost-e2e-gateway-secret-0123456789".to_owned(),
        ),
        ("ONIONPOST_ADMIN_TOKEN", OPERATOR_TOKEN.to_owned()),
        ("ONIONPOST_SUBMISSION_LISTEN", submission.to_string()),
        ("ONIONPOST_IMAP_LISTEN", imap.to_string()),
        ("ONIONPOST_QUEUE_RETRY_MIN_SECS", "2".to_owned()),
        ("ONIONPOST_QUEUE_RETRY_MAX_SECS", "4".to_owned()),
        ("ONIONPOST_GATEWAY_DOMAIN", GATEWAY_DOMAIN.to_owned()),
        ("ONIONPOST_GATEWAY_LISTEN", format!("{GATEWAY_IP}:25")),
        ("ONIONPOST_GATEWAY_DKIM_SELECTOR", "gateway".to_owned()),
        (
            "ONIONPOST_GATEWAY_DKIM_KEY",
            gateway_pem.display().to_string(),
        ),
        ("ONIONPOST_GATEWAY_DNS", dns.to_string()),
        ("ONIONPOST_GATEWAY_DMARC_POLICY", "follow".to_owned()),
        ("ONIONPOST_GATEWAY_RSPAMD", rspamd.normal.to_string()),
    ];
    let node = Node::start("onion,keys,imap,queue,smtp-in,gateway,portal,admin", &env).await;
    // The tor child may still be starting; creating an identity needs its control port.
    node.until_ready().await?;
    let mut carrier = Carrier {
        node,
        submission,
        imap,
    };
    let plan = carrier
        .op(
            "POST",
            "/v1/plans",
            json!({"name": "clearnet", "quota_bytes": 100_000_000, "identities_allowed": 3,
                   "gateway_allowed": true, "gateway_daily_limit": 20}),
        )
        .await;
    let plan_id = plan["id"].as_str().context("plan id")?.to_owned();
    let (alice_account, alice) = carrier.account("alice", Some(&plan_id)).await?;
    let (_bob_account, bob) = carrier.account("bob", None).await?;

    // Alice writes to David.
    let token = format!("lunch-{}", free_port());
    let (ok, out) = carrier
        .submit(
            "alice",
            &alice,
            "david@outside.test",
            "Lunch?",
            &format!("Shall we meet at noon? {token}"),
        )
        .await?;
    ensure!(ok, "submission failed: {out}\n{}", carrier.node.log_text());
    let (path, received) = wait_for_maildir(&david_maildir, &postfix, &carrier.node).await?;
    ensure!(received.contains(&token), "{received}");
    let from = header(&received, "From").context("From")?.to_owned();
    let alias = from
        .rsplit_once('<')
        .and_then(|(_, rest)| rest.strip_suffix('>'))
        .context("From address")?
        .to_owned();
    ensure!(
        alias.ends_with(&format!("@{GATEWAY_DOMAIN}")),
        "From: {from}"
    );
    ensure!(alias.split('@').next().unwrap().len() <= 64);
    ensure!(
        !received.to_ascii_lowercase().contains(".onion"),
        "an onion address reached the clearnet:\n{received}"
    );
    ensure!(!received.contains("Leaky Mailer"), "{received}");
    ensure!(header(&received, "DKIM-Signature").is_some(), "{received}");
    // The gateway took the STARTTLS Postfix offers (smtpd's per-session command counts).
    ensure!(
        postfix.log().contains(" starttls=1 "),
        "no STARTTLS towards the outside MX:\n{}",
        postfix.log()
    );
    let (ok, out) = python(
        DKIM_VERIFY,
        &[
            path.display().to_string(),
            dns.ip().to_string(),
            dns.port().to_string(),
        ],
    )
    .await?;
    ensure!(
        ok && out.contains("DKIM-OK"),
        "DKIM not verified by dkimpy: {out}\n{received}"
    );
    let message_id = header(&received, "Message-ID")
        .context("Message-ID")?
        .to_owned();

    // David replies through his own server; Alice reads it in her INBOX.
    let reply_token = format!("noon-suits-me-{}", free_port());
    let (ok, out) = python(
        REPLY,
        &[
            OUTSIDE_IP.to_owned(),
            alias.clone(),
            "Re: Lunch?".to_owned(),
            format!("Noon is fine. {reply_token}"),
            message_id,
            outside_pem.display().to_string(),
        ],
    )
    .await?;
    ensure!(ok, "David's reply not sent: {out}");
    let started = Instant::now();
    let reply = loop {
        let (ok, out) = python(
            READ_INBOX,
            &[
                carrier.imap.ip().to_string(),
                carrier.imap.port().to_string(),
                "alice".to_owned(),
                PASSWORD.to_owned(),
                reply_token.clone(),
            ],
        )
        .await?;
        ensure!(ok, "imaplib failed: {out}");
        if !out.starts_with("NOT-YET") {
            break out;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(90),
            "the reply never reached Alice\n--- postfix ---\n{}\n--- carrier ---\n{}",
            postfix.log(),
            carrier.node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let results = header(&reply, "Authentication-Results").context("Authentication-Results")?;
    ensure!(results.starts_with(GATEWAY_DOMAIN), "{reply}");
    for passed in ["spf=pass", "dkim=pass", "dmarc=pass"] {
        ensure!(reply.contains(passed), "{passed} missing:\n{reply}");
    }
    ensure!(
        header(&reply, "From")
            .unwrap_or("")
            .contains("david@outside.test")
    );
    let in_the_clear = found_in_files(&carrier.node.data_dir, reply_token.as_bytes());
    ensure!(
        in_the_clear.is_empty(),
        "the reply is stored in the clear: {in_the_clear:?}"
    );

    // rspamd scored the reply as ham; GTUBE (the standard test pattern) is spam and goes to
    // Junk, with the gateway's verdict and none the sender wrote.
    ensure!(
        header(&reply, "X-Spam-Status").is_some_and(|status| status.starts_with("No, ")),
        "no ham verdict on the reply:\n{reply}\n{}",
        rspamd.log()
    );
    let gtube_token = format!("gtube-{}", free_port());
    let (ok, out) = python(
        PROBE,
        &[
            GATEWAY_IP.to_owned(),
            OUTSIDE_IP.to_owned(),
            "david@outside.test".to_owned(),
            alias.clone(),
            format!(
                "From: David <david@outside.test>\nTo: {alias}\nSubject: {gtube_token}\nX-Spam-Status: No, forged\n\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\n"
            ),
        ],
    )
    .await?;
    ensure!(ok && out.contains("DATA 250"), "GTUBE not taken: {out}");
    let read = |mailbox: &'static str| {
        let args = vec![
            carrier.imap.ip().to_string(),
            carrier.imap.port().to_string(),
            "alice".to_owned(),
            PASSWORD.to_owned(),
            gtube_token.clone(),
            mailbox.to_owned(),
        ];
        async move { python(READ_INBOX, &args).await }
    };
    let (ok, junk) = read("Junk").await?;
    ensure!(
        ok && !junk.starts_with("NOT-YET"),
        "GTUBE is not in Junk: {junk}\n{}",
        carrier.node.log_text()
    );
    let verdicts: Vec<&str> = junk
        .lines()
        .filter(|line| line.to_ascii_lowercase().starts_with("x-spam-status:"))
        .collect();
    ensure!(
        verdicts.len() == 1 && verdicts[0].contains("Yes, ") && verdicts[0].contains("reject"),
        "{junk}"
    );
    let (ok, inbox) = read("INBOX").await?;
    ensure!(
        ok && inbox.starts_with("NOT-YET"),
        "GTUBE in the INBOX: {inbox}"
    );

    // A message failing DMARC (bad.test publishes p=reject; SPF fails, no signature) is
    // refused, following the sender domain's policy.
    let (ok, out) = python(
        PROBE,
        &[
            GATEWAY_IP.to_owned(),
            OUTSIDE_IP.to_owned(),
            "mallory@bad.test".to_owned(),
            alias.clone(),
            format!("From: Mallory <mallory@bad.test>\nTo: {alias}\nSubject: hi\n\nspoofed\n"),
        ],
    )
    .await?;
    ensure!(ok, "probe failed: {out}");
    ensure!(
        out.contains("DATA 550 5.7.1 Message rejected: it fails the DMARC policy"),
        "{out}"
    );

    // Admin API: the account's aliases, then revoking the one David knows.
    let aliases = carrier
        .op(
            "GET",
            &format!("/v1/accounts/{alice_account}/aliases"),
            Value::Null,
        )
        .await;
    let listed = aliases["aliases"].as_array().context("aliases")?;
    ensure!(listed.len() == 1, "{aliases}");
    ensure!(
        listed[0]["address"] == alias.as_str()
            && listed[0]["correspondent"] == "david@outside.test",
        "{aliases}"
    );
    let stats = carrier.op("GET", "/v1/gateway/stats", Value::Null).await;
    ensure!(
        stats["outbound_delivered_today"].as_u64() >= Some(1),
        "{stats}"
    );
    ensure!(
        stats["inbound_accepted_today"].as_u64() >= Some(1),
        "{stats}"
    );
    ensure!(
        stats["inbound_dmarc_failed_today"].as_u64() >= Some(1),
        "{stats}"
    );
    ensure!(stats["live_aliases"].as_u64() == Some(1), "{stats}");
    ensure!(stats["inbound_spam_today"].as_u64() == Some(1), "{stats}");

    // Refusals at RCPT: a relay attempt, a made-up alias, and (after revocation) David's
    // alias all get the same reply.
    let probe = |rcpt: String| {
        let args = vec![
            GATEWAY_IP.to_owned(),
            OUTSIDE_IP.to_owned(),
            "david@outside.test".to_owned(),
            rcpt,
            "Subject: x\n\nx\n".to_owned(),
        ];
        async move { python(PROBE, &args).await }
    };
    let (_, relay) = probe("someone@elsewhere.test".to_owned()).await?;
    let (_, unknown) = probe(format!("{}@{GATEWAY_DOMAIN}", "a".repeat(26))).await?;
    // Alice revokes it herself in the account portal; Bob's session cannot, and his attempt
    // reads exactly like one on an alias that does not exist.
    let portal = carrier.node.portal;
    let session = |login: &'static str| async move {
        let body = json!({"login": login, "password": PASSWORD}).to_string();
        let answer = http(portal, "POST", "/account/v1/session", None, Some(&body)).await;
        answer.expect(201).json()["token"]
            .as_str()
            .map(str::to_owned)
            .context("a session token")
    };
    let (alice_session, bob_session) = (session("alice").await?, session("bob").await?);
    let mine = http(
        portal,
        "GET",
        "/account/v1/aliases",
        Some(&alice_session),
        None,
    )
    .await
    .expect(200)
    .json();
    ensure!(
        mine["gateway_offered"] == true
            && mine["aliases"][0]["address"] == alias.as_str()
            && mine["aliases"][0]["correspondent"] == "david@outside.test",
        "alice's aliases in the portal: {mine}"
    );
    let theirs = http(
        portal,
        "GET",
        "/account/v1/aliases",
        Some(&bob_session),
        None,
    )
    .await
    .expect(200)
    .json();
    ensure!(
        theirs["aliases"] == json!([]),
        "bob sees none of alice's: {theirs}"
    );
    let bobs_try = http(
        portal,
        "POST",
        &format!("/account/v1/aliases/{alias}/revoke"),
        Some(&bob_session),
        None,
    )
    .await
    .expect(404);
    let made_up = http(
        portal,
        "POST",
        &format!(
            "/account/v1/aliases/{}@{GATEWAY_DOMAIN}/revoke",
            "b".repeat(26)
        ),
        Some(&bob_session),
        None,
    )
    .await
    .expect(404);
    ensure!(
        bobs_try.body == made_up.body,
        "another's alias reads like none: {} vs {}",
        bobs_try.text(),
        made_up.text()
    );
    let revoked = http(
        portal,
        "POST",
        &format!("/account/v1/aliases/{alias}/revoke"),
        Some(&alice_session),
        None,
    )
    .await
    .expect(200)
    .json();
    ensure!(revoked["revoked_at"].is_string(), "{revoked}");
    let (_, after_revoke) = probe(alias.clone()).await?;
    let refusal = "RCPT 550 5.1.1 Recipient address rejected";
    for (what, out) in [
        ("relay", &relay),
        ("unknown", &unknown),
        ("revoked", &after_revoke),
    ] {
        let line = out
            .lines()
            .find(|line| line.starts_with("RCPT"))
            .unwrap_or("");
        ensure!(line == refusal, "{what}: {out}");
    }

    // Bob's plan does not include the gateway: refused at RCPT in his submission session.
    let (ok, out) = carrier
        .submit("bob", &bob, "david@outside.test", "Hello", "Hi")
        .await?;
    ensure!(!ok, "Bob could send to the clearnet: {out}");
    ensure!(
        out.contains("REFUSED 550 5.7.1 this account's plan does not include clearnet mail"),
        "{out}"
    );

    // At rest (issue 18, item 10): the carrier stopped, no file of its data directory names
    // David, whom Alice wrote to in the clearnet: the alias keeps its correspondent sealed.
    carrier.node.stop().await;
    let named = found_in_files(&carrier.node.data_dir, b"david@outside.test");
    ensure!(
        named.is_empty(),
        "David's address is readable at rest in {named:?}"
    );
    drop(postfix);
    Ok(())
}
