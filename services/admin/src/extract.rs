//! Request extractors whose refusals are problem documents naming the field at fault; the
//! reading itself is the runtime's ([`onionpost_runtime::http_api`]), shared with the portal.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use onionpost_runtime::http_api::{self, BodyError};
use serde::de::DeserializeOwned;

use crate::error::AdminError;

/// A JSON request body.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AdminError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(ApiJson(http_api::json_body(request, state).await?))
    }
}

/// A query string.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        Ok(ApiQuery(http_api::form(query.as_bytes(), "query")?))
    }
}

impl From<BodyError> for AdminError {
    fn from(error: BodyError) -> Self {
        match error {
            BodyError::UnsupportedMediaType => AdminError::UnsupportedMediaType,
            BodyError::PayloadTooLarge => AdminError::PayloadTooLarge,
            BodyError::Malformed { field, detail } => AdminError::BadRequest {
                field: Some(field),
                detail,
            },
            BodyError::Invalid { field, detail } => AdminError::Invalid { field, detail },
        }
    }
}
