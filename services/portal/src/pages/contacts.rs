//! The address book: the list with a search, forms to add a contact (by address or scanned
//! `openpgp4fpr:` link, or by uploading a contact card), and a page per contact with its key,
//! where it came from, who introduced it, the carriers trusted with its mail, and a held key
//! change to accept or refuse.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Redirect, Response};
use chrono::{DateTime, Utc};
use maud::html;
use onionpost_runtime::address_book::{Contact, ContactRequestAnswer};
use serde::Deserialize;

use super::{
    Done, OrPage as _, PageError, Posted, layout, notice_markup, page, signed_in, signed_upload,
};
use crate::PortalState;
use crate::address_book::{
    self, ContactChange, Introduce, KeyChangeDecision, MAX_CARD_BYTES, NewContact,
};
use crate::error::PortalError;
use crate::session::BrowserSession;

fn when(time: Option<DateTime<Utc>>) -> String {
    time.map_or_else(
        || "—".to_owned(),
        |time| time.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    held: Option<String>,
    #[serde(default)]
    page_token: Option<String>,
    #[serde(default)]
    done: Option<String>,
}

pub async fn list_page(
    State(state): State<PortalState>,
    BrowserSession(session): BrowserSession,
    Query(query): Query<ListQuery>,
) -> Result<Response, PageError> {
    let session = signed_in(session)?;
    let search = query.q.clone().unwrap_or_default();
    let held_only = query.held.as_deref() == Some("yes");
    let contacts = address_book::contacts(
        &state,
        &session.account_id,
        &search,
        held_only,
        query.page_token.as_deref().unwrap_or(""),
    )
    .await
    .or_page(&session, "/contacts")?;
    let policy = address_book::policy(&state, &session.account_id)
        .await
        .or_page(&session, "/contacts")?;
    let token = session.form_token();
    let markup = layout(
        "Contacts",
        Some(&session),
        html! {
            (notice_markup(query.done.as_deref()))
            p.muted { "Your address book, shared by all your identities. A contact's key is pinned the first time it is seen; a different key later waits here for your decision." }
            form method="get" action="/contacts" {
                label for="q" { "Search" }
                input #q type="text" name="q" value=(search);
                label { input type="checkbox" name="held" value="yes" checked[held_only]; " only key changes waiting for you" }
                div { button type="submit" { "Search" } }
            }
            @if contacts.contacts.is_empty() {
                p { @if search.is_empty() && !held_only { "No contact yet." } @else { "No contact matches." } }
            } @else {
                table {
                    tr { th { "Address" } th { "Name" } th { "Key" } }
                    @for contact in &contacts.contacts {
                        tr {
                            td.mono { a href=(format!("/contacts/{}", contact.id)) { (contact.address) } }
                            td { (contact.display_name) }
                            td {
                                @if contact.held_key_change.is_some() { span.state-publishing { "key change waiting" } }
                                @if !contact.requested_identities.is_empty() { span.state-publishing { "asks to write to you" } }
                                @else if contact.revoked_at.is_some() { span.state-failed { "revoked" } }
                                @else if contact.verified { "verified" }
                                @else { (contact.key_source.describe()) }
                            }
                        }
                    }
                }
                @if let Some(next) = &contacts.next_page_token {
                    p { a href=(format!("/contacts?q={}&held={}&page_token={}", url(&search), if held_only { "yes" } else { "" }, url(next))) { "More" } }
                }
            }
            h2 { "Introductions" }
            p.muted { "A contact can introduce someone to you in mail. Add them at once, or let each one wait here as a key change for you to accept." }
            form method="post" action="/contacts-policy" {
                input type="hidden" name="form_token" value=(token);
                label { input type="checkbox" name="confirm_introductions" value="yes" checked[policy.confirm_introductions]; " let introduced contacts wait for me" }
                div { button type="submit" { "Save" } }
            }
            h2 { "Add a contact" }
            form method="post" action="/contacts" {
                input type="hidden" name="form_token" value=(token);
                label for="contact" { "Address (name@….onion) or a scanned openpgp4fpr: link" }
                input #contact type="text" name="contact" autocapitalize="none" spellcheck="false" required;
                label for="display_name" { "Name (optional, for you only)" }
                input #display_name type="text" name="display_name";
                div { button type="submit" { "Add" } }
            }
            p.muted { "With an address, the key is fetched over the contact's own onion; with an openpgp4fpr: link, it must also carry the fingerprint you were shown." }
            h2 { "Add from a contact card" }
            form method="post" action="/contacts/card" enctype="multipart/form-data" {
                input type="hidden" name="form_token" value=(token);
                label for="card" { "A .vcf file (vCard 4.0 with EMAIL and KEY)" }
                input #card type="file" name="card" accept=".vcf,text/vcard" required;
                label for="card_name" { "Name (optional)" }
                input #card_name type="text" name="display_name";
                div { button type="submit" { "Add from card" } }
            }
        },
    );
    Ok(page(StatusCode::OK, markup))
}

fn url(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[derive(Debug, Deserialize)]
pub struct AddForm {
    #[serde(default)]
    contact: String,
    #[serde(default)]
    display_name: String,
}

pub async fn add(
    State(state): State<PortalState>,
    Posted { session, form }: Posted<AddForm>,
) -> Result<Redirect, PageError> {
    let given = form.contact.trim();
    let scanned = given.len() > 12 && given[..12].eq_ignore_ascii_case("openpgp4fpr:");
    let new = NewContact {
        address: (!scanned).then(|| given.to_owned()),
        openpgp4fpr: scanned.then(|| given.to_owned()),
        vcard: None,
        display_name: Some(form.display_name),
    };
    let added = address_book::add_contact(&state, &session.account_id, new)
        .await
        .or_page(&session, "/contacts")?;
    Ok(Redirect::to(&format!(
        "/contacts/{}?done=contact-added",
        added.id
    )))
}

pub async fn add_card(
    State(state): State<PortalState>,
    BrowserSession(session): BrowserSession,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Redirect, PageError> {
    let session = signed_in(session)?;
    let upload = signed_upload(&session, &headers, body, "/contacts").await?;
    let card = upload
        .file("card", MAX_CARD_BYTES)
        .and_then(|bytes| {
            String::from_utf8(bytes)
                .map_err(|_| PortalError::invalid("card", "is not a text file (UTF-8)"))
        })
        .or_page(&session, "/contacts")?;
    let new = NewContact {
        vcard: Some(card),
        display_name: upload.text("display_name"),
        ..NewContact::default()
    };
    let added = address_book::add_contact(&state, &session.account_id, new)
        .await
        .map_err(|error| match error {
            PortalError::Invalid { detail, .. } => PortalError::invalid("card", detail),
            other => other,
        })
        .or_page(&session, "/contacts")?;
    Ok(Redirect::to(&format!(
        "/contacts/{}?done=contact-added",
        added.id
    )))
}

fn contact_table(contact: &Contact) -> maud::Markup {
    html! {
        table {
            tr { th { "Address" } td.mono { (contact.address) } }
            tr { th { "Fingerprint" } td.mono { (contact.fingerprint.as_deref().unwrap_or("— (no key yet)")) } }
            tr { th { "Key" } td { (contact.key_source.describe()) @if contact.verified { ", verified" } } }
            @if let Some(revoked) = contact.revoked_at {
                tr { th { "Revoked" } td { span.state-failed { (when(Some(revoked))) } ": mail to it is refused" } }
            }
            tr { th { "Introduced by" } td {
                @if contact.introducers.is_empty() { "nobody" }
                @for introducer in &contact.introducers {
                    div.mono { (introducer.address) span.muted { " (" (when(introducer.introduced_at)) ")" } }
                }
            } }
            tr { th { "Its own preferred carriers" } td {
                @if contact.preferred_carriers.is_empty() { "none published" }
                @for carrier in &contact.preferred_carriers { div.mono { (carrier) } }
            } }
            tr { th { "First seen" } td { (when(contact.first_seen_at)) } }
            tr { th { "Last seen" } td { (when(contact.last_seen_at)) } }
        }
    }
}

pub async fn contact_page(
    State(state): State<PortalState>,
    BrowserSession(session): BrowserSession,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    let session = signed_in(session)?;
    let contact = address_book::contact(&state, &session.account_id, &id)
        .await
        .or_page(&session, "/contacts")?;
    // Whom this contact can be introduced to, and from which identity.
    let others: Vec<Contact> = address_book::contacts(&state, &session.account_id, "", false, "")
        .await
        .or_page(&session, "/contacts")?
        .contacts
        .into_iter()
        .filter(|other| other.id != contact.id && other.revoked_at.is_none())
        .collect();
    let identities = crate::account::identities(&state, &session.account_id)
        .await
        .or_page(&session, "/contacts")?;
    let token = session.form_token();
    let action = |tail: &str| format!("/contacts/{}{tail}", contact.id);
    let markup = layout(
        "Contact",
        Some(&session),
        html! {
            (notice_markup(done.done.as_deref()))
            (contact_table(&contact))
            @if !contact.requested_identities.is_empty() {
                section #contact-request {
                    h2 { "Asks to write to you" }
                    p { "This sender wrote to you without being a contact; its signed messages wait in your Requests mailbox. Accept it and they move to your INBOX; refuse it and its mail is refused from now on (its messages go to Trash). Replying to it accepts it too." }
                    form.inline method="post" action=(action("/request")) {
                        input type="hidden" name="form_token" value=(token);
                        button type="submit" name="decision" value="accept" { "Accept" }
                        " "
                        button type="submit" name="decision" value="refuse" { "Refuse" }
                    }
                }
            }
            @if let Some(held) = &contact.held_key_change {
                section.danger #key-change {
                    h2 { "A different key arrived" }
                    p { "A key not signed by the pinned one was " (held.source.describe()) " on " (when(held.seen_at)) ". Accept it only if you know the contact changed keys (ask them another way)." }
                    p { "New fingerprint: " span.mono #held-fingerprint { (held.fingerprint) } }
                    form.inline method="post" action=(action("/key-change")) {
                        input type="hidden" name="form_token" value=(token);
                        input type="hidden" name="fingerprint" value=(held.fingerprint);
                        button type="submit" name="decision" value="accept" { "Accept the new key" }
                        " "
                        button type="submit" name="decision" value="refuse" { "Refuse it, keep the old one" }
                    }
                }
            }
            @if !others.is_empty() && !identities.is_empty() && contact.fingerprint.is_some() {
                h2 { "Introduce" }
                p { "Send this contact, with its key signed by one of your identities, to another contact: their carrier adds it to their address book as introduced by you." }
                form method="post" action=(action("/introduce")) {
                    input type="hidden" name="form_token" value=(token);
                    label for="to" { "To" }
                    select #to name="to" {
                        @for other in &others { option value=(other.id) { (other.address) } }
                    }
                    label for="from_identity" { "From" }
                    select #from_identity name="from_identity" {
                        @for identity in &identities { option value=(identity.id) { (identity.address) } }
                    }
                    div { button type="submit" { "Introduce" } }
                }
            }
            h2 { "Change" }
            form method="post" action=(action("")) {
                input type="hidden" name="form_token" value=(token);
                label for="display_name" { "Name" }
                input #display_name type="text" name="display_name" value=(contact.display_name);
                label { input type="checkbox" name="verified" value="yes" checked[contact.verified]; " I checked this fingerprint with the contact (in person or by another channel)" }
                label for="designated_carriers" { "Carriers trusted to hold its mail while it is offline (one onion per line)" }
                textarea #designated_carriers name="designated_carriers" rows="3" cols="60" { (contact.designated_carriers.join("\n")) }
                div { button type="submit" { "Save" } }
            }
            section.danger {
                h2 { "Remove" }
                p { "The contact and its pinned key leave the address book; a key seen later is pinned anew." }
                form method="post" action=(action("/delete")) {
                    input type="hidden" name="form_token" value=(token);
                    div { button type="submit" { "Remove" } }
                }
            }
        },
    );
    Ok(page(StatusCode::OK, markup))
}

#[derive(Debug, Deserialize)]
pub struct ChangeForm {
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    verified: String,
    #[serde(default)]
    designated_carriers: String,
}

pub async fn change(
    State(state): State<PortalState>,
    Path(id): Path<String>,
    Posted { session, form }: Posted<ChangeForm>,
) -> Result<Redirect, PageError> {
    let change = ContactChange {
        display_name: Some(form.display_name),
        verified: Some(form.verified == "yes"),
        designated_carriers: Some(
            form.designated_carriers
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        ),
    };
    let contact = address_book::update_contact(&state, &session.account_id, &id, change)
        .await
        .or_page(&session, "/contacts")?;
    Ok(Redirect::to(&format!(
        "/contacts/{}?done=contact-saved",
        contact.id
    )))
}

#[derive(Debug, Deserialize)]
pub struct KeyChangeForm {
    #[serde(default)]
    fingerprint: String,
    #[serde(default)]
    decision: String,
}

/// The button pressed on an accept-or-refuse form.
fn accepted(decision: &str) -> Result<bool, PortalError> {
    match decision {
        "accept" => Ok(true),
        "refuse" => Ok(false),
        _ => Err(PortalError::invalid("decision", "accept or refuse")),
    }
}

/// The contact-request form: one of two buttons.
#[derive(Deserialize)]
pub struct ContactRequestForm {
    #[serde(default)]
    decision: String,
}

pub async fn contact_request(
    State(state): State<PortalState>,
    Path(id): Path<String>,
    Posted { session, form }: Posted<ContactRequestForm>,
) -> Result<Redirect, PageError> {
    let accept = accepted(&form.decision).or_page(&session, "/contacts")?;
    address_book::answer_contact_request(
        &state,
        &session.account_id,
        &id,
        ContactRequestAnswer {
            accept,
            identity_id: None,
        },
    )
    .await
    .or_page(&session, "/contacts")?;
    let done = if accept {
        "request-accepted"
    } else {
        "request-refused"
    };
    Ok(Redirect::to(&format!("/contacts/{id}?done={done}")))
}

pub async fn key_change(
    State(state): State<PortalState>,
    Path(id): Path<String>,
    Posted { session, form }: Posted<KeyChangeForm>,
) -> Result<Redirect, PageError> {
    let accept = accepted(&form.decision).or_page(&session, "/contacts")?;
    let contact = address_book::decide_key_change(
        &state,
        &session.account_id,
        &id,
        KeyChangeDecision {
            fingerprint: form.fingerprint,
            accept,
        },
    )
    .await
    .or_page(&session, "/contacts")?;
    let done = if accept {
        "key-accepted"
    } else {
        "key-refused"
    };
    Ok(Redirect::to(&format!(
        "/contacts/{}?done={done}",
        contact.id
    )))
}

pub async fn delete(
    State(state): State<PortalState>,
    Path(id): Path<String>,
    Posted { session, form: _ }: Posted<serde::de::IgnoredAny>,
) -> Result<Redirect, PageError> {
    address_book::delete_contact(&state, &session.account_id, &id)
        .await
        .or_page(&session, "/contacts")?;
    Ok(Redirect::to("/contacts?done=contact-deleted"))
}

#[derive(Debug, Deserialize)]
pub struct IntroduceForm {
    #[serde(default)]
    to: String,
    #[serde(default)]
    from_identity: String,
}

pub async fn introduce(
    State(state): State<PortalState>,
    Path(id): Path<String>,
    Posted { session, form }: Posted<IntroduceForm>,
) -> Result<Redirect, PageError> {
    address_book::introduce(
        &state,
        &session.account_id,
        &id,
        Introduce {
            to: form.to,
            from_identity: form.from_identity,
        },
    )
    .await
    .or_page(&session, "/contacts")?;
    Ok(Redirect::to(&format!("/contacts/{id}?done=introduced")))
}

#[derive(Debug, Deserialize)]
pub struct PolicyForm {
    #[serde(default)]
    confirm_introductions: String,
}

pub async fn set_policy(
    State(state): State<PortalState>,
    Posted { session, form }: Posted<PolicyForm>,
) -> Result<Redirect, PageError> {
    address_book::set_policy(
        &state,
        &session.account_id,
        onionpost_runtime::address_book::AddressBookPolicy {
            confirm_introductions: form.confirm_introductions == "yes",
        },
    )
    .await
    .or_page(&session, "/contacts")?;
    Ok(Redirect::to("/contacts?done=contacts-policy"))
}
