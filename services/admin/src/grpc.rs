//! `onionpost.admin.v1.Admin`: the carrier-wide statistics for tools inside the deployment (see
//! admin.proto). A thin adapter over [`crate::api::stats::gather`].

use onionpost_proto::admin::v1 as proto;
use onionpost_proto::admin::v1::admin_server::Admin;
use tonic::{Request, Response, Status};

use crate::AdminState;
use crate::api::stats::gather;

pub struct AdminGrpc {
    state: AdminState,
}

impl AdminGrpc {
    pub fn new(state: AdminState) -> Self {
        Self { state }
    }
}

fn named(counts: Option<std::collections::BTreeMap<String, u64>>) -> Vec<proto::NamedCount> {
    counts
        .unwrap_or_default()
        .into_iter()
        .map(|(name, count)| proto::NamedCount { name, count })
        .collect()
}

#[tonic::async_trait]
impl Admin for AdminGrpc {
    async fn get_stats(
        &self,
        _request: Request<proto::GetStatsRequest>,
    ) -> Result<Response<proto::CarrierStats>, Status> {
        let stats = gather(&self.state).await;
        Ok(Response::new(proto::CarrierStats {
            generated_at: Some(crate::api::timestamp(stats.generated_at)),
            accounts_by_state: named(stats.accounts_by_state),
            identities_by_state: named(stats.identities_by_state),
            queue_depth: stats.queue_depth.unwrap_or_default(),
            queue_oldest_age: stats.queue_oldest_age_seconds.and_then(|seconds| {
                prost_types::Duration::try_from(std::time::Duration::from_secs_f64(seconds)).ok()
            }),
            messages_delivered_today: stats.messages_delivered_today.unwrap_or_default(),
            tor_control_connected: stats.tor_control_connected.unwrap_or(false),
            unavailable_services: stats.unavailable_services,
        }))
    }
}
