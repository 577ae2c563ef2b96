//! The JSON shapes answers share: users, posts, comments, cursors and pages.

use serde_json::{Value, json};

use super::*;
use crate::cdn::{MediaItem, MediaUrls};
use crate::data::{DataSet, Post, PostType, User};

pub(super) fn user_summary(u: &User, urls: &MediaUrls) -> Value {
    json!({
        "id": u.id.to_string(),
        "username": u.username,
        "full_name": u.full_name,
        "profile_pic_url": urls.profile_picture(u.id),
        "is_private": u.is_private,
        "is_verified": u.is_verified,
    })
}

/// A picture's `display_resources`: Instagram lists several sizes; one is enough to read.
fn display_resources(url: &str) -> Value {
    json!([{"src": url, "config_width": 1080, "config_height": 1080}])
}

pub(super) fn post_node(p: &Post, data: &DataSet, urls: &MediaUrls) -> Value {
    let owner = &data.users[p.owner as usize];
    let display = urls.url(&MediaItem::PostImage { post: p.id });
    let mut node = json!({
        "__typename": match p.kind { PostType::Image => "GraphImage", PostType::Sidecar(_) => "GraphSidecar", PostType::Video => "GraphVideo" },
        "id": p.id.to_string(),
        "shortcode": p.shortcode,
        "display_url": display,
        "display_resources": display_resources(&display),
        "is_video": p.kind == PostType::Video,
        "taken_at_timestamp": p.taken_at,
        "edge_media_to_caption": {"edges": [{"node": {"text": p.caption}}]},
        "edge_media_to_comment": {"count": p.comment_count},
        "edge_media_preview_like": {"count": p.likes},
        "edge_liked_by": {"count": p.likes},
        "comments_disabled": false,
        "owner": {"id": owner.id.to_string(), "username": owner.username},
        "location": p.location.and_then(crate::data::place_by_name).map(|pl| json!({"id": pl.id.to_string(), "name": pl.name, "slug": pl.slug(), "has_public_page": true})),
        "edge_media_to_tagged_user": {"edges": p.tagged.iter().map(|&t| json!({"node": {"user": {"username": data.users[t as usize].username, "id": data.users[t as usize].id.to_string()}}})).collect::<Vec<_>>()},
    });
    match p.kind {
        PostType::Sidecar(n) => {
            node["edge_sidecar_to_children"] = json!({"edges": (0..n).map(|k| {
                let child = urls.url(&MediaItem::CarouselImage { post: p.id, child: k });
                json!({"node": {"__typename": "GraphImage", "id": format!("{}{k}", p.id),
                    "display_url": child, "display_resources": display_resources(&child),
                    "is_video": false}})
            }).collect::<Vec<_>>()});
        }
        PostType::Video => {
            node["video_url"] = json!(urls.url(&MediaItem::PostVideo { post: p.id }));
            node["video_view_count"] = json!(p.likes * 7);
        }
        PostType::Image => {}
    }
    node
}

/// A comment with its replies (`edge_threaded_comments`), as Instagram nests them.
pub(super) fn comment_node(sim: &Sim, cm: &crate::data::Comment, urls: &MediaUrls) -> Value {
    let owner = &sim.data.users[cm.owner as usize];
    let replies: Vec<Value> = sim
        .data
        .replies(cm)
        .into_iter()
        .map(|(id, who, created_at, likes)| {
            let who = &sim.data.users[who as usize];
            json!({"node": {"id": id.to_string(), "text": reply_text(owner),
                "created_at": created_at,
                "owner": {"id": who.id.to_string(), "username": who.username,
                    "profile_pic_url": urls.profile_picture(who.id)},
                "edge_liked_by": {"count": likes}}})
        })
        .collect();
    json!({"id": cm.id.to_string(), "text": cm.text, "created_at": cm.created_at,
        "did_report_as_spam": false, "viewer_has_liked": false,
        "owner": {"id": owner.id.to_string(), "username": owner.username,
            "profile_pic_url": urls.profile_picture(owner.id)},
        "edge_liked_by": {"count": cm.likes},
        "edge_threaded_comments": {"count": replies.len(),
            "page_info": {"has_next_page": false, "end_cursor": null}, "edges": replies}})
}

pub(super) fn encode_cursor(tag: &str, owner: u64, next: u64) -> String {
    let raw = format!("{tag}:{owner}:{next}");
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn decode_cursor(cursor: &str, tag: &str, owner: u64) -> Option<u64> {
    if !cursor.len().is_multiple_of(2) || cursor.len() > 200 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    let mut parts = text.split(':');
    (parts.next()? == tag && parts.next()?.parse::<u64>().ok()? == owner)
        .then(|| parts.next()?.parse().ok())
        .flatten()
}

/// One page of `total` items starting at `after`: (start, end, page_info).
pub(super) fn page(total: u64, start: u64, first: u64, tag: &str, owner: u64) -> (u64, u64, Value) {
    // A cursor is the client's to forge: one past the end is an empty last page, never a slice
    // that starts after it ends.
    let start = start.min(total);
    let end = start.saturating_add(first).min(total);
    let has_next = end < total;
    let info = json!({
        "has_next_page": has_next,
        "end_cursor": if has_next { Value::String(encode_cursor(tag, owner, end)) } else { Value::Null },
    });
    (start, end, info)
}

/// A reply's text: it answers the comment's author.
pub(super) fn reply_text(to: &User) -> String {
    format!("@{} agreed", to.username)
}

/// A user as the app's API and the newer web queries name one.
pub(super) fn iphone_user(u: &User, urls: &MediaUrls) -> Value {
    json!({
        "pk": u.id, "pk_id": u.id.to_string(), "id": u.id.to_string(),
        "username": u.username, "full_name": u.full_name,
        "is_private": u.is_private, "is_verified": u.is_verified,
        "profile_pic_url": urls.profile_picture(u.id),
    })
}

/// A post's comment count as Instagram reports it in its newer answers: comments and their
/// replies together. The data set's `comment_count` counts top-level comments only.
pub(super) fn comment_total(data: &DataSet, p: &Post) -> u64 {
    (0..p.comment_count)
        .filter_map(|i| data.comment(p, i))
        .map(|cm| 1 + data.replies(&cm).len() as u64)
        .sum()
}

fn image_versions(url: String) -> Value {
    json!({"candidates": [{"width": 1080, "height": 1080, "url": url}]})
}

/// A post in the app's media shape (`items[]` of media info, timeline nodes, section medias).
pub(super) fn iphone_media(p: &Post, data: &DataSet, urls: &MediaUrls) -> Value {
    let owner = &data.users[p.owner as usize];
    let media_type = match p.kind {
        PostType::Image => 1,
        PostType::Video => 2,
        PostType::Sidecar(_) => 8,
    };
    let mut m = json!({
        "pk": p.id, "id": format!("{}_{}", p.id, owner.id), "code": p.shortcode,
        "media_type": media_type, "taken_at": p.taken_at,
        "caption": {"pk": format!("{}1", p.id), "text": p.caption, "created_at": p.taken_at},
        "like_count": p.likes, "comment_count": comment_total(data, p), "has_liked": false,
        "image_versions2": image_versions(urls.url(&MediaItem::PostImage { post: p.id })),
        "user": iphone_user(owner, urls), "owner": iphone_user(owner, urls),
        "location": p.location.and_then(crate::data::place_by_name).map(|pl| json!({
            "pk": pl.id, "id": pl.id.to_string(), "name": pl.name, "short_name": pl.name,
            "slug": pl.slug(), "has_public_page": true,
            "lat": pl.lat, "lng": pl.lng})),
        "usertags": {"in": p.tagged.iter().map(|&t| json!({
            "user": iphone_user(&data.users[t as usize], urls), "position": [0.5, 0.5]}))
            .collect::<Vec<_>>()},
        "accessibility_caption": null,
    });
    match p.kind {
        PostType::Video => {
            m["video_versions"] = json!([{"type": 101, "width": 720, "height": 1280,
                "url": urls.url(&MediaItem::PostVideo { post: p.id })}]);
            m["video_duration"] = json!(15.0);
            m["view_count"] = json!(p.likes * 7);
            m["play_count"] = json!(p.likes * 7);
        }
        PostType::Sidecar(n) => {
            m["carousel_media_count"] = json!(n);
            m["carousel_media"] = (0..n)
                .map(|k| {
                    let child = MediaItem::CarouselImage {
                        post: p.id,
                        child: k,
                    };
                    json!({"pk": format!("{}{k}", p.id), "id": format!("{}{k}", p.id),
                    "media_type": 1, "image_versions2": image_versions(urls.url(&child))})
                })
                .collect();
        }
        PostType::Image => {}
    }
    m
}

/// The profile page's id for a user, which is not the user's id (pk): the logged-out web app
/// asks for more posts by it.
pub(super) fn page_id(u: &User) -> String {
    format!("{}", PAGE_ID_BASE + u.id)
}

const PAGE_ID_BASE: u64 = 17_841_000_000_000_000;

pub(super) fn user_by_page_id<'a>(data: &'a DataSet, id: &Value) -> Option<&'a User> {
    let n = super::graphql::id_of(id)?;
    data.user_by_id(n.checked_sub(PAGE_ID_BASE)?)
}

/// A profile in the newer web shape (`xig_user_by_username`, doc 27937681195819736's `user`).
/// `viewer`: the relationship fields a logged-in viewer gets (the simulator's accounts follow
/// no one).
pub(super) fn profile_node(u: &User, viewer: bool, urls: &MediaUrls) -> Value {
    let mut node = json!({
        "pk": u.id.to_string(), "id": u.id.to_string(), "username": u.username,
        "full_name": u.full_name, "biography": u.biography, "is_private": u.is_private,
        "is_verified": u.is_verified, "follower_count": u.followers.len(),
        "following_count": u.following.len(), "media_count": u.post_count,
        "profile_pic_url": urls.profile_picture(u.id),
        "hd_profile_pic_url_info": {"url": urls.profile_picture_hd(u.id), "width": 1080,
            "height": 1080},
        "is_business": false, "category": null, "external_url": null,
        "edge_felix_video_timeline": {"count": 0,
            "page_info": {"has_next_page": false, "end_cursor": null}, "edges": []},
    });
    if viewer {
        node["friendship_status"] = json!({"following": false, "followed_by": false,
            "blocking": false, "incoming_request": false, "outgoing_request": false});
    }
    node
}

/// `medias` grouped as the app's grid sections (rows of three).
pub(super) fn sections(medias: Vec<Value>) -> Vec<Value> {
    medias
        .chunks(3)
        .map(|row| json!({"layout_type": "media_grid", "feed_type": "media",
            "layout_content": {"medias": row.iter().map(|m| json!({"media": m})).collect::<Vec<_>>()}}))
        .collect()
}

/// One page of a section feed (hashtag, location): `sections`, `more_available`, `next_max_id`.
pub(super) fn section_page(
    data: &DataSet,
    posts: &[(u32, u32)],
    max_id: Option<&str>,
    tag: &str,
    owner: u64,
    urls: &MediaUrls,
) -> Option<Value> {
    let start = match max_id {
        None | Some("") => 0,
        Some(cursor) => decode_cursor(cursor, tag, owner)?,
    };
    let (s, e, _) = page(posts.len() as u64, start, 12, tag, owner);
    let medias = posts
        .get(s as usize..e as usize)
        .unwrap_or(&[])
        .iter()
        .filter_map(|&(o, j)| data.post(o, j))
        .map(|p| iphone_media(&p, data, urls))
        .collect();
    let more = e < posts.len() as u64;
    Some(json!({"sections": sections(medias), "more_available": more,
        "next_max_id": if more { Value::String(encode_cursor(tag, owner, e)) } else { Value::Null }}))
}

/// A key for a hashtag's cursors.
pub(super) fn tag_key(tag: &str) -> u64 {
    tag.bytes()
        .fold(0u64, |acc, b| crate::data::mix(0, 11, acc, u64::from(b)))
}

/// A hashtag's top posts: the most liked of its newest 200, so the cost stays bounded.
pub(super) fn top_posts(data: &DataSet, posts: &[(u32, u32)]) -> Vec<Post> {
    let mut recent: Vec<_> = posts
        .iter()
        .take(200)
        .filter_map(|&(o, j)| data.post(o, j))
        .collect();
    recent.sort_by(|a, b| b.likes.cmp(&a.likes).then(a.id.cmp(&b.id)));
    recent.truncate(9);
    recent
}

/// One item of a story reel or a highlight.
pub(crate) struct ReelItem {
    pub(crate) pk: u64,
    pub(crate) taken_at: i64,
    pub(crate) expiring_at: Option<i64>,
    pub(crate) video: bool,
}

/// The items of a user's current stories (`highlight` None) or of one highlight; `None` when the
/// user is private or has no such highlight.
pub(crate) fn reel_items(
    data: &DataSet,
    u: &User,
    highlight: Option<u64>,
) -> Option<Vec<ReelItem>> {
    if u.is_private || highlight.is_some_and(|h| h >= data.highlight_count(u)) {
        return None;
    }
    let (salt, count) = match highlight {
        None => (8, data.story_count(u)),
        Some(h) => (20 + h, data.highlight_items(u, h)),
    };
    Some(
        (0..count)
            .map(|k| {
                // Stories are from the last day before the data set's "now"; highlights are older.
                let taken_at = match highlight {
                    None => crate::data::EPOCH - (k as i64 + 1) * 3600,
                    Some(h) => crate::data::EPOCH - (h as i64 + 1) * 30 * 86_400 - k as i64 * 3600,
                };
                ReelItem {
                    pk: (u.id * 100 + salt) * 100 + k,
                    taken_at,
                    expiring_at: highlight.is_none().then_some(taken_at + 86_400),
                    video: crate::data::mix(data.seed, salt, u64::from(u.index), k)
                        .is_multiple_of(3),
                }
            })
            .collect(),
    )
}

/// A reel item in the app's shape.
pub(super) fn reel_item_iphone(it: &ReelItem, u: &User, urls: &MediaUrls) -> Value {
    let pk = it.pk;
    let mut item = json!({
        "pk": pk, "id": format!("{pk}_{}", u.id), "taken_at": it.taken_at,
        "media_type": if it.video { 2 } else { 1 },
        "image_versions2": {"candidates": [{"width": 1080, "height": 1920,
            "url": urls.url(&MediaItem::ReelImage { pk })}]},
    });
    if let Some(e) = it.expiring_at {
        item["expiring_at"] = json!(e);
    }
    if it.video {
        item["video_versions"] = json!([{"type": 101, "width": 720, "height": 1280,
            "url": urls.url(&MediaItem::ReelVideo { pk })}]);
    }
    item
}

/// A reel item in the web GraphQL shape (`reels_media[].items[]`).
pub(super) fn reel_item_graph(it: &ReelItem, u: &User, urls: &MediaUrls) -> Value {
    let pk = it.pk;
    let image = urls.url(&MediaItem::ReelImage { pk });
    let mut item = json!({
        "id": pk.to_string(),
        "__typename": if it.video { "GraphStoryVideo" } else { "GraphStoryImage" },
        "taken_at_timestamp": it.taken_at,
        "expiring_at_timestamp": it.expiring_at.unwrap_or(it.taken_at + 86_400),
        "display_url": image,
        "display_resources": [{"src": image, "config_width": 1080, "config_height": 1920}],
        "is_video": it.video,
        "owner": {"id": u.id.to_string(), "username": u.username},
        "edge_media_to_caption": {"edges": []},
    });
    if it.video {
        item["video_resources"] = json!([{"src": urls.url(&MediaItem::ReelVideo { pk }),
            "config_width": 720, "config_height": 1280, "profile": "MAIN"}]);
        item["video_duration"] = json!(5.0);
    }
    item
}
