//! The gateway's one error type, mapped once to gRPC status codes.

use onionpost_runtime::db::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("no such {0}")]
    NotFound(&'static str),
    /// Another service or the network is unavailable now; worth trying again.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// Storage failed; the detail goes to the log, never to a caller.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl From<tonic::Status> for GatewayError {
    fn from(status: tonic::Status) -> Self {
        use onionpost_runtime::status::Failure;
        match Failure::of(&status) {
            Failure::NotFound => GatewayError::NotFound("record"),
            Failure::Invalid | Failure::Conflict => {
                GatewayError::InvalidArgument(status.message().to_owned())
            }
            Failure::Denied | Failure::Busy | Failure::Unavailable | Failure::Internal => {
                GatewayError::Unavailable(status.message().to_owned())
            }
        }
    }
}

impl From<GatewayError> for tonic::Status {
    fn from(error: GatewayError) -> Self {
        match error {
            GatewayError::InvalidArgument(text) => tonic::Status::invalid_argument(text),
            GatewayError::NotFound(what) => tonic::Status::not_found(format!("no such {what}")),
            GatewayError::Unavailable(text) => tonic::Status::unavailable(text),
            GatewayError::Store(error) => {
                tracing::error!(%error, "gateway storage failed");
                tonic::Status::internal("storage error")
            }
            GatewayError::Internal(text) => {
                tracing::error!(error = %text, "gateway internal error");
                tonic::Status::internal("internal error")
            }
        }
    }
}
