//! The app's API on i.instagram.com, served under `/mobile`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use super::shapes::*;
use super::*;
use crate::data::User;
use crate::windows::QueryType;

pub(super) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route(
            "/mobile/api/v1/highlights/{id}/highlights_tray/",
            get(mobile_highlights),
        )
        .route("/mobile/api/v1/users/{id}/info/", get(mobile_user_info))
        .route("/mobile/api/v1/feed/reels_media/", get(mobile_reels_media))
}

/// The iPad app's id, which every mobile request must carry.
pub const MOBILE_APP_ID: &str = "124024574287414";

/// Checks what Instagram's mobile API checks: the app id, a logged-in session (a `sessionid`
/// cookie or the `authorization: Bearer IGT:2:…` token that carries one), and the headers the app
/// derives from its cookies. `Ok` carries the account.
pub(super) fn mobile_guard(
    sim: &Sim,
    c: &Caller,
    headers: &HeaderMap,
) -> Result<String, Box<Response>> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("x-ig-app-id") != Some(MOBILE_APP_ID) {
        return Err(Box::new(fail(
            StatusCode::BAD_REQUEST,
            "useragent mismatch",
        )));
    }
    let Some(account) = c.account.clone() else {
        return Err(Box::new(json_response(
            StatusCode::FORBIDDEN,
            &json!({"message": "login_required", "logout_reason": 2, "status": "fail"}),
        )));
    };
    let expected = sim.account_user_id(&account).to_string();
    // The app names its user in `ig-u-ds-user-id`, derived from its cookies; a client that
    // authenticates with the bearer token carries the same id inside it.
    let named = header("ig-u-ds-user-id") == Some(expected.as_str())
        || c.bearer_user_id.as_deref() == Some(expected.as_str());
    if !named || header("x-mid").is_none() || header("x-ig-device-id").is_none() {
        return Err(Box::new(fail(
            StatusCode::BAD_REQUEST,
            "missing or mismatched device headers (ig-u-ds-user-id, x-mid, x-ig-device-id)",
        )));
    }
    Ok(account)
}

pub(super) fn with_ig_set(mut r: Response, sim: &Sim, account: &str) -> Response {
    let rur = format!("\"NAO,{},1790000000:01f7\"", sim.account_user_id(account));
    if let Ok(v) = HeaderValue::from_str(&rur) {
        r.headers_mut().insert("ig-set-ig-u-rur", v);
    }
    r
}

/// A mobile request: counted as `iphone`, checked by [`mobile_guard`], answered with `ig-set-*`.
pub(super) async fn mobile(
    sim: &Sim,
    peer: SocketAddr,
    headers: &HeaderMap,
    serve: impl FnOnce(&str) -> Response,
) -> Response {
    let c = caller(sim, peer, headers);
    handle(sim, &c, QueryType::Iphone, || {
        match mobile_guard(sim, &c, headers) {
            Err(refused) => *refused,
            Ok(account) => with_ig_set(serve(&account), sim, &account),
        }
    })
    .await
}

pub(super) async fn mobile_user_info(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    mobile(&sim, peer, &headers, |_| {
        let Some(u) = id.parse().ok().and_then(|id| sim.data.user_by_id(id)) else {
            return fail(StatusCode::NOT_FOUND, "User not found");
        };
        let body = json!({"user": {
            "pk": u.id, "pk_id": u.id.to_string(), "username": u.username, "full_name": u.full_name,
            "is_private": u.is_private, "is_verified": u.is_verified, "biography": u.biography,
            "profile_pic_url": u.profile_pic_url(), "media_count": u.post_count,
            "follower_count": u.followers.len(), "following_count": u.following.len()},
            "status": "ok"});
        json_response(StatusCode::OK, &body)
    })
    .await
}

pub(super) async fn mobile_reels_media(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = query_params(raw);
    mobile(&sim, peer, &headers, |_| {
        let mut reels = serde_json::Map::new();
        for id in params
            .get("reel_ids")
            .map(String::as_str)
            .unwrap_or("")
            .split(',')
        {
            if let Some(reel) = reel(&sim, id) {
                reels.insert(id.to_owned(), reel);
            }
        }
        let body = json!({"reels": reels, "status": "ok"});
        json_response(StatusCode::OK, &body)
    })
    .await
}

/// Highlights of a user: (highlight number, title, items).
pub(super) fn highlight_count(sim: &Sim, u: &User) -> u64 {
    crate::data::mix(sim.data.seed, 14, u64::from(u.index), 0) % 4
}

/// A story reel (`ID`: the user's current stories) or a highlight (`highlight:N`).
pub(super) fn reel(sim: &Sim, id: &str) -> Option<Value> {
    let (user_id, highlight) = match id.strip_prefix("highlight:") {
        Some(n) => {
            let n: u64 = n.parse().ok()?;
            (n / 10, Some(n % 10))
        }
        None => (id.parse().ok()?, None),
    };
    let u = sim.data.user_by_id(user_id)?;
    if u.is_private || highlight.is_some_and(|h| h >= highlight_count(sim, u)) {
        return None;
    }
    let (salt, count) = match highlight {
        None => (
            8,
            crate::data::mix(sim.data.seed, 8, u64::from(u.index), 0) % 4,
        ),
        Some(h) => (
            20 + h,
            1 + crate::data::mix(sim.data.seed, 15, u64::from(u.index), h) % 5,
        ),
    };
    let items: Vec<Value> = (0..count)
        .map(|k| {
            // Stories are from the last day before the data set's "now"; highlights are older.
            let taken_at = match highlight {
                None => crate::data::EPOCH - (k as i64 + 1) * 3600,
                Some(h) => crate::data::EPOCH - (h as i64 + 1) * 30 * 86_400 - k as i64 * 3600,
            };
            let video =
                crate::data::mix(sim.data.seed, salt, u64::from(u.index), k).is_multiple_of(3);
            let pk = (u.id * 100 + salt) * 100 + k;
            let mut item = json!({
                "pk": pk, "id": format!("{pk}_{}", u.id), "taken_at": taken_at,
                "media_type": if video { 2 } else { 1 },
                "image_versions2": {"candidates": [{"width": 1080, "height": 1920,
                    "url": format!("https://scontent.sim.instagram.test/v/t51/{pk}_story.jpg")}]},
            });
            if highlight.is_none() {
                item["expiring_at"] = json!(taken_at + 86_400);
            }
            if video {
                item["video_versions"] = json!([{"type": 101, "width": 720, "height": 1280,
                    "url": format!("https://scontent.sim.instagram.test/v/t50/{pk}_story.mp4")}]);
            }
            item
        })
        .collect();
    let mut reel = json!({"id": id, "user": user_summary(u), "items": items, "media_count": count});
    if highlight.is_none() {
        reel["expiring_at"] = json!(crate::data::EPOCH + 86_400 - 3600);
    }
    Some(reel)
}

pub(super) async fn mobile_highlights(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    mobile(&sim, peer, &headers, |_| {
        let Some(u) = id.parse().ok().and_then(|id| sim.data.user_by_id(id)) else {
            return fail(StatusCode::NOT_FOUND, "User not found");
        };
        const TITLES: [&str; 4] = ["Travels", "Field notes", "Studio", "Archive"];
        let tray: Vec<Value> = if u.is_private {
            Vec::new()
        } else {
            (0..highlight_count(&sim, u))
                .map(|h| {
                    let id = format!("highlight:{}", u.id * 10 + h);
                    let media_count = 1 + crate::data::mix(sim.data.seed, 15, u64::from(u.index), h) % 5;
                    json!({"id": id, "title": TITLES[h as usize], "media_count": media_count,
                        "cover_media": {"cropped_image_version": {"url":
                            format!("https://scontent.sim.instagram.test/v/t51/{}_{h}_cover.jpg", u.id)}}})
                })
                .collect()
        };
        json_response(StatusCode::OK, &json!({"tray": tray, "status": "ok"}))
    })
    .await
}
