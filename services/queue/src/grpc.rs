//! The thin gRPC adapter: `onionpost.queue.v1.Queue` onto [`QueueService`].

use onionpost_proto::queue::v1 as pb;
use onionpost_proto::queue::v1::queue_server::Queue;
use onionpost_runtime::time::{timestamp, timestamp_ms};
use tonic::{Request, Response, Status};

use crate::carry::{CarryCheck, CarryDesk, RevokeBy};
use crate::error::QueueError;
use crate::service::{AGE_BOUNDS_MS, Enqueue, QueueService};
use crate::store::{
    AgreementRecord, CarryRequestRecord, CarryRequestState, DsnReturn, HeldRecord, ListFilter,
    MessageRecord, NewRecipient, Notify, Origin, RecipientRecord, RecipientState, Reply,
};

/// Serves [`QueueService`] over gRPC.
pub struct QueueGrpc {
    service: QueueService,
    carry: CarryDesk,
}

impl QueueGrpc {
    pub fn new(service: QueueService, carry: CarryDesk) -> Self {
        QueueGrpc { service, carry }
    }
}

type Reply_<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Queue for QueueGrpc {
    #[tracing::instrument(skip_all)]
    async fn enqueue(&self, request: Request<pb::EnqueueRequest>) -> Reply_<pb::QueuedMessage> {
        let request = request.into_inner();
        let origin = match request.origin() {
            pb::Origin::Submission => Origin::Submission,
            pb::Origin::Carry => Origin::Carry,
            pb::Origin::Local => Origin::Local,
            pb::Origin::Received => Origin::Received,
            pb::Origin::Unspecified => {
                return Err(QueueError::InvalidArgument("origin is required".into()).into());
            }
        };
        let dsn_return = match request.dsn_return() {
            pb::DsnReturn::Full => DsnReturn::Full,
            pb::DsnReturn::Headers => DsnReturn::Headers,
            pb::DsnReturn::Unspecified => DsnReturn::Unspecified,
        };
        let recipients = request
            .recipients
            .into_iter()
            .map(|recipient| NewRecipient {
                notify: recipient.notify().filter_map(notify_from_pb).collect(),
                address: recipient.address,
                original_recipient: recipient.original_recipient,
            })
            .collect();
        let stored = self
            .service
            .enqueue(Enqueue {
                idempotency_key: request.idempotency_key,
                origin,
                account_id: request.account_id,
                sender_identity_id: request.sender_identity_id,
                reverse_path: request.reverse_path,
                recipients,
                message: request.message,
                message_id: request.message_id,
                envelope_id: request.envelope_id,
                dsn_return,
                fan_out_immediately: request.fan_out_immediately,
            })
            .await?;
        Ok(Response::new(message_to_pb(&stored)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Reply_<pb::ListMessagesResponse> {
        let request = request.into_inner();
        let filter = ListFilter {
            state: state_from_pb(request.state()),
            held_only: request.held_only,
            recipient: request.recipient.trim().to_owned(),
            account_id: request.account_id.clone(),
            origin: match request.origin() {
                pb::Origin::Submission => Some(Origin::Submission),
                pb::Origin::Carry => Some(Origin::Carry),
                pb::Origin::Local => Some(Origin::Local),
                pb::Origin::Received => Some(Origin::Received),
                pb::Origin::Unspecified => None,
            },
            enqueued_before_ms: request.enqueued_before.as_ref().map(timestamp_ms),
        };
        let (messages, next_page_token) = self
            .service
            .list(&filter, request.page_size, &request.page_token)
            .await?;
        Ok(Response::new(pb::ListMessagesResponse {
            messages: messages.iter().map(message_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn get_message(
        &self,
        request: Request<pb::GetMessageRequest>,
    ) -> Reply_<pb::QueuedMessage> {
        let message = self.service.get(&request.into_inner().queue_id).await?;
        Ok(Response::new(message_to_pb(&message)))
    }

    async fn retry_now(&self, request: Request<pb::RetryNowRequest>) -> Reply_<pb::QueuedMessage> {
        let message = self
            .service
            .retry_now(&request.into_inner().queue_id)
            .await?;
        Ok(Response::new(message_to_pb(&message)))
    }

    async fn hold(&self, request: Request<pb::HoldRequest>) -> Reply_<pb::QueuedMessage> {
        let message = self
            .service
            .set_held(&request.into_inner().queue_id, true)
            .await?;
        Ok(Response::new(message_to_pb(&message)))
    }

    async fn release(&self, request: Request<pb::ReleaseRequest>) -> Reply_<pb::QueuedMessage> {
        let message = self
            .service
            .set_held(&request.into_inner().queue_id, false)
            .await?;
        Ok(Response::new(message_to_pb(&message)))
    }

    async fn delete(&self, request: Request<pb::DeleteRequest>) -> Reply_<pb::DeleteResponse> {
        let request = request.into_inner();
        self.service
            .delete(&request.queue_id, request.notify_sender)
            .await?;
        Ok(Response::new(pb::DeleteResponse {}))
    }

    async fn get_stats(&self, _request: Request<pb::GetStatsRequest>) -> Reply_<pb::QueueStats> {
        let stats = self.service.stats().await?;
        let by_state = RecipientState::ALL
            .into_iter()
            .map(|state| pb::StateCount {
                state: state_to_pb(state) as i32,
                recipients: stats
                    .by_state
                    .iter()
                    .find(|(counted, _)| *counted == state)
                    .map_or(0, |(_, count)| *count),
            })
            .collect();
        // The store counts cumulatively (enqueued within each bound); buckets are differences.
        let mut by_age = Vec::new();
        let mut previous = 0;
        for (position, within) in stats.enqueued_within.iter().enumerate() {
            by_age.push(pb::AgeBucket {
                max_age: AGE_BOUNDS_MS.get(position).map(|ms| prost_types::Duration {
                    seconds: ms / 1000,
                    nanos: 0,
                }),
                messages: within.saturating_sub(previous),
            });
            previous = *within;
        }
        Ok(Response::new(pb::QueueStats {
            by_state,
            by_age,
            messages: stats.messages,
            held_messages: stats.held_messages,
            stored_bytes: stats.stored_bytes,
            oldest_enqueued_at: stats.oldest_enqueued_at_ms.map(timestamp),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn flush(&self, request: Request<pb::FlushRequest>) -> Reply_<pb::FlushResponse> {
        let recipients_due = self.service.flush(&request.into_inner().onion).await?;
        Ok(Response::new(pb::FlushResponse { recipients_due }))
    }

    async fn check_carry(
        &self,
        request: Request<pb::CheckCarryRequest>,
    ) -> Reply_<pb::CheckCarryResponse> {
        let request = request.into_inner();
        let check = self
            .carry
            .check(&request.recipient, &request.onion, request.declared_size)
            .await?;
        Ok(Response::new(pb::CheckCarryResponse {
            accepted: check == CarryCheck::Accepted,
            over_limit: check == CarryCheck::OverLimit,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn add_carry_agreement(
        &self,
        request: Request<pb::AddCarryAgreementRequest>,
    ) -> Reply_<pb::CarryAgreement> {
        let (agreement, held) = self.carry.add(request.into_inner().statement).await?;
        Ok(Response::new(agreement_to_pb(&agreement, &held)))
    }

    async fn list_carry_agreements(
        &self,
        request: Request<pb::ListCarryAgreementsRequest>,
    ) -> Reply_<pb::ListCarryAgreementsResponse> {
        let request = request.into_inner();
        let (page, next_page_token) = self
            .carry
            .list(
                request.include_ended,
                request.page_size,
                &request.page_token,
            )
            .await?;
        Ok(Response::new(pb::ListCarryAgreementsResponse {
            agreements: page
                .iter()
                .map(|(agreement, held)| agreement_to_pb(agreement, held))
                .collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_carry_agreement(
        &self,
        request: Request<pb::RevokeCarryAgreementRequest>,
    ) -> Reply_<pb::CarryAgreement> {
        let by = match request.into_inner().by {
            Some(pb::revoke_carry_agreement_request::By::AgreementId(id)) => RevokeBy::Id(id),
            Some(pb::revoke_carry_agreement_request::By::Statement(statement)) => {
                RevokeBy::Statement(statement)
            }
            None => {
                return Err(QueueError::InvalidArgument(
                    "agreement_id or statement is required".into(),
                )
                .into());
            }
        };
        let (agreement, held) = self.carry.revoke(by).await?;
        Ok(Response::new(agreement_to_pb(&agreement, &held)))
    }

    #[tracing::instrument(skip_all)]
    async fn submit_carry_statement(
        &self,
        request: Request<pb::SubmitCarryStatementRequest>,
    ) -> Reply_<pb::CarryRequest> {
        let request = request.into_inner();
        let kept = self.carry.submit(request.statement, &request.onion).await?;
        Ok(Response::new(carry_request_to_pb(&kept)))
    }

    async fn list_carry_requests(
        &self,
        request: Request<pb::ListCarryRequestsRequest>,
    ) -> Reply_<pb::ListCarryRequestsResponse> {
        let request = request.into_inner();
        let state = match request.state() {
            pb::CarryRequestState::Unspecified => None,
            pb::CarryRequestState::Verifying => Some(CarryRequestState::Verifying),
            pb::CarryRequestState::Pending => Some(CarryRequestState::Pending),
            pb::CarryRequestState::Accepted => Some(CarryRequestState::Accepted),
            pb::CarryRequestState::Refused => Some(CarryRequestState::Refused),
        };
        let (requests, next_page_token) = self
            .carry
            .list_requests(state, request.page_size, &request.page_token)
            .await?;
        Ok(Response::new(pb::ListCarryRequestsResponse {
            requests: requests.iter().map(carry_request_to_pb).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn decide_carry_request(
        &self,
        request: Request<pb::DecideCarryRequestRequest>,
    ) -> Reply_<pb::CarryRequest> {
        let request = request.into_inner();
        let decided = self
            .carry
            .decide(&request.request_id, request.approve)
            .await?;
        Ok(Response::new(carry_request_to_pb(&decided)))
    }
}

fn carry_request_to_pb(request: &CarryRequestRecord) -> pb::CarryRequest {
    use onionpost_proto::keys::v1::CarryStatementKind;
    pb::CarryRequest {
        request_id: request.request_id.clone(),
        onion: request.onion.clone(),
        address: request.address.clone(),
        kind: match request.kind.as_str() {
            "request" => CarryStatementKind::Request,
            "withdraw" => CarryStatementKind::Withdraw,
            _ => CarryStatementKind::Unspecified,
        } as i32,
        state: match request.state {
            CarryRequestState::Verifying => pb::CarryRequestState::Verifying,
            CarryRequestState::Pending => pb::CarryRequestState::Pending,
            CarryRequestState::Accepted => pb::CarryRequestState::Accepted,
            CarryRequestState::Refused => pb::CarryRequestState::Refused,
        } as i32,
        detail: request.detail.clone(),
        received_at: Some(timestamp(request.received_at_ms)),
        decided_at: request.decided_at_ms.map(timestamp),
        agreement_id: request.agreement_id.clone(),
    }
}

fn agreement_to_pb(agreement: &AgreementRecord, held: &HeldRecord) -> pb::CarryAgreement {
    pb::CarryAgreement {
        agreement_id: agreement.agreement_id.clone(),
        address: agreement.address.clone(),
        fingerprint: agreement.fingerprint.clone(),
        created_at: Some(timestamp(agreement.created_at_ms)),
        expires_at: agreement.expires_at_ms.map(timestamp),
        revoked_at: agreement.revoked_at_ms.map(timestamp),
        max_held_bytes: agreement.max_held_bytes,
        max_messages_per_day: agreement.max_messages_per_day,
        held_messages: held.messages,
        held_bytes: held.bytes,
        carrier: agreement.carrier.clone(),
    }
}

fn notify_from_pb(value: pb::DsnNotify) -> Option<Notify> {
    match value {
        pb::DsnNotify::Never => Some(Notify::Never),
        pb::DsnNotify::Success => Some(Notify::Success),
        pb::DsnNotify::Failure => Some(Notify::Failure),
        pb::DsnNotify::Delay => Some(Notify::Delay),
        pb::DsnNotify::Unspecified => None,
    }
}

fn notify_to_pb(value: Notify) -> pb::DsnNotify {
    match value {
        Notify::Never => pb::DsnNotify::Never,
        Notify::Success => pb::DsnNotify::Success,
        Notify::Failure => pb::DsnNotify::Failure,
        Notify::Delay => pb::DsnNotify::Delay,
    }
}

fn state_from_pb(value: pb::RecipientState) -> Option<RecipientState> {
    match value {
        pb::RecipientState::Scheduled => Some(RecipientState::Scheduled),
        pb::RecipientState::Delivered => Some(RecipientState::Delivered),
        pb::RecipientState::TemporaryFailure => Some(RecipientState::TemporaryFailure),
        pb::RecipientState::PermanentFailure => Some(RecipientState::PermanentFailure),
        pb::RecipientState::Unspecified => None,
    }
}

fn state_to_pb(value: RecipientState) -> pb::RecipientState {
    match value {
        RecipientState::Scheduled => pb::RecipientState::Scheduled,
        RecipientState::Delivered => pb::RecipientState::Delivered,
        RecipientState::TemporaryFailure => pb::RecipientState::TemporaryFailure,
        RecipientState::PermanentFailure => pb::RecipientState::PermanentFailure,
    }
}

fn reply_to_pb(reply: &Reply) -> pb::SmtpReply {
    pb::SmtpReply {
        code: reply.code,
        enhanced_status: reply.enhanced_status.clone(),
        text: reply.text.clone(),
    }
}

fn recipient_to_pb(recipient: &RecipientRecord) -> pb::QueuedRecipient {
    pb::QueuedRecipient {
        address: recipient.address.clone(),
        state: state_to_pb(recipient.state) as i32,
        notify: recipient
            .notify
            .iter()
            .map(|value| notify_to_pb(*value) as i32)
            .collect(),
        original_recipient: recipient.original_recipient.clone(),
        attempts: recipient.attempts,
        last_attempt_at: recipient.last_attempt_at_ms.map(timestamp),
        next_attempt_at: if recipient.state.is_final() {
            None
        } else {
            recipient.next_attempt_at_ms.map(timestamp)
        },
        last_reply: recipient.last_reply.as_ref().map(reply_to_pb),
        handed_to_carriers: recipient.handed_to_carriers.clone(),
    }
}

fn message_to_pb(message: &MessageRecord) -> pb::QueuedMessage {
    pb::QueuedMessage {
        queue_id: message.queue_id.clone(),
        message_id: message.message_id.clone(),
        body_digest: message.body_digest.clone(),
        size_bytes: message.size_bytes,
        origin: match message.origin {
            Origin::Submission => pb::Origin::Submission,
            Origin::Carry => pb::Origin::Carry,
            Origin::Local => pb::Origin::Local,
            Origin::Received => pb::Origin::Received,
        } as i32,
        account_id: message.account_id.clone(),
        reverse_path: message.reverse_path.clone(),
        recipients: message.recipients.iter().map(recipient_to_pb).collect(),
        held: message.held,
        enqueued_at: Some(timestamp(message.enqueued_at_ms)),
        expires_at: Some(timestamp(message.expires_at_ms)),
    }
}
