//! The queue service as a runtime module: opens its store, starts the scheduler, serves
//! `onionpost.queue.v1.Queue`.

use onionpost_proto::MAX_GRPC_MESSAGE_BYTES;
use std::sync::Arc;

use anyhow::Context as _;
use futures::future::BoxFuture;
use onionpost_proto::ServiceName;
use onionpost_proto::queue::v1::queue_server::QueueServer;
use onionpost_runtime::seal::CarrierSecret;
use onionpost_runtime::{Module, ServiceContext, Started};

use crate::carry::{CarryDesk, CarryLimits};
use crate::clock::SystemClock;
use crate::grpc::QueueGrpc;
use crate::retry::RetryPolicy;
use crate::scheduler::Scheduler;
use crate::service::QueueService;

/// The sealer purpose of queued bodies.
pub const BODY_SEAL_PURPOSE: &str = "queue-body";

/// The queue service as a runtime module.
pub struct QueueModule;

impl Module for QueueModule {
    fn target(&self) -> ServiceName {
        ServiceName::Queue
    }

    fn depends_on(&self) -> &'static [ServiceName] {
        // It delivers through smtp-out (onion) and the gateway (clearnet) and puts DSNs into
        // INBOXes through imap; it asks keys for designated carriers and to verify carry
        // statements, and follows onion to send ETRN when an identity comes online. All may
        // also run elsewhere, and are asked only when needed.
        &[
            ServiceName::SmtpOut,
            ServiceName::Gateway,
            ServiceName::Imap,
            ServiceName::Keys,
            ServiceName::Onion,
        ]
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
                .context("queue database")?;
            let store = crate::store::for_database(database);
            let service = QueueService::new(
                store,
                secret.sealer(BODY_SEAL_PURPOSE),
                Arc::new(SystemClock),
                RetryPolicy::from_settings(&context.config.queue),
            );
            let scheduler = Scheduler::new(service.clone(), context.directory.clone());
            context.spawn("queue-scheduler", scheduler.run(context.shutdown.clone()));
            context.spawn(
                "queue-carrier-pickup",
                crate::carry::pickup(
                    context.directory.clone(),
                    context.config.queue.etrn_spread,
                    context.shutdown.clone(),
                ),
            );
            let carry = CarryDesk::new(
                service.clone(),
                context.directory.clone(),
                CarryLimits::from_settings(&context.config.queue),
            )
            .with_mail_policy(
                context.config.queue.carry_policy,
                context.config.queue.carry_allow.clone(),
            );
            context.spawn(
                "queue-carry-intake",
                carry.clone().run_intake(context.shutdown.clone()),
            );
            let server = QueueServer::new(QueueGrpc::new(service, carry))
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
            Ok(Started::new().with_grpc(server))
        })
    }
}
