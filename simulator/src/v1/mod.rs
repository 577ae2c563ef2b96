//! An Instagram-style v1 REST API (docs/simulator.md, "The v1 REST API"), a second platform next
//! to the Instagram imitation: login with expiring access tokens and rotating refresh tokens;
//! users, posts, comments, feed, explore, stories, the social graph, search and notifications,
//! read and write; `count`/`cursor` pagination; hourly rate tiers per endpoint class announced in
//! `X-RateLimit-*` headers and enforced in the same windows, audit log and oracle as the Instagram
//! windows; errors as `{"error": {"code", "message", "details"}}`; a WebSocket stream of new
//! posts, stories and notifications driven by the write endpoints and a seeded activity generator.
//!
//! It owns the v1 overlay (what writes and the generator added to the generated data set) and
//! must not change the data set itself, which the Instagram endpoints serve unchanged.

// A handler's error is the response it answers with; boxing every one would only add noise.
#![allow(clippy::result_large_err)]

mod auth;
mod read;
mod shapes;
mod state;
mod stream;
pub mod tiers;
mod write;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::faults::Fault;
use crate::server::Sim;
use crate::windows::QueryType;
pub use state::{V1Config, V1State};
pub(crate) use stream::run_activity;
use tiers::Tier;

/// Largest upload body (several media files of up to [`MAX_MEDIA_BYTES`] each).
const MAX_UPLOAD_BODY: usize = 64 * 1024 * 1024;
/// The document's per-file limit.
pub const MAX_MEDIA_BYTES: usize = 8 * 1024 * 1024;
/// The document's caption limit, in characters.
pub const MAX_CAPTION: usize = 2200;

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/api/v1/auth/login", post(auth::login))
        .route("/api/v1/auth/refresh", post(auth::refresh))
        .route(
            "/api/v1/users/{user_id}",
            get(read::user).put(write::update_profile),
        )
        .route("/api/v1/users/{user_id}/posts", get(read::user_posts))
        .route("/api/v1/users/{user_id}/followers", get(read::followers))
        .route("/api/v1/users/{user_id}/following", get(read::following))
        .route(
            "/api/v1/users/{user_id}/follow",
            post(write::follow).delete(write::unfollow),
        )
        .route(
            "/api/v1/posts",
            post(write::upload_post).layer(DefaultBodyLimit::max(MAX_UPLOAD_BODY)),
        )
        .route(
            "/api/v1/posts/{post_id}",
            get(read::post).delete(write::delete_post),
        )
        .route(
            "/api/v1/posts/{post_id}/like",
            post(write::like).delete(write::unlike),
        )
        .route(
            "/api/v1/posts/{post_id}/comments",
            get(read::comments).post(write::comment),
        )
        .route("/api/v1/feed", get(read::feed))
        .route("/api/v1/explore", get(read::explore))
        .route(
            "/api/v1/stories",
            post(write::upload_story).layer(DefaultBodyLimit::max(MAX_UPLOAD_BODY)),
        )
        .route("/api/v1/stories/feed", get(read::stories_feed))
        .route("/api/v1/stories/{story_id}/view", post(write::view_story))
        .route("/api/v1/search/users", get(read::search_users))
        .route("/api/v1/search/hashtags", get(read::search_hashtags))
        .route("/api/v1/search/locations", get(read::search_locations))
        .route("/api/v1/notifications", get(read::notifications))
        .route("/api/v1/media/{media_id}", get(read::uploaded_media))
        .route("/v1/stream", get(stream::connect))
        .route("/__sim/v1/revoke", post(auth::revoke))
        .route("/__sim/v1/streams/close", post(stream::close_all))
        .route("/__sim/v1/activity", post(stream::activity_now))
}

/// The document's standard error body.
pub(crate) fn error(
    status: StatusCode,
    code: &str,
    message: &str,
    details: Option<Value>,
) -> Response {
    let mut e = json!({"code": code, "message": message});
    if let Some(d) = details {
        e["details"] = d;
    }
    (status, axum::Json(json!({ "error": e }))).into_response()
}

pub(crate) fn bad_request(message: &str, field: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        message,
        Some(json!({ "field": field })),
    )
}

pub(crate) fn not_found(what: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        &format!("{what} not found"),
        None,
    )
}

pub(crate) fn forbidden(message: &str) -> Response {
    error(StatusCode::FORBIDDEN, "FORBIDDEN", message, None)
}

pub(crate) fn rfc3339(epoch: i64) -> String {
    // Civil date from days since 1970 (Howard Hinnant's algorithm), so no date crate is needed.
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Who is asking, as the v1 API sees it.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    /// The login account behind the bearer token, if a valid one was sent.
    pub account: Option<String>,
    /// The account's user id.
    pub user_id: Option<u64>,
}

impl Viewer {
    /// The user id of a viewer the route requires to be logged in (the gate has checked it).
    fn id(&self) -> u64 {
        self.user_id.unwrap_or_default()
    }
}

/// Why a bearer token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenProblem {
    Missing,
    Unknown,
    Expired,
}

impl TokenProblem {
    fn reason(self) -> &'static str {
        match self {
            TokenProblem::Missing => "missing_token",
            TokenProblem::Unknown => "invalid_token",
            TokenProblem::Expired => "token_expired",
        }
    }

    pub(crate) fn response(self) -> Response {
        let message = match self {
            TokenProblem::Missing => "Authentication required: Authorization: Bearer <token>",
            TokenProblem::Unknown => "the access token is not valid",
            TokenProblem::Expired => "the access token has expired: refresh it",
        };
        error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            message,
            Some(json!({"reason": self.reason()})),
        )
    }
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Counts the request in its tier's window, draws the simulator's faults, serves it if there is
/// room, adds the `X-RateLimit-*` headers and writes the audit log. A request with a bad token,
/// or without one on an endpoint that needs it, gets 401 and counts in no window.
pub(crate) async fn gate(
    sim: &Sim,
    peer: SocketAddr,
    headers: &HeaderMap,
    tier: Tier,
    serve: impl FnOnce(Viewer) -> Response,
) -> Response {
    let ip = crate::server::client_ip(sim, peer, headers);
    let token = if tier == Tier::Auth {
        Ok(None)
    } else {
        match bearer(headers) {
            None => Ok(None),
            Some(t) => sim.v1.account_for(t).map(Some),
        }
    };
    let account = match token {
        Ok(a) => a,
        Err(problem) => return refuse(sim, None, ip, problem),
    };
    let anonymous = account.is_none();
    if tier.per_hour(anonymous).is_none() {
        return refuse(sim, None, ip, TokenProblem::Missing);
    }
    let scope = match &account {
        Some(a) => format!("account:{a}"),
        None => format!("ip:{ip}"),
    };
    let usage = sim
        .windows
        .lock()
        .map(|mut w| w.admit_tier(&scope, tier, anonymous, Instant::now()))
        .ok();
    let (latency, fault) = sim
        .faults
        .lock()
        .map(|f| f.draw(crate::server::fault_roll(sim)))
        .unwrap_or((0, None));
    if latency > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
    }
    let now_unix = sim.unix_now();
    let reset_unix = usage.map_or(now_unix, |u| {
        now_unix + u.reset_in.as_secs_f64().ceil() as u64
    });
    let mut response = match (usage, fault) {
        (None, _) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SERVER_ERROR",
            "state poisoned",
            None,
        ),
        (Some(u), _) if !u.admitted => (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({"error": "Rate limit exceeded",
                "message": "You have exceeded the rate limit for this endpoint",
                "reset_at": rfc3339(reset_unix as i64)})),
        )
            .into_response(),
        (_, Some(Fault::ServerError(code))) => error(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "SERVER_ERROR",
            "Internal server error",
            None,
        ),
        (_, Some(Fault::InvalidJson)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"posts\": [{\"post_id\"",
        )
            .into_response(),
        (_, Some(Fault::Drop)) => crate::server::dropped_response(),
        (Some(_), None) => {
            let user_id = account.as_deref().map(|a| sim.account_user_id(a));
            serve(Viewer {
                account: account.clone(),
                user_id,
            })
        }
    };
    if let Some(u) = usage {
        for (name, value) in [
            ("x-ratelimit-limit", u.cap.to_string()),
            (
                "x-ratelimit-remaining",
                u.cap.saturating_sub(u.used).to_string(),
            ),
            ("x-ratelimit-reset", reset_unix.to_string()),
        ] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, v);
            }
        }
    }
    let bytes = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    sim.log(
        account,
        ip,
        &QueryType::V1 { tier, anonymous },
        response.status().as_u16(),
        bytes,
    );
    response
}

/// A 401, audited but counted in no window.
fn refuse(sim: &Sim, account: Option<String>, ip: String, problem: TokenProblem) -> Response {
    let response = problem.response();
    sim.log(
        account,
        ip,
        &QueryType::Uncounted,
        response.status().as_u16(),
        0,
    );
    response
}

/// `count` (default, max) and the offset a `cursor` names.
pub(crate) struct Page {
    pub count: usize,
    pub offset: usize,
}

impl Page {
    /// Whether item `i` of the whole listing is on this page (only those are rendered).
    pub(crate) fn shows(&self, i: usize) -> bool {
        (self.offset..self.offset + self.count).contains(&i)
    }
}

pub(crate) fn query(raw: &Option<String>) -> std::collections::HashMap<String, String> {
    serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).unwrap_or_default()
}

pub(crate) fn paging(raw: &Option<String>, default: usize, max: usize) -> Result<Page, Response> {
    let params = query(raw);
    let count = match params.get("count") {
        None => default,
        Some(c) => c
            .parse()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST",
                    &format!("count must be an integer from 1 to {max}"),
                    Some(json!({"field": "count", "max": max})),
                )
            })?,
    };
    let offset = match params.get("cursor").filter(|c| !c.is_empty()) {
        None => 0,
        Some(c) => decode_cursor(c).ok_or_else(|| bad_request("invalid cursor", "cursor"))?,
    };
    Ok(Page { count, offset })
}

/// Cursors are opaque to clients: an offset, wrapped so that nobody is tempted to compute one.
fn encode_cursor(offset: usize) -> String {
    format!("cur_{:x}", offset ^ 0x5a5a)
}

fn decode_cursor(cursor: &str) -> Option<usize> {
    let n = usize::from_str_radix(cursor.strip_prefix("cur_")?, 16).ok()?;
    Some(n ^ 0x5a5a)
}

/// One page in the document's shape: `{key: items, "next_cursor", "previous_cursor",
/// "has_more"}`, cut from everything the listing holds.
pub(crate) fn page_of(key: &str, all: Vec<Value>, page: &Page) -> Value {
    let total = all.len();
    let end = (page.offset + page.count).min(total);
    let items: Vec<Value> = all.into_iter().skip(page.offset).take(page.count).collect();
    let more = end < total;
    let previous = (page.offset > 0).then(|| encode_cursor(page.offset.saturating_sub(page.count)));
    let mut body = json!({
        "next_cursor": if more { json!(encode_cursor(end)) } else { Value::Null },
        "previous_cursor": previous,
        "has_more": more,
    });
    body[key] = Value::Array(items);
    body
}

pub(crate) fn ok(body: Value) -> Response {
    (StatusCode::OK, axum::Json(body)).into_response()
}

pub(crate) fn created(body: Value) -> Response {
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

/// A JSON request body, or the document's error naming what is wrong with it.
pub(crate) fn json_body(body: &Bytes) -> Result<Value, Response> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(bad_request("the body must be a JSON object", "body")),
        Err(e) => Err(bad_request(&format!("the body is not JSON: {e}"), "body")),
    }
}

pub(crate) fn base64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_base64_and_cursors_are_right() {
        assert_eq!(rfc3339(crate::data::EPOCH), "2026-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_704_675_600), "2024-01-08T01:00:00Z");
        assert_eq!(base64url(b"hello"), "aGVsbG8");
        for n in [0, 1, 20, 12_345] {
            assert_eq!(decode_cursor(&encode_cursor(n)), Some(n));
        }
        assert_eq!(decode_cursor("c20"), None);
    }

    #[test]
    fn a_page_says_where_it_is() {
        let all: Vec<Value> = (0..45).map(|n| json!(n)).collect();
        let first = page_of(
            "xs",
            all.clone(),
            &Page {
                count: 20,
                offset: 0,
            },
        );
        assert_eq!(first["xs"].as_array().map(Vec::len), Some(20));
        assert!(first["previous_cursor"].is_null());
        assert_eq!(first["has_more"], true);
        let last = page_of(
            "xs",
            all,
            &Page {
                count: 20,
                offset: 40,
            },
        );
        assert_eq!(last["xs"].as_array().map(Vec::len), Some(5));
        assert!(last["next_cursor"].is_null());
        assert_eq!(last["previous_cursor"], encode_cursor(20));
    }
}
