//! What the crawlers read from Instagram's answers, apart from sending and storing, so that
//! `decode_answer` (and the fuzz target `ig_response`) runs exactly the crawlers' code. Each
//! reader takes what Instaloader 4.16 takes from the same answer.

use serde_json::{Map, Value};

use super::CrawlError;
use crate::instagram::IgError;
use crate::rows::{
    CommentRow, DecodeComment, DecodePost, DecodeStory, DecodeUser, PostRow, PostSource,
    ShapeError, StoryRow, UserRow, id,
};

/// One page of a listing, read from an answer.
pub(super) struct PageData {
    pub entries: Vec<Entry>,
    pub end_cursor: Option<String>,
    pub has_next: bool,
}

pub(super) enum Entry {
    Post(PostRow),
    /// A top-level comment and its replies.
    Thread(Vec<CommentRow>),
    User(UserRow),
}

impl Entry {
    pub fn id(&self) -> i64 {
        match self {
            Entry::Post(p) => p.id,
            Entry::Thread(t) => t.first().map_or(0, |c| c.id),
            Entry::User(u) => u.id,
        }
    }
}

/// A GraphQL connection (`edges` of `node`s, `page_info`) read into a page, one entry per node.
fn edge_page(
    connection: &Value,
    what: &str,
    entry: impl Fn(&Value) -> Result<Entry, ShapeError>,
) -> Result<PageData, ShapeError> {
    let edges = connection["edges"]
        .as_array()
        .ok_or_else(|| ShapeError(format!("{what}: no edges")))?;
    let entries = edges
        .iter()
        .map(|e| entry(&e["node"]))
        .collect::<Result<_, _>>()?;
    let (end_cursor, has_next) = page_info(connection);
    Ok(PageData {
        entries,
        end_cursor,
        has_next,
    })
}

/// A connection's next cursor and whether there is a next page (only with a cursor).
fn page_info(connection: &Value) -> (Option<String>, bool) {
    let info = &connection["page_info"];
    let end_cursor = info["end_cursor"].as_str().map(str::to_owned);
    let has_next = info["has_next_page"].as_bool().unwrap_or(false) && end_cursor.is_some();
    (end_cursor, has_next)
}

// ---- profiles ----

/// The data of each GraphQL result a page of the web host embeds: every `__bbox.result.data`
/// object inside its `<script type="application/json">` blocks, in page order. A block that is
/// not JSON is skipped, as the web app's own loader would.
pub(super) fn embedded_query_data(html: &str) -> Vec<Value> {
    const OPEN: &str = "<script type=\"application/json\"";
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find(OPEN) {
        rest = &rest[at + OPEN.len()..];
        let Some(body_at) = rest.find('>') else { break };
        rest = &rest[body_at + 1..];
        let Some(end) = rest.find("</script>") else {
            break;
        };
        if let Ok(json) = serde_json::from_str::<Value>(&rest[..end]) {
            collect_query_data(&json, &mut found);
        }
        rest = &rest[end..];
    }
    found
}

fn collect_query_data(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(map) => {
            let data = &map.get("__bbox").unwrap_or(&Value::Null)["result"]["data"];
            if data.is_object() {
                out.push(data.clone());
            }
            map.values().for_each(|v| collect_query_data(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_query_data(v, out)),
        _ => {}
    }
}

/// The profile a user's page embeds: its `xig_user_by_username` objects merged, with `id` set to
/// `pk` (the page's own `id` is not the user id and is kept as `page_id`, which the logged-out
/// posts query asks by). No `pk`: no such profile.
pub(super) fn page_user(html: &str, target: &str) -> Result<Value, CrawlError> {
    let mut user = Map::new();
    for data in embedded_query_data(html) {
        if let Some(Value::Object(fields)) = data.get("xig_user_by_username") {
            user.extend(fields.clone());
        }
    }
    let Some(pk) = user.get("pk").filter(|pk| !pk.is_null()).cloned() else {
        return Err(IgError::NotFound(format!("profile {target:?}")).into());
    };
    if let Some(page_id) = user.insert("id".into(), pk) {
        user.insert("page_id".into(), page_id);
    }
    Ok(Value::Object(user))
}

/// A profile in the web app's newer shape (`pk`, `follower_count`, `media_count`,
/// `friendship_status`, `hd_profile_pic_url_info`) given the legacy fields too, as Instaloader
/// normalises it, so that every profile is stored alike.
pub(super) fn normalize_profile(user: &Value) -> Value {
    let mut n = user.as_object().cloned().unwrap_or_default();
    let mut default = |key: &str, value: Option<Value>| {
        if !n.contains_key(key)
            && let Some(v) = value
        {
            n.insert(key.to_owned(), v);
        }
    };
    let count = |v: Option<&Value>| v.filter(|v| !v.is_null()).map(|c| json_count(c.clone()));
    default("id", user.get("pk").cloned());
    default(
        "edge_owner_to_timeline_media",
        count(user.get("media_count")).or_else(|| count(user.get("all_media_count"))),
    );
    default("edge_followed_by", count(user.get("follower_count")));
    default("edge_follow", count(user.get("following_count")));
    default("is_business_account", user.get("is_business").cloned());
    let friendship = &user["friendship_status"];
    default(
        "followed_by_viewer",
        Some(friendship["following"].as_bool().unwrap_or(false).into()),
    );
    default(
        "follows_viewer",
        Some(friendship["followed_by"].as_bool().unwrap_or(false).into()),
    );
    default(
        "profile_pic_url_hd",
        user["hd_profile_pic_url_info"]["url"]
            .as_str()
            .or_else(|| user["profile_pic_url"].as_str())
            .map(Value::from),
    );
    Value::Object(n)
}

fn json_count(count: Value) -> Value {
    serde_json::json!({ "count": count })
}

/// The user object of a profile answer (the profile query's `data.user`, or `web_profile_info`),
/// normalised.
pub(super) fn profile_user(j: &Value, target: &str) -> Result<Value, CrawlError> {
    Ok(normalize_profile(&profile_user_as_sent(j, target)?))
}

/// The user object of a profile answer as Instagram sent it.
pub(super) fn profile_user_as_sent(j: &Value, target: &str) -> Result<Value, CrawlError> {
    // `data.user: null` is Instagram's word for "no such user"; no `data` object at all is not.
    if !j["data"].is_object() {
        return Err(
            ShapeError(format!("profile {target:?}: the answer has no data object")).into(),
        );
    }
    let user = &j["data"]["user"];
    if user.is_null() {
        return Err(IgError::NotFound(format!("profile {target:?}")).into());
    }
    Ok(user.clone())
}

/// The `user` object of the app's `users/<id>/info/`.
pub(super) fn app_user_info(j: &Value) -> Result<Value, ShapeError> {
    let user = &j["user"];
    if user.is_object() {
        Ok(user.clone())
    } else {
        Err(ShapeError("users/<id>/info: no user object".into()))
    }
}

/// A private profile's posts are not visible: to a logged-out visitor, or to an account that does
/// not follow it (`friendship_status.following` false; absent means unknown, as Instaloader
/// reads it).
pub(super) fn check_posts_visible(
    user: &Value,
    target: &str,
    logged_in: bool,
) -> Result<(), CrawlError> {
    let private = user["is_private"].as_bool() == Some(true);
    let not_followed = user["friendship_status"]["following"].as_bool() == Some(false);
    if private && (!logged_in || not_followed) {
        return Err(IgError::Forbidden(format!("profile {target:?} is private")).into());
    }
    Ok(())
}

// ---- posts ----

/// A post of a profile's posts listing, kept as the listing sent it.
fn listing_entry(n: &Value) -> Result<Entry, ShapeError> {
    let mut post = PostRow::from_media(n)?;
    post.source = PostSource::Listing;
    Ok(Entry::Post(post))
}

/// A page of the logged-in posts query: posts in the mobile shape.
pub(super) fn profile_posts_page(j: &Value) -> Result<PageData, ShapeError> {
    edge_page(
        &j["data"]["xdt_api__v1__feed__user_timeline_graphql_connection"],
        "profile posts",
        listing_entry,
    )
}

/// The shortcodes of a logged-out timeline page (the profile page's first one, or the logged-out
/// posts query's `data.node.polaris_ordered_timeline_connection`), its cursor and whether there
/// is more. Its nodes lack most of a post: each is then loaded by its shortcode.
pub(super) struct Timeline {
    pub codes: Vec<String>,
    pub end_cursor: Option<String>,
    pub has_next: bool,
}

pub(super) fn timeline(connection: &Value, what: &str) -> Result<Timeline, ShapeError> {
    let edges = connection["edges"]
        .as_array()
        .ok_or_else(|| ShapeError(format!("{what}: no edges")))?;
    let codes = edges
        .iter()
        .map(|e| {
            e["node"]["code"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| ShapeError(format!("{what}: a post without a code")))
        })
        .collect::<Result<_, _>>()?;
    let (end_cursor, has_next) = page_info(connection);
    Ok(Timeline {
        codes,
        end_cursor,
        has_next,
    })
}

/// The first timeline page a profile page embeds.
pub(super) fn page_timeline(user: &Value, target: &str) -> Result<Timeline, CrawlError> {
    let connection = &user["polaris_ordered_timeline_connection"];
    if connection.is_null() {
        return Err(ShapeError(format!("the page of {target:?} did not contain its posts")).into());
    }
    Ok(timeline(connection, "the profile page's posts")?)
}

pub(super) fn logged_out_posts_page(j: &Value) -> Result<Timeline, ShapeError> {
    timeline(
        &j["data"]["node"]["polaris_ordered_timeline_connection"],
        "profile posts",
    )
}

/// One post by its shortcode: `items[0]` of the shortcode query. No item: no such post.
pub(super) fn post_media(j: &Value, target: &str) -> Result<PostRow, CrawlError> {
    let items = &j["data"]["xdt_api__v1__media__shortcode__web_info"]["items"];
    if !items.is_array() {
        return Err(ShapeError(format!("post {target:?}: the answer has no items")).into());
    }
    let item = &items[0];
    if item.is_null() {
        return Err(IgError::NotFound(format!("post {target:?}")).into());
    }
    let mut post = PostRow::from_media(item)?;
    post.source = PostSource::Full;
    Ok(post)
}

// ---- hashtags ----

/// The hashtag of `tags/web_info` (`graphql.hashtag`, else `data`), which must exist.
pub(super) fn hashtag_info<'a>(j: &'a Value, tag: &str) -> Result<&'a Value, CrawlError> {
    let node = if j.get("graphql").is_some() {
        &j["graphql"]["hashtag"]
    } else {
        &j["data"]
    };
    if !node.is_object() {
        return Err(IgError::NotFound(format!("hashtag {tag:?}")).into());
    }
    Ok(node)
}

pub(super) fn hashtag_page(j: &Value) -> Result<PageData, ShapeError> {
    let hashtag = &j["data"]["hashtag"];
    if hashtag.is_null() {
        return Err(ShapeError("no such hashtag".into()));
    }
    edge_page(&hashtag["edge_hashtag_to_media"], "hashtag posts", |n| {
        PostRow::from_node(n).map(Entry::Post)
    })
}

// ---- comments ----

/// A web page of comments (`edge_media_to_parent_comment`), and the ids of the comments whose
/// replies it did not carry in full (their `count` is more than their `edges`).
pub(super) fn comments_page(
    shortcode: &str,
    j: &Value,
) -> Result<(PageData, Vec<String>), ShapeError> {
    let media = &j["data"]["shortcode_media"];
    if media.is_null() {
        return Err(ShapeError("no such post".into()));
    }
    let connection = &media["edge_media_to_parent_comment"];
    let incomplete = connection["edges"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|e| &e["node"])
        .filter(|n| {
            let replies = &n["edge_threaded_comments"];
            let shown = replies["edges"].as_array().map_or(0, Vec::len);
            replies["count"].as_u64().unwrap_or(0) > shown as u64
        })
        .filter_map(|n| n["id"].as_str().map(str::to_owned))
        .collect();
    let page = edge_page(connection, "comments", |n| {
        CommentRow::thread(shortcode, n).map(Entry::Thread)
    })?;
    Ok((page, incomplete))
}

/// A page of one comment's replies (`data.comment.edge_threaded_comments`).
pub(super) fn replies_page(
    shortcode: &str,
    parent: i64,
    j: &Value,
) -> Result<(Vec<CommentRow>, Option<String>, bool), ShapeError> {
    let connection = &j["data"]["comment"]["edge_threaded_comments"];
    let edges = connection["edges"]
        .as_array()
        .ok_or_else(|| ShapeError("comment replies: no edges".into()))?;
    let rows = edges
        .iter()
        .map(|e| CommentRow::one(shortcode, &e["node"], Some(parent)))
        .collect::<Result<_, _>>()?;
    let (cursor, has_next) = page_info(connection);
    Ok((rows, cursor, has_next))
}

/// A mobile page of comments: each comment with the replies it carries, whether its replies must
/// be asked for (`child_comment_count` more than its previews), and `next_min_id`.
pub(super) struct MobileComments {
    pub threads: Vec<MobileThread>,
    pub next_min_id: Option<String>,
}

pub(super) struct MobileThread {
    /// The comment, then the replies the page carried.
    pub rows: Vec<CommentRow>,
    pub replies_missing: bool,
}

pub(super) fn mobile_comments(shortcode: &str, j: &Value) -> Result<MobileComments, ShapeError> {
    let comments = j["comments"]
        .as_array()
        .ok_or_else(|| ShapeError("comments: no comments list".into()))?;
    let mut threads = Vec::with_capacity(comments.len());
    for c in comments {
        let top = CommentRow::from_mobile(shortcode, c, None)?;
        let parent = top.id;
        let previews = c["preview_child_comments"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let replies_missing =
            c["child_comment_count"].as_u64().unwrap_or(0) != previews.len() as u64;
        let mut rows = vec![top];
        if !replies_missing {
            for reply in previews {
                rows.push(CommentRow::from_mobile(shortcode, reply, Some(parent))?);
            }
        }
        threads.push(MobileThread {
            rows,
            replies_missing,
        });
    }
    Ok(MobileComments {
        threads,
        next_min_id: j["next_min_id"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
    })
}

pub(super) fn child_comments(
    shortcode: &str,
    parent: i64,
    j: &Value,
) -> Result<Vec<CommentRow>, ShapeError> {
    j["child_comments"]
        .as_array()
        .ok_or_else(|| ShapeError("replies: no child_comments list".into()))?
        .iter()
        .map(|c| CommentRow::from_mobile(shortcode, c, Some(parent)))
        .collect()
}

// ---- followers, followees ----

/// A page of followers (`edge` = `edge_followed_by`) or followees (`edge_follow`).
pub(super) fn follows_page(edge: &str, j: &Value) -> Result<PageData, ShapeError> {
    let user = &j["data"]["user"];
    if user.is_null() {
        return Err(ShapeError("no such user".into()));
    }
    edge_page(&user[edge], edge, |n| UserRow::from_web(n).map(Entry::User))
}

// ---- stories and highlights ----

/// One reel of the stories query (`data.reels_media[]`): whose it is, and what the reference
/// client keeps of it (the `user` object, the owner of its items, and the web items).
pub(super) struct WebReel {
    pub owner: String,
    pub user: Value,
    pub items: Vec<Value>,
}

/// The story reels the stories query returned (`data.reels_media[]`).
pub(super) fn story_reels(j: &Value) -> Result<Vec<WebReel>, ShapeError> {
    Ok(j["data"]["reels_media"]
        .as_array()
        .ok_or_else(|| ShapeError("stories: no reels_media list".into()))?
        .iter()
        .filter_map(|reel| {
            let owner = match &reel["id"] {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => reel["user"]["id"].as_str().map(str::to_owned),
            }?;
            Some(WebReel {
                owner,
                user: reel["user"].clone(),
                items: reel["items"].as_array().cloned().unwrap_or_default(),
            })
        })
        .collect())
}

/// Gives each app item its web item, matched as the reference client matches them (the web
/// item's `id` is the app item's `pk`), and, for a current story, the web reel's `user`.
pub(super) fn attach_web_items(rows: &mut [StoryRow], web_items: &[Value], reel_user: &Value) {
    for row in rows {
        let pk = id(&row.raw["pk"]);
        row.web_item_as_sent = web_items
            .iter()
            .find(|item| pk.is_some() && id(&item["id"]) == pk)
            .cloned();
        if reel_user.is_object() {
            row.reel_user_as_sent = Some(reel_user.clone());
        }
    }
}

/// The `reels` object of a `feed/reels_media` answer.
fn reels_of<'a>(j: &'a Value, what: &str) -> Result<&'a Value, ShapeError> {
    let reels = &j["reels"];
    if reels.is_object() {
        Ok(reels)
    } else {
        Err(ShapeError(format!("{what}: no reels object in the answer")))
    }
}

/// The items of reel `reel_id` in a `reels_media` answer, stored as the stories of user `owner`
/// (and of highlight `(id, title)`). No such reel: no items.
pub(super) fn reel_rows(
    owner: i64,
    reel_id: &str,
    highlight: Option<(&str, &str)>,
    j: &Value,
) -> Result<Vec<StoryRow>, ShapeError> {
    reels_of(j, "reels")?[reel_id]["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|item| StoryRow::from_item(owner, highlight, item))
        .collect()
}

/// A highlight as the highlights query lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Highlight {
    pub id: String,
    pub title: String,
    /// `cover_media.thumbnail_src`, the cover picture the reference client saves.
    pub cover_url: Option<String>,
}

/// The highlights of the highlights query.
pub(super) fn highlight_list(j: &Value) -> Result<Vec<Highlight>, ShapeError> {
    let connection = &j["data"]["user"]["edge_highlight_reels"];
    Ok(connection["edges"]
        .as_array()
        .ok_or_else(|| ShapeError("highlights: no edge_highlight_reels".into()))?
        .iter()
        .filter_map(|e| {
            let node = &e["node"];
            let id = match &node["id"] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return None,
            };
            Some(Highlight {
                id,
                title: node["title"].as_str().unwrap_or("").to_owned(),
                cover_url: node["cover_media"]["thumbnail_src"]
                    .as_str()
                    .filter(|u| !u.is_empty())
                    .map(str::to_owned),
            })
        })
        .collect())
}

/// The items the highlight items query returned (`data.reels_media[0].items`).
pub(super) fn highlight_items(j: &Value) -> Result<Vec<Value>, ShapeError> {
    j["data"]["reels_media"][0]["items"]
        .as_array()
        .cloned()
        .ok_or_else(|| ShapeError("highlight items: no reels_media items".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_page_yields_its_embedded_user() {
        let html = r#"<html><script type="application/json" data-sjs>{"require":[["x",{"__bbox":
            {"result":{"data":{"xig_user_by_username":{"pk":"7","id":"p7","username":"u",
            "follower_count":3}}}}}]]}</script><script type="application/json">not json</script>
            <script type="application/json">{"__bbox":{"result":{"data":{"xig_user_by_username":
            {"polaris_ordered_timeline_connection":{"edges":[{"node":{"code":"C1"}}],
            "page_info":{"has_next_page":true,"end_cursor":"k"}}}}}}}</script></html>"#;
        let user = page_user(html, "u").expect("user");
        assert_eq!(
            (user["id"].as_str(), user["page_id"].as_str()),
            (Some("7"), Some("p7"))
        );
        let row = UserRow::from_web(&normalize_profile(&user)).expect("row");
        assert_eq!((row.id, row.follower_count), (7, Some(3)));
        let t = page_timeline(&user, "u").expect("timeline");
        assert_eq!(
            (t.codes, t.end_cursor.as_deref(), t.has_next),
            (vec!["C1".to_owned()], Some("k"), true)
        );
        assert!(matches!(
            page_user("<html></html>", "u"),
            Err(CrawlError::Instagram(IgError::NotFound(_)))
        ));
    }

    #[test]
    fn private_posts_are_visible_only_to_a_follower() {
        let private = serde_json::json!({"is_private": true});
        assert!(check_posts_visible(&private, "u", false).is_err());
        assert!(check_posts_visible(&private, "u", true).is_ok());
        let refused =
            serde_json::json!({"is_private": true, "friendship_status": {"following": false}});
        assert!(check_posts_visible(&refused, "u", true).is_err());
    }
}
