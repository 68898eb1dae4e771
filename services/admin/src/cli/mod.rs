//! `onionpost admin …`: a thin client of the admin HTTP API, for operators at a terminal.
//!
//! It reads the API's address from `ONIONPOST_ADMIN_URL` (default `http://` + `admin.listen`'s
//! default, or `ONIONPOST_ADMIN_LISTEN` when set) and the bearer token from
//! `ONIONPOST_ADMIN_TOKEN`; it prints tables by default and the API's JSON with `--json`. A
//! refusal is printed from its problem document, and the exit code is 1.

use std::process::ExitCode;

use anyhow::Context as _;
use axum::body::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// Administer a carrier through its admin HTTP API.
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// The admin API's base URL (plain http).
    #[arg(long, env = "ONIONPOST_ADMIN_URL")]
    pub url: Option<String>,
    /// Bearer token (scope read for listing, write for changes).
    #[arg(long, env = "ONIONPOST_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Hosted accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Onion identities of accounts.
    #[command(subcommand)]
    Identities(IdentitiesCommand),
    /// Plans.
    #[command(subcommand)]
    Plans(PlansCommand),
    /// Prepaid voucher codes.
    #[command(subcommand)]
    Vouchers(VouchersCommand),
    /// API bearer tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// The carrier queue: envelopes and delivery state.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// The carrier at a glance.
    Stats,
}

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// List queued messages.
    List {
        /// Only messages with a recipient in this state (scheduled, delivered,
        /// temporary_failure, permanent_failure).
        #[arg(long)]
        state: Option<String>,
        /// Only held messages.
        #[arg(long)]
        held: bool,
        /// Only messages with a recipient at this address or onion.
        #[arg(long)]
        recipient: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Show one queued message with each recipient's state.
    Show { id: String },
    /// Make its unfinished recipients due now.
    Retry { id: String },
    /// Stop delivery attempts until released.
    Hold { id: String },
    /// Deliver on the schedule again.
    Release { id: String },
    /// Remove it from the queue (no DSN unless --notify-sender).
    Delete {
        id: String,
        #[arg(long)]
        notify_sender: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum AccountsCommand {
    /// List accounts.
    List {
        /// Only accounts in this state (active, grace, expired, suspended).
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Create an account.
    Create {
        login: String,
        #[arg(long)]
        password: String,
        /// Plan id; the default plan when absent.
        #[arg(long)]
        plan: Option<String>,
    },
    /// Show one account.
    Show { id: String },
    /// Suspend, resume, change plan or reset the password.
    Update {
        id: String,
        #[arg(long, conflicts_with = "resume")]
        suspend: bool,
        #[arg(long)]
        resume: bool,
        #[arg(long)]
        plan: Option<String>,
        #[arg(long)]
        password: Option<String>,
    },
    /// Delete an account, its identities (revoked first) and its mail.
    Delete { id: String },
    /// Redeem a voucher code for an account.
    Redeem { id: String, code: String },
}

#[derive(Subcommand, Debug)]
pub enum IdentitiesCommand {
    /// List an account's identities.
    List { account: String },
    /// Create an identity (a new onion and key) for an account.
    Create {
        account: String,
        local_part: String,
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Show one identity.
    Show { id: String },
    /// Revoke an identity for good.
    Delete { id: String },
    /// Write an identity's QR code (SVG, or PNG with --png) to a file.
    Qr {
        id: String,
        #[arg(long)]
        png: bool,
        #[arg(long, short)]
        output: std::path::PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum PlansCommand {
    /// List plans.
    List,
    /// Create a plan.
    Create {
        name: String,
        #[arg(long)]
        quota_bytes: u64,
        #[arg(long)]
        identities: u32,
        #[arg(long)]
        gateway: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum VouchersCommand {
    /// Mint voucher codes (shown once).
    Mint {
        plan: String,
        #[arg(long)]
        days: u32,
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ScopeArg {
    Read,
    Write,
}

#[derive(Subcommand, Debug)]
pub enum TokensCommand {
    /// List tokens (never their text).
    List,
    /// Create a token (its text is shown once).
    Create {
        name: String,
        #[arg(long, value_enum, default_value = "read")]
        scope: ScopeArg,
    },
    /// Revoke a token.
    Delete { id: String },
}

/// The default API address: `admin.listen` (its default, or the environment's).
fn default_url() -> String {
    let listen = std::env::var("ONIONPOST_ADMIN_LISTEN")
        .ok()
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| onionpost_runtime::config::DEFAULT_ADMIN_LISTEN.to_owned());
    let listen = listen
        .replace("0.0.0.0", "127.0.0.1")
        .replace("[::]", "[::1]");
    format!("http://{listen}")
}

struct ApiClient {
    base: String,
    token: Option<String>,
    http: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

/// A response: status, media type, body.
struct Answer {
    status: StatusCode,
    body: Bytes,
}

impl ApiClient {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Answer> {
        let uri = format!("{}{path}", self.base.trim_end_matches('/'));
        let mut builder = Request::builder().method(method).uri(&uri);
        if let Some(token) = &self.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let payload = match body {
            Some(value) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(&value)?)
            }
            None => Bytes::new(),
        };
        let request = builder
            .body(Full::new(payload))
            .with_context(|| format!("bad URL {uri}"))?;
        let response = self
            .http
            .request(request)
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.base))?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer { status, body })
    }

    /// Calls and returns the JSON of a success; a problem document becomes the error.
    async fn json(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let answer = self.call(method, path, body).await?;
        check(&answer)?;
        if answer.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&answer.body).context("the API answered with something not JSON")
    }
}

/// A refusal, from its problem document.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {detail}")]
pub struct Refused {
    pub status: StatusCode,
    pub detail: String,
}

fn check(answer: &Answer) -> Result<(), Refused> {
    if answer.status.is_success() {
        return Ok(());
    }
    let problem: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    let mut detail = problem["detail"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(&answer.body).into_owned());
    if let Some(field) = problem["field"].as_str() {
        detail = format!("{field}: {detail}");
    }
    Err(Refused {
        status: answer.status,
        detail,
    })
}

/// Runs `onionpost admin …`.
pub async fn run(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let client = ApiClient {
        base: args.url.clone().unwrap_or_else(default_url),
        token: args.token.clone(),
        http: Client::builder(TokioExecutor::new()).build_http(),
    };
    match execute(&client, &args).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(error) => match error.downcast_ref::<Refused>() {
            Some(refused) => {
                eprintln!("onionpost admin: {refused}");
                Ok(ExitCode::FAILURE)
            }
            None => Err(error),
        },
    }
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        if let Some(value) = value {
            serializer.append_pair(key, value);
        }
    }
    let text = serializer.finish();
    if text.is_empty() {
        text
    } else {
        format!("?{text}")
    }
}

fn segment(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

const ACCOUNT_COLUMNS: &[(&str, &str)] = &[
    ("ID", "/id"),
    ("LOGIN", "/login"),
    ("PLAN", "/plan"),
    ("STATE", "/state"),
    ("PAID UNTIL", "/paid_until"),
    ("USED", "/quota/used_bytes"),
    ("QUOTA", "/quota/limit_bytes"),
    ("IDENTITIES", "/identities"),
];
const IDENTITY_COLUMNS: &[(&str, &str)] = &[
    ("ID", "/id"),
    ("ADDRESS", "/address"),
    ("STATE", "/state"),
    ("FINGERPRINT", "/fingerprint"),
];
const PLAN_COLUMNS: &[(&str, &str)] = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("QUOTA", "/quota_bytes"),
    ("IDENTITIES", "/identities_allowed"),
    ("GATEWAY", "/gateway_allowed"),
];
const QUEUE_COLUMNS: &[(&str, &str)] = &[
    ("ID", "/id"),
    ("ORIGIN", "/origin"),
    ("SIZE", "/size_bytes"),
    ("HELD", "/held"),
    ("ENQUEUED", "/enqueued_at"),
    ("EXPIRES", "/expires_at"),
];
const TOKEN_COLUMNS: &[(&str, &str)] = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("SCOPE", "/scope"),
    ("CREATED", "/created_at"),
];

async fn execute(client: &ApiClient, args: &AdminArgs) -> anyhow::Result<()> {
    let (value, columns, list): (Value, &[(&str, &str)], Option<&str>) = match &args.command {
        AdminCommand::Accounts(command) => match command {
            AccountsCommand::List {
                state,
                limit,
                page_token,
            } => {
                let path = format!(
                    "/v1/accounts{}",
                    query(&[
                        ("state", state.clone()),
                        ("limit", limit.map(|n| n.to_string())),
                        ("page_token", page_token.clone()),
                    ])
                );
                let value = client.json(Method::GET, &path, None).await?;
                (value, ACCOUNT_COLUMNS, Some("/accounts"))
            }
            AccountsCommand::Create {
                login,
                password,
                plan,
            } => {
                let mut body = json!({"login": login, "password": password});
                if let Some(plan) = plan {
                    body["plan"] = json!(plan);
                }
                let value = client
                    .json(Method::POST, "/v1/accounts", Some(body))
                    .await?;
                (value, ACCOUNT_COLUMNS, None)
            }
            AccountsCommand::Show { id } => {
                let value = client
                    .json(Method::GET, &format!("/v1/accounts/{}", segment(id)), None)
                    .await?;
                (value, ACCOUNT_COLUMNS, None)
            }
            AccountsCommand::Update {
                id,
                suspend,
                resume,
                plan,
                password,
            } => {
                let mut body = json!({});
                if *suspend {
                    body["state"] = json!("suspended");
                }
                if *resume {
                    body["state"] = json!("active");
                }
                if let Some(plan) = plan {
                    body["plan"] = json!(plan);
                }
                if let Some(password) = password {
                    body["password"] = json!(password);
                }
                let value = client
                    .json(
                        Method::PATCH,
                        &format!("/v1/accounts/{}", segment(id)),
                        Some(body),
                    )
                    .await?;
                (value, ACCOUNT_COLUMNS, None)
            }
            AccountsCommand::Delete { id } => {
                client
                    .json(
                        Method::DELETE,
                        &format!("/v1/accounts/{}", segment(id)),
                        None,
                    )
                    .await?;
                (json!({"deleted": id}), &[("DELETED", "/deleted")][..], None)
            }
            AccountsCommand::Redeem { id, code } => {
                let value = client
                    .json(
                        Method::POST,
                        &format!("/v1/accounts/{}/redeem", segment(id)),
                        Some(json!({"code": code})),
                    )
                    .await?;
                (value, ACCOUNT_COLUMNS, None)
            }
        },
        AdminCommand::Identities(command) => match command {
            IdentitiesCommand::List { account } => {
                let value = client
                    .json(
                        Method::GET,
                        &format!("/v1/accounts/{}/identities", segment(account)),
                        None,
                    )
                    .await?;
                (value, IDENTITY_COLUMNS, Some("/identities"))
            }
            IdentitiesCommand::Create {
                account,
                local_part,
                display_name,
            } => {
                let mut body = json!({"local_part": local_part});
                if let Some(name) = display_name {
                    body["display_name"] = json!(name);
                }
                let value = client
                    .json(
                        Method::POST,
                        &format!("/v1/accounts/{}/identities", segment(account)),
                        Some(body),
                    )
                    .await?;
                (value, IDENTITY_COLUMNS, None)
            }
            IdentitiesCommand::Show { id } => {
                let value = client
                    .json(
                        Method::GET,
                        &format!("/v1/identities/{}", segment(id)),
                        None,
                    )
                    .await?;
                (value, IDENTITY_COLUMNS, None)
            }
            IdentitiesCommand::Delete { id } => {
                client
                    .json(
                        Method::DELETE,
                        &format!("/v1/identities/{}", segment(id)),
                        None,
                    )
                    .await?;
                (json!({"revoked": id}), &[("REVOKED", "/revoked")][..], None)
            }
            IdentitiesCommand::Qr { id, png, output } => {
                let kind = if *png { "png" } else { "svg" };
                let answer = client
                    .call(
                        Method::GET,
                        &format!("/v1/identities/{}/qr.{kind}", segment(id)),
                        None,
                    )
                    .await?;
                check(&answer)?;
                std::fs::write(output, &answer.body)
                    .with_context(|| format!("writing {}", output.display()))?;
                (
                    json!({"written": output.display().to_string(), "bytes": answer.body.len()}),
                    &[("WRITTEN", "/written"), ("BYTES", "/bytes")][..],
                    None,
                )
            }
        },
        AdminCommand::Plans(command) => match command {
            PlansCommand::List => {
                let value = client.json(Method::GET, "/v1/plans", None).await?;
                (value, PLAN_COLUMNS, Some("/plans"))
            }
            PlansCommand::Create {
                name,
                quota_bytes,
                identities,
                gateway,
            } => {
                let body = json!({"name": name, "quota_bytes": quota_bytes, "identities_allowed": identities, "gateway_allowed": gateway});
                let value = client.json(Method::POST, "/v1/plans", Some(body)).await?;
                (value, PLAN_COLUMNS, None)
            }
        },
        AdminCommand::Vouchers(VouchersCommand::Mint { plan, days, count }) => {
            let body = json!({"plan": plan, "days": days, "count": count});
            let value = client
                .json(Method::POST, "/v1/vouchers", Some(body))
                .await?;
            let rows = value["codes"]
                .as_array()
                .map(|codes| codes.iter().map(|code| json!({"code": code})).collect())
                .unwrap_or_default();
            if args.json {
                (value, &[][..], None)
            } else {
                (
                    json!({"codes": Value::Array(rows)}),
                    &[("CODE", "/code")][..],
                    Some("/codes"),
                )
            }
        }
        AdminCommand::Tokens(command) => match command {
            TokensCommand::List => {
                let value = client.json(Method::GET, "/v1/tokens", None).await?;
                (value, TOKEN_COLUMNS, Some("/tokens"))
            }
            TokensCommand::Create { name, scope } => {
                let scope = match scope {
                    ScopeArg::Read => "read",
                    ScopeArg::Write => "write",
                };
                let value = client
                    .json(
                        Method::POST,
                        "/v1/tokens",
                        Some(json!({"name": name, "scope": scope})),
                    )
                    .await?;
                (
                    value,
                    &[
                        ("ID", "/id"),
                        ("SCOPE", "/scope"),
                        ("TOKEN (shown once)", "/token"),
                    ][..],
                    None,
                )
            }
            TokensCommand::Delete { id } => {
                client
                    .json(Method::DELETE, &format!("/v1/tokens/{}", segment(id)), None)
                    .await?;
                (json!({"revoked": id}), &[("REVOKED", "/revoked")][..], None)
            }
        },
        AdminCommand::Queue(command) => match command {
            QueueCommand::List {
                state,
                held,
                recipient,
                limit,
                page_token,
            } => {
                let path = format!(
                    "/v1/queue{}",
                    query(&[
                        ("state", state.clone()),
                        ("held", held.then(|| "true".to_owned())),
                        ("recipient", recipient.clone()),
                        ("limit", limit.map(|n| n.to_string())),
                        ("page_token", page_token.clone()),
                    ])
                );
                let value = client.json(Method::GET, &path, None).await?;
                (value, QUEUE_COLUMNS, Some("/messages"))
            }
            QueueCommand::Show { id } => {
                let value = client
                    .json(Method::GET, &format!("/v1/queue/{}", segment(id)), None)
                    .await?;
                (value, QUEUE_COLUMNS, None)
            }
            QueueCommand::Retry { id }
            | QueueCommand::Hold { id }
            | QueueCommand::Release { id } => {
                let action = match command {
                    QueueCommand::Retry { .. } => "retry",
                    QueueCommand::Hold { .. } => "hold",
                    _ => "release",
                };
                let value = client
                    .json(
                        Method::POST,
                        &format!("/v1/queue/{}/{action}", segment(id)),
                        None,
                    )
                    .await?;
                (value, QUEUE_COLUMNS, None)
            }
            QueueCommand::Delete { id, notify_sender } => {
                let path = format!(
                    "/v1/queue/{}{}",
                    segment(id),
                    query(&[("notify_sender", notify_sender.then(|| "true".to_owned()))])
                );
                client.json(Method::DELETE, &path, None).await?;
                (json!({"deleted": id}), &[("DELETED", "/deleted")][..], None)
            }
        },
        AdminCommand::Stats => {
            let value = client.json(Method::GET, "/v1/stats", None).await?;
            if args.json {
                (value, &[][..], None)
            } else {
                println!("{}", stats_text(&value));
                return Ok(());
            }
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let rows: Vec<Value> = match list {
        Some(pointer) => value
            .pointer(pointer)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        None => vec![value.clone()],
    };
    println!("{}", table(columns, &rows));
    if let Some(next) = value.pointer("/next_page_token").and_then(Value::as_str) {
        println!("next page: --page-token {next}");
    }
    Ok(())
}

fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

/// A plain text table: a header row, then one row per item, columns padded to fit.
pub fn table(columns: &[(&str, &str)], rows: &[Value]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|(_, pointer)| cell(row.pointer(pointer)))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(index, (title, _))| {
            cells
                .iter()
                .map(|row| row[index].chars().count())
                .chain([title.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<String>| {
        values
            .iter()
            .zip(&widths)
            .map(|(value, width)| format!("{value:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(
        columns
            .iter()
            .map(|(title, _)| (*title).to_owned())
            .collect(),
    )];
    out.extend(cells.into_iter().map(line));
    out.join("\n")
}

fn stats_text(value: &Value) -> String {
    let mut lines = Vec::new();
    let counts = |key: &str| match value.get(key).and_then(Value::as_object) {
        Some(map) => map
            .iter()
            .map(|(name, count)| format!("{name} {count}"))
            .collect::<Vec<_>>()
            .join(", "),
        None => "unavailable".to_owned(),
    };
    lines.push(format!("accounts      {}", counts("accounts_by_state")));
    lines.push(format!("identities    {}", counts("identities_by_state")));
    lines.push(format!(
        "delivered     {} today",
        cell(value.get("messages_delivered_today"))
    ));
    lines.push(format!(
        "queue         depth {}, oldest {} s",
        cell(value.get("queue_depth")),
        cell(value.get("queue_oldest_age_seconds"))
    ));
    lines.push(format!(
        "tor control   {}",
        match value.get("tor_control_connected").and_then(Value::as_bool) {
            Some(true) => "connected",
            Some(false) => "disconnected",
            None => "unknown",
        }
    ));
    if let Some(list) = value.get("unavailable_services").and_then(Value::as_array)
        && !list.is_empty()
    {
        lines.push(format!(
            "unavailable   {}",
            list.iter()
                .map(|item| cell(Some(item)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns_and_show_absent_values() {
        let rows = vec![
            json!({"id": "a1", "login": "alice", "quota": {"used_bytes": 5}}),
            json!({"id": "b22", "login": "bo", "quota": {"used_bytes": null}}),
        ];
        let text = table(
            &[
                ("ID", "/id"),
                ("LOGIN", "/login"),
                ("USED", "/quota/used_bytes"),
            ],
            &rows,
        );
        assert_eq!(text, "ID   LOGIN  USED\na1   alice  5\nb22  bo     -");
    }
}
