//! The one error type of smtp-in: what can go wrong when asking another service.

/// A failure from another service, as the SMTP engine needs to tell them apart: a temporary
/// failure is answered with a 4xx so the client tries again, a permanent one with a 5xx.
#[derive(Debug, thiserror::Error)]
pub enum SmtpInError {
    /// The other service is away or failed internally; try later.
    #[error("temporary failure: {0}")]
    Temporary(String),
    /// The request itself was refused (bad input, not decryptable, precondition failed).
    #[error("permanent failure: {0}")]
    Permanent(String),
    /// Credentials refused, back-off, or account not allowed to log in: one answer for all.
    #[error("authentication refused")]
    AuthRefused,
    /// The thing asked about does not exist.
    #[error("not found")]
    NotFound,
    /// A limit of the recipient's is reached (carried mail at its agreed caps): try later.
    #[error("limit reached")]
    Full,
    /// The message opens to more than the carrier holds (a compressed packet that expands
    /// beyond keys' ceiling): refused for good, and not as undecryptable.
    #[error("too large when opened: {0}")]
    TooLarge(String),
}

impl From<tonic::Status> for SmtpInError {
    fn from(status: tonic::Status) -> Self {
        use onionpost_runtime::status::Failure;
        match Failure::of(&status) {
            Failure::NotFound => SmtpInError::NotFound,
            Failure::Denied => SmtpInError::AuthRefused,
            Failure::Invalid | Failure::Conflict => {
                SmtpInError::Permanent(status.message().to_owned())
            }
            Failure::Busy | Failure::Unavailable | Failure::Internal => {
                SmtpInError::Temporary(status.message().to_owned())
            }
        }
    }
}

impl SmtpInError {
    /// The kind of failure alone, without the other service's text.
    pub fn kind(&self) -> &'static str {
        match self {
            SmtpInError::Temporary(_) => "temporary",
            SmtpInError::Permanent(_) => "permanent",
            SmtpInError::AuthRefused => "auth refused",
            SmtpInError::NotFound => "not found",
            SmtpInError::Full => "full",
            SmtpInError::TooLarge(_) => "too large",
        }
    }

    /// Logs a failed call: its kind at warn, its text at debug only. Another service's text
    /// may name an address or an onion (keys: "no usable key for recipient …"), and no
    /// address or onion reaches the log at info or warn.
    pub fn log(&self, what: &'static str) {
        tracing::warn!(kind = self.kind(), "{what}");
        tracing::debug!(error = %self, "{what}");
    }
}
