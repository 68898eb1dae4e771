//! Identities: each one an onion (onion service), an OpenPGP key (keys service) and a record of
//! the account that owns it (imap service). The admin API is what ties the three together: it
//! allocates the identity id they share and undoes what it created when a later step refuses.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use onionpost_proto::ServiceName;
use onionpost_proto::imap::v1 as imap;
use onionpost_proto::keys::v1 as keys;
use onionpost_proto::onion::v1 as onion;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::contacts::Contact;
use super::time;
use crate::AdminState;
use crate::auth::random_id;
use crate::error::{AdminError, Upstream as _};
use crate::extract::ApiJson;
use crate::validate;

/// Where an identity's onion stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IdentityState {
    /// Added to tor; no descriptor upload has succeeded yet.
    Publishing,
    /// Published: peers can reach the identity.
    Online,
    /// Publishing failed; tor keeps retrying (see `last_error`).
    Failed,
    /// Revoked; final.
    Revoked,
}

impl IdentityState {
    pub fn from_proto(value: i32) -> Option<Self> {
        match onion::OnionState::try_from(value).ok()? {
            onion::OnionState::Publishing => Some(IdentityState::Publishing),
            onion::OnionState::Online => Some(IdentityState::Online),
            onion::OnionState::Failed => Some(IdentityState::Failed),
            onion::OnionState::Revoked => Some(IdentityState::Revoked),
            onion::OnionState::Unspecified => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IdentityState::Publishing => "publishing",
            IdentityState::Online => "online",
            IdentityState::Failed => "failed",
            IdentityState::Revoked => "revoked",
        }
    }
}

/// An identity of an account.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Identity {
    pub id: String,
    pub account_id: String,
    /// `local@<56 base32>.onion`.
    pub address: String,
    /// The onion host alone.
    pub onion: String,
    pub display_name: String,
    /// The OpenPGP fingerprint (upper-case hex); absent if the key service has none.
    pub fingerprint: Option<String>,
    /// Carrier onions the identity asks its correspondents to use while it is offline
    /// (`PUT /v1/identities/{id}/carriers`).
    pub preferred_carriers: Vec<String>,
    pub state: IdentityState,
    /// Why publishing failed, in words for an operator.
    pub last_error: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

/// A new identity for an account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIdentity {
    /// The part before `@`: an RFC 5322 dot-atom.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$"
    )]
    pub local_part: String,
    /// Goes into the key's user ID; absent keeps the address alone (a name can identify a
    /// person).
    #[serde(default)]
    #[schema(max_length = 128)]
    pub display_name: Option<String>,
}

/// Hosted accounts read and send through their identity's own onion, so every identity gets
/// the IMAP and submission ports as well as SMTP and WKD.
const PURPOSES: [onion::PortPurpose; 4] = [
    onion::PortPurpose::Smtp,
    onion::PortPurpose::Wkd,
    onion::PortPurpose::Imap,
    onion::PortPurpose::Submission,
];

#[utoipa::path(
    post, path = "/v1/accounts/{id}/identities", tag = "identities",
    params(("id" = String, Path, description = "Account id")),
    request_body = CreateIdentity,
    responses((status = 201, description = "The identity was created; it is `publishing` until its onion is online", body = Identity)),
)]
pub async fn create_identity(
    State(state): State<AdminState>,
    Path(account_id): Path<String>,
    ApiJson(request): ApiJson<CreateIdentity>,
) -> Result<(StatusCode, Json<Identity>), AdminError> {
    validate::local_part("local_part", &request.local_part)?;
    let display_name = request.display_name.unwrap_or_default();
    validate::name(
        "display_name",
        &display_name,
        validate::MAX_DISPLAY_NAME_LEN,
        true,
    )?;
    let account = super::accounts::fetch_account(&state, &account_id).await?;
    if account.identities >= account.identities_allowed {
        // imap enforces this atomically too; asking first spares an onion and a key.
        return Err(AdminError::Conflict(format!(
            "the account's plan allows {} identities and it has {}",
            account.identities_allowed, account.identities
        )));
    }
    let identity_id = random_id();
    let mut onions = state.onion()?;
    let mut keys_client = state.keys()?;
    let mut imap_client = state.imap()?;
    let created = onions
        .create_onion(onion::CreateOnionRequest {
            identity_id: identity_id.clone(),
            purposes: PURPOSES.iter().map(|purpose| *purpose as i32).collect(),
        })
        .await
        .upstream(ServiceName::Onion)?;
    let address = format!(
        "{}@{}",
        request.local_part.to_ascii_lowercase(),
        created.onion_address
    );
    let key = match keys_client
        .create_identity_key(keys::CreateIdentityKeyRequest {
            identity_id: identity_id.clone(),
            account_id: account_id.clone(),
            address: address.clone(),
            display_name: display_name.clone(),
            client_public_key: Vec::new(),
        })
        .await
        .upstream(ServiceName::Keys)
    {
        Ok(key) => key,
        Err(error) => {
            roll_back(&state, &identity_id, false).await;
            return Err(error);
        }
    };
    let recorded = match imap_client
        .add_identity(imap::AddIdentityRequest {
            identity_id: identity_id.clone(),
            account_id: account_id.clone(),
            address: address.clone(),
            display_name: display_name.clone(),
        })
        .await
        .upstream(ServiceName::Imap)
    {
        Ok(recorded) => recorded,
        Err(error) => {
            roll_back(&state, &identity_id, true).await;
            return Err(error);
        }
    };
    tracing::info!(%identity_id, %account_id, "identity created");
    Ok((
        StatusCode::CREATED,
        Json(Identity {
            id: identity_id,
            account_id,
            address: recorded.address,
            onion: created.onion_address,
            display_name,
            fingerprint: Some(key.fingerprint),
            preferred_carriers: key.preferred_carriers,
            state: IdentityState::from_proto(created.state).unwrap_or(IdentityState::Publishing),
            last_error: non_empty(created.last_error),
            created_at: time(recorded.created_at).or(time(created.created_at)),
        }),
    ))
}

/// Undoes a half-made identity: its key (when made) and its onion. Failures are logged: the
/// caller is already answering with the error that caused the roll-back.
async fn roll_back(state: &AdminState, identity_id: &str, key_made: bool) {
    if key_made && let Ok(mut keys_client) = state.keys() {
        let revoked = keys_client
            .revoke_identity_key(keys::RevokeIdentityKeyRequest {
                identity_id: identity_id.to_owned(),
                reason: keys::RevocationReason::Retired as i32,
                message: String::new(),
            })
            .await;
        if let Err(status) = revoked {
            tracing::warn!(%identity_id, code = ?status.code(), "roll-back: revoking the identity key failed");
        }
    }
    if let Ok(mut onions) = state.onion() {
        let revoked = onions
            .revoke_onion(onion::RevokeOnionRequest {
                identity_id: identity_id.to_owned(),
            })
            .await;
        if let Err(status) = revoked {
            tracing::warn!(%identity_id, code = ?status.code(), "roll-back: revoking the onion failed");
        }
    }
    tracing::info!(%identity_id, "identity creation rolled back");
}

/// Revokes an identity for good: key (signed revocation), onion, then the account's record.
pub async fn revoke(state: &AdminState, identity_id: &str) -> Result<(), AdminError> {
    let revoked = state
        .keys()?
        .revoke_identity_key(keys::RevokeIdentityKeyRequest {
            identity_id: identity_id.to_owned(),
            reason: keys::RevocationReason::Retired as i32,
            message: String::new(),
        })
        .await
        .upstream(ServiceName::Keys);
    // An identity whose key was never made (or is gone) can still be removed.
    if let Err(error) = revoked
        && !matches!(error, AdminError::NotFound(_))
    {
        return Err(error);
    }
    let revoked = state
        .onion()?
        .revoke_onion(onion::RevokeOnionRequest {
            identity_id: identity_id.to_owned(),
        })
        .await
        .upstream(ServiceName::Onion);
    if let Err(error) = revoked
        && !matches!(error, AdminError::NotFound(_))
    {
        return Err(error);
    }
    state
        .imap()?
        .remove_identity(imap::RemoveIdentityRequest {
            identity_id: identity_id.to_owned(),
        })
        .await
        .upstream(ServiceName::Imap)?;
    tracing::info!(%identity_id, "identity revoked");
    Ok(())
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// An identity as the three services see it.
pub(crate) async fn describe(
    state: &AdminState,
    record: imap::Identity,
) -> Result<Identity, AdminError> {
    let onion_service = state
        .onion()?
        .get_onion(onion::GetOnionRequest {
            identity_id: record.identity_id.clone(),
        })
        .await
        .upstream(ServiceName::Onion);
    let (onion_state, last_error) = match onion_service {
        Ok(service) => (
            IdentityState::from_proto(service.state).unwrap_or(IdentityState::Publishing),
            non_empty(service.last_error),
        ),
        Err(AdminError::NotFound(_)) => (IdentityState::Revoked, None),
        Err(error) => return Err(error),
    };
    let key = state
        .keys()?
        .get_identity_key(keys::GetIdentityKeyRequest {
            identity: Some(keys::get_identity_key_request::Identity::IdentityId(
                record.identity_id.clone(),
            )),
        })
        .await
        .upstream(ServiceName::Keys);
    let (fingerprint, preferred_carriers) = match key {
        Ok(key) => (Some(key.fingerprint), key.preferred_carriers),
        Err(AdminError::NotFound(_)) => (None, Vec::new()),
        Err(error) => return Err(error),
    };
    Ok(Identity {
        id: record.identity_id,
        account_id: record.account_id,
        address: record.address,
        onion: record.onion,
        display_name: record.display_name,
        fingerprint,
        preferred_carriers,
        state: onion_state,
        last_error,
        created_at: time(record.created_at),
    })
}

pub(crate) async fn fetch_identity(
    state: &AdminState,
    id: &str,
) -> Result<imap::Identity, AdminError> {
    state
        .imap()?
        .get_identity(imap::GetIdentityRequest {
            identity: Some(imap::get_identity_request::Identity::IdentityId(
                id.to_owned(),
            )),
        })
        .await
        .upstream(ServiceName::Imap)
}

/// An account's identities.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IdentityList {
    pub identities: Vec<Identity>,
}

#[utoipa::path(
    get, path = "/v1/accounts/{id}/identities", tag = "identities",
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, description = "The account's identities", body = IdentityList)),
)]
pub async fn list_identities(
    State(state): State<AdminState>,
    Path(account_id): Path<String>,
) -> Result<Json<IdentityList>, AdminError> {
    super::accounts::fetch_account(&state, &account_id).await?;
    let records = state
        .imap()?
        .list_identities(imap::ListIdentitiesRequest { account_id })
        .await
        .upstream(ServiceName::Imap)?;
    let mut identities = Vec::with_capacity(records.identities.len());
    for record in records.identities {
        identities.push(describe(&state, record).await?);
    }
    Ok(Json(IdentityList { identities }))
}

#[utoipa::path(
    get, path = "/v1/identities/{id}", tag = "identities",
    params(("id" = String, Path, description = "Identity id")),
    responses((status = 200, description = "The identity", body = Identity)),
)]
pub async fn get_identity(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Identity>, AdminError> {
    let record = fetch_identity(&state, &id).await?;
    Ok(Json(describe(&state, record).await?))
}

#[utoipa::path(
    delete, path = "/v1/identities/{id}", tag = "identities",
    params(("id" = String, Path, description = "Identity id")),
    responses((status = 204, description = "Revoked: key revoked, onion removed for good")),
)]
pub async fn delete_identity(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AdminError> {
    fetch_identity(&state, &id).await?;
    revoke(&state, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn qr(state: &AdminState, id: &str, format: keys::QrFormat) -> Result<Response, AdminError> {
    fetch_identity(state, id).await?;
    let image = state
        .keys()?
        .get_identity_qr(keys::GetIdentityQrRequest {
            identity_id: id.to_owned(),
            format: format as i32,
        })
        .await
        .upstream(ServiceName::Keys)?;
    let media_type = match format {
        keys::QrFormat::Png => "image/png",
        _ => "image/svg+xml",
    };
    Ok(([(header::CONTENT_TYPE, media_type)], image.image).into_response())
}

#[utoipa::path(
    get, path = "/v1/identities/{id}/qr.svg", tag = "identities",
    params(("id" = String, Path, description = "Identity id")),
    responses((status = 200, description = "The identity's `openpgp4fpr:` URI as a QR code", content_type = "image/svg+xml", body = String)),
)]
pub async fn qr_svg(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    qr(&state, &id, keys::QrFormat::Svg).await
}

#[utoipa::path(
    get, path = "/v1/identities/{id}/qr.png", tag = "identities",
    params(("id" = String, Path, description = "Identity id")),
    responses((status = 200, description = "The identity's `openpgp4fpr:` URI as a QR code", content_type = "image/png", body = Vec<u8>)),
)]
pub async fn qr_png(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    qr(&state, &id, keys::QrFormat::Png).await
}

/// The passphrase that encrypts an exported bundle.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportIdentity {
    #[schema(min_length = 8, max_length = 1024)]
    pub passphrase: String,
}

/// An identity bundle: its OpenPGP key and onion key, encrypted with the passphrase.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IdentityBundle {
    /// The bundle, base64.
    pub bundle: String,
}

#[utoipa::path(
    post, path = "/v1/identities/{id}/export", tag = "identities",
    params(("id" = String, Path, description = "Identity id")),
    request_body = ExportIdentity,
    responses((status = 200, description = "The bundle; the carrier does not keep it", body = IdentityBundle)),
)]
pub async fn export_identity(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<ExportIdentity>,
) -> Result<Json<IdentityBundle>, AdminError> {
    validate::password("passphrase", &request.passphrase)?;
    fetch_identity(&state, &id).await?;
    let bundle = state
        .keys()?
        .export_identity(keys::ExportIdentityRequest {
            identity_id: id.clone(),
            passphrase: request.passphrase,
        })
        .await
        .upstream(ServiceName::Keys)?;
    tracing::info!(identity_id = %id, "identity exported");
    Ok(Json(IdentityBundle {
        bundle: BASE64.encode(bundle.bundle),
    }))
}

/// A bundle to bring onto this carrier for an account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportIdentity {
    /// The bundle, base64, as exported.
    #[schema(min_length = 1)]
    pub bundle: String,
    #[schema(min_length = 8, max_length = 1024)]
    pub passphrase: String,
    #[serde(default)]
    #[schema(max_length = 128)]
    pub display_name: Option<String>,
}

#[utoipa::path(
    post, path = "/v1/accounts/{id}/identities/import", tag = "identities",
    params(("id" = String, Path, description = "Account id")),
    request_body = ImportIdentity,
    responses((status = 201, description = "The identity, with the address and key it had", body = Identity)),
)]
pub async fn import_identity(
    State(state): State<AdminState>,
    Path(account_id): Path<String>,
    ApiJson(request): ApiJson<ImportIdentity>,
) -> Result<(StatusCode, Json<Identity>), AdminError> {
    let bundle = BASE64
        .decode(request.bundle.trim())
        .map_err(|_| AdminError::invalid("bundle", "not base64"))?;
    validate::password("passphrase", &request.passphrase)?;
    let display_name = request.display_name.unwrap_or_default();
    validate::name(
        "display_name",
        &display_name,
        validate::MAX_DISPLAY_NAME_LEN,
        true,
    )?;
    let account = super::accounts::fetch_account(&state, &account_id).await?;
    if account.identities >= account.identities_allowed {
        return Err(AdminError::Conflict(format!(
            "the account's plan allows {} identities and it has {}",
            account.identities_allowed, account.identities
        )));
    }
    let identity_id = random_id();
    // keys stores the OpenPGP key and hands the onion key to the onion service itself.
    let key = state
        .keys()?
        .import_identity(keys::ImportIdentityRequest {
            identity_id: identity_id.clone(),
            account_id: account_id.clone(),
            bundle,
            passphrase: request.passphrase,
        })
        .await
        .upstream(ServiceName::Keys)?;
    let recorded = state
        .imap()?
        .add_identity(imap::AddIdentityRequest {
            identity_id: identity_id.clone(),
            account_id: account_id.clone(),
            address: key.address.clone(),
            display_name,
        })
        .await
        .upstream(ServiceName::Imap);
    let recorded = match recorded {
        Ok(recorded) => recorded,
        Err(error) => {
            roll_back(&state, &identity_id, true).await;
            return Err(error);
        }
    };
    tracing::info!(%identity_id, %account_id, "identity imported");
    Ok((StatusCode::CREATED, Json(describe(&state, recorded).await?)))
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
        .keys()?
        .import_introduction(keys::ImportIntroductionRequest {
            recipient_identity_id: id,
            part: request.part.into_bytes(),
        })
        .await
        .upstream(ServiceName::Keys)?;
    Ok(Json(Contact::from_proto(contact)))
}
