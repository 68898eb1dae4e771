//! What the admin API tests share: a carrier (onion, keys, imap and admin in one `onionpost`
//! process on a tor client of the private network) and a minimal HTTP/1.1 client.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Stdio;

use anyhow::{Context as _, ensure};
use onionpost_e2e::TorClient;
use onionpost_e2e::node::Node;
use onionpost_e2e::onion_service::free_port_block;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The operator token the carrier is started with (ONIONPOST_ADMIN_TOKEN).
pub const OPERATOR_TOKEN: &str = "opk_e2e-operator-token-0123456789abcdef";

pub struct Carrier {
    pub node: Node,
}

impl Carrier {
    pub async fn start(tor: &TorClient) -> anyhow::Result<Carrier> {
        Self::start_with(tor, "onion,keys,imap,queue,smtp-out,admin", &[]).await
    }

    /// A carrier running `targets` on `tor`, with `extra` added to its environment; ready when
    /// this returns.
    pub async fn start_with(
        tor: &TorClient,
        targets: &str,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Carrier> {
        let (first, last) = free_port_block(32)?;
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
        ];
        env.extend(extra.iter().cloned());
        let node = Node::start(targets, &env).await;
        let carrier = Carrier { node };
        carrier.node.until_ready().await?;
        Ok(carrier)
    }

    pub fn admin(&self) -> SocketAddr {
        self.node.admin
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.node.admin)
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Answer {
        http(self.node.admin, method, path, token, body).await
    }

    /// A call with the operator token and a JSON body.
    pub async fn op(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let text = body.map(|value| value.to_string());
        self.call(method, path, Some(OPERATOR_TOKEN), text.as_deref())
            .await
    }
}

/// An operator call to the admin API at `admin` that must succeed (200 or 201); its JSON.
/// `body` null: no body.
pub async fn operator_json(admin: SocketAddr, method: &str, path: &str, body: Value) -> Value {
    let text = (!body.is_null()).then(|| body.to_string());
    let answer = http(admin, method, path, Some(OPERATOR_TOKEN), text.as_deref()).await;
    assert!(
        answer.status == 200 || answer.status == 201,
        "{method} {path}: {} {}",
        answer.status,
        answer.text()
    );
    answer.json()
}

/// An HTTP response.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Panics unless the status is `status`, showing the body.
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(self.status, status, "{}", self.text());
        self
    }
}

/// A minimal HTTP/1.1 request (Connection: close), with JSON when a body is given.
pub async fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connecting to the admin API");
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" || method == "PATCH" {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).await.expect("sending");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("reading");
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(key, value)| {
        key.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&data[..end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = end + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
}

/// `st`, installed from PyPI when missing.
async fn schemathesis_program() -> anyhow::Result<String> {
    let found = |program: &'static str| async move {
        tokio::process::Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|status| status.success())
    };
    if found("st").await {
        return Ok("st".to_owned());
    }
    let installed = tokio::process::Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "schemathesis"])
        .status()
        .await
        .context("running pip")?;
    ensure!(installed.success(), "pip install schemathesis failed");
    ensure!(
        found("st").await,
        "schemathesis installed but `st` is not on PATH"
    );
    Ok("st".to_owned())
}

/// Runs schemathesis against the OpenAPI document at `document_url` with `token` as the bearer,
/// leaving out `excluded` operation ids; whether it passed, and what it printed. A fixed seed
/// keeps the suite reproducible; ONIONPOST_TEST_SCHEMATHESIS_SEED explores others.
pub async fn schemathesis(
    document_url: &str,
    token: &str,
    excluded: &[&str],
) -> anyhow::Result<(bool, String)> {
    let st = schemathesis_program().await?;
    let seed = std::env::var("ONIONPOST_TEST_SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".to_owned());
    let report = tempfile::tempdir()?;
    let mut args = vec![
        "run".to_owned(),
        document_url.to_owned(),
        "--header".to_owned(),
        format!("Authorization: Bearer {token}"),
        "--checks".to_owned(),
        "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance".to_owned(),
        "--phases".to_owned(),
        "examples,coverage,fuzzing".to_owned(),
        "--max-examples".to_owned(),
        "15".to_owned(),
        "--request-timeout".to_owned(),
        "60".to_owned(),
        "--seed".to_owned(),
        seed,
        "--no-color".to_owned(),
    ];
    for operation in excluded {
        args.push("--exclude-operation-id".to_owned());
        args.push((*operation).to_owned());
    }
    let output = tokio::process::Command::new(&st)
        .args(&args)
        .current_dir(report.path())
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .output()
        .await
        .context("running schemathesis")?;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.success(), text))
}
