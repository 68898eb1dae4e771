//! The one error type of the admin service, and its HTTP form: RFC 9457 problem documents.
//!
//! Every failure a handler can meet becomes an [`AdminError`] once: a refusal of the caller's
//! input names the offending field; a gRPC error from the service that owns the data is mapped
//! by its code (`NOT_FOUND` 404, `ALREADY_EXISTS` and `FAILED_PRECONDITION` 409,
//! `INVALID_ARGUMENT` 422, `UNAVAILABLE` 503); anything else is a 500 whose cause goes to the
//! log and whose detail is generic, so no SQL, stack or internal gRPC text reaches a caller.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use onionpost_proto::ServiceName;

use crate::store::StoreError;

pub use onionpost_runtime::http_api::{PROBLEM_JSON, Problem};

/// The `WWW-Authenticate` challenge of every 401 (RFC 6750 §3).
const BEARER_CHALLENGE: &str = "Bearer realm=\"onionpost\"";

/// Everything that can go wrong in an admin request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// No `Authorization: Bearer` header.
    #[error("a bearer token is required")]
    MissingToken,
    /// A bearer token that is not (or no longer) one of ours.
    #[error("the bearer token is not valid")]
    InvalidToken,
    /// A read-only token on a route that changes something.
    #[error("this operation needs a token with the write scope")]
    InsufficientScope,
    /// The request cannot be read: malformed JSON, a query string that does not parse.
    #[error("{detail}")]
    BadRequest {
        field: Option<String>,
        detail: String,
    },
    /// The request reads, but a value is not acceptable.
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
    /// A body that is not JSON.
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    /// A body over the limit.
    #[error("the request body is too large")]
    PayloadTooLarge,
    /// A value the owning service refused (gRPC `INVALID_ARGUMENT`); it names no field.
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the state of things: taken, a limit reached, not allowed now.
    #[error("{0}")]
    Conflict(String),
    /// A service this request needs did not answer.
    #[error("the {0} service is unavailable")]
    Unavailable(&'static str),
    /// Anything else; the cause was logged where it happened.
    #[error("internal error")]
    Internal,
}

impl AdminError {
    pub fn invalid(field: &str, detail: impl Into<String>) -> Self {
        AdminError::Invalid {
            field: field.to_owned(),
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::MissingToken | AdminError::InvalidToken => StatusCode::UNAUTHORIZED,
            AdminError::InsufficientScope => StatusCode::FORBIDDEN,
            AdminError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            AdminError::Invalid { .. } | AdminError::Rejected(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            AdminError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AdminError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            AdminError::MissingToken | AdminError::InvalidToken => "unauthenticated",
            AdminError::InsufficientScope => "insufficient-scope",
            AdminError::BadRequest { .. } => "bad-request",
            AdminError::Invalid { .. } | AdminError::Rejected(_) => "validation",
            AdminError::UnsupportedMediaType => "unsupported-media-type",
            AdminError::PayloadTooLarge => "payload-too-large",
            AdminError::NotFound(_) => "not-found",
            AdminError::Conflict(_) => "conflict",
            AdminError::Unavailable(_) => "unavailable",
            AdminError::Internal => "internal",
        }
    }

    pub fn problem(&self) -> Problem {
        let status = self.status();
        let field = match self {
            AdminError::BadRequest { field, .. } => field.clone(),
            AdminError::Invalid { field, .. } => Some(field.clone()),
            _ => None,
        };
        let detail = match self {
            AdminError::Invalid { detail, .. } => detail.clone(),
            other => other.to_string(),
        };
        Problem {
            kind: format!("urn:onionpost:problem:{}", self.kind()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            field,
        }
    }

    /// Maps a gRPC error from `service` once, for every handler.
    pub fn from_status(service: ServiceName, status: tonic::Status) -> Self {
        use onionpost_runtime::status::Failure;
        let message = status.message().to_owned();
        match Failure::of(&status) {
            Failure::NotFound => AdminError::NotFound(message),
            Failure::Conflict | Failure::Busy | Failure::Denied => AdminError::Conflict(message),
            Failure::Invalid => AdminError::Rejected(message),
            Failure::Unavailable => {
                tracing::warn!(service = service.as_str(), code = ?status.code(), "service unavailable");
                AdminError::Unavailable(service.as_str())
            }
            Failure::Internal => {
                tracing::error!(service = service.as_str(), code = ?status.code(), error = %message, "service call failed");
                AdminError::Internal
            }
        }
    }
}

impl From<StoreError> for AdminError {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "admin store failed");
        AdminError::Internal
    }
}

impl From<onionpost_runtime::grpc::NotReachable> for AdminError {
    fn from(error: onionpost_runtime::grpc::NotReachable) -> Self {
        tracing::warn!(%error, "service not reachable");
        AdminError::Unavailable(error.0.as_str())
    }
}

/// `.upstream(ServiceName::Imap)?` on a gRPC call's result.
pub trait Upstream<T> {
    fn upstream(self, service: ServiceName) -> Result<T, AdminError>;
}

impl<T> Upstream<T> for Result<tonic::Response<T>, tonic::Status> {
    fn upstream(self, service: ServiceName) -> Result<T, AdminError> {
        self.map(tonic::Response::into_inner)
            .map_err(|status| AdminError::from_status(service, status))
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let mut response = (self.status(), Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        let challenge = match self {
            AdminError::MissingToken => Some(BEARER_CHALLENGE.to_owned()),
            AdminError::InvalidToken => Some(format!(
                "{BEARER_CHALLENGE}, error=\"invalid_token\", error_description=\"the token is not valid\""
            )),
            AdminError::InsufficientScope => Some(format!(
                "{BEARER_CHALLENGE}, error=\"insufficient_scope\", scope=\"write\""
            )),
            _ => None,
        };
        if let Some(challenge) = challenge.and_then(|text| HeaderValue::from_str(&text).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}
