//! The thin gRPC adapter: `onionpost.gateway.v1.Gateway` onto [`GatewayService`].

use onionpost_proto::gateway::v1 as pb;
use onionpost_proto::gateway::v1::gateway_server::Gateway;
use tonic::{Request, Response, Status};

use crate::GatewayService;

/// Serves [`GatewayService`] over gRPC.
pub struct GatewayGrpc {
    service: GatewayService,
}

impl GatewayGrpc {
    pub fn new(service: GatewayService) -> Self {
        GatewayGrpc { service }
    }
}

#[tonic::async_trait]
impl Gateway for GatewayGrpc {
    async fn check_outbound(
        &self,
        request: Request<pb::CheckOutboundRequest>,
    ) -> Result<Response<pb::CheckOutboundResponse>, Status> {
        Ok(Response::new(
            self.service.check_outbound(request.into_inner()).await?,
        ))
    }

    async fn release_outbound(
        &self,
        request: Request<pb::ReleaseOutboundRequest>,
    ) -> Result<Response<pb::ReleaseOutboundResponse>, Status> {
        Ok(Response::new(
            self.service.release_outbound(request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(queue_id = %request.get_ref().queue_id))]
    async fn send_outbound(
        &self,
        request: Request<pb::SendOutboundRequest>,
    ) -> Result<Response<pb::SendOutboundResponse>, Status> {
        Ok(Response::new(
            self.service.send_outbound(request.into_inner()).await?,
        ))
    }

    async fn list_aliases(
        &self,
        request: Request<pb::ListAliasesRequest>,
    ) -> Result<Response<pb::ListAliasesResponse>, Status> {
        Ok(Response::new(
            self.service.list_aliases(request.into_inner()).await?,
        ))
    }

    async fn revoke_alias(
        &self,
        request: Request<pb::RevokeAliasRequest>,
    ) -> Result<Response<pb::Alias>, Status> {
        Ok(Response::new(
            self.service.revoke_alias(request.into_inner()).await?,
        ))
    }

    async fn get_stats(
        &self,
        _request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GatewayStats>, Status> {
        Ok(Response::new(self.service.stats().await?))
    }
}

/// The contract on a carrier without `gateway.domain`: every clearnet send is refused.
pub struct DisabledGatewayGrpc;

/// Words for every refusal of [`DisabledGatewayGrpc`].
pub const NOT_OFFERED: &str = "this carrier does not offer clearnet mail";

#[tonic::async_trait]
impl Gateway for DisabledGatewayGrpc {
    async fn check_outbound(
        &self,
        _request: Request<pb::CheckOutboundRequest>,
    ) -> Result<Response<pb::CheckOutboundResponse>, Status> {
        Ok(Response::new(pb::CheckOutboundResponse {
            allowed: false,
            reason: NOT_OFFERED.to_owned(),
            remaining_today: 0,
        }))
    }

    async fn release_outbound(
        &self,
        _request: Request<pb::ReleaseOutboundRequest>,
    ) -> Result<Response<pb::ReleaseOutboundResponse>, Status> {
        Ok(Response::new(pb::ReleaseOutboundResponse {}))
    }

    async fn send_outbound(
        &self,
        request: Request<pb::SendOutboundRequest>,
    ) -> Result<Response<pb::SendOutboundResponse>, Status> {
        let recipients = request
            .into_inner()
            .recipients
            .into_iter()
            .map(|address| pb::RecipientResult {
                address,
                outcome: pb::Outcome::PermanentFailure as i32,
                reply: Some(pb::SmtpReply {
                    code: 550,
                    enhanced_status: "5.7.1".into(),
                    text: NOT_OFFERED.into(),
                }),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(pb::SendOutboundResponse { recipients }))
    }

    async fn list_aliases(
        &self,
        _request: Request<pb::ListAliasesRequest>,
    ) -> Result<Response<pb::ListAliasesResponse>, Status> {
        Ok(Response::new(pb::ListAliasesResponse::default()))
    }

    async fn revoke_alias(
        &self,
        _request: Request<pb::RevokeAliasRequest>,
    ) -> Result<Response<pb::Alias>, Status> {
        Err(Status::not_found("no such alias"))
    }

    async fn get_stats(
        &self,
        _request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GatewayStats>, Status> {
        Ok(Response::new(pb::GatewayStats::default()))
    }
}
