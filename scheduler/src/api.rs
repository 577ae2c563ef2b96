//! The HTTP JSON API under `/v1` (bearer tokens with scopes), plus the open `/healthz`, `/readyz` and
//! `/metrics`. Errors have one shape, from the API-design seed:
//! `{"error": {"code": "...", "message": "...", "details": {...}}}`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use trawl_shared::domain::{JobKind, JobSpec, JobState, ValidationError};
use trawl_shared::limiter::ledger::ScopeUsage;
use trawl_shared::limiter::{Ledger, Scope};
use trawl_shared::queue::{Job, ListFilter, Queue, QueueError, QueueStats, Submitted};
use trawl_shared::tokens::{Scope as TokenScope, TokenSet};

use crate::cursor;
use crate::metrics::SchedulerMetrics;

/// Everything a handler needs.
#[derive(Clone)]
pub struct ApiState {
    pub queue: Queue,
    pub tokens: Arc<TokenSet>,
    pub max_batch: usize,
    pub max_body_bytes: usize,
    /// How long a client may take to send a request body before it is answered 408.
    pub body_timeout: std::time::Duration,
    pub default_max_attempts: i32,
    pub metrics: Arc<SchedulerMetrics>,
    pub is_leader: Arc<AtomicBool>,
    pub ledger: Ledger,
}

/// Most jobs one list page returns.
pub const MAX_PAGE: i64 = 1000;
const DEFAULT_PAGE: i64 = 50;

/// One route: its method, its path (`{name}` marks a parameter, in axum's syntax and OpenAPI's)
/// and the handler that serves it.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    /// The token scope the route needs; `None`: open (probes and metrics).
    pub scope: Option<TokenScope>,
    handler: fn(MethodFilter) -> MethodRouter<ApiState>,
}

/// Every route the scheduler serves: [`router`] takes its routes from here and nowhere else.
/// `docs/openapi.yaml` describes exactly these; `scheduler/tests/openapi.rs` compares the two, and
/// both with what a live router answers. A route with a scope needs a bearer token that has it:
/// reading is `read`; creating, cancelling and retrying jobs `submit`; pausing kinds `admin`.
pub const ROUTES: &[Route] = &[
    Route {
        method: "POST",
        path: "/v1/jobs",
        scope: Some(TokenScope::Submit),
        handler: |m| on(m, submit_one),
    },
    Route {
        method: "GET",
        path: "/v1/jobs",
        scope: Some(TokenScope::Read),
        handler: |m| on(m, list_jobs),
    },
    Route {
        method: "POST",
        path: "/v1/jobs/batch",
        scope: Some(TokenScope::Submit),
        handler: |m| on(m, submit_batch),
    },
    Route {
        method: "GET",
        path: "/v1/jobs/{id}",
        scope: Some(TokenScope::Read),
        handler: |m| on(m, show_job),
    },
    Route {
        method: "POST",
        path: "/v1/jobs/{id}/cancel",
        scope: Some(TokenScope::Submit),
        handler: |m| on(m, cancel_job),
    },
    Route {
        method: "POST",
        path: "/v1/jobs/{id}/retry",
        scope: Some(TokenScope::Submit),
        handler: |m| on(m, retry_job),
    },
    Route {
        method: "POST",
        path: "/v1/kinds/{kind}/pause",
        scope: Some(TokenScope::Admin),
        handler: |m| on(m, pause_kind),
    },
    Route {
        method: "POST",
        path: "/v1/kinds/{kind}/resume",
        scope: Some(TokenScope::Admin),
        handler: |m| on(m, resume_kind),
    },
    Route {
        method: "GET",
        path: "/v1/stats",
        scope: Some(TokenScope::Read),
        handler: |m| on(m, stats),
    },
    Route {
        method: "GET",
        path: "/v1/limits",
        scope: Some(TokenScope::Read),
        handler: |m| on(m, limits),
    },
    Route {
        method: "GET",
        path: "/healthz",
        scope: None,
        handler: |m| on(m, || async { "ok" }),
    },
    Route {
        method: "GET",
        path: "/readyz",
        scope: None,
        handler: |m| on(m, readyz),
    },
    Route {
        method: "GET",
        path: "/metrics",
        scope: None,
        handler: |m| on(m, metrics),
    },
];

impl Route {
    fn method_router(&self) -> MethodRouter<ApiState> {
        let filter = match self.method {
            "GET" => MethodFilter::GET,
            "POST" => MethodFilter::POST,
            "PUT" => MethodFilter::PUT,
            "PATCH" => MethodFilter::PATCH,
            "DELETE" => MethodFilter::DELETE,
            other => panic!("api::ROUTES: {other:?} is not a method the router knows"),
        };
        (self.handler)(filter)
    }
}

pub fn router(state: ApiState) -> Router {
    let mut router = Router::new();
    for route in ROUTES {
        let mut handler = route.method_router();
        if let Some(scope) = route.scope {
            // Only the route's own methods: another method gets the 405 below, token or not.
            handler = handler.route_layer(middleware::from_fn_with_state(
                (state.clone(), scope),
                require_token,
            ));
        }
        router = router.route(route.path, handler);
    }
    router
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "this method is not allowed on this route",
            )
        })
        // The body limit is enforced in `JsonBody`, so an oversized body gets our error shape.
        .layer(axum::extract::DefaultBodyLimit::max(state.max_body_bytes))
        .with_state(state)
}

/// An API error in the seed's shape.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
    }

    fn bad_param(field: &str, message: impl Into<String>) -> Self {
        Self::bad_request(message).with_details(json!({ "field": field }))
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    fn validation(err: &ValidationError) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            err.to_string(),
        )
        .with_details(json!({ "field": err.field }))
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
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
                    "the database is not available; try again",
                )
            }
        }
    }
}

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
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "PAYLOAD_TOO_LARGE",
                        "request body is larger than the server accepts (scheduler.max_body_bytes)",
                    )
                } else {
                    ApiError::bad_request(format!("cannot read request body: {e}"))
                }
            })?;
        parse_json(&bytes).map(JsonBody)
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
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

/// The first `name` in a serde message such as "unknown field `x`, expected ...".
fn backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_owned())
}

async fn require_token(
    State((state, needed)): State<(ApiState, TokenScope)>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "missing Authorization: Bearer <token> header",
        )
        .into_response();
    };
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(bearer) = presented.and_then(|token| state.tokens.verify(token)) else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "invalid bearer token",
        )
        .into_response();
    };
    if !bearer.may(needed) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            format!(
                "token {:?} lacks the '{needed}' scope this request needs",
                bearer.name
            ),
        )
        .with_details(json!({ "scope": needed.as_str() }))
        .into_response();
    }
    next.run(request).await
}

/// The answer to a single submission.
#[derive(Debug, Serialize, Deserialize)]
pub struct SubmitResponse {
    pub created: bool,
    pub job: Job,
}

async fn submit_one(
    State(state): State<ApiState>,
    JsonBody(spec): JsonBody<JobSpec>,
) -> Result<Response, ApiError> {
    let job = spec
        .validate(state.default_max_attempts)
        .map_err(|e| ApiError::validation(&e))?;
    let submitted = state.queue.submit(&job).await?;
    let stored = state
        .queue
        .get(submitted.id)
        .await?
        .ok_or_else(|| ApiError::not_found("job vanished right after submission"))?;
    let status = if submitted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(SubmitResponse {
            created: submitted.created,
            job: stored,
        }),
    )
        .into_response())
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub jobs: Vec<JobSpec>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BatchResponse {
    pub results: Vec<Submitted>,
}

/// All or nothing: one invalid job rejects the batch (every problem listed by index) and nothing
/// is written. The CLI's `--file` validates lines itself and sends only the good ones.
async fn submit_batch(
    State(state): State<ApiState>,
    JsonBody(batch): JsonBody<BatchRequest>,
) -> Result<Json<BatchResponse>, ApiError> {
    if batch.jobs.is_empty() {
        return Err(ApiError::bad_param("jobs", "jobs: the batch is empty"));
    }
    if batch.jobs.len() > state.max_batch {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!(
                "jobs: {} jobs in one batch; at most {} allowed (scheduler.max_batch)",
                batch.jobs.len(),
                state.max_batch
            ),
        ));
    }
    let mut valid = Vec::with_capacity(batch.jobs.len());
    let mut errors = Vec::new();
    for (index, spec) in batch.jobs.into_iter().enumerate() {
        match spec.validate(state.default_max_attempts) {
            Ok(job) => valid.push(job),
            Err(e) => {
                errors.push(json!({ "index": index, "field": e.field, "message": e.message }))
            }
        }
    }
    if !errors.is_empty() {
        let first = errors[0].clone();
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            format!(
                "{} of the jobs are invalid (first: jobs[{}].{}: {}); nothing was submitted",
                errors.len(),
                first["index"],
                first["field"].as_str().unwrap_or_default(),
                first["message"].as_str().unwrap_or_default()
            ),
        )
        .with_details(json!({ "errors": errors })));
    }
    let results = state.queue.submit_many(&valid).await?;
    Ok(Json(BatchResponse { results }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    kind: Option<String>,
    state: Option<String>,
    count: Option<String>,
    cursor: Option<String>,
}

/// One page of jobs with the seed's cursor fields.
#[derive(Debug, Serialize, Deserialize)]
pub struct ListResponse {
    pub jobs: Vec<Job>,
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

async fn list_jobs(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
) -> Result<Json<ListResponse>, ApiError> {
    let params: ListParams = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    let kind = match params.kind {
        Some(k) => Some(
            k.parse::<JobKind>()
                .map_err(|e| ApiError::bad_param("kind", e.to_string()))?
                .as_str()
                .to_owned(),
        ),
        None => None,
    };
    let job_state = match params.state {
        Some(s) => Some(
            s.parse::<JobState>()
                .map_err(|e| ApiError::bad_param("state", e))?,
        ),
        None => None,
    };
    let count = match params.count {
        None => DEFAULT_PAGE,
        Some(c) => c
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::bad_param(
                    "count",
                    format!("count must be an integer from 1 to {MAX_PAGE}"),
                )
            })?,
    };
    let before_id = params.cursor.as_deref().map(decode_cursor).transpose()?;
    let page = state
        .queue
        .list(&ListFilter {
            kind,
            state: job_state,
            before_id,
            count,
        })
        .await?;
    let next_cursor = if page.has_more {
        page.jobs.last().map(|j| encode_cursor(j.id))
    } else {
        None
    };
    Ok(Json(ListResponse {
        jobs: page.jobs,
        next_cursor,
        has_more: page.has_more,
    }))
}

/// Cursors are opaque to clients ([`cursor`]).
fn encode_cursor(id: i64) -> String {
    cursor::encode(id)
}

fn decode_cursor(raw: &str) -> Result<i64, ApiError> {
    cursor::decode(raw).ok_or_else(|| {
        ApiError::bad_param(
            "cursor",
            "cursor is not one this server issued (use next_cursor from the previous page)",
        )
    })
}

fn parse_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::bad_param("id", "job id must be a positive integer"))
}

async fn show_job(
    State(state): State<ApiState>,
    PathParam(id): PathParam,
) -> Result<Json<Job>, ApiError> {
    let id = parse_id(&id)?;
    state
        .queue
        .get(id)
        .await?
        .map(Json)
        .ok_or_else(|| QueueError::NotFound { job_id: id }.into())
}

async fn cancel_job(
    State(state): State<ApiState>,
    PathParam(id): PathParam,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(state.queue.cancel(parse_id(&id)?).await?))
}

async fn retry_job(
    State(state): State<ApiState>,
    PathParam(id): PathParam,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(state.queue.retry(parse_id(&id)?).await?))
}

fn parse_kind(raw: &str) -> Result<JobKind, ApiError> {
    raw.parse::<JobKind>()
        .map_err(|e| ApiError::bad_param("kind", e.to_string()).with_status(StatusCode::NOT_FOUND))
}

impl ApiError {
    fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        if status == StatusCode::NOT_FOUND {
            self.code = "NOT_FOUND";
        }
        self
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct KindResponse {
    pub kind: String,
    pub paused: bool,
}

async fn pause_kind(
    State(state): State<ApiState>,
    PathParam(kind): PathParam,
) -> Result<Json<KindResponse>, ApiError> {
    let kind = parse_kind(&kind)?;
    state.queue.pause_kind(kind).await?;
    Ok(Json(KindResponse {
        kind: kind.as_str().into(),
        paused: true,
    }))
}

async fn resume_kind(
    State(state): State<ApiState>,
    PathParam(kind): PathParam,
) -> Result<Json<KindResponse>, ApiError> {
    let kind = parse_kind(&kind)?;
    state.queue.resume_kind(kind).await?;
    Ok(Json(KindResponse {
        kind: kind.as_str().into(),
        paused: false,
    }))
}

async fn stats(State(state): State<ApiState>) -> Result<Json<QueueStats>, ApiError> {
    Ok(Json(state.queue.stats().await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsParams {
    account: Option<String>,
    egress: Option<String>,
}

/// Most characters in an account or egress name given to `/v1/limits`.
const MAX_SCOPE_NAME: usize = 100;

/// Ledger usage of one account or egress group, or of every scope active in the last hour.
async fn limits(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<ScopeUsage>>, ApiError> {
    let params: LimitsParams = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    let scopes = match (params.account, params.egress) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_param(
                "account",
                "give either account or egress, not both",
            ));
        }
        (Some(name), None) => vec![Scope::Account(check_scope_name("account", name)?)],
        (None, Some(name)) => vec![Scope::Egress(check_scope_name("egress", name)?)],
        (None, None) => state
            .ledger
            .active_scopes()
            .await
            .map_err(ledger_unavailable)?,
    };
    let mut out = Vec::with_capacity(scopes.len());
    for scope in &scopes {
        out.push(
            state
                .ledger
                .usage(scope, None)
                .await
                .map_err(ledger_unavailable)?,
        );
    }
    Ok(Json(out))
}

fn check_scope_name(field: &str, name: String) -> Result<String, ApiError> {
    if name.is_empty()
        || name.chars().count() > MAX_SCOPE_NAME
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::bad_param(
            field,
            format!("{field} must be 1 to {MAX_SCOPE_NAME} printable characters"),
        ));
    }
    Ok(name)
}

fn ledger_unavailable(e: trawl_shared::limiter::LedgerError) -> ApiError {
    tracing::error!(error = %e, "ledger query failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        "the database is not available; try again",
    )
}

async fn readyz(State(state): State<ApiState>) -> Response {
    // Bounded: behind a network partition the query hangs rather than fails, and a probe that
    // never answers is read by orchestrators as a timeout, not as "not ready".
    let probe = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(state.queue.pool()),
    )
    .await;
    let problem = match probe {
        Ok(Ok(_)) => return (StatusCode::OK, "ready").into_response(),
        Ok(Err(e)) => format!("database not reachable: {e}"),
        Err(_) => "database not reachable: no answer within 2 s".to_owned(),
    };
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", problem).into_response()
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let body = state
        .metrics
        .render(state.is_leader.load(Ordering::Relaxed));
    (
        [(header::CONTENT_TYPE, trawl_shared::metrics::CONTENT_TYPE)],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        assert_eq!(decode_cursor(&encode_cursor(42)).unwrap(), 42);
        for bad in ["", "42", "j", "j-1", "j0", "jabc", "x42"] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }

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
