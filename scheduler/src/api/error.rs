//! The API's one error shape, `{"error": {"code", "message", "details"?}}`, and how the queue's
//! and the ledger's errors map onto it.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use trawl_shared::domain::ValidationError;
use trawl_shared::limiter::LedgerError;
use trawl_shared::queue::QueueError;

/// An API error: a status, a stable code clients branch on, a message for people and, for some
/// codes, details naming what was at fault.
#[derive(Debug)]
pub struct ApiError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: String,
    pub(super) details: Option<Value>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    pub(super) fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
    }

    pub(super) fn bad_param(field: &str, message: impl Into<String>) -> Self {
        Self::bad_request(message).with_details(json!({ "field": field }))
    }

    pub(super) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    /// A path segment that names nothing: 404, with the parameter named like a 400 would.
    pub(super) fn unknown_in_path(field: &str, message: impl Into<String>) -> Self {
        Self::not_found(message).with_details(json!({ "field": field }))
    }

    pub(super) fn validation(err: &ValidationError) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            err.to_string(),
        )
        .with_details(json!({ "field": err.field }))
    }

    pub(super) fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", message)
    }

    fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "the database is not available; try again",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(details) = self.details {
            error["details"] = details;
        }
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<QueueError> for ApiError {
    fn from(err: QueueError) -> Self {
        match &err {
            QueueError::NotFound { job_id } => {
                ApiError::not_found(err.to_string()).with_details(json!({ "job_id": job_id }))
            }
            QueueError::WrongState { job_id, state, .. } => {
                ApiError::new(StatusCode::CONFLICT, "CONFLICT", err.to_string())
                    .with_details(json!({ "job_id": job_id, "state": state }))
            }
            QueueError::ActiveDuplicate { existing_id, .. } => {
                ApiError::new(StatusCode::CONFLICT, "CONFLICT", err.to_string())
                    .with_details(json!({ "existing_id": existing_id }))
            }
            QueueError::LeaseLost { .. } => {
                ApiError::new(StatusCode::CONFLICT, "CONFLICT", err.to_string())
            }
            QueueError::Database(e) => {
                tracing::error!(error = %e, "database error while serving a request");
                ApiError::unavailable()
            }
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(err: LedgerError) -> Self {
        tracing::error!(error = %err, "ledger query failed");
        ApiError::unavailable()
    }
}
