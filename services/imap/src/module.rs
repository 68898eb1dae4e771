//! The imap service as a runtime module: opens its database, loads the carrier secret, makes
//! sure a default plan exists, serves `onionpost.imap.v1.Imap` (with the identity lifecycle
//! wired to the onion and keys services), follows the other imap processes' mailbox changes on
//! PostgreSQL and starts the IMAP listeners.

use onionpost_proto::MAX_GRPC_MESSAGE_BYTES;
use std::sync::Arc;

use anyhow::Context as _;
use futures::future::BoxFuture;
use onionpost_proto::ServiceName;
use onionpost_proto::imap::v1::imap_server::ImapServer;
use onionpost_runtime::seal::CarrierSecret;
use onionpost_runtime::{Module, ServiceContext, Started};

use crate::clock::SystemClock;
use crate::grpc::ImapGrpc;
use crate::lifecycle::GrpcParts;
use crate::service::ImapService;

/// The imap service as a runtime module.
pub struct ImapModule;

impl Module for ImapModule {
    fn target(&self) -> ServiceName {
        ServiceName::Imap
    }

    fn depends_on(&self) -> &'static [ServiceName] {
        // Accounts and mail need nothing else. The onion service tells the IMAP listeners their
        // onion target ports, and onion and keys make and revoke identities' onions and keys
        // (the identity lifecycle); both are asked lazily, but start first when local.
        &[ServiceName::Onion, ServiceName::Keys]
    }

    fn start(
        self: Box<Self>,
        context: ServiceContext,
    ) -> BoxFuture<'static, anyhow::Result<Started>> {
        Box::pin(async move {
            let secret = CarrierSecret::load(&context.config).context("carrier secret")?;
            let database = context
                .database(crate::store::MIGRATIONS)
                .await
                .context("imap database")?;
            let service = ImapService::open(
                database,
                secret,
                Arc::new(SystemClock),
                context.config.accounts.clone(),
            )
            .await
            .map_err(|error| anyhow::anyhow!("opening the imap store: {error}"))?;
            // On PostgreSQL other imap processes may share the store: their changes wake IDLE
            // here too (src/changes.rs).
            if let Some(follower) = service.change_follower() {
                let shutdown = context.shutdown.clone();
                context.spawn("imap.changes", follower.run(shutdown));
            }
            // IMAP LISTENERS: the protocol layer (src/server) starts them here, with the same
            // store every delivery writes to (one change hub, one login back-off).
            crate::server::start::spawn_for_service(&context, &service).await?;
            let parts = Arc::new(GrpcParts::new(context.directory.clone()));
            let server = ImapServer::new(ImapGrpc::new(service).with_identity_parts(parts))
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
            Ok(Started::new().with_grpc(server))
        })
    }
}
