//! What the gateway needs from the imap and keys services, as a trait so the inbound session
//! and the send path are tested in memory; [`GrpcBackend`] is the production implementation over
//! their contracts, found through the runtime's directory at each call.

use onionpost_proto::ServiceName;
use onionpost_proto::clients;
use onionpost_proto::imap::v1::imap_client::ImapClient;
use onionpost_proto::imap::v1::{
    Account, DeliverRequest, DeliverResponse, GetAccountRequest, GetIdentityRequest, Identity,
    ListPlansRequest, get_account_request, get_identity_request,
};
use onionpost_proto::keys::v1::keys_client::KeysClient;
use onionpost_proto::keys::v1::{
    GetIdentityKeyRequest, KeyCustody, SignAndEncryptRequest, get_identity_key_request,
};
use onionpost_runtime::{Directory, Transport};

use crate::GatewayError;

/// The imap and keys calls the gateway makes.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// imap GetAccount.
    async fn account(&self, account_id: &str) -> Result<Account, GatewayError>;
    /// The plan's clearnet messages per day (imap ListPlans); 0: the gateway's default.
    async fn plan_daily_limit(&self, plan_id: &str) -> Result<u32, GatewayError>;
    /// imap GetIdentity.
    async fn identity(&self, identity_id: &str) -> Result<Identity, GatewayError>;
    /// keys GetIdentityKey: who holds the identity's secret key.
    async fn custody(&self, identity_id: &str) -> Result<KeyCustody, GatewayError>;
    /// keys SignAndEncrypt without a signer: clearnet mail encrypted to the identity alone.
    async fn encrypt_to(
        &self,
        identity_address: &str,
        message: &[u8],
    ) -> Result<Vec<u8>, GatewayError>;
    /// imap Deliver.
    async fn deliver(&self, request: DeliverRequest) -> Result<DeliverResponse, GatewayError>;
}

/// The production backend.
#[derive(Clone)]
pub struct GrpcBackend {
    directory: Directory,
}

impl GrpcBackend {
    pub fn new(directory: Directory) -> Self {
        GrpcBackend { directory }
    }

    fn transport(&self, target: ServiceName) -> Result<Transport, GatewayError> {
        self.directory
            .transport(target)
            .map_err(|_| GatewayError::Unavailable(format!("{} not reachable", target.as_str())))
    }

    fn imap(&self) -> Result<ImapClient<Transport>, GatewayError> {
        Ok(clients::imap(self.transport(ServiceName::Imap)?))
    }

    fn keys(&self) -> Result<KeysClient<Transport>, GatewayError> {
        Ok(clients::keys(self.transport(ServiceName::Keys)?))
    }
}

#[async_trait::async_trait]
impl Backend for GrpcBackend {
    async fn account(&self, account_id: &str) -> Result<Account, GatewayError> {
        let request = GetAccountRequest {
            account: Some(get_account_request::Account::AccountId(
                account_id.to_owned(),
            )),
        };
        Ok(self.imap()?.get_account(request).await?.into_inner())
    }

    async fn plan_daily_limit(&self, plan_id: &str) -> Result<u32, GatewayError> {
        let plans = self
            .imap()?
            .list_plans(ListPlansRequest {})
            .await?
            .into_inner()
            .plans;
        Ok(plans
            .iter()
            .find(|plan| plan.plan_id == plan_id)
            .map_or(0, |plan| plan.gateway_daily_limit))
    }

    async fn identity(&self, identity_id: &str) -> Result<Identity, GatewayError> {
        let request = GetIdentityRequest {
            identity: Some(get_identity_request::Identity::IdentityId(
                identity_id.to_owned(),
            )),
        };
        Ok(self.imap()?.get_identity(request).await?.into_inner())
    }

    async fn custody(&self, identity_id: &str) -> Result<KeyCustody, GatewayError> {
        let request = GetIdentityKeyRequest {
            identity: Some(get_identity_key_request::Identity::IdentityId(
                identity_id.to_owned(),
            )),
        };
        let key = self.keys()?.get_identity_key(request).await?.into_inner();
        Ok(KeyCustody::try_from(key.custody).unwrap_or(KeyCustody::Carrier))
    }

    async fn encrypt_to(
        &self,
        identity_address: &str,
        message: &[u8],
    ) -> Result<Vec<u8>, GatewayError> {
        let request = SignAndEncryptRequest {
            signer_identity_id: String::new(),
            recipients: vec![identity_address.to_owned()],
            message: message.to_vec(),
            add_autocrypt_header: false,
        };
        Ok(self
            .keys()?
            .sign_and_encrypt(request)
            .await?
            .into_inner()
            .message)
    }

    async fn deliver(&self, request: DeliverRequest) -> Result<DeliverResponse, GatewayError> {
        Ok(self.imap()?.deliver(request).await?.into_inner())
    }
}
