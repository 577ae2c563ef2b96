//! The `/metrics`, `/healthz` and `/readyz` of a worker or a stream process. Ready means the database answers: a worker
//! waiting for an account is ready (it takes one the moment one is free).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sqlx::PgPool;
use tokio::net::TcpListener;
use trawl_shared::shutdown::Shutdown;

use prometheus::Registry;

#[derive(Clone)]
pub struct ProbeState {
    pub pool: PgPool,
    /// Rendered together on `/metrics`.
    pub registries: Vec<Registry>,
}

pub async fn serve(
    listener: TcpListener,
    state: ProbeState,
    shutdown: Shutdown,
) -> Result<(), std::io::Error> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.wait())
        .await
}

async fn readyz(State(state): State<ProbeState>) -> Response {
    let probe = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&state.pool),
    )
    .await;
    match probe {
        Ok(Ok(_)) => (StatusCode::OK, "ready").into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the database does not answer",
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<ProbeState>) -> Response {
    let registries: Vec<&Registry> = state.registries.iter().collect();
    let body = trawl_shared::metrics::render(&registries);
    (
        [(header::CONTENT_TYPE, trawl_shared::metrics::CONTENT_TYPE)],
        body,
    )
        .into_response()
}
