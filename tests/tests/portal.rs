//! The account portal against a running carrier (onion, keys, imap, portal and admin in one
//! `onionpost` process, tor on the private network), with real clients only:
//!
//! - `portal_http.py` (Python's urllib): every `/account/v1` route and every form against no
//!   session, an expired session, another account's session, and a missing or wrong form token;
//!   identical replies for a made-up login and a wrong password; sign-up by voucher, vouchers,
//!   password changes that end other sessions, deletion.
//! - `browser.py` (Debian's chromium through Selenium, JavaScript disabled): sign up, sign out,
//!   sign in, create an identity and see it go online over tor, redeem a voucher, sign out; a
//!   screenshot of each page; then Python's imaplib logs in with the account made in the browser.
//! - schemathesis against `/account/v1` with a session: no server error, no reply outside the
//!   OpenAPI document.
//!
//! One test function, so the private Tor network starts once for every scenario.

mod admin_support;

use std::net::SocketAddr;
use std::path::PathBuf;

use admin_support::{Carrier, http, operator_json, schemathesis};
use anyhow::{Context as _, ensure};
use onionpost_e2e::TorNet;
use onionpost_e2e::node::{free_port, http_get};
use serde_json::{Value, json};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_holders_run_their_accounts_in_the_portal() -> anyhow::Result<()> {
    let tornet = TorNet::start(1).await?;
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

    // The browser needs Selenium, from the test virtualenv that tests/run.sh prepares.
    let venv_python =
        std::env::var("ONIONPOST_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let shots = screenshot_dir();
    let args = vec![
        support("browser.py"),
        base,
        imap.ip().to_string(),
        imap.port().to_string(),
        shots.display().to_string(),
        vouchers[6].clone(),
        vouchers[7].clone(),
    ];
    let report = python(&venv_python, &args).await.map_err(|error| {
        anyhow::anyhow!("{error:#}\n--- the carrier's log ---\n{}", node.log_text())
    })?;
    println!("{report}");
    let taken = std::fs::read_dir(&shots)?.count();
    ensure!(
        taken >= 8,
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
