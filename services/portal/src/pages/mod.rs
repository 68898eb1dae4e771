//! The portal's pages: HTML rendered on the server (maud, which escapes every value it is given),
//! plain forms and links, no JavaScript at all, so Tor Browser at its "Safest" level works.
//!
//! Every page answers with headers that forbid what it never needs: no script, no frame, no
//! resource from anywhere else, no referrer, no caching (`security_headers`). A form posts back to
//! the portal with the form token of `session`; a page that changes something answers with a
//! redirect (303, so reloading does not resend) to a page that says what was done, chosen from a
//! fixed list so no request text is ever echoed as a notice.

mod account;
mod aliases;
mod app_passwords;
mod contacts;
mod identities;
mod sign_in;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};
use serde::de::DeserializeOwned;

use crate::PortalState;
use crate::error::PortalError;
use crate::session::{self, Session};

/// The one style sheet, served from the portal itself (`/style.css`).
const STYLE: &str = include_str!("style.css");

/// The Content-Security-Policy of every page: nothing but the portal's own style sheet and
/// images, forms only to the portal, never in a frame.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Every page route.
pub fn router() -> Router<PortalState> {
    Router::new()
        .route("/", get(home))
        .route("/style.css", get(style))
        .route(
            "/sign-in",
            get(sign_in::sign_in_page).post(sign_in::sign_in),
        )
        .route(
            "/sign-up",
            get(sign_in::sign_up_page).post(sign_in::sign_up),
        )
        .route("/sign-out", post(sign_in::sign_out))
        .route("/account", get(account::account_page))
        .route("/account/voucher", post(account::redeem))
        .route("/account/password", post(account::change_password))
        .route("/account/delete", post(account::delete))
        .route("/account/second-factor", post(account::begin_second_factor))
        .route(
            "/account/second-factor/confirm",
            post(account::confirm_second_factor),
        )
        .route(
            "/account/second-factor/off",
            post(account::disable_second_factor),
        )
        .route(
            "/identities",
            get(identities::list_page).post(identities::create),
        )
        .route("/identities/{id}", get(identities::identity_page))
        .route("/identities/{id}/qr.svg", get(identities::qr))
        .route("/identities/{id}/revoke", post(identities::revoke))
        .route("/identities/{id}/rotate-key", post(identities::rotate_key))
        .route("/identities/import", post(identities::import))
        .route("/identities/{id}/export", post(identities::export))
        .route("/identities/{id}/carriers", post(identities::set_carriers))
        .route(
            "/identities/{id}/carry-statement",
            post(identities::carry_statement),
        )
        .route(
            "/app-passwords",
            get(app_passwords::list_page).post(app_passwords::create),
        )
        .route("/app-passwords/{id}/revoke", post(app_passwords::revoke))
        .route("/contacts", get(contacts::list_page).post(contacts::add))
        .route("/contacts/card", post(contacts::add_card))
        .route("/contacts-policy", post(contacts::set_policy))
        .route(
            "/contacts/{id}",
            get(contacts::contact_page).post(contacts::change),
        )
        .route("/contacts/{id}/key-change", post(contacts::key_change))
        .route("/contacts/{id}/request", post(contacts::contact_request))
        .route("/contacts/{id}/delete", post(contacts::delete))
        .route("/contacts/{id}/introduce", post(contacts::introduce))
        .route("/aliases", get(aliases::list_page))
        .route("/aliases/{address}/revoke", post(aliases::revoke))
}

/// Adds the headers every portal answer carries.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ] {
        headers.entry(name).or_insert(value);
    }
    response
}

async fn home(session::BrowserSession(session): session::BrowserSession) -> Redirect {
    match session {
        Some(_) => Redirect::to("/account"),
        None => Redirect::to("/sign-in"),
    }
}

async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLE,
    )
}

/// A whole page: the navigation of a signed-in account (or none), a title, the content.
pub fn layout(title: &str, session: Option<&Session>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · onionpost" }
                link rel="stylesheet" href="/style.css";
            }
            body {
                header {
                    span.brand { "onionpost" }
                    @if let Some(session) = session {
                        nav {
                            a href="/account" { "Account" }
                            a href="/identities" { "Identities" }
                            a href="/contacts" { "Contacts" }
                            a href="/app-passwords" { "Mail clients" }
                            form.inline method="post" action="/sign-out" {
                                input type="hidden" name="form_token" value=(session.form_token());
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

/// A page's answer with its status.
pub fn page(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// A failure as a page: signed out goes to the sign-in page; anything else says what went
/// wrong, with a way back.
pub struct PageError {
    pub error: PortalError,
    pub session: Option<Box<Session>>,
    /// Where "back" leads.
    pub back: &'static str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        if matches!(self.error, PortalError::SignedOut) {
            return Redirect::to("/sign-in").into_response();
        }
        let status = self.error.status();
        let markup = layout(
            "Not done",
            self.session.as_deref(),
            html! {
                p.error role="alert" { (self.error.to_string()) }
                p { a href=(self.back) { "Back" } }
            },
        );
        page(status, markup)
    }
}

/// `result` with its error as a page.
pub trait OrPage<T> {
    fn or_page(self, session: &Session, back: &'static str) -> Result<T, PageError>;
}

impl<T> OrPage<T> for Result<T, PortalError> {
    fn or_page(self, session: &Session, back: &'static str) -> Result<T, PageError> {
        self.map_err(|error| PageError {
            error,
            session: Some(Box::new(session.clone())),
            back,
        })
    }
}

/// The signed-in session of a page, or a redirect to the sign-in page.
pub fn signed_in(session: Option<Session>) -> Result<Session, PageError> {
    session.ok_or(PageError {
        error: PortalError::SignedOut,
        session: None,
        back: "/sign-in",
    })
}

/// A form posted by a signed-in browser, its form token checked before anything else in it is
/// read: what every page that changes something takes. Signed out, it leads to the sign-in
/// page; a bad token or an unreadable form is a page that says so, with a way back to the
/// section the form came from.
pub struct Posted<T> {
    pub session: Session,
    pub form: T,
}

impl<T: DeserializeOwned> axum::extract::FromRequest<PortalState> for Posted<T> {
    type Rejection = PageError;

    async fn from_request(request: Request, state: &PortalState) -> Result<Self, PageError> {
        let back = section(request.uri().path());
        let (mut parts, body) = request.into_parts();
        let session::BrowserSession(session) =
            <session::BrowserSession as axum::extract::FromRequestParts<PortalState>>::from_request_parts(
                &mut parts, state,
            )
            .await
            .map_err(|error| PageError {
                error,
                session: None,
                back,
            })?;
        let session = signed_in(session)?;
        let bytes = <Bytes as axum::extract::FromRequest<PortalState>>::from_request(
            Request::from_parts(parts, body),
            state,
        )
        .await
        .map_err(|_| PortalError::PayloadTooLarge)
        .or_page(&session, back)?;
        let form = signed_form(&session, &bytes, back)?;
        Ok(Posted { session, form })
    }
}

/// The section a page belongs to (the first part of its path), for the "back" link of a
/// failure page.
fn section(path: &str) -> &'static str {
    match path.trim_start_matches('/').split('/').next().unwrap_or("") {
        "identities" => "/identities",
        "contacts" => "/contacts",
        "app-passwords" => "/app-passwords",
        "aliases" => "/aliases",
        _ => "/account",
    }
}

/// Reads a posted form, refusing first (before reading anything else in it) one whose form
/// token is not the session's.
fn signed_form<T: DeserializeOwned>(
    session: &Session,
    body: &Bytes,
    back: &'static str,
) -> Result<T, PageError> {
    let token: TokenField = onionpost_runtime::http_api::form(body, "form")
        .map_err(PortalError::from)
        .or_page(session, back)?;
    if !session.form_token_is(&token.form_token) {
        return Err(PortalError::BadFormToken).or_page(session, back);
    }
    onionpost_runtime::http_api::form(body, "form")
        .map_err(PortalError::from)
        .or_page(session, back)
}

/// A posted `multipart/form-data` form (a file upload), read whole.
pub struct Upload {
    fields: Vec<(String, Vec<u8>)>,
}

impl Upload {
    /// A text field, if the form has it.
    pub fn text(&self, name: &str) -> Option<String> {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
    }

    /// A file field's bytes: required, not empty, at most `limit` bytes.
    pub fn file(&self, name: &str, limit: usize) -> Result<Vec<u8>, PortalError> {
        let (_, bytes) = self
            .fields
            .iter()
            .find(|(field, bytes)| field == name && !bytes.is_empty())
            .ok_or_else(|| PortalError::invalid(name, "choose a file"))?;
        if bytes.len() > limit {
            return Err(PortalError::invalid(name, "the file is too large"));
        }
        Ok(bytes.clone())
    }
}

/// Most fields an upload form may have.
const MAX_UPLOAD_FIELDS: usize = 8;

/// Reads a posted file-upload form (already bounded by the portal's body limit), refusing one
/// whose form token is not the session's before anything in it is used. multer does the
/// parsing (axum's own multipart reader, without the rest of its extractor).
pub async fn signed_upload(
    session: &Session,
    headers: &axum::http::HeaderMap,
    body: Bytes,
    back: &'static str,
) -> Result<Upload, PageError> {
    let malformed = |detail: String| PortalError::BadRequest {
        field: "form".to_owned(),
        detail,
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let boundary = multer::parse_boundary(content_type)
        .map_err(|_| malformed("the form must be sent as multipart/form-data".to_owned()))
        .or_page(session, back)?;
    let stream = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut fields = Vec::new();
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|error| malformed(format!("the form cannot be read: {error}")))
            .or_page(session, back)?;
        let Some(field) = field else { break };
        if fields.len() == MAX_UPLOAD_FIELDS {
            return Err(malformed("the form has too many fields".to_owned()))
                .or_page(session, back);
        }
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = field
            .bytes()
            .await
            .map_err(|error| malformed(format!("the form cannot be read: {error}")))
            .or_page(session, back)?;
        fields.push((name, bytes.to_vec()));
    }
    let upload = Upload { fields };
    if !session.form_token_is(&upload.text("form_token").unwrap_or_default()) {
        return Err(PortalError::BadFormToken).or_page(session, back);
    }
    Ok(upload)
}

/// The form token of any form; the form's other fields are its own type's.
#[derive(Debug, serde::Deserialize)]
struct TokenField {
    #[serde(default)]
    form_token: String,
}

/// The notice for a `done` code a redirect carried, from a fixed list.
pub fn notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "voucher" => "The voucher is redeemed.",
        "password" => "The password is changed. Your other sessions are signed out.",
        "revoked" => "The identity is revoked: its key, its onion and its address are gone.",
        "created" => "The identity is created. It is online once tor has published its onion.",
        "signed-up" => "Welcome. Your account is ready; create an identity to get an address.",
        "app-password-revoked" => "The app password is revoked: it opens nothing any more.",
        "carriers" => "The carriers are published, signed with the identity's key.",
        "contacts-policy" => "Saved: how introductions are taken.",
        "new-key" => {
            "The identity has a new key. Its correspondents are sent it in mail signed by the previous one."
        }
        "imported" => {
            "The identity is here, with the address and key it had. It is online once tor has published its onion."
        }
        "totp-on" => "Two-factor sign-in is on: signing in asks for a code from your app.",
        "totp-off" => "Two-factor sign-in is off.",
        "alias-revoked" => "The alias is revoked: its correspondent's mail is refused from now on.",
        "introduced" => "The introduction is on its way, signed by your identity.",
        "contact-added" => "The contact is added, with its key pinned.",
        "contact-saved" => "The contact is saved.",
        "contact-deleted" => "The contact is removed from the address book.",
        "key-accepted" => "The new key is pinned: mail to this contact is encrypted to it.",
        "request-accepted" => {
            "Accepted: its messages are in your INBOX, and its next ones go there too."
        }
        "request-refused" => {
            "Refused: its messages went to Trash, and its mail is refused from now on."
        }
        "key-refused" => "The new key is refused: the old key stays pinned.",
        _ => return None,
    })
}

/// Renders a notice, if any.
pub fn notice_markup(done: Option<&str>) -> Markup {
    html! {
        @if let Some(text) = notice(done) {
            p.notice role="status" { (text) }
        }
    }
}

/// The query of a page a redirect led to.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Done {
    pub done: Option<String>,
}

/// Bytes as a person reads them.
pub fn bytes(count: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{count} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(1 << 30), "1.0 GiB");
    }

    #[test]
    fn only_known_notices_are_shown() {
        assert!(notice(Some("voucher")).is_some());
        assert_eq!(notice(Some("<script>")), None);
        assert_eq!(notice(None), None);
    }

    #[test]
    fn values_are_escaped() {
        let markup = layout("<b>x</b>", None, html! { p { ("\"><script>") } });
        let text = markup.into_string();
        assert!(!text.contains("<script>"), "{text}");
        assert!(text.contains("&lt;b&gt;x&lt;/b&gt;"), "{text}");
    }
}
