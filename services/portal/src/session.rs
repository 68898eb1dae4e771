//! Sessions, their cookies, and the tokens that guard every form.
//!
//! - A session token is 256 random bits, given once (a cookie for a browser, a bearer token for a
//!   script); the store keeps only its SHA-256. Signing in always makes a new one, so a token
//!   planted before sign-in is worth nothing after it (session fixation).
//! - The session cookie is `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's
//!   page sends it), `Path=/`, with the session's lifetime, and `Secure` when the portal is
//!   reached over TLS (`portal.secure_cookies`).
//! - Every form carries a token derived from a secret the browser holds in a cookie: the session
//!   token once signed in, else a form cookie set by the sign-in and sign-up pages. Another site
//!   can make a browser post a form but cannot read either cookie, so it cannot write the token.
//!   The token is a hash of the secret, so the page never shows the secret itself.
//! - `/account/v1` takes the session only as `Authorization: Bearer`, never from a cookie, so a
//!   cross-site request cannot act through it and its calls need no form token.

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use onionpost_runtime::time::now_ms;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::PortalState;
use crate::error::PortalError;
use crate::store::SessionRecord;

/// The cookie that holds a browser's session token.
pub const SESSION_COOKIE: &str = "onionpost_session";
/// The cookie that holds the secret behind the sign-in and sign-up forms' tokens.
pub const FORM_COOKIE: &str = "onionpost_form";
/// How long a form cookie lasts: enough to fill a form in.
const FORM_COOKIE_SECS: i64 = 3600;

/// A session just made: the token to hand over once.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub token: String,
    pub account_id: String,
    pub expires_at_ms: i64,
}

/// A live session, found from the token a request carried.
#[derive(Debug, Clone)]
pub struct Session {
    pub account_id: String,
    /// The store's key for it.
    pub session_hash: String,
    pub expires_at_ms: i64,
    /// The token itself, kept only to derive the form token.
    token: String,
}

impl Session {
    /// The token every form of a signed-in page carries.
    pub fn form_token(&self) -> String {
        form_token(&self.token)
    }

    /// Whether a posted form carries this session's form token.
    pub fn form_token_is(&self, given: &str) -> bool {
        form_token_matches(&self.token, given)
    }
}

/// 256 random bits, as 64 hex characters.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// How the store knows a token.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The form token for a secret held in a cookie.
pub fn form_token(secret: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"onionpost portal form token\0");
    hasher.update(secret.as_bytes());
    hex::encode(hasher.finalize())
}

/// Whether a form's token is the one `secret` gives, compared in constant time.
pub fn form_token_matches(secret: &str, given: &str) -> bool {
    let expected = form_token(secret);
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

/// Starts a session for an account that just proved who it is.
pub async fn start(state: &PortalState, account_id: &str) -> Result<NewSession, PortalError> {
    let token = random_token();
    let now = now_ms();
    let lifetime_ms =
        i64::try_from(state.settings.session_lifetime.as_millis()).unwrap_or(i64::MAX / 2);
    let record = SessionRecord {
        session_hash: hash(&token),
        account_id: account_id.to_owned(),
        created_at_ms: now,
        expires_at_ms: now.saturating_add(lifetime_ms),
    };
    state.store.insert_session(&record).await?;
    Ok(NewSession {
        token,
        account_id: record.account_id,
        expires_at_ms: record.expires_at_ms,
    })
}

/// The live session a token names, if any.
pub async fn find(state: &PortalState, token: &str) -> Result<Option<Session>, PortalError> {
    // Tokens are 64 hex characters; anything else names no session and costs no query.
    if token.len() != 64 || !token.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let session_hash = hash(token);
    Ok(state
        .store
        .live_session(&session_hash, now_ms())
        .await?
        .map(|record| Session {
            account_id: record.account_id,
            session_hash,
            expires_at_ms: record.expires_at_ms,
            token: token.to_owned(),
        }))
}

/// Ends a session.
pub async fn end(state: &PortalState, session: &Session) -> Result<(), PortalError> {
    state.store.delete_session(&session.session_hash).await?;
    Ok(())
}

/// A cookie's value from the request's `Cookie` headers (RFC 6265 §5.4).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, `Path=/`, `Secure` over TLS.
fn set_cookie(state: &PortalState, name: &str, value: &str, max_age_secs: i64) -> HeaderValue {
    let secure = if state.settings.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let text = format!(
        "{name}={value}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{secure}"
    );
    // Names are constants and values hex, so the header is always valid.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The cookie that carries a new session to the browser.
pub fn session_cookie(state: &PortalState, session: &NewSession) -> HeaderValue {
    let max_age = (session.expires_at_ms - now_ms()).max(0) / 1000;
    set_cookie(state, SESSION_COOKIE, &session.token, max_age)
}

/// A form cookie for the sign-in and sign-up pages.
pub fn form_cookie(state: &PortalState, secret: &str) -> HeaderValue {
    set_cookie(state, FORM_COOKIE, secret, FORM_COOKIE_SECS)
}

/// Removes a cookie from the browser.
pub fn cleared_cookie(state: &PortalState, name: &str) -> HeaderValue {
    set_cookie(state, name, "", 0)
}

/// The session of a browser, from its cookie; `None` when signed out.
pub struct BrowserSession(pub Option<Session>);

impl FromRequestParts<PortalState> for BrowserSession {
    type Rejection = PortalError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &PortalState,
    ) -> Result<Self, Self::Rejection> {
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Ok(BrowserSession(None));
        };
        Ok(BrowserSession(find(state, token).await?))
    }
}

/// The session of an `/account/v1` call, from `Authorization: Bearer`; refused without one.
pub struct ApiSession(pub Session);

impl FromRequestParts<PortalState> for ApiSession {
    type Rejection = PortalError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &PortalState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or(PortalError::SignedOut)?;
        find(state, token)
            .await?
            .map(ApiSession)
            .ok_or(PortalError::SignedOut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_several_headers_and_pairs() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1; onionpost_form=ff"));
        headers.append(COOKIE, HeaderValue::from_static("onionpost_session=\"ab\""));
        assert_eq!(cookie(&headers, FORM_COOKIE), Some("ff"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("ab"));
        assert_eq!(cookie(&headers, "onionpost"), None);
    }

    #[test]
    fn form_tokens_match_only_their_secret() {
        let secret = random_token();
        let token = form_token(&secret);
        assert!(form_token_matches(&secret, &token));
        assert!(!form_token_matches(&random_token(), &token));
        assert!(!form_token_matches(&secret, ""));
        assert!(
            !form_token_matches(&secret, &secret),
            "the secret is not its own token"
        );
        assert_ne!(
            hash(&secret),
            token,
            "the form token is not the stored hash"
        );
    }

    #[test]
    fn tokens_are_fresh_and_hex() {
        let one = random_token();
        assert_eq!(one.len(), 64);
        assert!(one.bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert_ne!(one, random_token());
    }
}
