//! The account's identities: the list with a form for a new one, and a page per identity with its
//! address, fingerprint, QR code, state and how to point a mail client at its onion.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::{Done, OrPage as _, PageError, layout, notice_markup, page, signed_form, signed_in};
use crate::PortalState;
use crate::account::{self, Identity};
use crate::error::PortalError;
use crate::session::BrowserSession;

fn state_badge(identity: &Identity) -> maud::Markup {
    let class = format!("state-{}", identity.state.as_str());
    html! { span class=(class) { (identity.state.as_str()) } }
}

pub async fn list_page(
    State(state): State<PortalState>,
    BrowserSession(session): BrowserSession,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    let session = signed_in(session)?;
    let identities = account::identities(&state, &session.account_id)
        .await
        .or_page(&session, "/account")?;
    let markup = layout(
        "Your identities",
        Some(&session),
        html! {
            (notice_markup(done.done.as_deref()))
            p.muted {
                "Each identity is an address of its own, on an onion of its own: nobody can tell that two of them belong to one account or share a carrier."
            }
            @if identities.is_empty() {
                p { "No identity yet." }
            } @else {
                table {
                    tr { th { "Address" } th { "State" } }
                    @for identity in &identities {
                        tr {
                            td.mono { a href=(format!("/identities/{}", identity.id)) { (identity.address) } }
                            td { (state_badge(identity)) }
                        }
                    }
                }
            }
            h2 { "A new identity" }
            form method="post" action="/identities" {
                input type="hidden" name="form_token" value=(session.form_token());
                label for="local_part" { "The part before @ (e.g. alice)" }
                input #local_part type="text" name="local_part" autocapitalize="none" spellcheck="false" required;
                label for="display_name" { "Display name (optional; it is written into the key and can identify you)" }
                input #display_name type="text" name="display_name";
                div { button type="submit" { "Create" } }
            }
        },
    );
    Ok(page(StatusCode::OK, markup))
}

#[derive(Debug, Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    local_part: String,
    #[serde(default)]
    display_name: String,
}

pub async fn create(
    State(state): State<PortalState>,
    BrowserSession(session): BrowserSession,
    body: Bytes,
) -> Result<Redirect, PageError> {
    let session = signed_in(session)?;
    let form: CreateForm = signed_form(&session, &body, "/identities")?;
    let identity = account::create_identity(
        &state,
        &session.account_id,
        &form.local_part,
        &form.display_name,
    )
    .await
    .or_page(&session, "/identities")?;
    Ok(Redirect::to(&format!(
        "/identities/{}?done=created",
        identity.id
    )))
}

pub async fn identity_page(
    State(state): State<PortalState>,
    BrowserSession(session): BrowserSession,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    let session = signed_in(session)?;
    let identity = account::identity(&state, &session.account_id, &id)
        .await
        .or_page(&session, "/identities")?;
    let host = identity
        .address
        .rsplit_once('@')
        .map_or(identity.address.as_str(), |(_, host)| host);
    let markup = layout(
        "Identity",
        Some(&session),
        html! {
            (notice_markup(done.done.as_deref()))
            table {
                tr { th { "Address" } td.mono { (identity.address) } }
                @if !identity.display_name.is_empty() {
                    tr { th { "Display name" } td { (identity.display_name) } }
                }
                tr { th { "State" } td { (state_badge(&identity)) } }
                tr { th { "Fingerprint" } td.mono { (identity.fingerprint.as_deref().unwrap_or("—")) } }
            }
            @if let Some(uri) = &identity.openpgp4fpr {
                h2 { "Share it" }
                p { "A correspondent scans this code (or copies the link) to add this identity with its key:" }
                img.qr src=(format!("/identities/{}/qr.svg", identity.id)) alt="QR code of this identity's address and key fingerprint";
                p.mono { (uri) }
            }
            h2 { "Mail client" }
            @if identity.imap_port.is_some() || identity.submission_port.is_some() {
                p { "Point the client at tor's SOCKS proxy (Tor Browser: 127.0.0.1:9150; the tor daemon: 127.0.0.1:9050) and use these, with your account's login and password:" }
                table {
                    @if let Some(port) = identity.imap_port {
                        tr { th { "IMAP" } td.mono { (host) ":" (port) } }
                    }
                    @if let Some(port) = identity.submission_port {
                        tr { th { "SMTP (submission)" } td.mono { (host) ":" (port) } }
                    }
                    tr { th { "Login" } td { "your account's login" } }
                }
            } @else {
                p { "This identity's onion carries mail from other onions and its key; read and send through the carrier's own IMAP and submission addresses." }
            }
            section.danger {
                h2 { "Revoke" }
                p { "Its key is revoked and its onion destroyed: the address stops working for good. Mail already received stays in the account." }
                form method="post" action=(format!("/identities/{}/revoke", identity.id)) {
                    input type="hidden" name="form_token" value=(session.form_token());
                    label { input type="checkbox" name="confirm" value="yes" required; " Revoke " span.mono { (identity.address) } " for good" }
                    div { button type="submit" { "Revoke" } }
                }
            }
        },
    );
    Ok(page(StatusCode::OK, markup))
}

pub async fn qr(
    State(state): State<PortalState>,
    BrowserSession(session): BrowserSession,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let session = signed_in(session)?;
    let svg = account::identity_qr(&state, &session.account_id, &id)
        .await
        .or_page(&session, "/identities")?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

#[derive(Debug, Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    confirm: String,
}

pub async fn revoke(
    State(state): State<PortalState>,
    BrowserSession(session): BrowserSession,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Redirect, PageError> {
    let session = signed_in(session)?;
    let form: RevokeForm = signed_form(&session, &body, "/identities")?;
    if form.confirm != "yes" {
        return Err(PortalError::invalid("confirm", "tick the box to confirm"))
            .or_page(&session, "/identities");
    }
    account::revoke_identity(&state, &session.account_id, &id)
        .await
        .or_page(&session, "/identities")?;
    Ok(Redirect::to("/identities?done=revoked"))
}
