//! Serving each identity's key by WKD over its own onion (design.md, "Keys bound to the
//! onion"): the onion service maps each identity's virtual port 80 to a target port of its
//! own; this loop follows WatchOnions and keeps one HTTP listener per identity on that port,
//! serving only that identity's directory, so co-hosted identities stay unlinkable.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use onionpost_proto::ServiceName;
use onionpost_proto::onion::v1::onion_client::OnionClient;
use onionpost_proto::onion::v1::{OnionService, OnionState, PortPurpose, WatchOnionsRequest};
use onionpost_runtime::{ServiceContext, Transport};
use tokio_util::sync::CancellationToken;

use crate::service::KeysService;

const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Starts the WKD loop when the onion service is reachable (in this process or remote).
pub fn spawn(context: &ServiceContext, service: KeysService) {
    let Ok(transport) = context.transport(ServiceName::Onion) else {
        tracing::info!("onion service not configured; identities' keys are not served by wkd");
        return;
    };
    let loop_context = context.clone();
    context.spawn("keys.wkd", watch(loop_context, transport, service));
}

/// One identity's listener: the target it listens on and the token that stops it.
struct Listener {
    target: SocketAddr,
    stop: CancellationToken,
}

async fn watch(context: ServiceContext, transport: Transport, service: KeysService) {
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
                                follow(&context, &service, &mut listeners, onion).await;
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
        // Jitter keeps many keys replicas from retrying in step.
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

/// Brings one identity's listener in line with its onion: started on its WKD target port,
/// moved when the port changes, stopped when the onion is revoked.
async fn follow(
    context: &ServiceContext,
    service: &KeysService,
    listeners: &mut HashMap<String, Listener>,
    onion: &OnionService,
) {
    let wkd_target = onion
        .ports
        .iter()
        .find(|port| port.purpose == PortPurpose::Wkd as i32)
        .and_then(|port| {
            let host: IpAddr = port.target_host.parse().ok()?;
            let port = u16::try_from(port.target_port).ok()?;
            Some(SocketAddr::new(host, port))
        });
    let wanted = wkd_target.filter(|_| onion.state != OnionState::Revoked as i32);
    let current = listeners
        .get(&onion.identity_id)
        .map(|listener| listener.target);
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
            tracing::warn!(identity_id = %onion.identity_id, port = target.port(), %error, "cannot listen for wkd");
            return;
        }
    };
    let stop = context.shutdown.child_token();
    let router = crate::wkd::router(service.wkd_directory(&onion.identity_id));
    let serve_stop = stop.clone();
    let identity_id = onion.identity_id.clone();
    context.spawn("keys.wkd.listener", async move {
        if let Err(error) = axum::serve(listener, router)
            .with_graceful_shutdown(serve_stop.cancelled_owned())
            .await
        {
            tracing::warn!(%identity_id, %error, "wkd listener failed");
        }
    });
    tracing::debug!(identity_id = %onion.identity_id, port = target.port(), "serving wkd");
    listeners.insert(onion.identity_id.clone(), Listener { target, stop });
}

/// Listens on the address tor forwards to; when that address is not this host's (tor in
/// another container forwards to this container's address), on every interface.
async fn bind(target: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(target).await {
        Ok(listener) => Ok(listener),
        Err(error) if error.kind() == std::io::ErrorKind::AddrNotAvailable => {
            tokio::net::TcpListener::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), target.port())).await
        }
        Err(error) => Err(error),
    }
}
