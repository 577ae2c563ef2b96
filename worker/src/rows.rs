//! Instagram's answers read into result rows: users, posts, comments and story items, from the
//! web GraphQL and the mobile API's shapes alike.
//!
//! It decodes only; it must not talk to PostgreSQL. Storing the rows (and every other statement on
//! the `ig_*` tables) belongs to `trawl_shared::results`, which must not know these shapes.

use chrono::{DateTime, Utc};
use serde_json::Value;
pub use trawl_shared::results::{CommentRow, PostRow, PostSource, StoryRow, UserRow};

/// An answer that does not have the shape the crawler expects.
#[derive(Debug, thiserror::Error)]
#[error("unexpected answer from Instagram: {0}")]
pub struct ShapeError(pub String);

/// Reads an id that Instagram sends as a string or a number.
pub fn id(v: &Value) -> Option<i64> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_i64())
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// A Unix time, if it falls in years 1 to 9999: outside them PostgreSQL cannot read the time
/// back (it has no year 0 and no signed or five-digit years), so an absurd value sent by a
/// server is left out (the raw JSON keeps it) rather than making the whole page unstorable.
fn time(v: &Value) -> Option<DateTime<Utc>> {
    const YEAR_1: i64 = -62_135_596_800;
    const YEAR_10000: i64 = 253_402_300_800;
    v.as_i64()
        .filter(|t| (YEAR_1..YEAR_10000).contains(t))
        .and_then(|t| DateTime::from_timestamp(t, 0))
}

// The row types live in shared, which must not know Instagram's shapes, so decoding is added to
// them here as one trait per type (callers keep writing `UserRow::from_web(..)`).

pub trait DecodeUser: Sized {
    /// A web user object (profile info, a follower list entry, a comment owner).
    fn from_web(u: &Value) -> Result<Self, ShapeError>;
}

pub trait DecodePost: Sized {
    /// A post node of the web GraphQL answers.
    fn from_node(n: &Value) -> Result<Self, ShapeError>;
    /// A post as the mobile API and the web app's newer queries describe it (`code`, `pk`,
    /// `media_type` 1/2/8, `taken_at`, `caption.text`, `like_count`, `comment_count`, `user`).
    fn from_media(m: &Value) -> Result<Self, ShapeError>;
}

pub trait DecodeComment: Sized {
    /// A top-level comment and its threaded replies.
    fn thread(shortcode: &str, node: &Value) -> Result<Vec<Self>, ShapeError>;
    /// A comment (or reply) as the mobile API lists it: `pk`, `created_at`, `text`,
    /// `comment_like_count`, `user{pk, username}`.
    fn from_mobile(shortcode: &str, c: &Value, parent_id: Option<i64>) -> Result<Self, ShapeError>;
    /// One comment or reply of a web GraphQL page (replies are not followed).
    fn one(shortcode: &str, n: &Value, parent_id: Option<i64>) -> Result<Self, ShapeError>;
}

pub trait DecodeStory: Sized {
    /// A story item, current or kept in `highlight` (id, title).
    fn from_item(
        owner_id: i64,
        highlight: Option<(&str, &str)>,
        item: &Value,
    ) -> Result<Self, ShapeError>;
}

impl DecodeUser for UserRow {
    fn from_web(u: &Value) -> Result<Self, ShapeError> {
        let id = id(&u["id"]).ok_or_else(|| ShapeError("a user without an id".into()))?;
        let username = text(&u["username"])
            .ok_or_else(|| ShapeError(format!("user {id} without a username")))?;
        let mut raw = u.clone();
        // The first page of posts travels with the profile; posts are stored on their own.
        if let Some(obj) = raw.as_object_mut() {
            obj.shift_remove("edge_owner_to_timeline_media");
        }
        Ok(Self {
            id,
            username,
            full_name: text(&u["full_name"]),
            is_private: u["is_private"].as_bool(),
            is_verified: u["is_verified"].as_bool(),
            biography: text(&u["biography"]),
            follower_count: u["edge_followed_by"]["count"].as_i64(),
            following_count: u["edge_follow"]["count"].as_i64(),
            post_count: u["edge_owner_to_timeline_media"]["count"].as_i64(),
            raw,
            profile_as_sent: None,
            app_user_as_sent: None,
        })
    }
}

impl DecodePost for PostRow {
    fn from_node(n: &Value) -> Result<Self, ShapeError> {
        let id = id(&n["id"]).ok_or_else(|| ShapeError("a post without an id".into()))?;
        let shortcode = text(&n["shortcode"])
            .ok_or_else(|| ShapeError(format!("post {id} without a shortcode")))?;
        let owner_id =
            id_of_owner(n).ok_or_else(|| ShapeError(format!("post {id} without an owner")))?;
        let mut raw = n.clone();
        // Comments embedded in a post page are stored as comments, not twice.
        if let Some(obj) = raw.as_object_mut() {
            obj.shift_remove("edge_media_to_parent_comment");
        }
        Ok(Self {
            id,
            shortcode,
            owner_id,
            owner_username: text(&n["owner"]["username"]),
            typename: text(&n["__typename"]),
            taken_at: time(&n["taken_at_timestamp"]),
            caption: text(&n["edge_media_to_caption"]["edges"][0]["node"]["text"]),
            like_count: n["edge_media_preview_like"]["count"]
                .as_i64()
                .or_else(|| n["edge_liked_by"]["count"].as_i64()),
            comment_count: n["edge_media_to_comment"]["count"].as_i64(),
            is_video: n["is_video"].as_bool(),
            raw,
            source: PostSource::Other,
        })
    }

    fn from_media(m: &Value) -> Result<Self, ShapeError> {
        let pk = id(&m["pk"])
            .or_else(|| id(&m["id"]))
            .ok_or_else(|| ShapeError("a post without a pk".into()))?;
        let shortcode =
            text(&m["code"]).ok_or_else(|| ShapeError(format!("post {pk} without a code")))?;
        let owner_id = id(&m["user"]["pk"])
            .or_else(|| id(&m["user"]["id"]))
            .ok_or_else(|| ShapeError(format!("post {pk} without a user")))?;
        let typename = match m["media_type"].as_i64() {
            Some(1) => Some("GraphImage"),
            Some(2) => Some("GraphVideo"),
            Some(8) => Some("GraphSidecar"),
            _ => None,
        };
        Ok(Self {
            id: pk,
            shortcode,
            owner_id,
            owner_username: text(&m["user"]["username"]),
            typename: typename.map(str::to_owned),
            taken_at: time(&m["taken_at"]),
            caption: text(&m["caption"]["text"]),
            like_count: m["like_count"].as_i64(),
            comment_count: m["comment_count"].as_i64(),
            is_video: typename.map(|t| t == "GraphVideo"),
            raw: m.clone(),
            source: PostSource::Other,
        })
    }
}

fn id_of_owner(n: &Value) -> Option<i64> {
    id(&n["owner"]["id"])
}

impl DecodeComment for CommentRow {
    fn thread(shortcode: &str, node: &Value) -> Result<Vec<Self>, ShapeError> {
        let top = Self::one(shortcode, node, None)?;
        let mut rows = vec![top];
        let parent = rows[0].id;
        if let Some(edges) = node["edge_threaded_comments"]["edges"].as_array() {
            for e in edges {
                rows.push(Self::one(shortcode, &e["node"], Some(parent))?);
            }
        }
        if let Some(obj) = rows[0].raw.as_object_mut() {
            obj.shift_remove("edge_threaded_comments");
        }
        Ok(rows)
    }

    fn from_mobile(shortcode: &str, c: &Value, parent_id: Option<i64>) -> Result<Self, ShapeError> {
        let pk = id(&c["pk"])
            .or_else(|| id(&c["id"]))
            .ok_or_else(|| ShapeError("a comment without a pk".into()))?;
        let mut raw = c.clone();
        // Replies are stored as their own rows.
        if let Some(obj) = raw.as_object_mut() {
            obj.shift_remove("preview_child_comments");
        }
        Ok(Self {
            id: pk,
            post_shortcode: shortcode.to_owned(),
            parent_id,
            owner_id: id(&c["user"]["pk"]).or_else(|| id(&c["user"]["id"])),
            owner_username: text(&c["user"]["username"]),
            text: text(&c["text"]),
            created_at: time(&c["created_at"]),
            like_count: c["comment_like_count"].as_i64(),
            raw,
        })
    }

    fn one(shortcode: &str, n: &Value, parent_id: Option<i64>) -> Result<Self, ShapeError> {
        let id = id(&n["id"]).ok_or_else(|| ShapeError("a comment without an id".into()))?;
        Ok(Self {
            id,
            post_shortcode: shortcode.to_owned(),
            parent_id,
            owner_id: id_of_owner(n),
            owner_username: text(&n["owner"]["username"]),
            text: text(&n["text"]),
            created_at: time(&n["created_at"]),
            like_count: n["edge_liked_by"]["count"].as_i64(),
            raw: n.clone(),
        })
    }
}

impl DecodeStory for StoryRow {
    fn from_item(
        owner_id: i64,
        highlight: Option<(&str, &str)>,
        item: &Value,
    ) -> Result<Self, ShapeError> {
        let id = text(&item["id"])
            .or_else(|| item["pk"].as_i64().map(|p| p.to_string()))
            .ok_or_else(|| ShapeError("a story item without an id".into()))?;
        Ok(Self {
            id,
            owner_id,
            highlight_id: highlight.map(|h| h.0.to_owned()),
            highlight_title: highlight.map(|h| h.1.to_owned()),
            taken_at: time(&item["taken_at"]),
            expiring_at: time(&item["expiring_at"]),
            media_type: item["media_type"]
                .as_i64()
                .and_then(|t| i32::try_from(t).ok()),
            raw: item.clone(),
            web_item_as_sent: None,
            reel_user_as_sent: None,
        })
    }
}
