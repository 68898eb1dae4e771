//! The queue service's errors, mapped once to gRPC status codes.

use onionpost_runtime::db::StoreError;

/// What can go wrong in a queue call.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("no queued message {0:?}")]
    NotFound(String),
    /// Carry agreements (issue #7) are not built yet.
    #[error("{0}")]
    Unimplemented(&'static str),
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
            QueueError::Unimplemented(_) => tonic::Status::unimplemented(error.to_string()),
            QueueError::Store(_) | QueueError::Seal(_) => {
                tracing::error!(error = %error, "queue call failed");
                tonic::Status::internal("internal error")
            }
        }
    }
}
