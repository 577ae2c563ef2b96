//! The API's one error shape, `{"error": {"code", "message", "details"?}}`, and how the queue's,
//! the ledger's, the accounts' and the proxies' errors map onto it.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use trawl_shared::accounts::AccountError;
use trawl_shared::domain::ValidationError;
use trawl_shared::limiter::LedgerError;
use trawl_shared::proxies::ProxyError;
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

    /// A database error: an outage (503, worth retrying) unless it shows that the code broke one
    /// of its own promises, which no retry mends.
    fn database(err: sqlx::Error, what: &'static str) -> Self {
        let broken = match &err {
            sqlx::Error::RowNotFound => BrokenInvariant::MissingRow,
            sqlx::Error::Encode(source) | sqlx::Error::Decode(source)
                if source.is::<serde_json::Error>() =>
            {
                BrokenInvariant::Json(source.to_string())
            }
            sqlx::Error::Encode(_)
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::TypeNotFound { .. } => BrokenInvariant::StoredValue(err.to_string()),
            _ => {
                tracing::error!(error = %err, "{what} failed while serving a request");
                return Self::unavailable();
            }
        };
        broken.into()
    }
}

/// A promise the code relies on that did not hold: a bug, or a database changed under the
/// scheduler; never the client's doing and never an outage. Answered 500 rather than 503, since
/// "try again" would send clients retrying a request that cannot succeed, and logged in full
/// while the client gets only the summary.
#[derive(Debug, thiserror::Error)]
pub enum BrokenInvariant {
    /// The queue signals a submission that came back without a result for one of its jobs (or a
    /// statement that must return a row and returned none) as sqlx's `RowNotFound`.
    #[error("the queue returned no row where it promises one")]
    MissingRow,
    /// A value did not convert to or from JSON (job options, a checkpoint).
    #[error("a value did not convert to or from JSON: {0}")]
    Json(String),
    /// A stored value, column or type is not what the code reads: the schema and the code disagree.
    #[error("a stored value does not match what the scheduler reads: {0}")]
    StoredValue(String),
    /// An account or proxy operation failed in a way the route never leads it to (the routes only
    /// read, and reassign a proxy by names they checked): the two disagree on what can happen.
    #[error("an account or proxy operation failed unexpectedly: {0}")]
    Unexpected(String),
}

impl BrokenInvariant {
    /// What the client is told: the kind of failure, without internals.
    fn summary(&self) -> &'static str {
        match self {
            BrokenInvariant::MissingRow => "the queue returned no row where it promises one",
            BrokenInvariant::Json(_) => "a value did not convert to or from JSON",
            BrokenInvariant::StoredValue(_) => {
                "a stored value does not match what the scheduler reads"
            }
            BrokenInvariant::Unexpected(_) => "an account or proxy operation failed unexpectedly",
        }
    }
}

impl From<BrokenInvariant> for ApiError {
    fn from(err: BrokenInvariant) -> Self {
        tracing::error!(error = %err, "broken invariant while serving a request");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            format!(
                "internal error: {}; this is a bug, and the scheduler's log has the details",
                err.summary()
            ),
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
        let message = err.to_string();
        match err {
            QueueError::NotFound { job_id } => {
                ApiError::not_found(message).with_details(json!({ "job_id": job_id }))
            }
            QueueError::WrongState { job_id, state, .. } => {
                ApiError::new(StatusCode::CONFLICT, "CONFLICT", message)
                    .with_details(json!({ "job_id": job_id, "state": state }))
            }
            QueueError::ActiveDuplicate { existing_id, .. } => {
                ApiError::new(StatusCode::CONFLICT, "CONFLICT", message)
                    .with_details(json!({ "existing_id": existing_id }))
            }
            QueueError::LeaseLost { .. } => {
                ApiError::new(StatusCode::CONFLICT, "CONFLICT", message)
            }
            QueueError::Database(e) => ApiError::database(e, "a queue query"),
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(err: LedgerError) -> Self {
        let LedgerError::Database(e) = err;
        ApiError::database(e, "a ledger query")
    }
}

/// An account named in the path that does not exist is 404 naming `name`; a proxy, which only a
/// body names, is 404 naming `proxy`, so a client tells the two apart.
impl From<AccountError> for ApiError {
    fn from(err: AccountError) -> Self {
        let message = err.to_string();
        match err {
            AccountError::Database(e) => ApiError::database(e, "an account query"),
            AccountError::NotFound(_) => ApiError::unknown_in_path("name", message),
            AccountError::NoSuchProxy(_) => {
                ApiError::not_found(message).with_details(json!({ "field": "proxy" }))
            }
            // One by one, so that a new variant is placed by a decision, not by a wildcard.
            AccountError::Exists(_)
            | AccountError::BadName(_)
            | AccountError::NoSecret(_)
            | AccountError::V1NeedsPassword(_)
            | AccountError::LeaseLost(_)
            | AccountError::BadProxy(..)
            | AccountError::Crypto(_)
            | AccountError::Rotate(..)
            | AccountError::RotateProxy(..) => BrokenInvariant::Unexpected(message).into(),
        }
    }
}

impl From<ProxyError> for ApiError {
    fn from(err: ProxyError) -> Self {
        let message = err.to_string();
        match err {
            ProxyError::Database(e) => ApiError::database(e, "a proxy query"),
            ProxyError::NotFound(_) => {
                ApiError::not_found(message).with_details(json!({ "field": "proxy" }))
            }
            ProxyError::AccountNotFound(_) => ApiError::unknown_in_path("name", message),
            // One by one, so that a new variant is placed by a decision, not by a wildcard.
            ProxyError::Exists(_)
            | ProxyError::BadName(_)
            | ProxyError::BadUrl { .. }
            | ProxyError::BadUsername(_)
            | ProxyError::InUse { .. }
            | ProxyError::Crypto(_) => BrokenInvariant::Unexpected(message).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(err: sqlx::Error) -> (StatusCode, &'static str) {
        let e = ApiError::from(QueueError::Database(err));
        (e.status, e.code)
    }

    #[test]
    fn broken_invariants_are_internal_errors_and_outages_unavailable() {
        let internal = (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL");
        assert_eq!(answer(sqlx::Error::RowNotFound), internal);
        let json = serde_json::from_str::<u8>("x").unwrap_err();
        assert_eq!(answer(sqlx::Error::Encode(Box::new(json))), internal);
        assert_eq!(
            answer(sqlx::Error::ColumnNotFound("payload".into())),
            internal
        );
        let unavailable = (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
        assert_eq!(answer(sqlx::Error::PoolTimedOut), unavailable);
        let ledger = ApiError::from(LedgerError::Database(sqlx::Error::RowNotFound));
        assert_eq!((ledger.status, ledger.code), internal);
        assert!(ledger.message.contains("no row"), "{}", ledger.message);
    }

    #[test]
    fn missing_accounts_and_proxies_name_their_field() {
        let field = |e: &ApiError| e.details.as_ref().map(|d| d["field"].clone());
        for (e, name) in [
            (ApiError::from(AccountError::NotFound("a".into())), "name"),
            (
                ApiError::from(ProxyError::AccountNotFound("a".into())),
                "name",
            ),
            (ApiError::from(ProxyError::NotFound("p".into())), "proxy"),
            (
                ApiError::from(AccountError::NoSuchProxy("p".into())),
                "proxy",
            ),
        ] {
            assert_eq!((e.status, e.code), (StatusCode::NOT_FOUND, "NOT_FOUND"));
            assert_eq!(field(&e), Some(name.into()), "{}", e.message);
        }
        let outage = ApiError::from(ProxyError::Database(sqlx::Error::PoolTimedOut));
        assert_eq!(outage.status, StatusCode::SERVICE_UNAVAILABLE);
        let unexpected = ApiError::from(AccountError::Exists("a".into()));
        assert_eq!(unexpected.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
