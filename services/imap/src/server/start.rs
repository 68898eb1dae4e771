//! Starting the IMAP listeners inside the service: the clearnet listener (`imap.listen`, with
//! STARTTLS), implicit TLS (`imap.tls_listen`) and one plain listener per identity's onion on
//! its IMAP target port, followed through the onion service's WatchOnions stream the way the
//! keys service follows WKD ports (services/keys/src/wkd_serve.rs).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use onionpost_proto::ServiceName;
use onionpost_proto::onion::v1::onion_client::OnionClient;
use onionpost_proto::onion::v1::{OnionService, OnionState, PortPurpose, WatchOnionsRequest};
use onionpost_runtime::{ServiceContext, Transport, tls};
use tokio_util::sync::CancellationToken;

use super::listen::{IdentityOwners, ImapServer, Limits, ListenerKind, SessionHook};
use crate::mailstore::{AccountId, SharedMailStore};
use crate::service::ImapService;

const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The imap service as the IMAP listeners need it: its mail store, who owns an identity, and
/// its session counter.
pub async fn spawn_for_service(
    context: &ServiceContext,
    service: &ImapService,
) -> anyhow::Result<ImapServer> {
    let sessions = service.sessions();
    let hook: SessionHook = Arc::new(move || Box::new(sessions.open()));
    let owners = Arc::new(ServiceOwners(service.clone()));
    spawn(
        context,
        service.mail_store(),
        owners,
        Limits::default(),
        Some(hook),
    )
    .await
}

struct ServiceOwners(ImapService);

#[async_trait::async_trait]
impl IdentityOwners for ServiceOwners {
    async fn owner_of(&self, identity_id: &str) -> Option<AccountId> {
        self.0
            .identity(identity_id)
            .await
            .ok()
            .map(|view| view.record.account_id)
    }
}

/// Binds the clearnet listeners and starts following identities' onions. Fails only when a
/// configured clearnet address cannot be bound or the TLS configuration is invalid.
pub async fn spawn(
    context: &ServiceContext,
    store: SharedMailStore,
    owners: Arc<dyn IdentityOwners>,
    limits: Limits,
    hook: Option<SessionHook>,
) -> anyhow::Result<ImapServer> {
    let config = &context.config;
    let acceptor = tls::acceptor(
        "imap",
        config.imap_tls_cert.as_deref(),
        config.imap_tls_key.as_deref(),
        &config.data_dir,
    )?;
    let server = match hook {
        Some(hook) => ImapServer::with_session_hook(store, limits, Some(acceptor), hook),
        None => ImapServer::new(store, limits, Some(acceptor)),
    };

    let listener = tokio::net::TcpListener::bind(config.imap_listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for imap on {}: {e}", config.imap_listen))?;
    let clearnet = server.clone();
    let shutdown = context.shutdown.clone();
    context.spawn("imap.listen", async move {
        clearnet
            .serve(listener, ListenerKind::Clearnet, shutdown)
            .await;
    });

    if let Some(address) = config.imap_tls_listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for imap tls on {address}: {e}"))?;
        let tls_server = server.clone();
        let shutdown = context.shutdown.clone();
        context.spawn("imap.tls_listen", async move {
            tls_server
                .serve(listener, ListenerKind::ImplicitTls, shutdown)
                .await;
        });
    }

    match context.transport(ServiceName::Onion) {
        Ok(transport) => {
            let loop_context = context.clone();
            let onion_server = server.clone();
            context.spawn(
                "imap.onions",
                watch(loop_context, transport, onion_server, owners),
            );
        }
        Err(_) => {
            tracing::info!(
                "onion service not configured; imap is not served on identities' onions"
            );
        }
    }
    Ok(server)
}

struct Listener {
    target: SocketAddr,
    stop: CancellationToken,
}

async fn watch(
    context: ServiceContext,
    transport: Transport,
    server: ImapServer,
    owners: Arc<dyn IdentityOwners>,
) {
    let shutdown = context.shutdown.clone();
    let mut listeners: HashMap<String, Listener> = HashMap::new();
    let mut backoff = Duration::from_secs(1);
    loop {
        let mut client = OnionClient::new(transport.clone());
        let started = tokio::select! {
            () = shutdown.cancelled() => break,
            started = client.watch_onions(WatchOnionsRequest { identity_ids: Vec::new() }) => started,
        };
        match started {
            Ok(response) => {
                backoff = Duration::from_secs(1);
                let mut stream = response.into_inner();
                loop {
                    let message = tokio::select! {
                        () = shutdown.cancelled() => break,
                        message = stream.message() => message,
                    };
                    match message {
                        Ok(Some(update)) => {
                            if update.snapshot {
                                let present: Vec<&str> = update
                                    .onions
                                    .iter()
                                    .map(|onion| onion.identity_id.as_str())
                                    .collect();
                                listeners.retain(|identity_id, listener| {
                                    let keep = present.contains(&identity_id.as_str());
                                    if !keep {
                                        listener.stop.cancel();
                                    }
                                    keep
                                });
                            }
                            for onion in &update.onions {
                                follow(&context, &server, &owners, &mut listeners, onion).await;
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::warn!(error = %status.message(), "onion watch ended");
                            break;
                        }
                    }
                }
            }
            Err(status) => {
                tracing::warn!(error = %status.message(), "cannot watch onions; retrying");
            }
        }
        if shutdown.is_cancelled() {
            break;
        }
        let jitter = Duration::from_millis(rand::random::<u64>() % 500);
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(backoff + jitter) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    for listener in listeners.values() {
        listener.stop.cancel();
    }
}

/// Keeps one identity's IMAP listener in line with its onion's IMAP target port.
async fn follow(
    context: &ServiceContext,
    server: &ImapServer,
    owners: &Arc<dyn IdentityOwners>,
    listeners: &mut HashMap<String, Listener>,
    onion: &OnionService,
) {
    let target = onion
        .ports
        .iter()
        .find(|port| port.purpose == PortPurpose::Imap as i32)
        .and_then(|port| {
            let host: IpAddr = port.target_host.parse().ok()?;
            let port = u16::try_from(port.target_port).ok()?;
            Some(SocketAddr::new(host, port))
        });
    let wanted = target.filter(|_| onion.state != OnionState::Revoked as i32);
    let current = listeners.get(&onion.identity_id).map(|l| l.target);
    if current == wanted {
        return;
    }
    if let Some(old) = listeners.remove(&onion.identity_id) {
        old.stop.cancel();
    }
    let Some(target) = wanted else { return };
    let listener = match bind(target).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::warn!(identity_id = %onion.identity_id, port = target.port(), %error, "cannot listen for imap on onion target");
            return;
        }
    };
    let stop = context.shutdown.child_token();
    let serve_stop = stop.clone();
    let kind = ListenerKind::Onion {
        identity_id: onion.identity_id.clone(),
        owners: owners.clone(),
    };
    let onion_server = server.clone();
    context.spawn("imap.onion.listener", async move {
        onion_server.serve(listener, kind, serve_stop).await;
    });
    tracing::debug!(identity_id = %onion.identity_id, port = target.port(), "serving imap on onion");
    listeners.insert(onion.identity_id.clone(), Listener { target, stop });
}

async fn bind(target: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(target).await {
        Ok(listener) => Ok(listener),
        Err(error) if error.kind() == std::io::ErrorKind::AddrNotAvailable => {
            tokio::net::TcpListener::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), target.port())).await
        }
        Err(error) => Err(error),
    }
}
