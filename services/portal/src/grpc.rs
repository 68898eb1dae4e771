//! `onionpost.portal.v1.Portal`: the portal's counts for the admin API (see portal.proto).

use onionpost_proto::portal::v1 as proto;
use onionpost_proto::portal::v1::portal_server::Portal;
use tonic::{Request, Response, Status};

use crate::PortalState;
use crate::account::sessions_open;

pub struct PortalGrpc {
    state: PortalState,
}

impl PortalGrpc {
    pub fn new(state: PortalState) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl Portal for PortalGrpc {
    async fn get_stats(
        &self,
        _request: Request<proto::GetStatsRequest>,
    ) -> Result<Response<proto::PortalStats>, Status> {
        let sessions_open = sessions_open(&self.state)
            .await
            .map_err(|error| Status::internal(error.to_string()))?;
        Ok(Response::new(proto::PortalStats {
            sessions_open,
            signup: self.state.settings.signup.as_str().to_owned(),
            onion_address: self.state.carrier_onion.get().cloned().unwrap_or_default(),
        }))
    }
}
