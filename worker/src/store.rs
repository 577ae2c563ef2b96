//! Results: Instagram items read from answers into rows, and upserted by Instagram id (so an item
//! is stored once however often its page is fetched), with the raw JSON, when it was last seen and
//! by which job. Every write takes the caller's transaction, which also holds the checkpoint.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;

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

#[derive(Debug, Clone, Serialize)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub full_name: Option<String>,
    pub is_private: Option<bool>,
    pub is_verified: Option<bool>,
    pub biography: Option<String>,
    pub follower_count: Option<i64>,
    pub following_count: Option<i64>,
    pub post_count: Option<i64>,
    pub raw: Value,
}

impl UserRow {
    /// A web user object (profile info, a follower list entry, a comment owner).
    pub fn from_web(u: &Value) -> Result<Self, ShapeError> {
        let id = id(&u["id"]).ok_or_else(|| ShapeError("a user without an id".into()))?;
        let username = text(&u["username"])
            .ok_or_else(|| ShapeError(format!("user {id} without a username")))?;
        let mut raw = u.clone();
        // The first page of posts travels with the profile; posts are stored on their own.
        if let Some(obj) = raw.as_object_mut() {
            obj.remove("edge_owner_to_timeline_media");
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
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PostRow {
    pub id: i64,
    pub shortcode: String,
    pub owner_id: i64,
    pub owner_username: Option<String>,
    pub typename: Option<String>,
    pub taken_at: Option<DateTime<Utc>>,
    pub caption: Option<String>,
    pub like_count: Option<i64>,
    pub comment_count: Option<i64>,
    pub is_video: Option<bool>,
    pub raw: Value,
}

impl PostRow {
    pub fn from_node(n: &Value) -> Result<Self, ShapeError> {
        let id = id(&n["id"]).ok_or_else(|| ShapeError("a post without an id".into()))?;
        let shortcode = text(&n["shortcode"])
            .ok_or_else(|| ShapeError(format!("post {id} without a shortcode")))?;
        let owner_id =
            id_of_owner(n).ok_or_else(|| ShapeError(format!("post {id} without an owner")))?;
        let mut raw = n.clone();
        // Comments embedded in a post page are stored as comments, not twice.
        if let Some(obj) = raw.as_object_mut() {
            obj.remove("edge_media_to_parent_comment");
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
        })
    }
}

impl PostRow {
    /// A post as the mobile API and the web app's newer queries describe it (`code`, `pk`,
    /// `media_type` 1/2/8, `taken_at`, `caption.text`, `like_count`, `comment_count`, `user`).
    pub fn from_media(m: &Value) -> Result<Self, ShapeError> {
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
        })
    }
}

fn id_of_owner(n: &Value) -> Option<i64> {
    id(&n["owner"]["id"])
}

#[derive(Debug, Clone, Serialize)]
pub struct CommentRow {
    pub id: i64,
    pub post_shortcode: String,
    pub parent_id: Option<i64>,
    pub owner_id: Option<i64>,
    pub owner_username: Option<String>,
    pub text: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub like_count: Option<i64>,
    pub raw: Value,
}

impl CommentRow {
    /// A top-level comment and its threaded replies.
    pub fn thread(shortcode: &str, node: &Value) -> Result<Vec<Self>, ShapeError> {
        let top = Self::one(shortcode, node, None)?;
        let mut rows = vec![top];
        let parent = rows[0].id;
        if let Some(edges) = node["edge_threaded_comments"]["edges"].as_array() {
            for e in edges {
                rows.push(Self::one(shortcode, &e["node"], Some(parent))?);
            }
        }
        if let Some(obj) = rows[0].raw.as_object_mut() {
            obj.remove("edge_threaded_comments");
        }
        Ok(rows)
    }

    /// A comment (or reply) as the mobile API lists it: `pk`, `created_at`, `text`,
    /// `comment_like_count`, `user{pk, username}`.
    pub fn from_mobile(
        shortcode: &str,
        c: &Value,
        parent_id: Option<i64>,
    ) -> Result<Self, ShapeError> {
        let pk = id(&c["pk"])
            .or_else(|| id(&c["id"]))
            .ok_or_else(|| ShapeError("a comment without a pk".into()))?;
        let mut raw = c.clone();
        // Replies are stored as their own rows.
        if let Some(obj) = raw.as_object_mut() {
            obj.remove("preview_child_comments");
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

    /// One comment or reply of a web GraphQL page (replies are not followed).
    pub fn one(shortcode: &str, n: &Value, parent_id: Option<i64>) -> Result<Self, ShapeError> {
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

#[derive(Debug, Clone, Serialize)]
pub struct StoryRow {
    pub id: String,
    pub owner_id: i64,
    pub highlight_id: Option<String>,
    pub highlight_title: Option<String>,
    pub taken_at: Option<DateTime<Utc>>,
    pub expiring_at: Option<DateTime<Utc>>,
    pub media_type: Option<i32>,
    pub raw: Value,
}

impl StoryRow {
    pub fn from_item(
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
        })
    }
}

/// The last of each id wins, so one statement never touches a row twice.
fn dedup<T>(rows: &[T], key: impl Fn(&T) -> String) -> Vec<&T> {
    let mut seen = HashSet::new();
    let mut out: Vec<&T> = rows.iter().rev().filter(|r| seen.insert(key(r))).collect();
    out.reverse();
    out
}

/// Runs one upsert whose `$1` is the rows as a JSON array (read with `jsonb_to_recordset`) and
/// whose `$2` is the job id.
async fn upsert_records<T: Serialize>(
    tx: &mut PgConnection,
    job_id: i64,
    rows: Vec<&T>,
    sql: &'static str,
) -> Result<u64, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let json = serde_json::to_value(&rows).map_err(|e| sqlx::Error::Encode(e.into()))?;
    let done = sqlx::query(sql)
        .bind(json)
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
    Ok(done.rows_affected())
}

pub async fn upsert_users(
    tx: &mut PgConnection,
    job_id: i64,
    rows: &[UserRow],
) -> Result<u64, sqlx::Error> {
    upsert_records(
        tx,
        job_id,
        dedup(rows, |r| r.id.to_string()),
        "INSERT INTO ig_users (id, username, full_name, is_private, is_verified, biography,
                               follower_count, following_count, post_count, raw, last_job_id)
         SELECT id, username, full_name, is_private, is_verified, biography, follower_count,
                following_count, post_count, raw, $2
         FROM jsonb_to_recordset($1) AS x(id bigint, username text, full_name text,
              is_private boolean, is_verified boolean, biography text, follower_count bigint,
              following_count bigint, post_count bigint, raw jsonb)
         ON CONFLICT (id) DO UPDATE SET
             username = EXCLUDED.username,
             full_name = coalesce(EXCLUDED.full_name, ig_users.full_name),
             is_private = coalesce(EXCLUDED.is_private, ig_users.is_private),
             is_verified = coalesce(EXCLUDED.is_verified, ig_users.is_verified),
             biography = coalesce(EXCLUDED.biography, ig_users.biography),
             follower_count = coalesce(EXCLUDED.follower_count, ig_users.follower_count),
             following_count = coalesce(EXCLUDED.following_count, ig_users.following_count),
             post_count = coalesce(EXCLUDED.post_count, ig_users.post_count),
             raw = ig_users.raw || EXCLUDED.raw,
             last_seen_at = now(), last_job_id = EXCLUDED.last_job_id",
    )
    .await
}

pub async fn upsert_posts(
    tx: &mut PgConnection,
    job_id: i64,
    rows: &[PostRow],
) -> Result<u64, sqlx::Error> {
    upsert_records(
        tx,
        job_id,
        dedup(rows, |r| r.id.to_string()),
        "INSERT INTO ig_posts (id, shortcode, owner_id, owner_username, typename, taken_at, caption,
                               like_count, comment_count, is_video, raw, last_job_id)
         SELECT id, shortcode, owner_id, owner_username, typename, taken_at, caption, like_count,
                comment_count, is_video, raw, $2
         FROM jsonb_to_recordset($1) AS x(id bigint, shortcode text, owner_id bigint,
              owner_username text, typename text, taken_at timestamptz, caption text,
              like_count bigint, comment_count bigint, is_video boolean, raw jsonb)
         ON CONFLICT (id) DO UPDATE SET
             shortcode = EXCLUDED.shortcode, owner_id = EXCLUDED.owner_id,
             owner_username = coalesce(EXCLUDED.owner_username, ig_posts.owner_username),
             typename = coalesce(EXCLUDED.typename, ig_posts.typename),
             taken_at = coalesce(EXCLUDED.taken_at, ig_posts.taken_at),
             caption = coalesce(EXCLUDED.caption, ig_posts.caption),
             like_count = coalesce(EXCLUDED.like_count, ig_posts.like_count),
             comment_count = coalesce(EXCLUDED.comment_count, ig_posts.comment_count),
             is_video = coalesce(EXCLUDED.is_video, ig_posts.is_video),
             raw = ig_posts.raw || EXCLUDED.raw,
             last_seen_at = now(), last_job_id = EXCLUDED.last_job_id",
    )
    .await
}

pub async fn upsert_comments(
    tx: &mut PgConnection,
    job_id: i64,
    rows: &[CommentRow],
) -> Result<u64, sqlx::Error> {
    upsert_records(
        tx,
        job_id,
        dedup(rows, |r| r.id.to_string()),
        "INSERT INTO ig_comments (id, post_shortcode, parent_id, owner_id, owner_username, text,
                                  created_at, like_count, raw, last_job_id)
         SELECT id, post_shortcode, parent_id, owner_id, owner_username, text, created_at,
                like_count, raw, $2
         FROM jsonb_to_recordset($1) AS x(id bigint, post_shortcode text, parent_id bigint,
              owner_id bigint, owner_username text, text text, created_at timestamptz,
              like_count bigint, raw jsonb)
         ON CONFLICT (id) DO UPDATE SET
             post_shortcode = EXCLUDED.post_shortcode, parent_id = EXCLUDED.parent_id,
             owner_id = EXCLUDED.owner_id, owner_username = EXCLUDED.owner_username,
             text = EXCLUDED.text, created_at = EXCLUDED.created_at,
             like_count = EXCLUDED.like_count, raw = EXCLUDED.raw,
             last_seen_at = now(), last_job_id = EXCLUDED.last_job_id",
    )
    .await
}

/// Follow edges: (follower, followee).
pub async fn upsert_follows(
    tx: &mut PgConnection,
    job_id: i64,
    edges: &[(i64, i64)],
) -> Result<u64, sqlx::Error> {
    let edges = dedup(edges, |e| format!("{}:{}", e.0, e.1));
    if edges.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "INSERT INTO ig_follows (follower_id, followee_id, last_job_id)
         SELECT f, e, $3 FROM UNNEST($1::bigint[], $2::bigint[]) AS x(f, e)
         ON CONFLICT (follower_id, followee_id) DO UPDATE SET
             last_seen_at = now(), last_job_id = EXCLUDED.last_job_id",
    )
    .bind(edges.iter().map(|e| e.0).collect::<Vec<_>>())
    .bind(edges.iter().map(|e| e.1).collect::<Vec<_>>())
    .bind(job_id)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected())
}

pub async fn upsert_hashtag_posts(
    tx: &mut PgConnection,
    job_id: i64,
    tag: &str,
    post_ids: &[i64],
) -> Result<u64, sqlx::Error> {
    let mut ids = post_ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "INSERT INTO ig_hashtag_posts (tag, post_id, last_job_id)
         SELECT $1, p, $3 FROM UNNEST($2::bigint[]) AS x(p)
         ON CONFLICT (tag, post_id) DO UPDATE SET
             last_seen_at = now(), last_job_id = EXCLUDED.last_job_id",
    )
    .bind(tag)
    .bind(&ids)
    .bind(job_id)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected())
}

pub async fn upsert_stories(
    tx: &mut PgConnection,
    job_id: i64,
    rows: &[StoryRow],
) -> Result<u64, sqlx::Error> {
    upsert_records(
        tx,
        job_id,
        dedup(rows, |r| r.id.clone()),
        "INSERT INTO ig_stories (id, owner_id, highlight_id, highlight_title, taken_at,
                                 expiring_at, media_type, raw, last_job_id)
         SELECT id, owner_id, highlight_id, highlight_title, taken_at, expiring_at, media_type,
                raw, $2
         FROM jsonb_to_recordset($1) AS x(id text, owner_id bigint, highlight_id text,
              highlight_title text, taken_at timestamptz, expiring_at timestamptz,
              media_type integer, raw jsonb)
         ON CONFLICT (id) DO UPDATE SET
             highlight_id = coalesce(EXCLUDED.highlight_id, ig_stories.highlight_id),
             highlight_title = coalesce(EXCLUDED.highlight_title, ig_stories.highlight_title),
             taken_at = EXCLUDED.taken_at, expiring_at = EXCLUDED.expiring_at,
             media_type = EXCLUDED.media_type, raw = EXCLUDED.raw,
             last_seen_at = now(), last_job_id = EXCLUDED.last_job_id",
    )
    .await
}

/// Which item a page's listing is made of, for the fast-update check.
#[derive(Debug, Clone, Copy)]
pub enum Listing {
    Posts,
    Comments,
    /// Follow edges from or to `subject`: the ids are the other ends.
    Followers {
        subject: i64,
    },
    Followees {
        subject: i64,
    },
}

/// Of `ids`, those already stored by a job other than `job_id` (a resumed job's own items do not
/// count: they were stored by an earlier attempt of this very crawl).
pub async fn stored_by_others(
    tx: &mut PgConnection,
    listing: Listing,
    job_id: i64,
    ids: &[i64],
) -> Result<HashSet<i64>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let (sql, subject) = match listing {
        Listing::Posts => (
            "SELECT id FROM ig_posts WHERE id = ANY($1) AND last_job_id IS DISTINCT FROM $2",
            None,
        ),
        Listing::Comments => (
            "SELECT id FROM ig_comments WHERE id = ANY($1) AND last_job_id IS DISTINCT FROM $2",
            None,
        ),
        Listing::Followers { subject } => (
            "SELECT follower_id FROM ig_follows
             WHERE followee_id = $3 AND follower_id = ANY($1) AND last_job_id IS DISTINCT FROM $2",
            Some(subject),
        ),
        Listing::Followees { subject } => (
            "SELECT followee_id FROM ig_follows
             WHERE follower_id = $3 AND followee_id = ANY($1) AND last_job_id IS DISTINCT FROM $2",
            Some(subject),
        ),
    };
    let mut query = sqlx::query_scalar(sql).bind(ids).bind(job_id);
    if let Some(subject) = subject {
        query = query.bind(subject);
    }
    let found: Vec<i64> = query.fetch_all(&mut *tx).await?;
    Ok(found.into_iter().collect())
}

/// Counts of what one page stored, for metrics.
#[derive(Debug, Default, Clone)]
pub struct Stored(pub HashMap<&'static str, u64>);

impl Stored {
    pub fn add(&mut self, item: &'static str, n: u64) {
        *self.0.entry(item).or_default() += n;
    }
}
