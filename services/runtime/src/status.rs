//! What a gRPC status from another service means to the caller, decided once: each service maps
//! these few kinds to its own error (an HTTP problem, an SMTP reply), instead of each matching
//! the sixteen gRPC codes its own way.

use tonic::Code;

/// The kind of failure a gRPC status reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// `NOT_FOUND`.
    NotFound,
    /// `UNAUTHENTICATED`, `PERMISSION_DENIED`: the caller may not do this.
    Denied,
    /// `INVALID_ARGUMENT`, `OUT_OF_RANGE`: the request itself is wrong; repeating it fails again.
    Invalid,
    /// `ALREADY_EXISTS`, `FAILED_PRECONDITION`: the state does not allow it; repeating it fails
    /// again until the state changes.
    Conflict,
    /// `ABORTED`, `RESOURCE_EXHAUSTED`: refused for now; worth trying again later.
    Busy,
    /// `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `CANCELLED`: the service could not be reached or did
    /// not answer in time.
    Unavailable,
    /// Anything else (`INTERNAL`, `UNKNOWN`, `UNIMPLEMENTED`, `DATA_LOSS`): a fault.
    Internal,
}

impl Failure {
    pub fn of(status: &tonic::Status) -> Self {
        match status.code() {
            Code::NotFound => Failure::NotFound,
            Code::Unauthenticated | Code::PermissionDenied => Failure::Denied,
            Code::InvalidArgument | Code::OutOfRange => Failure::Invalid,
            Code::AlreadyExists | Code::FailedPrecondition => Failure::Conflict,
            Code::Aborted | Code::ResourceExhausted => Failure::Busy,
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => Failure::Unavailable,
            Code::Ok | Code::Unknown | Code::Internal | Code::Unimplemented | Code::DataLoss => {
                Failure::Internal
            }
        }
    }

    /// Whether repeating the same request can succeed without anything else changing.
    pub fn is_permanent(self) -> bool {
        matches!(
            self,
            Failure::NotFound | Failure::Denied | Failure::Invalid | Failure::Conflict
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_fall_into_kinds() {
        let kind = |code| Failure::of(&tonic::Status::new(code, "x"));
        assert_eq!(kind(Code::NotFound), Failure::NotFound);
        assert_eq!(kind(Code::PermissionDenied), Failure::Denied);
        assert_eq!(kind(Code::OutOfRange), Failure::Invalid);
        assert_eq!(kind(Code::FailedPrecondition), Failure::Conflict);
        assert_eq!(kind(Code::ResourceExhausted), Failure::Busy);
        assert_eq!(kind(Code::DeadlineExceeded), Failure::Unavailable);
        assert_eq!(kind(Code::Unimplemented), Failure::Internal);
        assert!(Failure::Invalid.is_permanent());
        assert!(!Failure::Busy.is_permanent());
        assert!(!Failure::Internal.is_permanent());
    }
}
