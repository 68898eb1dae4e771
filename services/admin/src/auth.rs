//! Bearer tokens (RFC 6750): every `/v1` route needs one; reading needs scope `read`, anything
//! else `write` (which implies `read`).
//!
//! A token is `opk_` and 64 hex digits (256 random bits). Only its SHA-256 is stored: with that
//! much entropy a salted slow hash would add nothing, and a plain one keeps each request to one
//! indexed lookup. On a carrier's first start (no tokens yet) an operator token with scope
//! `write` is created from `admin.token`, or generated and printed once to standard error.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;
use rand::Rng as _;
use sha2::{Digest as _, Sha256};

pub use onionpost_runtime::time::now_ms;

use crate::AdminState;
use crate::error::AdminError;
use crate::store::{AdminStore, Scope, StoreError, TokenRecord};

const TOKEN_PREFIX: &str = "opk_";

/// A fresh token's text.
pub fn generate_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// A fresh random id (tokens, identities): 128 bits in hex.
pub fn random_id() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode(bytes)
}

/// What is stored for a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Creates a token and returns its text, the only time it is seen.
pub async fn create_token(
    store: &dyn AdminStore,
    name: &str,
    scope: Scope,
) -> Result<(TokenRecord, String), StoreError> {
    let token = generate_token();
    let record = TokenRecord {
        token_id: random_id(),
        name: name.to_owned(),
        scope,
        token_hash: token_hash(&token),
        created_at_ms: now_ms(),
    };
    store.insert_token(&record).await?;
    Ok((record, token))
}

/// On a first start (no token at all), creates the operator token: `configured` (admin.token)
/// when set, else a generated one printed once to standard error.
pub async fn bootstrap(store: &dyn AdminStore, configured: Option<&str>) -> Result<(), StoreError> {
    if store.count_tokens().await? > 0 {
        return Ok(());
    }
    match configured {
        Some(token) => {
            let record = TokenRecord {
                token_id: random_id(),
                name: "operator".to_owned(),
                scope: Scope::Write,
                token_hash: token_hash(token),
                created_at_ms: now_ms(),
            };
            store.insert_token(&record).await?;
            tracing::info!(token_id = %record.token_id, "operator token created from admin.token");
        }
        None => {
            let (record, token) = create_token(store, "operator", Scope::Write).await?;
            // Printed, not logged: log lines may be shipped elsewhere, and this is shown once.
            eprintln!(
                "onionpost admin: operator token (scope write), shown only now; keep it safe:\n  ONIONPOST_ADMIN_TOKEN={token}"
            );
            tracing::warn!(token_id = %record.token_id, "operator token generated and printed to standard error");
        }
    }
    Ok(())
}

/// The scope a request needs: reading methods need `read`, everything else `write`.
pub fn needed_scope(method: &Method) -> Scope {
    if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS {
        Scope::Read
    } else {
        Scope::Write
    }
}

/// The authenticated token, for handlers that want it.
#[derive(Clone, Debug)]
pub struct Caller {
    pub token_id: String,
    pub scope: Scope,
}

/// The `/v1` middleware: 401 without a valid token, 403 with too small a scope.
pub async fn require_token(
    State(state): State<AdminState>,
    mut request: Request,
    next: Next,
) -> Result<Response, AdminError> {
    // The header is copied out first: a request body is not `Sync`, so a reference to the
    // request cannot be held across the store's await.
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.to_str().map(str::to_owned));
    let caller = authenticate(&state.store, authorization).await?;
    if !caller.scope.allows(needed_scope(request.method())) {
        return Err(AdminError::InsufficientScope);
    }
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

async fn authenticate(
    store: &Arc<dyn AdminStore>,
    authorization: Option<Result<String, axum::http::header::ToStrError>>,
) -> Result<Caller, AdminError> {
    let text = authorization
        .ok_or(AdminError::MissingToken)?
        .map_err(|_| AdminError::InvalidToken)?;
    let (scheme, token) = text.split_once(' ').ok_or(AdminError::InvalidToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AdminError::MissingToken);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AdminError::InvalidToken);
    }
    let record = store
        .token_by_hash(&token_hash(token))
        .await?
        .ok_or(AdminError::InvalidToken)?;
    Ok(Caller {
        token_id: record.token_id,
        scope: record.scope,
    })
}
