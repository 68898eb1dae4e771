//! The account page: plan, state, paid time, storage; redeeming a voucher; changing the password;
//! deleting the account.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::header::SET_COOKIE;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use maud::html;
use serde::Deserialize;

use super::{Done, OrPage as _, PageError, Posted, bytes, layout, notice_markup, page, signed_in};
use crate::PortalState;
use crate::account::{self, AccountState};
use crate::error::PortalError;
use crate::second_factor;
use crate::session::{self, BrowserSession, SESSION_COOKIE};

fn day(time: Option<DateTime<Utc>>) -> String {
    time.map_or_else(
        || "—".to_owned(),
        |time| time.format("%Y-%m-%d").to_string(),
    )
}

pub async fn account_page(
    State(state): State<PortalState>,
    BrowserSession(session): BrowserSession,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    let session = signed_in(session)?;
    let account = account::account(&state, &session.account_id)
        .await
        .or_page(&session, "/account")?;
    let second_factor = second_factor::status(&state, &session.account_id)
        .await
        .or_page(&session, "/account")?;
    let token = session.form_token();
    let state_words = match account.state {
        AccountState::Active => "active",
        AccountState::Grace => "in its grace period: new mail waits until a voucher is redeemed",
        AccountState::Expired => "expired: new mail is refused until a voucher is redeemed",
        AccountState::Suspended => "suspended by the operator",
    };
    let markup = layout(
        "Your account",
        Some(&session),
        html! {
            (notice_markup(done.done.as_deref()))
            table {
                tr { th { "Login" } td.mono { (account.login) } }
                tr { th { "Plan" } td { (account.plan) } }
                tr { th { "State" } td { (state_words) } }
                tr { th { "Paid until" } td { (day(account.paid_until)) } }
                tr { th { "Storage" } td { (bytes(account.used_bytes)) " of " (bytes(account.quota_bytes)) } }
                tr { th { "Identities" } td { (account.identities) " of " (account.identities_allowed) " — " a href="/identities" { "manage" } } }
                tr { th { "Clearnet gateway" } td { @if account.gateway_allowed { "included — " a href="/aliases" { "aliases" } } @else { "not in this plan" } } }
            }

            h2 { "Redeem a voucher" }
            form method="post" action="/account/voucher" {
                input type="hidden" name="form_token" value=(token);
                label for="code" { "Voucher code" }
                input #code type="text" name="code" autocomplete="off" spellcheck="false" required;
                div { button type="submit" { "Redeem" } }
            }

            h2 { "Two-factor sign-in" }
            @if second_factor.enabled {
                p { "On: signing in asks for a code from your authenticator app." }
                form method="post" action="/account/second-factor/off" {
                    input type="hidden" name="form_token" value=(token);
                    label for="off_password" { "Password" }
                    input #off_password type="password" name="password" autocomplete="current-password" required;
                    label for="off_totp" { "Current code" }
                    input #off_totp type="text" name="totp" inputmode="numeric" autocomplete="one-time-code" required;
                    div { button type="submit" { "Turn it off" } }
                }
            } @else {
                p { "Off. With it on, signing in also asks for a code from an authenticator app (any app for TOTP codes)." }
                form method="post" action="/account/second-factor" {
                    input type="hidden" name="form_token" value=(token);
                    div { button type="submit" { "Turn it on" } }
                }
            }

            h2 { "Change the password" }
            form method="post" action="/account/password" {
                input type="hidden" name="form_token" value=(token);
                label for="current_password" { "Current password" }
                input #current_password type="password" name="current_password" autocomplete="current-password" required;
                label for="new_password" { "New password (at least 12 characters)" }
                input #new_password type="password" name="new_password" autocomplete="new-password" required;
                div { button type="submit" { "Change" } }
            }

            section.danger {
                h2 { "Delete the account" }
                p { "Every identity is revoked (its onion and key destroyed), then every message and the account itself. There is no undo." }
                form method="post" action="/account/delete" {
                    input type="hidden" name="form_token" value=(token);
                    label for="delete_password" { "Password" }
                    input #delete_password type="password" name="password" autocomplete="current-password" required;
                    label { input type="checkbox" name="confirm" value="yes" required; " I want this account and its mail destroyed" }
                    div { button type="submit" { "Delete the account" } }
                }
            }
        },
    );
    Ok(page(StatusCode::OK, markup))
}

#[derive(Debug, Deserialize)]
pub struct RedeemForm {
    #[serde(default)]
    code: String,
}

pub async fn redeem(
    State(state): State<PortalState>,
    Posted { session, form }: Posted<RedeemForm>,
) -> Result<Redirect, PageError> {
    account::redeem(&state, &session.account_id, &form.code)
        .await
        .or_page(&session, "/account")?;
    Ok(Redirect::to("/account?done=voucher"))
}

#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
}

pub async fn change_password(
    State(state): State<PortalState>,
    Posted { session, form }: Posted<PasswordForm>,
) -> Result<Redirect, PageError> {
    account::change_password(&state, &session, &form.current_password, &form.new_password)
        .await
        .or_page(&session, "/account")?;
    Ok(Redirect::to("/account?done=password"))
}

#[derive(Debug, Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

pub async fn delete(
    State(state): State<PortalState>,
    Posted { session, form }: Posted<DeleteForm>,
) -> Result<Response, PageError> {
    if form.confirm != "yes" {
        return Err(PortalError::invalid("confirm", "tick the box to confirm"))
            .or_page(&session, "/account");
    }
    account::delete_account(&state, &session.account_id, &form.password)
        .await
        .or_page(&session, "/account")?;
    let mut response = page(
        StatusCode::OK,
        layout(
            "Account deleted",
            None,
            html! {
                p.notice role="status" { "The account, its identities, keys and mail are gone." }
            },
        ),
    );
    response
        .headers_mut()
        .append(SET_COOKIE, session::cleared_cookie(&state, SESSION_COOKIE));
    Ok(response.into_response())
}

pub async fn begin_second_factor(
    State(state): State<PortalState>,
    Posted { session, form: _ }: Posted<serde::de::IgnoredAny>,
) -> Result<Response, PageError> {
    let login = account::account_record(&state, &session.account_id)
        .await
        .or_page(&session, "/account")?
        .login;
    let enrolment = second_factor::begin(&state, &session.account_id, &login)
        .await
        .or_page(&session, "/account")?;
    let markup = layout(
        "Two-factor sign-in",
        Some(&session),
        html! {
            p { "Scan this code with your authenticator app, or type the secret into it, then enter the code the app shows. Until you do, sign-in asks for no code." }
            div.dclogin.totp { (super::app_passwords::qr_inline(&enrolment.otpauth_uri)) }
            p { "Secret: " span.mono #totp-secret { (enrolment.secret) } }
            form method="post" action="/account/second-factor/confirm" {
                input type="hidden" name="form_token" value=(session.form_token());
                label for="totp" { "The app's current code" }
                input #totp type="text" name="totp" inputmode="numeric" autocomplete="one-time-code" required;
                div { button type="submit" { "Turn it on" } }
            }
        },
    );
    Ok(page(StatusCode::CREATED, markup))
}

#[derive(Debug, Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    totp: String,
    #[serde(default)]
    password: String,
}

pub async fn confirm_second_factor(
    State(state): State<PortalState>,
    Posted { session, form }: Posted<CodeForm>,
) -> Result<Redirect, PageError> {
    second_factor::confirm(&state, &session.account_id, &form.totp)
        .await
        .or_page(&session, "/account")?;
    Ok(Redirect::to("/account?done=totp-on"))
}

pub async fn disable_second_factor(
    State(state): State<PortalState>,
    Posted { session, form }: Posted<CodeForm>,
) -> Result<Redirect, PageError> {
    account::verify_own_password(&state, &session.account_id, "password", &form.password)
        .await
        .or_page(&session, "/account")?;
    second_factor::disable(&state, &session.account_id, &form.totp)
        .await
        .or_page(&session, "/account")?;
    Ok(Redirect::to("/account?done=totp-off"))
}
