//! The thin gRPC adapter: `onionpost.smtp_out.v1.SmtpOut` onto [`SmtpOutService`].

use onionpost_proto::smtp_out::v1 as pb;
use onionpost_proto::smtp_out::v1::smtp_out_server::SmtpOut;
use tonic::{Request, Response, Status};

use crate::service::SmtpOutService;
use crate::session::{DsnReturn, Envelope, Notify, Outcome, Recipient, Reply};

/// Serves [`SmtpOutService`] over gRPC.
pub struct SmtpOutGrpc {
    service: SmtpOutService,
}

impl SmtpOutGrpc {
    pub fn new(service: SmtpOutService) -> Self {
        SmtpOutGrpc { service }
    }
}

#[tonic::async_trait]
impl SmtpOut for SmtpOutGrpc {
    #[tracing::instrument(skip_all, fields(queue_id = %request.get_ref().queue_id))]
    async fn deliver(
        &self,
        request: Request<pb::DeliverRequest>,
    ) -> Result<Response<pb::DeliverResponse>, Status> {
        let request = request.into_inner();
        let port = match request.port {
            0 => 25,
            port => u16::try_from(port)
                .map_err(|_| Status::invalid_argument(format!("port {port} is out of range")))?,
        };
        let envelope = Envelope {
            reverse_path: request.reverse_path,
            recipients: request
                .recipients
                .into_iter()
                .map(|recipient| Recipient {
                    notify: recipient.notify().filter_map(notify).collect(),
                    address: recipient.address,
                    original_recipient: recipient.original_recipient,
                    stamp: None,
                })
                .collect(),
            envelope_id: request.envelope_id,
            dsn_return: match pb::DsnReturn::try_from(request.dsn_return) {
                Ok(pb::DsnReturn::Full) => Some(DsnReturn::Full),
                Ok(pb::DsnReturn::Headers) => Some(DsnReturn::Headers),
                _ => None,
            },
        };
        let delivery = self
            .service
            .deliver(
                &request.destination,
                port,
                &request.isolation_key,
                &envelope,
                &request.message,
            )
            .await?;
        let recipients = envelope
            .recipients
            .iter()
            .zip(delivery.outcomes)
            .map(|(recipient, outcome)| {
                let (outcome, reply) = match outcome {
                    Outcome::Delivered(reply) => (pb::Outcome::Delivered, reply),
                    Outcome::Temporary(reply) => (pb::Outcome::TemporaryFailure, reply),
                    Outcome::Permanent(reply) => (pb::Outcome::PermanentFailure, reply),
                };
                pb::RecipientResult {
                    address: recipient.address.clone(),
                    outcome: outcome.into(),
                    reply: delivery
                        .connection_error
                        .is_none()
                        .then(|| smtp_reply(reply)),
                }
            })
            .collect();
        Ok(Response::new(pb::DeliverResponse {
            recipients,
            connection_error: delivery.connection_error.unwrap_or_default(),
            peer_offers_dsn: delivery.peer_offers_dsn,
            duration: prost_types::Duration::try_from(delivery.duration).ok(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn etrn(
        &self,
        request: Request<pb::EtrnRequest>,
    ) -> Result<Response<pb::EtrnResponse>, Status> {
        let request = request.into_inner();
        let answer = self
            .service
            .etrn(&request.carrier, &request.onion, &request.isolation_key)
            .await?;
        Ok(Response::new(match answer {
            Ok(reply) => pb::EtrnResponse {
                reply: Some(smtp_reply(reply)),
                connection_error: String::new(),
            },
            Err(error) => pb::EtrnResponse {
                reply: None,
                connection_error: error,
            },
        }))
    }
}

fn notify(value: pb::DsnNotify) -> Option<Notify> {
    match value {
        pb::DsnNotify::Never => Some(Notify::Never),
        pb::DsnNotify::Success => Some(Notify::Success),
        pb::DsnNotify::Failure => Some(Notify::Failure),
        pb::DsnNotify::Delay => Some(Notify::Delay),
        pb::DsnNotify::Unspecified => None,
    }
}

fn smtp_reply(reply: Reply) -> pb::SmtpReply {
    pb::SmtpReply {
        code: u32::from(reply.code),
        enhanced_status: reply.enhanced_status,
        text: reply.text,
    }
}
