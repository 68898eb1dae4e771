//! docker-compose.yml proven: two carriers from the repository's compose file, their images
//! built here from deploy/Dockerfile and deploy/tor/Dockerfile (base images made locally by
//! deploy/base-images.sh, since no registry is reachable), on a private Tor network.
//!
//! The private network's authorities and relays run on the host (the [`TorNet`] harness),
//! listening on the gateway address of a docker network the test creates; each carrier's tor
//! container joins that network through a compose override file used only here, and reads the
//! network's DirAuthority lines from a mounted torrc fragment (`TOR_INCLUDE`). The user-facing
//! compose file is unchanged: by default its tor joins the real Tor network.
//!
//! Carrier A runs the `single` layout, carrier B the `distributed` one (a container per
//! service, linked by gRPC). Each gets a `.env` from deploy/init-env.sh (the documented first
//! command), an account and an identity through the admin API; Alice on A writes to Bob on B
//! with smtplib on A's published submission port (paying B the default proof-of-work stamp), Bob
//! reads it with imaplib on B's in his Requests mailbox (she is a stranger to him) and replies,
//! which accepts her and moves her message to his INBOX; B's tor container is restarted, Bob's
//! onion comes back, and Alice writes again, straight to his INBOX. Everything
//! is torn down at the end, also on failure (`down -v`, the network, the tors).
//!
//! Without a Docker engine the test says plainly that it did not run; under `CI=true` that is
//! a failure. Environment: `ONIONPOST_DOCKER` (docker CLI for building, which needs BuildKit:
//! a buildx plugin or a CLI older than 23), `ONIONPOST_COMPOSE` (`docker compose` or
//! `docker-compose`), `ONIONPOST_E2E_CARGO_PROFILE` (cargo profile of the image, release),
//! `ONIONPOST_DOCKER_EXTRA_CA` (a CA bundle the build trusts for crates.io; default: this
//! machine's /usr/local/share/ca-certificates, for a TLS-intercepting proxy),
//! `ONIONPOST_KEEP_COMPOSE=1` (leave the stacks up for debugging).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use onionpost_e2e::TorNet;
use onionpost_e2e::node::free_port;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

const ONIONPOST_IMAGE: &str = "onionpost-e2e/onionpost:latest";
const TOR_IMAGE: &str = "onionpost-e2e/tor:latest";
const POSTGRES_IMAGE: &str = "onionpost-e2e/postgres:15";
/// How long a carrier may take from `up` to an online identity (tor bootstrap included).
const ONLINE_TIMEOUT: Duration = Duration::from_secs(240);
/// How long one message may take from submission to the recipient's INBOX.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(300);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// Runs a command to completion; its output, or an error with both streams.
fn run(command: &mut Command) -> anyhow::Result<String> {
    let what = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {what}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(
        output.status.success(),
        "{what} failed ({}):\n{text}",
        output.status
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The docker engine, or why there is none.
fn docker_engine() -> Result<(), String> {
    match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .output()
    {
        Err(error) => Err(format!("no docker command ({error})")),
        Ok(output) if !output.status.success() => Err(format!(
            "no Docker engine answers: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Ok(_) => Ok(()),
    }
}

/// A docker CLI that builds with BuildKit (the Dockerfile uses cache and secret mounts):
/// `ONIONPOST_DOCKER`, else the first of `docker` and /usr/bin/docker that has the buildx
/// plugin or is older than 23 (whose `DOCKER_BUILDKIT=1` uses the engine's own BuildKit).
fn buildkit_cli() -> anyhow::Result<String> {
    if let Ok(cli) = std::env::var("ONIONPOST_DOCKER") {
        return Ok(cli);
    }
    for cli in ["docker", "/usr/bin/docker"] {
        let buildx = Command::new(cli)
            .args(["buildx", "version"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if buildx.is_ok_and(|status| status.success()) {
            return Ok(cli.to_owned());
        }
        let version = run(Command::new(cli).args(["version", "--format", "{{.Client.Version}}"]));
        if let Ok(version) = version {
            let major: u32 = version
                .split('.')
                .next()
                .and_then(|major| major.parse().ok())
                .unwrap_or(u32::MAX);
            if major < 23 {
                return Ok(cli.to_owned());
            }
        }
    }
    bail!(
        "no docker CLI here builds with BuildKit: install the buildx plugin, or set ONIONPOST_DOCKER"
    )
}

/// `docker compose` (v2) when present, else docker-compose (1.28 or later, for profiles).
fn compose_command() -> Vec<String> {
    if let Ok(command) = std::env::var("ONIONPOST_COMPOSE") {
        return command.split_whitespace().map(str::to_owned).collect();
    }
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if v2.is_ok_and(|status| status.success()) {
        vec!["docker".to_owned(), "compose".to_owned()]
    } else {
        vec!["docker-compose".to_owned()]
    }
}

/// The CA certificates a TLS-intercepting proxy between the build and crates.io needs, as one
/// file for the build's `extra_ca` secret; `None` when there are none.
fn extra_ca_bundle(dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    if let Ok(path) = std::env::var("ONIONPOST_DOCKER_EXTRA_CA") {
        return Ok(Some(PathBuf::from(path)));
    }
    let local = Path::new("/usr/local/share/ca-certificates");
    let Ok(entries) = std::fs::read_dir(local) else {
        return Ok(None);
    };
    let mut bundle = String::new();
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.extension().is_some_and(|ext| ext == "crt") {
            bundle.push_str(&std::fs::read_to_string(&path)?);
            bundle.push('\n');
        }
    }
    if bundle.is_empty() {
        return Ok(None);
    }
    let file = dir.join("extra-ca.pem");
    std::fs::write(&file, bundle)?;
    Ok(Some(file))
}

/// Builds the two images from the repository's Dockerfiles; prints how long each took.
fn build_images(work: &Path) -> anyhow::Result<()> {
    let root = repo_root();
    let started = Instant::now();
    run(Command::new("bash").arg(root.join("deploy/base-images.sh")))
        .context("deploy/base-images.sh")?;
    println!("compose: base images ready after {:?}", started.elapsed());

    let cli = buildkit_cli()?;
    let profile =
        std::env::var("ONIONPOST_E2E_CARGO_PROFILE").unwrap_or_else(|_| "release".to_owned());
    let mut build = Command::new(&cli);
    build
        .env("DOCKER_BUILDKIT", "1")
        .current_dir(&root)
        .args(["build", "--progress=plain", "-f", "deploy/Dockerfile"])
        .args(["-t", ONIONPOST_IMAGE])
        .args(["--build-arg", &format!("CARGO_PROFILE={profile}")]);
    if let Some(bundle) = extra_ca_bundle(work)? {
        build.args(["--secret", &format!("id=extra_ca,src={}", bundle.display())]);
    }
    let started = Instant::now();
    run(build.arg(".")).context("building the onionpost image")?;
    println!(
        "compose: onionpost image (cargo profile {profile}) built in {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    run(Command::new(&cli)
        .env("DOCKER_BUILDKIT", "1")
        .args(["build", "-t", TOR_IMAGE])
        .arg(root.join("deploy/tor")))
    .context("building the tor image")?;
    println!("compose: tor image built in {:?}", started.elapsed());
    let started = Instant::now();
    run(Command::new(&cli)
        .env("DOCKER_BUILDKIT", "1")
        .args(["build", "-t", POSTGRES_IMAGE])
        .arg(root.join("deploy/postgres")))
    .context("building the postgres image")?;
    println!("compose: postgres image built in {:?}", started.elapsed());
    for image in [ONIONPOST_IMAGE, TOR_IMAGE, POSTGRES_IMAGE] {
        let size: u64 =
            run(Command::new("docker").args(["image", "inspect", "-f", "{{.Size}}", image]))?
                .parse()
                .context("image size")?;
        println!(
            "compose: image {image}: {:.1} MB",
            size as f64 / 1_000_000.0
        );
    }
    Ok(())
}

/// One carrier: a compose project with its own .env and override file.
struct Carrier {
    project: String,
    compose: Vec<String>,
    files: Vec<PathBuf>,
    env_file: PathBuf,
    admin: SocketAddr,
    submission: SocketAddr,
    imap: SocketAddr,
    /// The account portal's published address.
    portal: SocketAddr,
    token: String,
    /// The services whose logs explain a failure.
    services: Vec<&'static str>,
}

impl Carrier {
    /// Writes the carrier's .env (deploy/init-env.sh, then the test's ports and images) and
    /// the override that puts its tor on the private network.
    fn prepare(
        work: &Path,
        name: &str,
        layout: &[&str],
        tornet_network: &str,
        private_torrc: &Path,
    ) -> anyhow::Result<Carrier> {
        let distributed = layout.contains(&"--distributed");
        // A pool of two tors (`--tors 2`): the second joins the private network like the first.
        let pool = layout.contains(&"--tors");
        let root = repo_root();
        let env_file = work.join(format!("{name}.env"));
        let mut init = Command::new("sh");
        init.arg(root.join("deploy/init-env.sh"));
        init.args(layout);
        run(init.arg("--file").arg(&env_file)).context("deploy/init-env.sh")?;
        let written = std::fs::read_to_string(&env_file)?;
        let token = written
            .lines()
            .find_map(|line| line.strip_prefix("ONIONPOST_ADMIN_TOKEN="))
            .context("init-env.sh wrote no ONIONPOST_ADMIN_TOKEN")?
            .to_owned();
        let loopback = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let (admin, submission, imap, portal) = (
            loopback(free_port()),
            loopback(free_port()),
            loopback(free_port()),
            loopback(free_port()),
        );
        std::fs::write(
            &env_file,
            format!(
                "{written}ONIONPOST_IMAGE={ONIONPOST_IMAGE}\nTOR_IMAGE={TOR_IMAGE}\n\
                 POSTGRES_IMAGE={POSTGRES_IMAGE}\n\
                 ADMIN_PORT={}\nSUBMISSION_PORT={}\nIMAP_PORT={}\nPORTAL_PORT={}\n",
                admin.port(),
                submission.port(),
                imap.port(),
                portal.port()
            ),
        )?;

        // Retries within seconds: a send right after tor's restart may meet a stale descriptor.
        // Onions come back within seconds of tor's restart, not within the default minute.
        let (queue_service, onion_service) = if distributed {
            ("queue", "onion")
        } else {
            ("onionpost", "onionpost")
        };
        let onion_environment = if distributed {
            format!(
                "\x20 {onion_service}:\n\x20   environment:\n\x20     \
                 ONIONPOST_TOR_RESTORE_SPREAD_SECS: \"5\"\n"
            )
        } else {
            "\x20     ONIONPOST_TOR_RESTORE_SPREAD_SECS: \"5\"\n".to_owned()
        };
        let second_tor = if pool {
            format!(
                "\x20 tor-2:\n\x20   environment:\n\x20     \
                 TOR_INCLUDE: /etc/tor/private-network.torrc\n\x20   volumes:\n\x20     \
                 - {torrc}:/etc/tor/private-network.torrc:ro\n\x20   networks: [tor, tornet]\n",
                torrc = private_torrc.display(),
            )
        } else {
            String::new()
        };
        let override_file = work.join(format!("{name}.override.yml"));
        std::fs::write(
            &override_file,
            format!(
                "# Test only: this carrier's tor joins the private Tor network.\n\
                 services:\n\
                 \x20 tor:\n\
                 \x20   environment:\n\
                 \x20     TOR_INCLUDE: /etc/tor/private-network.torrc\n\
                 \x20   volumes:\n\
                 \x20     - {torrc}:/etc/tor/private-network.torrc:ro\n\
                 \x20   networks: [tor, tornet]\n\
                 {second_tor}\
                 \x20 {queue_service}:\n\
                 \x20   environment:\n\
                 \x20     ONIONPOST_QUEUE_RETRY_MIN_SECS: \"3\"\n\
                 \x20     ONIONPOST_QUEUE_RETRY_MAX_SECS: \"6\"\n\
                 {onion_environment}\
                 networks:\n\
                 \x20 tornet:\n\
                 \x20   external: true\n\
                 \x20   name: {tornet_network}\n",
                torrc = private_torrc.display(),
            ),
        )?;
        Ok(Carrier {
            project: format!("onionpost-e2e-{name}-{}", std::process::id()),
            compose: compose_command(),
            files: vec![root.join("docker-compose.yml"), override_file],
            env_file,
            admin,
            submission,
            imap,
            portal,
            token,
            services: if distributed {
                let mut services = vec![
                    "tor", "onion", "keys", "smtp-in", "imap", "queue", "smtp-out", "portal",
                    "admin",
                ];
                if pool {
                    services.insert(1, "tor-2");
                }
                services
            } else {
                vec!["tor", "onionpost", "postgres"]
            },
        })
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.compose[0]);
        command.args(&self.compose[1..]);
        command.current_dir(repo_root());
        command.arg("-p").arg(&self.project);
        command.arg("--env-file").arg(&self.env_file);
        for file in &self.files {
            command.arg("-f").arg(file);
        }
        command
    }

    fn compose(&self, args: &[&str]) -> anyhow::Result<String> {
        run(self.command().args(args))
    }

    fn logs(&self) -> String {
        self.command()
            .args(["logs", "--no-color", "--tail", "60"])
            .args(&self.services)
            .stdin(Stdio::null())
            .output()
            .map(|output| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                )
            })
            .unwrap_or_else(|error| format!("(no logs: {error})"))
    }

    fn down(&self) {
        if std::env::var_os("ONIONPOST_KEEP_COMPOSE").is_some() {
            println!("compose: keeping project {}", self.project);
            return;
        }
        let _ = self
            .command()
            .args(["down", "-v", "--remove-orphans", "-t", "5"])
            .stdin(Stdio::null())
            .output();
    }

    async fn admin(&self, method: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        let (status, answer) = http(self.admin, method, path, &self.token, &body).await?;
        ensure!(
            status == 200 || status == 201,
            "{method} {path}: {status} {answer}\n{}",
            self.logs()
        );
        Ok(answer)
    }

    /// Waits until the admin API answers /readyz with 200.
    async fn wait_ready(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Ok((200, _)) =
                http(self.admin, "GET", "/readyz", &self.token, &Value::Null).await
            {
                return Ok(());
            }
            ensure!(
                started.elapsed() < ONLINE_TIMEOUT,
                "{} not ready after {:?}\n{}",
                self.project,
                started.elapsed(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// An account with one identity; returns (identity id, address).
    async fn account(&self, login: &str, password: &str) -> anyhow::Result<(String, String)> {
        let account = self
            .admin(
                "POST",
                "/v1/accounts",
                json!({"login": login, "password": password}),
            )
            .await?;
        let account_id = account["id"].as_str().context("account id")?;
        let identity = self
            .admin(
                "POST",
                &format!("/v1/accounts/{account_id}/identities"),
                json!({"local_part": login}),
            )
            .await?;
        let identity_id = identity["id"].as_str().context("identity id")?.to_owned();
        let address = identity["address"].as_str().context("address")?.to_owned();
        Ok((identity_id, address))
    }

    async fn wait_online(&self, identity_id: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let path = format!("/v1/identities/{identity_id}");
            if let Ok((200, answer)) =
                http(self.admin, "GET", &path, &self.token, &Value::Null).await
                && answer["state"] == "online"
            {
                return Ok(());
            }
            ensure!(
                started.elapsed() < ONLINE_TIMEOUT,
                "identity on {} not online after {:?}\n{}",
                self.project,
                started.elapsed(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// A minimal HTTP/1.1 exchange with the admin API (Connection: close); the status and the
/// JSON body (Null when there is none). Errors, rather than panics, while a container starts.
async fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &Value,
) -> anyhow::Result<(u16, Value)> {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let mut stream = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(address),
    )
    .await
    .context("connect timed out")??;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut raw))
        .await
        .context("answer timed out")??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("not an HTTP answer: {text:?}"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    ensure!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "chunked answers are not expected from the admin API"
    );
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// smtplib on a published submission port: the connection arrives from the docker bridge,
/// not loopback, so AUTH comes after STARTTLS (the carrier's self-signed certificate).
const SUBMIT: &str = r#"
import smtplib, ssl, sys
from email.message import EmailMessage
host, port, login, password, sender, rcpt, subject, body = sys.argv[1:9]
msg = EmailMessage()
msg["From"] = sender
msg["To"] = rcpt
msg["Subject"] = subject
msg.set_content(body)
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
with smtplib.SMTP(host, int(port), timeout=300) as s:
    s.ehlo("client")
    if s.has_extn("starttls"):
        s.starttls(context=context)
        s.ehlo("client")
    s.login(login, password)
    s.send_message(msg)
print("sent")
"#;

/// imaplib on a published IMAP port: STARTTLS when LOGIN is disabled before it; prints the
/// message of the mailbox whose Subject matches, or NOTYET.
const READ: &str = r#"
import imaplib, ssl, sys
host, port, login, password, subject, mailbox = sys.argv[1:7]
m = imaplib.IMAP4(host, int(port), timeout=60)
if "LOGINDISABLED" in m.capabilities or "STARTTLS" in m.capabilities:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    m.starttls(ssl_context=context)
m.login(login, password)
m.select(mailbox)
typ, data = m.search(None, "ALL")
for num in reversed(data[0].split()):
    typ, data = m.fetch(num, "(RFC822)")
    text = data[0][1].decode("utf-8", "replace")
    if "Subject: " + subject in text:
        sys.stdout.write(text)
        m.logout()
        sys.exit(0)
print("NOTYET")
m.logout()
"#;

async fn python(script: &str, args: &[String]) -> anyhow::Result<String> {
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
    ensure!(output.status.success(), "python3 failed:\n{text}");
    Ok(text)
}

/// `from` (login = local part, password) writes to `to`; returns once `to` reads it in
/// `mailbox`.
async fn send_and_read(
    from: (&Carrier, &str, &str, &str),
    to: (&Carrier, &str, &str, &str),
    subject: &str,
    body: &str,
    mailbox: &str,
) -> anyhow::Result<Duration> {
    let (sender, sender_login, sender_password, sender_address) = from;
    let (recipient, login, password, address) = to;
    let started = Instant::now();
    python(
        SUBMIT,
        &[
            sender.submission.ip().to_string(),
            sender.submission.port().to_string(),
            sender_login.to_owned(),
            sender_password.to_owned(),
            sender_address.to_owned(),
            address.to_owned(),
            subject.to_owned(),
            body.to_owned(),
        ],
    )
    .await
    .with_context(|| format!("smtplib on {}\n{}", sender.project, sender.logs()))?;
    loop {
        let out = python(
            READ,
            &[
                recipient.imap.ip().to_string(),
                recipient.imap.port().to_string(),
                login.to_owned(),
                password.to_owned(),
                subject.to_owned(),
                mailbox.to_owned(),
            ],
        )
        .await
        .with_context(|| format!("imaplib on {}\n{}", recipient.project, recipient.logs()))?;
        if !out.starts_with("NOTYET") {
            ensure!(out.contains(body), "{out}");
            ensure!(out.contains("Onionpost-Verification: verified"), "{out}");
            ensure!(out.contains(sender_address), "{out}");
            return Ok(started.elapsed());
        }
        ensure!(
            started.elapsed() < DELIVERY_TIMEOUT,
            "{subject:?} did not reach {}\nsender:\n{}\nrecipient:\n{}",
            recipient.project,
            sender.logs(),
            recipient.logs()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Tears everything down when dropped, also when the test fails.
struct Teardown {
    carriers: Vec<Carrier>,
    network: Option<String>,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        for carrier in &self.carriers {
            carrier.down();
        }
        if std::env::var_os("ONIONPOST_KEEP_COMPOSE").is_none()
            && let Some(network) = &self.network
        {
            let _ = Command::new("docker")
                .args(["network", "rm", network])
                .stdin(Stdio::null())
                .output();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_carriers_from_docker_compose_exchange_mail_over_a_private_tor_network()
-> anyhow::Result<()> {
    if let Err(why) = docker_engine() {
        let ci = std::env::var("CI").is_ok_and(|value| value == "true");
        ensure!(!ci, "CI=true but the compose tests cannot run: {why}");
        println!("compose: the compose tests did NOT run: {why}");
        eprintln!("compose: the compose tests did NOT run: {why}");
        return Ok(());
    }
    let work = tempfile::Builder::new()
        .prefix("onionpost-compose-")
        .tempdir()?;
    build_images(work.path())?;

    // The private network's routers on the gateway address of a docker network of our own.
    let network = format!("onionpost-e2e-tornet-{}", std::process::id());
    let mut teardown = Teardown {
        carriers: Vec::new(),
        network: None,
    };
    run(Command::new("docker").args(["network", "create", &network]))?;
    teardown.network = Some(network.clone());
    let gateway: Ipv4Addr = run(Command::new("docker").args([
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Gateway}}",
        &network,
    ]))?
    .parse()
    .context("the docker network's gateway")?;
    let tornet = TorNet::start_on(gateway, 0).await?;
    println!(
        "compose: private tor network on {gateway} ready after {:?}",
        tornet.ready_after()
    );
    // The tor in a container is not the test's child: no owning-controller line for it.
    let private_torrc = work.path().join("private-network.torrc");
    let torrc: String = tornet
        .common_torrc()
        .lines()
        .filter(|line| !line.starts_with("__OwningControllerProcess"))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(&private_torrc, torrc)?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&private_torrc, std::fs::Permissions::from_mode(0o644))?;
    }

    // A: every service in one container, on PostgreSQL; B: a container per service on a pool
    // of two tors, SQLite.
    let a = Carrier::prepare(work.path(), "a", &["--postgres"], &network, &private_torrc)?;
    let b = Carrier::prepare(
        work.path(),
        "b",
        &["--distributed", "--tors", "2"],
        &network,
        &private_torrc,
    )?;
    teardown.carriers.push(a);
    teardown.carriers.push(b);
    let (a, b) = (&teardown.carriers[0], &teardown.carriers[1]);

    let mut online_after = Vec::new();
    for (carrier, login) in [(a, "alice"), (b, "bob")] {
        let started = Instant::now();
        carrier.compose(&["up", "-d", "--no-build"])?;
        carrier.wait_ready().await?;
        // The account portal answers on its published port (sign-up closed by default).
        let (status, page) = onionpost_e2e::node::http_get(carrier.portal, "/sign-up").await;
        ensure!(
            status == 403 && page.contains("Sign-up is closed"),
            "{}: the portal's sign-up page: {status}\n{page}",
            carrier.project
        );
        let (identity_id, _) = carrier
            .account(login, &format!("{login} password 1"))
            .await?;
        carrier.wait_online(&identity_id).await?;
        online_after.push(started.elapsed());
        println!(
            "compose: {} ({}): from `up` to an online identity {:?}",
            carrier.project,
            if carrier.services.len() > 3 {
                "distributed"
            } else {
                "single, postgres"
            },
            started.elapsed()
        );
    }
    grpc_refuses_strangers_on_tors_network(b)?;
    tors_of_the_pool_publish(b, 2).await?;
    let alice = identity_address(a, "alice").await?;
    let bob = identity_address(b, "bob").await?;
    let alice_side = (a, "alice", "alice password 1", alice.as_str());
    let bob_side = (b, "bob", "bob password 1", bob.as_str());

    // Alice is a stranger to Bob: her first message pays a stamp (the default 24 bits) and
    // waits in his Requests mailbox; his reply accepts her, and it moves to his INBOX.
    let took = send_and_read(
        alice_side,
        bob_side,
        "Hello from A",
        "Over the onions.",
        "Requests",
    )
    .await?;
    println!("compose: A (single) -> B (distributed) delivered in {took:?}, to Requests");
    let took = send_and_read(
        bob_side,
        alice_side,
        "Re: Hello from A",
        "Back again.",
        "INBOX",
    )
    .await?;
    println!("compose: B (distributed) -> A (single) delivered in {took:?}");
    let moved = python(
        READ,
        &[
            b.imap.ip().to_string(),
            b.imap.port().to_string(),
            "bob".to_owned(),
            "bob password 1".to_owned(),
            "Hello from A".to_owned(),
            "INBOX".to_owned(),
        ],
    )
    .await?;
    ensure!(
        !moved.starts_with("NOTYET"),
        "Bob's reply did not move Alice's request to his INBOX\n{}",
        b.logs()
    );

    // B's tor restarts: the onion service reconnects and brings Bob's onion back.
    let restarted = Instant::now();
    b.compose(&["restart", "tor"])?;
    let bob_identity = identity_id(b, "bob").await?;
    // The state may still read online from before; give tor a moment to have gone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.wait_online(&bob_identity).await?;
    let took = send_and_read(
        alice_side,
        bob_side,
        "After the restart",
        "Still here.",
        "INBOX",
    )
    .await?;
    println!(
        "compose: after B's tor restart, A -> B delivered {took:?} after sending ({:?} after the restart)",
        restarted.elapsed()
    );

    drop(teardown);
    drop(tornet);
    Ok(())
}

/// Issue 18, item 12: a process on tor's network (where the tor container is) reaches the
/// services' gRPC ports, but without the carrier's credentials every call is refused. The
/// same call with the carrier's secret is answered, so the refusal is the credentials', not
/// the network's.
fn grpc_refuses_strangers_on_tors_network(carrier: &Carrier) -> anyhow::Result<()> {
    let secret = std::fs::read_to_string(&carrier.env_file)?
        .lines()
        .find_map(|line| line.strip_prefix("ONIONPOST_SECRET="))
        .context("no ONIONPOST_SECRET in the carrier's .env")?
        .to_owned();
    let network = format!("{}_tor", carrier.project);
    let healthcheck = |secret: &str| {
        Command::new("docker")
            .args(["run", "--rm", "--network", &network])
            .args(["-e", &format!("ONIONPOST_SECRET={secret}")])
            // On tor's network the services' namespace answers as `onion`.
            .args(["-e", "ONIONPOST_REMOTE_KEYS=http://onion:50052"])
            .args(["-e", "ONIONPOST_REMOTE_ONION=http://onion:50051"])
            .args(["-e", "ONIONPOST_REMOTE_SMTP_OUT=http://smtp-out:50051"])
            .arg(ONIONPOST_IMAGE)
            .args([
                "healthcheck",
                "--target",
                "keys,onion,smtp-out",
                "--timeout",
                "10",
            ])
            .stdin(Stdio::null())
            .output()
    };
    let stranger = healthcheck(&"a stranger's secret, not the carrier's".repeat(2))?;
    let said = String::from_utf8_lossy(&stranger.stdout).into_owned();
    ensure!(
        !stranger.status.success() && said.matches("UNREACHABLE").count() == 3,
        "a caller without the carrier's credentials was answered on tor's network:\n{said}{}",
        String::from_utf8_lossy(&stranger.stderr)
    );
    let insider = healthcheck(&secret)?;
    let said_inside = String::from_utf8_lossy(&insider.stdout).into_owned();
    ensure!(
        insider.status.success() && said_inside.matches("SERVING").count() == 3,
        "the carrier's own credentials were not answered on tor's network:\n{said_inside}{}\n{}",
        String::from_utf8_lossy(&insider.stderr),
        carrier.logs()
    );
    println!(
        "compose: gRPC on tor's network: without the carrier's credentials\n{said}with them\n{said_inside}"
    );
    Ok(())
}

/// The address of the single identity of the account `login`.
/// Waits until the admin API's stats show `count` tors connected, then checks that the
/// carrier's onions (the portal's and the identities') are all placed on them.
async fn tors_of_the_pool_publish(carrier: &Carrier, count: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let stats = carrier.admin("GET", "/v1/stats", Value::Null).await?;
        let tors = stats["tors"].as_array().cloned().unwrap_or_default();
        let connected = tors
            .iter()
            .filter(|tor| tor["control_connected"] == true)
            .count();
        let placed: u64 = tors
            .iter()
            .map(|tor| tor["onions_placed"].as_u64().unwrap_or(0))
            .sum();
        let online = stats["identities_by_state"]["online"].as_u64().unwrap_or(0);
        if tors.len() == count && connected == count && placed >= online && online >= 1 {
            println!(
                "compose: {}: {count} tors connected; onions per tor {:?}",
                carrier.project,
                tors.iter()
                    .map(|tor| tor["onions"].as_u64().unwrap_or(0))
                    .collect::<Vec<_>>()
            );
            return Ok(());
        }
        ensure!(
            started.elapsed() < ONLINE_TIMEOUT,
            "{}: tors of the pool not as expected: {stats}\n{}",
            carrier.project,
            carrier.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn identity_address(carrier: &Carrier, login: &str) -> anyhow::Result<String> {
    Ok(identity(carrier, login).await?["address"]
        .as_str()
        .context("address")?
        .to_owned())
}

async fn identity_id(carrier: &Carrier, login: &str) -> anyhow::Result<String> {
    Ok(identity(carrier, login).await?["id"]
        .as_str()
        .context("id")?
        .to_owned())
}

async fn identity(carrier: &Carrier, login: &str) -> anyhow::Result<Value> {
    let accounts = carrier.admin("GET", "/v1/accounts", Value::Null).await?;
    let account = accounts["accounts"]
        .as_array()
        .and_then(|all| all.iter().find(|account| account["login"] == login))
        .with_context(|| format!("no account {login}: {accounts}"))?;
    let account_id = account["id"].as_str().context("account id")?;
    let identities = carrier
        .admin(
            "GET",
            &format!("/v1/accounts/{account_id}/identities"),
            Value::Null,
        )
        .await?;
    identities["identities"]
        .as_array()
        .and_then(|all| all.first())
        .cloned()
        .with_context(|| format!("no identity for {login}: {identities}"))
}

/// The compose file is valid with every profile, with docker-compose's own parser (no engine
/// needed), and refuses to start without the secrets init-env.sh writes.
#[test]
fn compose_file_is_valid_with_every_profile() -> anyhow::Result<()> {
    let compose = compose_command();
    let available = Command::new(&compose[0])
        .args(&compose[1..])
        .arg("version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|output| output.status.success());
    if !available {
        let ci = std::env::var("CI").is_ok_and(|value| value == "true");
        ensure!(
            !ci,
            "CI=true but neither docker compose nor docker-compose is installed"
        );
        println!("compose: the compose file tests did NOT run: no docker compose");
        return Ok(());
    }
    let root = repo_root();
    let work = tempfile::tempdir()?;
    let config = |env_file: &Path, profiles: &str| {
        let mut command = Command::new(&compose[0]);
        command
            .args(&compose[1..])
            .current_dir(&root)
            .env("COMPOSE_PROFILES", profiles)
            .arg("--env-file")
            .arg(env_file)
            .args(["-p", "onionpost-config-check", "config"]);
        command
    };
    for options in [
        &[][..],
        &["--distributed"],
        &["--postgres"],
        &["--observability"],
        &["--distributed", "--postgres", "--observability"],
        &["--distributed", "--tors", "3"],
        &["--gateway", "mail.example.org", "--rspamd"],
        &["--distributed", "--gateway", "mail.example.org"],
    ] {
        let env_file = work.path().join(format!("{}.env", options.join("")));
        run(Command::new("sh")
            .arg(root.join("deploy/init-env.sh"))
            .args(options)
            .arg("--file")
            .arg(&env_file))?;
        let written = std::fs::read_to_string(&env_file)?;
        let profiles = written
            .lines()
            .find_map(|line| line.strip_prefix("COMPOSE_PROFILES="))
            .context("no COMPOSE_PROFILES")?
            .to_owned();
        let rendered = run(&mut config(&env_file, &profiles))
            .with_context(|| format!("profiles {profiles}"))?;
        for expected in ["ONIONPOST_SECRET", "TOR_CONTROL_PASSWORD", "127.0.0.1"] {
            ensure!(
                rendered.contains(expected),
                "{profiles}: no {expected}\n{rendered}"
            );
        }
        if options.contains(&"--postgres") {
            ensure!(rendered.contains("postgres://onionpost:"), "{rendered}");
        }
        if options.contains(&"--observability") {
            ensure!(
                rendered.contains("http://otel-collector:4317"),
                "{rendered}"
            );
        }
        if options.contains(&"--tors") {
            ensure!(rendered.contains("tor-3:"), "{rendered}");
            ensure!(
                rendered.contains("tor:9051,tor-2:9051,tor-3:9051"),
                "{rendered}"
            );
        }
        if options.contains(&"--gateway") {
            ensure!(profiles.contains("gateway"), "{profiles}");
            // The gateway's own container with its domain, its MX port published on every
            // address (docker-compose 1.29 writes ports short, compose v2 long), and the
            // others pointed at it.
            ensure!(rendered.contains("  gateway:\n"), "{rendered}");
            ensure!(
                rendered.contains("ONIONPOST_GATEWAY_DOMAIN: mail.example.org"),
                "{rendered}"
            );
            let published = rendered.contains("0.0.0.0:25:2525")
                || (rendered.contains("host_ip: 0.0.0.0")
                    && rendered.contains("target: 2525")
                    && (rendered.contains("published: \"25\"")
                        || rendered.contains("published: 25\n")));
            ensure!(published, "{rendered}");
            ensure!(
                rendered.contains("ONIONPOST_REMOTE_GATEWAY: http://gateway:50051"),
                "{rendered}"
            );
            if !options.contains(&"--distributed") {
                // The single container leaves the gateway to its container.
                ensure!(
                    rendered.contains("onion,keys,smtp-in,queue,smtp-out,imap,portal,admin"),
                    "{rendered}"
                );
                ensure!(
                    rendered.contains("ONIONPOST_REMOTE_IMAP: http://onionpost:50051"),
                    "{rendered}"
                );
            }
        }
        if options.contains(&"--rspamd") {
            ensure!(profiles.contains("rspamd"), "{profiles}");
            ensure!(rendered.contains("  rspamd:\n"), "{rendered}");
            ensure!(
                rendered.contains("ONIONPOST_GATEWAY_RSPAMD: rspamd:11333"),
                "{rendered}"
            );
        } else {
            ensure!(
                !rendered.contains("ONIONPOST_GATEWAY_RSPAMD: rspamd"),
                "{rendered}"
            );
        }
        // A second run keeps the secrets: init-env.sh refuses to overwrite them.
        let again = Command::new("sh")
            .arg(root.join("deploy/init-env.sh"))
            .arg("--file")
            .arg(&env_file)
            .output()?;
        ensure!(
            !again.status.success(),
            "init-env.sh overwrote {}",
            env_file.display()
        );
        ensure!(std::fs::read_to_string(&env_file)? == written);
    }
    // Without .env: a refusal that says what to run.
    let empty = work.path().join("empty.env");
    std::fs::write(&empty, "")?;
    let output = config(&empty, "single").output()?;
    let text = String::from_utf8_lossy(&output.stderr);
    ensure!(!output.status.success(), "config without secrets succeeded");
    ensure!(text.contains("deploy/init-env.sh"), "{text}");
    Ok(())
}
