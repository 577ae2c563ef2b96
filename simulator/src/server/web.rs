//! Instagram's REST pages on www: profile info, a post by shortcode.

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
use crate::windows::QueryType;

pub(super) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/api/v1/users/web_profile_info/", get(web_profile_info))
        .route("/p/{shortcode}/", get(post_by_shortcode))
}

pub(super) async fn web_profile_info(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let c = caller(&sim, peer, &headers);
    let key = format!("profile|{}", raw.as_deref().unwrap_or(""));
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
            .map(|p| json!({"node": post_node(&p, &sim.data)}))
            .collect();
        let mut user = user_summary(u);
        user["biography"] = json!(u.biography);
        user["profile_pic_url_hd"] = json!(u.profile_pic_url());
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
    let key = format!("post|{code}");
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
            .map(|cm| json!({"node": comment_node(&sim, &cm)}))
            .collect();
        let mut node = post_node(&p, &sim.data);
        node["edge_media_to_parent_comment"] =
            json!({"count": p.comment_count, "page_info": info, "edges": comments});
        json_response(
            StatusCode::OK,
            &json!({"graphql": {"shortcode_media": node}}),
        )
    })
    .await
}
