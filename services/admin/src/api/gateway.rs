//! The clearnet gateway (owned by the gateway service): an account's aliases, revoking one, and
//! the gateway's traffic today. Aliases name correspondents' clearnet addresses, so listing
//! them is per account; nothing here shows message content.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use onionpost_proto::ServiceName;
use onionpost_proto::gateway::v1 as gateway;
use onionpost_proto::gateway::v1::gateway_client::GatewayClient;
use onionpost_runtime::Transport;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{next_token, page_size, time};
use crate::AdminState;
use crate::error::{AdminError, Upstream as _};
use crate::extract::ApiQuery;

/// The gateway, or `None` on a carrier that runs none (no gateway target here and no
/// `remote.gateway`): the routes then answer as a gateway that offers no clearnet mail does (no
/// aliases, no traffic, no such alias) rather than with a 503 that invites a retry.
fn deployed_gateway(state: &AdminState) -> Option<GatewayClient<Transport>> {
    state.directory.gateway().ok()
}

/// One identity as one clearnet correspondent knows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Alias {
    /// `<alias>@<gateway domain>`.
    pub address: String,
    pub identity_id: String,
    pub account_id: String,
    /// The clearnet address the alias was made for.
    pub correspondent: String,
    pub created_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// Set once revoked: mail to it is refused like mail to an alias that never existed.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Alias {
    fn from_proto(alias: gateway::Alias) -> Self {
        Alias {
            address: alias.address,
            identity_id: alias.identity_id,
            account_id: alias.account_id,
            correspondent: alias.correspondent,
            created_at: time(alias.created_at),
            last_used_at: time(alias.last_used_at),
            revoked_at: time(alias.revoked_at),
        }
    }
}

/// Which aliases of the account a page holds.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListAliasesQuery {
    /// Also revoked aliases (default: live ones only).
    pub include_revoked: Option<bool>,
    /// Aliases per page (1 to 500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// From the previous page's `next_page_token`.
    pub page_token: Option<String>,
}

/// One page of aliases.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AliasPage {
    pub aliases: Vec<Alias>,
    /// Absent on the last page.
    pub next_page_token: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/accounts/{id}/aliases", tag = "gateway",
    params(("id" = String, Path, description = "Account id"), ListAliasesQuery),
    responses((status = 200, description = "One page of the account's aliases", body = AliasPage)),
)]
pub async fn list_aliases(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<ListAliasesQuery>,
) -> Result<Json<AliasPage>, AdminError> {
    if id.trim().is_empty() || id.len() > 128 {
        return Err(AdminError::invalid(
            "id",
            "an account id of at most 128 characters",
        ));
    }
    let Some(mut client) = deployed_gateway(&state) else {
        return Ok(Json(AliasPage {
            aliases: Vec::new(),
            next_page_token: None,
        }));
    };
    let page = client
        .list_aliases(gateway::ListAliasesRequest {
            account_id: id,
            identity_id: String::new(),
            include_revoked: query.include_revoked.unwrap_or(false),
            page_size: page_size(query.limit)?,
            page_token: query.page_token.unwrap_or_default(),
        })
        .await
        .upstream(ServiceName::Gateway)?;
    Ok(Json(AliasPage {
        aliases: page.aliases.into_iter().map(Alias::from_proto).collect(),
        next_page_token: next_token(page.next_page_token),
    }))
}

#[utoipa::path(
    post, path = "/v1/aliases/{id}/revoke", tag = "gateway",
    params(("id" = String, Path, description = "The alias address, or its local part")),
    responses((status = 200, description = "The alias, now revoked", body = Alias)),
)]
pub async fn revoke_alias(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Alias>, AdminError> {
    if id.trim().is_empty() || id.len() > 320 {
        return Err(AdminError::invalid(
            "id",
            "an alias address of at most 320 characters",
        ));
    }
    let Some(mut client) = deployed_gateway(&state) else {
        return Err(AdminError::NotFound("no such alias".to_owned()));
    };
    let alias = client
        .revoke_alias(gateway::RevokeAliasRequest {
            address: id,
            account_id: String::new(),
        })
        .await
        .upstream(ServiceName::Gateway)?;
    Ok(Json(Alias::from_proto(alias)))
}

/// Gateway traffic since midnight UTC, and the aliases in use.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GatewayStats {
    pub outbound_delivered_today: u64,
    pub outbound_failed_today: u64,
    pub inbound_accepted_today: u64,
    /// Refused inbound: unknown or revoked alias, size, rate, DMARC rejection.
    pub inbound_refused_today: u64,
    /// Inbound that failed DMARC, whatever the configured policy then did with it.
    pub inbound_dmarc_failed_today: u64,
    /// Inbound that rspamd called spam (delivered to Junk).
    pub inbound_spam_today: u64,
    pub live_aliases: u64,
}

#[utoipa::path(
    get, path = "/v1/gateway/stats", tag = "gateway",
    responses((status = 200, description = "Gateway traffic today", body = GatewayStats)),
)]
pub async fn get_gateway_stats(
    State(state): State<AdminState>,
) -> Result<Json<GatewayStats>, AdminError> {
    let stats = match deployed_gateway(&state) {
        Some(mut client) => client
            .get_stats(gateway::GetStatsRequest {})
            .await
            .upstream(ServiceName::Gateway)?,
        None => gateway::GatewayStats::default(),
    };
    Ok(Json(GatewayStats {
        outbound_delivered_today: stats.outbound_delivered_today,
        outbound_failed_today: stats.outbound_failed_today,
        inbound_accepted_today: stats.inbound_accepted_today,
        inbound_refused_today: stats.inbound_refused_today,
        inbound_dmarc_failed_today: stats.inbound_dmarc_failed_today,
        inbound_spam_today: stats.inbound_spam_today,
        live_aliases: stats.live_aliases,
    }))
}
