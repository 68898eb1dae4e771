//! The one error type of the imap service.
//!
//! The gRPC adapter maps it to status codes once ([`crate::grpc`]); storage failures are logged
//! there and reach callers only as "internal error". Texts name fields and ids, never message
//! content, passwords or voucher codes.

use onionpost_runtime::db::StoreError;

/// Everything the imap service's operations can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImapError {
    /// A request field is missing or malformed; `field` names it.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },

    /// No such account, plan, identity or voucher.
    #[error("{0} not found")]
    NotFound(&'static str),

    /// A login, plan name or identity that exists already.
    #[error("{0}")]
    AlreadyExists(String),

    /// The request cannot apply in the current state (identities remain, limit reached…).
    #[error("{0}")]
    FailedPrecondition(String),

    /// Wrong login or password (the same words for both).
    #[error("invalid credentials")]
    Unauthenticated,

    /// Too many failed logins from this account or connection.
    #[error("too many failed logins; retry in {retry_after_secs} s")]
    BackOff { retry_after_secs: u64 },

    /// The credentials are right but the account may not log in (suspended).
    #[error("account unavailable")]
    PermissionDenied,

    /// An account key or body that does not open with this carrier's secret.
    #[error("sealed mail data does not open (wrong carrier secret or damaged data)")]
    SealBroken,

    /// The database failed; details go to the log only.
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),

    /// The onion or keys service refused or failed a step of an identity's lifecycle; its
    /// status reaches the caller unchanged, so a front end answers as if it had asked itself.
    #[error("{}", .0.message())]
    Upstream(tonic::Status),

    /// Something that should not happen (a task panicked, a special-use mailbox is missing).
    #[error("internal failure: {0}")]
    Internal(String),
}

impl ImapError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ImapError::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }
}

impl From<crate::crypto::Broken> for ImapError {
    fn from(_: crate::crypto::Broken) -> Self {
        ImapError::SealBroken
    }
}
