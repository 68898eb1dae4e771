//! Mail clients: app passwords (one per device, revocable) and, for a new one, Delta Chat's
//! login QR code per identity. The code of a new app password is on the page that answers its
//! creation and nowhere else, ever.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use maud::{Markup, PreEscaped, html};
use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};
use serde::Deserialize;

use super::{Done, OrPage as _, PageError, Posted, layout, notice_markup, page, signed_in};
use crate::PortalState;
use crate::account::{self, AppPassword};
use crate::session::{BrowserSession, Session};

/// `text` as an inline SVG QR code (inline, so the page's policy needs no `data:` images).
pub(super) fn qr_inline(text: &str) -> Markup {
    match QrCode::with_error_correction_level(text, EcLevel::M) {
        Ok(code) => {
            let document = code
                .render::<svg::Color>()
                .min_dimensions(256, 256)
                .quiet_zone(true)
                .build();
            // The XML declaration has no place inside HTML.
            let element = document
                .find("<svg")
                .map_or(document.as_str(), |start| &document[start..]);
            PreEscaped(element.to_owned())
        }
        Err(error) => {
            tracing::warn!(%error, "no QR code for a delta chat login");
            html! {}
        }
    }
}

fn list_markup(session: &Session, passwords: &[AppPassword], done: Option<&str>) -> Markup {
    layout(
        "Mail clients",
        Some(session),
        html! {
            (notice_markup(done))
            p.muted {
                "Give each mail client or device a password of its own: it logs in with your account's login and that password, and you can revoke it alone."
            }
            @if passwords.is_empty() {
                p { "No app password yet." }
            } @else {
                table {
                    tr { th { "Name" } th { "Created" } th {} }
                    @for password in passwords {
                        tr {
                            td { (password.name) }
                            td { (password.created_at.map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_default()) }
                            td {
                                form.inline method="post" action=(format!("/app-passwords/{}/revoke", password.id)) {
                                    input type="hidden" name="form_token" value=(session.form_token());
                                    button type="submit" { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "A new app password" }
            form method="post" action="/app-passwords" {
                input type="hidden" name="form_token" value=(session.form_token());
                label for="name" { "What it is for (e.g. phone)" }
                input #name type="text" name="name" required;
                div { button type="submit" { "Create" } }
            }
        },
    )
}

pub async fn list_page(
    State(state): State<PortalState>,
    BrowserSession(session): BrowserSession,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    let session = signed_in(session)?;
    let passwords = account::app_passwords(&state, &session.account_id)
        .await
        .or_page(&session, "/account")?;
    Ok(page(
        StatusCode::OK,
        list_markup(&session, &passwords, done.done.as_deref()),
    ))
}

#[derive(Debug, Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    name: String,
}

pub async fn create(
    State(state): State<PortalState>,
    Posted { session, form }: Posted<CreateForm>,
) -> Result<Response, PageError> {
    let created = account::create_app_password(&state, &session.account_id, &form.name)
        .await
        .or_page(&session, "/app-passwords")?;
    let markup = layout(
        "App password created",
        Some(&session),
        html! {
            p.notice role="status" { "Copy it now: it is shown this once and never again." }
            table {
                tr { th { "Name" } td { (created.name) } }
                tr { th { "Password" } td.mono #app-password { (created.password) } }
            }
            @if !created.delta_chat.is_empty() {
                h2 { "Delta Chat" }
                p { "Scan one of these in Delta Chat (add an account from a QR code), then set Delta Chat's proxy to tor's SOCKS port (127.0.0.1:9050, or 9150 with Tor Browser)." }
                @for login in &created.delta_chat {
                    h3.mono { (login.address) }
                    div.dclogin { (qr_inline(&login.dclogin)) }
                    p.mono.dclogin-uri { (login.dclogin) }
                }
            }
            p { a href="/app-passwords" { "Back to mail clients" } }
        },
    );
    Ok(page(StatusCode::CREATED, markup))
}

pub async fn revoke(
    State(state): State<PortalState>,
    Path(id): Path<String>,
    Posted { session, form: _ }: Posted<serde::de::IgnoredAny>,
) -> Result<Redirect, PageError> {
    account::revoke_app_password(&state, &session.account_id, &id)
        .await
        .or_page(&session, "/app-passwords")?;
    Ok(Redirect::to("/app-passwords?done=app-password-revoked"))
}
