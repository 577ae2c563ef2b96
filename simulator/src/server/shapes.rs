//! The JSON shapes answers share: users, posts, comments, cursors and pages.

use serde_json::{Value, json};

use super::*;
use crate::data::{DataSet, Post, PostType, User};

pub(super) fn user_summary(u: &User) -> Value {
    json!({
        "id": u.id.to_string(),
        "username": u.username,
        "full_name": u.full_name,
        "profile_pic_url": u.profile_pic_url(),
        "is_private": u.is_private,
        "is_verified": u.is_verified,
    })
}

pub(super) fn post_node(p: &Post, data: &DataSet) -> Value {
    let owner = &data.users[p.owner as usize];
    let display = format!("https://scontent.sim.instagram.test/v/t51/{}_n.jpg", p.id);
    let mut node = json!({
        "__typename": match p.kind { PostType::Image => "GraphImage", PostType::Sidecar(_) => "GraphSidecar", PostType::Video => "GraphVideo" },
        "id": p.id.to_string(),
        "shortcode": p.shortcode,
        "display_url": display,
        "is_video": p.kind == PostType::Video,
        "taken_at_timestamp": p.taken_at,
        "edge_media_to_caption": {"edges": [{"node": {"text": p.caption}}]},
        "edge_media_to_comment": {"count": p.comment_count},
        "edge_media_preview_like": {"count": p.likes},
        "edge_liked_by": {"count": p.likes},
        "comments_disabled": false,
        "owner": {"id": owner.id.to_string(), "username": owner.username},
        "location": p.location.map(|name| json!({"id": format!("{}", name.len() * 1000 + 7), "name": name, "has_public_page": true})),
        "edge_media_to_tagged_user": {"edges": p.tagged.iter().map(|&t| json!({"node": {"user": {"username": data.users[t as usize].username, "id": data.users[t as usize].id.to_string()}}})).collect::<Vec<_>>()},
    });
    match p.kind {
        PostType::Sidecar(n) => {
            node["edge_sidecar_to_children"] = json!({"edges": (0..n).map(|k| json!({"node": {
                "__typename": "GraphImage", "id": format!("{}{k}", p.id),
                "display_url": format!("https://scontent.sim.instagram.test/v/t51/{}_{k}_n.jpg", p.id),
                "is_video": false}})).collect::<Vec<_>>()});
        }
        PostType::Video => {
            node["video_url"] = json!(format!(
                "https://scontent.sim.instagram.test/v/t50/{}_n.mp4",
                p.id
            ));
            node["video_view_count"] = json!(p.likes * 7);
        }
        PostType::Image => {}
    }
    node
}

/// A comment with its replies (`edge_threaded_comments`), as Instagram nests them.
pub(super) fn comment_node(sim: &Sim, cm: &crate::data::Comment) -> Value {
    let owner = &sim.data.users[cm.owner as usize];
    let replies: Vec<Value> = sim
        .data
        .replies(cm)
        .into_iter()
        .map(|(id, who, created_at, likes)| {
            let who = &sim.data.users[who as usize];
            json!({"node": {"id": id.to_string(), "text": format!("@{} agreed", owner.username),
                "created_at": created_at,
                "owner": {"id": who.id.to_string(), "username": who.username, "profile_pic_url": who.profile_pic_url()},
                "edge_liked_by": {"count": likes}}})
        })
        .collect();
    json!({"id": cm.id.to_string(), "text": cm.text, "created_at": cm.created_at,
        "owner": {"id": owner.id.to_string(), "username": owner.username, "profile_pic_url": owner.profile_pic_url()},
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
    let end = (start + first).min(total);
    let has_next = end < total;
    let info = json!({
        "has_next_page": has_next,
        "end_cursor": if has_next { Value::String(encode_cursor(tag, owner, end)) } else { Value::Null },
    });
    (start, end, info)
}
