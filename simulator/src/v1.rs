//! An Instagram-style v1 REST API (docs/simulator.md, "The v1 REST API"): JWT-style login, users,
//! their posts and followers, user search; `count`/`cursor` pagination; `X-RateLimit-*` headers on
//! every answer; errors as `{"error": {"code", "message", "details"}}`, and a 429 body with
//! `reset_at`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::cdn::{MediaItem, MediaUrls};
use crate::data::{EPOCH, Post, PostType, User, mix};
use crate::server::Sim;
use crate::windows::QueryType;

/// Requests per token (or per IP before login) in one window: the seed's "feed requests" tier.
pub const REQUESTS_PER_WINDOW: usize = 200;

/// Tokens handed out by `POST /api/v1/auth/login`, and the per-caller windows.
pub struct V1State {
    tokens: Mutex<HashMap<String, String>>,
    windows: Mutex<HashMap<String, VecDeque<Instant>>>,
    window: Duration,
}

impl V1State {
    pub fn new(time_scale: f64) -> Self {
        Self {
            tokens: Mutex::new(HashMap::new()),
            windows: Mutex::new(HashMap::new()),
            window: Duration::from_secs_f64(3600.0 * time_scale),
        }
    }
}

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/users/{user_id}", get(user))
        .route("/api/v1/users/{user_id}/posts", get(user_posts))
        .route("/api/v1/users/{user_id}/followers", get(followers))
        .route("/api/v1/search/users", get(search_users))
}

fn error(status: StatusCode, code: &str, message: &str, details: Option<Value>) -> Response {
    let mut e = json!({"code": code, "message": message});
    if let Some(d) = details {
        e["details"] = d;
    }
    (status, axum::Json(json!({ "error": e }))).into_response()
}

fn rfc3339(epoch: i64) -> String {
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

/// Counts the request against its caller's window, serves it if there is room, adds the
/// `X-RateLimit-*` headers, and writes the audit log.
async fn limited(
    sim: &Sim,
    peer: SocketAddr,
    headers: &HeaderMap,
    needs_token: bool,
    serve: impl FnOnce(Option<&str>) -> Response,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let account = token.and_then(|t| sim.v1.tokens.lock().ok()?.get(t).cloned());
    let caller_key = match &account {
        Some(a) => format!("v1:account:{a}"),
        None => format!("v1:ip:{}", peer.ip()),
    };
    let now = Instant::now();
    let window = sim.v1.window;
    let (remaining, reset_in, admitted) = {
        let Ok(mut windows) = sim.v1.windows.lock() else {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "SERVER_ERROR",
                "state poisoned",
                None,
            );
        };
        let seen = windows.entry(caller_key).or_default();
        while seen
            .front()
            .is_some_and(|&t| now.duration_since(t) >= window)
        {
            seen.pop_front();
        }
        let admitted = seen.len() < REQUESTS_PER_WINDOW;
        if admitted {
            seen.push_back(now);
        }
        let reset_in = seen
            .front()
            .map(|&t| window.saturating_sub(now.duration_since(t)))
            .unwrap_or(window);
        (REQUESTS_PER_WINDOW - seen.len(), reset_in, admitted)
    };
    let reset_epoch = EPOCH + sim.elapsed().as_secs() as i64 + reset_in.as_secs() as i64 + 1;
    let mut response = if !admitted {
        (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({"error": "Rate limit exceeded",
                "message": "You have exceeded the rate limit for this endpoint",
                "reset_at": rfc3339(reset_epoch)})),
        )
            .into_response()
    } else if needs_token && account.is_none() {
        error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "Authentication required: Authorization: Bearer <token>",
            None,
        )
    } else {
        serve(account.as_deref())
    };
    for (name, value) in [
        ("x-ratelimit-limit", REQUESTS_PER_WINDOW.to_string()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-reset", reset_epoch.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, v);
        }
    }
    sim.log(
        account,
        peer.ip().to_string(),
        &QueryType::Other,
        response.status().as_u16(),
        0,
    );
    response
}

async fn login(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    limited(&sim, peer, &headers, false, |_| {
        let Ok(req) = serde_json::from_slice::<Value>(&body) else {
            return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "body must be JSON", None);
        };
        let (Some(username), Some(password)) = (req["username"].as_str(), req["password"].as_str())
        else {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "username and password are required",
                Some(json!({"field": if req["username"].is_string() { "password" } else { "username" }})),
            );
        };
        if !sim.check_password(username, password) {
            return error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "invalid username or password", None);
        }
        let user_id = sim.account_user_id(username);
        let claims = format!("{{\"sub\":\"{user_id}\",\"username\":\"{username}\",\"exp\":{}}}", EPOCH + 3600);
        let b64 = |s: &str| base64url(s.as_bytes());
        let token = format!(
            "{}.{}.{:016x}",
            b64("{\"alg\":\"HS256\",\"typ\":\"JWT\"}"),
            b64(&claims),
            mix(sim.data.seed, 31, user_id, sim.elapsed().as_nanos() as u64)
        );
        if let Ok(mut tokens) = sim.v1.tokens.lock() {
            tokens.insert(token.clone(), username.to_owned());
        }
        (
            StatusCode::OK,
            axum::Json(json!({"access_token": token,
                "refresh_token": format!("{:032x}", mix(sim.data.seed, 32, user_id, 0)),
                "expires_in": 3600,
                "user": {"user_id": user_id, "username": username}})),
        )
            .into_response()
    })
    .await
}

fn base64url(bytes: &[u8]) -> String {
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

fn v1_user(u: &User, urls: &MediaUrls) -> Value {
    json!({"user_id": u.id.to_string(), "username": u.username, "full_name": u.full_name,
           "profile_image_url": urls.profile_picture(u.id), "is_private": u.is_private,
           "is_verified": u.is_verified})
}

/// The CDN item behind medium `k` of a post: a sidecar's children, else the one picture or video.
fn v1_media_item(p: &Post, k: usize) -> MediaItem {
    match p.kind {
        PostType::Sidecar(_) => MediaItem::CarouselImage {
            post: p.id,
            child: u8::try_from(k).unwrap_or(u8::MAX),
        },
        PostType::Video => MediaItem::PostVideo { post: p.id },
        PostType::Image => MediaItem::PostImage { post: p.id },
    }
}

fn v1_post(p: &Post, sim: &Sim, urls: &MediaUrls) -> Value {
    let owner = &sim.data.users[p.owner as usize];
    let media_count = match p.kind {
        PostType::Sidecar(n) => usize::from(n),
        _ => 1,
    };
    json!({
        "post_id": p.id.to_string(),
        "user": v1_user(owner, urls),
        "caption": p.caption,
        "media": (0..media_count).map(|k| json!({"media_id": format!("media_{}_{k}", p.id),
            "type": if p.kind == PostType::Video { "video" } else { "photo" },
            "url": urls.url(&v1_media_item(p, k)),
            "width": 1080, "height": 1080})).collect::<Vec<_>>(),
        "location": p.location.map(|name| json!({"location_id": name.len() * 1000 + 7, "name": name})),
        "hashtags": p.caption.split_whitespace().filter_map(|w| w.strip_prefix('#')).collect::<Vec<_>>(),
        "user_tags": p.tagged.iter().map(|&t| json!({"user_id": sim.data.users[t as usize].id.to_string(),
            "username": sim.data.users[t as usize].username})).collect::<Vec<_>>(),
        "created_at": rfc3339(p.taken_at),
        "likes_count": p.likes,
        "comments_count": p.comment_count,
    })
}

/// `count` (default, max) and the offset in `cursor` ("c" + offset).
fn paging(raw: &Option<String>, default: u64, max: u64) -> Result<(u64, u64), Box<Response>> {
    let params: HashMap<String, String> =
        serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).unwrap_or_default();
    let count = match params.get("count") {
        None => default,
        Some(c) => c
            .parse()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                Box::new(error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST",
                    &format!("count must be an integer from 1 to {max}"),
                    Some(json!({"field": "count"})),
                ))
            })?,
    };
    let offset = match params.get("cursor") {
        None => 0,
        Some(c) => c
            .strip_prefix('c')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                Box::new(error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST",
                    "invalid cursor",
                    Some(json!({"field": "cursor"})),
                ))
            })?,
    };
    Ok((count, offset))
}

fn find_user<'a>(sim: &'a Sim, id: &str) -> Result<&'a User, Box<Response>> {
    id.parse()
        .ok()
        .and_then(|id| sim.data.user_by_id(id))
        .ok_or_else(|| {
            Box::new(error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "user not found",
                None,
            ))
        })
}

async fn user(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    limited(&sim, peer, &headers, true, |_| match find_user(&sim, &id) {
        Err(r) => *r,
        Ok(u) => {
            let mut body = v1_user(u, &sim.media_urls());
            body["bio"] = json!(u.biography);
            body["followers_count"] = json!(u.followers.len());
            body["following_count"] = json!(u.following.len());
            body["posts_count"] = json!(u.post_count);
            (StatusCode::OK, axum::Json(body)).into_response()
        }
    })
    .await
}

/// One page in the seed's shape: `{key: items, "next_cursor", "has_more"}`.
fn page_response(key: &str, items: Vec<Value>, total: u64, offset: u64, count: u64) -> Response {
    let end = (offset + count).min(total);
    let more = end < total;
    let mut body = json!({"next_cursor": if more { json!(format!("c{end}")) } else { Value::Null },
                          "has_more": more});
    body[key] = Value::Array(items);
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn user_posts(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    limited(&sim, peer, &headers, true, |_| {
        let u = match find_user(&sim, &id) {
            Ok(u) => u,
            Err(r) => return *r,
        };
        if u.is_private {
            return error(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                "this account is private",
                None,
            );
        }
        let (count, offset) = match paging(&raw, 20, 50) {
            Ok(p) => p,
            Err(r) => return *r,
        };
        let total = u64::from(u.post_count);
        let urls = sim.media_urls();
        let posts: Vec<Value> = (offset..(offset + count).min(total))
            .filter_map(|i| sim.data.post(u.index, i as u32))
            .map(|p| v1_post(&p, &sim, &urls))
            .collect();
        page_response("posts", posts, total, offset, count)
    })
    .await
}

async fn followers(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    limited(&sim, peer, &headers, true, |_| {
        let u = match find_user(&sim, &id) {
            Ok(u) => u,
            Err(r) => return *r,
        };
        let (count, offset) = match paging(&raw, 20, 100) {
            Ok(p) => p,
            Err(r) => return *r,
        };
        let total = u.followers.len() as u64;
        let urls = sim.media_urls();
        let users: Vec<Value> = u
            .followers
            .iter()
            .skip(offset as usize)
            .take(count as usize)
            .map(|&f| {
                let mut v = v1_user(&sim.data.users[f as usize], &urls);
                v["following"] = json!(false);
                v
            })
            .collect();
        page_response("users", users, total, offset, count)
    })
    .await
}

async fn search_users(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    limited(&sim, peer, &headers, true, |_| {
        let params: HashMap<String, String> =
            serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).unwrap_or_default();
        let q = params
            .get("q")
            .map(|q| q.to_lowercase())
            .unwrap_or_default();
        if q.is_empty() || q.len() > 100 {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "q must be 1 to 100 characters",
                Some(json!({"field": "q"})),
            );
        }
        let (count, offset) = match paging(&raw, 20, 50) {
            Ok(p) => p,
            Err(r) => return *r,
        };
        let matches: Vec<&User> = sim
            .data
            .users
            .iter()
            .filter(|u| u.username.contains(&q))
            .collect();
        let total = matches.len() as u64;
        let urls = sim.media_urls();
        let users: Vec<Value> = matches
            .iter()
            .skip(offset as usize)
            .take(count as usize)
            .map(|u| v1_user(u, &urls))
            .collect();
        page_response("users", users, total, offset, count)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_base64_are_right() {
        assert_eq!(rfc3339(EPOCH), "2026-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_704_675_600), "2024-01-08T01:00:00Z");
        assert_eq!(base64url(b"hello"), "aGVsbG8");
    }
}
