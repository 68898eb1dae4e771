//! smtp-in as a runtime module: the carrier-wide submission listener, and per identity (followed
//! through the onion service's WatchOnions, as services/keys/src/wkd_serve.rs does for WKD) an
//! MX listener on its SMTP target port and a submission listener on its submission target port.
//!
//! AUTH is offered without TLS on identities' onions (tor encrypts end to end) and on the
//! carrier-wide listener only to loopback clients; from elsewhere it is refused (538), since
//! smtp-in does not speak STARTTLS yet.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use onionpost_proto::ServiceName;
use onionpost_proto::onion::v1::onion_client::OnionClient;
use onionpost_proto::onion::v1::{OnionService, OnionState, PortPurpose, WatchOnionsRequest};
use onionpost_proto::smtp_in::v1::smtp_in_server::SmtpInServer;
use onionpost_runtime::{Module, ServiceContext, Started, Transport};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::grpc::SmtpInGrpc;
use crate::grpc_backend::GrpcBackend;
use crate::stats::ListenerKind;
use crate::{Backend, Limits, Mode, Policy, Session, Stats};

const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// smtp-in as a runtime module.
pub struct SmtpInModule;

impl Module for SmtpInModule {
    fn target(&self) -> ServiceName {
        ServiceName::SmtpIn
    }

    fn depends_on(&self) -> &'static [ServiceName] {
        &[
            ServiceName::Onion,
            ServiceName::Keys,
            ServiceName::Imap,
            ServiceName::Queue,
        ]
    }

    fn start(
        self: Box<Self>,
        context: ServiceContext,
    ) -> BoxFuture<'static, anyhow::Result<Started>> {
        Box::pin(async move {
            let settings = context.config.smtp_in;
            let stats = Stats::default();
            let policy = Arc::new(Policy::new(
                settings.plaintext_policy,
                Limits {
                    max_message_bytes: settings.max_message_bytes,
                    ..Limits::default()
                },
                settings.max_messages_per_hour_per_account,
                stats.clone(),
            ));
            let backend = Arc::new(GrpcBackend::new(context.directory.clone()));

            let config = &context.config;
            let tls = onionpost_runtime::tls::acceptor(
                "submission",
                config.submission_tls_cert.as_deref(),
                config.submission_tls_key.as_deref(),
                &config.data_dir,
            )?;
            let address = config.submission_listen;
            let listener = TcpListener::bind(address)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen for submission on {address}: {e}"))?;
            let (b, p, stop) = (backend.clone(), policy.clone(), context.shutdown.clone());
            context.spawn("smtp_in.submission", async move {
                serve(listener, b, p, Kind::Submission(Some(tls)), stop).await;
            });

            match context.transport(ServiceName::Onion) {
                Ok(transport) => {
                    let loop_context = context.clone();
                    context.spawn(
                        "smtp_in.onions",
                        watch(loop_context, transport, backend, policy),
                    );
                }
                Err(_) => tracing::info!(
                    "onion service not configured; smtp-in is not served on identities' onions"
                ),
            }
            Ok(Started::new().with_grpc(SmtpInServer::new(SmtpInGrpc::new(stats, settings))))
        })
    }
}

/// What a listener serves.
#[derive(Clone)]
pub enum Kind {
    /// The carrier-wide submission listener, offering STARTTLS with this certificate when
    /// set (AUTH only after STARTTLS, or for loopback clients).
    Submission(Option<TlsAcceptor>),
    /// An identity's onion MX, by identity id.
    Mx(String),
    /// Submission through an identity's onion, by identity id.
    OnionSubmission(String),
}

/// Accepts connections until `stop`, one session task each, within this listener's own limit
/// (`limits.max_sessions_per_listener`) and the carrier-wide ceiling (`limits.max_sessions`).
pub async fn serve<B: Backend>(
    listener: TcpListener,
    backend: Arc<B>,
    policy: Arc<Policy>,
    kind: Kind,
    stop: CancellationToken,
) {
    let stats_kind = match kind {
        Kind::Submission(_) => ListenerKind::Submission,
        Kind::Mx(_) => ListenerKind::Mx,
        Kind::OnionSubmission(_) => ListenerKind::OnionSubmission,
    };
    policy.stats.listener(stats_kind, true);
    let limit = policy.listener_limit();
    let session_policy = policy.clone();
    onionpost_smtp_server::serve(listener, limit, stop, move |stream, peer| {
        let mode = match &kind {
            Kind::Submission(_) => Mode::Submission {
                onion_identity: None,
                auth_allowed: peer.ip().is_loopback(),
            },
            Kind::Mx(identity_id) => Mode::Ingress {
                identity_id: identity_id.clone(),
            },
            Kind::OnionSubmission(identity_id) => Mode::Submission {
                onion_identity: Some(identity_id.clone()),
                auth_allowed: true,
            },
        };
        let mut session = Session::new(backend.clone(), session_policy.clone(), mode);
        if let Kind::Submission(Some(tls)) = &kind {
            session = session.with_starttls(tls.clone());
        }
        session.run(stream)
    })
    .await;
    policy.stats.listener(stats_kind, false);
}

struct Listener {
    target: SocketAddr,
    stop: CancellationToken,
}

async fn watch<B: Backend>(
    context: ServiceContext,
    transport: Transport,
    backend: Arc<B>,
    policy: Arc<Policy>,
) {
    let shutdown = context.shutdown.clone();
    // Keyed by (identity, purpose): each identity has an MX and a submission listener.
    let mut listeners: HashMap<(String, i32), Listener> = HashMap::new();
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
                                listeners.retain(|(identity_id, _), listener| {
                                    let keep = present.contains(&identity_id.as_str());
                                    if !keep {
                                        listener.stop.cancel();
                                    }
                                    keep
                                });
                            }
                            for onion in &update.onions {
                                for purpose in [PortPurpose::Smtp, PortPurpose::Submission] {
                                    follow(
                                        &context,
                                        &backend,
                                        &policy,
                                        &mut listeners,
                                        onion,
                                        purpose,
                                    )
                                    .await;
                                }
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

/// Keeps one identity's listener for one purpose in line with its onion's target port.
async fn follow<B: Backend>(
    context: &ServiceContext,
    backend: &Arc<B>,
    policy: &Arc<Policy>,
    listeners: &mut HashMap<(String, i32), Listener>,
    onion: &OnionService,
    purpose: PortPurpose,
) {
    let target = onion
        .ports
        .iter()
        .find(|port| port.purpose == purpose as i32)
        .and_then(|port| {
            let host: IpAddr = port.target_host.parse().ok()?;
            let port = u16::try_from(port.target_port).ok()?;
            Some(SocketAddr::new(host, port))
        });
    let wanted = target.filter(|_| onion.state != OnionState::Revoked as i32);
    let key = (onion.identity_id.clone(), purpose as i32);
    let current = listeners.get(&key).map(|l| l.target);
    if current == wanted {
        return;
    }
    if let Some(old) = listeners.remove(&key) {
        old.stop.cancel();
    }
    let Some(target) = wanted else { return };
    let listener = match bind(target).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::warn!(identity_id = %onion.identity_id, port = target.port(), %error, "cannot listen for smtp on onion target");
            return;
        }
    };
    let stop = context.shutdown.child_token();
    let kind = if purpose == PortPurpose::Smtp {
        Kind::Mx(onion.identity_id.clone())
    } else {
        Kind::OnionSubmission(onion.identity_id.clone())
    };
    let (b, p, s) = (backend.clone(), policy.clone(), stop.clone());
    context.spawn("smtp_in.onion.listener", async move {
        serve(listener, b, p, kind, s).await;
    });
    tracing::debug!(identity_id = %onion.identity_id, port = target.port(), "serving smtp on onion");
    listeners.insert(key, Listener { target, stop });
}

async fn bind(target: SocketAddr) -> std::io::Result<TcpListener> {
    match TcpListener::bind(target).await {
        Ok(listener) => Ok(listener),
        Err(error) if error.kind() == std::io::ErrorKind::AddrNotAvailable => {
            TcpListener::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), target.port())).await
        }
        Err(error) => Err(error),
    }
}
