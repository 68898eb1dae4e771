//! Fetching a peer's key by WKD over its own onion, through the SOCKS endpoint the onion
//! service names. Behind a trait so the adapter can be tested in memory without tor.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use onionpost_proto::ServiceName;
use onionpost_proto::clients;
use onionpost_proto::onion::v1::GetSocksEndpointRequest;
use onionpost_proto::onion::v1::onion_client::OnionClient;
use onionpost_runtime::Directory;
use tokio::sync::Mutex;

use crate::{Address, Cert, KeysError};

/// How long one WKD fetch over tor may take: a fresh circuit to an onion service can take tens
/// of seconds on a slow network.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(90);

/// Fetches what an address publishes on its own onion: its key, bound to that address, and its
/// signed carrier list (unverified: the caller checks it against the key it pinned).
///
/// `on_behalf_of` names who asks (an identity id, or a fixed word for the carrier itself):
/// fetches for different askers never share a tor circuit, so a peer's onion cannot link two
/// identities of this carrier by the circuit their fetches arrive on (design.md,
/// "Unlinkability is a property of every reply").
#[async_trait]
pub trait KeyFetcher: Send + Sync + 'static {
    async fn fetch(&self, address: &Address, on_behalf_of: &str) -> Result<Cert, KeysError>;

    /// The signed carrier list, or `None` when the onion publishes none.
    async fn fetch_carriers(
        &self,
        address: &Address,
        on_behalf_of: &str,
    ) -> Result<Option<Vec<u8>>, KeysError>;
}

/// The real fetcher: asks the onion service for tor's SOCKS endpoint (once, then remembers
/// it), and fetches through it with [`crate::wkd::fetch`].
pub struct TorWkdFetcher {
    directory: Directory,
    socks: Mutex<Option<SocketAddr>>,
    timeout: Duration,
    /// Random per process: the SOCKS username is a keyed hash of the asker, so not even the
    /// local tor's logs hold identity ids.
    circuit_key: [u8; 32],
}

impl TorWkdFetcher {
    pub fn new(directory: Directory) -> Arc<Self> {
        Arc::new(TorWkdFetcher {
            directory,
            socks: Mutex::new(None),
            timeout: FETCH_TIMEOUT,
            circuit_key: rand::random(),
        })
    }

    /// The SOCKS username for fetches made on behalf of `asker`.
    fn circuit(&self, asker: &str) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(self.circuit_key);
        hash.update(asker.as_bytes());
        hex::encode(&hash.finalize()[..16])
    }

    async fn socks_endpoint(&self) -> Result<SocketAddr, KeysError> {
        let mut cached = self.socks.lock().await;
        if let Some(address) = *cached {
            return Ok(address);
        }
        let transport = self
            .directory
            .transport(ServiceName::Onion)
            .map_err(|error| KeysError::Fetch(error.to_string()))?;
        let endpoint = clients::onion(transport)
            .get_socks_endpoint(GetSocksEndpointRequest {})
            .await
            .map_err(|status| KeysError::Fetch(format!("onion service: {}", status.message())))?
            .into_inner();
        // The endpoint may be a host name (`tor:9050` in compose); resolve it here, once.
        let address = tokio::net::lookup_host(&endpoint.address)
            .await
            .map_err(|error| KeysError::Fetch(format!("SOCKS endpoint: {error}")))?
            .next()
            .ok_or_else(|| KeysError::Fetch("SOCKS endpoint resolves to nothing".into()))?;
        *cached = Some(address);
        Ok(address)
    }
}

#[async_trait]
impl KeyFetcher for TorWkdFetcher {
    async fn fetch(&self, address: &Address, on_behalf_of: &str) -> Result<Cert, KeysError> {
        let socks = self.socks_endpoint().await?;
        crate::wkd::fetch(socks, address, self.timeout, &self.circuit(on_behalf_of)).await
    }

    async fn fetch_carriers(
        &self,
        address: &Address,
        on_behalf_of: &str,
    ) -> Result<Option<Vec<u8>>, KeysError> {
        let socks = self.socks_endpoint().await?;
        let circuit = self.circuit(on_behalf_of);
        crate::wkd::fetch_carriers(socks, address, self.timeout, &circuit).await
    }
}

/// The onion keys of identities, held by the onion service: exported into and imported from
/// identity bundles. Behind a trait so the adapter can be tested without the onion service.
#[async_trait]
pub trait OnionKeys: Send + Sync + 'static {
    /// The onion host (`<56>.onion`) and 64-byte expanded secret key of an identity's onion.
    async fn export_onion_key(
        &self,
        identity_id: &str,
    ) -> Result<(String, zeroize::Zeroizing<Vec<u8>>), tonic::Status>;

    /// Brings an onion key onto this carrier for an identity; returns its onion host.
    async fn import_onion(
        &self,
        identity_id: &str,
        secret_key: &[u8],
    ) -> Result<String, tonic::Status>;
}

/// [`OnionKeys`] through the onion service's gRPC contract, local or remote.
pub struct OnionServiceKeys {
    directory: Directory,
}

impl OnionServiceKeys {
    pub fn new(directory: Directory) -> Arc<Self> {
        Arc::new(OnionServiceKeys { directory })
    }

    fn client(&self) -> Result<OnionClient<onionpost_runtime::Transport>, tonic::Status> {
        self.directory
            .transport(ServiceName::Onion)
            .map(clients::onion)
            .map_err(|error| tonic::Status::unavailable(error.to_string()))
    }
}

#[async_trait]
impl OnionKeys for OnionServiceKeys {
    async fn export_onion_key(
        &self,
        identity_id: &str,
    ) -> Result<(String, zeroize::Zeroizing<Vec<u8>>), tonic::Status> {
        let exported = self
            .client()?
            .export_onion_key(onionpost_proto::onion::v1::ExportOnionKeyRequest {
                identity_id: identity_id.to_owned(),
            })
            .await?
            .into_inner();
        Ok((
            exported.onion_address,
            zeroize::Zeroizing::new(exported.secret_key),
        ))
    }

    async fn import_onion(
        &self,
        identity_id: &str,
        secret_key: &[u8],
    ) -> Result<String, tonic::Status> {
        let imported = self
            .client()?
            .import_onion(onionpost_proto::onion::v1::ImportOnionRequest {
                identity_id: identity_id.to_owned(),
                secret_key: secret_key.to_vec(),
                purposes: Vec::new(),
            })
            .await?
            .into_inner();
        Ok(imported.onion_address)
    }
}
