//! Services as modules: each with its dependencies, started in dependency order in one process,
//! stopped in reverse; the process serves their gRPC contracts, gRPC health and reflection on one
//! listener.
//!
//! A service crate implements [`Module`]. The binary picks the modules of the targets it runs,
//! registers every other configured service as remote, and hands [`run`] the listeners and the
//! shutdown token: a service never binds the gRPC port itself nor decides when to stop.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use onionpost_proto::ServiceName;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::Instrument;

use crate::config::Config;
use crate::db::{Database, DatabaseError, Migrations};
use crate::grpc::{Directory, NotReachable, TraceServerLayer, Transport};
use crate::grpc_tls::GrpcTls;
use crate::seal::CarrierSecret;

type AddService = Box<dyn Fn(&mut RoutesBuilder) + Send + Sync>;

/// What a started service hands back: the gRPC services it serves.
#[derive(Default)]
pub struct Started {
    grpc: Vec<AddService>,
}

impl Started {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a generated tonic server (`KeysServer::new(…)`) to what this service serves.
    pub fn with_grpc<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.grpc.push(Box::new(move |routes: &mut RoutesBuilder| {
            routes.add_service(service.clone());
        }));
        self
    }
}

/// One service: its target name, what it needs started first, and how to start it.
pub trait Module: Send {
    fn target(&self) -> ServiceName;

    /// Services this one calls during start-up; when they run in this process they start first.
    fn depends_on(&self) -> &'static [ServiceName] {
        &[]
    }

    /// Starts the service: open its store, spawn its background tasks on `context`, return its
    /// gRPC services. Returning an error stops the whole process with that error.
    fn start(
        self: Box<Self>,
        context: ServiceContext,
    ) -> BoxFuture<'static, anyhow::Result<Started>>;
}

/// What a service gets from the process: configuration, the way to other services, its task
/// set and the shutdown signal.
#[derive(Clone)]
pub struct ServiceContext {
    pub config: Arc<Config>,
    pub directory: Directory,
    /// Cancelled when the process begins to shut down; background loops select on it.
    pub shutdown: CancellationToken,
    target: ServiceName,
    tasks: TaskTracker,
    health: HealthReporter,
    /// Every database the process opened, closed at the end of shutdown (for SQLite that
    /// checkpoints the WAL into the file and removes it, with what it still held).
    databases: Arc<std::sync::Mutex<Vec<Database>>>,
}

impl ServiceContext {
    pub fn target(&self) -> ServiceName {
        self.target
    }

    /// Spawns a named background task. The process waits for it (up to the drain timeout) at
    /// shutdown, so it must return soon after `shutdown` is cancelled.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let span = tracing::info_span!("task", service = self.target.as_str(), task = name);
        self.tasks.spawn(task.instrument(span));
    }

    /// The transport to another service, local or remote.
    pub fn transport(&self, target: ServiceName) -> Result<Transport, NotReachable> {
        self.directory.transport(target)
    }

    /// Opens and migrates this service's database; the process closes it at shutdown.
    pub async fn database(&self, migrations: Migrations) -> Result<Database, DatabaseError> {
        let database = Database::open(&self.config.database, self.target, migrations).await?;
        self.databases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(database.clone());
        Ok(database)
    }

    /// Reports this service's health (grpc.health.v1), e.g. NOT_SERVING while tor is away.
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.health
            .set_service_status(self.target.grpc_name(), status)
            .await;
    }
}

/// Orders `modules` so that every dependency in the set starts before its dependents.
fn start_order(modules: Vec<Box<dyn Module>>) -> anyhow::Result<Vec<Box<dyn Module>>> {
    let mut pending: BTreeMap<ServiceName, Box<dyn Module>> = BTreeMap::new();
    for module in modules {
        let target = module.target();
        anyhow::ensure!(
            pending.insert(target, module).is_none(),
            "service {} named twice",
            target.as_str()
        );
    }
    let present: BTreeSet<ServiceName> = pending.keys().copied().collect();
    let mut started = BTreeSet::new();
    let mut ordered = Vec::new();
    while !pending.is_empty() {
        let ready = pending
            .iter()
            .find(|(_, module)| {
                module
                    .depends_on()
                    .iter()
                    .all(|dependency| !present.contains(dependency) || started.contains(dependency))
            })
            .map(|(target, _)| *target)
            .context("service dependencies form a cycle")?;
        let module = pending.remove(&ready).expect("found above");
        started.insert(ready);
        ordered.push(module);
    }
    Ok(ordered)
}

/// The listeners a process serves on, bound by the caller.
pub struct Listeners {
    pub grpc: TcpListener,
    pub metrics: Option<TcpListener>,
}

/// Runs `modules` until `shutdown` is cancelled, then drains for at most the configured time.
pub async fn run(
    config: Config,
    modules: Vec<Box<dyn Module>>,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    // Every process of the carrier holds the secret; the gRPC credentials come from it.
    let tls = GrpcTls::from_secret(&CarrierSecret::load(&config).context("carrier secret")?)?;
    let directory = Directory::secured(tls.clone());
    let local: BTreeSet<ServiceName> = modules.iter().map(|module| module.target()).collect();
    for (target, address) in &config.remote {
        if !local.contains(target) {
            directory
                .register_remote(*target, address)
                .map_err(|error| anyhow::anyhow!("remote.{}: {error}", target.as_str()))?;
        }
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    let tasks = TaskTracker::new();
    let mut process_routes = RoutesBuilder::default();
    process_routes.add_service(health_service.clone());
    process_routes.add_service(
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(onionpost_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("gRPC reflection")?,
    );

    let databases = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut started_targets = Vec::new();
    for module in start_order(modules)? {
        let target = module.target();
        let context = ServiceContext {
            config: config.clone(),
            directory: directory.clone(),
            shutdown: shutdown.clone(),
            target,
            tasks: tasks.clone(),
            health: health.clone(),
            databases: databases.clone(),
        };
        let started = module
            .start(context.clone())
            .await
            .with_context(|| format!("starting service {}", target.as_str()))?;
        // Health travels with each service too, so an in-memory health check of a local
        // service answers exactly as the network one does.
        let mut own_routes = RoutesBuilder::default();
        own_routes.add_service(health_service.clone());
        for add in &started.grpc {
            add(&mut own_routes);
            add(&mut process_routes);
        }
        directory.register_local(target, own_routes.routes());
        context.set_serving(true).await;
        tracing::info!(service = target.as_str(), "service started");
        started_targets.push(context);
    }

    let grpc_address = listeners.grpc.local_addr()?;
    let grpc_server = tonic::transport::Server::builder()
        .tls_config(tls.server())
        .context("gRPC TLS")?
        .layer(TraceServerLayer)
        .add_routes(process_routes.routes())
        .serve_with_incoming_shutdown(
            tokio_stream_listener(listeners.grpc),
            shutdown.clone().cancelled_owned(),
        );
    let grpc_task = tokio::spawn(grpc_server.instrument(tracing::info_span!("grpc.serve")));
    tracing::info!(address = %grpc_address, "grpc listening");

    let metrics_task = listeners.metrics.map(|listener| {
        let shutdown = shutdown.clone();
        if let Ok(address) = listener.local_addr() {
            tracing::info!(address = %address, "metrics listening");
        }
        tokio::spawn(async move {
            axum::serve(listener, crate::telemetry::metrics_router())
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        })
    });

    shutdown.cancelled().await;
    tracing::info!(
        drain_timeout_secs = config.drain_timeout.as_secs(),
        "shutting down"
    );
    for context in started_targets.iter().rev() {
        context.set_serving(false).await;
    }
    tasks.close();
    let drained = tokio::time::timeout(config.drain_timeout, async {
        tasks.wait().await;
        if let Err(error) = grpc_task.await {
            tracing::warn!(%error, "grpc server task ended abnormally");
        }
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("drain timeout passed with work still running; exiting anyway");
    }
    let opened: Vec<Database> = std::mem::take(
        &mut *databases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    for database in opened {
        let _ = tokio::time::timeout(Duration::from_secs(5), database.close()).await;
    }
    Ok(())
}

fn tokio_stream_listener(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((accepted, listener))
    })
}

/// Cancels `token` on SIGINT or SIGTERM.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let interrupt = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut terminate =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(signal) => signal,
                    Err(error) => {
                        tracing::error!(%error, "cannot listen for SIGTERM");
                        let _ = interrupt.await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = interrupt => {}
                _ = terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = interrupt.await;
        token.cancel();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(ServiceName, &'static [ServiceName]);

    impl Module for Fake {
        fn target(&self) -> ServiceName {
            self.0
        }
        fn depends_on(&self) -> &'static [ServiceName] {
            self.1
        }
        fn start(
            self: Box<Self>,
            _: ServiceContext,
        ) -> BoxFuture<'static, anyhow::Result<Started>> {
            Box::pin(async { Ok(Started::new()) })
        }
    }

    #[test]
    fn dependencies_start_first_and_absent_ones_are_ignored() {
        let modules: Vec<Box<dyn Module>> = vec![
            Box::new(Fake(
                ServiceName::Admin,
                &[ServiceName::Keys, ServiceName::Imap],
            )),
            Box::new(Fake(ServiceName::Keys, &[ServiceName::Onion])),
            Box::new(Fake(ServiceName::Onion, &[])),
        ];
        let order: Vec<ServiceName> = start_order(modules)
            .unwrap()
            .iter()
            .map(|module| module.target())
            .collect();
        assert_eq!(
            order,
            vec![ServiceName::Onion, ServiceName::Keys, ServiceName::Admin]
        );
    }

    #[test]
    fn cycles_are_reported() {
        let modules: Vec<Box<dyn Module>> = vec![
            Box::new(Fake(ServiceName::Keys, &[ServiceName::Onion])),
            Box::new(Fake(ServiceName::Onion, &[ServiceName::Keys])),
        ];
        assert!(start_order(modules).is_err());
    }
}
