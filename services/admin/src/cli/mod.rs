//! `onionpost admin …`: a thin client of the admin HTTP API, for operators at a terminal.
//!
//! It reads the API's address from `ONIONPOST_ADMIN_URL` (default `http://` + `admin.listen`'s
//! default, or `ONIONPOST_ADMIN_LISTEN` when set) and the bearer token from
//! `ONIONPOST_ADMIN_TOKEN`; it prints tables by default and the API's JSON with `--json`. A
//! refusal is printed from its problem document, and the exit code is 1.
//!
//! Requests and answers are the API's own types ([`crate::api`]), so the command line cannot
//! drift from the routes it calls. One file per resource holds its subcommands; this file holds
//! the HTTP client and the printing.

mod accounts;
mod identities;
mod plans;
mod queue;
mod stats;
mod tokens;
mod vouchers;

use std::process::ExitCode;

use anyhow::Context as _;
use axum::body::Bytes;
use clap::{Args, Subcommand};
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use accounts::AccountsCommand;
pub use identities::IdentitiesCommand;
pub use plans::PlansCommand;
pub use queue::QueueCommand;
pub use tokens::{ScopeArg, TokensCommand};
pub use vouchers::VouchersCommand;

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

/// The admin API over plain HTTP, with the operator's bearer token.
pub(crate) struct ApiClient {
    base: String,
    token: Option<String>,
    http: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

/// A response: status and body.
pub(crate) struct Answer {
    status: StatusCode,
    body: Bytes,
}

impl ApiClient {
    async fn call(
        &self,
        method: Method,
        path: &str,
        json_body: Option<Vec<u8>>,
    ) -> anyhow::Result<Answer> {
        let uri = format!("{}{path}", self.base.trim_end_matches('/'));
        let mut builder = Request::builder().method(method).uri(&uri);
        if let Some(token) = &self.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let payload = match json_body {
            Some(bytes) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(bytes)
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

    /// Sends `body` (when given) as JSON; a problem document becomes the error.
    async fn exchange<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<Answer> {
        let json_body = body.map(serde_json::to_vec).transpose()?;
        let answer = self.call(method, path, json_body).await?;
        check(&answer)?;
        Ok(answer)
    }

    /// Sends `body` and reads the answer as the route's response type.
    async fn send<B: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<R> {
        let answer = self.exchange(method, path, body).await?;
        serde_json::from_slice(&answer.body)
            .context("the API answered with something this command line cannot read")
    }

    pub(crate) async fn get<R: DeserializeOwned>(&self, path: &str) -> anyhow::Result<R> {
        self.send::<(), R>(Method::GET, path, None).await
    }

    pub(crate) async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<R> {
        self.send(Method::POST, path, Some(body)).await
    }

    /// A POST with no body (an action on a resource).
    pub(crate) async fn act<R: DeserializeOwned>(&self, path: &str) -> anyhow::Result<R> {
        self.send::<(), R>(Method::POST, path, None).await
    }

    pub(crate) async fn patch<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<R> {
        self.send(Method::PATCH, path, Some(body)).await
    }

    /// A DELETE, answered with 204 and no body.
    pub(crate) async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.exchange::<()>(Method::DELETE, path, None).await?;
        Ok(())
    }

    /// A GET whose answer is not JSON (an image).
    pub(crate) async fn get_bytes(&self, path: &str) -> anyhow::Result<Bytes> {
        Ok(self.exchange::<()>(Method::GET, path, None).await?.body)
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

/// A route's query string from its query type (`?a=1&b=2`, or nothing when every filter is
/// absent).
pub(crate) fn query<Q: Serialize>(filters: &Q) -> anyhow::Result<String> {
    let text = serde_urlencoded::to_string(filters).context("encoding the query")?;
    Ok(if text.is_empty() {
        text
    } else {
        format!("?{text}")
    })
}

/// An id as one path segment.
pub(crate) fn segment(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A word given on the command line (a state, an origin) as the API's type for it, so a typo is
/// refused here with the words the API accepts.
pub(crate) fn word<T: DeserializeOwned>(option: &str, text: &str) -> anyhow::Result<T> {
    serde_json::from_value(Value::String(text.to_owned()))
        .map_err(|error| anyhow::anyhow!("--{option} `{text}`: {error}"))
}

/// Table columns: a title and the JSON pointer of the cell in each row.
pub(crate) type Columns = &'static [(&'static str, &'static str)];

/// What a command prints: the API's JSON (with `--json`) or its view for a terminal.
pub(crate) struct Output {
    json: Value,
    view: View,
}

enum View {
    /// A table of `columns`: the rows at `list` in `value`, or `value` itself as one row.
    Rows {
        value: Value,
        columns: Columns,
        list: Option<&'static str>,
    },
    Text(String),
}

impl Output {
    /// One resource as one row.
    pub(crate) fn one<T: Serialize>(item: &T, columns: Columns) -> anyhow::Result<Output> {
        let json = serde_json::to_value(item)?;
        Ok(Output {
            view: View::Rows {
                value: json.clone(),
                columns,
                list: None,
            },
            json,
        })
    }

    /// A page or list: its rows are the array at `list`.
    pub(crate) fn list<T: Serialize>(
        page: &T,
        columns: Columns,
        list: &'static str,
    ) -> anyhow::Result<Output> {
        let json = serde_json::to_value(page)?;
        Ok(Output {
            view: View::Rows {
                value: json.clone(),
                columns,
                list: Some(list),
            },
            json,
        })
    }

    /// The API's JSON, shown at a terminal as other rows.
    pub(crate) fn shown_as<T: Serialize>(
        item: &T,
        rows: Value,
        columns: Columns,
        list: &'static str,
    ) -> anyhow::Result<Output> {
        Ok(Output {
            json: serde_json::to_value(item)?,
            view: View::Rows {
                value: rows,
                columns,
                list: Some(list),
            },
        })
    }

    /// The API's JSON, shown at a terminal as text.
    pub(crate) fn text<T: Serialize>(item: &T, text: String) -> anyhow::Result<Output> {
        Ok(Output {
            json: serde_json::to_value(item)?,
            view: View::Text(text),
        })
    }

    fn print(self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(&self.json)?);
            return Ok(());
        }
        let (value, columns, list) = match self.view {
            View::Text(text) => {
                println!("{text}");
                return Ok(());
            }
            View::Rows {
                value,
                columns,
                list,
            } => (value, columns, list),
        };
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
}

async fn execute(client: &ApiClient, args: &AdminArgs) -> anyhow::Result<()> {
    let output = match &args.command {
        AdminCommand::Accounts(command) => accounts::run(client, command).await?,
        AdminCommand::Identities(command) => identities::run(client, command).await?,
        AdminCommand::Plans(command) => plans::run(client, command).await?,
        AdminCommand::Vouchers(command) => vouchers::run(client, command).await?,
        AdminCommand::Tokens(command) => tokens::run(client, command).await?,
        AdminCommand::Queue(command) => queue::run(client, command).await?,
        AdminCommand::Stats => stats::run(client).await?,
    };
    output.print(args.json)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn queries_come_from_the_routes_query_types() {
        let filters = crate::api::accounts::ListAccountsQuery {
            state: Some(crate::api::accounts::AccountState::Grace),
            limit: Some(10),
            page_token: None,
        };
        assert_eq!(query(&filters).unwrap(), "?state=grace&limit=10");
        let none = crate::api::accounts::ListAccountsQuery {
            state: None,
            limit: None,
            page_token: None,
        };
        assert_eq!(query(&none).unwrap(), "");
        assert!(word::<crate::api::accounts::AccountState>("state", "gone").is_err());
    }
}
