//! gRPC between services: one client type whether the other service runs here or elsewhere.
//!
//! A service reaches another through a generated tonic client over a [`Transport`]. The
//! [`Directory`] hands out that transport: for a service in this process it dispatches the
//! request in memory straight into the local router; for a remote one it is a tonic channel.
//! Both paths go through the same client and server layers, so a local call is traced, timed and
//! counted exactly like a remote one, and a deployment can move a service to its own container
//! without touching the code that calls it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use onionpost_proto::ServiceName;
use onionpost_proto::clients;
use onionpost_proto::gateway::v1::gateway_client::GatewayClient;
use onionpost_proto::imap::v1::imap_client::ImapClient;
use onionpost_proto::keys::v1::keys_client::KeysClient;
use onionpost_proto::onion::v1::onion_client::OnionClient;
use onionpost_proto::queue::v1::queue_client::QueueClient;
use tonic::body::Body;
use tonic::service::Routes;
use tower::{Layer, Service, ServiceExt};
use tracing::Instrument;

use crate::grpc_tls::GrpcTls;
use crate::telemetry;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What every generated client runs over: `KeysClient<Transport>`, local or remote alike.
///
/// A named type rather than an alias of `BoxCloneSyncService`, so that futures holding a client
/// are plainly `Send` (with the alias, the compiler's higher-ranked inference of the boxed error
/// type fails inside axum handlers).
#[derive(Clone)]
pub struct Transport(
    tower::util::BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>,
);

impl Transport {
    pub fn new<S>(service: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = BoxError>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Transport(tower::util::BoxCloneSyncService::new(service))
    }
}

impl Service<http::Request<Body>> for Transport {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        self.0.call(request)
    }
}

/// Client side of every call: a `grpc.client` span whose context travels in the request
/// headers (W3C trace context), and call metrics.
#[derive(Clone)]
pub struct TraceClient<S> {
    inner: S,
    target: ServiceName,
}

impl<S, ResBody> Service<http::Request<Body>> for TraceClient<S>
where
    S: Service<http::Request<Body>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    ResBody: Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let span = tracing::info_span!(
            "grpc.client",
            otel.kind = "client",
            otel.name = %method,
            rpc.system = "grpc",
            rpc.method = %method,
            peer.service = self.target.as_str(),
        );
        telemetry::inject(&span, request.headers_mut());
        let future = self.inner.call(request);
        Box::pin(async move { future.await.map_err(Into::into) }.instrument(span))
    }
}

/// Server side of every call: a `grpc.server` span continuing the caller's trace, and metrics
/// by method and status.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceServerLayer;

impl<S> Layer<S> for TraceServerLayer {
    type Service = TraceServer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceServer { inner }
    }
}

#[derive(Clone, Debug)]
pub struct TraceServer<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for TraceServer<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Send,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let span = tracing::info_span!(
            "grpc.server",
            otel.kind = "server",
            otel.name = %method,
            rpc.system = "grpc",
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        telemetry::extract(&span, request.headers());
        let started = Instant::now();
        let future = self.inner.call(request);
        let record_span = span.clone();
        Box::pin(
            async move {
                let result = future.await;
                // Unary errors travel as `grpc-status` in the response headers; streaming ones
                // in trailers, which we do not wait for here.
                let status = match &result {
                    Ok(response) => response
                        .headers()
                        .get("grpc-status")
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or("0")
                        .to_owned(),
                    Err(_) => "transport".to_owned(),
                };
                record_span.record("rpc.grpc.status_code", status.as_str());
                metrics::histogram!("onionpost_grpc_server_seconds", "method" => method, "status" => status)
                    .record(started.elapsed().as_secs_f64());
                result
            }
            .instrument(span),
        )
    }
}

/// In-memory transport into a local router, through the same server layer as the network path.
fn local_transport(target: ServiceName, routes: Routes) -> Transport {
    let router = routes.prepare().into_axum_router();
    let served = ServiceExt::<http::Request<Body>>::map_response(
        TraceServerLayer.layer(router),
        |response: http::Response<axum::body::Body>| response.map(Body::new),
    );
    Transport::new(TraceClient {
        inner: served,
        target,
    })
}

/// Whether a gRPC failure may pass by itself (the other service restarting, overloaded), so
/// that a retry can succeed.
pub fn is_transient(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::ResourceExhausted
            | tonic::Code::Aborted
            | tonic::Code::Internal
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
    )
}

/// Network transport to a service in another process, in plain HTTP/2: for tests and tools
/// that talk to a bare tonic server. Services of a carrier use [`secured_transport`].
pub fn remote_transport(target: ServiceName, address: &str) -> Result<Transport, BoxError> {
    channel_transport(target, address, None)
}

/// Network transport to another process of this carrier: mutual TLS with the carrier CA
/// ([`GrpcTls`]). `address` may say `http://` (as configurations always did); the connection
/// is TLS all the same.
pub fn secured_transport(
    target: ServiceName,
    address: &str,
    tls: &GrpcTls,
) -> Result<Transport, BoxError> {
    channel_transport(target, address, Some(tls))
}

/// The channel connects lazily and reconnects by itself, so a peer that starts later or
/// restarts is picked up.
fn channel_transport(
    target: ServiceName,
    address: &str,
    tls: Option<&GrpcTls>,
) -> Result<Transport, BoxError> {
    let mut endpoint = match tls {
        // tonic speaks TLS only to an `https` URI.
        Some(_) => {
            tonic::transport::Endpoint::from_shared(match address.strip_prefix("http://") {
                Some(rest) => format!("https://{rest}"),
                None => address.to_owned(),
            })?
        }
        None => tonic::transport::Endpoint::from_shared(address.to_owned())?,
    }
    .connect_timeout(std::time::Duration::from_secs(5))
    .tcp_nodelay(true);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.client())?;
    }
    let channel = endpoint.connect_lazy();
    Ok(Transport::new(TraceClient {
        inner: channel,
        target,
    }))
}

/// Where each service is: in this process or at a gRPC address.
#[derive(Clone, Default)]
pub struct Directory {
    transports: Arc<RwLock<HashMap<ServiceName, Transport>>>,
    /// The carrier's credentials for remote services; `None` (tests against bare tonic
    /// servers) speaks plain HTTP/2.
    tls: Option<Arc<GrpcTls>>,
}

/// Asked for a service that is neither in this process nor configured as remote.
#[derive(Debug, thiserror::Error)]
#[error(
    "service {0} is not running in this process and has no remote address (set remote.{key} / ONIONPOST_REMOTE_{env})",
    key = .0.as_str().replace('-', "_"),
    env = .0.as_str().replace('-', "_").to_uppercase()
)]
pub struct NotReachable(pub ServiceName);

impl Directory {
    /// A directory whose remote services are reached with mutual TLS (the carrier's layout).
    pub fn secured(tls: GrpcTls) -> Self {
        Directory {
            tls: Some(Arc::new(tls)),
            ..Directory::default()
        }
    }

    /// Registers a service that runs in this process.
    pub fn register_local(&self, target: ServiceName, routes: Routes) {
        let transport = local_transport(target, routes);
        self.write().insert(target, transport);
    }

    /// Registers a service that runs elsewhere, reached at `address` (`http://host:port`).
    pub fn register_remote(&self, target: ServiceName, address: &str) -> Result<(), BoxError> {
        let transport = channel_transport(target, address, self.tls.as_deref())?;
        self.write().insert(target, transport);
        Ok(())
    }

    /// The transport to `target`, for `XClient::new(transport)`.
    pub fn transport(&self, target: ServiceName) -> Result<Transport, NotReachable> {
        self.transports
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&target)
            .cloned()
            .ok_or(NotReachable(target))
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ServiceName, Transport>> {
        self.transports
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `directory.imap()?` and the like: a client of a service through its transport, with the
/// contract's message-size limits (`onionpost_proto::clients`), for the front ends that call many.
impl Directory {
    pub fn imap(&self) -> Result<ImapClient<Transport>, NotReachable> {
        Ok(clients::imap(self.transport(ServiceName::Imap)?))
    }

    pub fn keys(&self) -> Result<KeysClient<Transport>, NotReachable> {
        Ok(clients::keys(self.transport(ServiceName::Keys)?))
    }

    pub fn onion(&self) -> Result<OnionClient<Transport>, NotReachable> {
        Ok(clients::onion(self.transport(ServiceName::Onion)?))
    }

    pub fn queue(&self) -> Result<QueueClient<Transport>, NotReachable> {
        Ok(clients::queue(self.transport(ServiceName::Queue)?))
    }

    pub fn gateway(&self) -> Result<GatewayClient<Transport>, NotReachable> {
        Ok(clients::gateway(self.transport(ServiceName::Gateway)?))
    }
}

/// Asks a gRPC health service (grpc.health.v1) whether `target` is SERVING.
///
/// Boxed so that callers such as axum handlers get a plain `Send` future (the generic one trips
/// the compiler's higher-ranked lifetime inference).
pub fn check_health(
    transport: Transport,
    target: ServiceName,
) -> BoxFuture<'static, Result<bool, tonic::Status>> {
    Box::pin(async move {
        use tonic_health::pb::health_check_response::ServingStatus;
        let mut client = tonic_health::pb::health_client::HealthClient::new(transport);
        let response = client
            .check(tonic_health::pb::HealthCheckRequest {
                service: target.grpc_name().to_owned(),
            })
            .await?;
        Ok(response.into_inner().status == ServingStatus::Serving as i32)
    })
}
