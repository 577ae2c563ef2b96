//! Request extractors that answer in the API's error shape: a JSON body (size limit, deadline,
//! field paths in its errors), a path parameter, and a query string with no unknown or repeated
//! parameters.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{ApiError, ApiState};

/// A JSON body parsed with field paths in its errors, under the configured size limit and
/// deadline.
pub struct JsonBody<T>(pub T);

impl<T> FromRequest<ApiState> for JsonBody<T>
where
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &ApiState) -> Result<Self, Self::Rejection> {
        let read = tokio::time::timeout(state.body_timeout, Bytes::from_request(req, state));
        let bytes = read
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "REQUEST_TIMEOUT",
                    format!(
                        "the request body did not arrive within {} s (scheduler.body_timeout)",
                        state.body_timeout.as_secs_f64()
                    ),
                )
            })?
            .map_err(|e: BytesRejection| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::payload_too_large(
                        "request body is larger than the server accepts (scheduler.max_body_bytes)",
                    )
                } else {
                    ApiError::bad_request(format!("cannot read request body: {e}"))
                }
            })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Syntax errors are the client's malformed request (400); a well-formed document of the wrong
/// shape is a validation failure (422) naming the field.
pub(super) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "request body is empty; expected JSON",
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ApiError::bad_request(format!("request body is not valid UTF-8: {e}")))?;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
        let inner = e.inner();
        let path = e.path().to_string();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::bad_request(format!("malformed JSON: {inner}"));
        }
        let field = if path == "." {
            backticked(&inner.to_string()).unwrap_or_default()
        } else {
            path
        };
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            if field.is_empty() {
                inner.to_string()
            } else {
                format!("{field}: {inner}")
            },
        )
        .with_details(json!({ "field": field }))
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// One path parameter as text. axum's own rejection (a segment that is not UTF-8 once
/// percent-decoded) is plain text; this answers it in the API's error shape.
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(e) => {
                // "Invalid URL: Invalid UTF-8 in `id`": the backticks name the parameter.
                let message = e.body_text();
                Err(match backticked(&message) {
                    Some(name) => ApiError::bad_param(&name, message),
                    None => ApiError::bad_request(message),
                })
            }
        }
    }
}

/// The query string read into `T`, whose `deny_unknown_fields` refuses a parameter the route does
/// not take; a parameter given twice is refused too, rather than one of the two silently winning.
pub(super) struct QueryParams<T>(pub T);

impl<T, S> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        serde_urlencoded::from_str(parts.uri.query().unwrap_or(""))
            .map(QueryParams)
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))
    }
}

/// The first `name` in a serde message such as "unknown field `x`, expected ...".
fn backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_owned())
}

#[cfg(test)]
mod tests {
    use trawl_shared::domain::JobSpec;

    use super::*;

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<JobSpec>(br#"{"kind":"profile","target":"x","priority":"high"}"#)
            .unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.starts_with("priority:"), "{}", e.message);
        let e = parse_json::<JobSpec>(br#"{"kind":"profile"}"#).unwrap_err();
        assert_eq!(e.details.unwrap()["field"], "target");
        let e = parse_json::<JobSpec>(br#"{"kind":"profile",#"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse_json::<JobSpec>(b"{\"kind\":\"pro\xfffile\"}").unwrap_err();
        assert!(e.message.contains("UTF-8"), "{}", e.message);
    }
}
