//! The gRPC adapter: requests in, [`Onions`] operations, responses and statuses out. No logic
//! of its own beyond argument decoding.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use onionpost_proto::onion::v1::onion_server::Onion;
use onionpost_proto::onion::v1::{
    CreateOnionRequest, ExportOnionKeyRequest, ExportOnionKeyResponse, GetOnionRequest,
    GetSocksEndpointRequest, GetTorStatusRequest, ImportOnionRequest, ListOnionsRequest,
    ListOnionsResponse, OnionService, OnionState, RevokeOnionRequest, SocksEndpoint, TorStatus,
    WatchOnionsRequest, WatchOnionsResponse,
};
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status};

use crate::error::OnionError;
use crate::onions::Onions;
use crate::ports::requested_purposes;

/// The Onion gRPC service over shared [`Onions`].
#[derive(Clone, Debug)]
pub struct OnionGrpc {
    onions: Arc<Onions>,
}

impl OnionGrpc {
    pub fn new(onions: Arc<Onions>) -> Self {
        OnionGrpc { onions }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchOnionsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Onion for OnionGrpc {
    async fn create_onion(
        &self,
        request: Request<CreateOnionRequest>,
    ) -> Result<Response<OnionService>, Status> {
        let request = request.into_inner();
        let purposes =
            requested_purposes(&request.purposes).map_err(OnionError::InvalidArgument)?;
        let onion = self.onions.create(&request.identity_id, purposes).await?;
        Ok(Response::new(onion))
    }

    async fn import_onion(
        &self,
        request: Request<ImportOnionRequest>,
    ) -> Result<Response<OnionService>, Status> {
        let request = request.into_inner();
        let secret_key = zeroize::Zeroizing::new(request.secret_key);
        let purposes =
            requested_purposes(&request.purposes).map_err(OnionError::InvalidArgument)?;
        let onion = self
            .onions
            .import(&request.identity_id, &secret_key, purposes)
            .await?;
        Ok(Response::new(onion))
    }

    async fn get_onion(
        &self,
        request: Request<GetOnionRequest>,
    ) -> Result<Response<OnionService>, Status> {
        let onion = self.onions.get(&request.into_inner().identity_id).await?;
        Ok(Response::new(onion))
    }

    async fn list_onions(
        &self,
        request: Request<ListOnionsRequest>,
    ) -> Result<Response<ListOnionsResponse>, Status> {
        let request = request.into_inner();
        let state = OnionState::try_from(request.state)
            .map_err(|_| OnionError::InvalidArgument(format!("unknown state {}", request.state)))?;
        let page_size = if request.page_size == 0 {
            100
        } else {
            request.page_size
        };
        let (onions, next_page_token) = self
            .onions
            .list(state, page_size, &request.page_token)
            .await?;
        Ok(Response::new(ListOnionsResponse {
            onions,
            next_page_token,
        }))
    }

    async fn revoke_onion(
        &self,
        request: Request<RevokeOnionRequest>,
    ) -> Result<Response<OnionService>, Status> {
        let request = request.into_inner();
        let onion = if request.serve_revocation {
            self.onions.retire_later(&request.identity_id).await?
        } else {
            self.onions.revoke(&request.identity_id).await?
        };
        Ok(Response::new(onion))
    }

    async fn export_onion_key(
        &self,
        request: Request<ExportOnionKeyRequest>,
    ) -> Result<Response<ExportOnionKeyResponse>, Status> {
        let (onion_address, secret_key) = self
            .onions
            .export_key(&request.into_inner().identity_id)
            .await?;
        Ok(Response::new(ExportOnionKeyResponse {
            onion_address,
            secret_key: secret_key.to_vec(),
        }))
    }

    type WatchOnionsStream = WatchStream;

    async fn watch_onions(
        &self,
        request: Request<WatchOnionsRequest>,
    ) -> Result<Response<Self::WatchOnionsStream>, Status> {
        let identity_ids = request.into_inner().identity_ids;
        let onions = self.onions.clone();
        let (mut changes, snapshot) = onions.watch(&identity_ids);
        let stream = async_stream(move |sender| async move {
            if sender
                .send(Ok(WatchOnionsResponse {
                    snapshot: true,
                    onions: snapshot,
                }))
                .await
                .is_err()
            {
                return;
            }
            loop {
                let message = match changes.recv().await {
                    Ok(onion) => {
                        if !identity_ids.is_empty() && !identity_ids.contains(&onion.identity_id) {
                            continue;
                        }
                        WatchOnionsResponse {
                            snapshot: false,
                            onions: vec![onion],
                        }
                    }
                    // Fell behind: start over from a snapshot, as the contract promises.
                    Err(RecvError::Lagged(_)) => WatchOnionsResponse {
                        snapshot: true,
                        onions: onions.snapshot(&identity_ids),
                    },
                    Err(RecvError::Closed) => return,
                };
                if sender.send(Ok(message)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn get_socks_endpoint(
        &self,
        _request: Request<GetSocksEndpointRequest>,
    ) -> Result<Response<SocksEndpoint>, Status> {
        Ok(Response::new(SocksEndpoint {
            address: self.onions.socks_endpoint()?,
            // tor's default (IsolateSOCKSAuth), and the service starts its own tor with it.
            isolates_by_socks_auth: true,
        }))
    }

    async fn get_tor_status(
        &self,
        _request: Request<GetTorStatusRequest>,
    ) -> Result<Response<TorStatus>, Status> {
        Ok(Response::new(self.onions.tor_status()))
    }
}

/// A stream fed by a task through a small channel; the task ends when the client goes away.
fn async_stream<F, Fut>(produce: F) -> WatchStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<WatchOnionsResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    tokio::spawn(produce(sender));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))
}
