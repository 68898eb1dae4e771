//! Signing in, signing up and signing out.
//!
//! The sign-in and sign-up forms are guarded by a form cookie (see `session`), since there is no
//! session yet. A failed sign-in shows the same page, byte for byte, whether the login exists or
//! not: the words are the same and the form token comes from the browser's own cookie.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use onionpost_runtime::config::SignupPolicy;
use serde::Deserialize;

use super::{PageError, Posted, layout, page};
use crate::PortalState;
use crate::account;
use crate::error::PortalError;
use crate::session::{self, BrowserSession, FORM_COOKIE, SESSION_COOKIE};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInForm {
    #[serde(default)]
    login: String,
    #[serde(default)]
    password: String,
    /// The authenticator app's code, when two-factor sign-in is on.
    #[serde(default)]
    totp: String,
    #[serde(default)]
    form_token: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignUpForm {
    #[serde(default)]
    login: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_again: String,
    #[serde(default)]
    voucher: String,
    #[serde(default)]
    form_token: String,
}

/// Sign-out posts nothing but its form token.
#[derive(Debug, Deserialize)]
pub struct SignOutForm {}

/// The form cookie behind the sign-in and sign-up forms: the browser's secret, and the
/// `Set-Cookie` to send when the secret is new.
struct FormCookie {
    secret: String,
    new: Option<HeaderValue>,
}

impl FormCookie {
    fn of(state: &PortalState, headers: &HeaderMap) -> Self {
        match session::cookie(headers, FORM_COOKIE)
            .filter(|value| value.len() == 64 && value.bytes().all(|byte| byte.is_ascii_hexdigit()))
        {
            Some(secret) => FormCookie {
                secret: secret.to_owned(),
                new: None,
            },
            None => {
                let secret = session::random_token();
                let new = Some(session::form_cookie(state, &secret));
                FormCookie { secret, new }
            }
        }
    }

    /// The token this browser's forms carry.
    fn token(&self) -> String {
        session::form_token(&self.secret)
    }

    /// Whether a posted form carries this browser's token. Never with a secret just made: the
    /// browser then posted a form this portal did not give it.
    fn accepts(&self, given: &str) -> bool {
        self.new.is_none() && session::form_token_matches(&self.secret, given)
    }

    /// A page, with the cookie when it is new.
    fn page(&self, status: StatusCode, markup: Markup) -> Response {
        let mut response = page(status, markup);
        if let Some(value) = &self.new {
            response.headers_mut().append(SET_COOKIE, value.clone());
        }
        response
    }
}

fn sign_in_markup(form_token: &str, login: &str, error: Option<&PortalError>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            @if let Some(error) = error {
                p.error role="alert" { (error.to_string()) }
            }
            form method="post" action="/sign-in" {
                input type="hidden" name="form_token" value=(form_token);
                label for="login" { "Login" }
                input #login type="text" name="login" value=(login) autocomplete="username"
                    autocapitalize="none" spellcheck="false" required;
                label for="password" { "Password" }
                input #password type="password" name="password" autocomplete="current-password" required;
                label for="totp" { "Code from your authenticator app (only if two-factor sign-in is on)" }
                input #totp type="text" name="totp" inputmode="numeric" autocomplete="one-time-code";
                div { button type="submit" { "Sign in" } }
            }
            p.muted { "No account yet? " a href="/sign-up" { "Sign up" } "." }
        },
    )
}

pub async fn sign_in_page(
    State(state): State<PortalState>,
    BrowserSession(session): BrowserSession,
    headers: HeaderMap,
) -> Response {
    if session.is_some() {
        return Redirect::to("/account").into_response();
    }
    let cookie = FormCookie::of(&state, &headers);
    cookie.page(StatusCode::OK, sign_in_markup(&cookie.token(), "", None))
}

pub async fn sign_in(
    State(state): State<PortalState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let cookie = FormCookie::of(&state, &headers);
    let token = cookie.token();
    let refuse = |login: &str, error: PortalError| {
        cookie.page(error.status(), sign_in_markup(&token, login, Some(&error)))
    };
    let form: SignInForm = match onionpost_runtime::http_api::form(&body, "form") {
        Ok(form) => form,
        Err(error) => return refuse("", error.into()),
    };
    if !cookie.accepts(&form.form_token) {
        return refuse(&form.login, PortalError::BadFormToken);
    }
    match account::sign_in(&state, &form.login, &form.password, &form.totp).await {
        Ok(new) => signed_in_response(&state, &new, "/account"),
        Err(error) => refuse(&form.login, error),
    }
}

/// The redirect after signing in or up: the new session's cookie, the form cookie gone.
fn signed_in_response(state: &PortalState, new: &session::NewSession, to: &str) -> Response {
    let mut response = Redirect::to(to).into_response();
    let headers = response.headers_mut();
    headers.append(SET_COOKIE, session::session_cookie(state, new));
    headers.append(SET_COOKIE, session::cleared_cookie(state, FORM_COOKIE));
    response
}

fn sign_up_markup(
    state: &PortalState,
    form_token: &str,
    login: &str,
    error: Option<&PortalError>,
) -> Markup {
    let policy = state.settings.signup;
    layout(
        "Sign up",
        None,
        html! {
            @if let Some(error) = error {
                p.error role="alert" { (error.to_string()) }
            }
            @if policy == SignupPolicy::Closed {
                p { "Sign-up is closed on this carrier: its operator makes accounts. Ask them for one." }
            } @else {
                p.muted {
                    "Nothing is asked but a login and a password"
                    @if policy == SignupPolicy::Voucher { " and your voucher code" }
                    ". Keep the password safe: nobody can recover it for you."
                }
                form method="post" action="/sign-up" {
                    input type="hidden" name="form_token" value=(form_token);
                    label for="login" { "Login (letters, digits, . _ -)" }
                    input #login type="text" name="login" value=(login) autocomplete="username"
                        autocapitalize="none" spellcheck="false" required;
                    label for="password" { "Password (at least 12 characters)" }
                    input #password type="password" name="password" autocomplete="new-password" required;
                    label for="password_again" { "The same password again" }
                    input #password_again type="password" name="password_again" autocomplete="new-password" required;
                    label for="voucher" {
                        "Voucher code"
                        @if policy == SignupPolicy::Open { " (optional)" }
                    }
                    @if policy == SignupPolicy::Voucher {
                        input #voucher type="text" name="voucher" autocomplete="off" spellcheck="false" required;
                    } @else {
                        input #voucher type="text" name="voucher" autocomplete="off" spellcheck="false";
                    }
                    div { button type="submit" { "Create the account" } }
                }
            }
            p.muted { "Have an account? " a href="/sign-in" { "Sign in" } "." }
        },
    )
}

pub async fn sign_up_page(
    State(state): State<PortalState>,
    BrowserSession(session): BrowserSession,
    headers: HeaderMap,
) -> Response {
    if session.is_some() {
        return Redirect::to("/account").into_response();
    }
    let cookie = FormCookie::of(&state, &headers);
    let status = if state.settings.signup == SignupPolicy::Closed {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::OK
    };
    cookie.page(status, sign_up_markup(&state, &cookie.token(), "", None))
}

pub async fn sign_up(
    State(state): State<PortalState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let cookie = FormCookie::of(&state, &headers);
    let token = cookie.token();
    let refuse = |login: &str, error: PortalError| {
        cookie.page(
            error.status(),
            sign_up_markup(&state, &token, login, Some(&error)),
        )
    };
    let form: SignUpForm = match onionpost_runtime::http_api::form(&body, "form") {
        Ok(form) => form,
        Err(error) => return refuse("", error.into()),
    };
    if !cookie.accepts(&form.form_token) {
        return refuse(&form.login, PortalError::BadFormToken);
    }
    if form.password != form.password_again {
        return refuse(
            &form.login,
            PortalError::invalid("password_again", "the two passwords differ"),
        );
    }
    match account::sign_up(&state, &form.login, &form.password, &form.voucher).await {
        Ok(new) => signed_in_response(&state, &new, "/account?done=signed-up"),
        Err(error) => refuse(&form.login, error),
    }
}

pub async fn sign_out(
    State(state): State<PortalState>,
    Posted { session, form: _ }: Posted<SignOutForm>,
) -> Result<Response, PageError> {
    session::end(&state, &session)
        .await
        .map_err(|error| PageError {
            error,
            session: Some(Box::new(session.clone())),
            back: "/account",
        })?;
    let mut response = Redirect::to("/sign-in").into_response();
    response
        .headers_mut()
        .append(SET_COOKIE, session::cleared_cookie(&state, SESSION_COOKIE));
    Ok(response)
}
