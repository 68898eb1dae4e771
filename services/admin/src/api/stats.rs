//! Carrier-wide statistics, gathered from the services that own each count. A service that does
//! not answer is listed in `unavailable_services` and its counts are absent (null), never zero.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use onionpost_proto::ServiceName;
use onionpost_proto::imap::v1 as imap;
use onionpost_proto::onion::v1 as onion;
use onionpost_proto::queue::v1 as queue;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::accounts::AccountState;
use super::identities::IdentityState;
use crate::AdminState;
use crate::error::{AdminError, Upstream as _};

/// The carrier at a glance: counts only, no addresses or logins.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    pub generated_at: DateTime<Utc>,
    /// Accounts by state (`active`, `grace`, `expired`, `suspended`), from imap.
    pub accounts_by_state: Option<BTreeMap<String, u64>>,
    /// Identities by onion state (`publishing`, `online`, `failed`), from onion.
    pub identities_by_state: Option<BTreeMap<String, u64>>,
    /// Messages delivered into mailboxes since midnight UTC, from imap.
    pub messages_delivered_today: Option<u64>,
    /// Messages in the queue, from queue; absent when this carrier runs no queue service.
    pub queue_depth: Option<u64>,
    /// Recipients by delivery state (`scheduled`, `delivered`, `temporary_failure`,
    /// `permanent_failure`), from queue; absent as above.
    pub queue_recipients_by_state: Option<BTreeMap<String, u64>>,
    /// Age of the oldest unfinished queued message, in seconds; absent as above (or when the
    /// queue is empty).
    pub queue_oldest_age_seconds: Option<f64>,
    /// Whether tor's control connection is up (with a pool of tors: at least one), from onion.
    pub tor_control_connected: Option<bool>,
    /// Each tor of the carrier's pool (`tor.control`, or `tor.instances` children), from onion.
    pub tors: Option<Vec<TorInstance>>,
    /// Services that did not answer; their counts are absent, not zero.
    pub unavailable_services: Vec<String>,
}

/// One tor of the pool.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TorInstance {
    /// Its control address as configured, or `child N`.
    pub name: String,
    pub control_connected: bool,
    /// Onions it publishes now.
    pub onions: u32,
    /// Identities placed on it; while it is away the other tors publish them.
    pub onions_placed: u32,
    /// Why it is unreachable, when it is.
    pub last_error: String,
}

/// Asks every service for its counts.
pub async fn gather(state: &AdminState) -> Stats {
    let mut unavailable = Vec::new();

    let imap_stats = imap_stats(state).await;
    let (accounts_by_state, messages_delivered_today) = match imap_stats {
        Ok(stats) => {
            let mut by_state: BTreeMap<String, u64> = ["active", "grace", "expired", "suspended"]
                .into_iter()
                .map(|name| (name.to_owned(), 0))
                .collect();
            for count in stats.accounts_by_state {
                if let Some(account_state) = AccountState::from_proto(count.state) {
                    *by_state
                        .entry(account_state.as_str().to_owned())
                        .or_default() += count.accounts;
                }
            }
            (Some(by_state), Some(stats.messages_delivered_today))
        }
        Err(_) => {
            unavailable.push(ServiceName::Imap.as_str().to_owned());
            (None, None)
        }
    };

    let identities_by_state = match onion_counts(state).await {
        Ok(counts) => Some(counts),
        Err(_) => {
            unavailable.push(ServiceName::Onion.as_str().to_owned());
            None
        }
    };
    let tor_status = tor_status(state).await.ok();
    let tor_control_connected = tor_status.as_ref().map(|status| status.control_connected);
    let tors = tor_status.map(|status| {
        status
            .tors
            .into_iter()
            .map(|tor| TorInstance {
                name: tor.name,
                control_connected: tor.control_connected,
                onions: tor.onions,
                onions_placed: tor.onions_placed,
                last_error: tor.last_error,
            })
            .collect()
    });

    // A carrier without a queue service (none local, no `remote.queue`) has no queue figures;
    // one whose queue does not answer lists it as unavailable.
    let (queue_depth, queue_recipients_by_state, queue_oldest_age_seconds) =
        match state.directory.queue() {
            Err(_) => (None, None, None),
            Ok(mut client) => match client
                .get_stats(queue::GetStatsRequest {})
                .await
                .upstream(ServiceName::Queue)
            {
                Ok(stats) => {
                    let mut by_state: BTreeMap<String, u64> = [
                        "scheduled",
                        "delivered",
                        "temporary_failure",
                        "permanent_failure",
                    ]
                    .into_iter()
                    .map(|name| (name.to_owned(), 0))
                    .collect();
                    for count in stats.by_state {
                        let name = match queue::RecipientState::try_from(count.state) {
                            Ok(queue::RecipientState::Scheduled) => "scheduled",
                            Ok(queue::RecipientState::Delivered) => "delivered",
                            Ok(queue::RecipientState::TemporaryFailure) => "temporary_failure",
                            Ok(queue::RecipientState::PermanentFailure) => "permanent_failure",
                            _ => continue,
                        };
                        *by_state.entry(name.to_owned()).or_default() += count.recipients;
                    }
                    let oldest = super::time(stats.oldest_enqueued_at).map(|enqueued| {
                        (Utc::now() - enqueued).num_milliseconds().max(0) as f64 / 1000.0
                    });
                    (Some(stats.messages), Some(by_state), oldest)
                }
                Err(_) => {
                    unavailable.push(ServiceName::Queue.as_str().to_owned());
                    (None, None, None)
                }
            },
        };

    Stats {
        generated_at: Utc::now(),
        accounts_by_state,
        identities_by_state,
        messages_delivered_today,
        queue_depth,
        queue_recipients_by_state,
        queue_oldest_age_seconds,
        tor_control_connected,
        tors,
        unavailable_services: unavailable,
    }
}

async fn imap_stats(state: &AdminState) -> Result<imap::ImapStats, AdminError> {
    state
        .directory
        .imap()?
        .get_stats(imap::GetStatsRequest {})
        .await
        .upstream(ServiceName::Imap)
}

/// Pages through every onion that is not revoked and counts them by state.
async fn onion_counts(state: &AdminState) -> Result<BTreeMap<String, u64>, AdminError> {
    let mut client = state.directory.onion()?;
    let mut counts: BTreeMap<String, u64> = ["publishing", "online", "failed"]
        .into_iter()
        .map(|name| (name.to_owned(), 0))
        .collect();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_onions(onion::ListOnionsRequest {
                state: onion::OnionState::Unspecified as i32,
                page_size: 500,
                page_token,
            })
            .await
            .upstream(ServiceName::Onion)?;
        for service in page.onions {
            // The carrier's own onion (the portal's) is not an identity.
            if service
                .ports
                .iter()
                .any(|port| port.purpose == onion::PortPurpose::Portal as i32)
            {
                continue;
            }
            // A revoked identity's onion serving its revocation is no identity any more.
            if service.state == onion::OnionState::Retiring as i32 {
                continue;
            }
            if let Some(identity_state) = IdentityState::from_proto(service.state) {
                *counts
                    .entry(identity_state.as_str().to_owned())
                    .or_default() += 1;
            }
        }
        if page.next_page_token.is_empty() {
            return Ok(counts);
        }
        page_token = page.next_page_token;
    }
}

/// The onion service's view of its tors.
async fn tor_status(state: &AdminState) -> Result<onion::TorStatus, AdminError> {
    state
        .directory
        .onion()?
        .get_tor_status(onion::GetTorStatusRequest {})
        .await
        .upstream(ServiceName::Onion)
}

/// Whether the onion service's control connection to tor is up (one tor of a pool suffices).
pub async fn tor_connected(state: &AdminState) -> Result<bool, AdminError> {
    Ok(tor_status(state).await?.control_connected)
}

#[utoipa::path(
    get, path = "/v1/stats", tag = "stats",
    responses((status = 200, description = "The carrier at a glance", body = Stats)),
)]
pub async fn get_stats(State(state): State<AdminState>) -> Result<Json<Stats>, AdminError> {
    Ok(Json(gather(&state).await))
}
