//! [`Backend`] over gRPC: the imap, keys and queue services, local or remote, found through the
//! runtime's directory at each call (so a service that starts later is picked up).

use onionpost_proto::ServiceName;
use onionpost_proto::clients;
use onionpost_proto::gateway::v1::{
    CheckOutboundRequest, CheckOutboundResponse, ReleaseOutboundRequest,
};
use onionpost_proto::imap::v1::imap_client::ImapClient;
use onionpost_proto::imap::v1::{
    AuthenticateRequest, AuthenticateResponse, DeliverRequest, DeliverResponse, GetIdentityRequest,
    Identity, ReleaseContactRequestsRequest, get_identity_request,
};
use onionpost_proto::keys::v1::get_identity_key_request;
use onionpost_proto::keys::v1::keys_client::KeysClient;
use onionpost_proto::keys::v1::{
    CheckCorrespondentRequest, DecryptAndVerifyRequest, DecryptAndVerifyResponse,
    GetIdentityKeyRequest, KeyCustody, LearnAutocryptRequest, RecipientKey,
    ResolveRecipientKeysRequest, SignAndEncryptRequest,
};
use onionpost_proto::queue::v1::queue_client::QueueClient;
use onionpost_proto::queue::v1::{
    CheckCarryRequest, CheckCarryResponse, EnqueueRequest, FlushRequest,
};
use onionpost_runtime::{Directory, Transport};

use crate::backend::Correspondence;
use crate::{Backend, SmtpInError};

/// The production backend.
#[derive(Clone)]
pub struct GrpcBackend {
    directory: Directory,
}

impl GrpcBackend {
    pub fn new(directory: Directory) -> Self {
        GrpcBackend { directory }
    }

    fn transport(&self, target: ServiceName) -> Result<Transport, SmtpInError> {
        self.directory
            .transport(target)
            .map_err(|_| SmtpInError::Temporary(format!("{} not reachable", target.as_str())))
    }

    fn imap(&self) -> Result<ImapClient<Transport>, SmtpInError> {
        Ok(clients::imap(self.transport(ServiceName::Imap)?))
    }

    fn keys(&self) -> Result<KeysClient<Transport>, SmtpInError> {
        Ok(clients::keys(self.transport(ServiceName::Keys)?))
    }

    fn queue(&self) -> Result<QueueClient<Transport>, SmtpInError> {
        Ok(clients::queue(self.transport(ServiceName::Queue)?))
    }
}

#[async_trait::async_trait]
impl Backend for GrpcBackend {
    async fn identity(&self, identity_id: &str) -> Result<Identity, SmtpInError> {
        let request = GetIdentityRequest {
            identity: Some(get_identity_request::Identity::IdentityId(
                identity_id.to_owned(),
            )),
        };
        Ok(self.imap()?.get_identity(request).await?.into_inner())
    }

    async fn authenticate(
        &self,
        login: &str,
        password: &str,
        connection_key: &str,
        onion_identity: Option<&str>,
    ) -> Result<AuthenticateResponse, SmtpInError> {
        let request = AuthenticateRequest {
            login: login.to_owned(),
            password: password.to_owned(),
            connection_key: connection_key.to_owned(),
            onion_identity_id: onion_identity.unwrap_or_default().to_owned(),
            account_password_only: false,
        };
        match self.imap()?.authenticate(request).await {
            Ok(response) => Ok(response.into_inner()),
            // Back-off (RESOURCE_EXHAUSTED) is answered like wrong credentials.
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                Err(SmtpInError::AuthRefused)
            }
            Err(status) => Err(status.into()),
        }
    }

    async fn deliver(&self, request: DeliverRequest) -> Result<DeliverResponse, SmtpInError> {
        Ok(self.imap()?.deliver(request).await?.into_inner())
    }

    async fn resolve_keys(
        &self,
        sender_identity_id: &str,
        recipients: &[String],
    ) -> Result<Vec<RecipientKey>, SmtpInError> {
        let request = ResolveRecipientKeysRequest {
            sender_identity_id: sender_identity_id.to_owned(),
            recipients: recipients.to_vec(),
            fetch_missing: true,
        };
        Ok(self
            .keys()?
            .resolve_recipient_keys(request)
            .await?
            .into_inner()
            .recipients)
    }

    async fn sign_and_encrypt(
        &self,
        request: SignAndEncryptRequest,
    ) -> Result<Vec<u8>, SmtpInError> {
        let identity_id = request.signer_identity_id.clone();
        let sealed = self.keys()?.sign_and_encrypt(request).await?.into_inner();
        // Writing to a sender accepts its contact request (keys answered it): its messages
        // leave the Requests mailbox. A failure here loses nothing (they stay there, and the
        // account can still accept in the portal), so it does not hold the submission back.
        for address in sealed.accepted_requests {
            let release = ReleaseContactRequestsRequest {
                identity_id: identity_id.clone(),
                address,
            };
            match self.imap()?.release_contact_requests(release).await {
                Ok(moved) => tracing::info!(
                    moved = moved.into_inner().messages_moved,
                    "a reply accepted a contact request"
                ),
                Err(status) => {
                    tracing::warn!("a contact request's messages were not released");
                    tracing::debug!(error = %status.message(), "release of contact requests failed");
                }
            }
        }
        Ok(sealed.message)
    }

    async fn custody(&self, identity_id: &str) -> Result<KeyCustody, SmtpInError> {
        let request = GetIdentityKeyRequest {
            identity: Some(get_identity_key_request::Identity::IdentityId(
                identity_id.to_owned(),
            )),
        };
        let key = self.keys()?.get_identity_key(request).await?.into_inner();
        Ok(KeyCustody::try_from(key.custody).unwrap_or(KeyCustody::Carrier))
    }

    async fn decrypt_and_verify(
        &self,
        recipient_identity_id: &str,
        message: &[u8],
    ) -> Result<DecryptAndVerifyResponse, SmtpInError> {
        let request = DecryptAndVerifyRequest {
            recipient_identity_id: recipient_identity_id.to_owned(),
            message: message.to_vec(),
            // Never while the peer waits: `sender_key_unpinned` sends the message to the queue,
            // which fetches.
            fetch_sender_key: false,
        };
        match self.keys()?.decrypt_and_verify(request).await {
            Ok(response) => Ok(response.into_inner()),
            // keys' ceiling for what a message may expand to when decompressed.
            Err(status) if status.code() == tonic::Code::OutOfRange => {
                Err(SmtpInError::TooLarge(status.message().to_owned()))
            }
            Err(status) => Err(status.into()),
        }
    }

    async fn corresponds(
        &self,
        identity_id: &str,
        address: &str,
    ) -> Result<Correspondence, SmtpInError> {
        let request = CheckCorrespondentRequest {
            identity_id: identity_id.to_owned(),
            address: address.to_owned(),
        };
        let answer = self
            .keys()?
            .check_correspondent(request)
            .await?
            .into_inner();
        Ok(if answer.blocked {
            Correspondence::Blocked
        } else if answer.correspondent {
            Correspondence::Correspondent
        } else {
            Correspondence::Stranger
        })
    }

    async fn learn_autocrypt(
        &self,
        recipient_identity_id: &str,
        from_address: &str,
        header: &str,
    ) -> Result<(), SmtpInError> {
        let request = LearnAutocryptRequest {
            recipient_identity_id: recipient_identity_id.to_owned(),
            from_address: from_address.to_owned(),
            header: header.to_owned(),
            message_date: None,
        };
        self.keys()?.learn_autocrypt(request).await?;
        Ok(())
    }

    async fn enqueue(&self, request: EnqueueRequest) -> Result<(), SmtpInError> {
        match self.queue()?.enqueue(request).await {
            Ok(_) => Ok(()),
            // The queue's caps for carried mail (checked again with the real size).
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                Err(SmtpInError::Full)
            }
            Err(status) => Err(status.into()),
        }
    }

    async fn flush(&self, onion: &str) -> Result<(), SmtpInError> {
        self.queue()?
            .flush(FlushRequest {
                onion: onion.to_owned(),
            })
            .await?;
        Ok(())
    }

    async fn submit_carry_statement(
        &self,
        statement: Vec<u8>,
        onion: &str,
    ) -> Result<(), SmtpInError> {
        let request = onionpost_proto::queue::v1::SubmitCarryStatementRequest {
            statement,
            onion: onion.to_owned(),
        };
        self.queue()?.submit_carry_statement(request).await?;
        Ok(())
    }

    async fn check_carry(
        &self,
        recipient: &str,
        onion: &str,
        declared_size: u64,
    ) -> Result<CheckCarryResponse, SmtpInError> {
        let request = CheckCarryRequest {
            recipient: recipient.to_owned(),
            declared_size,
            onion: onion.to_owned(),
        };
        Ok(self.queue()?.check_carry(request).await?.into_inner())
    }

    async fn check_outbound(
        &self,
        account_id: &str,
        sender_identity_id: &str,
        clearnet_recipients: u32,
        reserve: bool,
    ) -> Result<CheckOutboundResponse, SmtpInError> {
        // No gateway in this process and none configured elsewhere: the carrier offers none.
        let Ok(transport) = self.directory.transport(ServiceName::Gateway) else {
            return Ok(CheckOutboundResponse {
                allowed: false,
                reason: crate::backend::NO_GATEWAY.to_owned(),
                remaining_today: 0,
            });
        };
        let request = CheckOutboundRequest {
            account_id: account_id.to_owned(),
            sender_identity_id: sender_identity_id.to_owned(),
            recipients: clearnet_recipients,
            reserve,
        };
        Ok(clients::gateway(transport)
            .check_outbound(request)
            .await?
            .into_inner())
    }

    async fn release_outbound(
        &self,
        account_id: &str,
        clearnet_recipients: u32,
    ) -> Result<(), SmtpInError> {
        let Ok(transport) = self.directory.transport(ServiceName::Gateway) else {
            return Ok(());
        };
        let request = ReleaseOutboundRequest {
            account_id: account_id.to_owned(),
            recipients: clearnet_recipients,
        };
        clients::gateway(transport)
            .release_outbound(request)
            .await?;
        Ok(())
    }
}
