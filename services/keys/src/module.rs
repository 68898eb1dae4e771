//! The keys service as a runtime module: opens its store, loads the carrier secret, publishes
//! every live identity's key for WKD, serves `onionpost.keys.v1.Keys`, and (when the onion
//! service is reachable) serves each identity's WKD on its own onion target port.

use anyhow::Context as _;
use futures::future::BoxFuture;
use onionpost_proto::MAX_GRPC_MESSAGE_BYTES;
use onionpost_proto::ServiceName;
use onionpost_proto::keys::v1::keys_server::KeysServer;
use onionpost_runtime::seal::CarrierSecret;
use onionpost_runtime::{Module, ServiceContext, Started};

use crate::fetch::{OnionServiceKeys, TorWkdFetcher};
use crate::grpc::KeysGrpc;
use crate::service::{KeysService, WkdDirectories};

/// The keys service as a runtime module.
pub struct KeysModule;

impl Module for KeysModule {
    fn target(&self) -> ServiceName {
        ServiceName::Keys
    }

    fn depends_on(&self) -> &'static [ServiceName] {
        // The onion service tells keys the SOCKS endpoint and the WKD target ports; keys still
        // starts without it (it is asked lazily), but starts after it when both are local.
        &[ServiceName::Onion]
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
                .context("keys database")?;
            let store = crate::store::for_database(database, &secret);
            let sealed = store
                .seal_clear_contacts()
                .await
                .context("sealing address books kept in the clear by an earlier version")?;
            if sealed > 0 {
                tracing::info!(contacts = sealed, "address books sealed at rest");
            }
            let fetcher = TorWkdFetcher::new(context.directory.clone());
            let onion = OnionServiceKeys::new(context.directory.clone());
            let service =
                KeysService::new(store, secret, fetcher, onion, WkdDirectories::default())
                    .with_contact_requests(context.config.accounts.contact_requests);
            let published = service
                .publish_all(context.config.tor.revocation_serve)
                .await
                .map_err(|error| anyhow::anyhow!("publishing identity keys: {error}"))?;
            tracing::info!(identities = published, "identity keys published for wkd");
            crate::wkd_serve::spawn(&context, service.clone());
            let server = KeysServer::new(KeysGrpc::new(service))
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
            Ok(Started::new().with_grpc(server))
        })
    }
}
