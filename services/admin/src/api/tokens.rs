//! The API's own bearer tokens (the one thing the admin service stores).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AdminState;
use crate::error::AdminError;
use crate::extract::ApiJson;
use crate::store::{Scope, TokenRecord};
use crate::validate;

/// What a token may do: `write` implies `read`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    Read,
    Write,
}

impl From<Scope> for TokenScope {
    fn from(scope: Scope) -> Self {
        match scope {
            Scope::Read => TokenScope::Read,
            Scope::Write => TokenScope::Write,
        }
    }
}

/// A token as listed: never its text.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Token {
    pub id: String,
    pub name: String,
    pub scope: TokenScope,
    pub created_at: Option<DateTime<Utc>>,
}

impl From<TokenRecord> for Token {
    fn from(record: TokenRecord) -> Self {
        Token {
            id: record.token_id,
            name: record.name,
            scope: record.scope.into(),
            created_at: DateTime::from_timestamp_millis(record.created_at_ms),
        }
    }
}

/// A new token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
    pub scope: TokenScope,
}

/// A new token with its text, shown only this once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    pub id: String,
    pub name: String,
    pub scope: TokenScope,
    pub created_at: Option<DateTime<Utc>>,
    /// The bearer token. Only its hash is kept: it cannot be shown again.
    pub token: String,
}

#[utoipa::path(
    post, path = "/v1/tokens", tag = "tokens",
    request_body = CreateToken,
    responses((status = 201, description = "The token, shown once", body = CreatedToken)),
)]
pub async fn create_token(
    State(state): State<AdminState>,
    ApiJson(request): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), AdminError> {
    validate::name("name", &request.name, validate::MAX_NAME_LEN, false)?;
    let scope = match request.scope {
        TokenScope::Read => Scope::Read,
        TokenScope::Write => Scope::Write,
    };
    let (record, token) =
        crate::auth::create_token(state.store.as_ref(), &request.name, scope).await?;
    tracing::info!(token_id = %record.token_id, scope = scope.as_str(), "api token created");
    let listed = Token::from(record);
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            id: listed.id,
            name: listed.name,
            scope: listed.scope,
            created_at: listed.created_at,
            token,
        }),
    ))
}

/// Every token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<Token>,
}

#[utoipa::path(
    get, path = "/v1/tokens", tag = "tokens",
    responses((status = 200, description = "Every token, oldest first", body = TokenList)),
)]
pub async fn list_tokens(State(state): State<AdminState>) -> Result<Json<TokenList>, AdminError> {
    let tokens = state.store.list_tokens().await?;
    Ok(Json(TokenList {
        tokens: tokens.into_iter().map(Token::from).collect(),
    }))
}

#[utoipa::path(
    delete, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 204, description = "Revoked: the token no longer works")),
)]
pub async fn delete_token(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AdminError> {
    if !state.store.delete_token(&id).await? {
        return Err(AdminError::NotFound("no such token".to_owned()));
    }
    tracing::info!(token_id = %id, "api token revoked");
    Ok(StatusCode::NO_CONTENT)
}
