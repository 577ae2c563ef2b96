//! The open routes orchestrators and Prometheus call: liveness, readiness and metrics.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState};

/// Answers while the process can serve at all; it touches nothing, so a database outage does not
/// get the scheduler restarted.
pub(super) async fn healthz() -> &'static str {
    "ok"
}

pub(super) async fn readyz(State(state): State<ApiState>) -> Response {
    // Bounded: behind a network partition the query hangs rather than fails, and a probe that
    // never answers is read by orchestrators as a timeout, not as "not ready".
    let probe = tokio::time::timeout(
        Duration::from_secs(2),
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

pub(super) async fn metrics(State(state): State<ApiState>) -> Response {
    let body = state
        .metrics
        .render(state.is_leader.load(Ordering::Relaxed));
    (
        [(header::CONTENT_TYPE, trawl_shared::metrics::CONTENT_TYPE)],
        body,
    )
        .into_response()
}
