//! The one error type of the onion service, mapped once to gRPC status codes. Storage and
//! sealing errors are logged where they happen and reach callers only as "internal error".

use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum OnionError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("no onion service for this identity")]
    NotFound,
    #[error("this identity's onion service was revoked; a revoked address never comes back")]
    Revoked,
    #[error("{0}")]
    AlreadyExists(String),
    /// tor is not connected; the text says why (for operators), and the caller may retry.
    #[error("tor is not available: {0}")]
    TorUnavailable(String),
    /// tor refused the request; the text is tor's answer.
    #[error("tor refused the onion service: {0}")]
    TorRefused(String),
    #[error("every target port slot is taken; widen tor.target_ports")]
    NoFreeSlot,
    /// Every connected tor publishes `tor.max_onions_per_tor` onions.
    #[error(
        "every connected tor publishes its {0} onions (tor.max_onions_per_tor); add a tor to the pool or raise the limit"
    )]
    PoolFull(u32),
    #[error("internal error")]
    Internal,
}

impl From<OnionError> for Status {
    fn from(error: OnionError) -> Status {
        let message = error.to_string();
        match error {
            OnionError::InvalidArgument(_) => Status::invalid_argument(message),
            OnionError::NotFound => Status::not_found(message),
            OnionError::Revoked => Status::failed_precondition(message),
            OnionError::AlreadyExists(_) => Status::already_exists(message),
            OnionError::TorUnavailable(_) => Status::unavailable(message),
            OnionError::TorRefused(_) => Status::failed_precondition(message),
            OnionError::NoFreeSlot | OnionError::PoolFull(_) => Status::resource_exhausted(message),
            OnionError::Internal => Status::internal(message),
        }
    }
}
