//! Identities: each one an onion (onion service), an OpenPGP key (keys service) and a record of
//! the account that owns it (imap service). Making, importing, revoking one and replacing its key
//! is a single call on imap's contract (`CreateIdentity`, `ImportIdentity`, `RevokeIdentity`,
//! `RotateIdentityKey`), which ties the three together and undoes what it made when a later
//! step refuses; these routes only validate, call and show the identity as the three services
//! see it.

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

use super::lookup::{fetch_account, fetch_identity};
use super::time;
use crate::AdminState;
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
            // Still serving its revocation: no longer an identity of the carrier.
            onion::OnionState::Revoked | onion::OnionState::Retiring => {
                Some(IdentityState::Revoked)
            }
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
#[derive(Debug, Serialize, Deserialize, ToSchema)]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

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
    // imap makes the onion, the key and the record, and undoes them when a step fails.
    let created = state
        .directory
        .imap()?
        .create_identity(imap::CreateIdentityRequest {
            account_id,
            local_part: request.local_part,
            display_name,
        })
        .await
        .upstream(ServiceName::Imap)?;
    let (Some(recorded), Some(onion_service), Some(key)) =
        (created.identity, created.onion, created.key)
    else {
        return Err(super::corrupt("created identity"));
    };
    Ok((
        StatusCode::CREATED,
        Json(Identity {
            id: recorded.identity_id,
            account_id: recorded.account_id,
            address: recorded.address,
            onion: onion_service.onion_address,
            display_name: recorded.display_name,
            fingerprint: Some(key.fingerprint),
            preferred_carriers: key.preferred_carriers,
            state: IdentityState::from_proto(onion_service.state)
                .unwrap_or(IdentityState::Publishing),
            last_error: non_empty(onion_service.last_error),
            created_at: time(recorded.created_at).or(time(onion_service.created_at)),
        }),
    ))
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
        .directory
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
        .directory
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
    fetch_account(&state, &account_id).await?;
    let records = state
        .directory
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
    responses((status = 204, description = "Revoked: the key is revoked and the revocation sent in signed mail to the peers this identity corresponded with; the onion serves it at its WKD path for `tor.revocation_serve_secs`, then goes for good")),
)]
pub async fn delete_identity(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AdminError> {
    // imap revokes the key, queues its announcements, retires the onion, then forgets the
    // record (404 for an unknown id).
    state
        .directory
        .imap()?
        .revoke_identity(imap::RevokeIdentityRequest { identity_id: id })
        .await
        .upstream(ServiceName::Imap)?;
    Ok(StatusCode::NO_CONTENT)
}

/// An identity's key after it moved to a new one.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RotatedKey {
    pub identity_id: String,
    /// The new key's fingerprint (upper-case hex).
    pub fingerprint: String,
    /// The key it replaced; the carrier keeps it to open mail already on its way to it.
    pub previous_fingerprint: String,
    /// How many peers (those this identity corresponded with) were sent the new key in mail
    /// signed by the previous one.
    pub peers_announced: u32,
}

#[utoipa::path(
    post, path = "/v1/identities/{id}/rotate-key", tag = "identities",
    params(("id" = String, Path, description = "Identity id")),
    responses((status = 200, description = "The identity has a new key on the same address, certified by the previous one: WKD serves it at once, its mail carries it in Autocrypt, and each peer this identity corresponded with is sent it in mail signed by the previous key, so their carriers move to it without asking their accounts", body = RotatedKey)),
)]
pub async fn rotate_key(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<RotatedKey>, AdminError> {
    let rotated = state
        .directory
        .imap()?
        .rotate_identity_key(imap::RotateIdentityKeyRequest {
            identity_id: id.clone(),
        })
        .await
        .upstream(ServiceName::Imap)?;
    Ok(Json(RotatedKey {
        identity_id: id,
        fingerprint: rotated.fingerprint,
        previous_fingerprint: rotated.previous_fingerprint,
        peers_announced: rotated.peers_announced,
    }))
}

async fn qr(state: &AdminState, id: &str, format: keys::QrFormat) -> Result<Response, AdminError> {
    fetch_identity(state, id).await?;
    let image = state
        .directory
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
        .directory
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
    // imap has keys restore the key and onion, then records the identity (undoing both when
    // the record is refused).
    let recorded = state
        .directory
        .imap()?
        .import_identity(imap::ImportIdentityRequest {
            account_id,
            bundle,
            passphrase: request.passphrase,
            display_name,
        })
        .await
        .upstream(ServiceName::Imap)?;
    Ok((StatusCode::CREATED, Json(describe(&state, recorded).await?)))
}
