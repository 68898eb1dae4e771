//! What the carrier's HTTP APIs share (the admin API's `/v1`, the portal's `/account/v1`): RFC
//! 9457 problem documents, and request bodies and query strings read so that a refusal names the
//! field at fault.
//!
//! axum's own `Json` and `Query` answer in plain text and lose the path of a nested error; these
//! deserialize through `serde_path_to_error` so `{"plan": 5}` is refused as field `plan`, and an
//! unknown or missing member (every request type denies unknown fields) is named too. Each API
//! maps a [`BodyError`] into its own error type once.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};

/// The media type of problem documents (RFC 9457 §3).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:onionpost:problem:<kind>`).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong this time, in words for a person.
    pub detail: String,
    /// The request field at fault (a JSON member, path or query parameter), for validation
    /// problems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Adds to a finished OpenAPI document (after every route is added) the `bearer` security scheme
/// and, to every operation, the problem responses of `statuses` (status, description) that it
/// does not document itself, each a [`Problem`] (the document must list `Problem` among its
/// schemas).
pub fn document_problems(openapi: &mut OpenApi, statuses: &[(&str, &str)]) {
    let components = openapi.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    for item in openapi.paths.paths.values_mut() {
        let operations: [&mut Option<Operation>; 5] = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            for (status, description) in statuses {
                operation
                    .responses
                    .responses
                    .entry((*status).to_owned())
                    .or_insert_with(|| {
                        ResponseBuilder::new()
                            .description(*description)
                            .content(
                                PROBLEM_JSON,
                                ContentBuilder::new()
                                    .schema(Some(Ref::from_schema_name("Problem")))
                                    .build(),
                            )
                            .build()
                            .into()
                    });
            }
        }
    }
}

/// An OpenAPI document as the reply to `GET …/openapi.json`: made once by `make` and kept in
/// `cache` (each API passes its own static).
pub fn openapi_json(
    cache: &'static std::sync::OnceLock<String>,
    make: fn() -> OpenApi,
) -> impl axum::response::IntoResponse {
    let text = cache.get_or_init(|| {
        make()
            .to_pretty_json()
            .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
    });
    ([(header::CONTENT_TYPE, "application/json")], text.as_str())
}

/// Why a request's body or query string was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// A body that is not `application/json`.
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    /// A body over the limit.
    #[error("the request body is too large")]
    PayloadTooLarge,
    /// The body cannot be read as JSON at all.
    #[error("{detail}")]
    Malformed { field: String, detail: String },
    /// It reads, but a value has the wrong type or a member is unknown or missing.
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
}

/// Reads a JSON request body into `T`.
pub async fn json_body<T, S>(request: Request, state: &S) -> Result<T, BodyError>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
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
        return Err(BodyError::UnsupportedMediaType);
    }
    let bytes = Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                BodyError::PayloadTooLarge
            } else {
                BodyError::Malformed {
                    field: "body".to_owned(),
                    detail: "the request body could not be read".to_owned(),
                }
            }
        })?;
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let detail = inner.to_string();
        let field = field_of(&path, &detail).unwrap_or_else(|| "body".to_owned());
        if inner.is_data() {
            BodyError::Invalid { field, detail }
        } else {
            BodyError::Malformed {
                field,
                detail: format!("malformed JSON: {detail}"),
            }
        }
    })?;
    deserializer.end().map_err(|error| BodyError::Malformed {
        field: "body".to_owned(),
        detail: format!("malformed JSON: {error}"),
    })?;
    Ok(value)
}

/// Reads `application/x-www-form-urlencoded` text (a query string or an HTML form's body) into
/// `T`; `what` names the whole when no field can be blamed.
pub fn form<T: DeserializeOwned>(text: &[u8], what: &str) -> Result<T, BodyError> {
    let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(text));
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let detail = error.into_inner().to_string();
        BodyError::Invalid {
            field: field_of(&path, &detail).unwrap_or_else(|| what.to_owned()),
            detail,
        }
    })
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
    use super::{BodyError, field_of, form};

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

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct SignIn {
        login: String,
        password: String,
    }

    #[test]
    fn a_form_names_the_missing_or_unknown_field() {
        let missing = form::<SignIn>(b"login=a", "form").unwrap_err();
        assert_eq!(
            missing,
            BodyError::Invalid {
                field: "password".to_owned(),
                detail: "missing field `password`".to_owned()
            }
        );
        let unknown = form::<SignIn>(b"login=a&password=b&admin=1", "form").unwrap_err();
        assert!(
            matches!(&unknown, BodyError::Invalid { field, .. } if field == "admin"),
            "{unknown:?}"
        );
        assert!(form::<SignIn>(b"login=a%20b&password=c", "form").is_ok());
    }
}
