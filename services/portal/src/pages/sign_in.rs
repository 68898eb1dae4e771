//! Signing in, signing up and signing out.
//!
//! The sign-in and sign-up forms are guarded by a form cookie (see `session`), since there is no
//! session yet. A failed sign-in shows the same page, byte for byte, whether the login exists or
//! not: the words are the same and the form token comes from the browser's own cookie.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use onionpost_runtime::config::SignupPolicy;
use serde::Deserialize;

use super::{PageError, layout, page, signed_form, signed_in};
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

/// The browser's form secret, and the `Set-Cookie` to send when it is new.
fn form_secret(state: &PortalState, headers: &HeaderMap) -> (String, Option<Response>) {
    match session::cookie(headers, FORM_COOKIE)
        .filter(|value| value.len() == 64 && value.bytes().all(|byte| byte.is_ascii_hexdigit()))
    {
        Some(secret) => (secret.to_owned(), None),
        None => {
            let secret = session::random_token();
            let set = [(SET_COOKIE, session::form_cookie(state, &secret))].into_response();
            (secret, Some(set))
        }
    }
}

/// A page with the form cookie set when it was new.
fn with_form_cookie(set: Option<Response>, status: StatusCode, markup: Markup) -> Response {
    let mut response = page(status, markup);
    if let Some(set) = set
        && let Some(value) = set.headers().get(SET_COOKIE)
    {
        response.headers_mut().append(SET_COOKIE, value.clone());
    }
    response
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
    let (secret, set) = form_secret(&state, &headers);
    with_form_cookie(
        set,
        StatusCode::OK,
        sign_in_markup(&session::form_token(&secret), "", None),
    )
}

pub async fn sign_in(
    State(state): State<PortalState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (secret, set) = form_secret(&state, &headers);
    let token = session::form_token(&secret);
    let form: SignInForm = match onionpost_runtime::http_api::form(&body, "form") {
        Ok(form) => form,
        Err(error) => {
            let error = PortalError::from(error);
            return with_form_cookie(
                set,
                error.status(),
                sign_in_markup(&token, "", Some(&error)),
            );
        }
    };
    // A new form cookie means the browser posted a form this portal did not give it.
    if set.is_some() || !session::form_token_matches(&secret, &form.form_token) {
        let error = PortalError::BadFormToken;
        return with_form_cookie(
            set,
            error.status(),
            sign_in_markup(&token, &form.login, Some(&error)),
        );
    }
    match account::sign_in(&state, &form.login, &form.password).await {
        Ok(new) => signed_in_response(&state, &new, "/account"),
        Err(error) => page(
            error.status(),
            sign_in_markup(&token, &form.login, Some(&error)),
        ),
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
    let (secret, set) = form_secret(&state, &headers);
    let status = if state.settings.signup == SignupPolicy::Closed {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::OK
    };
    with_form_cookie(
        set,
        status,
        sign_up_markup(&state, &session::form_token(&secret), "", None),
    )
}

pub async fn sign_up(
    State(state): State<PortalState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (secret, set) = form_secret(&state, &headers);
    let token = session::form_token(&secret);
    let refuse = |set: Option<Response>, login: &str, error: PortalError| {
        with_form_cookie(
            set,
            error.status(),
            sign_up_markup(&state, &token, login, Some(&error)),
        )
    };
    let form: SignUpForm = match onionpost_runtime::http_api::form(&body, "form") {
        Ok(form) => form,
        Err(error) => return refuse(set, "", error.into()),
    };
    if set.is_some() || !session::form_token_matches(&secret, &form.form_token) {
        return refuse(set, &form.login, PortalError::BadFormToken);
    }
    if form.password != form.password_again {
        return refuse(
            None,
            &form.login,
            PortalError::invalid("password_again", "the two passwords differ"),
        );
    }
    match account::sign_up(&state, &form.login, &form.password, &form.voucher).await {
        Ok(new) => signed_in_response(&state, &new, "/account?done=signed-up"),
        Err(error) => refuse(None, &form.login, error),
    }
}

pub async fn sign_out(
    State(state): State<PortalState>,
    BrowserSession(session): BrowserSession,
    body: Bytes,
) -> Result<Response, PageError> {
    let session = signed_in(session)?;
    let _form: SignOutForm = signed_form(&session, &body, "/account")?;
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
