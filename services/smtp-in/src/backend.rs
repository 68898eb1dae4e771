//! What the SMTP engine needs from the other services. Production uses
//! [`crate::grpc_backend::GrpcBackend`]; tests use fakes.

use onionpost_proto::gateway::v1::CheckOutboundResponse;
use onionpost_proto::imap::v1::{AuthenticateResponse, DeliverRequest, DeliverResponse, Identity};
use onionpost_proto::keys::v1::{
    DecryptAndVerifyResponse, KeyCustody, RecipientKey, SignAndEncryptRequest,
};
use onionpost_proto::queue::v1::{CheckCarryResponse, EnqueueRequest};

use crate::SmtpInError;

/// The imap, keys and queue calls smtp-in makes.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// imap GetIdentity by id.
    async fn identity(&self, identity_id: &str) -> Result<Identity, SmtpInError>;
    /// imap Authenticate.
    /// `onion_identity`: the identity whose onion the login came through, if any; imap then
    /// refuses every other account as it refuses a wrong password (and counts it so).
    async fn authenticate(
        &self,
        login: &str,
        password: &str,
        connection_key: &str,
        onion_identity: Option<&str>,
    ) -> Result<AuthenticateResponse, SmtpInError>;
    /// imap Deliver.
    async fn deliver(&self, request: DeliverRequest) -> Result<DeliverResponse, SmtpInError>;
    /// keys ResolveRecipientKeys with fetching (address book, else WKD over the onion).
    async fn resolve_keys(
        &self,
        sender_identity_id: &str,
        recipients: &[String],
    ) -> Result<Vec<RecipientKey>, SmtpInError>;
    /// keys SignAndEncrypt; returns the PGP/MIME message.
    async fn sign_and_encrypt(
        &self,
        request: SignAndEncryptRequest,
    ) -> Result<Vec<u8>, SmtpInError>;
    /// keys GetIdentityKey: who holds the identity's secret key.
    async fn custody(&self, identity_id: &str) -> Result<KeyCustody, SmtpInError>;
    /// keys DecryptAndVerify for a carrier-custody identity, against the pinned key only (no
    /// fetch of the sender's key: that would make the peer wait on tor).
    async fn decrypt_and_verify(
        &self,
        recipient_identity_id: &str,
        message: &[u8],
    ) -> Result<DecryptAndVerifyResponse, SmtpInError>;
    /// keys CheckCorrespondent: whether `address` corresponds with this identity (and so sends
    /// without a stamp), or was refused by it.
    async fn corresponds(
        &self,
        identity_id: &str,
        address: &str,
    ) -> Result<Correspondence, SmtpInError>;
    /// keys LearnAutocrypt from the outer Autocrypt header, for identities whose mail is not
    /// decrypted here (DecryptAndVerify learns by itself).
    async fn learn_autocrypt(
        &self,
        recipient_identity_id: &str,
        from_address: &str,
        header: &str,
    ) -> Result<(), SmtpInError>;
    /// queue Enqueue; durable when it returns.
    async fn enqueue(&self, request: EnqueueRequest) -> Result<(), SmtpInError>;
    /// queue Flush (ETRN).
    async fn flush(&self, onion: &str) -> Result<(), SmtpInError>;
    /// queue SubmitCarryStatement: keeps a statement sent to `postmaster@<onion>`; durable when
    /// it returns.
    async fn submit_carry_statement(
        &self,
        statement: Vec<u8>,
        onion: &str,
    ) -> Result<(), SmtpInError>;
    /// queue CheckCarry, for an RCPT on the MX of `onion`.
    async fn check_carry(
        &self,
        recipient: &str,
        onion: &str,
        declared_size: u64,
    ) -> Result<CheckCarryResponse, SmtpInError>;
    /// gateway CheckOutbound: whether the account may send to `clearnet_recipients` clearnet
    /// recipients now; with `reserve` (at acceptance) they are also counted against the daily
    /// cap in the same step. Without a gateway, clearnet mail is refused.
    async fn check_outbound(
        &self,
        _account_id: &str,
        _sender_identity_id: &str,
        _clearnet_recipients: u32,
        _reserve: bool,
    ) -> Result<CheckOutboundResponse, SmtpInError> {
        Ok(CheckOutboundResponse {
            allowed: false,
            reason: NO_GATEWAY.to_owned(),
            remaining_today: 0,
        })
    }
    /// gateway ReleaseOutbound: gives back a reservation whose message was not queued.
    async fn release_outbound(
        &self,
        _account_id: &str,
        _clearnet_recipients: u32,
    ) -> Result<(), SmtpInError> {
        Ok(())
    }
}

/// What an identity's address book says of a sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Correspondence {
    /// Exchanged signed mail with this identity: sends without a stamp.
    Correspondent,
    /// Unknown to it, or waiting for its acceptance: pays a stamp.
    Stranger,
    /// The identity refused its contact request: its mail is refused.
    Blocked,
}

/// The refusal of a clearnet recipient on a carrier that runs no gateway.
pub const NO_GATEWAY: &str = "this carrier does not offer clearnet mail";
