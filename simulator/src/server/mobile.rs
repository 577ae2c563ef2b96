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
use crate::cdn::{MediaItem, MediaUrls};
use crate::windows::QueryType;

pub(super) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route(
            "/mobile/api/v1/highlights/{id}/highlights_tray/",
            get(mobile_highlights),
        )
        .route("/mobile/api/v1/users/{id}/info/", get(mobile_user_info))
        .route("/mobile/api/v1/feed/reels_media/", get(mobile_reels_media))
        .route("/mobile/api/v1/tags/web_info/", get(tag_web_info))
        .route("/mobile/api/v1/media/{id}/info/", get(media_info))
        .route("/mobile/api/v1/media/{id}/comments/", get(media_comments))
        .route(
            "/mobile/api/v1/media/{id}/comments/{pk}/child_comments/",
            get(child_comments),
        )
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

/// A mobile request anyone may send (the app id is still checked): a logged-in caller goes
/// through [`mobile_guard`] as usual, an anonymous one is served without.
async fn mobile_open(
    sim: &Sim,
    peer: SocketAddr,
    headers: &HeaderMap,
    serve: impl FnOnce() -> Response,
) -> Response {
    let c = caller(sim, peer, headers);
    handle(sim, &c, QueryType::Iphone, || {
        if c.account.is_none() {
            return if headers.get("x-ig-app-id").and_then(|v| v.to_str().ok())
                == Some(MOBILE_APP_ID)
            {
                serve()
            } else {
                fail(StatusCode::BAD_REQUEST, "useragent mismatch")
            };
        }
        match mobile_guard(sim, &c, headers) {
            Err(refused) => *refused,
            Ok(account) => with_ig_set(serve(), sim, &account),
        }
    })
    .await
}

/// A hashtag (`data`, with its first `recent` and `top` sections), anonymous or logged in.
pub(super) async fn tag_web_info(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = query_params(raw);
    mobile_open(&sim, peer, &headers, || {
        let name = params
            .get("tag_name")
            .map(|n| n.to_lowercase())
            .unwrap_or_default();
        let max_id = params.get("max_id").map(String::as_str);
        match super::web::hashtag_node(&sim.data, &name, max_id, &sim.media_urls()) {
            Some(node) => json_response(StatusCode::OK, &json!({"data": node, "status": "ok"})),
            None => fail(StatusCode::NOT_FOUND, "Hashtag not found"),
        }
    })
    .await
}

/// A post by media id, in the app's media shape (`items[0]`).
pub(super) async fn media_info(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    mobile(&sim, peer, &headers, |_| match visible_post(&sim, &id) {
        Some(p) => json_response(
            StatusCode::OK,
            &json!({"items": [iphone_media(&p, &sim.data, &sim.media_urls())], "num_results": 1,
                "more_available": false, "status": "ok"}),
        ),
        None => fail(StatusCode::NOT_FOUND, "Media not found or unavailable"),
    })
    .await
}

fn visible_post(sim: &Sim, id: &str) -> Option<crate::data::Post> {
    // The app names media `<pk>` or `<pk>_<owner id>`.
    let pk = id.split('_').next()?.parse().ok()?;
    sim.data
        .post_by_id(pk)
        .filter(|p| !sim.data.users[p.owner as usize].is_private)
}

/// Comments on one page of the app's comment list (oldest first).
const COMMENTS_PAGE: u32 = 12;

/// A reply or a comment in the app's shape.
fn iphone_comment(
    pk: u64,
    user: &crate::data::User,
    text: &str,
    created_at: i64,
    likes: u64,
    urls: &MediaUrls,
) -> Value {
    json!({"pk": pk.to_string(), "id": pk.to_string(), "text": text, "created_at": created_at,
        "created_at_utc": created_at, "comment_like_count": likes, "type": 0,
        "user_id": user.id, "user": iphone_user(user, urls)})
}

fn iphone_replies(sim: &Sim, cm: &crate::data::Comment, urls: &MediaUrls) -> Vec<Value> {
    let to = &sim.data.users[cm.owner as usize];
    sim.data
        .replies(cm)
        .into_iter()
        .map(|(id, who, created_at, likes)| {
            iphone_comment(
                id,
                &sim.data.users[who as usize],
                &reply_text(to),
                created_at,
                likes,
                urls,
            )
        })
        .collect()
}

/// A post's comments, paged by `min_id` (`next_min_id`); each carries its reply count and, as the
/// app gets them, only its first reply as a preview: the rest come from `child_comments`.
pub(super) async fn media_comments(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = query_params(raw);
    mobile(&sim, peer, &headers, |_| {
        let Some(p) = visible_post(&sim, &id) else {
            return fail(StatusCode::NOT_FOUND, "Media not found or unavailable");
        };
        let start = match params.get("min_id").map(String::as_str) {
            None | Some("") => 0,
            Some(cursor) => match decode_cursor(cursor, "icomments", p.id) {
                Some(n) => u32::try_from(n).unwrap_or(u32::MAX).min(p.comment_count),
                None => return fail(StatusCode::BAD_REQUEST, "invalid min_id"),
            },
        };
        let end = start.saturating_add(COMMENTS_PAGE).min(p.comment_count);
        let urls = sim.media_urls();
        let comments: Vec<Value> = (start..end)
            .filter_map(|i| sim.data.comment(&p, i))
            .map(|cm| {
                let owner = &sim.data.users[cm.owner as usize];
                let replies = iphone_replies(&sim, &cm, &urls);
                let mut c = iphone_comment(cm.id, owner, &cm.text, cm.created_at, cm.likes, &urls);
                c["child_comment_count"] = json!(replies.len());
                c["preview_child_comments"] =
                    json!(replies.into_iter().take(1).collect::<Vec<_>>());
                c
            })
            .collect();
        let mut body = json!({"comments": comments, "comment_count": comment_total(&sim.data, &p),
            "caption": {"text": p.caption}, "status": "ok"});
        if end < p.comment_count {
            body["next_min_id"] = json!(encode_cursor("icomments", p.id, u64::from(end)));
            body["has_more_headload_comments"] = json!(true);
        }
        json_response(StatusCode::OK, &body)
    })
    .await
}

/// Every reply of one comment.
pub(super) async fn child_comments(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::extract::Path((id, pk)): axum::extract::Path<(String, String)>,
) -> Response {
    mobile(&sim, peer, &headers, |_| {
        let found = visible_post(&sim, &id).and_then(|p| {
            let pk: u64 = pk.parse().ok()?;
            let cm = sim
                .data
                .comment(&p, u32::try_from(pk.checked_sub(p.id * 1000)?).ok()?)?;
            (cm.id == pk).then_some(cm)
        });
        let Some(cm) = found else {
            return fail(StatusCode::NOT_FOUND, "Comment not found");
        };
        let replies = iphone_replies(&sim, &cm, &sim.media_urls());
        json_response(
            StatusCode::OK,
            &json!({"child_comment_count": replies.len(), "child_comments": replies,
                "has_more_tail_child_comments": false, "has_more_head_child_comments": false,
                "status": "ok"}),
        )
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
        let urls = sim.media_urls();
        let hd = urls.profile_picture_hd(u.id);
        let body = json!({"user": {
            "pk": u.id, "pk_id": u.id.to_string(), "username": u.username, "full_name": u.full_name,
            "is_private": u.is_private, "is_verified": u.is_verified, "biography": u.biography,
            "profile_pic_url": urls.profile_picture(u.id), "media_count": u.post_count,
            "follower_count": u.followers.len(), "following_count": u.following.len(),
            "hd_profile_pic_url_info": {"url": hd, "width": 1080, "height": 1080},
            "hd_profile_pic_versions": [{"url": hd, "width": 320, "height": 320}]},
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
        let urls = sim.media_urls();
        for id in params
            .get("reel_ids")
            .map(String::as_str)
            .unwrap_or("")
            .split(',')
        {
            if let Some(reel) = reel(&sim, id, &urls) {
                reels.insert(id.to_owned(), reel);
            }
        }
        let body = json!({"reels": reels, "status": "ok"});
        json_response(StatusCode::OK, &body)
    })
    .await
}

/// A story reel (`ID`: the user's current stories) or a highlight (`highlight:N`).
pub(super) fn reel(sim: &Sim, id: &str, urls: &MediaUrls) -> Option<Value> {
    let (user_id, highlight) = match id.strip_prefix("highlight:") {
        Some(n) => {
            let n: u64 = n.parse().ok()?;
            (n / 10, Some(n % 10))
        }
        None => (id.parse().ok()?, None),
    };
    let u = sim.data.user_by_id(user_id)?;
    let items = reel_items(&sim.data, u, highlight)?;
    let count = items.len();
    let items: Vec<Value> = items
        .iter()
        .map(|it| reel_item_iphone(it, u, urls))
        .collect();
    let mut reel =
        json!({"id": id, "user": user_summary(u, urls), "items": items, "media_count": count});
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
        let urls = sim.media_urls();
        let tray: Vec<Value> = if u.is_private {
            Vec::new()
        } else {
            (0..sim.data.highlight_count(u))
                .map(|h| {
                    let id = format!("highlight:{}", u.id * 10 + h);
                    let media_count = sim.data.highlight_items(u, h);
                    json!({"id": id, "title": TITLES[h as usize], "media_count": media_count,
                        "cover_media": {"cropped_image_version": {"url":
                            urls.url(&MediaItem::HighlightCover { user: u.id, highlight: h })}}})
                })
                .collect()
        };
        json_response(StatusCode::OK, &json!({"tray": tray, "status": "ok"}))
    })
    .await
}
