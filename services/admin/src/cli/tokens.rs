//! `onionpost admin tokens …`: the API's bearer tokens (`/v1/tokens`).

use clap::{Subcommand, ValueEnum};
use serde_json::json;

use super::{ApiClient, Columns, Output, segment};
use crate::api::tokens::{CreateToken, CreatedToken, TokenList, TokenScope};

const COLUMNS: Columns = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("SCOPE", "/scope"),
    ("CREATED", "/created_at"),
];

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ScopeArg {
    Read,
    Write,
}

impl From<ScopeArg> for TokenScope {
    fn from(scope: ScopeArg) -> Self {
        match scope {
            ScopeArg::Read => TokenScope::Read,
            ScopeArg::Write => TokenScope::Write,
        }
    }
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

pub(super) async fn run(client: &ApiClient, command: &TokensCommand) -> anyhow::Result<Output> {
    match command {
        TokensCommand::List => {
            let tokens: TokenList = client.get("/v1/tokens").await?;
            Output::list(&tokens, COLUMNS, "/tokens")
        }
        TokensCommand::Create { name, scope } => {
            let request = CreateToken {
                name: name.clone(),
                scope: (*scope).into(),
            };
            let created: CreatedToken = client.post("/v1/tokens", &request).await?;
            Output::one(
                &created,
                &[
                    ("ID", "/id"),
                    ("SCOPE", "/scope"),
                    ("TOKEN (shown once)", "/token"),
                ],
            )
        }
        TokensCommand::Delete { id } => {
            client
                .delete(&format!("/v1/tokens/{}", segment(id)))
                .await?;
            Output::one(&json!({"revoked": id}), &[("REVOKED", "/revoked")])
        }
    }
}
