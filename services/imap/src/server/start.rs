//! Starting the IMAP listeners inside the service: the clearnet listener (`imap.listen`, with
//! STARTTLS), implicit TLS (`imap.tls_listen`) and one plain listener per identity's onion on
//! its IMAP target port, kept by the runtime's onion follower (`onionpost_runtime::onions`), the
//! same one that keeps smtp-in's and the WKD listeners.

use std::sync::Arc;

use onionpost_proto::onion::v1::PortPurpose;
use onionpost_runtime::onions::{Binding, Follower};
use onionpost_runtime::{ServiceContext, tls};

use super::listen::{IdentityOwners, ImapServer, Limits, ListenerKind, SessionHook};
use crate::mailstore::{AccountId, SharedMailStore};
use crate::service::ImapService;

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

    async fn login_alias(&self, identity_id: &str) -> Option<(String, String)> {
        let identity = self.0.identity(identity_id).await.ok()?;
        let owner = self.0.account(&identity.record.account_id).await.ok()?;
        Some((identity.record.address, owner.record.login))
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
        &onionpost_runtime::seal::CarrierSecret::load(config)?,
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

    let onion_server = server.clone();
    Follower::new(
        &[PortPurpose::Imap],
        "imap.onion.listener",
        move |binding: Binding| {
            let listener_server = onion_server.clone();
            let kind = ListenerKind::Onion {
                identity_id: binding.identity_id,
                owners: owners.clone(),
            };
            async move {
                listener_server
                    .serve(binding.listener, kind, binding.stop)
                    .await
            }
        },
    )
    .spawn(context, "imap.onions");
    Ok(server)
}
