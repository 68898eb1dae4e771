//! `/account/v1`: what the pages do, as JSON for scripts and clients, with its OpenAPI document
//! (`/account/v1/openapi.json`). A session is opened with a login and password (or by signing up)
//! and then named by `Authorization: Bearer <token>`; every route but those two needs it, and
//! every route acts on that session's account only. Errors are RFC 9457 problem documents.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use onionpost_runtime::http_api::{self, Problem};
use onionpost_runtime::time::from_ms;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::OpenApi as _;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::PortalState;
use crate::account::{self, Account, AppPassword, Identity, NewAppPassword};
use crate::address_book::{
    self, ContactChange, ContactPage, Introduce, IntroductionSent, KeyChangeDecision, NewContact,
};
use crate::error::PortalError;
use crate::gateway::{self, Alias, AliasPage};
use crate::portability::{self, CarryStatement, NewCarryStatement};
use crate::second_factor::{self, Enrolment, SecondFactor};
use crate::session::{self, ApiSession, NewSession};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use onionpost_runtime::address_book::{Contact, ContactRequestAnswer, ContactRequestAnswered};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "onionpost account API",
        description = "An account holder's own account on an onionpost carrier: sessions, the account, vouchers, the password and identities. Open a session with `POST /account/v1/session` (or `POST /account/v1/signup`) and send its token as `Authorization: Bearer <token>`. Every route acts on that session's account only. Errors are RFC 9457 problem documents.",
        license(name = "AGPL-3.0-or-later")
    ),
    components(schemas(Problem)),
    security(("bearer" = [])),
    tags(
        (name = "session", description = "Signing up, in and out"),
        (name = "account", description = "The signed-in account"),
        (name = "identities", description = "The account's onion identities"),
        (name = "app-passwords", description = "Passwords for mail clients, one per device"),
        (name = "contacts", description = "The account's address book: contacts, their keys and who introduced them"),
        (name = "gateway", description = "The account's clearnet aliases, one per identity and correspondent"),
    )
)]
struct ApiDoc;

/// The problem statuses any `/account/v1` operation may answer with.
const PROBLEM_STATUSES: [(&str, &str); 10] = [
    ("400", "The request cannot be read (malformed JSON)"),
    ("401", "No session, or not a live one"),
    ("403", "Not allowed (sign-up closed, account suspended)"),
    ("404", "No such resource among this account's"),
    (
        "409",
        "Conflicts with the current state (taken, spent, limit reached)",
    ),
    ("413", "The request body is too large"),
    ("415", "The request body is not application/json"),
    ("422", "A value is not acceptable; `field` names it"),
    ("429", "Too many attempts; see Retry-After"),
    ("503", "A service this request needs is unavailable"),
];

/// A JSON body, refused with a problem that names the field at fault.
pub struct ApiJson<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = PortalError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(ApiJson(http_api::json_body(request, state).await?))
    }
}

/// A query string, refused with a problem that names the parameter at fault.
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = PortalError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        Ok(ApiQuery(http_api::form(query.as_bytes(), "query")?))
    }
}

/// A login and password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    pub login: String,
    pub password: String,
    /// The authenticator app's current code, when two-factor sign-in is on.
    #[serde(default)]
    pub code: Option<String>,
}

/// A new account, by the carrier's sign-up policy.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignUp {
    /// 1 to 64 of `a-z 0-9 . _ -`, starting with a letter or digit.
    pub login: String,
    /// At least 12 characters.
    pub password: String,
    /// A voucher code; required when the carrier's sign-up policy is `voucher`.
    #[serde(default)]
    pub voucher: Option<String>,
}

/// A session just opened. The token is shown once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

impl From<NewSession> for SessionToken {
    fn from(session: NewSession) -> Self {
        SessionToken {
            token: session.token,
            expires_at: from_ms(session.expires_at_ms),
        }
    }
}

/// A voucher code to redeem.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Redeem {
    pub code: String,
}

/// A password change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    pub current_password: String,
    pub new_password: String,
}

/// The account's password, to confirm its deletion.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmDeletion {
    pub password: String,
}

/// A new identity.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIdentity {
    /// The part before `@`: an RFC 5322 dot-atom.
    pub local_part: String,
    /// Goes into the key's user ID; absent keeps the address alone (a name can identify a
    /// person).
    #[serde(default)]
    pub display_name: Option<String>,
}

#[utoipa::path(
    post, path = "/account/v1/session", tag = "session", security(()),
    request_body = SignIn,
    responses((status = 201, description = "Signed in", body = SessionToken)),
)]
pub async fn open_session(
    State(state): State<PortalState>,
    ApiJson(request): ApiJson<SignIn>,
) -> Result<(StatusCode, Json<SessionToken>), PortalError> {
    let session = account::sign_in(
        &state,
        &request.login,
        &request.password,
        request.code.as_deref().unwrap_or(""),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(session.into())))
}

#[utoipa::path(
    delete, path = "/account/v1/session", tag = "session",
    responses((status = 204, description = "Signed out")),
)]
pub async fn close_session(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
) -> Result<StatusCode, PortalError> {
    session::end(&state, &session).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = "/account/v1/signup", tag = "session", security(()),
    request_body = SignUp,
    responses((status = 201, description = "The account exists and is signed in", body = SessionToken)),
)]
pub async fn sign_up(
    State(state): State<PortalState>,
    ApiJson(request): ApiJson<SignUp>,
) -> Result<(StatusCode, Json<SessionToken>), PortalError> {
    let voucher = request.voucher.unwrap_or_default();
    let session = account::sign_up(&state, &request.login, &request.password, &voucher).await?;
    Ok((StatusCode::CREATED, Json(session.into())))
}

#[utoipa::path(
    get, path = "/account/v1/account", tag = "account",
    responses((status = 200, description = "The signed-in account", body = Account)),
)]
pub async fn get_account(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
) -> Result<Json<Account>, PortalError> {
    Ok(Json(account::account(&state, &session.account_id).await?))
}

#[utoipa::path(
    delete, path = "/account/v1/account", tag = "account",
    request_body = ConfirmDeletion,
    responses((status = 204, description = "The account, its identities, keys and mail are gone")),
)]
pub async fn delete_account(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    ApiJson(request): ApiJson<ConfirmDeletion>,
) -> Result<StatusCode, PortalError> {
    account::delete_account(&state, &session.account_id, &request.password).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = "/account/v1/account/vouchers", tag = "account",
    request_body = Redeem,
    responses((status = 200, description = "Redeemed: the account with its new paid-until and plan", body = Account)),
)]
pub async fn redeem_voucher(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    ApiJson(request): ApiJson<Redeem>,
) -> Result<Json<Account>, PortalError> {
    Ok(Json(
        account::redeem(&state, &session.account_id, &request.code).await?,
    ))
}

#[utoipa::path(
    put, path = "/account/v1/account/password", tag = "account",
    request_body = ChangePassword,
    responses((status = 204, description = "Changed; the account's other sessions are ended")),
)]
pub async fn change_password(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    ApiJson(request): ApiJson<ChangePassword>,
) -> Result<StatusCode, PortalError> {
    account::change_password(
        &state,
        &session,
        &request.current_password,
        &request.new_password,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get, path = "/account/v1/identities", tag = "identities",
    responses((status = 200, description = "The account's identities", body = Vec<Identity>)),
)]
pub async fn list_identities(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
) -> Result<Json<Vec<Identity>>, PortalError> {
    Ok(Json(
        account::identities(&state, &session.account_id).await?,
    ))
}

#[utoipa::path(
    post, path = "/account/v1/identities", tag = "identities",
    request_body = CreateIdentity,
    responses((status = 201, description = "Created; `publishing` until its onion is online", body = Identity)),
)]
pub async fn create_identity(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    ApiJson(request): ApiJson<CreateIdentity>,
) -> Result<(StatusCode, Json<Identity>), PortalError> {
    let identity = account::create_identity(
        &state,
        &session.account_id,
        &request.local_part,
        request.display_name.as_deref().unwrap_or(""),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(identity)))
}

#[utoipa::path(
    get, path = "/account/v1/identities/{id}", tag = "identities",
    params(("id" = String, Path, description = "Identity id")),
    responses((status = 200, description = "The identity", body = Identity)),
)]
pub async fn get_identity(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    Path(id): Path<String>,
) -> Result<Json<Identity>, PortalError> {
    Ok(Json(
        account::identity(&state, &session.account_id, &id).await?,
    ))
}

#[utoipa::path(
    delete, path = "/account/v1/identities/{id}", tag = "identities",
    params(("id" = String, Path, description = "Identity id")),
    responses((status = 204, description = "Revoked: its key, its onion and its record are gone")),
)]
pub async fn revoke_identity(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    Path(id): Path<String>,
) -> Result<StatusCode, PortalError> {
    account::revoke_identity(&state, &session.account_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = "/account/v1/identities/{id}/rotate-key", tag = "identities",
    params(("id" = String, Path, description = "Identity id")),
    responses((status = 200, description = "The identity has a new key on the same address, certified by the previous one; its correspondents are sent it in mail signed by the previous key and move to it", body = account::RotatedKey)),
)]
pub async fn rotate_identity_key(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    Path(id): Path<String>,
) -> Result<Json<account::RotatedKey>, PortalError> {
    Ok(Json(
        account::rotate_key(&state, &session.account_id, &id).await?,
    ))
}

#[utoipa::path(
    get, path = "/account/v1/identities/{id}/qr.svg", tag = "identities",
    params(("id" = String, Path, description = "Identity id")),
    responses((status = 200, description = "The identity's `openpgp4fpr:` QR code", content_type = "image/svg+xml", body = String)),
)]
pub async fn identity_qr(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, PortalError> {
    let svg = account::identity_qr(&state, &session.account_id, &id).await?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg))
}

/// A name for a new app password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAppPassword {
    /// What it is for ("phone", "laptop").
    pub name: String,
}

#[utoipa::path(
    get, path = "/account/v1/app-passwords", tag = "app-passwords",
    responses((status = 200, description = "The account's app passwords (never the codes)", body = Vec<AppPassword>)),
)]
pub async fn list_app_passwords(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
) -> Result<Json<Vec<AppPassword>>, PortalError> {
    Ok(Json(
        account::app_passwords(&state, &session.account_id).await?,
    ))
}

#[utoipa::path(
    post, path = "/account/v1/app-passwords", tag = "app-passwords",
    request_body = CreateAppPassword,
    responses((status = 201, description = "Created; the code is shown this once", body = NewAppPassword)),
)]
pub async fn create_app_password(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    ApiJson(request): ApiJson<CreateAppPassword>,
) -> Result<(StatusCode, Json<NewAppPassword>), PortalError> {
    let created = account::create_app_password(&state, &session.account_id, &request.name).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    delete, path = "/account/v1/app-passwords/{id}", tag = "app-passwords",
    params(("id" = String, Path, description = "App password id")),
    responses((status = 204, description = "Revoked: it opens nothing any more")),
)]
pub async fn revoke_app_password(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    Path(id): Path<String>,
) -> Result<StatusCode, PortalError> {
    account::revoke_app_password(&state, &session.account_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Which contacts a page holds.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ContactsQuery {
    /// Case-insensitive part of an address or name.
    #[serde(default)]
    pub q: Option<String>,
    /// Only contacts with a key change waiting for a decision.
    #[serde(default)]
    pub held: Option<bool>,
    /// From the previous page's `next_page_token`.
    #[serde(default)]
    pub page_token: Option<String>,
}

#[utoipa::path(
    get, path = "/account/v1/contacts", tag = "contacts",
    params(ContactsQuery),
    responses((status = 200, description = "One page of the address book", body = ContactPage)),
)]
pub async fn list_contacts(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    ApiQuery(query): ApiQuery<ContactsQuery>,
) -> Result<Json<ContactPage>, PortalError> {
    Ok(Json(
        address_book::contacts(
            &state,
            &session.account_id,
            query.q.as_deref().unwrap_or(""),
            query.held.unwrap_or(false),
            query.page_token.as_deref().unwrap_or(""),
        )
        .await?,
    ))
}

#[utoipa::path(
    get, path = "/account/v1/contacts-policy", tag = "contacts",
    responses((status = 200, description = "How the address book takes introductions that arrive in mail", body = onionpost_runtime::address_book::AddressBookPolicy)),
)]
pub async fn get_contacts_policy(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
) -> Result<Json<onionpost_runtime::address_book::AddressBookPolicy>, PortalError> {
    Ok(Json(
        address_book::policy(&state, &session.account_id).await?,
    ))
}

#[utoipa::path(
    put, path = "/account/v1/contacts-policy", tag = "contacts",
    request_body = onionpost_runtime::address_book::AddressBookPolicy,
    responses((status = 200, description = "The policy, as set", body = onionpost_runtime::address_book::AddressBookPolicy)),
)]
pub async fn set_contacts_policy(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    ApiJson(request): ApiJson<onionpost_runtime::address_book::AddressBookPolicy>,
) -> Result<Json<onionpost_runtime::address_book::AddressBookPolicy>, PortalError> {
    Ok(Json(
        address_book::set_policy(&state, &session.account_id, request).await?,
    ))
}

#[utoipa::path(
    post, path = "/account/v1/contacts", tag = "contacts",
    request_body = NewContact,
    responses((status = 201, description = "Added, with its key pinned", body = Contact)),
)]
pub async fn add_contact(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    ApiJson(request): ApiJson<NewContact>,
) -> Result<(StatusCode, Json<Contact>), PortalError> {
    let contact = address_book::add_contact(&state, &session.account_id, request).await?;
    Ok((StatusCode::CREATED, Json(contact)))
}

#[utoipa::path(
    get, path = "/account/v1/contacts/{id}", tag = "contacts",
    params(("id" = String, Path, description = "Contact id")),
    responses((status = 200, description = "The contact", body = Contact)),
)]
pub async fn get_contact(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    Path(id): Path<String>,
) -> Result<Json<Contact>, PortalError> {
    Ok(Json(
        address_book::contact(&state, &session.account_id, &id).await?,
    ))
}

#[utoipa::path(
    patch, path = "/account/v1/contacts/{id}", tag = "contacts",
    params(("id" = String, Path, description = "Contact id")),
    request_body = ContactChange,
    responses((status = 200, description = "The contact as changed", body = Contact)),
)]
pub async fn update_contact(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<ContactChange>,
) -> Result<Json<Contact>, PortalError> {
    Ok(Json(
        address_book::update_contact(&state, &session.account_id, &id, request).await?,
    ))
}

#[utoipa::path(
    delete, path = "/account/v1/contacts/{id}", tag = "contacts",
    params(("id" = String, Path, description = "Contact id")),
    responses((status = 204, description = "The contact and its pinned key are gone")),
)]
pub async fn delete_contact(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    Path(id): Path<String>,
) -> Result<StatusCode, PortalError> {
    address_book::delete_contact(&state, &session.account_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = "/account/v1/contacts/{id}/key-change", tag = "contacts",
    params(("id" = String, Path, description = "Contact id")),
    request_body = KeyChangeDecision,
    responses((status = 200, description = "The contact after the decision", body = Contact)),
)]
pub async fn decide_key_change(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<KeyChangeDecision>,
) -> Result<Json<Contact>, PortalError> {
    Ok(Json(
        address_book::decide_key_change(&state, &session.account_id, &id, request).await?,
    ))
}

#[utoipa::path(
    post, path = "/account/v1/contacts/{id}/request", tag = "contacts",
    params(("id" = String, Path, description = "Contact id")),
    request_body = ContactRequestAnswer,
    responses(
        (status = 200, description = "The request answered", body = ContactRequestAnswered),
        (status = 409, description = "No request of this contact is waiting"),
    ),
)]
pub async fn answer_contact_request(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<ContactRequestAnswer>,
) -> Result<Json<ContactRequestAnswered>, PortalError> {
    Ok(Json(
        address_book::answer_contact_request(&state, &session.account_id, &id, request).await?,
    ))
}

/// A passphrase to seal an identity bundle with.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportIdentity {
    /// At least 12 characters; all that protects the keys in the bundle.
    pub passphrase: String,
}

/// An identity bundle: its OpenPGP key and onion key, encrypted with the passphrase.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IdentityBundle {
    /// The bundle, base64.
    pub bundle: String,
}

/// A bundle to bring into the account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportIdentity {
    /// The bundle, base64, as exported.
    pub bundle: String,
    pub passphrase: String,
    #[serde(default)]
    pub display_name: Option<String>,
}

/// The carriers an identity asks its correspondents to use while it is offline.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferredCarriers {
    /// Carrier onion hosts, `<56 base32>.onion`, in order of preference; empty clears the list.
    pub carriers: Vec<String>,
}

#[utoipa::path(
    post, path = "/account/v1/identities/{id}/export", tag = "identities",
    params(("id" = String, Path, description = "Identity id")),
    request_body = ExportIdentity,
    responses((status = 200, description = "The bundle; the carrier keeps no copy", body = IdentityBundle)),
)]
pub async fn export_identity(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<ExportIdentity>,
) -> Result<Json<IdentityBundle>, PortalError> {
    let bundle =
        portability::export_identity(&state, &session.account_id, &id, &request.passphrase).await?;
    Ok(Json(IdentityBundle {
        bundle: BASE64.encode(bundle),
    }))
}

#[utoipa::path(
    post, path = "/account/v1/identities/import", tag = "identities",
    request_body = ImportIdentity,
    responses((status = 201, description = "The identity, with the address and key it had", body = Identity)),
)]
pub async fn import_identity(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    ApiJson(request): ApiJson<ImportIdentity>,
) -> Result<(StatusCode, Json<Identity>), PortalError> {
    let bundle = BASE64
        .decode(request.bundle.trim())
        .map_err(|_| PortalError::invalid("bundle", "is not base64"))?;
    let identity = portability::import_identity(
        &state,
        &session.account_id,
        bundle,
        &request.passphrase,
        request.display_name.as_deref().unwrap_or(""),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(identity)))
}

#[utoipa::path(
    put, path = "/account/v1/identities/{id}/carriers", tag = "identities",
    params(("id" = String, Path, description = "Identity id")),
    request_body = PreferredCarriers,
    responses((status = 200, description = "The identity with the carriers it now publishes (signed by its key)", body = Identity)),
)]
pub async fn set_preferred_carriers(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<PreferredCarriers>,
) -> Result<Json<Identity>, PortalError> {
    Ok(Json(
        portability::set_preferred_carriers(&state, &session.account_id, &id, &request.carriers)
            .await?,
    ))
}

#[utoipa::path(
    post, path = "/account/v1/identities/{id}/carry-statements", tag = "identities",
    params(("id" = String, Path, description = "Identity id")),
    request_body = NewCarryStatement,
    responses((status = 201, description = "The statement, signed by the identity's key, for the carrier it names", body = CarryStatement)),
)]
pub async fn sign_carry_statement(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<NewCarryStatement>,
) -> Result<(StatusCode, Json<CarryStatement>), PortalError> {
    let signed =
        portability::sign_carry_statement(&state, &session.account_id, &id, request).await?;
    Ok((StatusCode::CREATED, Json(signed)))
}

#[utoipa::path(
    post, path = "/account/v1/contacts/{id}/introduce", tag = "contacts",
    params(("id" = String, Path, description = "The contact to introduce")),
    request_body = Introduce,
    responses((status = 202, description = "Queued: a signed introduction, in mail from the identity, to the other contact", body = IntroductionSent)),
)]
pub async fn introduce_contact(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<Introduce>,
) -> Result<(StatusCode, Json<IntroductionSent>), PortalError> {
    let sent = address_book::introduce(&state, &session.account_id, &id, request).await?;
    Ok((StatusCode::ACCEPTED, Json(sent)))
}

/// A code from the authenticator app.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpCode {
    pub code: String,
}

/// The password and a current code, to turn two-factor sign-in off.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableSecondFactor {
    pub password: String,
    pub code: String,
}

#[utoipa::path(
    get, path = "/account/v1/account/second-factor", tag = "account",
    responses((status = 200, description = "Whether sign-in asks for a code", body = SecondFactor)),
)]
pub async fn get_second_factor(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
) -> Result<Json<SecondFactor>, PortalError> {
    Ok(Json(
        second_factor::status(&state, &session.account_id).await?,
    ))
}

#[utoipa::path(
    post, path = "/account/v1/account/second-factor", tag = "account",
    responses((status = 201, description = "A new secret for the authenticator app, shown once; confirm it with a first code", body = Enrolment)),
)]
pub async fn begin_second_factor(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
) -> Result<(StatusCode, Json<Enrolment>), PortalError> {
    let login = account::account_record(&state, &session.account_id)
        .await?
        .login;
    let enrolment = second_factor::begin(&state, &session.account_id, &login).await?;
    Ok((StatusCode::CREATED, Json(enrolment)))
}

#[utoipa::path(
    post, path = "/account/v1/account/second-factor/confirm", tag = "account",
    request_body = TotpCode,
    responses((status = 204, description = "On: sign-in asks for a code from now on")),
)]
pub async fn confirm_second_factor(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    ApiJson(request): ApiJson<TotpCode>,
) -> Result<StatusCode, PortalError> {
    second_factor::confirm(&state, &session.account_id, &request.code).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete, path = "/account/v1/account/second-factor", tag = "account",
    request_body = DisableSecondFactor,
    responses((status = 204, description = "Off: sign-in asks for the password alone")),
)]
pub async fn disable_second_factor(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    ApiJson(request): ApiJson<DisableSecondFactor>,
) -> Result<StatusCode, PortalError> {
    account::verify_own_password(&state, &session.account_id, "password", &request.password)
        .await?;
    second_factor::disable(&state, &session.account_id, &request.code).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Which aliases a page holds.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AliasesQuery {
    /// Also revoked aliases (default: live ones only).
    #[serde(default)]
    pub include_revoked: Option<bool>,
    /// From the previous page's `next_page_token`.
    #[serde(default)]
    pub page_token: Option<String>,
}

#[utoipa::path(
    get, path = "/account/v1/aliases", tag = "gateway",
    params(AliasesQuery),
    responses((status = 200, description = "One page of the account's clearnet aliases", body = AliasPage)),
)]
pub async fn list_aliases(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    ApiQuery(query): ApiQuery<AliasesQuery>,
) -> Result<Json<AliasPage>, PortalError> {
    Ok(Json(
        gateway::aliases(
            &state,
            &session.account_id,
            query.include_revoked.unwrap_or(false),
            query.page_token.as_deref().unwrap_or(""),
        )
        .await?,
    ))
}

#[utoipa::path(
    post, path = "/account/v1/aliases/{address}/revoke", tag = "gateway",
    params(("address" = String, Path, description = "The alias address, or its local part")),
    responses((status = 200, description = "Revoked: its correspondent's mail is refused from now on", body = Alias)),
)]
pub async fn revoke_alias(
    State(state): State<PortalState>,
    ApiSession(session): ApiSession,
    Path(address): Path<String>,
) -> Result<Json<Alias>, PortalError> {
    Ok(Json(
        gateway::revoke_alias(&state, &session.account_id, &address).await?,
    ))
}

/// Every `/account/v1` route with its documentation.
pub fn api_router() -> OpenApiRouter<PortalState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(open_session, close_session))
        .routes(routes!(sign_up))
        .routes(routes!(get_account, delete_account))
        .routes(routes!(redeem_voucher))
        .routes(routes!(change_password))
        .routes(routes!(
            get_second_factor,
            begin_second_factor,
            disable_second_factor
        ))
        .routes(routes!(confirm_second_factor))
        .routes(routes!(list_identities, create_identity))
        .routes(routes!(get_identity, revoke_identity))
        .routes(routes!(rotate_identity_key))
        .routes(routes!(identity_qr))
        .routes(routes!(export_identity))
        .routes(routes!(import_identity))
        .routes(routes!(set_preferred_carriers))
        .routes(routes!(sign_carry_statement))
        .routes(routes!(list_app_passwords, create_app_password))
        .routes(routes!(revoke_app_password))
        .routes(routes!(list_contacts, add_contact))
        .routes(routes!(get_contacts_policy, set_contacts_policy))
        .routes(routes!(get_contact, update_contact, delete_contact))
        .routes(routes!(decide_key_change))
        .routes(routes!(answer_contact_request))
        .routes(routes!(introduce_contact))
        .routes(routes!(list_aliases))
        .routes(routes!(revoke_alias))
}

/// The OpenAPI document served at `/account/v1/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut document) = api_router().split_for_parts();
    http_api::document_problems(&mut document, &PROBLEM_STATUSES);
    document
}
