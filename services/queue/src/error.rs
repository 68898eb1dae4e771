//! The queue service's errors, mapped once to gRPC status codes.

use onionpost_runtime::db::StoreError;

/// What can go wrong in a queue call.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("no queued message {0:?}")]
    NotFound(String),
    /// A carry statement that does not verify, or names another carrier.
    #[error("{0}")]
    Refused(String),
    /// The thing named is not in a state the call can act on (a carry request already decided).
    #[error("{0}")]
    Conflict(String),
    /// Carried mail that would take a recipient past its agreement's caps: try later.
    #[error("{0}")]
    OverLimit(String),
    /// A service the queue needs for this call (keys, onion) cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// Storage failed; the text goes to the log, never to the caller.
    #[error("queue storage: {0}")]
    Store(#[from] StoreError),
    /// A stored body does not open with the carrier secret.
    #[error("queued body cannot be opened: {0}")]
    Seal(#[from] onionpost_runtime::seal::SealError),
}

impl From<QueueError> for tonic::Status {
    fn from(error: QueueError) -> Self {
        match error {
            QueueError::InvalidArgument(_) => tonic::Status::invalid_argument(error.to_string()),
            QueueError::NotFound(_) => tonic::Status::not_found(error.to_string()),
            QueueError::Refused(_) => tonic::Status::permission_denied(error.to_string()),
            QueueError::Unavailable(_) => tonic::Status::unavailable(error.to_string()),
            QueueError::Conflict(_) => tonic::Status::failed_precondition(error.to_string()),
            QueueError::OverLimit(_) => tonic::Status::resource_exhausted(error.to_string()),
            QueueError::Store(_) | QueueError::Seal(_) => {
                tracing::error!(error = %error, "queue call failed");
                tonic::Status::internal("internal error")
            }
        }
    }
}
