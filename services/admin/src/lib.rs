//! The admin HTTP API (axum): what operators use to run a carrier for others.
//!
//! It owns no data of its own: every operation is a gRPC call to the service that owns the data,
//! through the runtime's [`Directory`](onionpost_runtime::Directory), so the API works the same
//! whether those services run in this process or in their own containers. This crate holds the
//! probes (`/healthz`, `/readyz`), `/metrics`, and the `/v1` routes.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;
use onionpost_proto::ServiceName;
use onionpost_runtime::grpc::check_health;
use onionpost_runtime::{Directory, Module, ServiceContext, Started};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The admin service as a runtime module.
pub struct AdminModule;

impl Module for AdminModule {
    fn target(&self) -> ServiceName {
        ServiceName::Admin
    }

    fn start(
        self: Box<Self>,
        context: ServiceContext,
    ) -> BoxFuture<'static, anyhow::Result<Started>> {
        Box::pin(async move {
            let address = context.config.admin.listen;
            let listener = TcpListener::bind(address).await.map_err(|error| {
                anyhow::anyhow!("cannot listen on admin.listen {address}: {error}")
            })?;
            tracing::info!(%address, "admin api listening");
            let state = AdminState {
                directory: context.directory.clone(),
            };
            let shutdown = context.shutdown.clone();
            context.spawn("admin.http", async move {
                if let Err(error) = serve(listener, state, shutdown).await {
                    tracing::error!(%error, "admin api stopped");
                }
            });
            Ok(Started::new())
        })
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AdminState {
    pub directory: Directory,
}

/// Serves the admin API on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// The whole HTTP surface.
pub fn router(state: AdminState) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
        .merge(onionpost_runtime::telemetry::metrics_router())
}

async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(Debug, Serialize)]
struct Readiness {
    ready: bool,
    /// Every service this carrier has (local or remote), with its gRPC health status.
    services: BTreeMap<&'static str, &'static str>,
}

/// Ready when every service this carrier runs or reaches answers SERVING.
#[tracing::instrument(skip_all)]
async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let mut services = BTreeMap::new();
    for target in ServiceName::ALL {
        if target == ServiceName::Admin {
            continue;
        }
        let Ok(transport) = state.directory.transport(target) else {
            continue;
        };
        let status =
            match tokio::time::timeout(Duration::from_secs(3), check_health(transport, target))
                .await
            {
                Ok(Ok(true)) => "SERVING",
                Ok(Ok(false)) => "NOT_SERVING",
                Ok(Err(_)) | Err(_) => "UNREACHABLE",
            };
        services.insert(target.as_str(), status);
    }
    let ready = services.values().all(|status| *status == "SERVING");
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(Readiness { ready, services }))
}
