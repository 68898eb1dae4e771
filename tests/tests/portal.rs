//! The account portal against a running carrier (onion, keys, imap, portal and admin in one
//! `onionpost` process, tor on the private network), with real clients only:
//!
//! - `portal_http.py` (Python's urllib): every `/account/v1` route and every form against no
//!   session, an expired session, another account's session, and a missing or wrong form token;
//!   identical replies for a made-up login and a wrong password; sign-up by voucher, vouchers,
//!   password changes that end other sessions, deletion.
//! - `browser.py` (Debian's chromium through Selenium, JavaScript disabled): sign up, sign out,
//!   sign in, create an identity and see it go online over tor, add a contact by address (its key
//!   fetched over its onion) and one from a GnuPG contact card; then, once a new key for the
//!   first has arrived and is held, accept it, redeem a voucher, make an app password, sign out;
//!   a screenshot of each page; then Python's imaplib logs in with the app password.
//! - schemathesis against `/account/v1` with a session: no server error, no reply outside the
//!   OpenAPI document.
//! - The portal on the carrier's own onion, from a second tor client: the sign-in page, and the
//!   same reply for a made-up login and a real one with a wrong password.
//! - From the same client, an identity's onion: Thunderbird's autoconfig document (checked by
//!   `autoconfig_check.py`) at both places Thunderbird looks, and IMAP taking the identity's
//!   address as its owner's login there, and not another account's.
//!
//! One test function, so the private Tor network starts once for every scenario.

mod admin_support;

use std::net::SocketAddr;
use std::path::PathBuf;

use admin_support::{Carrier, http, operator_json, schemathesis};
use anyhow::{Context as _, ensure};
use onionpost_e2e::TorNet;
use onionpost_e2e::node::{free_port, http_get};
use onionpost_keys::autocrypt::AutocryptHeader;
use onionpost_keys::{Address, IdentityKey};
use onionpost_proto::keys::v1 as keys_pb;
use onionpost_proto::keys::v1::keys_client::KeysClient;
use onionpost_proto::portal::v1 as portal_pb;
use onionpost_proto::portal::v1::portal_client::PortalClient;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Where the screenshots go: beside the build, so they outlive the test's temporary files.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("portal-screenshots")
}

fn support(file: &str) -> String {
    format!("{}/tests/portal_support/{file}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs a Python script to its end; its output when it fails.
async fn python(program: &str, args: &[String]) -> anyhow::Result<String> {
    let output = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .with_context(|| format!("running {program}"))?;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(output.status.success(), "{} failed:\n{text}", args[0]);
    Ok(text)
}

/// One HTTP/1.1 request to the portal on `onion` through `tor`'s SOCKS port, as Tor Browser
/// would send it: the status and the body (headers but Date compared by the caller's body).
async fn onion_http(
    tor: &onionpost_e2e::tornet::TorClient,
    onion: &str,
    method: &str,
    path: &str,
    json_body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut stream = tor
        .connect_onion(onion, 80, Duration::from_secs(120))
        .await?;
    let body = json_body.unwrap_or("");
    let content_type = if json_body.is_some() {
        "Content-Type: application/json\r\n"
    } else {
        ""
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {onion}\r\n{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut reply)).await??;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let (head, body) = reply.split_once("\r\n\r\n").context("an HTTP reply")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("a status line")?;
    Ok((status, body.to_owned()))
}

/// Erin's password in browser.py; zed's, made by the operator here.
const BROWSER_PASSWORD: &str = "a browser's long password";
const ZED_PASSWORD: &str = "zed's long password";

/// One IMAP command to an identity's onion (port 143) through `tor`: the tagged reply line.
async fn onion_imap(
    tor: &onionpost_e2e::tornet::TorClient,
    onion: &str,
    command: &str,
) -> anyhow::Result<String> {
    let stream = tor
        .connect_onion(onion, 143, Duration::from_secs(120))
        .await?;
    let mut lines = tokio::io::BufReader::new(stream);
    let mut greeting = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut greeting).await?;
    ensure!(greeting.starts_with("* OK"), "IMAP greeting: {greeting}");
    lines.get_mut().write_all(command.as_bytes()).await?;
    loop {
        let mut line = String::new();
        let read = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line),
        )
        .await??;
        ensure!(read > 0, "the onion closed the connection");
        if line.starts_with("a1 ") {
            return Ok(line.trim_end().to_owned());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_holders_run_their_accounts_in_the_portal() -> anyhow::Result<()> {
    // Two tor clients: the carrier's, and Tor Browser's stand-in elsewhere on the network.
    let tornet = TorNet::start(2).await?;
    let tor = tornet.client(0);
    let imap = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let carrier = Carrier::start_with(
        tor,
        "onion,keys,imap,portal,admin",
        &[
            ("ONIONPOST_PORTAL_SIGNUP", "voucher".to_owned()),
            ("ONIONPOST_IMAP_LISTEN", imap.to_string()),
        ],
    )
    .await?;
    let node = &carrier.node;
    let (status, readiness) = http_get(node.admin, "/readyz").await;
    ensure!(
        status == 200 && readiness.contains("\"portal\":\"SERVING\""),
        "the portal is among the services: {readiness}"
    );

    // The operator's part: a plan and vouchers for it. Nothing else goes through the admin API.
    let plan = operator_json(
        node.admin,
        "POST",
        "/v1/plans",
        json!({"name": "voucher-plan", "quota_bytes": 50_000_000, "identities_allowed": 3,
               "gateway_allowed": false, "gateway_daily_limit": 0}),
    )
    .await;
    let batch = operator_json(
        node.admin,
        "POST",
        "/v1/vouchers",
        json!({"plan": plan["id"], "days": 90, "count": 9}),
    )
    .await;
    let vouchers: Vec<String> = batch["codes"]
        .as_array()
        .context("voucher codes")?
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    ensure!(vouchers.len() == 9, "nine vouchers: {batch}");
    let base = format!("http://{}", node.portal);

    let mut args = vec![
        support("portal_http.py"),
        base.clone(),
        node.data_dir.display().to_string(),
    ];
    args.extend(vouchers[..6].iter().cloned());
    let report = python("python3", &args).await.map_err(|error| {
        anyhow::anyhow!("{error:#}\n--- the carrier's log ---\n{}", node.log_text())
    })?;
    println!("{report}");

    // Zed, an account the operator made, with an identity erin adds as a contact in the browser.
    let zed = operator_json(
        node.admin,
        "POST",
        "/v1/accounts",
        json!({"login": "zed", "password": ZED_PASSWORD}),
    )
    .await;
    let zed_identity = operator_json(
        node.admin,
        "POST",
        &format!(
            "/v1/accounts/{}/identities",
            zed["id"].as_str().context("zed")?
        ),
        json!({"local_part": "zed"}),
    )
    .await;
    let zed_address = zed_identity["address"]
        .as_str()
        .context("zed's address")?
        .to_owned();

    // The portal on the carrier's own onion, from another tor client: the sign-in page, and
    // the same reply for a made-up login and a real one with a wrong password.
    let mut portal_grpc = PortalClient::new(node.grpc()?);
    let onion = loop {
        let stats = portal_grpc
            .get_stats(portal_pb::GetStatsRequest {})
            .await?
            .into_inner();
        if !stats.onion_address.is_empty() {
            break stats.onion_address;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let through_tor = tornet.client(1);
    let (status, page) = onion_http(through_tor, &onion, "GET", "/sign-in", None).await?;
    ensure!(
        status == 200 && page.contains("Sign in") && page.contains("form_token"),
        "the sign-in page through the carrier's onion: {status}\n{page}"
    );
    let sign_in =
        |login: &str| json!({"login": login, "password": "not the password at all"}).to_string();
    let (made_up_status, made_up) = onion_http(
        through_tor,
        &onion,
        "POST",
        "/account/v1/session",
        Some(&sign_in("nobody-at-all")),
    )
    .await?;
    let (wrong_status, wrong) = onion_http(
        through_tor,
        &onion,
        "POST",
        "/account/v1/session",
        Some(&sign_in("zed")),
    )
    .await?;
    ensure!(
        made_up_status == 401 && wrong_status == 401 && made_up == wrong,
        "a made-up login and a wrong password read the same through the onion:\n{made_up}\n---\n{wrong}"
    );

    // The browser needs Selenium, from the test virtualenv that tests/run.sh prepares.
    let venv_python =
        std::env::var("ONIONPOST_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let shots = screenshot_dir();
    let browser = |phase: &str, voucher: &str, rest: &[String]| {
        let mut args = vec![
            support("browser.py"),
            phase.to_owned(),
            base.clone(),
            shots.display().to_string(),
            voucher.to_owned(),
            zed_address.clone(),
        ];
        args.extend(rest.iter().cloned());
        args
    };
    let log = |error: anyhow::Error| {
        anyhow::anyhow!("{error:#}\n--- the carrier's log ---\n{}", node.log_text())
    };
    let report = python(&venv_python, &browser("first", &vouchers[6], &[]))
        .await
        .map_err(log)?;
    println!("{report}");
    let erin_identity = report
        .lines()
        .find_map(|line| line.strip_prefix("IDENTITY="))
        .context("the browser names erin's identity")?
        .trim()
        .to_owned();

    // Erin's onion tells a mail client how to reach it (Thunderbird's autoconfig, at both places
    // Thunderbird looks), and its IMAP takes her address as the login, only for her.
    let erin_address = operator_json(
        node.admin,
        "GET",
        &format!("/v1/identities/{erin_identity}"),
        Value::Null,
    )
    .await["address"]
        .as_str()
        .context("erin's address")?
        .to_owned();
    let erin_onion = erin_address
        .rsplit_once('@')
        .context("an address")?
        .1
        .to_owned();
    for (host, path) in [
        (
            erin_onion.clone(),
            format!("/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress={erin_address}"),
        ),
        (
            format!("autoconfig.{erin_onion}"),
            format!("/mail/config-v1.1.xml?emailaddress={erin_address}"),
        ),
    ] {
        let (status, document) = onion_http(through_tor, &host, "GET", &path, None).await?;
        ensure!(
            status == 200,
            "autoconfig at {host}{path}: {status}\n{document}"
        );
        let checked = python(
            "python3",
            &[
                support("autoconfig_check.py"),
                document.clone(),
                erin_onion.clone(),
            ],
        )
        .await?;
        println!("{checked}");
    }
    let imap_login =
        |login: &str, password: &str| format!("a1 LOGIN \"{login}\" \"{password}\"\r\n");
    let erin_reply = onion_imap(
        through_tor,
        &erin_onion,
        &imap_login(&erin_address, BROWSER_PASSWORD),
    )
    .await?;
    ensure!(
        erin_reply.starts_with("a1 OK"),
        "erin logs in with her address: {erin_reply}"
    );
    let zed_reply = onion_imap(
        through_tor,
        &erin_onion,
        &imap_login(&zed_address, ZED_PASSWORD),
    )
    .await?;
    ensure!(
        zed_reply.starts_with("a1 NO [AUTHENTICATIONFAILED]"),
        "zed's address and password open nothing on erin's onion: {zed_reply}"
    );

    // A new key for zed arrives in signed mail's Autocrypt header (the keys service's own entry
    // for it; the mail path itself is mail_flow's). It is not signed by the pinned key: held.
    let new_key = IdentityKey::generate(&Address::parse(&zed_address)?)?;
    let header = AutocryptHeader::for_identity(&new_key)?.value()?;
    let mut keys = KeysClient::new(node.grpc()?);
    let learned = keys
        .learn_autocrypt(keys_pb::LearnAutocryptRequest {
            recipient_identity_id: erin_identity.clone(),
            from_address: zed_address.clone(),
            header,
            message_date: None,
        })
        .await?
        .into_inner();
    ensure!(
        learned.change == keys_pb::KeyChange::Held as i32,
        "the new key waits for erin: {learned:?}"
    );
    let report = python(
        &venv_python,
        &browser(
            "second",
            &vouchers[7],
            &[
                new_key.fingerprint().to_hex(),
                imap.ip().to_string(),
                imap.port().to_string(),
            ],
        ),
    )
    .await
    .map_err(log)?;
    println!("{report}");
    let taken = std::fs::read_dir(&shots)?.count();
    ensure!(
        taken >= 14,
        "a screenshot of each page: {taken} in {}",
        shots.display()
    );

    // schemathesis against /account/v1 with a session of its own: no server error, nothing
    // that breaks the document. Signing out is left out (it would end its own session).
    let session = http(
        node.portal,
        "POST",
        "/account/v1/signup",
        None,
        Some(&json!({"login": "schemathesis", "password": "a password for fuzzing", "voucher": vouchers[8]}).to_string()),
    )
    .await
    .expect(201)
    .json();
    let token = session["token"].as_str().context("session token")?;
    let (passed, text) = schemathesis(
        &format!("http://{}/account/v1/openapi.json", node.portal),
        token,
        &["close_session"],
    )
    .await?;
    ensure!(
        passed && text.contains("passed"),
        "schemathesis found problems in /account/v1:\n{text}"
    );
    Ok(())
}
