//! `onionpost admin stats`: the carrier at a glance (`/v1/stats`), as a few lines of text.

use std::collections::BTreeMap;

use super::{ApiClient, Output};
use crate::api::stats::Stats;

pub(super) async fn run(client: &ApiClient) -> anyhow::Result<Output> {
    let stats: Stats = client.get("/v1/stats").await?;
    let text = stats_text(&stats);
    Output::text(&stats, text)
}

/// `name count, …`, or `unavailable` when the service that counts did not answer.
fn counts(by_name: Option<&BTreeMap<String, u64>>) -> String {
    match by_name {
        Some(map) => map
            .iter()
            .map(|(name, count)| format!("{name} {count}"))
            .collect::<Vec<_>>()
            .join(", "),
        None => "unavailable".to_owned(),
    }
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.to_string())
}

fn stats_text(stats: &Stats) -> String {
    let mut lines = vec![
        format!("accounts      {}", counts(stats.accounts_by_state.as_ref())),
        format!(
            "identities    {}",
            counts(stats.identities_by_state.as_ref())
        ),
        format!(
            "delivered     {} today",
            or_dash(stats.messages_delivered_today)
        ),
        format!(
            "queue         depth {}, oldest {} s",
            or_dash(stats.queue_depth),
            or_dash(stats.queue_oldest_age_seconds)
        ),
        format!(
            "tor control   {}",
            match stats.tor_control_connected {
                Some(true) => "connected",
                Some(false) => "disconnected",
                None => "unknown",
            }
        ),
    ];
    // A pool of tors: one line each.
    let pool = stats.tors.iter().flatten();
    if pool.clone().count() > 1 {
        for tor in pool {
            let error = match tor.last_error.as_str() {
                "" => String::new(),
                error => format!(": {error}"),
            };
            let state = if tor.control_connected {
                "connected"
            } else {
                "disconnected"
            };
            lines.push(format!(
                "  tor {}  {state}, {} onions ({} placed){error}",
                tor.name, tor.onions, tor.onions_placed
            ));
        }
    }
    if !stats.unavailable_services.is_empty() {
        lines.push(format!(
            "unavailable   {}",
            stats.unavailable_services.join(", ")
        ));
    }
    lines.join("\n")
}
