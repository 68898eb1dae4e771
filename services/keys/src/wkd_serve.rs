//! Serving each identity's key by WKD over its own onion (design.md, "Keys bound to the
//! onion"): the onion service maps each identity's virtual port 80 to a target port of its
//! own; the runtime's onion follower (`onionpost_runtime::onions`) keeps one HTTP listener per
//! identity on that port, and each serves only that identity's directory, so co-hosted
//! identities stay unlinkable.

use onionpost_proto::onion::v1::PortPurpose;
use onionpost_runtime::ServiceContext;
use onionpost_runtime::onions::{Binding, Follower};

use crate::service::KeysService;

/// Starts following identities' WKD ports when the onion service is reachable (in this process
/// or remote).
pub fn spawn(context: &ServiceContext, service: KeysService) {
    Follower::new(
        &[PortPurpose::Wkd],
        "keys.wkd.listener",
        move |binding: Binding| {
            let router = crate::wkd::router(service.wkd_directory(&binding.identity_id));
            async move {
                let identity_id = binding.identity_id;
                if let Err(error) = axum::serve(binding.listener, router)
                    .with_graceful_shutdown(binding.stop.cancelled_owned())
                    .await
                {
                    tracing::warn!(%identity_id, %error, "wkd listener failed");
                }
            }
        },
    )
    .spawn(context, "keys.wkd");
}
