//! The `onionpost.keys.v1.Keys` adapter: unwraps each request, calls [`KeysService`], and maps
//! [`ServiceError`] to a gRPC status here, once. Storage and cryptographic-library failures are
//! logged and reach callers only as "internal error".

use onionpost_proto::keys::v1 as pb;
use onionpost_proto::keys::v1::keys_server::Keys;
use tonic::{Request, Response, Status};

use crate::KeysError;
use crate::service::{KeysService, ServiceError};

/// The gRPC face of the keys service.
#[derive(Clone)]
pub struct KeysGrpc {
    service: KeysService,
}

impl KeysGrpc {
    pub fn new(service: KeysService) -> Self {
        KeysGrpc { service }
    }
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Status {
        match error {
            ServiceError::Keys(keys) => keys_status(keys),
            ServiceError::Store(crate::store::StoreError::Duplicate) => {
                Status::already_exists("already exists")
            }
            ServiceError::Store(store) => {
                tracing::error!(error = %store, "keys store failed");
                Status::internal("internal error")
            }
            ServiceError::InvalidArgument(message) => Status::invalid_argument(message),
            ServiceError::NotFound(what) => Status::not_found(format!("{what} not found")),
            ServiceError::AlreadyExists(message) => Status::already_exists(message),
            ServiceError::FailedPrecondition(message) => Status::failed_precondition(message),
            ServiceError::Unimplemented(message) => Status::unimplemented(message),
            ServiceError::Contended(message) | ServiceError::Busy(message) => {
                Status::unavailable(message)
            }
            ServiceError::Onion(status) => Status::new(
                status.code(),
                format!("onion service: {}", status.message()),
            ),
        }
    }
}

fn keys_status(error: KeysError) -> Status {
    let message = error.to_string();
    match error {
        KeysError::MalformedAddress(_)
        | KeysError::MalformedKey(_)
        | KeysError::AddressNotBound(_)
        | KeysError::MalformedMessage(_)
        | KeysError::CorruptMessage(_)
        | KeysError::NotPgpMime(_)
        | KeysError::MalformedAutocrypt(_)
        | KeysError::MalformedIntroduction(_)
        | KeysError::MalformedRevocation(_)
        | KeysError::MalformedUri(_) => Status::invalid_argument(message),
        KeysError::TooLarge { .. } => Status::out_of_range(message),
        KeysError::UnusableKey(_) | KeysError::NotForUs | KeysError::Qr(_) => {
            Status::failed_precondition(message)
        }
        KeysError::BadSignature(_)
        | KeysError::UnknownSigner(_)
        | KeysError::Unsigned
        | KeysError::SenderMismatch { .. } => Status::permission_denied(message),
        KeysError::KeyNotFound => Status::not_found(message),
        KeysError::Fetch(_) => Status::unavailable(message),
        KeysError::SealBroken | KeysError::Crypto(_) => {
            tracing::error!(error = %message, "keys operation failed");
            Status::internal("internal error")
        }
    }
}

/// Each RPC: run the use case, map its error once.
macro_rules! rpc {
    ($self:ident, $method:ident, $request:ident) => {
        $self
            .service
            .$method($request.into_inner())
            .await
            .map(Response::new)
            .map_err(Status::from)
    };
}

#[tonic::async_trait]
impl Keys for KeysGrpc {
    async fn create_identity_key(
        &self,
        request: Request<pb::CreateIdentityKeyRequest>,
    ) -> Result<Response<pb::IdentityKey>, Status> {
        rpc!(self, create_identity_key, request)
    }

    async fn get_identity_key(
        &self,
        request: Request<pb::GetIdentityKeyRequest>,
    ) -> Result<Response<pb::IdentityKey>, Status> {
        rpc!(self, get_identity_key, request)
    }

    async fn revoke_identity_key(
        &self,
        request: Request<pb::RevokeIdentityKeyRequest>,
    ) -> Result<Response<pb::RevokeIdentityKeyResponse>, Status> {
        rpc!(self, revoke_identity_key, request)
    }

    async fn get_address_book_policy(
        &self,
        request: Request<pb::GetAddressBookPolicyRequest>,
    ) -> Result<Response<pb::AddressBookPolicy>, Status> {
        rpc!(self, get_address_book_policy, request)
    }

    async fn check_correspondent(
        &self,
        request: Request<pb::CheckCorrespondentRequest>,
    ) -> Result<Response<pb::CheckCorrespondentResponse>, Status> {
        rpc!(self, check_correspondent, request)
    }

    async fn answer_contact_request(
        &self,
        request: Request<pb::AnswerContactRequestRequest>,
    ) -> Result<Response<pb::AnswerContactRequestResponse>, Status> {
        rpc!(self, answer_contact_request, request)
    }

    async fn set_address_book_policy(
        &self,
        request: Request<pb::SetAddressBookPolicyRequest>,
    ) -> Result<Response<pb::AddressBookPolicy>, Status> {
        rpc!(self, set_address_book_policy, request)
    }

    async fn rotate_identity_key(
        &self,
        request: Request<pb::RotateIdentityKeyRequest>,
    ) -> Result<Response<pb::RotateIdentityKeyResponse>, Status> {
        rpc!(self, rotate_identity_key, request)
    }

    async fn export_identity(
        &self,
        request: Request<pb::ExportIdentityRequest>,
    ) -> Result<Response<pb::ExportIdentityResponse>, Status> {
        rpc!(self, export_identity, request)
    }

    async fn import_identity(
        &self,
        request: Request<pb::ImportIdentityRequest>,
    ) -> Result<Response<pb::IdentityKey>, Status> {
        rpc!(self, import_identity, request)
    }

    async fn set_preferred_carriers(
        &self,
        request: Request<pb::SetPreferredCarriersRequest>,
    ) -> Result<Response<pb::IdentityKey>, Status> {
        rpc!(self, set_preferred_carriers, request)
    }

    async fn get_identity_qr(
        &self,
        request: Request<pb::GetIdentityQrRequest>,
    ) -> Result<Response<pb::IdentityQr>, Status> {
        rpc!(self, get_identity_qr, request)
    }

    async fn resolve_recipient_keys(
        &self,
        request: Request<pb::ResolveRecipientKeysRequest>,
    ) -> Result<Response<pb::ResolveRecipientKeysResponse>, Status> {
        rpc!(self, resolve_recipient_keys, request)
    }

    async fn sign_and_encrypt(
        &self,
        request: Request<pb::SignAndEncryptRequest>,
    ) -> Result<Response<pb::SignAndEncryptResponse>, Status> {
        rpc!(self, sign_and_encrypt, request)
    }

    async fn decrypt_and_verify(
        &self,
        request: Request<pb::DecryptAndVerifyRequest>,
    ) -> Result<Response<pb::DecryptAndVerifyResponse>, Status> {
        rpc!(self, decrypt_and_verify, request)
    }

    async fn learn_autocrypt(
        &self,
        request: Request<pb::LearnAutocryptRequest>,
    ) -> Result<Response<pb::KeyChangeOutcome>, Status> {
        rpc!(self, learn_autocrypt, request)
    }

    async fn list_contacts(
        &self,
        request: Request<pb::ListContactsRequest>,
    ) -> Result<Response<pb::ListContactsResponse>, Status> {
        rpc!(self, list_contacts, request)
    }

    async fn get_contact(
        &self,
        request: Request<pb::GetContactRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        rpc!(self, get_contact, request)
    }

    async fn add_contact(
        &self,
        request: Request<pb::AddContactRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        rpc!(self, add_contact, request)
    }

    async fn update_contact(
        &self,
        request: Request<pb::UpdateContactRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        rpc!(self, update_contact, request)
    }

    async fn delete_contact(
        &self,
        request: Request<pb::DeleteContactRequest>,
    ) -> Result<Response<pb::DeleteContactResponse>, Status> {
        rpc!(self, delete_contact, request)
    }

    async fn confirm_key_change(
        &self,
        request: Request<pb::ConfirmKeyChangeRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        rpc!(self, confirm_key_change, request)
    }

    async fn make_introduction(
        &self,
        request: Request<pb::MakeIntroductionRequest>,
    ) -> Result<Response<pb::Introduction>, Status> {
        rpc!(self, make_introduction, request)
    }

    async fn seal_introduction(
        &self,
        request: Request<pb::SealIntroductionRequest>,
    ) -> Result<Response<pb::SealedMail>, Status> {
        rpc!(self, seal_introduction, request)
    }

    async fn import_introduction(
        &self,
        request: Request<pb::ImportIntroductionRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        rpc!(self, import_introduction, request)
    }

    async fn apply_revocation(
        &self,
        request: Request<pb::ApplyRevocationRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        rpc!(self, apply_revocation, request)
    }

    async fn sign_carry_statement(
        &self,
        request: Request<pb::SignCarryStatementRequest>,
    ) -> Result<Response<pb::SignCarryStatementResponse>, Status> {
        rpc!(self, sign_carry_statement, request)
    }

    async fn verify_carry_statement(
        &self,
        request: Request<pb::VerifyCarryStatementRequest>,
    ) -> Result<Response<pb::CarryStatement>, Status> {
        rpc!(self, verify_carry_statement, request)
    }
}
