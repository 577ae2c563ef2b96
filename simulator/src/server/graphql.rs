//! The web GraphQL endpoints: `query_hash` GETs and `doc_id` POSTs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::shapes::*;
use super::*;
use crate::cdn::{MediaItem, MediaUrls};
use crate::windows::QueryType;

pub(super) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/graphql/query/", get(graphql_get))
        .route("/graphql/query", get(graphql_get).post(graphql_post))
        .route("/api/graphql", post(api_graphql))
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
    // The viewer's own profile differs per account; every other answer only per logged-in state.
    let urls = sim.media_urls();
    let key = (hash != hashes::OWN_PROFILE)
        .then(|| format!("graphql|{logged_in}|{}|{raw_query}", urls.expires()));
    handle_cached(&sim, &c, QueryType::QueryHash(hash.clone()), key.as_deref(), || {
        let (vars, first) = match page_variables(params.get("variables")) {
            Ok(page) => page,
            Err(refused) => return *refused,
        };
        let after = vars["after"].as_str();
        let cursor_start = |tag: &str, owner: u64| -> Option<u64> {
            match after {
                None | Some("") => Some(0),
                Some(cur) => decode_cursor(cur, tag, owner),
            }
        };
        match hash.as_str() {
            hashes::PROFILE_POSTS => profile_posts_page(&sim, &vars, first, after, &urls),
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
                    .map(|cm| json!({"node": comment_node(&sim, &cm, &urls)}))
                    .collect();
                // Instagram names the thread `edge_media_to_parent_comment` (what Instaloader 4.16
                // reads); older clients read `edge_media_to_comment`. Both carry the same page.
                let thread = json!({"count": p.comment_count, "page_info": info, "edges": edges});
                json_response(
                    StatusCode::OK,
                    &json!({"data": {"shortcode_media": {"edge_media_to_comment": thread.clone(),
                        "edge_media_to_parent_comment": thread}}, "status": "ok"}),
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
                    .map(|&i| json!({"node": user_summary(&sim.data.users[i as usize], &urls)}))
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
                    sim.data.post(o, j).map(|p| json!({"node": post_node(&p, &sim.data, &urls)}))
                };
                let edges: Vec<Value> = posts[s as usize..e as usize].iter().filter_map(node).collect();
                // Top posts: the most liked of the newest 200, so the cost stays bounded.
                let mut recent: Vec<_> = posts.iter().take(200).filter_map(|&(o, j)| sim.data.post(o, j)).collect();
                recent.sort_by(|a, b| b.likes.cmp(&a.likes).then(a.id.cmp(&b.id)));
                let top: Vec<Value> = recent.iter().take(9).map(|p| json!({"node": post_node(p, &sim.data, &urls)})).collect();
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
                    .map(|p| json!({"node": post_node(&p, &sim.data, &urls)}))
                    .collect();
                json_response(StatusCode::OK, &json!({"data": {"user": {"edge_user_to_photos_of_you": {
                    "count": posts.len(), "page_info": info, "edges": edges}}}, "status": "ok"}))
            }
            hashes::OWN_PROFILE => {
                let user = c.account.as_deref().map(|a| {
                    let id = sim.account_user_id(a);
                    json!({"id": id.to_string(), "username": a, "full_name": a,
                        "profile_pic_url": urls.profile_picture(id),
                        "is_private": false, "is_verified": false})
                });
                json_response(StatusCode::OK, &json!({"data": {"user": user}, "status": "ok"}))
            }
            hashes::COMMENT_REPLIES => comment_replies(&sim, &vars, first, after, &urls),
            hashes::STORY_TRAY | hashes::STORIES | hashes::HIGHLIGHTS | hashes::HIGHLIGHT_ITEMS => {
                if !logged_in {
                    return login_redirect();
                }
                reels_query(&sim, &hash, &vars, &urls)
            }
            _ => fail(StatusCode::BAD_REQUEST, "unknown query_hash"),
        }
    })
    .await
}

/// A GraphQL query's `variables` (a JSON object) and its page length (`first`, 12 when absent),
/// or the 400 Instagram answers for either being wrong.
fn page_variables(variables: Option<&String>) -> Result<(Value, u64), Box<Response>> {
    let vars: Value = match variables.map(|v| serde_json::from_str(v)) {
        Some(Ok(v @ Value::Object(_))) => v,
        _ => {
            return Err(Box::new(fail(
                StatusCode::BAD_REQUEST,
                "variables must be a JSON object",
            )));
        }
    };
    let first = vars["first"].as_u64().unwrap_or(12);
    if first > MAX_PAGE {
        return Err(Box::new(fail(
            StatusCode::BAD_REQUEST,
            &format!("first must be at most {MAX_PAGE}"),
        )));
    }
    Ok((vars, first))
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
    urls: &MediaUrls,
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
        .map(|p| json!({"node": post_node(&p, &sim.data, urls)}))
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
    doc_query(&sim, peer, &headers, &body, false).await
}

/// The web app's own GraphQL endpoint: doc_id queries sent with the start page's tokens.
pub(super) async fn api_graphql(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    doc_query(&sim, peer, &headers, &body, true).await
}

/// A doc_id query on `graphql/query` or (`web_api`) `api/graphql`; every doc_id is served on
/// both, and counted under its doc_id whichever endpoint it came to.
async fn doc_query(
    sim: &Sim,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: &Bytes,
    web_api: bool,
) -> Response {
    let c = caller(sim, peer, headers);
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    let Some(doc_id) = form.get("doc_id").cloned() else {
        return handle(sim, &c, QueryType::Other, || {
            fail(StatusCode::BAD_REQUEST, "doc_id missing")
        })
        .await;
    };
    handle(sim, &c, QueryType::DocId(doc_id.clone()), || {
        let urls = sim.media_urls();
        // The web app sends the start page's tokens; a logged-in one also sends fb_dtsg.
        let token = |k: &str| form.get(k).is_some_and(|v| !v.is_empty());
        if web_api && (!token("lsd") || (c.account.is_some() && !token("fb_dtsg"))) {
            return fail(StatusCode::BAD_REQUEST, "missing lsd or fb_dtsg token");
        }
        let (vars, first) = match page_variables(form.get("variables")) {
            Ok(page) => page,
            Err(refused) => return *refused,
        };
        let after = vars["after"].as_str();
        let data = match doc_id.as_str() {
            hashes::DOC_PROFILE_POSTS => {
                return profile_posts_page(sim, &vars, first, after, &urls);
            }
            hashes::DOC_PROFILE => {
                let user = id_of(&vars["id"])
                    .and_then(|id| sim.data.user_by_id(id))
                    .map(|u| profile_node(u, c.account.is_some(), &urls));
                json!({"user": user})
            }
            hashes::DOC_POST => {
                // A private owner's posts are hidden: the simulator's accounts follow no one.
                let items: Vec<Value> = vars["shortcode"]
                    .as_str()
                    .and_then(|code| sim.data.post_by_shortcode(code))
                    .filter(|p| !sim.data.users[p.owner as usize].is_private)
                    .map(|p| iphone_media(&p, &sim.data, &urls))
                    .into_iter()
                    .collect();
                json!({"xdt_api__v1__media__shortcode__web_info": {"items": items}})
            }
            hashes::DOC_TIMELINE => {
                let user = vars["username"]
                    .as_str()
                    .and_then(|n| sim.data.user_by_name(&n.to_lowercase()));
                let Some(u) = user else {
                    return fail(StatusCode::NOT_FOUND, "User not found");
                };
                let Some(conn) = timeline(
                    sim,
                    u,
                    first,
                    after,
                    |p| json!({"node": iphone_media(p, &sim.data, &urls), "cursor": p.id.to_string()}),
                ) else {
                    return fail(StatusCode::BAD_REQUEST, "invalid cursor");
                };
                json!({"xdt_api__v1__feed__user_timeline_graphql_connection": conn})
            }
            hashes::DOC_TIMELINE_ANONYMOUS => {
                let Some(u) = user_by_page_id(&sim.data, &vars["id"]) else {
                    return fail(StatusCode::NOT_FOUND, "User not found");
                };
                let Some(conn) =
                    timeline(sim, u, first, after, |p| json!({"node": timeline_stub(p)}))
                else {
                    return fail(StatusCode::BAD_REQUEST, "invalid cursor");
                };
                json!({"node": {"__typename": "XDTUserDict", "id": page_id(u),
                    "polaris_ordered_timeline_connection": conn}})
            }
            hashes::DOC_REELS | hashes::DOC_REELS_PLAYS => {
                let user = vars["data"]["target_user_id"]
                    .as_str()
                    .and_then(|id| id.parse().ok())
                    .and_then(|id| sim.data.user_by_id(id));
                let Some(u) = user else {
                    return fail(StatusCode::NOT_FOUND, "User not found");
                };
                let page_size = vars["data"]["page_size"]
                    .as_u64()
                    .unwrap_or(12)
                    .min(MAX_PAGE);
                let Some(conn) = reels_page(sim, u, page_size, after) else {
                    return fail(StatusCode::BAD_REQUEST, "invalid cursor");
                };
                json!({"xdt_api__v1__clips__user__connection_v2": conn})
            }
            _ => return fail(StatusCode::BAD_REQUEST, "unknown doc_id"),
        };
        // The web app's endpoint answers without a `status`, as Instagram's does.
        let body = if web_api {
            json!({"data": data, "extensions": {"is_final": true}})
        } else {
            json!({"data": data, "status": "ok"})
        };
        json_response(StatusCode::OK, &body)
    })
    .await
}

/// A post as the logged-out timeline lists it: little more than its code.
fn timeline_stub(p: &crate::data::Post) -> Value {
    json!({"__typename": "XDTMediaDict", "id": p.id.to_string(), "pk": p.id.to_string(),
        "code": p.shortcode, "taken_at": p.taken_at})
}

/// One page of a user's posts as a connection (`edges`, `page_info`), with the posts' cursors;
/// a private profile shows none, as Instagram answers a viewer who does not follow it. `None` on
/// a cursor that is not this user's.
pub(super) fn timeline(
    sim: &Sim,
    u: &crate::data::User,
    first: u64,
    after: Option<&str>,
    node: impl Fn(&crate::data::Post) -> Value,
) -> Option<Value> {
    let start = match after {
        None | Some("") => 0,
        Some(cur) => decode_cursor(cur, "posts", u.id)?,
    };
    let total = if u.is_private {
        0
    } else {
        u64::from(u.post_count)
    };
    let (s, e, mut info) = page(total, start, first, "posts", u.id);
    let edges: Vec<Value> = (s as u32..e as u32)
        .filter_map(|i| sim.data.post(u.index, i))
        .map(|p| node(&p))
        .collect();
    info["has_previous_page"] = json!(s > 0);
    info["start_cursor"] = json!(null);
    Some(json!({"edges": edges, "page_info": info}))
}

/// One page of a user's reels: the data set's videos, newest first.
fn reels_page(sim: &Sim, u: &crate::data::User, first: u64, after: Option<&str>) -> Option<Value> {
    let videos: Vec<crate::data::Post> = if u.is_private {
        Vec::new()
    } else {
        (0..u.post_count)
            .filter_map(|i| sim.data.post(u.index, i))
            .filter(|p| p.kind == crate::data::PostType::Video)
            .collect()
    };
    let start = match after {
        None | Some("") => 0,
        Some(cur) => decode_cursor(cur, "reels", u.id)?,
    };
    let (s, e, info) = page(videos.len() as u64, start, first, "reels", u.id);
    let edges: Vec<Value> = videos[s as usize..e as usize]
        .iter()
        .map(|p| {
            json!({"node": {"media": {"pk": p.id.to_string(), "id": format!("{}_{}", p.id, u.id),
                "code": p.shortcode, "media_type": 2, "taken_at": p.taken_at,
                "play_count": p.likes * 7, "like_count": p.likes,
                "comment_count": comment_total(&sim.data, p)}}})
        })
        .collect();
    Some(json!({"edges": edges, "page_info": info}))
}

/// The replies of one comment (qh 51fdd02b…): `data.comment.edge_threaded_comments`.
fn comment_replies(
    sim: &Sim,
    vars: &Value,
    first: u64,
    after: Option<&str>,
    urls: &MediaUrls,
) -> Response {
    let found = id_of(&vars["comment_id"]).and_then(|id| {
        let p = sim.data.post_by_id(id / 1000)?;
        let cm = sim.data.comment(&p, u32::try_from(id % 1000).ok()?)?;
        (cm.id == id && !sim.data.users[p.owner as usize].is_private).then_some(cm)
    });
    let Some(cm) = found else {
        return json_response(
            StatusCode::OK,
            &json!({"data": {"comment": null}, "status": "ok"}),
        );
    };
    let start = match after {
        None | Some("") => 0,
        Some(cur) => match decode_cursor(cur, "replies", cm.id) {
            Some(s) => s,
            None => return fail(StatusCode::BAD_REQUEST, "invalid cursor"),
        },
    };
    let all = comment_node(sim, &cm, urls)["edge_threaded_comments"]["edges"].clone();
    let all = all.as_array().cloned().unwrap_or_default();
    let (s, e, info) = page(all.len() as u64, start, first, "replies", cm.id);
    let edges = &all[s as usize..e as usize];
    json_response(
        StatusCode::OK,
        &json!({"data": {"comment": {"id": cm.id.to_string(), "edge_threaded_comments": {
            "count": all.len(), "page_info": info, "edges": edges}}}, "status": "ok"}),
    )
}

/// Stories and highlights in the web GraphQL shapes.
fn reels_query(sim: &Sim, hash: &str, vars: &Value, urls: &MediaUrls) -> Response {
    let data = &sim.data;
    let graph_reel = |u: &crate::data::User, id: String, items: &[ReelItem]| {
        let latest = items.iter().map(|i| i.taken_at).max().unwrap_or(0);
        json!({"id": id, "__typename": "GraphReel", "latest_reel_media": latest, "seen": null,
            "expiring_at": latest + 86_400, "can_reply": true, "reel_type": "user_reel",
            "owner": {"__typename": "GraphUser", "id": u.id.to_string(), "username": u.username,
                "profile_pic_url": urls.profile_picture(u.id)},
            "user": {"id": u.id.to_string(), "username": u.username,
                "profile_pic_url": urls.profile_picture(u.id), "is_private": u.is_private},
            "items": items.iter().map(|i| reel_item_graph(i, u, urls)).collect::<Vec<_>>()})
    };
    let body = match hash {
        hashes::STORY_TRAY => {
            let edges: Vec<Value> = data
                .story_tray()
                .into_iter()
                .map(|i| &data.users[i as usize])
                .map(|u| {
                    json!({"node": {"id": u.id.to_string(), "__typename": "GraphReel",
                    "user": {"id": u.id.to_string(), "username": u.username,
                        "profile_pic_url": urls.profile_picture(u.id)}}})
                })
                .collect();
            json!({"user": {"feed_reels_tray": {"edge_reels_tray_to_reel": {"edges": edges}}}})
        }
        hashes::STORIES => {
            let reels: Vec<Value> = vars["reel_ids"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[])
                .iter()
                .take(100)
                .filter_map(id_of)
                .filter_map(|id| data.user_by_id(id))
                .filter_map(|u| {
                    let items = reel_items(data, u, None).filter(|i| !i.is_empty())?;
                    Some(graph_reel(u, u.id.to_string(), &items))
                })
                .collect();
            json!({"reels_media": reels})
        }
        hashes::HIGHLIGHTS => {
            let Some(u) = id_of(&vars["user_id"]).and_then(|id| data.user_by_id(id)) else {
                return json_response(
                    StatusCode::OK,
                    &json!({"data": {"user": null}, "status": "ok"}),
                );
            };
            const TITLES: [&str; 4] = ["Travels", "Field notes", "Studio", "Archive"];
            let count = if u.is_private {
                0
            } else {
                data.highlight_count(u)
            };
            let edges: Vec<Value> = (0..count)
                .map(|h| {
                    let cover = urls.url(&MediaItem::HighlightCover {
                        user: u.id,
                        highlight: h,
                    });
                    json!({"node": {"__typename": "GraphHighlightReel",
                        "id": (u.id * 10 + h).to_string(), "title": TITLES[h as usize],
                        "cover_media": {"thumbnail_src": cover},
                        "cover_media_cropped_thumbnail": {"url": cover},
                        "owner": {"__typename": "GraphUser", "id": u.id.to_string(),
                            "username": u.username,
                            "profile_pic_url": urls.profile_picture(u.id)}}})
                })
                .collect();
            json!({"user": {"edge_highlight_reels": {"edges": edges}}})
        }
        _ => {
            let reels: Vec<Value> = vars["highlight_reel_ids"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[])
                .iter()
                .take(100)
                .filter_map(id_of)
                .filter_map(|n| {
                    let u = data.user_by_id(n / 10)?;
                    let items = reel_items(data, u, Some(n % 10))?;
                    let mut reel = graph_reel(u, n.to_string(), &items);
                    reel["__typename"] = json!("GraphHighlightReel");
                    reel["reel_type"] = json!("highlight_reel");
                    Some(reel)
                })
                .collect();
            json!({"reels_media": reels})
        }
    };
    json_response(StatusCode::OK, &json!({"data": body, "status": "ok"}))
}
