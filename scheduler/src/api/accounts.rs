//! The account routes: list every account, and send one's requests through another proxy (or
//! none). Neither reads a secret, so the scheduler needs no `secrets.key` to serve them.

use std::fmt;

use axum::Json;
use axum::extract::State;
use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use trawl_shared::accounts::{self, Account, AccountError};
use trawl_shared::domain::ValidationError;
use trawl_shared::proxies::{self, ProxyError};

use super::extract::{JsonBody, PathParam};
use super::{ApiError, ApiState};

pub(super) async fn list_accounts(
    State(state): State<ApiState>,
) -> Result<Json<Vec<Account>>, ApiError> {
    Ok(Json(accounts::list(state.queue.pool()).await?))
}

/// The body of `PUT /v1/accounts/{name}/proxy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub(super) struct SetProxy {
    /// Required even when null: a body that forgot the field must not send the account straight
    /// out, which serde's default for an absent `Option` would do.
    #[serde(deserialize_with = "Option::deserialize")]
    proxy: Option<String>,
}

/// serde's derive also reads a struct by position from a sequence, so `[null]` would take an
/// account off its proxy; the body is a JSON object, so only a map reaches the derived
/// `SetProxy::deserialize` (made inherent by `remote = "Self"`).
impl<'de> Deserialize<'de> for SetProxy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectOnly;
        impl<'de> Visitor<'de> for ObjectOnly {
            type Value = SetProxy;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object such as {\"proxy\": \"eu-1\"} or {\"proxy\": null}")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SetProxy, A::Error> {
                SetProxy::deserialize(MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(ObjectOnly)
    }
}

/// Points an account at a proxy, or at none; its next lease goes out through it. A worker holding
/// the account now keeps the route it opened until it gives the account back.
pub(super) async fn set_proxy(
    State(state): State<ApiState>,
    PathParam(name): PathParam,
    JsonBody(body): JsonBody<SetProxy>,
) -> Result<Json<Account>, ApiError> {
    if !accounts::valid_name(&name) {
        return Err(ApiError::bad_param(
            "name",
            AccountError::BadName(name.chars().take(80).collect()).to_string(),
        ));
    }
    if let Some(proxy) = &body.proxy
        && !proxies::valid_name(proxy)
    {
        return Err(ApiError::validation(&ValidationError {
            field: "proxy",
            message: ProxyError::BadName(proxy.chars().take(80).collect()).to_string(),
        }));
    }
    let pool = state.queue.pool();
    // The account the path names is looked for first: when neither it nor the proxy exists, the
    // 404 is about the resource the request is addressed to.
    accounts::get(pool, &name).await?;
    proxies::assign(pool, &name, body.proxy.as_deref()).await?;
    Ok(Json(accounts::get(pool, &name).await?))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::super::extract::parse_json;
    use super::*;

    #[test]
    fn the_proxy_field_is_required_even_as_null() {
        let set = parse_json::<SetProxy>(br#"{"proxy": "eu-1"}"#).expect("a proxy");
        assert_eq!(set.proxy.as_deref(), Some("eu-1"));
        let none = parse_json::<SetProxy>(br#"{"proxy": null}"#).expect("null");
        assert_eq!(none.proxy, None);
        for (body, field) in [
            (&br#"{}"#[..], "proxy"),
            (br#"{"proxy": null, "via": "x"}"#, "via"),
            (br#"{"proxy": 5}"#, "proxy"),
            (br#"[null]"#, ""),
            (br#"["eu-1"]"#, ""),
        ] {
            let e = parse_json::<SetProxy>(body).expect_err("refused");
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", e.message);
            assert_eq!(
                e.details.as_ref().map(|d| d["field"].clone()),
                Some(field.into()),
                "{}",
                e.message
            );
        }
    }
}
