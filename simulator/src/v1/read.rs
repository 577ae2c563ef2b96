//! The v1 API's reads: profiles, posts, comments, the social graph, feed, explore, stories,
//! search and notifications.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::shapes::{PostRef, World};
use super::tiers::Tier;
use super::{
    Viewer, bad_request, error, forbidden, gate, not_found, ok, page_of, paging, query, rfc3339,
};
use crate::cdn::{MediaFile, MediaItem};
use crate::data::{TAGS, mix, places};
use crate::server::Sim;
use crate::windows::QueryType;

/// Posts the explore listing holds at most.
const EXPLORE_POSTS: usize = 200;

/// Runs `f` over the data set and the overlay.
pub(super) fn with_world(sim: &Sim, f: impl FnOnce(&World) -> Response) -> Response {
    match sim.v1.overlay.lock() {
        Ok(o) => f(&World::new(sim, &o)),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SERVER_ERROR",
            "state poisoned",
            None,
        ),
    }
}

/// A user id from the path, known to the data set or the accounts.
pub(super) fn user_id(w: &World, raw: &str) -> Result<u64, Response> {
    raw.parse::<u64>()
        .ok()
        .filter(|id| w.exists(*id))
        .ok_or_else(|| not_found("user"))
}

pub(super) fn post_id(w: &World, raw: &str) -> Result<PostRef, Response> {
    raw.parse::<u64>()
        .ok()
        .and_then(|id| w.find_post(id))
        .ok_or_else(|| not_found("post"))
}

fn private() -> Response {
    forbidden("this account is private: follow it first")
}

pub(super) async fn user(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    gate(&sim, peer, &headers, Tier::UserLookup, |v| {
        with_world(&sim, |w| match user_id(w, &id) {
            Ok(id) => ok(w.user_profile(id, v.user_id)),
            Err(r) => r,
        })
    })
    .await
}

pub(super) async fn user_posts(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    gate(&sim, peer, &headers, Tier::Media, |v| {
        with_world(&sim, |w| {
            let id = match user_id(w, &id) {
                Ok(id) => id,
                Err(r) => return r,
            };
            if !w.visible(id, v.id()) {
                return private();
            }
            post_page(w, &v, &w.posts_of(id), &raw)
        })
    })
    .await
}

/// A followers or following listing in the document's shape.
fn graph_page(w: &World, v: &Viewer, ids: Vec<u64>, raw: &Option<String>) -> Response {
    let page = match paging(raw, 20, 100) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let viewer_follows = w.following(v.id());
    let all = ids
        .iter()
        .enumerate()
        .map(|(i, &u)| {
            if !page.shows(i) {
                return Value::Null;
            }
            let mut s = w.user_summary(u);
            s["following"] = json!(viewer_follows.contains(&u));
            s
        })
        .collect();
    ok(page_of("users", all, &page))
}

/// A followers or following listing of a user the caller may see.
async fn graph_listing(
    sim: Arc<Sim>,
    peer: SocketAddr,
    headers: HeaderMap,
    id: String,
    raw: Option<String>,
    list: fn(&World, u64) -> Vec<u64>,
) -> Response {
    gate(&sim, peer, &headers, Tier::Graph, |v| {
        with_world(&sim, |w| match user_id(w, &id) {
            Ok(id) if w.visible(id, v.id()) => graph_page(w, &v, list(w, id), &raw),
            Ok(_) => private(),
            Err(r) => r,
        })
    })
    .await
}

pub(super) async fn followers(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    graph_listing(sim, peer, headers, id, raw, |w, id| w.followers(id)).await
}

pub(super) async fn following(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    graph_listing(sim, peer, headers, id, raw, |w, id| w.following(id)).await
}

pub(super) async fn post(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    gate(&sim, peer, &headers, Tier::Media, |v| {
        with_world(&sim, |w| match post_id(w, &id) {
            Ok(p) if w.visible(w.owner_of(&p), v.id()) => ok(w.post_json(&p, v.user_id)),
            Ok(_) => private(),
            Err(r) => r,
        })
    })
    .await
}

pub(super) async fn comments(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    gate(&sim, peer, &headers, Tier::Media, |v| {
        with_world(&sim, |w| {
            let p = match post_id(w, &id) {
                Ok(p) if w.visible(w.owner_of(&p), v.id()) => p,
                Ok(_) => return private(),
                Err(r) => return r,
            };
            let page = match paging(&raw, 20, 50) {
                Ok(p) => p,
                Err(r) => return r,
            };
            let all = w.comments_of(&p);
            let total = all.len();
            let mut body = page_of("comments", all, &page);
            body["total_count"] = json!(total);
            ok(body)
        })
    })
    .await
}

/// Posts rendered for the page that shows them; the rest only counted.
fn post_page(w: &World, v: &Viewer, posts: &[PostRef], raw: &Option<String>) -> Response {
    let page = match paging(raw, 20, 50) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let all = posts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if page.shows(i) {
                w.post_json(p, v.user_id)
            } else {
                Value::Null
            }
        })
        .collect();
    ok(page_of("posts", all, &page))
}

pub(super) async fn feed(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    gate(&sim, peer, &headers, Tier::Feed, |v| {
        with_world(&sim, |w| {
            let mut posts: Vec<PostRef> = w.posts_of(v.id());
            for f in w.following(v.id()) {
                posts.extend(w.posts_of(f));
            }
            posts.sort_by_key(|p| std::cmp::Reverse((p.created_at(), p.id())));
            post_page(w, &v, &posts, &raw)
        })
    })
    .await
}

pub(super) async fn explore(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    gate(&sim, peer, &headers, Tier::Feed, |v| {
        with_world(&sim, |w| {
            // A seeded pick of public posts, the most liked first: the same for everyone.
            let data = &sim.data;
            let n = data.users.len() as u64;
            let mut posts = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for k in 0..(EXPLORE_POSTS as u64 * 4) {
                if posts.len() >= EXPLORE_POSTS || n == 0 {
                    break;
                }
                let u = &data.users[(mix(data.seed, 42, k, 0) % n) as usize];
                if u.is_private || u.post_count == 0 {
                    continue;
                }
                let index = (mix(data.seed, 43, k, 0) % u64::from(u.post_count)) as u32;
                if let Some(p) = data.post(u.index, index)
                    && !w.o.deleted.contains(&p.id)
                    && seen.insert(p.id)
                {
                    posts.push(p);
                }
            }
            posts.sort_by_key(|p| std::cmp::Reverse((p.likes, p.id)));
            let posts: Vec<PostRef> = posts.into_iter().map(PostRef::Data).collect();
            post_page(w, &v, &posts, &raw)
        })
    })
    .await
}

pub(super) async fn stories_feed(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    gate(&sim, peer, &headers, Tier::Feed, |v| {
        with_world(&sim, |w| {
            let now = sim.unix_now() as i64;
            let mut authors = vec![v.id()];
            authors.extend(w.following(v.id()));
            let trays: Vec<Value> = authors
                .into_iter()
                .filter_map(|a| {
                    let stories = w.stories_of(a, v.id(), now);
                    if stories.is_empty() {
                        return None;
                    }
                    let unseen = stories.iter().any(|s| s["viewed"] == false);
                    Some(json!({"user": w.user_summary(a), "stories": stories, "has_unseen": unseen}))
                })
                .collect();
            ok(json!({ "stories": trays }))
        })
    })
    .await
}

/// `q` (1 to 100 characters, lowercased), or the error naming it.
fn search_query(raw: &Option<String>) -> Result<String, Response> {
    let q = query(raw)
        .get("q")
        .map(|q| q.trim().to_lowercase())
        .unwrap_or_default();
    if q.is_empty() || q.chars().count() > 100 {
        return Err(bad_request("q is required: 1 to 100 characters", "q"));
    }
    Ok(q)
}

pub(super) async fn search_users(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    gate(&sim, peer, &headers, Tier::Search, |_| {
        with_world(&sim, |w| {
            let (q, page) = match (search_query(&raw), paging(&raw, 20, 50)) {
                (Ok(q), Ok(p)) => (q, p),
                (Err(r), _) | (_, Err(r)) => return r,
            };
            let matches: Vec<&crate::data::User> = sim
                .data
                .users
                .iter()
                .filter(|u| u.username.contains(&q) || u.full_name.to_lowercase().contains(&q))
                .collect();
            let total = matches.len();
            let all = matches
                .iter()
                .enumerate()
                .map(|(i, u)| {
                    if !page.shows(i) {
                        return Value::Null;
                    }
                    let mut s = w.user_summary(u.id);
                    s["verified"] = json!(u.is_verified);
                    s["followers_count"] = json!(w.followers(u.id).len());
                    s
                })
                .collect();
            let mut body = page_of("users", all, &page);
            body["total_count"] = json!(total);
            ok(body)
        })
    })
    .await
}

pub(super) async fn search_hashtags(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    gate(&sim, peer, &headers, Tier::Search, |_| {
        let (q, page) = match (search_query(&raw), paging(&raw, 20, 50)) {
            (Ok(q), Ok(p)) => (q, p),
            (Err(r), _) | (_, Err(r)) => return r,
        };
        let q = q.trim_start_matches('#').to_owned();
        let mut counts: Vec<(&str, usize)> = TAGS
            .iter()
            .map(|t| (*t, sim.data.hashtag_posts(t).len()))
            .collect();
        counts.sort_by_key(|(t, n)| (std::cmp::Reverse(*n), *t));
        // The five most used tags of the data set are trending.
        let trending: Vec<&str> = counts.iter().take(5).map(|(t, _)| *t).collect();
        let all: Vec<Value> = counts
            .iter()
            .filter(|(t, _)| t.contains(q.as_str()))
            .map(|(t, n)| json!({"name": t, "post_count": n, "trending": trending.contains(t)}))
            .collect();
        ok(page_of("hashtags", all, &page))
    })
    .await
}

/// The country of each place of the data set, by name.
fn country(city: &str) -> &'static str {
    match city {
        "Lisbon" => "Portugal",
        "Reykjavik" => "Iceland",
        "Kyoto" => "Japan",
        "Nairobi" => "Kenya",
        "Valparaiso" => "Chile",
        "Tromso" => "Norway",
        "Hobart" => "Australia",
        "Marrakesh" => "Morocco",
        _ => "Unknown",
    }
}

pub(super) async fn search_locations(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    gate(&sim, peer, &headers, Tier::Search, |_| {
        let (q, page) = match (search_query(&raw), paging(&raw, 20, 50)) {
            (Ok(q), Ok(p)) => (q, p),
            (Err(r), _) | (_, Err(r)) => return r,
        };
        let params = query(&raw);
        let coordinate = |name: &str, limit: f64| -> Result<Option<f64>, Response> {
            match params.get(name) {
                None => Ok(None),
                Some(s) => s
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && x.abs() <= limit)
                    .map(Some)
                    .ok_or_else(|| {
                        bad_request(
                            &format!("{name} must be a number from -{limit} to {limit}"),
                            name,
                        )
                    }),
            }
        };
        let (lat, lng) = match (coordinate("lat", 90.0), coordinate("lng", 180.0)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(r), _) | (_, Err(r)) => return r,
        };
        let mut found: Vec<_> = places()
            .filter(|p| {
                p.name.to_lowercase().contains(&q) || country(p.name).to_lowercase().contains(&q)
            })
            .collect();
        match (lat, lng) {
            // Nearest first when a position is given, else the most posted.
            (Some(lat), Some(lng)) => found.sort_by(|a, b| {
                let d = |p: &crate::data::Place| (p.lat - lat).powi(2) + (p.lng - lng).powi(2);
                d(a).total_cmp(&d(b))
            }),
            _ => found.sort_by_key(|p| std::cmp::Reverse(sim.data.location_posts(p).len())),
        }
        let all = found
            .iter()
            .map(|p| {
                json!({"location_id": p.id, "name": p.name, "city": p.name,
                            "country": country(p.name), "lat": p.lat, "lng": p.lng,
                            "post_count": sim.data.location_posts(p).len()})
            })
            .collect();
        ok(page_of("locations", all, &page))
    })
    .await
}

pub(super) async fn notifications(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    gate(&sim, peer, &headers, Tier::Notifications, |v| {
        let page = match paging(&raw, 20, 50) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let Ok(mut o) = sim.v1.overlay.lock() else {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "SERVER_ERROR",
                "state poisoned",
                None,
            );
        };
        let me = v.id();
        let read_up_to = o.read_up_to.get(&me).copied().unwrap_or(0);
        let mine: Vec<_> = o.notifications.get(&me).cloned().unwrap_or_default();
        let unread = mine.iter().filter(|n| n.id > read_up_to).count();
        let newest = mine.last().map(|n| n.id);
        let body = {
            let w = World::new(&sim, &o);
            let all = mine
                .iter()
                .rev()
                .map(|n| notification_json(&w, n, n.id <= read_up_to))
                .collect();
            let mut body = page_of("notifications", all, &page);
            body["unread_count"] = json!(unread);
            body
        };
        // Listing the newest page marks everything as read, as opening the app's list does.
        if page.offset == 0
            && let Some(newest) = newest
        {
            o.read_up_to.insert(me, newest);
        }
        ok(body)
    })
    .await
}

pub(super) fn notification_json(w: &World, n: &super::state::Notification, read: bool) -> Value {
    let post = n.post.and_then(|p| w.find_post(p)).map(|p| {
        let thumb = w.post_json(&p, None)["media"][0]["url"].clone();
        json!({"post_id": p.id().to_string(), "thumbnail_url": thumb})
    });
    json!({"notification_id": format!("notif_{}", n.id), "type": n.kind,
           "actor": w.user_summary(n.actor), "post": post,
           "created_at": rfc3339(n.created_at), "read": read})
}

/// `GET /api/v1/media/{media_id}`: the bytes of an uploaded file, or of a post the activity
/// generator made. A media download, counted in no window.
pub(super) async fn uploaded_media(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(media_id): Path<String>,
) -> Response {
    let stored = sim
        .v1
        .overlay
        .lock()
        .ok()
        .and_then(|o| o.uploads.get(&media_id).cloned());
    let generated = || {
        let post = media_id.strip_prefix("gen_")?.parse::<u64>().ok()?;
        let file = MediaFile::new(sim.data.seed, &MediaItem::PostImage { post }, None);
        let mut buf = vec![0; usize::try_from(file.size()).ok()?];
        file.read_at(0, &mut buf);
        Some((axum::body::Bytes::from(buf), file.content_type()))
    };
    let response = match stored.or_else(generated) {
        Some((bytes, content_type)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, content_type)],
            bytes,
        )
            .into_response(),
        None => not_found("media"),
    };
    let ip = crate::server::client_ip(&sim, peer, &headers);
    sim.log(None, ip, &QueryType::Cdn, response.status().as_u16(), 0);
    response
}
