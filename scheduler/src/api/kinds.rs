//! The kind routes (pause and resume leasing a kind) and the queue's counts by kind and state.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use trawl_shared::domain::JobKind;
use trawl_shared::queue::QueueStats;

use super::extract::PathParam;
use super::{ApiError, ApiState};

#[derive(Debug, Serialize, Deserialize)]
pub struct KindResponse {
    pub kind: String,
    pub paused: bool,
}

/// A kind in the path names a resource, so an unknown one is 404 rather than 400.
fn parse_kind(raw: &str) -> Result<JobKind, ApiError> {
    raw.parse::<JobKind>()
        .map_err(|e| ApiError::unknown_in_path("kind", e.to_string()))
}

pub(super) async fn pause_kind(
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

pub(super) async fn resume_kind(
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

pub(super) async fn stats(State(state): State<ApiState>) -> Result<Json<QueueStats>, ApiError> {
    Ok(Json(state.queue.stats().await?))
}
