//! Bearer tokens: a route with a scope in `ROUTES` answers 401 without a known token and 403
//! when the token lacks the scope, before its handler runs.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use serde_json::json;
use trawl_shared::tokens::Scope;

use super::{ApiError, ApiState};

/// `handler` behind a token check for `scope`.
pub(super) fn require(
    handler: MethodRouter<ApiState>,
    state: &ApiState,
    scope: Scope,
) -> MethodRouter<ApiState> {
    // A route layer covers only the route's own methods: another method gets the router's 405,
    // token or not.
    handler.route_layer(middleware::from_fn_with_state(
        (state.clone(), scope),
        require_token,
    ))
}

async fn require_token(
    State((state, needed)): State<(ApiState, Scope)>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    match check(&state, &headers, needed) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

fn check(state: &ApiState, headers: &HeaderMap, needed: Scope) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "missing Authorization: Bearer <token> header",
        ));
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
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "invalid bearer token",
        ));
    };
    if !bearer.may(needed) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            format!(
                "token {:?} lacks the '{needed}' scope this request needs",
                bearer.name
            ),
        )
        .with_details(json!({ "scope": needed.as_str() })));
    }
    Ok(())
}
