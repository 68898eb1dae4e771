//! Request extractors whose refusals are problem documents naming the field at fault.
//!
//! axum's own `Json` and `Query` answer in plain text and lose the path of a nested error;
//! these deserialize through `serde_path_to_error` so `{"plan": 5}` is refused as field `plan`,
//! and an unknown or missing member (every request type denies unknown fields) is named too.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
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
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| {
                let media_type = value.split(';').next().unwrap_or("").trim();
                media_type.eq_ignore_ascii_case("application/json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(AdminError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    AdminError::PayloadTooLarge
                } else {
                    AdminError::BadRequest {
                        field: None,
                        detail: "the request body could not be read".to_owned(),
                    }
                }
            })?;
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let path = error.path().to_string();
            let inner = error.into_inner();
            let detail = inner.to_string();
            let field = field_of(&path, &detail);
            if inner.is_data() {
                AdminError::Invalid {
                    field: field.unwrap_or_else(|| "body".to_owned()),
                    detail,
                }
            } else {
                AdminError::BadRequest {
                    field: Some(field.unwrap_or_else(|| "body".to_owned())),
                    detail: format!("malformed JSON: {detail}"),
                }
            }
        })?;
        deserializer.end().map_err(|error| AdminError::BadRequest {
            field: Some("body".to_owned()),
            detail: format!("malformed JSON: {error}"),
        })?;
        Ok(ApiJson(value))
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
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(ApiQuery)
            .map_err(|error| {
                let path = error.path().to_string();
                let detail = error.into_inner().to_string();
                AdminError::Invalid {
                    field: field_of(&path, &detail).unwrap_or_else(|| "query".to_owned()),
                    detail,
                }
            })
    }
}

/// The field an error is about: its path, or for an unknown or missing member (reported at the
/// object holding it) the member named in the message.
fn field_of(path: &str, detail: &str) -> Option<String> {
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|prefix| detail.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next())
        .map(str::to_owned);
    let at_root = path.is_empty() || path == ".";
    // serde_path_to_error already ends the path with an unknown member's name.
    if let Some(name) = &named
        && (path == name || path.ends_with(&format!(".{name}")))
    {
        return Some(path.to_owned());
    }
    match (named, at_root) {
        (Some(name), true) => Some(name),
        (Some(name), false) => Some(format!("{path}.{name}")),
        (None, true) => None,
        (None, false) => Some(path.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::field_of;

    #[test]
    fn fields_are_named_from_path_or_message() {
        assert_eq!(
            field_of(".", "unknown field `nope`, expected one of `login`"),
            Some("nope".to_owned())
        );
        assert_eq!(
            field_of("quota", "missing field `bytes`"),
            Some("quota.bytes".to_owned())
        );
        assert_eq!(
            field_of("login", "invalid type: integer `5`, expected a string"),
            Some("login".to_owned())
        );
        assert_eq!(field_of(".", "EOF while parsing a value"), None);
        assert_eq!(
            field_of("admin", "unknown field `admin`, expected `login`"),
            Some("admin".to_owned())
        );
    }
}
