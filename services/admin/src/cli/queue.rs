//! `onionpost admin queue …`: the carrier queue (`/v1/queue`).

use clap::Subcommand;
use serde_json::json;

use super::{ApiClient, Columns, Output, query, segment, word};
use crate::api::queue::{DeleteQueuedQuery, ListQueueQuery, QueuePage, QueuedMessage};

const COLUMNS: Columns = &[
    ("ID", "/id"),
    ("ORIGIN", "/origin"),
    ("SIZE", "/size_bytes"),
    ("HELD", "/held"),
    ("ENQUEUED", "/enqueued_at"),
    ("EXPIRES", "/expires_at"),
];

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// List queued messages.
    List {
        /// Only messages with a recipient in this state (scheduled, delivered,
        /// temporary_failure, permanent_failure).
        #[arg(long)]
        state: Option<String>,
        /// Only held messages.
        #[arg(long)]
        held: bool,
        /// Only messages with a recipient at this address or onion.
        #[arg(long)]
        recipient: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Show one queued message with each recipient's state.
    Show { id: String },
    /// Make its unfinished recipients due now.
    Retry { id: String },
    /// Stop delivery attempts until released.
    Hold { id: String },
    /// Deliver on the schedule again.
    Release { id: String },
    /// Remove it from the queue (no DSN unless --notify-sender).
    Delete {
        id: String,
        #[arg(long)]
        notify_sender: bool,
    },
}

pub(super) async fn run(client: &ApiClient, command: &QueueCommand) -> anyhow::Result<Output> {
    match command {
        QueueCommand::List {
            state,
            held,
            recipient,
            limit,
            page_token,
        } => {
            let filters = ListQueueQuery {
                state: state
                    .as_deref()
                    .map(|text| word("state", text))
                    .transpose()?,
                held: held.then_some(true),
                recipient: recipient.clone(),
                account: None,
                origin: None,
                enqueued_before: None,
                limit: *limit,
                page_token: page_token.clone(),
            };
            let page: QueuePage = client
                .get(&format!("/v1/queue{}", query(&filters)?))
                .await?;
            Output::list(&page, COLUMNS, "/messages")
        }
        QueueCommand::Show { id } => {
            let message: QueuedMessage = client.get(&format!("/v1/queue/{}", segment(id))).await?;
            Output::one(&message, COLUMNS)
        }
        QueueCommand::Retry { id } | QueueCommand::Hold { id } | QueueCommand::Release { id } => {
            let action = match command {
                QueueCommand::Retry { .. } => "retry",
                QueueCommand::Hold { .. } => "hold",
                _ => "release",
            };
            let message: QueuedMessage = client
                .act(&format!("/v1/queue/{}/{action}", segment(id)))
                .await?;
            Output::one(&message, COLUMNS)
        }
        QueueCommand::Delete { id, notify_sender } => {
            let options = DeleteQueuedQuery {
                notify_sender: notify_sender.then_some(true),
            };
            client
                .delete(&format!("/v1/queue/{}{}", segment(id), query(&options)?))
                .await?;
            Output::one(&json!({"deleted": id}), &[("DELETED", "/deleted")])
        }
    }
}
