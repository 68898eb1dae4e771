//! The gateway as a runtime module: opens its store, loads (or makes) the DKIM key, logs the DNS
//! records the domain needs ([`crate::records`]), builds the resolver and the outbound route,
//! listens as the gateway domain's MX and serves `onionpost.gateway.v1.Gateway`.

use std::sync::Arc;

use anyhow::Context as _;
use futures::future::BoxFuture;
use onionpost_proto::ServiceName;
use onionpost_proto::gateway::v1::gateway_server::GatewayServer;
use onionpost_runtime::{Module, ServiceContext, Started};
use tokio::net::TcpListener;

use crate::backend::GrpcBackend;
use crate::dkim::Signer;
use crate::grpc::{DisabledGatewayGrpc, GatewayGrpc};
use crate::inbound::Inbound;
use crate::outbound::{Outbound, Route};
use crate::service::GatewayService;
use onionpost_proto::MAX_GRPC_MESSAGE_BYTES;

/// The gateway as a runtime module.
pub struct GatewayModule;

impl Module for GatewayModule {
    fn target(&self) -> ServiceName {
        ServiceName::Gateway
    }

    fn depends_on(&self) -> &'static [ServiceName] {
        // Plans and delivery through imap, keys for identities that hold their own key; both
        // are asked per message, so they may also run elsewhere.
        &[ServiceName::Imap, ServiceName::Keys]
    }

    fn start(
        self: Box<Self>,
        context: ServiceContext,
    ) -> BoxFuture<'static, anyhow::Result<Started>> {
        Box::pin(async move {
            let settings = context.config.gateway.clone();
            let Some(domain) = settings.domain.clone() else {
                // `--target all` on a carrier without a clearnet domain: the contract answers,
                // refusing every clearnet send, and no MX listens.
                tracing::info!("gateway.domain not set; the gateway refuses clearnet mail");
                return Ok(Started::new().with_grpc(GatewayServer::new(DisabledGatewayGrpc)));
            };
            let secret = onionpost_runtime::seal::CarrierSecret::load(&context.config)
                .context("carrier secret")?;
            let sealer = secret.sealer(crate::dkim::SEAL_PURPOSE);
            let signer = Signer::load(
                settings.dkim_key.as_deref(),
                &context.config.data_dir,
                &sealer,
                &domain,
                &settings.dkim_selector,
            )?;
            // What the operator must publish, from the key actually loaded: one line each.
            let records = crate::records::for_domain(
                &domain,
                &signer.dns_record(),
                settings.smarthost.as_ref().map(|host| host.host.as_str()),
            );
            for record in &records {
                tracing::info!(purpose = record.purpose, record = %record, "gateway DNS record to publish");
            }
            tracing::info!(host = %domain, "the gateway MX host also needs an A or AAAA record: the address its MX port is published on");
            let resolver = Arc::new(crate::dns::authenticator(settings.dns)?);
            let route = match &settings.smarthost {
                Some(host) => Route::Smarthost {
                    host: host.clone(),
                    auth: settings.smarthost_auth.clone(),
                },
                None => Route::Mx {
                    port: settings.mx_port,
                },
            };
            let outbound = Outbound::new(resolver.clone(), route, &domain)?;
            let database = context
                .database(crate::store::MIGRATIONS)
                .await
                .context("gateway database")?;
            let store = crate::store::for_database(database, &secret);
            let sealed = store
                .seal_clear_aliases()
                .await
                .context("sealing alias correspondents kept in the clear by an earlier version")?;
            if sealed > 0 {
                tracing::info!(aliases = sealed, "alias correspondents sealed at rest");
            }
            let backend = Arc::new(GrpcBackend::new(context.directory.clone()));
            let service = GatewayService::new(
                store,
                backend,
                &domain,
                settings.daily_cap,
                Arc::new(signer),
                outbound,
            );

            let listener = TcpListener::bind(settings.listen).await.map_err(|error| {
                anyhow::anyhow!(
                    "cannot listen as the gateway MX on {}: {error}",
                    settings.listen
                )
            })?;
            let inbound = Arc::new(
                Inbound::new(
                    service.clone(),
                    resolver,
                    settings.dmarc_policy,
                    settings.max_message_bytes,
                    settings.inbound_per_hour,
                )
                .with_rspamd(settings.rspamd.clone()),
            );
            let stop = context.shutdown.clone();
            context.spawn("gateway.mx", crate::inbound::serve(listener, inbound, stop));

            let server = GatewayServer::new(GatewayGrpc::new(service))
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
            Ok(Started::new().with_grpc(server))
        })
    }
}
