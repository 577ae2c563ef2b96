//! Login, refresh and (for tests) revocation of v1 tokens.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::tiers::Tier;
use super::{bad_request, base64url, error, gate, json_body, ok};
use crate::data::mix;
use crate::server::Sim;

/// Makes a token pair for `account` and answers as login and refresh do.
fn tokens_for(sim: &Sim, account: &str) -> Response {
    let user_id = sim.account_user_id(account);
    let expires_in = sim.v1.token_life.as_secs();
    let claims = json!({"sub": user_id.to_string(), "username": account,
                        "exp": sim.unix_now() + expires_in});
    let access = format!(
        "{}.{}.{}",
        base64url(br#"{"alg":"HS256","typ":"JWT"}"#),
        base64url(claims.to_string().as_bytes()),
        sim.token("")
    );
    let refresh = format!(
        "rt_{}{:016x}",
        sim.token(""),
        mix(sim.data.seed, 32, user_id, 0)
    );
    sim.v1.issue(account, access.clone(), refresh.clone());
    ok(
        json!({"access_token": access, "refresh_token": refresh, "token_type": "Bearer",
              "expires_in": expires_in,
              "user": {"user_id": user_id, "username": account}}),
    )
}

fn required<'a>(req: &'a Value, field: &str) -> Result<&'a str, Response> {
    req[field]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad_request(&format!("{field} is required"), field))
}

pub(super) async fn login(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    gate(&sim, peer, &headers, Tier::Auth, |_| {
        let req = match json_body(&body) {
            Ok(r) => r,
            Err(r) => return r,
        };
        let (username, password) = match (required(&req, "username"), required(&req, "password")) {
            (Ok(u), Ok(p)) => (u, p),
            (Err(r), _) | (_, Err(r)) => return r,
        };
        if !sim.check_password(username, password) {
            return error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "invalid username or password",
                Some(json!({"reason": "invalid_credentials"})),
            );
        }
        tokens_for(&sim, username)
    })
    .await
}

pub(super) async fn refresh(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    gate(&sim, peer, &headers, Tier::Auth, |_| {
        let req = match json_body(&body) {
            Ok(r) => r,
            Err(r) => return r,
        };
        let token = match required(&req, "refresh_token") {
            Ok(t) => t,
            Err(r) => return r,
        };
        match sim.v1.spend_refresh(token) {
            Some(account) => tokens_for(&sim, &account),
            None => error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "the refresh token is not valid: log in again",
                Some(json!({"reason": "invalid_refresh_token"})),
            ),
        }
    })
    .await
}

/// `POST /__sim/v1/revoke {"account"}`: ends every token of an account, as a password change or
/// a security check would, so that tests can make a client log in again.
pub(super) async fn revoke(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let req = match json_body(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match required(&req, "account") {
        Ok(account) => ok(json!({"revoked": sim.v1.revoke(account)})),
        Err(r) => r,
    }
}
