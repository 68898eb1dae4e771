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
//! It listens on `portal.listen` (loopback by default, or behind a TLS proxy) and, unless
//! `portal.onion` is false, on the carrier's own onion for Tor Browser: an onion the portal asks
//! the onion service for under [`CARRIER_ONION_ID`], with the portal's port alone on it, so it
//! shares nothing with any identity's onion ([`carrier_onion`]).

pub mod account;
pub mod address_book;
pub mod api;
pub mod error;
pub mod gateway;
pub mod grpc;
pub mod pages;
pub mod portability;
pub mod second_factor;
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
use onionpost_proto::onion::v1::{CreateOnionRequest, PortPurpose};
use onionpost_proto::portal::v1::portal_server::PortalServer;
use onionpost_runtime::backoff::Backoff;
use onionpost_runtime::config::PortalSettings;
use onionpost_runtime::onions::{Binding, Follower};
use onionpost_runtime::rate::RateLimiter;
use onionpost_runtime::seal::{CarrierSecret, Sealer};
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
/// The onion service's name for the carrier's own onion. Identity ids are allocated by imap
/// (`idn_…`), so this one can never be an identity's.
pub const CARRIER_ONION_ID: &str = "carrier.portal";
/// First and longest pause between attempts to obtain the carrier's onion.
const ONION_FIRST_BACKOFF: Duration = Duration::from_secs(1);
const ONION_MAX_BACKOFF: Duration = Duration::from_secs(60);

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
            let sealer = CarrierSecret::load(&context.config)
                .context("carrier secret")?
                .sealer(second_factor::SEAL_PURPOSE);
            let state = PortalState::new(
                context.directory.clone(),
                store::for_database(database),
                settings,
                sealer,
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
            if state.settings.onion {
                let onion_state = state.clone();
                let shutdown = context.shutdown.clone();
                context.spawn("portal.carrier-onion", async move {
                    carrier_onion(onion_state, shutdown).await;
                });
                let follow_state = state.clone();
                Follower::new(
                    &[PortPurpose::Portal],
                    "portal.onion-listener",
                    move |binding: Binding| {
                        let state = follow_state.clone();
                        async move {
                            if let Err(error) = serve(binding.listener, state, binding.stop).await {
                                tracing::warn!(%error, "the portal's onion listener stopped");
                            }
                        }
                    },
                )
                .spawn(&context, "portal.onion");
            }
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
    /// The carrier's own onion, once the onion service has made it.
    pub carrier_onion: Arc<std::sync::OnceLock<String>>,
    /// Seals the accounts' TOTP secrets ([`second_factor`]).
    pub totp_sealer: Arc<Sealer>,
    /// Second-factor code attempts per account.
    pub code_attempts: Arc<RateLimiter>,
}

impl PortalState {
    pub fn new(
        directory: Directory,
        store: Arc<dyn PortalStore>,
        settings: PortalSettings,
        totp_sealer: Sealer,
    ) -> Self {
        PortalState {
            totp_sealer: Arc::new(totp_sealer),
            code_attempts: Arc::new(RateLimiter::per_hour(second_factor::CODE_ATTEMPTS_PER_HOUR)),
            directory,
            store,
            signups: Arc::new(RateLimiter::per_hour(settings.signups_per_hour)),
            settings: Arc::new(settings),
            carrier_onion: Arc::new(std::sync::OnceLock::new()),
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

/// Obtains the carrier's own onion from the onion service (made on the first start, the same
/// one ever after: CreateOnion is idempotent on the id), retrying with back-off while onion or
/// tor is not ready. The follower started beside it serves the portal on the onion's target.
async fn carrier_onion(state: PortalState, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(ONION_FIRST_BACKOFF, ONION_MAX_BACKOFF);
    loop {
        let created = match state.directory.onion() {
            Ok(mut onion) => onion
                .create_onion(CreateOnionRequest {
                    identity_id: CARRIER_ONION_ID.to_owned(),
                    purposes: vec![PortPurpose::Portal as i32],
                })
                .await
                .map(tonic::Response::into_inner)
                .map_err(|status| status.message().to_owned()),
            Err(error) => Err(error.to_string()),
        };
        match created {
            Ok(service) => {
                tracing::info!(onion = %service.onion_address, "the portal is on the carrier's onion");
                let _ = state.carrier_onion.set(service.onion_address);
                return;
            }
            Err(error) => tracing::info!(%error, "the carrier's onion is not made yet; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff.pause()) => {}
        }
    }
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
