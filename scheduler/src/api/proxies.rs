//! The proxy route: every forward proxy, with whether it has credentials but never them.

use axum::Json;
use axum::extract::State;
use trawl_shared::proxies::{self, Proxy};

use super::{ApiError, ApiState};

pub(super) async fn list_proxies(
    State(state): State<ApiState>,
) -> Result<Json<Vec<Proxy>>, ApiError> {
    Ok(Json(proxies::list(state.queue.pool()).await?))
}
