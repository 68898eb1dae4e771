//! The account's clearnet aliases (held by the gateway): one alias per identity and clearnet
//! correspondent, so correspondents cannot tell that two aliases reach one person; listing them
//! and revoking one. The gateway checks every revocation against the session's account, so
//! another account's alias is "no such alias", exactly like one that does not exist.

use chrono::{DateTime, Utc};
use onionpost_proto::ServiceName;
use onionpost_proto::gateway::v1 as gateway;
use onionpost_runtime::time::{from_ms, timestamp_ms};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::PortalState;
use crate::error::{PortalError, Upstream as _};

const PAGE_SIZE: u32 = 100;
const MAX_TEXT_BYTES: usize = 1024;

/// One identity as one clearnet correspondent knows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Alias {
    /// `<alias>@<gateway domain>`.
    pub address: String,
    /// The identity it reaches.
    pub identity_id: String,
    /// The clearnet address it was made for.
    pub correspondent: String,
    pub created_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// Set once revoked: mail to it is refused like mail to an alias that never existed.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// One page of aliases.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AliasPage {
    pub aliases: Vec<Alias>,
    /// Absent on the last page.
    pub next_page_token: Option<String>,
    /// Whether this carrier runs a clearnet gateway at all.
    pub gateway_offered: bool,
}

fn time(timestamp: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    timestamp.map(|value| from_ms(timestamp_ms(&value)))
}

fn view(alias: gateway::Alias) -> Alias {
    Alias {
        address: alias.address,
        identity_id: alias.identity_id,
        correspondent: alias.correspondent,
        created_at: time(alias.created_at),
        last_used_at: time(alias.last_used_at),
        revoked_at: time(alias.revoked_at),
    }
}

/// One page of the account's aliases (live ones, or all).
pub async fn aliases(
    state: &PortalState,
    account_id: &str,
    include_revoked: bool,
    page_token: &str,
) -> Result<AliasPage, PortalError> {
    if page_token.len() > MAX_TEXT_BYTES {
        return Err(PortalError::invalid("page_token", "is too long"));
    }
    // A carrier without a gateway has no aliases to show, which is not a failure.
    let Ok(mut client) = state.directory.gateway() else {
        return Ok(AliasPage {
            aliases: Vec::new(),
            next_page_token: None,
            gateway_offered: false,
        });
    };
    let page = client
        .list_aliases(gateway::ListAliasesRequest {
            account_id: account_id.to_owned(),
            identity_id: String::new(),
            include_revoked,
            page_size: PAGE_SIZE,
            page_token: page_token.to_owned(),
        })
        .await
        .upstream(ServiceName::Gateway)
        .map_err(|error| match error {
            PortalError::Rejected(detail) => PortalError::invalid("page_token", detail),
            other => other,
        })?;
    Ok(AliasPage {
        aliases: page.aliases.into_iter().map(view).collect(),
        next_page_token: (!page.next_page_token.is_empty()).then_some(page.next_page_token),
        gateway_offered: true,
    })
}

/// Revokes one of the account's aliases: its correspondent's mail is refused from now on.
pub async fn revoke_alias(
    state: &PortalState,
    account_id: &str,
    address: &str,
) -> Result<Alias, PortalError> {
    let no_such = || PortalError::NotFound("no such alias".to_owned());
    if address.trim().is_empty() || address.len() > MAX_TEXT_BYTES {
        return Err(no_such());
    }
    let mut client = state.directory.gateway().map_err(|_| no_such())?;
    let revoked = client
        .revoke_alias(gateway::RevokeAliasRequest {
            address: address.trim().to_owned(),
            account_id: account_id.to_owned(),
        })
        .await
        .upstream(ServiceName::Gateway)
        .map_err(|error| match error {
            PortalError::NotFound(_) | PortalError::Rejected(_) => no_such(),
            other => other,
        })?;
    tracing::info!(account_id, "gateway alias revoked in the portal");
    Ok(view(revoked))
}
