//! Carriers (design.md, "Carriers"; the paper's Fig. 4): the carriers an identity of this
//! carrier asks its correspondents to use, the carry requests it signs for other carriers, and
//! the agreements under which this carrier holds mail for identities elsewhere.
//!
//! An identity's preferred carriers are signed with its key by the keys service and published
//! over its onion; a carry statement is signed the same way and handed to the carrier it names
//! (`POST /v1/carry-agreements` there), which checks it against the key the identity's onion
//! serves before it agrees.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use onionpost_proto::ServiceName;
use onionpost_proto::keys::v1 as keys;
use onionpost_proto::queue::v1 as queue;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::identities::{Identity, describe};
use super::lookup::fetch_identity;
use super::{next_token, page_size, time, timestamp};
use crate::AdminState;
use crate::error::{AdminError, Upstream as _};
use crate::extract::{ApiJson, ApiQuery};

/// Carriers one identity may name (the keys service's limit, checked here to name the field).
const MAX_PREFERRED_CARRIERS: usize = 16;
/// A carry statement is a few hundred bytes of ASCII armour.
const MAX_STATEMENT_LEN: usize = 16 * 1024;

/// The carriers an identity asks its correspondents to use while it is offline.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferredCarriers {
    /// Carrier onion hosts, `<56 base32>.onion`, in order of preference; empty clears the list.
    #[schema(max_items = 16)]
    pub carriers: Vec<String>,
}

#[utoipa::path(
    put, path = "/v1/identities/{id}/carriers", tag = "carriers",
    params(("id" = String, Path, description = "Identity id")),
    request_body = PreferredCarriers,
    responses((status = 200, description = "The identity, with the carriers it now publishes (signed by its key, over its onion and in its mail)", body = Identity)),
)]
pub async fn set_preferred_carriers(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<PreferredCarriers>,
) -> Result<Json<Identity>, AdminError> {
    if request.carriers.len() > MAX_PREFERRED_CARRIERS {
        return Err(AdminError::invalid(
            "carriers",
            format!("at most {MAX_PREFERRED_CARRIERS} carriers"),
        ));
    }
    let carriers = super::contacts::carriers("carriers", &request.carriers)?;
    let record = fetch_identity(&state, &id).await?;
    state
        .directory
        .keys()?
        .set_preferred_carriers(keys::SetPreferredCarriersRequest {
            identity_id: id,
            carriers,
            signed_list: Vec::new(),
        })
        .await
        .upstream(ServiceName::Keys)?;
    Ok(Json(describe(&state, record).await?))
}

/// What a carry statement asks of the carrier it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CarryKind {
    /// Hold my mail while I am offline.
    Request,
    /// Stop holding it.
    Withdraw,
}

/// A carry statement for an identity of this carrier to sign.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCarryStatement {
    /// The carrier asked: its onion host, `<56 base32>.onion`.
    pub carrier: String,
    pub kind: CarryKind,
    /// When a request lapses on its own; absent leaves it to the carrier.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Also send it to the carrier, in mail to `postmaster@<carrier>` from the identity (its
    /// carrier verifies it and answers by its policy; a refusal comes back as a DSN).
    #[serde(default)]
    pub send: bool,
}

/// A signed carry statement (ASCII armour), to hand to the carrier it names.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CarryStatement {
    pub statement: String,
    /// Where it was sent (`postmaster@<carrier>`), when `send` asked for it.
    pub sent_to: Option<String>,
}

#[utoipa::path(
    post, path = "/v1/identities/{id}/carry-statements", tag = "carriers",
    params(("id" = String, Path, description = "Identity id")),
    request_body = NewCarryStatement,
    responses((status = 201, description = "The statement, signed by the identity's key (and queued to the carrier's postmaster@ when `send` asked)", body = CarryStatement)),
)]
pub async fn sign_carry_statement(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<NewCarryStatement>,
) -> Result<(StatusCode, Json<CarryStatement>), AdminError> {
    let carrier = crate::validate::onion_host("carrier", &request.carrier)?;
    if request.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(AdminError::invalid("expires_at", "must be in the future"));
    }
    let identity = fetch_identity(&state, &id).await?;
    let signed = state
        .directory
        .keys()?
        .sign_carry_statement(keys::SignCarryStatementRequest {
            identity_id: id,
            carrier: carrier.clone(),
            kind: match request.kind {
                CarryKind::Request => keys::CarryStatementKind::Request,
                CarryKind::Withdraw => keys::CarryStatementKind::Withdraw,
            } as i32,
            expires_at: request.expires_at.map(timestamp),
        })
        .await
        .upstream(ServiceName::Keys)?;
    let statement =
        String::from_utf8(signed.statement).map_err(|_| super::corrupt("carry statement"))?;
    let sent_to = if request.send {
        let mail = onionpost_runtime::carry_mail::statement_message(
            &identity.account_id,
            &identity.identity_id,
            &identity.address,
            &carrier,
            &statement,
        );
        let to = mail.recipients[0].address.clone();
        state
            .directory
            .queue()?
            .enqueue(mail)
            .await
            .upstream(ServiceName::Queue)?;
        Some(to)
    } else {
        None
    };
    Ok((
        StatusCode::CREATED,
        Json(CarryStatement { statement, sent_to }),
    ))
}

/// An identity elsewhere for which this carrier holds mail.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CarryAgreement {
    pub id: String,
    /// The identity carried for, `local@<56 base32>.onion`.
    pub address: String,
    /// The key that signed the request (upper-case hex).
    pub fingerprint: String,
    pub created_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Set once withdrawn by the identity or revoked by an operator.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Bytes held for the identity at most.
    pub max_held_bytes: u64,
    /// Carried messages accepted for the identity in a day at most.
    pub max_messages_per_day: u32,
    /// What is held for the identity now.
    pub held_messages: u64,
    pub held_bytes: u64,
    /// The onion of this carrier the request named: carried mail for the identity is accepted
    /// on that onion's MX only. Empty for agreements of earlier versions, which hold on none.
    pub carrier: String,
}

impl CarryAgreement {
    fn from_proto(agreement: queue::CarryAgreement) -> Self {
        CarryAgreement {
            id: agreement.agreement_id,
            address: agreement.address,
            fingerprint: agreement.fingerprint,
            created_at: time(agreement.created_at),
            expires_at: time(agreement.expires_at),
            revoked_at: time(agreement.revoked_at),
            max_held_bytes: agreement.max_held_bytes,
            max_messages_per_day: agreement.max_messages_per_day,
            held_messages: agreement.held_messages,
            held_bytes: agreement.held_bytes,
            carrier: agreement.carrier,
        }
    }
}

/// A signed carry statement from an identity elsewhere: a request records an agreement, a
/// withdrawal ends the identity's agreements.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceivedStatement {
    /// The statement as the identity signed it (ASCII armour).
    #[schema(min_length = 1, max_length = 16384)]
    pub statement: String,
}

#[utoipa::path(
    post, path = "/v1/carry-agreements", tag = "carriers",
    request_body = ReceivedStatement,
    responses((status = 201, description = "The agreement the statement records (or, for a withdrawal, the one it ended)", body = CarryAgreement)),
)]
pub async fn add_carry_agreement(
    State(state): State<AdminState>,
    ApiJson(request): ApiJson<ReceivedStatement>,
) -> Result<(StatusCode, Json<CarryAgreement>), AdminError> {
    if request.statement.trim().is_empty() || request.statement.len() > MAX_STATEMENT_LEN {
        return Err(AdminError::invalid(
            "statement",
            "a signed carry statement (ASCII armour, at most 16 KiB)",
        ));
    }
    let agreement = state
        .directory
        .queue()?
        .add_carry_agreement(queue::AddCarryAgreementRequest {
            statement: request.statement.into_bytes(),
        })
        .await
        .upstream(ServiceName::Queue)?;
    Ok((
        StatusCode::CREATED,
        Json(CarryAgreement::from_proto(agreement)),
    ))
}

/// Which agreements a page holds.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListAgreementsQuery {
    /// Also withdrawn, revoked and expired agreements (default: live ones only).
    pub include_ended: Option<bool>,
    /// Agreements per page (1 to 500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// From the previous page's `next_page_token`.
    pub page_token: Option<String>,
}

/// One page of carry agreements.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AgreementPage {
    pub agreements: Vec<CarryAgreement>,
    /// Absent on the last page.
    pub next_page_token: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/carry-agreements", tag = "carriers",
    params(ListAgreementsQuery),
    responses((status = 200, description = "One page of the identities this carrier holds mail for", body = AgreementPage)),
)]
pub async fn list_carry_agreements(
    State(state): State<AdminState>,
    ApiQuery(query): ApiQuery<ListAgreementsQuery>,
) -> Result<Json<AgreementPage>, AdminError> {
    let page = state
        .directory
        .queue()?
        .list_carry_agreements(queue::ListCarryAgreementsRequest {
            include_ended: query.include_ended.unwrap_or(false),
            page_size: page_size(query.limit)?,
            page_token: query.page_token.unwrap_or_default(),
        })
        .await
        .upstream(ServiceName::Queue)?;
    Ok(Json(AgreementPage {
        agreements: page
            .agreements
            .into_iter()
            .map(CarryAgreement::from_proto)
            .collect(),
        next_page_token: next_token(page.next_page_token),
    }))
}

#[utoipa::path(
    post, path = "/v1/carry-agreements/{id}/revoke", tag = "carriers",
    params(("id" = String, Path, description = "Agreement id")),
    responses((status = 200, description = "The agreement, ended: new mail for the identity is refused from now on", body = CarryAgreement)),
)]
pub async fn revoke_carry_agreement(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<CarryAgreement>, AdminError> {
    if id.trim().is_empty() || id.len() > 128 {
        return Err(AdminError::invalid(
            "id",
            "an agreement id of at most 128 characters",
        ));
    }
    let agreement = state
        .directory
        .queue()?
        .revoke_carry_agreement(queue::RevokeCarryAgreementRequest {
            by: Some(queue::revoke_carry_agreement_request::By::AgreementId(id)),
        })
        .await
        .upstream(ServiceName::Queue)?;
    Ok(Json(CarryAgreement::from_proto(agreement)))
}

/// Where a carry statement received in mail stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CarryRequestState {
    /// Kept; its signature is not checked yet (the identity's onion may be offline a while).
    Verifying,
    /// Verified; waits for the operator (`queue.carry_policy = approval`).
    Pending,
    /// Applied: an agreement recorded, or the identity's agreements ended.
    Accepted,
    /// Not applied; `detail` says why.
    Refused,
}

/// A carry statement that arrived in mail at `postmaster@<onion>`, and what became of it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CarryRequest {
    pub id: String,
    /// The onion of this carrier it was sent to (and names).
    pub onion: String,
    /// The identity that signed it; absent until verified.
    pub address: Option<String>,
    /// `request` or `withdraw`; absent until verified.
    pub kind: Option<CarryKind>,
    pub state: CarryRequestState,
    pub detail: String,
    pub received_at: Option<DateTime<Utc>>,
    pub decided_at: Option<DateTime<Utc>>,
    /// The agreement it recorded, once accepted.
    pub agreement_id: Option<String>,
}

impl CarryRequest {
    fn from_proto(request: queue::CarryRequest) -> Self {
        CarryRequest {
            state: match request.state() {
                queue::CarryRequestState::Pending => CarryRequestState::Pending,
                queue::CarryRequestState::Accepted => CarryRequestState::Accepted,
                queue::CarryRequestState::Refused => CarryRequestState::Refused,
                _ => CarryRequestState::Verifying,
            },
            kind: match request.kind() {
                keys::CarryStatementKind::Request => Some(CarryKind::Request),
                keys::CarryStatementKind::Withdraw => Some(CarryKind::Withdraw),
                keys::CarryStatementKind::Unspecified => None,
            },
            id: request.request_id,
            onion: request.onion,
            address: Some(request.address).filter(|address| !address.is_empty()),
            detail: request.detail,
            received_at: time(request.received_at),
            decided_at: time(request.decided_at),
            agreement_id: Some(request.agreement_id).filter(|id| !id.is_empty()),
        }
    }
}

/// Which carry requests a page holds.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListCarryRequestsQuery {
    /// Only requests in this state (default: all).
    pub state: Option<CarryRequestState>,
    /// Requests per page (1 to 500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// From the previous page's `next_page_token`.
    pub page_token: Option<String>,
}

/// One page of carry requests received in mail.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CarryRequestPage {
    pub requests: Vec<CarryRequest>,
    /// Absent on the last page.
    pub next_page_token: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/carry-requests", tag = "carriers",
    params(ListCarryRequestsQuery),
    responses((status = 200, description = "One page of the carry statements identities sent in mail to this carrier's postmaster@, verified or not, with what became of each", body = CarryRequestPage)),
)]
pub async fn list_carry_requests(
    State(state): State<AdminState>,
    ApiQuery(query): ApiQuery<ListCarryRequestsQuery>,
) -> Result<Json<CarryRequestPage>, AdminError> {
    let wanted = match query.state {
        None => queue::CarryRequestState::Unspecified,
        Some(CarryRequestState::Verifying) => queue::CarryRequestState::Verifying,
        Some(CarryRequestState::Pending) => queue::CarryRequestState::Pending,
        Some(CarryRequestState::Accepted) => queue::CarryRequestState::Accepted,
        Some(CarryRequestState::Refused) => queue::CarryRequestState::Refused,
    };
    let page = state
        .directory
        .queue()?
        .list_carry_requests(queue::ListCarryRequestsRequest {
            state: wanted as i32,
            page_size: page_size(query.limit)?,
            page_token: query.page_token.unwrap_or_default(),
        })
        .await
        .upstream(ServiceName::Queue)?;
    Ok(Json(CarryRequestPage {
        requests: page
            .requests
            .into_iter()
            .map(CarryRequest::from_proto)
            .collect(),
        next_page_token: next_token(page.next_page_token),
    }))
}

async fn decide(
    state: &AdminState,
    id: String,
    approve: bool,
) -> Result<Json<CarryRequest>, AdminError> {
    if id.trim().is_empty() || id.len() > 128 {
        return Err(AdminError::invalid(
            "id",
            "a carry request id of at most 128 characters",
        ));
    }
    let decided = state
        .directory
        .queue()?
        .decide_carry_request(queue::DecideCarryRequestRequest {
            request_id: id,
            approve,
        })
        .await
        .upstream(ServiceName::Queue)?;
    Ok(Json(CarryRequest::from_proto(decided)))
}

#[utoipa::path(
    post, path = "/v1/carry-requests/{id}/approve", tag = "carriers",
    params(("id" = String, Path, description = "Carry request id")),
    responses((status = 200, description = "Approved: the agreement is recorded and carried mail for the identity is accepted on the onion it named", body = CarryRequest)),
)]
pub async fn approve_carry_request(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<CarryRequest>, AdminError> {
    decide(&state, id, true).await
}

#[utoipa::path(
    post, path = "/v1/carry-requests/{id}/refuse", tag = "carriers",
    params(("id" = String, Path, description = "Carry request id")),
    responses((status = 200, description = "Refused: kept as refused, nothing is carried", body = CarryRequest)),
)]
pub async fn refuse_carry_request(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<CarryRequest>, AdminError> {
    decide(&state, id, false).await
}
