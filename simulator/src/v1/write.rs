//! The v1 API's writes: posts (multipart uploads), likes, comments, stories and views, follows,
//! profile edits. Each lands in the overlay and, where the document has an event for it, on the
//! realtime stream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::read::{post_id, user_id, with_world};
use super::shapes::{World, account_name};
use super::state::{NewComment, NewPost, NewStory, Notification, Overlay, ProfileEdit};
use super::tiers::Tier;
use super::{
    MAX_CAPTION, MAX_MEDIA_BYTES, bad_request, created, error, forbidden, gate, json_body, ok,
};
use crate::data::{mix, place_by_id};
use crate::server::Sim;

/// Most media files in one post (a carousel).
const MAX_MEDIA_PER_POST: usize = 10;
/// Most bytes of uploads the simulator keeps in memory; beyond it uploads are refused.
const MAX_STORED_UPLOADS: usize = 512 * 1024 * 1024;

/// The parts of a multipart upload: text fields and media files.
struct Upload {
    fields: HashMap<String, String>,
    files: Vec<(Bytes, &'static str, &'static str)>,
}

fn too_large() -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "MEDIA_TOO_LARGE",
        "File size exceeds 8MB limit",
        Some(json!({"field": "media", "max_bytes": MAX_MEDIA_BYTES})),
    )
}

/// What a file is, from its first bytes: (document type, content type).
fn sniff(bytes: &[u8]) -> Option<(&'static str, &'static str)> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(("photo", "image/jpeg"))
    } else if bytes.starts_with(&[0x89, b'P', b'N', b'G']) {
        Some(("photo", "image/png"))
    } else if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        Some(("video", "video/mp4"))
    } else {
        None
    }
}

async fn read_upload(multipart: Result<Multipart, MultipartRejection>) -> Result<Upload, Response> {
    let mut multipart = multipart.map_err(|e| {
        bad_request(
            &format!("the body must be multipart/form-data: {e}"),
            "body",
        )
    })?;
    let mut upload = Upload {
        fields: HashMap::new(),
        files: Vec::new(),
    };
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large()),
            Err(e) => {
                return Err(bad_request(
                    &format!("malformed multipart body: {e}"),
                    "body",
                ));
            }
        };
        let name = field.name().unwrap_or_default().to_owned();
        if name == "media" {
            let mut field = field;
            let mut bytes = Vec::new();
            loop {
                match field.chunk().await {
                    Ok(Some(chunk)) => {
                        if bytes.len() + chunk.len() > MAX_MEDIA_BYTES {
                            return Err(too_large());
                        }
                        bytes.extend_from_slice(&chunk);
                    }
                    Ok(None) => break,
                    Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                        return Err(too_large());
                    }
                    Err(e) => {
                        return Err(bad_request(
                            &format!("malformed multipart body: {e}"),
                            "media",
                        ));
                    }
                }
            }
            let Some((kind, content_type)) = sniff(&bytes) else {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_MEDIA_FORMAT",
                    "Invalid media format: JPEG, PNG or MP4 only",
                    Some(json!({"field": "media"})),
                ));
            };
            upload.files.push((Bytes::from(bytes), kind, content_type));
        } else {
            let text = field
                .text()
                .await
                .map_err(|e| bad_request(&format!("field {name}: {e}"), &name))?;
            upload.fields.insert(name, text);
        }
    }
    Ok(upload)
}

/// Keeps uploaded files; their ids.
fn store(
    o: &mut Overlay,
    sim: &Sim,
    files: &[(Bytes, &'static str, &'static str)],
) -> Result<Vec<(String, &'static str)>, Response> {
    let size: usize = files.iter().map(|(b, _, _)| b.len()).sum();
    if o.upload_bytes + size > MAX_STORED_UPLOADS {
        return Err(error(
            StatusCode::INSUFFICIENT_STORAGE,
            "SERVER_ERROR",
            "the simulator keeps no more uploads",
            None,
        ));
    }
    o.upload_bytes += size;
    Ok(files
        .iter()
        .map(|(bytes, kind, content_type)| {
            let id = format!("media_{}", sim.v1.new_id());
            o.uploads.insert(id.clone(), (bytes.clone(), content_type));
            (id, *kind)
        })
        .collect())
}

/// Ids in `user_tags`: a JSON array of ids (numbers or strings) or a comma-separated list.
fn tag_ids(raw: &str) -> Option<Vec<u64>> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Some(Vec::new());
    }
    if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(raw) {
        return items
            .iter()
            .map(|v| match v {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            })
            .collect();
    }
    raw.split(',').map(|s| s.trim().parse().ok()).collect()
}

fn caption_error(caption: &str) -> Option<Response> {
    (caption.chars().count() > MAX_CAPTION).then(|| {
        error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "Caption exceeds maximum length",
            Some(json!({"field": "caption", "max_length": MAX_CAPTION})),
        )
    })
}

/// Records a notification for `to` when it is a login account other than the actor, and puts
/// it on the stream.
pub(super) fn notify(
    sim: &Sim,
    o: &mut Overlay,
    to: u64,
    kind: &'static str,
    actor: u64,
    post: Option<u64>,
) {
    if to == actor || account_name(sim, to).is_none() {
        return;
    }
    let n = Notification {
        id: sim.v1.new_id(),
        kind,
        actor,
        post,
        created_at: sim.unix_now() as i64,
    };
    o.notifications.entry(to).or_default().push(n.clone());
    let w = World::new(sim, o);
    let mut data = super::read::notification_json(&w, &n, false);
    if let Some(map) = data.as_object_mut() {
        map.remove("read");
    }
    sim.v1.publish(
        "notifications",
        to,
        json!({"type": "notification", "data": data}),
    );
}

pub(super) fn publish_post(sim: &Sim, o: &Overlay, post: &NewPost) {
    let w = World::new(sim, o);
    sim.v1.publish(
        "feed",
        post.owner,
        json!({"type": "new_post", "data": {"post_id": post.id.to_string(),
               "user": w.user_summary(post.owner),
               "created_at": super::rfc3339(post.created_at)}}),
    );
}

pub(super) fn publish_story(sim: &Sim, o: &Overlay, story: &NewStory) {
    let w = World::new(sim, o);
    sim.v1.publish(
        "stories",
        story.owner,
        json!({"type": "new_story", "data": {"story_id": story.id.to_string(),
               "user": w.user_summary(story.owner),
               "created_at": super::rfc3339(story.created_at)}}),
    );
}

/// Runs a write on the overlay; answers `answer(body)`, or the refusal the write returned.
fn write(
    sim: &Sim,
    answer: fn(Value) -> Response,
    f: impl FnOnce(&mut Overlay) -> Result<Value, Response>,
) -> Response {
    match sim.v1.overlay.lock() {
        Ok(mut o) => match f(&mut o) {
            Ok(body) => answer(body),
            Err(refusal) => refusal,
        },
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SERVER_ERROR",
            "state poisoned",
            None,
        ),
    }
}

pub(super) async fn upload_post(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let upload = read_upload(multipart).await;
    gate(&sim, peer, &headers, Tier::PostUpload, |v| {
        let upload = match upload {
            Ok(u) => u,
            Err(r) => return r,
        };
        let caption = upload.fields.get("caption").cloned().unwrap_or_default();
        if let Some(r) = caption_error(&caption) {
            return r;
        }
        if upload.files.is_empty() {
            return bad_request("at least one media file is required", "media");
        }
        if upload.files.len() > MAX_MEDIA_PER_POST {
            return bad_request(
                &format!("at most {MAX_MEDIA_PER_POST} media files"),
                "media",
            );
        }
        let location_id = match upload
            .fields
            .get("location_id")
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            None => None,
            Some(s) => match s
                .parse::<u64>()
                .ok()
                .filter(|id| place_by_id(*id).is_some())
            {
                Some(id) => Some(id),
                None => return bad_request("unknown location_id", "location_id"),
            },
        };
        write(&sim, created, |o| {
            let user_tags = match upload.fields.get("user_tags").map(|s| tag_ids(s)) {
                None => Vec::new(),
                Some(Some(ids)) if ids.iter().all(|id| World::new(&sim, o).exists(*id)) => ids,
                Some(_) => {
                    return Err(bad_request(
                        "user_tags must list existing user ids",
                        "user_tags",
                    ));
                }
            };
            let media = store(o, &sim, &upload.files)?;
            let post = NewPost {
                id: sim.v1.new_id(),
                owner: v.id(),
                caption,
                location_id,
                user_tags: user_tags.clone(),
                media,
                created_at: sim.unix_now() as i64,
            };
            o.posts.push(post.clone());
            for t in user_tags {
                notify(&sim, o, t, "tag", v.id(), Some(post.id));
            }
            publish_post(&sim, o, &post);
            let w = World::new(&sim, o);
            Ok(w.post_json(&super::shapes::PostRef::New(post), v.user_id))
        })
    })
    .await
}

pub(super) async fn delete_post(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    gate(&sim, peer, &headers, Tier::Interaction, |v| {
        write(&sim, ok, |o| {
            let post = {
                let w = World::new(&sim, o);
                let p = post_id(&w, &id)?;
                if w.owner_of(&p) != v.id() {
                    return Err(forbidden("only the owner may delete a post"));
                }
                p.id()
            };
            o.deleted.insert(post);
            Ok(json!({"message": "Post deleted successfully", "post_id": post.to_string()}))
        })
    })
    .await
}

async fn set_like(
    sim: Arc<Sim>,
    peer: SocketAddr,
    headers: HeaderMap,
    id: String,
    like: bool,
) -> Response {
    gate(&sim, peer, &headers, Tier::Interaction, |v| {
        write(&sim, ok, |o| {
            let (post, owner) = {
                let w = World::new(&sim, o);
                let p = post_id(&w, &id)?;
                let owner = w.owner_of(&p);
                if !w.visible(owner, v.id()) {
                    return Err(forbidden("this account is private: follow it first"));
                }
                (p.id(), owner)
            };
            let changed = if like {
                o.likes.insert((v.id(), post))
            } else {
                o.likes.remove(&(v.id(), post))
            };
            if like && changed {
                notify(&sim, o, owner, "like", v.id(), Some(post));
            }
            let w = World::new(&sim, o);
            let p = post_id(&w, &id)?;
            Ok(json!({"liked": like, "likes_count": w.post_json(&p, v.user_id)["likes_count"]}))
        })
    })
    .await
}

pub(super) async fn like(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    set_like(sim, peer, headers, id, true).await
}

pub(super) async fn unlike(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    set_like(sim, peer, headers, id, false).await
}

pub(super) async fn comment(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    gate(&sim, peer, &headers, Tier::Interaction, |v| {
        let req = match json_body(&body) {
            Ok(r) => r,
            Err(r) => return r,
        };
        let text = req["text"]
            .as_str()
            .map(str::trim)
            .unwrap_or_default()
            .to_owned();
        if text.is_empty() {
            return bad_request("text is required", "text");
        }
        if text.chars().count() > MAX_CAPTION {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "Comment exceeds maximum length",
                Some(json!({"field": "text", "max_length": MAX_CAPTION})),
            );
        }
        let parent = match &req["parent_comment_id"] {
            Value::Null => None,
            Value::String(s) => match s.parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    return bad_request(
                        "parent_comment_id must be a comment id",
                        "parent_comment_id",
                    );
                }
            },
            Value::Number(n) => match n.as_u64() {
                Some(n) => Some(n),
                None => {
                    return bad_request(
                        "parent_comment_id must be a comment id",
                        "parent_comment_id",
                    );
                }
            },
            _ => {
                return bad_request(
                    "parent_comment_id must be a comment id",
                    "parent_comment_id",
                );
            }
        };
        write(&sim, created, |o| {
            let (post, owner) = {
                let w = World::new(&sim, o);
                let p = post_id(&w, &id)?;
                let owner = w.owner_of(&p);
                if !w.visible(owner, v.id()) {
                    return Err(forbidden("this account is private: follow it first"));
                }
                if let Some(parent) = parent {
                    let parent = parent.to_string();
                    let known = w.comments_of(&p).iter().any(|c| {
                        c["comment_id"].as_str() == Some(parent.as_str())
                            && c["parent_comment_id"].is_null()
                    });
                    if !known {
                        return Err(bad_request(
                            "parent_comment_id is not a top-level comment of this post",
                            "parent_comment_id",
                        ));
                    }
                }
                (p.id(), owner)
            };
            let c = NewComment {
                id: sim.v1.new_id(),
                post,
                owner: v.id(),
                text: text.clone(),
                parent,
                created_at: sim.unix_now() as i64,
            };
            o.comments.push(c.clone());
            notify(&sim, o, owner, "comment", v.id(), Some(post));
            let w = World::new(&sim, o);
            Ok(
                json!({"comment_id": c.id.to_string(), "post_id": post.to_string(),
                      "user": w.user_summary(v.id()), "text": c.text,
                      "parent_comment_id": parent.map(|p| p.to_string()),
                      "created_at": super::rfc3339(c.created_at), "likes_count": 0}),
            )
        })
    })
    .await
}

pub(super) async fn upload_story(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let upload = read_upload(multipart).await;
    gate(&sim, peer, &headers, Tier::StoryUpload, |v| {
        let upload = match upload {
            Ok(u) => u,
            Err(r) => return r,
        };
        let [file] = upload.files.as_slice() else {
            return bad_request("exactly one media file is required", "media");
        };
        if let Some(declared) = upload.fields.get("media_type")
            && declared != file.1
        {
            return bad_request(
                &format!("media_type is {declared:?} but the file is a {}", file.1),
                "media_type",
            );
        }
        if let Some(d) = upload.fields.get("duration")
            && !d.parse::<u32>().is_ok_and(|d| (1..=60).contains(&d))
        {
            return bad_request("duration must be 1 to 60 seconds", "duration");
        }
        write(&sim, created, |o| {
            let media = store(o, &sim, std::slice::from_ref(file))?;
            let now = sim.unix_now() as i64;
            let story = NewStory {
                id: sim.v1.new_id(),
                owner: v.id(),
                media_id: media[0].0.clone(),
                media_type: file.1,
                created_at: now,
                expires_at: now + sim.v1.story_life.as_secs().max(1) as i64,
            };
            o.stories.push(story.clone());
            publish_story(&sim, o, &story);
            let w = World::new(&sim, o);
            let mut body = w.story_json(&story, None);
            if let Some(map) = body.as_object_mut() {
                map.remove("viewed");
            }
            Ok(body)
        })
    })
    .await
}

pub(super) async fn view_story(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    gate(&sim, peer, &headers, Tier::Interaction, |v| {
        write(&sim, ok, |o| {
            let now = sim.unix_now() as i64;
            let story = id.parse::<u64>().ok();
            let owner = story.and_then(|s| World::new(&sim, o).story_owner(s, now));
            let (Some(story), Some(owner)) = (story, owner) else {
                return Err(super::not_found("story"));
            };
            if !World::new(&sim, o).visible(owner, v.id()) {
                return Err(forbidden("this account is private: follow it first"));
            }
            let viewers = o.views.entry(story).or_default();
            viewers.insert(v.id());
            // Stories of the data set were seen by others before; new ones start at zero.
            let earlier = if o.stories.iter().any(|s| s.id == story) {
                0
            } else {
                mix(sim.data.seed, 44, story, 0) % 2000
            };
            let count = earlier + o.views.get(&story).map_or(0, |v| v.len() as u64);
            Ok(json!({"story_id": story.to_string(), "viewed": true, "views_count": count}))
        })
    })
    .await
}

pub(super) async fn follow(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    gate(&sim, peer, &headers, Tier::Follow, |v| {
        write(&sim, ok, |o| {
            let me = v.id();
            let (target, already, private) = {
                let w = World::new(&sim, o);
                let target = user_id(&w, &id)?;
                (target, w.follows(me, target), w.is_private(target))
            };
            if target == me {
                return Err(bad_request("you cannot follow yourself", "user_id"));
            }
            let summary = World::new(&sim, o).user_summary(target);
            if private && !already {
                o.requests.insert((me, target));
                return Ok(json!({"requested": true, "user": summary}));
            }
            o.unfollows.remove(&(me, target));
            if !World::new(&sim, o).follows(me, target) {
                o.follows.insert((me, target));
            }
            if !already {
                notify(&sim, o, target, "follow", me, None);
            }
            Ok(json!({"following": true, "user": {"user_id": summary["user_id"], "username": summary["username"]}}))
        })
    })
    .await
}

pub(super) async fn unfollow(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    gate(&sim, peer, &headers, Tier::Follow, |v| {
        write(&sim, ok, |o| {
            let me = v.id();
            let target = user_id(&World::new(&sim, o), &id)?;
            o.follows.remove(&(me, target));
            o.requests.remove(&(me, target));
            o.unfollows.insert((me, target));
            Ok(json!({"following": false}))
        })
    })
    .await
}

pub(super) async fn update_profile(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    gate(&sim, peer, &headers, Tier::Interaction, |v| {
        let req = match json_body(&body) {
            Ok(r) => r,
            Err(r) => return r,
        };
        if id != v.id().to_string() {
            return with_world(&sim, |w| match user_id(w, &id) {
                Ok(_) => forbidden("you may only edit your own profile"),
                Err(r) => r,
            });
        }
        let field = |name: &str, max: usize| -> Result<Option<String>, Response> {
            match &req[name] {
                Value::Null => Ok(None),
                Value::String(s) if s.chars().count() <= max => Ok(Some(s.clone())),
                Value::String(_) => Err(error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST",
                    &format!("{name} exceeds maximum length"),
                    Some(json!({"field": name, "max_length": max})),
                )),
                _ => Err(bad_request(&format!("{name} must be a string"), name)),
            }
        };
        let edit = match (
            field("full_name", 64),
            field("bio", 150),
            field("website", 200),
        ) {
            (Ok(full_name), Ok(bio), Ok(website)) => ProfileEdit {
                full_name,
                bio,
                website,
            },
            (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r,
        };
        if let Some(site) = &edit.website
            && !site.is_empty()
            && !(site.starts_with("https://") || site.starts_with("http://"))
        {
            return bad_request("website must be an http(s) URL", "website");
        }
        write(&sim, ok, |o| {
            let e = o.profiles.entry(v.id()).or_default();
            if edit.full_name.is_some() {
                e.full_name = edit.full_name;
            }
            if edit.bio.is_some() {
                e.bio = edit.bio;
            }
            if edit.website.is_some() {
                e.website = edit.website;
            }
            Ok(json!({"user": World::new(&sim, o).user_profile(v.id(), v.user_id)}))
        })
    })
    .await
}
