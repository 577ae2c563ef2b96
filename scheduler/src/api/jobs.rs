//! The job routes: submit one or a batch, list a page, show, cancel and retry one.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use trawl_shared::domain::{JobKind, JobSpec, JobState, ValidationError};
use trawl_shared::queue::{Job, ListFilter, QueueError, Submitted};

use super::extract::{JsonBody, PathParam, QueryParams};
use super::{ApiError, ApiState};
use crate::cursor;

/// Most jobs one list page returns.
pub const MAX_PAGE: i64 = 1000;
const DEFAULT_PAGE: i64 = 50;

/// The answer to a single submission.
#[derive(Debug, Serialize, Deserialize)]
pub struct SubmitResponse {
    pub created: bool,
    pub job: Job,
}

pub(super) async fn submit_one(
    State(state): State<ApiState>,
    JsonBody(spec): JsonBody<JobSpec>,
) -> Result<Response, ApiError> {
    let job = spec
        .validate(state.default_max_attempts)
        .map_err(|e| ApiError::validation(&e))?;
    let submitted = state.queue.submit(&job).await?;
    // A retention pass deletes the job in between only when it was an active duplicate that
    // finished in that instant under a near-zero retention: a race, not a bug, so it is answered
    // as the job being gone.
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
pub(super) async fn submit_batch(
    State(state): State<ApiState>,
    JsonBody(batch): JsonBody<BatchRequest>,
) -> Result<Json<BatchResponse>, ApiError> {
    if batch.jobs.is_empty() {
        return Err(ApiError::bad_param("jobs", "jobs: the batch is empty"));
    }
    if batch.jobs.len() > state.max_batch {
        return Err(ApiError::payload_too_large(format!(
            "jobs: {} jobs in one batch; at most {} allowed (scheduler.max_batch)",
            batch.jobs.len(),
            state.max_batch
        )));
    }
    let mut valid = Vec::with_capacity(batch.jobs.len());
    let mut invalid: Vec<(usize, ValidationError)> = Vec::new();
    for (index, spec) in batch.jobs.into_iter().enumerate() {
        match spec.validate(state.default_max_attempts) {
            Ok(job) => valid.push(job),
            Err(e) => invalid.push((index, e)),
        }
    }
    if let Some((index, first)) = invalid.first() {
        let errors: Vec<_> = invalid
            .iter()
            .map(|(index, e)| json!({ "index": index, "field": e.field, "message": e.message }))
            .collect();
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            format!(
                "{} of the jobs are invalid (first: jobs[{index}].{}: {}); nothing was submitted",
                invalid.len(),
                first.field,
                first.message
            ),
        )
        .with_details(json!({ "errors": errors })));
    }
    let results = state.queue.submit_many(&valid).await?;
    Ok(Json(BatchResponse { results }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    kind: Option<String>,
    state: Option<String>,
    count: Option<String>,
    cursor: Option<String>,
}

/// One page of jobs, newest first; `next_cursor` is set exactly when `has_more` is.
#[derive(Debug, Serialize, Deserialize)]
pub struct ListResponse {
    pub jobs: Vec<Job>,
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

pub(super) async fn list_jobs(
    State(state): State<ApiState>,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Json<ListResponse>, ApiError> {
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
        page.jobs.last().map(|j| cursor::encode(j.id))
    } else {
        None
    };
    Ok(Json(ListResponse {
        jobs: page.jobs,
        next_cursor,
        has_more: page.has_more,
    }))
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

pub(super) async fn show_job(
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

pub(super) async fn cancel_job(
    State(state): State<ApiState>,
    PathParam(id): PathParam,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(state.queue.cancel(parse_id(&id)?).await?))
}

pub(super) async fn retry_job(
    State(state): State<ApiState>,
    PathParam(id): PathParam,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(state.queue.retry(parse_id(&id)?).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        assert_eq!(decode_cursor(&cursor::encode(42)).unwrap(), 42);
        for bad in ["", "42", "j", "j-1", "j0", "jabc", "x42"] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }
}
