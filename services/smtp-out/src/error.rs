//! The smtp-out service's errors, mapped once to gRPC status codes.

/// Why smtp-out could not even try.
#[derive(Debug, thiserror::Error)]
pub enum SmtpOutError {
    /// The destination is not a v3 onion host: smtp-out dials nothing else.
    #[error("destination must be a v3 onion host: {1}: {0:?}")]
    NotAnOnion(String, onionpost_proto::address::AddressError),
    #[error("{0}")]
    InvalidArgument(String),
    /// tor's SOCKS endpoint is unknown (the onion service is not reachable).
    #[error("tor's SOCKS endpoint is unavailable: {0}")]
    SocksUnavailable(String),
}

impl From<SmtpOutError> for tonic::Status {
    fn from(error: SmtpOutError) -> Self {
        match error {
            SmtpOutError::NotAnOnion(..) | SmtpOutError::InvalidArgument(_) => {
                tonic::Status::invalid_argument(error.to_string())
            }
            SmtpOutError::SocksUnavailable(_) => tonic::Status::unavailable(error.to_string()),
        }
    }
}
