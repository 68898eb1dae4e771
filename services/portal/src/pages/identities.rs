//! The account's identities: the list with a form for a new one, and a page per identity with its
//! address, fingerprint, QR code, state and how to point a mail client at its onion.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use axum::http::HeaderMap;

use super::{
    Done, OrPage as _, PageError, Posted, layout, notice_markup, page, signed_in, signed_upload,
};
use crate::PortalState;
use crate::account::{self, Identity};
use crate::error::PortalError;
use crate::portability::{self, CarryKind, MAX_BUNDLE_BYTES, NewCarryStatement};
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
            h2 { "Bring an identity here" }
            p.muted { "An identity exported from another device or carrier keeps its address and key." }
            form method="post" action="/identities/import" enctype="multipart/form-data" {
                input type="hidden" name="form_token" value=(session.form_token());
                label for="bundle" { "The bundle file" }
                input #bundle type="file" name="bundle" required;
                label for="import_passphrase" { "Its passphrase" }
                input #import_passphrase type="password" name="passphrase" autocomplete="off" required;
                label for="import_name" { "Display name (optional)" }
                input #import_name type="text" name="display_name";
                div { button type="submit" { "Import" } }
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
    Posted { session, form }: Posted<CreateForm>,
) -> Result<Redirect, PageError> {
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
            h2 { "Carriers" }
            p { "Carriers you trust to hold this identity's mail while it is offline. The list is signed with its key and given to correspondents, over its onion and in its mail." }
            form method="post" action=(format!("/identities/{}/carriers", identity.id)) {
                input type="hidden" name="form_token" value=(session.form_token());
                label for="carriers" { "Carrier onions, one per line, most preferred first" }
                textarea #carriers name="carriers" rows="3" cols="60" { (identity.preferred_carriers.join("\n")) }
                div { button type="submit" { "Publish" } }
            }
            p { "Ask a carrier to hold this identity's mail (or to stop): sign a request here and send it to that carrier (its postmaster@ on the onion you give), or hand it over yourself." }
            form method="post" action=(format!("/identities/{}/carry-statement", identity.id)) {
                input type="hidden" name="form_token" value=(session.form_token());
                label for="carrier" { "The carrier's onion" }
                input #carrier type="text" name="carrier" autocapitalize="none" spellcheck="false" required;
                label { input type="radio" name="kind" value="request" checked; " hold my mail" }
                label { input type="radio" name="kind" value="withdraw"; " stop holding it" }
                label { input type="checkbox" name="send" value="yes" checked; " send it to the carrier now" }
                div { button type="submit" { "Sign" } }
            }
            h2 { "Export" }
            p { "A file with this identity's key and onion key, sealed with a passphrase, to move it to another device or carrier. Anyone with the file and the passphrase can be this identity." }
            form method="post" action=(format!("/identities/{}/export", identity.id)) {
                input type="hidden" name="form_token" value=(session.form_token());
                label for="passphrase" { "Passphrase (at least 12 characters)" }
                input #passphrase type="password" name="passphrase" autocomplete="new-password" required;
                div { button type="submit" { "Download the bundle" } }
            }
            h2 { "New key" }
            p { "This identity moves to a new key on the same address. The current key certifies the new one, and everyone this identity wrote with is sent it in mail signed by the current key, so their carriers move to it without asking them. Mail already on its way to the current key still opens." }
            form method="post" action=(format!("/identities/{}/rotate-key", identity.id)) {
                input type="hidden" name="form_token" value=(session.form_token());
                div { button type="submit" { "Move to a new key" } }
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
    Path(id): Path<String>,
    Posted { session, form }: Posted<RevokeForm>,
) -> Result<Redirect, PageError> {
    if form.confirm != "yes" {
        return Err(PortalError::invalid("confirm", "tick the box to confirm"))
            .or_page(&session, "/identities");
    }
    account::revoke_identity(&state, &session.account_id, &id)
        .await
        .or_page(&session, "/identities")?;
    Ok(Redirect::to("/identities?done=revoked"))
}

pub async fn rotate_key(
    State(state): State<PortalState>,
    Path(id): Path<String>,
    Posted { session, form: _ }: Posted<serde::de::IgnoredAny>,
) -> Result<Redirect, PageError> {
    let rotated = account::rotate_key(&state, &session.account_id, &id)
        .await
        .or_page(&session, "/identities")?;
    Ok(Redirect::to(&format!(
        "/identities/{}?done=new-key",
        rotated.identity_id
    )))
}

#[derive(Debug, Deserialize)]
pub struct CarriersForm {
    #[serde(default)]
    carriers: String,
}

pub async fn set_carriers(
    State(state): State<PortalState>,
    Path(id): Path<String>,
    Posted { session, form }: Posted<CarriersForm>,
) -> Result<Redirect, PageError> {
    let carriers: Vec<String> = form
        .carriers
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let identity = portability::set_preferred_carriers(&state, &session.account_id, &id, &carriers)
        .await
        .or_page(&session, "/identities")?;
    Ok(Redirect::to(&format!(
        "/identities/{}?done=carriers",
        identity.id
    )))
}

#[derive(Debug, Deserialize)]
pub struct CarryForm {
    #[serde(default)]
    carrier: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    send: String,
}

pub async fn carry_statement(
    State(state): State<PortalState>,
    Path(id): Path<String>,
    Posted { session, form }: Posted<CarryForm>,
) -> Result<Response, PageError> {
    let kind = match form.kind.as_str() {
        "withdraw" => CarryKind::Withdraw,
        _ => CarryKind::Request,
    };
    let signed = portability::sign_carry_statement(
        &state,
        &session.account_id,
        &id,
        NewCarryStatement {
            carrier: form.carrier,
            kind,
            expires_at: None,
            send: form.send == "yes",
        },
    )
    .await
    .or_page(&session, "/identities")?;
    let markup = layout(
        "Carry statement",
        Some(&session),
        html! {
            @if let Some(to) = &signed.sent_to {
                p { "Signed and sent to " span.mono { (to) } ". The carrier checks the signature against the key this identity's onion serves and answers by its own policy; a refusal comes back to your INBOX." }
            } @else {
                p { "Signed. Hand this to the carrier's operator; it checks the signature against the key this identity's onion serves." }
            }
            pre.mono #carry-statement { (signed.statement) }
            p { a href=(format!("/identities/{id}")) { "Back to the identity" } }
        },
    );
    Ok(page(StatusCode::CREATED, markup))
}

#[derive(Debug, Deserialize)]
pub struct ExportForm {
    #[serde(default)]
    passphrase: String,
}

pub async fn export(
    State(state): State<PortalState>,
    Path(id): Path<String>,
    Posted { session, form }: Posted<ExportForm>,
) -> Result<Response, PageError> {
    let bundle = portability::export_identity(&state, &session.account_id, &id, &form.passphrase)
        .await
        .or_page(&session, "/identities")?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"identity.onionpost-bundle\"",
            ),
        ],
        bundle,
    )
        .into_response())
}

pub async fn import(
    State(state): State<PortalState>,
    BrowserSession(session): BrowserSession,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Redirect, PageError> {
    let session = signed_in(session)?;
    let upload = signed_upload(&session, &headers, body, "/identities").await?;
    let bundle = upload
        .file("bundle", MAX_BUNDLE_BYTES)
        .or_page(&session, "/identities")?;
    let identity = portability::import_identity(
        &state,
        &session.account_id,
        bundle,
        &upload.text("passphrase").unwrap_or_default(),
        &upload.text("display_name").unwrap_or_default(),
    )
    .await
    .or_page(&session, "/identities")?;
    Ok(Redirect::to(&format!(
        "/identities/{}?done=imported",
        identity.id
    )))
}
