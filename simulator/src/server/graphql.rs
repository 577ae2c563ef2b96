//! The web GraphQL endpoints: `query_hash` GETs and `doc_id` POSTs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use super::shapes::*;
use super::*;
use crate::windows::QueryType;

pub(super) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/graphql/query/", get(graphql_get))
        .route("/graphql/query", get(graphql_get).post(graphql_post))
}

pub(super) async fn graphql_get(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let c = caller(&sim, peer, &headers);
    let raw_query = raw.clone().unwrap_or_default();
    let params = query_params(raw);
    let Some(hash) = params.get("query_hash").cloned() else {
        return handle(&sim, &c, QueryType::Other, || {
            fail(StatusCode::BAD_REQUEST, "query_hash missing")
        })
        .await;
    };
    let logged_in = c.account.is_some();
    let key = format!("graphql|{logged_in}|{}", raw_query);
    handle_cached(&sim, &c, QueryType::QueryHash(hash.clone()), Some(&key), || {
        let vars: Value = match params.get("variables").map(|v| serde_json::from_str(v)) {
            Some(Ok(v @ Value::Object(_))) => v,
            _ => return fail(StatusCode::BAD_REQUEST, "variables must be a JSON object"),
        };
        let first = vars["first"].as_u64().unwrap_or(12);
        if first > MAX_PAGE {
            return fail(
                StatusCode::BAD_REQUEST,
                &format!("first must be at most {MAX_PAGE}"),
            );
        }
        let after = vars["after"].as_str();
        let id_of = |v: &Value| -> Option<u64> {
            v.as_str()
                .and_then(|s| s.parse().ok())
                .or_else(|| v.as_u64())
        };
        let cursor_start = |tag: &str, owner: u64| -> Option<u64> {
            match after {
                None | Some("") => Some(0),
                Some(cur) => decode_cursor(cur, tag, owner),
            }
        };
        match hash.as_str() {
            hashes::PROFILE_POSTS => profile_posts_page(&sim, &vars, first, after),
            hashes::COMMENTS => {
                let Some(p) = vars["shortcode"]
                    .as_str()
                    .and_then(|c| sim.data.post_by_shortcode(c))
                else {
                    return json_response(
                        StatusCode::OK,
                        &json!({"data": {"shortcode_media": null}, "status": "ok"}),
                    );
                };
                if sim.data.users[p.owner as usize].is_private {
                    return fail(StatusCode::FORBIDDEN, "Not authorized to view user");
                }
                let Some(start) = cursor_start("comments", p.id) else {
                    return fail(StatusCode::BAD_REQUEST, "invalid cursor");
                };
                let (s, e, info) = page(u64::from(p.comment_count), start, first, "comments", p.id);
                let edges: Vec<Value> = (s as u32..e as u32)
                    .filter_map(|i| sim.data.comment(&p, i))
                    .map(|cm| json!({"node": comment_node(&sim, &cm)}))
                    .collect();
                json_response(
                    StatusCode::OK,
                    &json!({"data": {"shortcode_media": {"edge_media_to_comment": {
                    "count": p.comment_count, "page_info": info, "edges": edges}}}, "status": "ok"}),
                )
            }
            hashes::FOLLOWERS | hashes::FOLLOWEES => {
                if !logged_in {
                    return login_redirect();
                }
                let Some(u) = id_of(&vars["id"]).and_then(|id| sim.data.user_by_id(id)) else {
                    return json_response(
                        StatusCode::OK,
                        &json!({"data": {"user": null}, "status": "ok"}),
                    );
                };
                if u.is_private {
                    return fail(StatusCode::FORBIDDEN, "Not authorized to view user");
                }
                let (list, edge, tag) = if hash == hashes::FOLLOWERS {
                    (&u.followers, "edge_followed_by", "followers")
                } else {
                    (&u.following, "edge_follow", "followees")
                };
                let Some(start) = cursor_start(tag, u.id) else {
                    return fail(StatusCode::BAD_REQUEST, "invalid cursor");
                };
                let (s, e, info) = page(list.len() as u64, start, first, tag, u.id);
                let edges: Vec<Value> = list[s as usize..e as usize]
                    .iter()
                    .map(|&i| json!({"node": user_summary(&sim.data.users[i as usize])}))
                    .collect();
                let mut user = json!({});
                user[edge] = json!({"count": list.len(), "page_info": info, "edges": edges});
                json_response(
                    StatusCode::OK,
                    &json!({"data": {"user": user}, "status": "ok"}),
                )
            }
            hashes::HASHTAG => {
                let tag = vars["tag_name"].as_str().unwrap_or("").to_lowercase();
                let posts = sim.data.hashtag_posts(&tag);
                let tag_key = tag
                    .bytes()
                    .fold(0u64, |acc, b| crate::data::mix(0, 11, acc, u64::from(b)));
                let Some(start) = cursor_start("tag", tag_key) else {
                    return fail(StatusCode::BAD_REQUEST, "invalid cursor");
                };
                let (s, e, info) = page(posts.len() as u64, start, first, "tag", tag_key);
                let node = |&(o, j): &(u32, u32)| {
                    sim.data.post(o, j).map(|p| json!({"node": post_node(&p, &sim.data)}))
                };
                let edges: Vec<Value> = posts[s as usize..e as usize].iter().filter_map(node).collect();
                // Top posts: the most liked of the newest 200, so the cost stays bounded.
                let mut recent: Vec<_> = posts.iter().take(200).filter_map(|&(o, j)| sim.data.post(o, j)).collect();
                recent.sort_by(|a, b| b.likes.cmp(&a.likes).then(a.id.cmp(&b.id)));
                let top: Vec<Value> = recent.iter().take(9).map(|p| json!({"node": post_node(p, &sim.data)})).collect();
                json_response(StatusCode::OK, &json!({"data": {"hashtag": {"name": tag,
                    "edge_hashtag_to_media": {"count": posts.len(), "page_info": info, "edges": edges},
                    "edge_hashtag_to_top_posts": {"edges": top}}}, "status": "ok"}))
            }
            hashes::TAGGED => {
                let Some(u) = id_of(&vars["id"]).and_then(|id| sim.data.user_by_id(id)) else {
                    return json_response(StatusCode::OK, &json!({"data": {"user": null}, "status": "ok"}));
                };
                let posts = sim.data.tagged_posts(u.index);
                let Some(start) = cursor_start("tagged", u.id) else {
                    return fail(StatusCode::BAD_REQUEST, "invalid cursor");
                };
                let (s, e, info) = page(posts.len() as u64, start, first, "tagged", u.id);
                let edges: Vec<Value> = posts[s as usize..e as usize]
                    .iter()
                    .filter_map(|&(o, j)| sim.data.post(o, j))
                    .map(|p| json!({"node": post_node(&p, &sim.data)}))
                    .collect();
                json_response(StatusCode::OK, &json!({"data": {"user": {"edge_user_to_photos_of_you": {
                    "count": posts.len(), "page_info": info, "edges": edges}}}, "status": "ok"}))
            }
            _ => fail(StatusCode::BAD_REQUEST, "unknown query_hash"),
        }
    })
    .await
}

pub(super) fn id_of(v: &Value) -> Option<u64> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_u64())
}

/// A profile's posts, for both the `query_hash` and the `doc_id` query.
pub(super) fn profile_posts_page(
    sim: &Sim,
    vars: &Value,
    first: u64,
    after: Option<&str>,
) -> Response {
    let cursor_start = |tag: &str, owner: u64| -> Option<u64> {
        match after {
            None | Some("") => Some(0),
            Some(cur) => decode_cursor(cur, tag, owner),
        }
    };
    let Some(u) = id_of(&vars["id"]).and_then(|id| sim.data.user_by_id(id)) else {
        return json_response(
            StatusCode::OK,
            &json!({"data": {"user": null}, "status": "ok"}),
        );
    };
    if u.is_private {
        return fail(StatusCode::FORBIDDEN, "Not authorized to view user");
    }
    let Some(start) = cursor_start("posts", u.id) else {
        return fail(StatusCode::BAD_REQUEST, "invalid cursor");
    };
    let (s, e, info) = page(u64::from(u.post_count), start, first, "posts", u.id);
    let edges: Vec<Value> = (s as u32..e as u32)
        .filter_map(|i| sim.data.post(u.index, i))
        .map(|p| json!({"node": post_node(&p, &sim.data)}))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"data": {"user": {"edge_owner_to_timeline_media": {
        "count": u.post_count, "page_info": info, "edges": edges}}}, "status": "ok"}),
    )
}

pub(super) async fn graphql_post(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let c = caller(&sim, peer, &headers);
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let Some(doc_id) = form.get("doc_id").cloned() else {
        return handle(&sim, &c, QueryType::Other, || {
            fail(StatusCode::BAD_REQUEST, "doc_id missing")
        })
        .await;
    };
    handle(&sim, &c, QueryType::DocId(doc_id.clone()), || {
        let vars: Value = match form.get("variables").map(|v| serde_json::from_str(v)) {
            Some(Ok(v @ Value::Object(_))) => v,
            _ => return fail(StatusCode::BAD_REQUEST, "variables must be a JSON object"),
        };
        let first = vars["first"].as_u64().unwrap_or(12);
        if first > MAX_PAGE {
            return fail(
                StatusCode::BAD_REQUEST,
                &format!("first must be at most {MAX_PAGE}"),
            );
        }
        match doc_id.as_str() {
            hashes::DOC_PROFILE_POSTS => {
                profile_posts_page(&sim, &vars, first, vars["after"].as_str())
            }
            _ => fail(StatusCode::BAD_REQUEST, "unknown doc_id"),
        }
    })
    .await
}
