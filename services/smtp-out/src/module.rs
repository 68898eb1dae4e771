//! The smtp-out service as a runtime module.

use futures::future::BoxFuture;
use onionpost_proto::MAX_GRPC_MESSAGE_BYTES;
use onionpost_proto::ServiceName;
use onionpost_proto::smtp_out::v1::smtp_out_server::SmtpOutServer;
use onionpost_runtime::{Module, ServiceContext, Started};

use crate::grpc::SmtpOutGrpc;
use crate::service::{SmtpOutService, SocksEndpoint};

/// The smtp-out service as a runtime module.
pub struct SmtpOutModule;

impl Module for SmtpOutModule {
    fn target(&self) -> ServiceName {
        ServiceName::SmtpOut
    }

    fn depends_on(&self) -> &'static [ServiceName] {
        // The onion service names tor's SOCKS endpoint (unless `tor.socks` does); asked
        // lazily, on the first delivery.
        &[ServiceName::Onion]
    }

    fn start(
        self: Box<Self>,
        context: ServiceContext,
    ) -> BoxFuture<'static, anyhow::Result<Started>> {
        Box::pin(async move {
            let socks = match &context.config.tor.socks {
                // The operator named tor's SOCKS port: the answer the onion service would give
                // too (`tor.socks` wins there), and smtp-out then works without an onion
                // service, as in a queue worker process of its own.
                Some(address) => SocksEndpoint::Named(address.to_string()),
                None => SocksEndpoint::FromOnionService(context.directory.clone()),
            };
            let service = SmtpOutService::new(socks)
                .with_max_stamp_bits(context.config.smtp_in.max_stamp_bits_paid);
            let server = SmtpOutServer::new(SmtpOutGrpc::new(service))
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
            Ok(Started::new().with_grpc(server))
        })
    }
}
