//! The rate-limit ledger route: usage of one account or egress group, or of every active scope.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use trawl_shared::limiter::Scope;
use trawl_shared::limiter::ledger::ScopeUsage;

use super::extract::QueryParams;
use super::{ApiError, ApiState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsParams {
    account: Option<String>,
    egress: Option<String>,
}

/// Most characters in an account or egress name given to `/v1/limits`.
const MAX_SCOPE_NAME: usize = 100;

/// Ledger usage of one account or egress group, or of every scope active in the last hour.
pub(super) async fn limits(
    State(state): State<ApiState>,
    QueryParams(params): QueryParams<LimitsParams>,
) -> Result<Json<Vec<ScopeUsage>>, ApiError> {
    let scopes = match (params.account, params.egress) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_param(
                "account",
                "give either account or egress, not both",
            ));
        }
        (Some(name), None) => vec![Scope::Account(check_scope_name("account", name)?)],
        (None, Some(name)) => vec![Scope::Egress(check_scope_name("egress", name)?)],
        (None, None) => state.ledger.active_scopes().await?,
    };
    let mut out = Vec::with_capacity(scopes.len());
    for scope in &scopes {
        out.push(state.ledger.usage(scope, None).await?);
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
