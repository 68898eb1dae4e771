//! The account portal: what account holders use to run their own accounts, without the
//! operator's carrier-wide token.
//!
//! Two faces over the same operations ([`account`]): server-rendered pages that need no
//! JavaScript ([`pages`]: sign-up by the operator's policy, sign-in, the account, vouchers, the
//! password, identities with their QR codes and client settings) and the `/account/v1` JSON API
//! with its OpenAPI document ([`api`]). It owns only its sessions ([`store`], [`session`]); the
//! account, its identities and keys belong to imap, keys and onion, reached over gRPC through the
//! runtime's [`Directory`], so the portal works the same in one process or in its own container.
//! Every request acts on the signed-in account alone, and nothing any page or reply says depends
//! on another account, identity or onion of the carrier.
//!
//! It listens on `portal.listen` (loopback by default; behind a TLS proxy, or reached through the
//! carrier's own onion with Tor Browser).

pub mod account;
pub mod api;
pub mod error;
pub mod grpc;
pub mod pages;
pub mod session;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;
use onionpost_proto::ServiceName;
use onionpost_proto::portal::v1::portal_server::PortalServer;
use onionpost_runtime::config::PortalSettings;
use onionpost_runtime::rate::RateLimiter;
use onionpost_runtime::time::now_ms;
use onionpost_runtime::{Directory, Module, ServiceContext, Started};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::PortalError;
use crate::store::PortalStore;

/// Largest request body the portal reads (forms and JSON are small).
const MAX_BODY_BYTES: usize = 64 * 1024;
/// How often expired sessions are deleted.
const SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// The portal as a runtime module.
pub struct PortalModule;

impl Module for PortalModule {
    fn target(&self) -> ServiceName {
        ServiceName::Portal
    }

    fn depends_on(&self) -> &'static [ServiceName] {
        // Asked per request, so they may also run elsewhere.
        &[ServiceName::Imap, ServiceName::Keys, ServiceName::Onion]
    }

    fn start(
        self: Box<Self>,
        context: ServiceContext,
    ) -> BoxFuture<'static, anyhow::Result<Started>> {
        Box::pin(async move {
            let database = context
                .database(store::MIGRATIONS)
                .await
                .context("portal database")?;
            let settings = context.config.portal.clone();
            let address = settings.listen;
            let listener = TcpListener::bind(address).await.map_err(|error| {
                anyhow::anyhow!("cannot listen on portal.listen {address}: {error}")
            })?;
            tracing::info!(%address, signup = settings.signup.as_str(), "portal listening");
            let state = PortalState::new(
                context.directory.clone(),
                store::for_database(database),
                settings,
            );
            let shutdown = context.shutdown.clone();
            let http_state = state.clone();
            context.spawn("portal.http", async move {
                if let Err(error) = serve(listener, http_state, shutdown).await {
                    tracing::error!(%error, "portal stopped");
                }
            });
            let sweep_state = state.clone();
            let shutdown = context.shutdown.clone();
            context.spawn("portal.sweep", async move {
                sweep(sweep_state, shutdown).await;
            });
            Ok(Started::new().with_grpc(PortalServer::new(grpc::PortalGrpc::new(state))))
        })
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct PortalState {
    pub directory: Directory,
    pub store: Arc<dyn PortalStore>,
    pub settings: Arc<PortalSettings>,
    /// Sign-ups per hour, carrier-wide.
    pub signups: Arc<RateLimiter>,
}

impl PortalState {
    pub fn new(
        directory: Directory,
        store: Arc<dyn PortalStore>,
        settings: PortalSettings,
    ) -> Self {
        PortalState {
            directory,
            store,
            signups: Arc::new(RateLimiter::per_hour(settings.signups_per_hour)),
            settings: Arc::new(settings),
        }
    }
}

/// Serves the portal on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    state: PortalState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// The whole HTTP surface: the pages, `/account/v1`, its OpenAPI document and `/healthz`.
pub fn router(state: PortalState) -> axum::Router {
    let (account_api, _) = api::api_router().split_for_parts();
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/account/v1/openapi.json", get(openapi_json))
        .merge(account_api)
        .merge(pages::router())
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(pages::security_headers))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    if uri.path().starts_with("/account/v1/") {
        return PortalError::NotFound("no such route".to_owned()).into_response();
    }
    pages::page(
        StatusCode::NOT_FOUND,
        pages::layout(
            "Not found",
            None,
            maud::html! { p { "There is no such page. " a href="/" { "Start over" } "." } },
        ),
    )
}

async fn openapi_json() -> impl IntoResponse {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    onionpost_runtime::http_api::openapi_json(&DOCUMENT, api::openapi)
}

/// Deletes expired sessions now and then, until shutdown.
async fn sweep(state: PortalState, shutdown: CancellationToken) {
    loop {
        match state.store.purge_expired(now_ms()).await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "expired portal sessions deleted"),
            Err(error) => tracing::warn!(%error, "deleting expired portal sessions failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(SWEEP_INTERVAL) => {}
        }
    }
}
