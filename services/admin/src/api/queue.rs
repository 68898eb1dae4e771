//! The carrier queue (owned by the queue service): list, show, retry now, hold, release,
//! delete. Operators see envelopes and delivery state, never message content.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use onionpost_proto::ServiceName;
use onionpost_proto::queue::v1 as queue;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{corrupt, next_token, page_size, time, timestamp};
use crate::AdminState;
use crate::error::{AdminError, Upstream as _};
use crate::extract::ApiQuery;

/// Where one recipient's delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecipientState {
    /// Waiting for its next attempt (or for pickup by ETRN).
    Scheduled,
    Delivered,
    /// The last attempt failed temporarily; another is scheduled.
    TemporaryFailure,
    /// Failed for good; a DSN went back if one was asked for.
    PermanentFailure,
}

impl RecipientState {
    fn from_proto(value: i32) -> Option<Self> {
        match queue::RecipientState::try_from(value).ok()? {
            queue::RecipientState::Scheduled => Some(RecipientState::Scheduled),
            queue::RecipientState::Delivered => Some(RecipientState::Delivered),
            queue::RecipientState::TemporaryFailure => Some(RecipientState::TemporaryFailure),
            queue::RecipientState::PermanentFailure => Some(RecipientState::PermanentFailure),
            queue::RecipientState::Unspecified => None,
        }
    }

    fn to_proto(self) -> queue::RecipientState {
        match self {
            RecipientState::Scheduled => queue::RecipientState::Scheduled,
            RecipientState::Delivered => queue::RecipientState::Delivered,
            RecipientState::TemporaryFailure => queue::RecipientState::TemporaryFailure,
            RecipientState::PermanentFailure => queue::RecipientState::PermanentFailure,
        }
    }
}

/// Why a message is in the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Submitted by one of the carrier's accounts.
    Submission,
    /// Held for a recipient this carrier carries for.
    Carry,
    /// Made by the carrier itself (a DSN).
    Local,
    /// Received for one of the carrier's identities from a sender whose key was not pinned:
    /// waiting for that key from the sender's onion before delivery.
    Received,
}

impl Origin {
    fn from_proto(value: i32) -> Option<Self> {
        match queue::Origin::try_from(value).ok()? {
            queue::Origin::Submission => Some(Origin::Submission),
            queue::Origin::Carry => Some(Origin::Carry),
            queue::Origin::Local => Some(Origin::Local),
            queue::Origin::Received => Some(Origin::Received),
            queue::Origin::Unspecified => None,
        }
    }

    fn to_proto(self) -> queue::Origin {
        match self {
            Origin::Submission => queue::Origin::Submission,
            Origin::Carry => queue::Origin::Carry,
            Origin::Local => queue::Origin::Local,
            Origin::Received => queue::Origin::Received,
        }
    }
}

/// An SMTP reply as the other side sent it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Reply {
    pub code: u32,
    /// RFC 3463 enhanced status code, such as `4.4.1`; empty when none was sent.
    pub enhanced_status: String,
    pub text: String,
}

/// One recipient of a queued message.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueuedRecipient {
    pub address: String,
    pub state: RecipientState,
    pub attempts: u32,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// Absent when the recipient is done.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The reply to the last attempt (or why no session happened).
    pub last_reply: Option<Reply>,
}

/// A message in the queue: its envelope and each recipient's state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueuedMessage {
    pub id: String,
    pub message_id: String,
    pub size_bytes: u64,
    pub origin: Origin,
    /// The submitting account, for submitted mail.
    pub account_id: String,
    /// The envelope sender; empty for a DSN.
    pub reverse_path: String,
    pub recipients: Vec<QueuedRecipient>,
    pub held: bool,
    pub enqueued_at: Option<DateTime<Utc>>,
    /// When unfinished recipients fail for good.
    pub expires_at: Option<DateTime<Utc>>,
}

impl QueuedMessage {
    fn from_proto(message: queue::QueuedMessage) -> Result<Self, AdminError> {
        let recipients = message
            .recipients
            .into_iter()
            .map(|recipient| {
                Ok(QueuedRecipient {
                    state: RecipientState::from_proto(recipient.state)
                        .ok_or_else(|| corrupt("recipient state"))?,
                    address: recipient.address,
                    attempts: recipient.attempts,
                    last_attempt_at: time(recipient.last_attempt_at),
                    next_attempt_at: time(recipient.next_attempt_at),
                    last_reply: recipient.last_reply.map(|reply| Reply {
                        code: reply.code,
                        enhanced_status: reply.enhanced_status,
                        text: reply.text,
                    }),
                })
            })
            .collect::<Result<_, AdminError>>()?;
        Ok(QueuedMessage {
            origin: Origin::from_proto(message.origin).ok_or_else(|| corrupt("queue origin"))?,
            id: message.queue_id,
            message_id: message.message_id,
            size_bytes: message.size_bytes,
            account_id: message.account_id,
            reverse_path: message.reverse_path,
            recipients,
            held: message.held,
            enqueued_at: time(message.enqueued_at),
            expires_at: time(message.expires_at),
        })
    }
}

/// Which queued messages a page holds; every filter is optional.
#[derive(Debug, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQueueQuery {
    /// Messages with at least one recipient in this state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<RecipientState>,
    /// Only held messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<bool>,
    /// Messages with a recipient at this address, or at this onion host.
    #[param(max_length = 320)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// Messages submitted by this account.
    #[param(max_length = 128)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// Messages enqueued before this time, to find what is stuck.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enqueued_before: Option<DateTime<Utc>>,
    /// Messages per page (1 to 500, default 50).
    #[param(minimum = 1, maximum = 500)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// From the previous page's `next_page_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_token: Option<String>,
}

/// One page of queued messages.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueuePage {
    pub messages: Vec<QueuedMessage>,
    /// Absent on the last page.
    pub next_page_token: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/queue", tag = "queue",
    params(ListQueueQuery),
    responses((status = 200, description = "One page of queued messages", body = QueuePage)),
)]
pub async fn list_queue(
    State(state): State<AdminState>,
    ApiQuery(query): ApiQuery<ListQueueQuery>,
) -> Result<Json<QueuePage>, AdminError> {
    if query.recipient.as_ref().is_some_and(|r| r.len() > 320) {
        return Err(AdminError::invalid("recipient", "at most 320 characters"));
    }
    if query.account.as_ref().is_some_and(|a| a.len() > 128) {
        return Err(AdminError::invalid("account", "at most 128 characters"));
    }
    let page = state
        .directory
        .queue()?
        .list_messages(queue::ListMessagesRequest {
            state: query
                .state
                .map(|state| state.to_proto() as i32)
                .unwrap_or_default(),
            held_only: query.held.unwrap_or(false),
            recipient: query.recipient.unwrap_or_default(),
            account_id: query.account.unwrap_or_default(),
            origin: query
                .origin
                .map(|origin| origin.to_proto() as i32)
                .unwrap_or_default(),
            enqueued_before: query.enqueued_before.map(timestamp),
            page_size: page_size(query.limit)?,
            page_token: query.page_token.unwrap_or_default(),
        })
        .await
        .upstream(ServiceName::Queue)?;
    Ok(Json(QueuePage {
        messages: page
            .messages
            .into_iter()
            .map(QueuedMessage::from_proto)
            .collect::<Result<_, _>>()?,
        next_page_token: next_token(page.next_page_token),
    }))
}

#[utoipa::path(
    get, path = "/v1/queue/{id}", tag = "queue",
    params(("id" = String, Path, description = "Queue id")),
    responses((status = 200, description = "The queued message", body = QueuedMessage)),
)]
pub async fn get_queued(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<QueuedMessage>, AdminError> {
    let message = state
        .directory
        .queue()?
        .get_message(queue::GetMessageRequest { queue_id: id })
        .await
        .upstream(ServiceName::Queue)?;
    Ok(Json(QueuedMessage::from_proto(message)?))
}

#[utoipa::path(
    post, path = "/v1/queue/{id}/retry", tag = "queue",
    params(("id" = String, Path, description = "Queue id")),
    responses((status = 200, description = "Unfinished recipients are due now", body = QueuedMessage)),
)]
pub async fn retry_queued(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<QueuedMessage>, AdminError> {
    let message = state
        .directory
        .queue()?
        .retry_now(queue::RetryNowRequest { queue_id: id })
        .await
        .upstream(ServiceName::Queue)?;
    Ok(Json(QueuedMessage::from_proto(message)?))
}

#[utoipa::path(
    post, path = "/v1/queue/{id}/hold", tag = "queue",
    params(("id" = String, Path, description = "Queue id")),
    responses((status = 200, description = "No attempts until released; expiry still runs", body = QueuedMessage)),
)]
pub async fn hold_queued(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<QueuedMessage>, AdminError> {
    let message = state
        .directory
        .queue()?
        .hold(queue::HoldRequest { queue_id: id })
        .await
        .upstream(ServiceName::Queue)?;
    Ok(Json(QueuedMessage::from_proto(message)?))
}

#[utoipa::path(
    post, path = "/v1/queue/{id}/release", tag = "queue",
    params(("id" = String, Path, description = "Queue id")),
    responses((status = 200, description = "Delivered on the schedule again", body = QueuedMessage)),
)]
pub async fn release_queued(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<QueuedMessage>, AdminError> {
    let message = state
        .directory
        .queue()?
        .release(queue::ReleaseRequest { queue_id: id })
        .await
        .upstream(ServiceName::Queue)?;
    Ok(Json(QueuedMessage::from_proto(message)?))
}

/// Whether deleting tells the sender.
#[derive(Debug, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQueuedQuery {
    /// Send a failure DSN for unfinished recipients that asked for one (default: no, so abuse
    /// can be dropped without backscatter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_sender: Option<bool>,
}

#[utoipa::path(
    delete, path = "/v1/queue/{id}", tag = "queue",
    params(("id" = String, Path, description = "Queue id"), DeleteQueuedQuery),
    responses((status = 204, description = "The message was removed from the queue")),
)]
pub async fn delete_queued(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<DeleteQueuedQuery>,
) -> Result<StatusCode, AdminError> {
    state
        .directory
        .queue()?
        .delete(queue::DeleteRequest {
            queue_id: id,
            notify_sender: query.notify_sender.unwrap_or(false),
        })
        .await
        .upstream(ServiceName::Queue)?;
    Ok(StatusCode::NO_CONTENT)
}
