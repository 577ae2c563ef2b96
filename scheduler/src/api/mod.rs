//! The HTTP JSON API under `/v1` (bearer tokens with scopes), plus the open `/healthz`, `/readyz`
//! and `/metrics`: the route table and the router built from it. Every error has one shape,
//! `{"error": {"code": "...", "message": "...", "details": {...}}}` ([`ApiError`]).

mod accounts;
mod auth;
mod error;
mod extract;
mod jobs;
mod kinds;
mod limits;
mod probes;
mod proxies;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{MethodFilter, MethodRouter, on};
use trawl_shared::limiter::Ledger;
use trawl_shared::queue::Queue;
use trawl_shared::tokens::{Scope as TokenScope, TokenSet};

use crate::metrics::SchedulerMetrics;

pub use error::{ApiError, BrokenInvariant};
pub use extract::{JsonBody, PathParam};
pub use jobs::{BatchRequest, BatchResponse, ListResponse, MAX_PAGE, SubmitResponse};
pub use kinds::KindResponse;

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
/// reading is `read`; creating, cancelling and retrying jobs `submit`; pausing kinds and changing
/// an account's proxy `admin`.
pub const ROUTES: &[Route] = &[
    Route {
        method: "POST",
        path: "/v1/jobs",
        scope: Some(TokenScope::Submit),
        handler: |m| on(m, jobs::submit_one),
    },
    Route {
        method: "GET",
        path: "/v1/jobs",
        scope: Some(TokenScope::Read),
        handler: |m| on(m, jobs::list_jobs),
    },
    Route {
        method: "POST",
        path: "/v1/jobs/batch",
        scope: Some(TokenScope::Submit),
        handler: |m| on(m, jobs::submit_batch),
    },
    Route {
        method: "GET",
        path: "/v1/jobs/{id}",
        scope: Some(TokenScope::Read),
        handler: |m| on(m, jobs::show_job),
    },
    Route {
        method: "POST",
        path: "/v1/jobs/{id}/cancel",
        scope: Some(TokenScope::Submit),
        handler: |m| on(m, jobs::cancel_job),
    },
    Route {
        method: "POST",
        path: "/v1/jobs/{id}/retry",
        scope: Some(TokenScope::Submit),
        handler: |m| on(m, jobs::retry_job),
    },
    Route {
        method: "POST",
        path: "/v1/kinds/{kind}/pause",
        scope: Some(TokenScope::Admin),
        handler: |m| on(m, kinds::pause_kind),
    },
    Route {
        method: "POST",
        path: "/v1/kinds/{kind}/resume",
        scope: Some(TokenScope::Admin),
        handler: |m| on(m, kinds::resume_kind),
    },
    Route {
        method: "GET",
        path: "/v1/stats",
        scope: Some(TokenScope::Read),
        handler: |m| on(m, kinds::stats),
    },
    Route {
        method: "GET",
        path: "/v1/limits",
        scope: Some(TokenScope::Read),
        handler: |m| on(m, limits::limits),
    },
    Route {
        method: "GET",
        path: "/v1/accounts",
        scope: Some(TokenScope::Read),
        handler: |m| on(m, accounts::list_accounts),
    },
    Route {
        method: "PUT",
        path: "/v1/accounts/{name}/proxy",
        scope: Some(TokenScope::Admin),
        handler: |m| on(m, accounts::set_proxy),
    },
    Route {
        method: "GET",
        path: "/v1/proxies",
        scope: Some(TokenScope::Read),
        handler: |m| on(m, proxies::list_proxies),
    },
    Route {
        method: "GET",
        path: "/healthz",
        scope: None,
        handler: |m| on(m, probes::healthz),
    },
    Route {
        method: "GET",
        path: "/readyz",
        scope: None,
        handler: |m| on(m, probes::readyz),
    },
    Route {
        method: "GET",
        path: "/metrics",
        scope: None,
        handler: |m| on(m, probes::metrics),
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
            handler = auth::require(handler, &state, scope);
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
