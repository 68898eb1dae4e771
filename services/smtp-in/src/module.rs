//! smtp-in as a runtime module: the carrier-wide submission listener, and per identity (kept by
//! the runtime's onion follower, `onionpost_runtime::onions`, as keys' WKD and imap are) an MX
//! listener on its SMTP target port and a submission listener on its submission target port.
//!
//! AUTH is offered without TLS on identities' onions (tor encrypts end to end) and on the
//! carrier-wide listener only to loopback clients; from elsewhere it is refused (538), since
//! smtp-in does not speak STARTTLS yet.

use std::sync::Arc;

use futures::future::BoxFuture;
use onionpost_proto::ServiceName;
use onionpost_proto::onion::v1::PortPurpose;
use onionpost_proto::smtp_in::v1::smtp_in_server::SmtpInServer;
use onionpost_runtime::onions::{Binding, Follower};
use onionpost_runtime::{Module, ServiceContext, Started};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::grpc::SmtpInGrpc;
use crate::grpc_backend::GrpcBackend;
use crate::stats::ListenerKind;
use crate::{Backend, InboundPolicy, Limits, Mode, Policy, Session, Stats};

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
            let policy = Arc::new(
                Policy::new(
                    settings.plaintext_policy,
                    Limits {
                        max_message_bytes: settings.max_message_bytes,
                        ..Limits::default()
                    },
                    settings.max_messages_per_hour_per_account,
                    stats.clone(),
                )
                .with_inbound(InboundPolicy {
                    stamp_bits: settings.stamp_bits,
                    stamp_step_messages: settings.stamp_step_messages,
                    stamp_max_bits: settings.stamp_max_bits,
                    max_messages_per_hour_per_identity: settings.max_messages_per_hour_per_identity,
                    max_messages_per_hour_per_sender: settings.max_messages_per_hour_per_sender,
                }),
            );
            let backend = Arc::new(GrpcBackend::new(context.directory.clone()));

            let config = &context.config;
            let tls = onionpost_runtime::tls::acceptor(
                "submission",
                config.submission_tls_cert.as_deref(),
                config.submission_tls_key.as_deref(),
                &config.data_dir,
                &onionpost_runtime::seal::CarrierSecret::load(config)?,
            )?;
            let address = config.submission_listen;
            let listener = TcpListener::bind(address)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen for submission on {address}: {e}"))?;
            let (b, p, stop) = (backend.clone(), policy.clone(), context.shutdown.clone());
            context.spawn("smtp_in.submission", async move {
                serve(listener, b, p, Kind::Submission(Some(tls)), stop).await;
            });

            follow_onions(&context, backend, policy);
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
/// (`limits.max_sessions_per_listener`) and the carrier-wide ceiling (`limits.max_sessions`);
/// their messages are held within the listener's memory budget and its ceiling.
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
    let memory = policy.listener_memory();
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
        let mut session =
            Session::new(backend.clone(), session_policy.clone(), mode).with_memory(memory.clone());
        if let Kind::Submission(Some(tls)) = &kind {
            session = session.with_starttls(tls.clone());
        }
        session.run(stream)
    })
    .await;
    policy.stats.listener(stats_kind, false);
}

/// Keeps, per identity, an MX listener on its onion's SMTP target port and a submission
/// listener on its submission target port.
fn follow_onions<B: Backend>(context: &ServiceContext, backend: Arc<B>, policy: Arc<Policy>) {
    Follower::new(
        &[PortPurpose::Smtp, PortPurpose::Submission],
        "smtp_in.onion.listener",
        move |binding: Binding| {
            let kind = if binding.purpose == PortPurpose::Smtp {
                Kind::Mx(binding.identity_id)
            } else {
                Kind::OnionSubmission(binding.identity_id)
            };
            serve(
                binding.listener,
                backend.clone(),
                policy.clone(),
                kind,
                binding.stop,
            )
        },
    )
    .spawn(context, "smtp_in.onions");
}
