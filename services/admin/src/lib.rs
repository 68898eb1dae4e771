//! The admin HTTP API (axum): what operators use to run a carrier for others.
//!
//! It owns no data but its own bearer tokens: every operation is a gRPC call to the service that
//! owns the data (imap: accounts, plans, vouchers; onion: onions; keys: keys and address books),
//! through the runtime's [`Directory`], so the API works the same whether those services run in
//! this process or in their own containers. It holds no domain logic: an identity's lifecycle is
//! one call on imap's contract (see [`api::identities`]). This crate holds the probes (`/healthz`, `/readyz`), `/metrics`, the
//! `/v1` routes with their OpenAPI document (`/openapi.json`, rendered at `/docs`), the
//! `onionpost.admin.v1.Admin` statistics call, and the `onionpost admin` command line
//! ([`cli`]), which is a client of this HTTP API.

pub mod api;
pub mod auth;
pub mod cli;
pub mod error;
pub mod extract;
pub mod grpc;
pub mod store;
pub mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use futures::future::BoxFuture;
use onionpost_proto::ServiceName;
use onionpost_proto::admin::v1::admin_server::AdminServer;
use onionpost_runtime::grpc::check_health;
use onionpost_runtime::{Directory, Module, ServiceContext, Started};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::AdminError;
use crate::store::AdminStore;

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
            let database = context
                .database(store::MIGRATIONS)
                .await
                .context("admin database")?;
            let store = store::for_database(database);
            let configured = context
                .config
                .admin
                .token
                .as_ref()
                .map(|secret| secret.expose().to_owned());
            auth::bootstrap(store.as_ref(), configured.as_deref())
                .await
                .map_err(|error| anyhow::anyhow!("creating the operator token: {error}"))?;
            let address = context.config.admin.listen;
            let listener = TcpListener::bind(address).await.map_err(|error| {
                anyhow::anyhow!("cannot listen on admin.listen {address}: {error}")
            })?;
            tracing::info!(%address, "admin api listening");
            let state = AdminState {
                directory: context.directory.clone(),
                store,
            };
            let shutdown = context.shutdown.clone();
            let http_state = state.clone();
            context.spawn("admin.http", async move {
                if let Err(error) = serve(listener, http_state, shutdown).await {
                    tracing::error!(%error, "admin api stopped");
                }
            });
            Ok(Started::new().with_grpc(AdminServer::new(grpc::AdminGrpc::new(state))))
        })
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AdminState {
    pub directory: Directory,
    pub store: Arc<dyn AdminStore>,
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
    let (v1, _) = api::api_router().split_for_parts();
    let v1 = v1.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::require_token,
    ));
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(docs))
        .merge(v1)
        .fallback(not_found)
        .with_state(state)
        .merge(onionpost_runtime::telemetry::metrics_router())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn not_found() -> AdminError {
    AdminError::NotFound("no such route".to_owned())
}

async fn openapi_json() -> impl IntoResponse {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    onionpost_runtime::http_api::openapi_json(&DOCUMENT, api::openapi)
}

/// A self-contained page that renders `/openapi.json` (no assets from anywhere else).
async fn docs() -> Html<&'static str> {
    Html(include_str!("docs/index.html"))
}

#[derive(Debug, Serialize)]
struct Readiness {
    ready: bool,
    /// Every service this carrier has (local or remote), with its gRPC health status.
    services: BTreeMap<&'static str, &'static str>,
    /// Whether the onion service's control connection to tor is up; absent when this carrier
    /// has no onion service.
    #[serde(skip_serializing_if = "Option::is_none")]
    tor_control: Option<&'static str>,
}

/// Ready when every service this carrier runs or reaches answers SERVING and, when it has an
/// onion service, tor's control connection is up.
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
    let tor_control = if services.contains_key(ServiceName::Onion.as_str()) {
        let connected =
            tokio::time::timeout(Duration::from_secs(3), api::stats::tor_connected(&state)).await;
        Some(match connected {
            Ok(Ok(true)) => "connected",
            _ => "disconnected",
        })
    } else {
        None
    };
    let ready = services.values().all(|status| *status == "SERVING")
        && tor_control.is_none_or(|status| status == "connected");
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(Readiness {
            ready,
            services,
            tor_control,
        }),
    )
}
