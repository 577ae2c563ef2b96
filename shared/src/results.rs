//! Crawl results: the `ig_*` tables and the v1 platform's `v1_items` and `v1_follows`. This module owns every statement that touches them: the
//! upserts a worker makes while it stores a page, the reads `trawl export` streams, and the counts
//! `trawl demo` shows. A new column or table changes here and nowhere else.
//!
//! Rows are keyed by Instagram's id and upserted, so an item is stored once however often its page
//! is fetched; each keeps the raw JSON it was read from, when it was first and last seen, and the
//! job that saw it last. Every write takes the caller's connection, so a page's rows commit in the
//! same transaction as the job's checkpoint.
//!
//! It must not know Instagram's wire format: the worker decodes answers into the row types here.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use futures_util::Stream;
use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool};

/// Errors callers branch on: a row that cannot be encoded is a bug in the caller's data, not a
/// database outage worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot encode {table} rows as JSON: {source}")]
    Encode {
        table: &'static str,
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone, Default, Serialize)]
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
    /// The profile query's `data.user` as Instagram sent it (key order kept), when this row was
    /// read from it.
    pub profile_as_sent: Option<Value>,
    /// The app's `users/<id>/info/` `user`, when the crawl asked for it.
    pub app_user_as_sent: Option<Value>,
}

/// Which answer a post row was read from. The Instaloader export needs the profile listing's
/// object and the post query's object apart (the reference client keeps both), so each is kept
/// as sent in a column of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PostSource {
    /// A profile's posts listing (the logged-in web app's timeline query).
    Listing,
    /// The post's own query, by shortcode.
    Full,
    /// Anything else (hashtag listings, web nodes).
    #[default]
    Other,
}

#[derive(Debug, Clone, Default, Serialize)]
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
    pub source: PostSource,
}

/// `raw` is also kept as sent (`ig_comments.as_sent`).
#[derive(Debug, Clone, Default, Serialize)]
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

/// `raw` (the app's item) is also kept as sent (`ig_stories.app_item_as_sent`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoryRow {
    pub id: String,
    pub owner_id: i64,
    pub highlight_id: Option<String>,
    pub highlight_title: Option<String>,
    pub taken_at: Option<DateTime<Utc>>,
    pub expiring_at: Option<DateTime<Utc>>,
    pub media_type: Option<i32>,
    pub raw: Value,
    /// The web GraphQL item of the same id (the stories or highlight items query's).
    pub web_item_as_sent: Option<Value>,
    /// A current story's web reel `user` object.
    pub reel_user_as_sent: Option<Value>,
}

/// The last of each id wins, so one statement never touches a row twice (PostgreSQL refuses an
/// `ON CONFLICT DO UPDATE` that would).
fn dedup<T>(rows: &[T], key: impl Fn(&T) -> String) -> Vec<&T> {
    let mut seen = HashSet::new();
    let mut out: Vec<&T> = rows.iter().rev().filter(|r| seen.insert(key(r))).collect();
    out.reverse();
    out
}

/// Runs one upsert whose `$1` is the rows as a JSON array (read with `json_to_recordset`) and
/// whose `$2` is the job id: one round trip per table per page, whatever the page's size. The
/// array goes as `json` text, not `jsonb`, so that the `*_as_sent` columns receive each object
/// with its keys in the order they were read.
async fn upsert_records<T: Serialize>(
    tx: &mut PgConnection,
    table: &'static str,
    job_id: i64,
    rows: Vec<&T>,
    sql: &'static str,
) -> Result<u64, ResultsError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let json =
        serde_json::to_string(&rows).map_err(|source| ResultsError::Encode { table, source })?;
    let done = sqlx::query(sql)
        .bind(json)
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
    Ok(done.rows_affected())
}

const UPSERT_USERS: &str =
    "INSERT INTO ig_users (id, username, full_name, is_private, is_verified, biography,
                           follower_count, following_count, post_count, raw, profile_as_sent,
                           app_user_as_sent, last_job_id)
     SELECT id, username, full_name, is_private, is_verified, biography, follower_count,
            following_count, post_count, raw::jsonb, profile_as_sent, app_user_as_sent, $2
     FROM json_to_recordset($1::json) AS x(id bigint, username text, full_name text,
          is_private boolean, is_verified boolean, biography text, follower_count bigint,
          following_count bigint, post_count bigint, raw json, profile_as_sent json,
          app_user_as_sent json)
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
         profile_as_sent = coalesce(EXCLUDED.profile_as_sent, ig_users.profile_as_sent),
         app_user_as_sent = coalesce(EXCLUDED.app_user_as_sent, ig_users.app_user_as_sent),
         last_seen_at = now(), last_job_id = EXCLUDED.last_job_id";

/// Users; a field a later page leaves out keeps what an earlier page stored (a follower list
/// entry knows less than a profile page).
#[tracing::instrument(level = "debug", skip(tx, rows), fields(rows = rows.len()),
    err(level = "warn"))]
pub async fn upsert_users(
    tx: &mut PgConnection,
    job_id: i64,
    rows: &[UserRow],
) -> Result<u64, ResultsError> {
    let rows = dedup(rows, |r| r.id.to_string());
    upsert_records(tx, "ig_users", job_id, rows, UPSERT_USERS).await
}

const UPSERT_POSTS: &str =
    "INSERT INTO ig_posts (id, shortcode, owner_id, owner_username, typename, taken_at, caption,
                           like_count, comment_count, is_video, raw, listing_as_sent,
                           full_as_sent, last_job_id)
     SELECT id, shortcode, owner_id, owner_username, typename, taken_at, caption, like_count,
            comment_count, is_video, raw::jsonb,
            CASE WHEN source = 'listing' THEN raw END, CASE WHEN source = 'full' THEN raw END, $2
     FROM json_to_recordset($1::json) AS x(id bigint, shortcode text, owner_id bigint,
          owner_username text, typename text, taken_at timestamptz, caption text,
          like_count bigint, comment_count bigint, is_video boolean, raw json, source text)
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
         listing_as_sent = coalesce(EXCLUDED.listing_as_sent, ig_posts.listing_as_sent),
         full_as_sent = coalesce(EXCLUDED.full_as_sent, ig_posts.full_as_sent),
         last_seen_at = now(), last_job_id = EXCLUDED.last_job_id";

#[tracing::instrument(level = "debug", skip(tx, rows), fields(rows = rows.len()),
    err(level = "warn"))]
pub async fn upsert_posts(
    tx: &mut PgConnection,
    job_id: i64,
    rows: &[PostRow],
) -> Result<u64, ResultsError> {
    let rows = dedup(rows, |r| r.id.to_string());
    upsert_records(tx, "ig_posts", job_id, rows, UPSERT_POSTS).await
}

const UPSERT_COMMENTS: &str =
    "INSERT INTO ig_comments (id, post_shortcode, parent_id, owner_id, owner_username, text,
                              created_at, like_count, raw, as_sent, last_job_id)
     SELECT id, post_shortcode, parent_id, owner_id, owner_username, text, created_at,
            like_count, raw::jsonb, raw, $2
     FROM json_to_recordset($1::json) AS x(id bigint, post_shortcode text, parent_id bigint,
          owner_id bigint, owner_username text, text text, created_at timestamptz,
          like_count bigint, raw json)
     ON CONFLICT (id) DO UPDATE SET
         post_shortcode = EXCLUDED.post_shortcode, parent_id = EXCLUDED.parent_id,
         owner_id = EXCLUDED.owner_id, owner_username = EXCLUDED.owner_username,
         text = EXCLUDED.text, created_at = EXCLUDED.created_at,
         like_count = EXCLUDED.like_count, raw = EXCLUDED.raw, as_sent = EXCLUDED.as_sent,
         last_seen_at = now(), last_job_id = EXCLUDED.last_job_id";

#[tracing::instrument(level = "debug", skip(tx, rows), fields(rows = rows.len()),
    err(level = "warn"))]
pub async fn upsert_comments(
    tx: &mut PgConnection,
    job_id: i64,
    rows: &[CommentRow],
) -> Result<u64, ResultsError> {
    let rows = dedup(rows, |r| r.id.to_string());
    upsert_records(tx, "ig_comments", job_id, rows, UPSERT_COMMENTS).await
}

const UPSERT_STORIES: &str =
    "INSERT INTO ig_stories (id, owner_id, highlight_id, highlight_title, taken_at,
                             expiring_at, media_type, raw, app_item_as_sent, web_item_as_sent,
                             reel_user_as_sent, last_job_id)
     SELECT id, owner_id, highlight_id, highlight_title, taken_at, expiring_at, media_type,
            raw::jsonb, raw, web_item_as_sent, reel_user_as_sent, $2
     FROM json_to_recordset($1::json) AS x(id text, owner_id bigint, highlight_id text,
          highlight_title text, taken_at timestamptz, expiring_at timestamptz,
          media_type integer, raw json, web_item_as_sent json, reel_user_as_sent json)
     ON CONFLICT (id) DO UPDATE SET
         highlight_id = coalesce(EXCLUDED.highlight_id, ig_stories.highlight_id),
         highlight_title = coalesce(EXCLUDED.highlight_title, ig_stories.highlight_title),
         taken_at = EXCLUDED.taken_at, expiring_at = EXCLUDED.expiring_at,
         media_type = EXCLUDED.media_type, raw = EXCLUDED.raw,
         app_item_as_sent = EXCLUDED.app_item_as_sent,
         web_item_as_sent = coalesce(EXCLUDED.web_item_as_sent, ig_stories.web_item_as_sent),
         reel_user_as_sent = coalesce(EXCLUDED.reel_user_as_sent, ig_stories.reel_user_as_sent),
         last_seen_at = now(), last_job_id = EXCLUDED.last_job_id";

#[tracing::instrument(level = "debug", skip(tx, rows), fields(rows = rows.len()),
    err(level = "warn"))]
pub async fn upsert_stories(
    tx: &mut PgConnection,
    job_id: i64,
    rows: &[StoryRow],
) -> Result<u64, ResultsError> {
    let rows = dedup(rows, |r| r.id.clone());
    upsert_records(tx, "ig_stories", job_id, rows, UPSERT_STORIES).await
}

/// Follow edges: (follower, followee).
#[tracing::instrument(level = "debug", skip(tx, edges), fields(rows = edges.len()),
    err(level = "warn"))]
pub async fn upsert_follows(
    tx: &mut PgConnection,
    job_id: i64,
    edges: &[(i64, i64)],
) -> Result<u64, ResultsError> {
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

#[tracing::instrument(level = "debug", skip(tx, post_ids), fields(rows = post_ids.len()),
    err(level = "warn"))]
pub async fn upsert_hashtag_posts(
    tx: &mut PgConnection,
    job_id: i64,
    tag: &str,
    post_ids: &[i64],
) -> Result<u64, ResultsError> {
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
#[tracing::instrument(level = "debug", skip(tx, ids), fields(ids = ids.len()), err(level = "warn"))]
pub async fn stored_by_others(
    tx: &mut PgConnection,
    listing: Listing,
    job_id: i64,
    ids: &[i64],
) -> Result<HashSet<i64>, ResultsError> {
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

// ---- Media: the files of an item and the blobs that hold them ----

/// One picture or video of an item, where it was seen. `position` 0 is the item itself, 1.. the
/// children of a sidecar; a video's thumbnail is its `picture`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MediaFile {
    pub position: i32,
    pub variant: MediaVariant,
    pub url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaVariant {
    Picture,
    Video,
}

impl MediaVariant {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaVariant::Picture => "picture",
            MediaVariant::Video => "video",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "picture" => Some(MediaVariant::Picture),
            "video" => Some(MediaVariant::Video),
            _ => None,
        }
    }
}

/// A media row: the file and, once downloaded and verified, its blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRow {
    pub item: String,
    pub file: MediaFile,
    /// SHA-256 (lower-case hex) and size of the stored bytes; `None` until stored.
    pub blob: Option<(String, i64)>,
    /// The CDN's `Last-Modified` for the stored bytes.
    pub last_modified: Option<DateTime<Utc>>,
    /// The CDN's `Content-Type` for the stored bytes.
    pub content_type: Option<String>,
}

/// What the CDN said of a stored file, beside its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CdnHeaders {
    pub last_modified: Option<DateTime<Utc>>,
    pub content_type: Option<String>,
}

/// Records the files an item has, at the URLs just read. A file already stored keeps its blob:
/// a refreshed URL serves the same bytes.
#[tracing::instrument(level = "debug", skip(conn, files), fields(files = files.len()),
    err(level = "warn"))]
pub async fn record_media_files(
    conn: &mut PgConnection,
    job_id: i64,
    item: &str,
    files: &[MediaFile],
) -> Result<u64, ResultsError> {
    if files.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "INSERT INTO ig_media (item, position, variant, url, last_job_id)
         SELECT $1, p, v, u, $5 FROM UNNEST($2::integer[], $3::text[], $4::text[]) AS x(p, v, u)
         ON CONFLICT (item, position, variant) DO UPDATE SET
             url = EXCLUDED.url, last_job_id = EXCLUDED.last_job_id",
    )
    .bind(item)
    .bind(files.iter().map(|f| f.position).collect::<Vec<_>>())
    .bind(files.iter().map(|f| f.variant.as_str()).collect::<Vec<_>>())
    .bind(files.iter().map(|f| f.url.clone()).collect::<Vec<_>>())
    .bind(job_id)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Records that a file's bytes are in the blob store, verified.
#[tracing::instrument(level = "debug", skip(pool), err(level = "warn"))]
pub async fn record_media_blob(
    pool: &PgPool,
    job_id: i64,
    item: &str,
    file: &MediaFile,
    sha256: &str,
    size: i64,
    headers: &CdnHeaders,
) -> Result<(), ResultsError> {
    sqlx::query(
        "INSERT INTO ig_media (item, position, variant, url, sha256, size, stored_at,
                               last_modified, content_type, last_job_id)
         VALUES ($1, $2, $3, $4, $5, $6, now(), $8, $9, $7)
         ON CONFLICT (item, position, variant) DO UPDATE SET
             url = EXCLUDED.url, sha256 = EXCLUDED.sha256, size = EXCLUDED.size,
             stored_at = EXCLUDED.stored_at, last_modified = EXCLUDED.last_modified,
             content_type = EXCLUDED.content_type, last_job_id = EXCLUDED.last_job_id",
    )
    .bind(item)
    .bind(file.position)
    .bind(file.variant.as_str())
    .bind(&file.url)
    .bind(sha256)
    .bind(size)
    .bind(job_id)
    .bind(headers.last_modified)
    .bind(headers.content_type.as_deref())
    .execute(pool)
    .await?;
    Ok(())
}

/// The files of the items `items` (all items when empty), in item and position order.
pub async fn media_files(pool: &PgPool, items: &[String]) -> Result<Vec<MediaRow>, ResultsError> {
    type Row = (
        String,
        i32,
        String,
        String,
        Option<String>,
        Option<i64>,
        Option<DateTime<Utc>>,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT item, position, variant, url, sha256, size, last_modified, content_type
         FROM ig_media
         WHERE cardinality($1::text[]) = 0 OR item = ANY($1)
         ORDER BY item, position, variant",
    )
    .bind(items)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(
            |(item, position, variant, url, sha256, size, last_modified, content_type)| {
                Some(MediaRow {
                    item,
                    file: MediaFile {
                        position,
                        variant: MediaVariant::parse(&variant)?,
                        url,
                    },
                    blob: sha256.zip(size),
                    last_modified,
                    content_type,
                })
            },
        )
        .collect())
}

/// The item a highlight's cover belongs to: the owner of its stored items.
pub async fn highlight_owner(
    pool: &PgPool,
    highlight_id: &str,
) -> Result<Option<i64>, ResultsError> {
    Ok(
        sqlx::query_scalar("SELECT owner_id FROM ig_stories WHERE highlight_id = $1 LIMIT 1")
            .bind(format!("highlight:{highlight_id}"))
            .fetch_optional(pool)
            .await?,
    )
}

/// Files stored and their bytes (a blob several items share counts for each).
pub async fn media_totals(pool: &PgPool) -> Result<(i64, i64), ResultsError> {
    Ok(sqlx::query_as(
        "SELECT count(*), coalesce(sum(size), 0)::bigint FROM ig_media WHERE sha256 IS NOT NULL",
    )
    .fetch_one(pool)
    .await?)
}

/// A stored post's raw JSON, by shortcode.
pub async fn post_raw(pool: &PgPool, shortcode: &str) -> Result<Option<Value>, ResultsError> {
    Ok(
        sqlx::query_scalar("SELECT raw FROM ig_posts WHERE shortcode = $1")
            .bind(shortcode)
            .fetch_optional(pool)
            .await?,
    )
}

/// A stored story or highlight item: its raw JSON, owner, and highlight id if it is kept in one.
pub async fn story_raw(
    pool: &PgPool,
    id: &str,
) -> Result<Option<(Value, i64, Option<String>)>, ResultsError> {
    Ok(
        sqlx::query_as("SELECT raw, owner_id, highlight_id FROM ig_stories WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?,
    )
}

/// A stored user's raw JSON, by username (case-insensitively, as Instagram's usernames are).
pub async fn user_raw(pool: &PgPool, username: &str) -> Result<Option<Value>, ResultsError> {
    Ok(sqlx::query_scalar(
        "SELECT raw FROM ig_users WHERE lower(username) = lower($1)
         ORDER BY last_seen_at DESC LIMIT 1",
    )
    .bind(username)
    .fetch_optional(pool)
    .await?)
}

// ---- Reading for the Instaloader export ----
//
// One profile, post or story item at a time, so that an export's memory stays that of one item
// whatever the archive's size. JSON columns are read into `Value`s that keep their key order (the
// workspace's serde_json has `preserve_order`): the `*_as_sent` columns hold it, `raw` (jsonb)
// does not.

/// A profile as the Instaloader export reads it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ArchivedProfile {
    pub id: i64,
    pub username: String,
    /// What the crawlers stored, normalised and merged (key order not kept).
    pub raw: Value,
    pub profile_as_sent: Option<Value>,
    pub app_user_as_sent: Option<Value>,
}

/// The profiles named (case-insensitively; a name stored for two ids gives the one seen last), or
/// when none is named every stored profile that owns posts or story items, by username.
pub async fn archived_profiles(
    pool: &PgPool,
    usernames: &[String],
) -> Result<Vec<ArchivedProfile>, ResultsError> {
    let usernames: Vec<String> = usernames.iter().map(|u| u.to_lowercase()).collect();
    Ok(sqlx::query_as(
        "SELECT DISTINCT ON (lower(u.username)) u.id, u.username, u.raw, u.profile_as_sent,
                u.app_user_as_sent
         FROM ig_users u
         WHERE CASE WHEN cardinality($1::text[]) = 0
                    THEN EXISTS (SELECT 1 FROM ig_posts p WHERE p.owner_id = u.id)
                         OR EXISTS (SELECT 1 FROM ig_stories s WHERE s.owner_id = u.id)
                    ELSE lower(u.username) = ANY($1) END
         ORDER BY lower(u.username), u.last_seen_at DESC",
    )
    .bind(&usernames)
    .fetch_all(pool)
    .await?)
}

/// The ids of a profile's posts, newest first (the order of its posts listing, pinned posts
/// aside).
pub async fn archived_post_ids(pool: &PgPool, owner_id: i64) -> Result<Vec<i64>, ResultsError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM ig_posts WHERE owner_id = $1 ORDER BY taken_at DESC NULLS LAST, id DESC",
    )
    .bind(owner_id)
    .fetch_all(pool)
    .await?)
}

/// A post as the Instaloader export reads it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ArchivedPost {
    pub id: i64,
    pub shortcode: String,
    pub typename: Option<String>,
    pub taken_at: Option<DateTime<Utc>>,
    pub raw: Value,
    pub listing_as_sent: Option<Value>,
    pub full_as_sent: Option<Value>,
}

pub async fn archived_post(pool: &PgPool, id: i64) -> Result<Option<ArchivedPost>, ResultsError> {
    Ok(sqlx::query_as(
        "SELECT id, shortcode, typename, taken_at, raw, listing_as_sent, full_as_sent
         FROM ig_posts WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// A comment or reply as the Instaloader export reads it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ArchivedComment {
    pub id: i64,
    pub parent_id: Option<i64>,
    pub raw: Value,
    pub as_sent: Option<Value>,
}

/// A post's comments and replies, by id.
pub async fn archived_comments(
    pool: &PgPool,
    shortcode: &str,
) -> Result<Vec<ArchivedComment>, ResultsError> {
    Ok(sqlx::query_as(
        "SELECT id, parent_id, raw, as_sent FROM ig_comments WHERE post_shortcode = $1
         ORDER BY id",
    )
    .bind(shortcode)
    .fetch_all(pool)
    .await?)
}

/// A story or highlight item as the Instaloader export reads it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ArchivedStoryItem {
    pub id: String,
    /// `highlight:ID` for an item kept in a highlight.
    pub highlight_id: Option<String>,
    pub highlight_title: Option<String>,
    pub taken_at: Option<DateTime<Utc>>,
    pub raw: Value,
    pub app_item_as_sent: Option<Value>,
    pub web_item_as_sent: Option<Value>,
    pub reel_user_as_sent: Option<Value>,
}

/// A profile's story items: current stories first, then each highlight's (by highlight id), each
/// oldest first.
pub async fn archived_story_items(
    pool: &PgPool,
    owner_id: i64,
) -> Result<Vec<ArchivedStoryItem>, ResultsError> {
    Ok(sqlx::query_as(
        "SELECT id, highlight_id, highlight_title, taken_at, raw, app_item_as_sent,
                web_item_as_sent, reel_user_as_sent
         FROM ig_stories WHERE owner_id = $1
         ORDER BY highlight_id NULLS FIRST, taken_at, id",
    )
    .bind(owner_id)
    .fetch_all(pool)
    .await?)
}

// ---- The v1 platform ----

/// What a v1 row is (the `item` column of `v1_items`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V1Item {
    User,
    Post,
    Comment,
    Story,
    Notification,
    Hashtag,
    Location,
}

impl V1Item {
    pub fn as_str(self) -> &'static str {
        match self {
            V1Item::User => "user",
            V1Item::Post => "post",
            V1Item::Comment => "comment",
            V1Item::Story => "story",
            V1Item::Notification => "notification",
            V1Item::Hashtag => "hashtag",
            V1Item::Location => "location",
        }
    }
}

/// One v1 item as the API sent it: its id, whom it belongs to (the poster; the post, for a
/// comment; the account, for a notification) and its JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct V1Row {
    pub id: String,
    pub owner_id: Option<String>,
    pub raw: Value,
}

/// v1 items of one kind. A field a later answer leaves out keeps what an earlier one stored (a
/// follower listing knows less of a user than the profile does).
#[tracing::instrument(level = "debug", skip(tx, rows), fields(item = item.as_str(),
    rows = rows.len()), err(level = "warn"))]
pub async fn upsert_v1_items(
    tx: &mut PgConnection,
    job_id: i64,
    item: V1Item,
    rows: &[V1Row],
) -> Result<u64, ResultsError> {
    let rows = dedup(rows, |r| r.id.clone());
    if rows.is_empty() {
        return Ok(0);
    }
    let json = serde_json::to_string(&rows).map_err(|source| ResultsError::Encode {
        table: "v1_items",
        source,
    })?;
    let done = sqlx::query(
        "INSERT INTO v1_items (item, id, owner_id, raw, last_job_id)
         SELECT $3, id, owner_id, raw, $2
         FROM jsonb_to_recordset($1::jsonb) AS x(id text, owner_id text, raw jsonb)
         ON CONFLICT (item, id) DO UPDATE SET
             owner_id = coalesce(EXCLUDED.owner_id, v1_items.owner_id),
             raw = v1_items.raw || EXCLUDED.raw,
             last_seen_at = now(), last_job_id = EXCLUDED.last_job_id",
    )
    .bind(json)
    .bind(job_id)
    .bind(item.as_str())
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected())
}

/// v1 follow edges: (follower id, followee id).
#[tracing::instrument(level = "debug", skip(tx, edges), fields(rows = edges.len()),
    err(level = "warn"))]
pub async fn upsert_v1_follows(
    tx: &mut PgConnection,
    job_id: i64,
    edges: &[(String, String)],
) -> Result<u64, ResultsError> {
    let edges = dedup(edges, |e| format!("{}:{}", e.0, e.1));
    if edges.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "INSERT INTO v1_follows (follower_id, followee_id, last_job_id)
         SELECT f, e, $3 FROM UNNEST($1::text[], $2::text[]) AS x(f, e)
         ON CONFLICT (follower_id, followee_id) DO UPDATE SET
             last_seen_at = now(), last_job_id = EXCLUDED.last_job_id",
    )
    .bind(edges.iter().map(|e| e.0.clone()).collect::<Vec<_>>())
    .bind(edges.iter().map(|e| e.1.clone()).collect::<Vec<_>>())
    .bind(job_id)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected())
}

// ---- Reading for export ----

/// What one export kind is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Users,
    Posts,
    Comments,
    Follows,
    Stories,
    HashtagPosts,
    V1Users,
    V1Posts,
    V1Comments,
    V1Follows,
    V1Stories,
    V1Notifications,
    V1Hashtags,
    V1Locations,
}

/// How a column is read from PostgreSQL and written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Int,
    Text,
    Bool,
    Time,
    /// JSON as PostgreSQL's text, to be written verbatim: re-parsing it could round large numbers.
    Json,
}

use ColumnType::{Bool, Int, Json, Text, Time};

/// One kind's export query and its columns, in output order. Each query takes the target as `$1`
/// and the earliest `last_seen_at` as `$2`, either of them NULL when not given, and returns rows in
/// key order, so the same data always exports byte for byte the same.
pub struct ExportTable {
    pub columns: &'static [(&'static str, ColumnType)],
    sql: &'static str,
    pub singular: &'static str,
    pub plural: &'static str,
}

const USERS: ExportTable = ExportTable {
    columns: &[
        ("id", Int),
        ("username", Text),
        ("full_name", Text),
        ("is_private", Bool),
        ("is_verified", Bool),
        ("biography", Text),
        ("follower_count", Int),
        ("following_count", Int),
        ("post_count", Int),
        ("raw", Json),
        ("first_seen_at", Time),
        ("last_seen_at", Time),
        ("last_job_id", Int),
    ],
    sql: "SELECT id, username, full_name, is_private, is_verified, biography, follower_count,
                 following_count, post_count, raw::text AS raw, first_seen_at, last_seen_at,
                 last_job_id
          FROM ig_users
          WHERE ($1::text IS NULL OR username = $1)
            AND ($2::timestamptz IS NULL OR last_seen_at >= $2)
          ORDER BY id",
    singular: "user",
    plural: "users",
};

// A post's owner is matched by the username stored with the post or, when the post was read
// without one, by the owner's id through ig_users.
const POSTS: ExportTable = ExportTable {
    columns: &[
        ("id", Int),
        ("shortcode", Text),
        ("owner_id", Int),
        ("owner_username", Text),
        ("typename", Text),
        ("taken_at", Time),
        ("caption", Text),
        ("like_count", Int),
        ("comment_count", Int),
        ("is_video", Bool),
        ("raw", Json),
        ("first_seen_at", Time),
        ("last_seen_at", Time),
        ("last_job_id", Int),
    ],
    sql: "SELECT id, shortcode, owner_id, owner_username, typename, taken_at, caption, like_count,
                 comment_count, is_video, raw::text AS raw, first_seen_at, last_seen_at,
                 last_job_id
          FROM ig_posts
          WHERE ($1::text IS NULL OR owner_username = $1
                 OR owner_id IN (SELECT u.id FROM ig_users u WHERE u.username = $1))
            AND ($2::timestamptz IS NULL OR last_seen_at >= $2)
          ORDER BY id",
    singular: "post",
    plural: "posts",
};

const COMMENTS: ExportTable = ExportTable {
    columns: &[
        ("id", Int),
        ("post_shortcode", Text),
        ("parent_id", Int),
        ("owner_id", Int),
        ("owner_username", Text),
        ("text", Text),
        ("created_at", Time),
        ("like_count", Int),
        ("raw", Json),
        ("first_seen_at", Time),
        ("last_seen_at", Time),
        ("last_job_id", Int),
    ],
    sql: "SELECT id, post_shortcode, parent_id, owner_id, owner_username, text, created_at,
                 like_count, raw::text AS raw, first_seen_at, last_seen_at, last_job_id
          FROM ig_comments
          WHERE ($1::text IS NULL OR post_shortcode = $1)
            AND ($2::timestamptz IS NULL OR last_seen_at >= $2)
          ORDER BY id",
    singular: "comment",
    plural: "comments",
};

// Edges store only ids; the usernames (when the users were stored too) make them readable.
const FOLLOWS: ExportTable = ExportTable {
    columns: &[
        ("follower_id", Int),
        ("follower_username", Text),
        ("followee_id", Int),
        ("followee_username", Text),
        ("first_seen_at", Time),
        ("last_seen_at", Time),
        ("last_job_id", Int),
    ],
    sql: "SELECT f.follower_id, fr.username AS follower_username, f.followee_id,
                 fe.username AS followee_username, f.first_seen_at, f.last_seen_at, f.last_job_id
          FROM ig_follows f
          LEFT JOIN ig_users fr ON fr.id = f.follower_id
          LEFT JOIN ig_users fe ON fe.id = f.followee_id
          WHERE ($1::text IS NULL
                 OR f.follower_id IN (SELECT u.id FROM ig_users u WHERE u.username = $1)
                 OR f.followee_id IN (SELECT u.id FROM ig_users u WHERE u.username = $1))
            AND ($2::timestamptz IS NULL OR f.last_seen_at >= $2)
          ORDER BY f.follower_id, f.followee_id",
    singular: "follow edge",
    plural: "follow edges",
};

const STORIES: ExportTable = ExportTable {
    columns: &[
        ("id", Text),
        ("owner_id", Int),
        ("highlight_id", Text),
        ("highlight_title", Text),
        ("taken_at", Time),
        ("expiring_at", Time),
        ("media_type", Int),
        ("raw", Json),
        ("first_seen_at", Time),
        ("last_seen_at", Time),
        ("last_job_id", Int),
    ],
    sql: "SELECT id, owner_id, highlight_id, highlight_title, taken_at, expiring_at,
                 media_type::bigint AS media_type, raw::text AS raw, first_seen_at, last_seen_at,
                 last_job_id
          FROM ig_stories
          WHERE ($1::text IS NULL
                 OR owner_id IN (SELECT u.id FROM ig_users u WHERE u.username = $1))
            AND ($2::timestamptz IS NULL OR last_seen_at >= $2)
          ORDER BY id",
    singular: "story item",
    plural: "story items",
};

// The post's shortcode (when the post was stored too) is what a person can look up.
const HASHTAG_POSTS: ExportTable = ExportTable {
    columns: &[
        ("tag", Text),
        ("post_id", Int),
        ("shortcode", Text),
        ("first_seen_at", Time),
        ("last_seen_at", Time),
        ("last_job_id", Int),
    ],
    sql: "SELECT h.tag, h.post_id, p.shortcode, h.first_seen_at, h.last_seen_at, h.last_job_id
          FROM ig_hashtag_posts h
          LEFT JOIN ig_posts p ON p.id = h.post_id
          WHERE ($1::text IS NULL OR h.tag = $1)
            AND ($2::timestamptz IS NULL OR h.last_seen_at >= $2)
          ORDER BY h.tag, h.post_id",
    singular: "hashtag post",
    plural: "hashtag posts",
};

/// A v1 item kind's export: narrowed by owner (a user's posts, a post's comments, an account's
/// notifications; a user by its own id).
macro_rules! v1_items_table {
    ($item:literal, $singular:literal, $plural:literal) => {
        ExportTable {
            columns: &[
                ("id", Text),
                ("owner_id", Text),
                ("raw", Json),
                ("first_seen_at", Time),
                ("last_seen_at", Time),
                ("last_job_id", Int),
            ],
            sql: concat!(
                "SELECT id, owner_id, raw::text AS raw, first_seen_at, last_seen_at, last_job_id
                 FROM v1_items
                 WHERE item = '",
                $item,
                "' AND ($1::text IS NULL OR owner_id = $1 OR ('",
                $item,
                "' = 'user' AND id = $1))
                   AND ($2::timestamptz IS NULL OR last_seen_at >= $2)
                 ORDER BY id"
            ),
            singular: $singular,
            plural: $plural,
        }
    };
}

const V1_USERS: ExportTable = v1_items_table!("user", "v1 user", "v1 users");
const V1_POSTS: ExportTable = v1_items_table!("post", "v1 post", "v1 posts");
const V1_COMMENTS: ExportTable = v1_items_table!("comment", "v1 comment", "v1 comments");
const V1_STORIES: ExportTable = v1_items_table!("story", "v1 story", "v1 stories");
const V1_NOTIFICATIONS: ExportTable =
    v1_items_table!("notification", "v1 notification", "v1 notifications");
const V1_HASHTAGS: ExportTable = v1_items_table!("hashtag", "v1 hashtag", "v1 hashtags");
const V1_LOCATIONS: ExportTable = v1_items_table!("location", "v1 location", "v1 locations");

const V1_FOLLOWS: ExportTable = ExportTable {
    columns: &[
        ("follower_id", Text),
        ("followee_id", Text),
        ("first_seen_at", Time),
        ("last_seen_at", Time),
        ("last_job_id", Int),
    ],
    sql: "SELECT follower_id, followee_id, first_seen_at, last_seen_at, last_job_id
          FROM v1_follows
          WHERE ($1::text IS NULL OR follower_id = $1 OR followee_id = $1)
            AND ($2::timestamptz IS NULL OR last_seen_at >= $2)
          ORDER BY follower_id, followee_id",
    singular: "v1 follow edge",
    plural: "v1 follow edges",
};

impl Kind {
    pub const ALL: [Kind; 14] = [
        Kind::Users,
        Kind::Posts,
        Kind::Comments,
        Kind::Follows,
        Kind::Stories,
        Kind::HashtagPosts,
        Kind::V1Users,
        Kind::V1Posts,
        Kind::V1Comments,
        Kind::V1Follows,
        Kind::V1Stories,
        Kind::V1Notifications,
        Kind::V1Hashtags,
        Kind::V1Locations,
    ];

    pub fn table(self) -> &'static ExportTable {
        match self {
            Kind::Users => &USERS,
            Kind::Posts => &POSTS,
            Kind::Comments => &COMMENTS,
            Kind::Follows => &FOLLOWS,
            Kind::Stories => &STORIES,
            Kind::HashtagPosts => &HASHTAG_POSTS,
            Kind::V1Users => &V1_USERS,
            Kind::V1Posts => &V1_POSTS,
            Kind::V1Comments => &V1_COMMENTS,
            Kind::V1Follows => &V1_FOLLOWS,
            Kind::V1Stories => &V1_STORIES,
            Kind::V1Notifications => &V1_NOTIFICATIONS,
            Kind::V1Hashtags => &V1_HASHTAGS,
            Kind::V1Locations => &V1_LOCATIONS,
        }
    }

    /// The name `trawl demo` shows for this kind's count.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Users => "users",
            Kind::Posts => "posts",
            Kind::Comments => "comments",
            Kind::Follows => "follows",
            Kind::Stories => "stories",
            Kind::HashtagPosts => "hashtag_posts",
            Kind::V1Users => "v1_users",
            Kind::V1Posts => "v1_posts",
            Kind::V1Comments => "v1_comments",
            Kind::V1Follows => "v1_follows",
            Kind::V1Stories => "v1_stories",
            Kind::V1Notifications => "v1_notifications",
            Kind::V1Hashtags => "v1_hashtags",
            Kind::V1Locations => "v1_locations",
        }
    }
}

/// Streams one kind's rows in key order, as they arrive: an export can be millions of rows and
/// memory must stay flat. `target` and `since` narrow it (see [`ExportTable`]).
pub fn export_rows<'a>(
    pool: &'a PgPool,
    kind: Kind,
    target: Option<String>,
    since: Option<DateTime<Utc>>,
) -> impl Stream<Item = Result<PgRow, sqlx::Error>> + 'a {
    sqlx::query(kind.table().sql)
        .bind(target)
        .bind(since)
        .fetch(pool)
}

/// Rows stored per kind, in [`Kind::ALL`]'s order.
pub async fn counts(pool: &PgPool) -> Result<Vec<(Kind, i64)>, ResultsError> {
    let row: (i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM ig_users), (SELECT count(*) FROM ig_posts),
                (SELECT count(*) FROM ig_comments), (SELECT count(*) FROM ig_follows),
                (SELECT count(*) FROM ig_stories), (SELECT count(*) FROM ig_hashtag_posts),
                (SELECT count(*) FROM v1_follows)",
    )
    .fetch_one(pool)
    .await?;
    let v1: HashMap<String, i64> =
        sqlx::query_as::<_, (String, i64)>("SELECT item, count(*) FROM v1_items GROUP BY item")
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect();
    let v1_count = |item: V1Item| v1.get(item.as_str()).copied().unwrap_or(0);
    let (users, posts, comments, follows, stories, hashtag_posts, v1_follows) = row;
    Ok(vec![
        (Kind::Users, users),
        (Kind::Posts, posts),
        (Kind::Comments, comments),
        (Kind::Follows, follows),
        (Kind::Stories, stories),
        (Kind::HashtagPosts, hashtag_posts),
        (Kind::V1Users, v1_count(V1Item::User)),
        (Kind::V1Posts, v1_count(V1Item::Post)),
        (Kind::V1Comments, v1_count(V1Item::Comment)),
        (Kind::V1Follows, v1_follows),
        (Kind::V1Stories, v1_count(V1Item::Story)),
        (Kind::V1Notifications, v1_count(V1Item::Notification)),
        (Kind::V1Hashtags, v1_count(V1Item::Hashtag)),
        (Kind::V1Locations, v1_count(V1Item::Location)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_keeps_the_last_of_each_id_in_order() {
        let rows = [(1, "a"), (2, "b"), (1, "c")];
        let kept: Vec<_> = dedup(&rows, |r| r.0.to_string()).into_iter().collect();
        assert_eq!(kept, vec![&(2, "b"), &(1, "c")]);
    }
}
