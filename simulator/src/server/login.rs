//! The start page, the login and its two-factor step.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::time::Instant;

use super::*;
use crate::windows::QueryType;

pub(super) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/", get(home))
        .route("/api/v1/web/accounts/login/ajax/", post(login))
        // Instaloader 4.16 posts the second step here; the web app's newer path stays served.
        .route("/accounts/login/ajax/two_factor/", post(login_two_factor))
        .route(
            "/api/v1/web/accounts/login/ajax/two_factor/",
            post(login_two_factor),
        )
}

/// The start page's scripts with the tokens the web app sends with its `api/graphql` queries:
/// `LSD` always, `DTSGInitialData` only for a logged-in visitor, and the viewer's id as
/// `IG_USER_EIMU` (0 when anonymous).
fn start_page(sim: &Sim, account: Option<&str>) -> String {
    let viewer = account.map_or(0, |a| sim.account_user_id(a));
    let mut define = vec![json!(["LSD", [], {"token": sim.token("L")}, 323])];
    if account.is_some() {
        define.push(json!(["DTSGInitialData", [], {"token": sim.token("NA")}, 258]));
    }
    define.push(json!(["CurrentUserInitialData", [],
        {"IG_USER_EIMU": viewer.to_string(), "NON_FACEBOOK_USER_ID": viewer.to_string()}, 270]));
    let data = json!({"require": [["ScheduledServerJS", "handle", null,
        [{"__bbox": {"define": define}}]]]});
    format!(
        "<!DOCTYPE html><html><head><title>Instagram</title>\
         <script type=\"application/json\" data-sjs>{data}</script></head><body></body></html>"
    )
}

pub(super) async fn home(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let mut c = caller(&sim, peer, &headers);
    c.stale_session = false;
    // A page navigation (Instaloader's token page) is counted as `other`; the bare GET a client
    // sends for its csrftoken before logging in is not.
    let q = if is_page_navigation(&headers) {
        QueryType::Other
    } else {
        QueryType::Uncounted
    };
    handle(&sim, &c, q, || {
        let csrf = sim.token("");
        let mut r = (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            start_page(&sim, c.account.as_deref()),
        )
            .into_response();
        // No `Secure`: the simulator serves plain http, where a client's jar would keep a Secure
        // cookie but never send it back (see docs/simulator.md).
        if let Ok(v) = HeaderValue::from_str(&format!("csrftoken={csrf}; Path=/")) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
        r
    })
    .await
}

pub(super) async fn login(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut c = caller(&sim, peer, &headers);
    c.stale_session = false;
    handle(&sim, &c, QueryType::Uncounted, || {
        let csrf_header = headers.get("x-csrftoken").and_then(|v| v.to_str().ok());
        match (csrf_header, c.cookies.get("csrftoken")) {
            (Some(h), Some(cookie)) if h == cookie => {}
            _ => return fail(StatusCode::FORBIDDEN, "CSRF token missing or incorrect"),
        }
        let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
        let Some(username) = form.get("username") else {
            return fail(StatusCode::BAD_REQUEST, "username missing");
        };
        // Instagram's web client sends `enc_password` = "#PWD_INSTAGRAM_BROWSER:0:<time>:<pw>".
        let password = form
            .get("enc_password")
            .and_then(|p| p.splitn(4, ':').nth(3))
            .or_else(|| form.get("password").map(String::as_str));
        let Some(expected) = sim.accounts.get(username) else {
            return json_response(
                StatusCode::OK,
                &json!({"authenticated": false, "user": false, "status": "ok"}),
            );
        };
        if password != Some(expected.as_str()) {
            return json_response(
                StatusCode::OK,
                &json!({"authenticated": false, "user": true, "status": "ok"}),
            );
        }
        match sim.challenges.get(username) {
            Some(LoginChallenge::Checkpoint) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"message": "checkpoint_required",
                            "checkpoint_url": "/challenge/action/AXH0/",
                            "lock": false, "status": "fail",
                            "error_type": "checkpoint_challenge_required"}),
                );
            }
            Some(LoginChallenge::TwoFactor) => {
                let identifier = sim.token("2F");
                if let Ok(mut pending) = sim.pending_two_factor.lock() {
                    pending.insert(identifier.clone(), username.clone());
                }
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"message": "", "two_factor_required": true,
                            "two_factor_info": {"username": username,
                                "two_factor_identifier": identifier,
                                "sms_two_factor_on": false, "totp_two_factor_on": true},
                            "status": "fail", "error_type": "two_factor_required"}),
                );
            }
            None => {}
        }
        logged_in(&sim, username)
    })
    .await
}

/// Creates a session for `username` and sets Instagram's cookies.
pub(super) fn logged_in(sim: &Sim, username: &str) -> Response {
    {
        let session = sim.token("");
        if let Ok(mut sessions) = sim.sessions.lock() {
            sessions.insert(session.clone(), (username.to_owned(), Instant::now()));
        }
        let user_id = sim.account_user_id(username);
        let mut r = json_response(
            StatusCode::OK,
            &json!({"authenticated": true, "user": true, "userId": user_id.to_string(),
                    "oneTapPrompt": false, "status": "ok"}),
        );
        for cookie in [
            format!("sessionid={session}; Path=/; HttpOnly"),
            format!("ds_user_id={user_id}; Path=/"),
            format!("mid={}; Path=/", sim.token("Z")),
            format!("ig_did={}; Path=/; HttpOnly", sim.token("D")),
            format!("rur=\"NAO\\054{user_id}\\0541790000000:01f7\"; Path=/; HttpOnly"),
            format!("csrftoken={}; Path=/", sim.token("")),
        ] {
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        r
    }
}

/// The second step of a two-factor login: form `username`, `identifier`, `verificationCode`.
pub(super) async fn login_two_factor(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut c = caller(&sim, peer, &headers);
    c.stale_session = false;
    handle(&sim, &c, QueryType::Uncounted, || {
        let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
        let pending = form
            .get("identifier")
            .and_then(|id| sim.pending_two_factor.lock().ok()?.get(id).cloned());
        let Some(username) = pending.filter(|u| form.get("username") == Some(u)) else {
            return fail(StatusCode::BAD_REQUEST, "Invalid two-factor identifier.");
        };
        if form.get("verificationCode").map(String::as_str) != Some(TWO_FACTOR_CODE) {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"message": "Please check the security code and try again.",
                        "status": "fail", "error_type": "sms_code_validation_code_invalid"}),
            );
        }
        if let (Some(id), Ok(mut pending)) = (form.get("identifier"), sim.pending_two_factor.lock())
        {
            pending.remove(id);
        }
        logged_in(&sim, &username)
    })
    .await
}
