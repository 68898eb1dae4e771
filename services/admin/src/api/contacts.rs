//! Address books (owned by the keys service). keys.proto gives each account one address book
//! that all its identities share, so contacts live under the account:
//! `/v1/accounts/{id}/contacts[/{cid}]`. Introductions arrive for an identity and are imported
//! under `/v1/identities/{id}/introductions`; an account introduces one contact to another in
//! mail with `/v1/accounts/{id}/contacts/{cid}/introduce`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use onionpost_proto::ServiceName;
use onionpost_proto::keys::v1 as keys;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::lookup::{fetch_account, fetch_identity};
use super::{next_token, page_size};
use crate::AdminState;
use crate::error::{AdminError, Upstream as _};
use crate::extract::{ApiJson, ApiQuery};
use crate::validate;
use onionpost_runtime::address_book::AddressBookPolicy;

pub use onionpost_runtime::address_book::{
    Contact, ContactRequestAnswer, ContactRequestAnswered, HeldKeyChange, Introducer, KeySource,
};

/// Which contacts a page holds.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListContactsQuery {
    /// Case-insensitive substring of address or display name.
    pub q: Option<String>,
    /// Only contacts with a key change waiting for a decision.
    pub held: Option<bool>,
    /// Only contacts with a contact request waiting (their mail in the Requests mailbox).
    pub requests: Option<bool>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    pub page_token: Option<String>,
}

/// One page of contacts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ContactPage {
    pub contacts: Vec<Contact>,
    pub next_page_token: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/accounts/{id}/contacts", tag = "contacts",
    params(("id" = String, Path, description = "Account id"), ListContactsQuery),
    responses((status = 200, description = "One page of the address book", body = ContactPage)),
)]
pub async fn list_contacts(
    State(state): State<AdminState>,
    Path(account_id): Path<String>,
    ApiQuery(query): ApiQuery<ListContactsQuery>,
) -> Result<Json<ContactPage>, AdminError> {
    let limit = page_size(query.limit)?;
    fetch_account(&state, &account_id).await?;
    let page = state
        .directory
        .keys()?
        .list_contacts(keys::ListContactsRequest {
            account_id,
            query: query.q.unwrap_or_default(),
            only_held_key_changes: query.held.unwrap_or(false),
            only_requests: query.requests.unwrap_or(false),
            page_size: limit,
            page_token: query.page_token.unwrap_or_default(),
        })
        .await
        .upstream(ServiceName::Keys)?;
    Ok(Json(ContactPage {
        contacts: page.contacts.into_iter().map(Contact::from_proto).collect(),
        next_page_token: next_token(page.next_page_token),
    }))
}

/// How a contact was learned, when added by hand.
#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AddSource {
    Manual,
    /// Scanned from a QR code: `expected_fingerprint` is required.
    Qr,
}

/// A contact to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddContact {
    /// `local@<56 base32>.onion` (checksum verified).
    #[schema(min_length = 3, max_length = 320)]
    pub address: String,
    #[serde(default)]
    #[schema(max_length = 128)]
    pub display_name: Option<String>,
    /// The key (binary OpenPGP certificate, base64); absent means fetch it by WKD over the
    /// contact's onion.
    #[serde(default)]
    pub public_key: Option<String>,
    /// From a QR code: the key must have this fingerprint.
    #[serde(default)]
    pub expected_fingerprint: Option<String>,
    /// Carrier onions to trust with this contact's mail.
    #[serde(default)]
    pub designated_carriers: Option<Vec<String>>,
    #[serde(default)]
    pub source: Option<AddSource>,
}

pub(crate) fn carriers(field: &str, list: &[String]) -> Result<Vec<String>, AdminError> {
    list.iter()
        .enumerate()
        .map(|(index, host)| validate::onion_host(&format!("{field}[{index}]"), host))
        .collect()
}

fn public_key(field: &str, text: &str) -> Result<Vec<u8>, AdminError> {
    BASE64
        .decode(text.trim())
        .map_err(|_| AdminError::invalid(field, "not base64"))
}

#[utoipa::path(
    post, path = "/v1/accounts/{id}/contacts", tag = "contacts",
    params(("id" = String, Path, description = "Account id")),
    request_body = AddContact,
    responses((status = 201, description = "The contact, with its key pinned", body = Contact)),
)]
pub async fn add_contact(
    State(state): State<AdminState>,
    Path(account_id): Path<String>,
    ApiJson(request): ApiJson<AddContact>,
) -> Result<(StatusCode, Json<Contact>), AdminError> {
    validate::address("address", &request.address)?;
    let display_name = request.display_name.unwrap_or_default();
    validate::name(
        "display_name",
        &display_name,
        validate::MAX_DISPLAY_NAME_LEN,
        true,
    )?;
    let key = match &request.public_key {
        Some(text) => public_key("public_key", text)?,
        None => Vec::new(),
    };
    let expected = match &request.expected_fingerprint {
        Some(text) => validate::fingerprint("expected_fingerprint", text)?,
        None => String::new(),
    };
    let source = request.source.unwrap_or(AddSource::Manual);
    if matches!(source, AddSource::Qr) && expected.is_empty() {
        return Err(AdminError::invalid(
            "expected_fingerprint",
            "a contact from a QR code needs the fingerprint it showed",
        ));
    }
    let designated = carriers(
        "designated_carriers",
        request.designated_carriers.as_deref().unwrap_or_default(),
    )?;
    fetch_account(&state, &account_id).await?;
    let contact = state
        .directory
        .keys()?
        .add_contact(keys::AddContactRequest {
            account_id,
            address: request.address,
            display_name,
            source: match source {
                AddSource::Manual => keys::KeySource::Manual,
                AddSource::Qr => keys::KeySource::Qr,
            } as i32,
            public_key: key,
            expected_fingerprint: expected,
            designated_carriers: designated,
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(
            |status| match onionpost_runtime::address_book::unreachable_contact(&status) {
                Some(why) => AdminError::invalid("address", why),
                None => AdminError::from_status(ServiceName::Keys, status),
            },
        )?;
    Ok((StatusCode::CREATED, Json(Contact::from_proto(contact))))
}

#[utoipa::path(
    get, path = "/v1/accounts/{id}/contacts/{cid}", tag = "contacts",
    params(("id" = String, Path, description = "Account id"), ("cid" = String, Path, description = "Contact id")),
    responses((status = 200, description = "The contact", body = Contact)),
)]
pub async fn get_contact(
    State(state): State<AdminState>,
    Path((account_id, contact_id)): Path<(String, String)>,
) -> Result<Json<Contact>, AdminError> {
    let contact = state
        .directory
        .keys()?
        .get_contact(keys::GetContactRequest {
            account_id,
            contact: Some(keys::get_contact_request::Contact::ContactId(contact_id)),
        })
        .await
        .upstream(ServiceName::Keys)?;
    Ok(Json(Contact::from_proto(contact)))
}

/// Changes to a contact; absent members stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateContact {
    #[serde(default)]
    #[schema(max_length = 128)]
    pub display_name: Option<String>,
    /// Whether the fingerprint was checked out of band (trust).
    #[serde(default)]
    pub verified: Option<bool>,
    /// Replaces the list of carrier onions trusted with this contact's mail.
    #[serde(default)]
    pub designated_carriers: Option<Vec<String>>,
    /// A key that replaces the pinned one (binary OpenPGP certificate, base64).
    #[serde(default)]
    pub public_key: Option<String>,
}

#[utoipa::path(
    patch, path = "/v1/accounts/{id}/contacts/{cid}", tag = "contacts",
    params(("id" = String, Path, description = "Account id"), ("cid" = String, Path, description = "Contact id")),
    request_body = UpdateContact,
    responses((status = 200, description = "The contact as changed", body = Contact)),
)]
pub async fn update_contact(
    State(state): State<AdminState>,
    Path((account_id, contact_id)): Path<(String, String)>,
    ApiJson(request): ApiJson<UpdateContact>,
) -> Result<Json<Contact>, AdminError> {
    let mut paths = Vec::new();
    let mut change = keys::Contact {
        contact_id: contact_id.clone(),
        account_id: account_id.clone(),
        ..Default::default()
    };
    if let Some(name) = request.display_name {
        validate::name("display_name", &name, validate::MAX_DISPLAY_NAME_LEN, true)?;
        paths.push("display_name".to_owned());
        change.display_name = name;
    }
    if let Some(verified) = request.verified {
        paths.push("verified".to_owned());
        change.verified = verified;
    }
    if let Some(list) = request.designated_carriers {
        paths.push("designated_carriers".to_owned());
        change.designated_carriers = carriers("designated_carriers", &list)?;
    }
    if let Some(text) = request.public_key {
        paths.push("public_key".to_owned());
        change.public_key = public_key("public_key", &text)?;
    }
    let mut keys_client = state.directory.keys()?;
    let contact = if paths.is_empty() {
        keys_client
            .get_contact(keys::GetContactRequest {
                account_id,
                contact: Some(keys::get_contact_request::Contact::ContactId(contact_id)),
            })
            .await
            .upstream(ServiceName::Keys)?
    } else {
        keys_client
            .update_contact(keys::UpdateContactRequest {
                account_id,
                contact: Some(change),
                update_mask: Some(prost_types::FieldMask { paths }),
            })
            .await
            .upstream(ServiceName::Keys)?
    };
    Ok(Json(Contact::from_proto(contact)))
}

#[utoipa::path(
    delete, path = "/v1/accounts/{id}/contacts/{cid}", tag = "contacts",
    params(("id" = String, Path, description = "Account id"), ("cid" = String, Path, description = "Contact id")),
    responses((status = 204, description = "The contact and its pinned key are gone")),
)]
pub async fn delete_contact(
    State(state): State<AdminState>,
    Path((account_id, contact_id)): Path<(String, String)>,
) -> Result<StatusCode, AdminError> {
    state
        .directory
        .keys()?
        .delete_contact(keys::DeleteContactRequest {
            account_id,
            contact_id,
        })
        .await
        .upstream(ServiceName::Keys)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The account's decision on a held key change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyChangeDecision {
    /// The fingerprint of the held key, so the decision never applies to another one.
    pub fingerprint: String,
    /// True pins the new key; false keeps the old one.
    pub accept: bool,
}

#[utoipa::path(
    post, path = "/v1/accounts/{id}/contacts/{cid}/key-change", tag = "contacts",
    params(("id" = String, Path, description = "Account id"), ("cid" = String, Path, description = "Contact id")),
    request_body = KeyChangeDecision,
    responses((status = 200, description = "The contact after the decision", body = Contact)),
)]
pub async fn confirm_key_change(
    State(state): State<AdminState>,
    Path((account_id, contact_id)): Path<(String, String)>,
    ApiJson(request): ApiJson<KeyChangeDecision>,
) -> Result<Json<Contact>, AdminError> {
    let fingerprint = validate::fingerprint("fingerprint", &request.fingerprint)?;
    let contact = state
        .directory
        .keys()?
        .confirm_key_change(keys::ConfirmKeyChangeRequest {
            account_id,
            contact_id,
            fingerprint,
            accept: request.accept,
        })
        .await
        .upstream(ServiceName::Keys)?;
    Ok(Json(Contact::from_proto(contact)))
}

#[utoipa::path(
    post, path = "/v1/accounts/{id}/contacts/{cid}/request", tag = "contacts",
    params(("id" = String, Path, description = "Account id"), ("cid" = String, Path, description = "Contact id")),
    request_body = ContactRequestAnswer,
    responses(
        (status = 200, description = "The request answered", body = ContactRequestAnswered),
        (status = 409, description = "No request of this contact is waiting"),
    ),
)]
pub async fn answer_contact_request(
    State(state): State<AdminState>,
    Path((account_id, contact_id)): Path<(String, String)>,
    ApiJson(request): ApiJson<ContactRequestAnswer>,
) -> Result<Json<ContactRequestAnswered>, AdminError> {
    fetch_account(&state, &account_id).await?;
    let answered = state
        .directory
        .imap()?
        .answer_contact_request(keys::AnswerContactRequestRequest {
            account_id,
            contact_id,
            accept: request.accept,
            identity_id: request.identity_id.unwrap_or_default(),
        })
        .await
        .upstream(ServiceName::Imap)?;
    Ok(Json(ContactRequestAnswered::from_proto(answered)))
}

/// A signed vCard introduction received in mail.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportIntroduction {
    /// The signed vCard MIME part, as received.
    #[schema(min_length = 1)]
    pub part: String,
}

#[utoipa::path(
    post, path = "/v1/identities/{id}/introductions", tag = "contacts",
    params(("id" = String, Path, description = "The identity that received the introduction")),
    request_body = ImportIntroduction,
    responses((status = 200, description = "The contact added or updated in the account's address book", body = Contact)),
)]
pub async fn import_introduction(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<ImportIntroduction>,
) -> Result<Json<Contact>, AdminError> {
    if request.part.trim().is_empty() {
        return Err(AdminError::invalid("part", "must not be empty"));
    }
    fetch_identity(&state, &id).await?;
    let contact = state
        .directory
        .keys()?
        .import_introduction(keys::ImportIntroductionRequest {
            recipient_identity_id: id,
            part: request.part.into_bytes(),
        })
        .await
        .upstream(ServiceName::Keys)?;
    Ok(Json(Contact::from_proto(contact)))
}

/// Whom to introduce a contact to, and from which identity.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Introduce {
    /// The contact (of the same account) that receives the introduction.
    pub to: String,
    /// The account's identity that signs and sends it.
    pub from_identity: String,
}

/// An introduction on its way.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntroductionSent {
    /// The Message-ID of the mail that carries it.
    pub message_id: String,
}

#[utoipa::path(
    post, path = "/v1/accounts/{id}/contacts/{cid}/introduce", tag = "contacts",
    params(("id" = String, Path, description = "Account id"), ("cid" = String, Path, description = "The contact to introduce")),
    request_body = Introduce,
    responses((status = 202, description = "A signed vCard introduction, in an ordinary message signed by the identity and encrypted to the other contact, is queued for delivery over tor (paper §6)", body = IntroductionSent)),
)]
pub async fn introduce(
    State(state): State<AdminState>,
    Path((account_id, contact_id)): Path<(String, String)>,
    ApiJson(request): ApiJson<Introduce>,
) -> Result<(StatusCode, Json<IntroductionSent>), AdminError> {
    fetch_account(&state, &account_id).await?;
    if request.to.trim().is_empty() {
        return Err(AdminError::invalid("to", "must name a contact"));
    }
    let identity = match fetch_identity(&state, &request.from_identity).await {
        Ok(identity) if identity.account_id == account_id => identity,
        Ok(_) | Err(AdminError::NotFound(_)) => {
            return Err(AdminError::invalid(
                "from_identity",
                "not an identity of this account",
            ));
        }
        Err(other) => return Err(other),
    };
    let mail = state
        .directory
        .keys()?
        .seal_introduction(keys::SealIntroductionRequest {
            introducer_identity_id: identity.identity_id.clone(),
            contact_id,
            to_contact_id: request.to,
        })
        .await
        .upstream(ServiceName::Keys)?;
    let message_id = mail.message_id.clone();
    state
        .directory
        .queue()?
        .enqueue(onionpost_runtime::address_book::enqueue_sealed(
            &account_id,
            &identity.identity_id,
            &identity.address,
            mail,
            true,
        ))
        .await
        .upstream(ServiceName::Queue)?;
    tracing::info!(%account_id, "introduction sent from the admin API");
    Ok((StatusCode::ACCEPTED, Json(IntroductionSent { message_id })))
}

#[utoipa::path(
    get, path = "/v1/accounts/{id}/contacts-policy", tag = "contacts",
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, description = "How the account's address book takes introductions that arrive in mail", body = AddressBookPolicy)),
)]
pub async fn get_contacts_policy(
    State(state): State<AdminState>,
    Path(account_id): Path<String>,
) -> Result<Json<AddressBookPolicy>, AdminError> {
    fetch_account(&state, &account_id).await?;
    let policy = state
        .directory
        .keys()?
        .get_address_book_policy(keys::GetAddressBookPolicyRequest { account_id })
        .await
        .upstream(ServiceName::Keys)?;
    Ok(Json(AddressBookPolicy {
        confirm_introductions: policy.confirm_introductions,
    }))
}

#[utoipa::path(
    put, path = "/v1/accounts/{id}/contacts-policy", tag = "contacts",
    params(("id" = String, Path, description = "Account id")),
    request_body = AddressBookPolicy,
    responses((status = 200, description = "The policy, as set", body = AddressBookPolicy)),
)]
pub async fn set_contacts_policy(
    State(state): State<AdminState>,
    Path(account_id): Path<String>,
    ApiJson(request): ApiJson<AddressBookPolicy>,
) -> Result<Json<AddressBookPolicy>, AdminError> {
    fetch_account(&state, &account_id).await?;
    let policy = state
        .directory
        .keys()?
        .set_address_book_policy(keys::SetAddressBookPolicyRequest {
            account_id,
            policy: Some(keys::AddressBookPolicy {
                confirm_introductions: request.confirm_introductions,
            }),
        })
        .await
        .upstream(ServiceName::Keys)?;
    Ok(Json(AddressBookPolicy {
        confirm_introductions: policy.confirm_introductions,
    }))
}
