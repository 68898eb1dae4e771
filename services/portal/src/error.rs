//! The one error type of the portal, and its two forms: an RFC 9457 problem document for
//! `/account/v1`, and a page for a browser (see `pages::error_page`).
//!
//! Every failure a handler can meet becomes a [`PortalError`] once. A gRPC error from the
//! service that owns the data is mapped by its kind; anything unexpected is a 500 whose cause
//! goes to the log and whose words are generic. Nothing here may tell one account holder about
//! another: an identity that is not the caller's is "no such identity", exactly like one that
//! does not exist, and a failed sign-in reads the same whether the login exists or not.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use onionpost_proto::ServiceName;
use onionpost_runtime::http_api::{BodyError, PROBLEM_JSON, Problem};
use onionpost_runtime::status::Failure;

use crate::store::StoreError;

/// The `WWW-Authenticate` challenge of every 401 from `/account/v1` (RFC 6750 §3).
const BEARER_CHALLENGE: &str = "Bearer realm=\"onionpost-account\"";

/// Everything that can go wrong in a portal request.
#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    /// No session, or one that expired or was ended.
    #[error("sign in first")]
    SignedOut,
    /// Wrong login or password: the same words whichever it was.
    #[error("the login, the password or the code is not right")]
    SignInFailed,
    /// Too many failed sign-ins for this login; the same back-off as IMAP and SMTP.
    #[error("too many failed attempts; try again in {retry_after_secs} seconds")]
    TooManyAttempts { retry_after_secs: u64 },
    /// A form without the token its page gave it (an old page, or another site's form).
    #[error("this form has expired; load the page again and resend it")]
    BadFormToken,
    /// Sign-up is not open (policy `closed`), or needs a voucher that was not given.
    #[error("{0}")]
    SignUpRefused(&'static str),
    /// The account is suspended by the operator.
    #[error("this account is suspended; ask the carrier's operator")]
    Suspended,
    /// The request cannot be read.
    #[error("{detail}")]
    BadRequest { field: String, detail: String },
    /// A value that is not acceptable.
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    #[error("the request body is too large")]
    PayloadTooLarge,
    /// A value the owning service refused; it names no field.
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    NotFound(String),
    /// Taken, spent, a limit reached.
    #[error("{0}")]
    Conflict(String),
    /// Refused for now (a rate limit).
    #[error("{0}")]
    Busy(String),
    #[error("the {0} service is unavailable; try again shortly")]
    Unavailable(&'static str),
    /// Anything else; the cause was logged where it happened.
    #[error("something went wrong on the carrier; try again later")]
    Internal,
}

impl PortalError {
    pub fn invalid(field: &str, detail: impl Into<String>) -> Self {
        PortalError::Invalid {
            field: field.to_owned(),
            detail: detail.into(),
        }
    }

    pub fn no_such_identity() -> Self {
        PortalError::NotFound("no such identity".to_owned())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            PortalError::SignedOut | PortalError::SignInFailed => StatusCode::UNAUTHORIZED,
            PortalError::TooManyAttempts { .. } | PortalError::Busy(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            PortalError::BadFormToken | PortalError::SignUpRefused(_) | PortalError::Suspended => {
                StatusCode::FORBIDDEN
            }
            PortalError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            PortalError::Invalid { .. } | PortalError::Rejected(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            PortalError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            PortalError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            PortalError::NotFound(_) => StatusCode::NOT_FOUND,
            PortalError::Conflict(_) => StatusCode::CONFLICT,
            PortalError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            PortalError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            PortalError::SignedOut => "signed-out",
            PortalError::SignInFailed => "sign-in-failed",
            PortalError::TooManyAttempts { .. } => "too-many-attempts",
            PortalError::BadFormToken => "bad-form-token",
            PortalError::SignUpRefused(_) => "sign-up-refused",
            PortalError::Suspended => "suspended",
            PortalError::BadRequest { .. } => "bad-request",
            PortalError::Invalid { .. } | PortalError::Rejected(_) => "validation",
            PortalError::UnsupportedMediaType => "unsupported-media-type",
            PortalError::PayloadTooLarge => "payload-too-large",
            PortalError::NotFound(_) => "not-found",
            PortalError::Conflict(_) => "conflict",
            PortalError::Busy(_) => "busy",
            PortalError::Unavailable(_) => "unavailable",
            PortalError::Internal => "internal",
        }
    }

    /// The field at fault, for validation problems.
    pub fn field(&self) -> Option<&str> {
        match self {
            PortalError::BadRequest { field, .. } | PortalError::Invalid { field, .. } => {
                Some(field)
            }
            _ => None,
        }
    }

    pub fn problem(&self) -> Problem {
        let status = self.status();
        Problem {
            kind: format!("urn:onionpost:problem:{}", self.kind()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: match self {
                PortalError::Invalid { detail, .. } => detail.clone(),
                other => other.to_string(),
            },
            field: self.field().map(str::to_owned),
        }
    }

    /// Maps a gRPC error from `service` once, for every handler. `NOT_FOUND` keeps the owning
    /// service's words only where they name the caller's own things; callers that look up an
    /// object by id map it to their own "no such …" first.
    pub fn from_status(service: ServiceName, status: tonic::Status) -> Self {
        let message = status.message().to_owned();
        match Failure::of(&status) {
            Failure::NotFound => PortalError::NotFound(message),
            Failure::Conflict => PortalError::Conflict(message),
            Failure::Busy => PortalError::Busy(message),
            Failure::Invalid => PortalError::Rejected(message),
            Failure::Denied => PortalError::SignedOut,
            Failure::Unavailable => {
                tracing::warn!(service = service.as_str(), code = ?status.code(), "service unavailable");
                PortalError::Unavailable(service.as_str())
            }
            Failure::Internal => {
                tracing::error!(service = service.as_str(), code = ?status.code(), error = %message, "service call failed");
                PortalError::Internal
            }
        }
    }
}

/// The problem-document form, for `/account/v1`.
impl IntoResponse for PortalError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(self.problem())).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(BEARER_CHALLENGE),
            );
        }
        if let PortalError::TooManyAttempts { retry_after_secs } = self
            && let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string())
        {
            headers.insert(header::RETRY_AFTER, value);
        }
        response
    }
}

impl From<StoreError> for PortalError {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "portal store failed");
        PortalError::Internal
    }
}

impl From<onionpost_runtime::grpc::NotReachable> for PortalError {
    fn from(error: onionpost_runtime::grpc::NotReachable) -> Self {
        tracing::warn!(%error, "service not reachable");
        PortalError::Unavailable(error.0.as_str())
    }
}

impl From<BodyError> for PortalError {
    fn from(error: BodyError) -> Self {
        match error {
            BodyError::UnsupportedMediaType => PortalError::UnsupportedMediaType,
            BodyError::PayloadTooLarge => PortalError::PayloadTooLarge,
            BodyError::Malformed { field, detail } => PortalError::BadRequest { field, detail },
            BodyError::Invalid { field, detail } => PortalError::Invalid { field, detail },
        }
    }
}

/// `.upstream(ServiceName::Imap)?` on a gRPC call's result.
pub trait Upstream<T> {
    fn upstream(self, service: ServiceName) -> Result<T, PortalError>;
}

impl<T> Upstream<T> for Result<tonic::Response<T>, tonic::Status> {
    fn upstream(self, service: ServiceName) -> Result<T, PortalError> {
        self.map(tonic::Response::into_inner)
            .map_err(|status| PortalError::from_status(service, status))
    }
}
