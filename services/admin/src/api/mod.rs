//! The `/v1` routes, their request and response types, and the OpenAPI document generated from
//! them (utoipa): every handler carries its `#[utoipa::path]`, so a route cannot exist without
//! being documented, and the tests walk the document to check every route's authentication.

pub mod accounts;
pub mod carriers;
pub mod contacts;
pub mod gateway;
pub mod identities;
pub mod lookup;
pub mod plans;
pub mod queue;
pub mod stats;
pub mod tokens;

use chrono::{DateTime, Utc};
use utoipa::openapi::OpenApi;
use utoipa::{Modify, OpenApi as _};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AdminState;
use crate::error::{AdminError, Problem};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "onionpost admin API",
        description = "Administer an onionpost carrier: accounts, identities, address books, carriers, plans, vouchers, the queue, the clearnet gateway, tokens and statistics. Every route needs `Authorization: Bearer <token>`; reading needs scope `read`, anything else `write`. Errors are RFC 9457 problem documents.",
        license(name = "AGPL-3.0-or-later")
    ),
    components(schemas(Problem)),
    security(("bearer" = [])),
    tags(
        (name = "accounts", description = "Hosted accounts"),
        (name = "identities", description = "Onion identities of accounts"),
        (name = "contacts", description = "Address books (one per account)"),
        (name = "carriers", description = "Preferred carriers, carry statements and the agreements under which this carrier holds mail for others"),
        (name = "plans", description = "Plans and vouchers"),
        (name = "queue", description = "The carrier queue: envelopes and delivery state"),
        (name = "gateway", description = "The clearnet gateway: aliases and traffic"),
        (name = "tokens", description = "API bearer tokens"),
        (name = "stats", description = "The carrier at a glance"),
    )
)]
struct ApiDoc;

/// Adds the bearer scheme and, to every operation, the problem responses any route can give.
/// Applied to the finished document (after every route is added), not as an `#[openapi]`
/// modifier, which would run before the routes exist.
struct CommonResponses;

/// The problem statuses every `/v1` operation may answer with.
const PROBLEM_STATUSES: [(&str, &str); 10] = [
    (
        "400",
        "The request cannot be read (malformed JSON or query)",
    ),
    ("401", "No bearer token, or not a valid one"),
    ("403", "The token's scope does not allow this"),
    ("404", "No such resource"),
    (
        "409",
        "Conflicts with the current state (taken, limit reached)",
    ),
    ("413", "The request body is too large"),
    ("415", "The request body is not application/json"),
    ("422", "A value is not acceptable; `field` names it"),
    ("500", "Internal error (details are in the carrier's log)"),
    ("503", "A service this request needs is unavailable"),
];

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        onionpost_runtime::http_api::document_problems(openapi, &PROBLEM_STATUSES);
    }
}

/// Every `/v1` route with its documentation.
pub fn api_router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(accounts::list_accounts, accounts::create_account))
        .routes(routes!(
            accounts::get_account,
            accounts::update_account,
            accounts::delete_account
        ))
        .routes(routes!(accounts::redeem_voucher))
        .routes(routes!(accounts::get_quota))
        .routes(routes!(
            identities::list_identities,
            identities::create_identity
        ))
        .routes(routes!(identities::import_identity))
        .routes(routes!(
            identities::get_identity,
            identities::delete_identity
        ))
        .routes(routes!(identities::qr_svg))
        .routes(routes!(identities::qr_png))
        .routes(routes!(identities::export_identity))
        .routes(routes!(identities::rotate_key))
        .routes(routes!(contacts::import_introduction))
        .routes(routes!(contacts::list_contacts, contacts::add_contact))
        .routes(routes!(
            contacts::get_contact,
            contacts::update_contact,
            contacts::delete_contact
        ))
        .routes(routes!(contacts::confirm_key_change))
        .routes(routes!(contacts::answer_contact_request))
        .routes(routes!(
            contacts::get_contacts_policy,
            contacts::set_contacts_policy
        ))
        .routes(routes!(contacts::introduce))
        .routes(routes!(carriers::set_preferred_carriers))
        .routes(routes!(carriers::sign_carry_statement))
        .routes(routes!(
            carriers::list_carry_agreements,
            carriers::add_carry_agreement
        ))
        .routes(routes!(carriers::revoke_carry_agreement))
        .routes(routes!(carriers::list_carry_requests))
        .routes(routes!(carriers::approve_carry_request))
        .routes(routes!(carriers::refuse_carry_request))
        .routes(routes!(plans::list_plans, plans::create_plan))
        .routes(routes!(plans::update_plan))
        .routes(routes!(plans::mint_vouchers))
        .routes(routes!(tokens::list_tokens, tokens::create_token))
        .routes(routes!(tokens::delete_token))
        .routes(routes!(queue::list_queue))
        .routes(routes!(queue::get_queued, queue::delete_queued))
        .routes(routes!(queue::retry_queued))
        .routes(routes!(queue::hold_queued))
        .routes(routes!(queue::release_queued))
        .routes(routes!(gateway::list_aliases))
        .routes(routes!(gateway::revoke_alias))
        .routes(routes!(gateway::get_gateway_stats))
        .routes(routes!(stats::get_stats))
}

/// The OpenAPI document served at `/openapi.json`.
pub fn openapi() -> OpenApi {
    let (_, mut document) = api_router().split_for_parts();
    CommonResponses.modify(&mut document);
    document
}

/// A protobuf timestamp as a date-time; unset or out of range is `None`.
pub fn time(timestamp: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let timestamp = timestamp?;
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    DateTime::from_timestamp(timestamp.seconds, nanos)
}

pub fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// The page size asked for, within bounds (default 50, at most 500).
pub fn page_size(limit: Option<u32>) -> Result<u32, AdminError> {
    match limit {
        None => Ok(50),
        Some(limit @ 1..=500) => Ok(limit),
        Some(_) => Err(AdminError::invalid("limit", "must be between 1 and 500")),
    }
}

/// An empty page token is the last page.
pub fn next_token(token: String) -> Option<String> {
    (!token.is_empty()).then_some(token)
}

/// A response that should not happen: the owning service sent something this API cannot show.
pub fn corrupt(what: &str) -> AdminError {
    tracing::error!(what, "unexpected value from a service");
    AdminError::Internal
}
