//! The onion service: every identity is one v3 onion service on tor (design.md, "one onion,
//! one identity"), and this crate is the only part of onionpost that talks to tor's control
//! port or holds onion keys.
//!
//! - [`control`]: tor's control protocol, spoken directly (why not torut is written there).
//! - [`tor`]: the supervisor that keeps a control connection (and, without `tor.control`, a
//!   tor child process) up, reconnecting with backoff; one per tor of the pool.
//! - [`onions`]: the identities' onions: create (tor generates the ED25519-V3 key), import,
//!   revoke (the key destroyed), states from HS_DESC events, and re-adding every live onion
//!   with its stored key whenever tor (or this service) comes back; placement over a pool of
//!   tors, failover to the others while one is away, and the move back when it returns.
//! - [`ports`]: which target port each identity's virtual ports (25, 80, 143, 587) map to.
//! - [`store`]: the rows, with keys sealed by the carrier secret, on SQLite or PostgreSQL.
//! - [`grpc`]: the `onionpost.onion.v1.Onion` adapter.
//!
//! What it does not do: listen on the target ports (smtp-in, keys and imap do, following
//! WatchOnions), or dial onions (egress asks GetSocksEndpoint and dials through tor's SOCKS).

pub mod config;
pub mod control;
pub mod error;
pub mod grpc;
pub mod onions;
pub mod ports;
pub mod store;
pub mod tor;

use std::sync::Arc;

use anyhow::Context as _;
use futures::future::BoxFuture;
use onionpost_proto::ServiceName;
use onionpost_proto::onion::v1::onion_server::OnionServer;
use onionpost_runtime::seal::CarrierSecret;
use onionpost_runtime::{Module, ServiceContext, Started};

pub use config::{OnionSettings, TorConnection};
pub use error::OnionError;
pub use onions::{Onions, Placement};

/// The purpose label of the onion keys' sealer.
pub const SEAL_PURPOSE: &str = "onion-key";

/// The onion service as a runtime module.
pub struct OnionModule;

impl Module for OnionModule {
    fn target(&self) -> ServiceName {
        ServiceName::Onion
    }

    fn start(
        self: Box<Self>,
        context: ServiceContext,
    ) -> BoxFuture<'static, anyhow::Result<Started>> {
        Box::pin(async move {
            let settings =
                OnionSettings::from_config(&context.config).map_err(|why| anyhow::anyhow!(why))?;
            let sealer = CarrierSecret::load(&context.config)
                .context("carrier secret")?
                .sealer(SEAL_PURPOSE);
            let database = context
                .database(store::MIGRATIONS)
                .await
                .context("onion database")?;
            let store = store::for_database(database);
            let placement = Placement {
                tors: settings.tors.iter().map(TorConnection::name).collect(),
                max_per_tor: settings.max_onions_per_tor,
                failover: settings.failover,
                restore_spread: context.config.tor.restore_spread,
            };
            let onions = Onions::load(
                store,
                sealer,
                settings.ports,
                settings.socks.clone(),
                placement,
                context.config.tor.revocation_serve,
            )
            .await
            .context("loading onions")?;
            context.spawn(
                "onion.retire",
                Arc::clone(&onions).retire_when_due(context.shutdown.clone()),
            );

            let mut connected = onions.connected();
            let health = context.clone();
            let shutdown = context.shutdown.clone();
            context.spawn("onion.health", async move {
                // Re-asserted on every change and every few seconds, so the runtime's SERVING
                // right after start-up cannot outlast a tor that is away.
                loop {
                    let serving = *connected.borrow_and_update();
                    health.set_serving(serving).await;
                    tokio::select! {
                        changed = connected.changed() => if changed.is_err() { return },
                        () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
            });
            for (index, tor) in settings.tors.into_iter().enumerate() {
                context.spawn(
                    "onion.tor",
                    tor::supervise(onions.clone(), index, tor, context.shutdown.clone()),
                );
            }
            Ok(Started::new()
                .with_grpc(OnionServer::new(grpc::OnionGrpc::new(Arc::clone(&onions)))))
        })
    }
}
