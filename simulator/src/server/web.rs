//! Instagram's pages on www: the HTML profile page with its embedded queries, profile info, a
//! post by shortcode, likers, the hashtag and location feeds, and top search.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use super::shapes::*;
use super::*;
use crate::cdn::{MediaItem, MediaUrls};
use crate::windows::QueryType;

pub(super) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/api/v1/users/web_profile_info/", get(web_profile_info))
        .route("/p/{shortcode}/", get(post_by_shortcode))
        .route("/{username}/", get(profile_page))
        .route("/api/v1/media/{id}/likers/", get(likers))
        .route("/explore/tags/{name}/", get(explore_tag))
        .route("/explore/locations/{id}/", get(explore_location))
        .route("/web/search/topsearch/", get(top_search))
}

/// JSON embedded in a page as Instagram embeds a query's result: a nested `__bbox.result.data`.
fn embedded(data: Value) -> String {
    let block = json!({"require": [["ScheduledServerJS", "handle", null, [{"__bbox": {"require": [
        ["RelayPrefetchedStreamCache", "next", [], ["adp_PolarisProfilePageContentQuery", {
            "__bbox": {"complete": true, "result": {"data": data, "extensions": {}}}}]]]}}]]]});
    // `</` cannot occur inside the script element.
    let text = block.to_string().replace("</", "<\\/");
    format!("<script type=\"application/json\" data-sjs>{text}</script>")
}

/// The profile page as a logged-out visitor gets it: two embedded queries, the profile's details
/// and (for a public profile) its first posts, both under `xig_user_by_username`.
pub(super) async fn profile_page(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::extract::Path(username): axum::extract::Path<String>,
) -> Response {
    let c = caller(&sim, peer, &headers);
    let urls = sim.media_urls();
    // Pages carry signed media URLs, so a rendered page is only good for its URLs' bucket.
    let key = format!("page|{}|{username}", urls.expires());
    handle_cached(&sim, &c, QueryType::Other, Some(&key), || {
        let Some(u) = sim.data.user_by_name(&username) else {
            return (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                "<!DOCTYPE html><html><head><title>Page not found</title></head></html>",
            )
                .into_response();
        };
        let mut details = profile_node(u, false, &urls);
        details["id"] = json!(page_id(u));
        let mut html = format!(
            "<!DOCTYPE html><html><head><title>{} (@{})</title>{}",
            u.full_name,
            u.username,
            embedded(json!({"xig_user_by_username": details}))
        );
        if !u.is_private {
            let timeline = super::graphql::timeline(&sim, u, 12, None, |p| {
                json!({"node": {"code": p.shortcode, "pk": p.id.to_string(),
                    "id": format!("{}_{}", p.id, u.id), "taken_at": p.taken_at}})
            });
            html.push_str(&embedded(json!({"xig_user_by_username": {
                "pk": u.id.to_string(), "id": page_id(u), "is_private": false,
                "polaris_ordered_timeline_connection": timeline}})));
        }
        html.push_str("</head><body></body></html>");
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response()
    })
    .await
}

/// Who liked a post (logged in only): `users[]`, as far as Instagram lists them.
pub(super) async fn likers(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let c = caller(&sim, peer, &headers);
    handle(&sim, &c, QueryType::Other, || {
        if c.account.is_none() {
            return login_redirect();
        }
        let urls = sim.media_urls();
        let post = id
            .parse()
            .ok()
            .and_then(|id| sim.data.post_by_id(id))
            .filter(|p| !sim.data.users[p.owner as usize].is_private);
        let Some(p) = post else {
            return fail(StatusCode::NOT_FOUND, "Media not found or unavailable");
        };
        let users: Vec<Value> = sim
            .data
            .likers(&p)
            .into_iter()
            .map(|i| iphone_user(&sim.data.users[i as usize], &urls))
            .collect();
        json_response(
            StatusCode::OK,
            &json!({"users": users, "user_count": users.len(), "status": "ok"}),
        )
    })
    .await
}

/// A hashtag's feed as sections: `data.recent` and `data.top`, paged by `max_id`.
pub(super) async fn explore_tag(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let c = caller(&sim, peer, &headers);
    let params = query_params(raw);
    handle(&sim, &c, QueryType::Other, || {
        let name = name.to_lowercase();
        let max_id = params.get("max_id").map(String::as_str);
        let Some(node) = hashtag_node(&sim.data, &name, max_id, &sim.media_urls()) else {
            return fail(StatusCode::NOT_FOUND, "Page not found");
        };
        json_response(StatusCode::OK, &json!({"data": node, "status": "ok"}))
    })
    .await
}

/// A hashtag with one page of its `recent` and `top` sections (from the start, or after
/// `max_id` for whichever of the two the cursor belongs to); `None` for an unknown tag.
pub(super) fn hashtag_node(
    data: &crate::DataSet,
    name: &str,
    max_id: Option<&str>,
    urls: &MediaUrls,
) -> Option<Value> {
    if !crate::data::TAGS.contains(&name) {
        return None;
    }
    let posts = data.hashtag_posts(name);
    let key = tag_key(name);
    let recent = section_page(data, posts, max_id, "trecent", key, urls)
        .or_else(|| section_page(data, posts, None, "trecent", key, urls))?;
    let top: Vec<(u32, u32)> = top_posts(data, posts)
        .iter()
        .map(|p| (p.owner, p.index))
        .collect();
    let top = section_page(data, &top, max_id, "ttop", key, urls)
        .or_else(|| section_page(data, &top, None, "ttop", key, urls))?;
    Some(json!({
        "id": (17_843_000_000_000_000 + key % 1_000_000_000).to_string(), "name": name,
        "media_count": posts.len(),
        "profile_pic_url": urls.url(&MediaItem::HashtagPicture { tag: name.to_owned() }),
        "is_following": false, "allow_following": true,
        "description": null, "recent": recent, "top": top,
    }))
}

/// A location's feed (logged in only): `native_location_data.{location_info, recent}`.
pub(super) async fn explore_location(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let c = caller(&sim, peer, &headers);
    let params = query_params(raw);
    handle(&sim, &c, QueryType::Other, || {
        if c.account.is_none() {
            return login_redirect();
        }
        let Some(place) = id.parse().ok().and_then(crate::data::place_by_id) else {
            return fail(StatusCode::NOT_FOUND, "Page not found");
        };
        let posts = sim.data.location_posts(&place);
        let max_id = params.get("max_id").map(String::as_str);
        let urls = sim.media_urls();
        let Some(recent) = section_page(&sim.data, posts, max_id, "location", place.id, &urls)
        else {
            return fail(StatusCode::BAD_REQUEST, "invalid max_id");
        };
        json_response(
            StatusCode::OK,
            &json!({"native_location_data": {
                "location_info": {"location_id": place.id.to_string(), "name": place.name,
                    "slug": place.slug(), "has_public_page": true, "lat": place.lat,
                    "lng": place.lng, "media_count": posts.len()},
                "recent": recent}, "status": "ok"}),
        )
    })
    .await
}

/// Top search: users whose name starts with the query (at most 50), hashtags and places that
/// contain it.
pub(super) async fn top_search(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let c = caller(&sim, peer, &headers);
    let params = query_params(raw);
    handle(&sim, &c, QueryType::Other, || {
        let query = params
            .get("query")
            .map(|q| q.trim().to_lowercase())
            .unwrap_or_default();
        let urls = sim.media_urls();
        if query.is_empty() {
            return json_response(
                StatusCode::OK,
                &json!({"users": [], "places": [], "hashtags": [], "status": "ok"}),
            );
        }
        let users: Vec<Value> = sim
            .data
            .users
            .iter()
            .filter(|u| u.username.starts_with(&query))
            .take(50)
            .enumerate()
            .map(|(i, u)| json!({"position": i, "user": iphone_user(u, &urls)}))
            .collect();
        let hashtags: Vec<Value> = crate::data::TAGS
            .iter()
            .filter(|t| t.contains(query.as_str()))
            .enumerate()
            .map(|(i, t)| {
                json!({"position": i, "hashtag": {"name": t,
                "id": (17_843_000_000_000_000 + tag_key(t) % 1_000_000_000).to_string(),
                "media_count": sim.data.hashtag_posts(t).len()}})
            })
            .collect();
        let places: Vec<Value> = crate::data::places()
            .filter(|p| p.name.to_lowercase().contains(query.as_str()))
            .enumerate()
            .map(|(i, p)| {
                json!({"position": i, "place": {"title": p.name, "slug": p.slug(),
                "location": {"pk": p.id.to_string(), "name": p.name, "lat": p.lat, "lng": p.lng}}})
            })
            .collect();
        json_response(
            StatusCode::OK,
            &json!({"users": users, "places": places, "hashtags": hashtags, "status": "ok"}),
        )
    })
    .await
}

pub(super) async fn web_profile_info(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let c = caller(&sim, peer, &headers);
    let urls = sim.media_urls();
    let key = format!(
        "profile|{}|{}",
        urls.expires(),
        raw.as_deref().unwrap_or("")
    );
    let params = query_params(raw);
    handle_cached(&sim, &c, QueryType::Other, Some(&key), || {
        let Some(u) = params
            .get("username")
            .and_then(|n| sim.data.user_by_name(n))
        else {
            return fail(StatusCode::NOT_FOUND, "User not found");
        };
        let visible = !u.is_private;
        let (_, end, info) = page(
            u64::from(u.post_count),
            0,
            if visible { 12 } else { 0 },
            "posts",
            u.id,
        );
        let edges: Vec<Value> = (0..end as u32)
            .filter_map(|i| sim.data.post(u.index, i))
            .map(|p| json!({"node": post_node(&p, &sim.data, &urls)}))
            .collect();
        let mut user = user_summary(u, &urls);
        user["biography"] = json!(u.biography);
        user["profile_pic_url_hd"] = json!(urls.profile_picture(u.id));
        user["edge_followed_by"] = json!({"count": u.followers.len()});
        user["edge_follow"] = json!({"count": u.following.len()});
        user["followed_by_viewer"] = json!(false);
        user["edge_owner_to_timeline_media"] = json!({
            "count": u.post_count,
            "page_info": if visible { info } else { json!({"has_next_page": false, "end_cursor": null}) },
            "edges": edges,
        });
        json_response(
            StatusCode::OK,
            &json!({"data": {"user": user}, "status": "ok"}),
        )
    })
    .await
}

/// A post by its shortcode, with its first comments (`/p/{shortcode}/?__a=1&__d=dis`).
pub(super) async fn post_by_shortcode(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::extract::Path(code): axum::extract::Path<String>,
) -> Response {
    let c = caller(&sim, peer, &headers);
    let urls = sim.media_urls();
    let key = format!("post|{}|{code}", urls.expires());
    handle_cached(&sim, &c, QueryType::Other, Some(&key), || {
        let Some(p) = sim.data.post_by_shortcode(&code) else {
            return fail(StatusCode::NOT_FOUND, "Post not found");
        };
        if sim.data.users[p.owner as usize].is_private {
            return fail(StatusCode::FORBIDDEN, "Not authorized to view user");
        }
        let (_, end, info) = page(u64::from(p.comment_count), 0, 24, "comments", p.id);
        let comments: Vec<Value> = (0..end as u32)
            .filter_map(|i| sim.data.comment(&p, i))
            .map(|cm| json!({"node": comment_node(&sim, &cm, &urls)}))
            .collect();
        let mut node = post_node(&p, &sim.data, &urls);
        node["edge_media_to_parent_comment"] =
            json!({"count": p.comment_count, "page_info": info, "edges": comments});
        json_response(
            StatusCode::OK,
            &json!({"graphql": {"shortcode_media": node}}),
        )
    })
    .await
}
