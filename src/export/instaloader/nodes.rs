//! The JSON Instaloader 4.16 saves for a post, a profile, a story item and a post's comments,
//! built from the objects Trawl kept as Instagram sent them, the way Instaloader builds them
//! (`structures.py`: `Post.from_iphone_struct`, `Post._normalize_post_data`, `Post._asdict`,
//! `Profile._normalize_profile_data`, `Profile.from_iphone_struct`, `Profile._asdict`,
//! `StoryItem._asdict`; `Instaloader.update_comments`), described in docs/instaloader-tree.md.
//!
//! Everything here is I/O-free. Objects are `serde_json` maps that keep insertion order, and the
//! Python operations keep their meaning: assigning a key that exists replaces its value in place,
//! a new key goes last, and removing a key shifts the others (`shift_remove`, never
//! `swap_remove`). Where Instaloader would crash on a malformed answer (a missing key it indexes),
//! these builders write `null` instead and go on.

use serde_json::{Map, Value, json};
use unicode_normalization::UnicodeNormalization;

pub type Object = Map<String, Value>;

/// Instaloader's version, as it writes it in every `.json.xz`.
pub const INSTALOADER_VERSION: &str = "4.16";

/// `{"node": node, "instaloader": {"version": "4.16", "node_type": type}}`.
pub fn structure(node: Value, node_type: &str) -> Value {
    json!({"node": node, "instaloader": {"version": INSTALOADER_VERSION, "node_type": node_type}})
}

/// Python's truth value of a JSON value.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Python's `int(v)` of an id or a time: numbers (floats truncated) and decimal strings.
pub fn py_int(v: &Value) -> Option<i128> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.trunc() as i128)
            }),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(i128::from(*b)),
        _ => None,
    }
}

/// `d.get(key)`, with `None` for a missing key (a present `null` is `Some(Null)`).
fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object().and_then(|o| o.get(key))
}

/// `d.get(key)` as Python returns it: `None` for a missing key.
fn get_or_null(v: &Value, key: &str) -> Value {
    get(v, key).cloned().unwrap_or(Value::Null)
}

/// `x or default`, Python's.
fn or(v: Option<&Value>, default: Value) -> Value {
    match v {
        Some(v) if truthy(v) => v.clone(),
        _ => default,
    }
}

/// Post types by the app's `media_type`.
fn typename(media_type: Option<&Value>) -> Option<&'static str> {
    match media_type.and_then(Value::as_i64) {
        Some(1) => Some("GraphImage"),
        Some(2) => Some("GraphVideo"),
        Some(8) => Some("GraphSidecar"),
        _ => None,
    }
}

/// `candidates[0].url` of an app item's `image_versions2`.
fn first_candidate_url(item: &Value) -> Option<Value> {
    item.get("image_versions2")?
        .get("candidates")?
        .as_array()?
        .first()?
        .get("url")
        .cloned()
}

// ---- Profiles ----

/// `Profile._normalize_profile_data`: the profile query's `data.user` given the legacy keys it
/// lacks, each appended in Instaloader's order.
pub fn normalize_profile(user: &Value) -> Object {
    let mut n = user.as_object().cloned().unwrap_or_default();
    let count = |v: &Value| json!({ "count": v });
    if !n.contains_key("id")
        && let Some(pk) = n.get("pk").cloned()
    {
        n.insert("id".into(), pk);
    }
    if !n.contains_key("edge_owner_to_timeline_media") {
        if let Some(c) = n.get("media_count").cloned() {
            n.insert("edge_owner_to_timeline_media".into(), count(&c));
        } else if let Some(c) = n.get("all_media_count").cloned() {
            n.insert("edge_owner_to_timeline_media".into(), count(&c));
        }
    }
    if !n.contains_key("edge_felix_video_timeline") {
        n.insert("edge_felix_video_timeline".into(), json!({"count": 0}));
    }
    for (edge, from) in [
        ("edge_followed_by", "follower_count"),
        ("edge_follow", "following_count"),
    ] {
        if !n.contains_key(edge)
            && let Some(c) = n.get(from).cloned()
        {
            n.insert(edge.into(), count(&c));
        }
    }
    for (key, from) in [
        ("is_business_account", "is_business"),
        ("business_category_name", "category"),
    ] {
        if !n.contains_key(key)
            && let Some(v) = n.get(from).cloned()
        {
            n.insert(key.into(), v);
        }
    }
    // `normalized.get('friendship_status', {}) or {}`, then `.get(key, False)`.
    let friendship = or(n.get("friendship_status"), json!({}));
    let relation = |key: &str| get(&friendship, key).cloned().unwrap_or(Value::Bool(false));
    for (key, from) in [
        ("followed_by_viewer", "following"),
        ("follows_viewer", "followed_by"),
        ("blocked_by_viewer", "blocking"),
    ] {
        if !n.contains_key(key) {
            n.insert(key.into(), relation(from));
        }
    }
    if !n.contains_key("has_blocked_viewer") {
        n.insert("has_blocked_viewer".into(), Value::Bool(false));
    }
    for (key, from) in [
        ("has_requested_viewer", "incoming_request"),
        ("requested_by_viewer", "outgoing_request"),
    ] {
        if !n.contains_key(key) {
            n.insert(key.into(), relation(from));
        }
    }
    if !n.contains_key("profile_pic_url_hd") {
        let hd = n
            .get("hd_profile_pic_url_info")
            .cloned()
            .unwrap_or(Value::Null);
        if truthy(&hd)
            && let Some(url) = get(&hd, "url")
        {
            n.insert("profile_pic_url_hd".into(), url.clone());
        } else if let Some(url) = n.get("profile_pic_url").cloned() {
            n.insert("profile_pic_url_hd".into(), url);
        }
    }
    n
}

/// `Profile._asdict()`: the node without the keys that hold lists of posts, then the app's
/// `user` object as `iphone_struct` when there is one (in place if the node had the key).
pub fn profile_asdict(mut node: Object, iphone_struct: Option<&Value>) -> Object {
    for key in [
        "edge_media_collections",
        "edge_owner_to_timeline_media",
        "edge_saved_media",
        "edge_felix_video_timeline",
    ] {
        node.shift_remove(key);
    }
    if let Some(app) = iphone_struct.filter(|v| truthy(v)) {
        node.insert("iphone_struct".into(), app.clone());
    }
    node
}

/// The node of a downloaded profile's `.json.xz` (and the owner of its highlight items): the
/// profile query's user normalised, with the app's `users/<id>/info/` user.
pub fn profile_node(profile_query_user: &Value, app_user: Option<&Value>) -> Object {
    profile_asdict(normalize_profile(profile_query_user), app_user)
}

/// `Profile.from_iphone_struct(user)._asdict()`: a post's or a mobile comment's owner.
pub fn iphone_profile(user: &Value) -> Object {
    let mut node = Object::new();
    node.insert("id".into(), get_or_null(user, "pk"));
    node.insert("username".into(), get_or_null(user, "username"));
    node.insert("is_private".into(), get_or_null(user, "is_private"));
    node.insert("full_name".into(), get_or_null(user, "full_name"));
    node.insert(
        "profile_pic_url_hd".into(),
        get_or_null(user, "profile_pic_url"),
    );
    node.insert("iphone_struct".into(), user.clone());
    profile_asdict(node, Some(user))
}

/// `Profile(node)._asdict()` for a node that came with an answer (a comment's owner, a story
/// reel's user).
pub fn plain_profile(node: &Value) -> Object {
    let object = node.as_object().cloned().unwrap_or_default();
    let app = object.get("iphone_struct").cloned();
    profile_asdict(object, app.as_ref())
}

// ---- Posts ----

/// `Post.from_iphone_struct(media)`'s node: the listing's post in Instaloader's legacy keys.
pub fn listing_node(media: &Value) -> Object {
    let kind = typename(get(media, "media_type"));
    let mut n = Object::new();
    n.insert("shortcode".into(), get_or_null(media, "code"));
    n.insert("id".into(), get_or_null(media, "pk"));
    n.insert("__typename".into(), kind.map_or(Value::Null, Value::from));
    n.insert("is_video".into(), Value::Bool(kind == Some("GraphVideo")));
    n.insert("date".into(), get_or_null(media, "taken_at"));
    let caption = match get(media, "caption") {
        Some(c) if !c.is_null() => get_or_null(c, "text"),
        _ => Value::Null,
    };
    n.insert("caption".into(), caption);
    n.insert("title".into(), get_or_null(media, "title"));
    n.insert("viewer_has_liked".into(), get_or_null(media, "has_liked"));
    n.insert(
        "edge_media_preview_like".into(),
        json!({"count": get_or_null(media, "like_count")}),
    );
    n.insert(
        "accessibility_caption".into(),
        get_or_null(media, "accessibility_caption"),
    );
    n.insert("comments".into(), get_or_null(media, "comment_count"));
    n.insert("iphone_struct".into(), media.clone());
    if let Some(url) = first_candidate_url(media) {
        n.insert("display_url".into(), url);
    }
    // Assigned one after the other; the first key missing stops the rest (a KeyError that
    // Instaloader suppresses).
    if let Some(last) = get(media, "video_versions")
        .and_then(Value::as_array)
        .and_then(|v| v.last())
        && let Some(url) = get(last, "url")
    {
        n.insert("video_url".into(), url.clone());
        if let Some(duration) = get(media, "video_duration") {
            n.insert("video_duration".into(), duration.clone());
            if let Some(views) = get(media, "view_count") {
                n.insert("video_view_count".into(), views.clone());
            }
        }
    }
    if let Some(children) = get(media, "carousel_media").and_then(Value::as_array) {
        let edges: Option<Vec<Value>> = children
            .iter()
            .map(|child| {
                let mut node = Object::new();
                node.insert("display_url".into(), first_candidate_url(child)?);
                let kind = typename(get(child, "media_type"))?;
                node.insert("is_video".into(), Value::Bool(kind == "GraphVideo"));
                if let Some(versions) = get(child, "video_versions").filter(|v| !v.is_null()) {
                    node.insert("video_url".into(), versions.get(0)?.get("url")?.clone());
                }
                Some(json!({ "node": node }))
            })
            .collect();
        // One child Instaloader cannot read leaves the whole key out.
        if let Some(edges) = edges {
            n.insert("edge_sidecar_to_children".into(), json!({ "edges": edges }));
        }
    }
    n
}

/// `Post._normalize_post_data(media)`: the post query's item with the legacy keys assigned
/// (in place where the item has them). `None` for a `media_type` Instaloader does not know (it
/// refuses such an answer).
pub fn normalize_post(media: &Value) -> Option<Object> {
    let kind = typename(get(media, "media_type"))?;
    let mut n = media.as_object().cloned().unwrap_or_default();
    n.insert("shortcode".into(), get_or_null(media, "code"));
    n.insert("id".into(), get_or_null(media, "pk"));
    n.insert("__typename".into(), kind.into());
    n.insert("is_video".into(), Value::Bool(kind == "GraphVideo"));
    n.insert("taken_at_timestamp".into(), get_or_null(media, "taken_at"));
    let user = get_or_null(media, "user");
    let user_field = |key: &str| get(&user, key).cloned().unwrap_or_else(|| "".into());
    n.insert(
        "owner".into(),
        json!({
            "id": get_or_null(&user, "pk"),
            "username": user_field("username"),
            "full_name": user_field("full_name"),
        }),
    );
    let candidates = or(
        get(&or(get(media, "image_versions2"), json!({})), "candidates"),
        json!([]),
    );
    n.insert(
        "display_url".into(),
        candidates
            .get(0)
            .map_or(Value::Null, |c| get_or_null(c, "url")),
    );
    let videos = or(get(media, "video_versions"), json!([]));
    n.insert(
        "video_url".into(),
        videos.get(0).map_or(Value::Null, |v| get_or_null(v, "url")),
    );
    n.insert(
        "video_duration".into(),
        get_or_null(media, "video_duration"),
    );
    n.insert("video_view_count".into(), get_or_null(media, "view_count"));
    n.insert("video_play_count".into(), get_or_null(media, "play_count"));
    let caption_text = get(media, "caption")
        .filter(|c| c.is_object())
        .map_or(Value::Null, |c| get_or_null(c, "text"));
    n.insert(
        "edge_media_to_caption".into(),
        if caption_text.is_null() {
            json!({"edges": []})
        } else {
            json!({"edges": [{"node": {"text": caption_text}}]})
        },
    );
    n.insert(
        "edge_media_preview_like".into(),
        json!({"count": or(get(media, "like_count"), json!(0))}),
    );
    n.insert(
        "edge_media_to_parent_comment".into(),
        json!({"count": or(get(media, "comment_count"), json!(0)), "edges": []}),
    );
    if let Some(liked) = get(media, "has_liked").filter(|v| !v.is_null()) {
        n.insert("viewer_has_liked".into(), liked.clone());
    }
    if let Some(children) = get(media, "carousel_media")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
    {
        let edges: Vec<Value> = children
            .iter()
            .map(|item| {
                // `item.get("media_type", 1)`: a missing type is an image.
                let item_type = get(item, "media_type").cloned().unwrap_or(json!(1));
                let kind = typename(Some(&item_type)).unwrap_or("GraphImage");
                let mut node = Object::new();
                node.insert(
                    "shortcode".into(),
                    get(item, "code").cloned().unwrap_or_else(|| "".into()),
                );
                node.insert("__typename".into(), kind.into());
                node.insert(
                    "is_video".into(),
                    Value::Bool(item_type.as_i64() == Some(2)),
                );
                let candidates = or(
                    get(&or(get(item, "image_versions2"), json!({})), "candidates"),
                    json!([]),
                );
                node.insert(
                    "display_url".into(),
                    candidates
                        .get(0)
                        .map_or_else(|| "".into(), |c| get_or_null(c, "url")),
                );
                let videos = or(get(item, "video_versions"), json!([]));
                node.insert(
                    "video_url".into(),
                    videos.get(0).map_or(Value::Null, |v| get_or_null(v, "url")),
                );
                if let Some(a) = get(item, "accessibility_caption").filter(|v| !v.is_null()) {
                    node.insert("accessibility_caption".into(), a.clone());
                }
                json!({ "node": node })
            })
            .collect();
        n.insert("edge_sidecar_to_children".into(), json!({ "edges": edges }));
    }
    let tags = or(get(&or(get(media, "usertags"), json!({})), "in"), json!([]));
    if let Some(tags) = tags.as_array().filter(|t| !t.is_empty()) {
        let edges: Vec<Value> = tags
            .iter()
            .filter_map(|t| {
                let user = or(get(t, "user"), json!({}));
                let name = get(&user, "username").filter(|n| truthy(n))?;
                Some(json!({"node": {"user": {"username": name.as_str()?.to_lowercase()}}}))
            })
            .collect();
        n.insert(
            "edge_media_to_tagged_user".into(),
            json!({ "edges": edges }),
        );
    }
    Some(n)
}

/// Which of Instagram's objects a post was kept from.
pub struct PostSources<'a> {
    /// The profile listing's object (the reference client's base node).
    pub listing: Option<&'a Value>,
    /// The post query's object (loaded by the reference client with `--comments`).
    pub full: Option<&'a Value>,
    /// What Trawl stored otherwise (a web node), for a post that has neither.
    pub raw: &'a Value,
}

/// A post ready to be written: the node before `_asdict` (what names and captions are read from)
/// and the saved node.
pub struct PostNode {
    pub before: Object,
    pub saved: Object,
}

/// `Post._asdict()` of a post as the reference client holds it after `download_post`.
///
/// - Listed (logged-in profile download): the listing node, updated with the normalised post
///   query item when there is one, `owner` the listing user's profile, `iphone_struct` the
///   listing object.
/// - Only the post query's item (a post Trawl did not list): the normalised item, as
///   `Post.from_shortcode` holds it.
/// - Neither: the stored web node as it is.
pub fn post_node(sources: &PostSources) -> PostNode {
    let full = sources.full.and_then(normalize_post);
    let Some(listing) = sources.listing else {
        let node = full.unwrap_or_else(|| sources.raw.as_object().cloned().unwrap_or_default());
        return PostNode {
            before: node.clone(),
            saved: node,
        };
    };
    let before = listing_node(listing);
    let mut saved = before.clone();
    if let Some(full) = full {
        for (key, value) in full {
            saved.insert(key, value);
        }
    }
    if let Some(user) = get(listing, "user") {
        saved.insert("owner".into(), Value::Object(iphone_profile(user)));
    }
    saved.insert("iphone_struct".into(), listing.clone());
    PostNode { before, saved }
}

/// `Post.caption` of the node before `_asdict`: the caption edge's text, else `caption`;
/// NFC-normalised.
pub fn post_caption(node: &Object) -> Option<String> {
    let edge_text = node
        .get("edge_media_to_caption")
        .and_then(|e| e.get("edges"))
        .and_then(Value::as_array)
        .filter(|edges| !edges.is_empty())
        .map(|edges| edges[0]["node"]["text"].clone());
    let text = match edge_text {
        Some(text) => text,
        None => node.get("caption").cloned().unwrap_or(Value::Null),
    };
    text.as_str().map(|s| s.nfc().collect())
}

/// The `.txt` Instaloader writes for a caption: `"{caption}"` stripped as Python's `str.strip`
/// strips (which also takes U+001C..U+001F), plus a newline; `None` when nothing is left.
pub fn caption_file_text(caption: Option<&str>) -> Option<String> {
    let python_space = |c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c);
    let text = caption.unwrap_or("").trim_matches(python_space);
    (!text.is_empty()).then(|| format!("{text}\n"))
}

/// The Unix time a post is named and dated by: `date` (listed posts), else
/// `taken_at_timestamp`.
pub fn post_time(node: &Object) -> Option<f64> {
    node.get("date")
        .or_else(|| node.get("taken_at_timestamp"))
        .and_then(Value::as_f64)
}

/// Whether each sidecar child is a video, in carousel order, from the node before `_asdict`.
pub fn sidecar_videos(node: &Object) -> Option<Vec<bool>> {
    node.get("edge_sidecar_to_children")?
        .get("edges")?
        .as_array()
        .map(|edges| {
            edges
                .iter()
                .map(|e| e["node"]["is_video"].as_bool() == Some(true))
                .collect()
        })
}

// ---- Story items ----

/// `StoryItem._asdict()`: the web item, given the app item of the same id as `iphone_struct` (a
/// new last key, as `Story.get_items` adds it) and its owner's profile as `owner` (in place when
/// the item has the key). Without a web item (stored before Trawl kept them), the app item
/// stands in.
pub fn story_item_node(web: Option<&Value>, app: Option<&Value>, owner: Option<Object>) -> Object {
    let mut node = web
        .or(app)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let matched = web.and(app);
    if let Some(app) = matched {
        node.insert("iphone_struct".into(), app.clone());
    }
    if let Some(owner) = owner {
        node.insert("owner".into(), Value::Object(owner));
    }
    if let Some(app) = matched.filter(|a| truthy(a)) {
        node.insert("iphone_struct".into(), app.clone());
    }
    node
}

/// The Unix time a story item is named and dated by: the web item's `taken_at_timestamp`, else
/// the app item's `taken_at`.
pub fn story_time(node: &Object) -> Option<f64> {
    node.get("taken_at_timestamp")
        .or_else(|| node.get("taken_at"))
        .and_then(Value::as_f64)
}

// ---- Comments ----

/// A comment or reply as stored: its id, its parent's, and the object its page sent.
pub struct StoredComment<'a> {
    pub id: i64,
    pub parent_id: Option<i64>,
    pub node: &'a Value,
}

/// The app's comments have `pk` and `user`; the web's have `id` and `owner`.
fn is_app_comment(node: &Value) -> bool {
    get(node, "pk").is_some() && get(node, "user").is_some()
}

/// One entry of `_comments.json` without its answers: `{id, created_at, text, owner,
/// likes_count}`. `top` keeps a web comment's id as sent (a string); answers' ids are numbers.
fn comment_entry(node: &Value, top: bool) -> Object {
    let mut c = Object::new();
    let created_at = get(node, "created_at")
        .and_then(py_int)
        .map_or(Value::Null, |t| json!(t as i64));
    if is_app_comment(node) {
        let id = get(node, "pk").and_then(py_int);
        c.insert("id".into(), id.map_or(Value::Null, |i| json!(i as i64)));
        c.insert("created_at".into(), created_at);
        c.insert("text".into(), get_or_null(node, "text"));
        let user = get_or_null(node, "user");
        c.insert("owner".into(), Value::Object(iphone_profile(&user)));
        c.insert(
            "likes_count".into(),
            get_or_null(node, "comment_like_count"),
        );
    } else {
        let id = get_or_null(node, "id");
        let id = if top {
            id
        } else {
            py_int(&id).map_or(Value::Null, |i| json!(i as i64))
        };
        c.insert("id".into(), id);
        c.insert("created_at".into(), created_at);
        c.insert("text".into(), get_or_null(node, "text"));
        c.insert(
            "owner".into(),
            Value::Object(plain_profile(&get_or_null(node, "owner"))),
        );
        // `node.get('edge_liked_by', {}).get('count', 0)`.
        let likes = get(node, "edge_liked_by")
            .and_then(|e| get(e, "count"))
            .cloned()
            .unwrap_or(json!(0));
        c.insert("likes_count".into(), likes);
    }
    c
}

fn id_of(entry: &Value) -> i128 {
    get(entry, "id").and_then(py_int).unwrap_or(0)
}

fn created_of(entry: &Value) -> i128 {
    get(entry, "created_at").and_then(py_int).unwrap_or(0)
}

/// The comments Instaloader fetches for a post, as `_postcomment_asdict` makes them: top-level
/// comments (in stored order; `save` sorts them) each with its answers by id, highest first.
pub fn fetched_comments(comments: &[StoredComment]) -> Vec<Value> {
    comments
        .iter()
        .filter(|c| c.parent_id.is_none())
        .map(|top| {
            let mut answers: Vec<Value> = comments
                .iter()
                .filter(|c| c.parent_id == Some(top.id))
                .map(|a| Value::Object(comment_entry(a.node, false)))
                .collect();
            answers.sort_by_key(|a| std::cmp::Reverse(id_of(a)));
            let mut entry = comment_entry(top.node, true);
            entry.insert("answers".into(), Value::Array(answers));
            Value::Object(entry)
        })
        .collect()
}

/// `get_unique_comments`: newest first (ties by id), consecutive entries of one id merged into
/// the first (its `likes_count` from the later one; answers combined and made unique the same
/// way when `combine_answers`).
fn unique_comments(comments: Vec<Value>, combine_answers: bool) -> Vec<Value> {
    let mut sorted = comments;
    sorted.sort_by_key(id_of);
    sorted.sort_by_key(|c| std::cmp::Reverse(created_of(c)));
    let mut unique: Vec<Value> = Vec::with_capacity(sorted.len());
    let mut previous_id: Option<Value> = None;
    for comment in sorted {
        let id = get_or_null(&comment, "id");
        let same = previous_id.as_ref() == Some(&id);
        previous_id = Some(id);
        let Some(last) = unique.last_mut().filter(|_| same) else {
            unique.push(comment);
            continue;
        };
        let Some(last) = last.as_object_mut() else {
            continue;
        };
        last.insert("likes_count".into(), get_or_null(&comment, "likes_count"));
        if combine_answers {
            let mut combined = match last.get("answers") {
                Some(Value::Array(a)) if !a.is_empty() => a.clone(),
                _ => Vec::new(),
            };
            if let Some(Value::Array(more)) = get(&comment, "answers") {
                combined.extend(more.iter().cloned());
            }
            last.insert(
                "answers".into(),
                Value::Array(unique_comments(combined, false)),
            );
        }
    }
    unique
}

/// What `save_comments` writes: the comments already in the file (if any) and the new ones made
/// unique, without top-level entries that are some comment's answer. Its text is
/// `json.dumps(..., indent=4)`.
pub fn comments_to_save(existing: Vec<Value>, fetched: Vec<Value>) -> Vec<Value> {
    let mut all = existing;
    all.extend(fetched);
    let unique = unique_comments(all, true);
    let answer_ids: std::collections::HashSet<i128> = unique
        .iter()
        .filter_map(|c| get(c, "answers").and_then(Value::as_array))
        .flatten()
        .map(id_of)
        .collect();
    unique
        .into_iter()
        .filter(|c| !answer_ids.contains(&id_of(c)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).expect("test JSON")
    }

    fn keys(o: &Object) -> Vec<&str> {
        o.keys().map(String::as_str).collect()
    }

    const LISTING: &str = r#"{"pk":11,"id":"11_7","code":"EAAA","media_type":2,"taken_at":1767225341,
        "caption":{"pk":"111","text":"Caf\u0065\u0301 ","created_at":1767225341},"like_count":3,
        "comment_count":2,"has_liked":false,
        "image_versions2":{"candidates":[{"url":"https://c/t.jpg?x"}]},
        "user":{"pk":7,"username":"ada","full_name":"Ada","is_private":false,"profile_pic_url":"p"},
        "video_versions":[{"url":"v1"},{"url":"v2"}],"video_duration":15.0,"view_count":21}"#;

    #[test]
    fn a_listed_post_is_the_listing_node_updated_with_the_full_post() {
        let listing = parse(LISTING);
        let full = parse(
            r#"{"code":"EAAA","pk":11,"media_type":2,"taken_at":1767225341,"like_count":4,
            "caption":{"text":"Caf\u0065\u0301 "},"user":{"pk":7,"username":"ada"},
            "video_versions":[{"url":"v1"}],"usertags":{"in":[{"user":{"username":"Bob"}}]}}"#,
        );
        let post = post_node(&PostSources {
            listing: Some(&listing),
            full: Some(&full),
            raw: &Value::Null,
        });
        assert_eq!(
            keys(&post.before),
            [
                "shortcode",
                "id",
                "__typename",
                "is_video",
                "date",
                "caption",
                "title",
                "viewer_has_liked",
                "edge_media_preview_like",
                "accessibility_caption",
                "comments",
                "iphone_struct",
                "display_url",
                "video_url",
                "video_duration",
                "video_view_count"
            ]
        );
        assert_eq!(post.before["video_url"], "v2", "the listing's last version");
        let saved = &post.saved;
        // The full post's keys: those the listing node has keep their place, the others follow.
        assert_eq!(saved["caption"], json!({"text": "Caf\u{65}\u{301} "}));
        assert_eq!(saved["video_url"], "v1", "the full post's first version");
        assert_eq!(saved["edge_media_preview_like"], json!({"count": 4}));
        let order = keys(saved);
        let at = |k: &str| order.iter().position(|x| *x == k).unwrap();
        assert!(at("video_view_count") < at("code") && at("code") < at("taken_at_timestamp"));
        assert_eq!(
            saved["owner"],
            json!({"id": 7, "username": "ada", "is_private": false, "full_name": "Ada",
                "profile_pic_url_hd": "p", "iphone_struct": listing["user"]})
        );
        assert!(
            at("taken_at_timestamp") < at("owner") && at("owner") < at("video_play_count"),
            "owner where the full post put it"
        );
        assert_eq!(
            saved["edge_media_to_tagged_user"],
            json!({"edges": [{"node": {"user": {"username": "bob"}}}]})
        );
        assert_eq!(
            saved["edge_media_to_parent_comment"],
            json!({"count": 0, "edges": []})
        );
        assert_eq!(saved["iphone_struct"], listing);
        assert_eq!(
            post_caption(&post.before).as_deref(),
            Some("Caf\u{e9} "),
            "NFC"
        );
        assert_eq!(post_time(&post.before), Some(1767225341.0));
    }

    #[test]
    fn without_the_full_post_the_owner_goes_last_and_sidecars_number_their_children() {
        let listing = parse(
            r#"{"pk":12,"code":"EAAB","media_type":8,"taken_at":5,"caption":null,"like_count":1,
            "has_liked":false,"user":{"pk":7,"username":"ada","full_name":"","is_private":false,
            "profile_pic_url":"p"},"carousel_media":[
              {"media_type":1,"image_versions2":{"candidates":[{"url":"a"}]}},
              {"media_type":2,"image_versions2":{"candidates":[{"url":"b"}]},
               "video_versions":[{"url":"bv"}]}]}"#,
        );
        let post = post_node(&PostSources {
            listing: Some(&listing),
            full: None,
            raw: &Value::Null,
        });
        assert_eq!(keys(&post.saved).last(), Some(&"owner"));
        assert_eq!(post.saved["caption"], Value::Null);
        assert_eq!(
            post.saved["edge_sidecar_to_children"],
            json!({"edges": [{"node": {"display_url": "a", "is_video": false}},
                {"node": {"display_url": "b", "is_video": true, "video_url": "bv"}}]})
        );
        assert_eq!(sidecar_videos(&post.before), Some(vec![false, true]));
        // A child Instaloader cannot read leaves the whole key out.
        let mut broken = listing.clone();
        broken["carousel_media"][1]["media_type"] = json!(99);
        assert!(!listing_node(&broken).contains_key("edge_sidecar_to_children"));
    }

    #[test]
    fn profiles_are_normalised_and_lose_their_post_lists() {
        let user = parse(
            r#"{"pk":"7","username":"ada","media_count":3,"follower_count":2,
            "following_count":1,"is_business":false,"category":null,
            "hd_profile_pic_url_info":{"url":"hd"},"profile_pic_url":"sd",
            "edge_felix_video_timeline":{"count":0},
            "friendship_status":{"following":false,"blocking":true}}"#,
        );
        let app = json!({"pk": 7});
        let node = profile_node(&user, Some(&app));
        assert_eq!(
            keys(&node),
            [
                "pk",
                "username",
                "media_count",
                "follower_count",
                "following_count",
                "is_business",
                "category",
                "hd_profile_pic_url_info",
                "profile_pic_url",
                "friendship_status",
                "id",
                "edge_followed_by",
                "edge_follow",
                "is_business_account",
                "business_category_name",
                "followed_by_viewer",
                "follows_viewer",
                "blocked_by_viewer",
                "has_blocked_viewer",
                "has_requested_viewer",
                "requested_by_viewer",
                "profile_pic_url_hd",
                "iphone_struct"
            ]
        );
        assert_eq!(node["blocked_by_viewer"], true);
        assert_eq!(node["has_requested_viewer"], false);
        assert_eq!(node["profile_pic_url_hd"], "hd");
        assert_eq!(node["iphone_struct"], app);
    }

    #[test]
    fn story_items_take_their_app_item_and_owner() {
        let web = parse(r#"{"id":"5","owner":{"id":"7"},"taken_at_timestamp":9,"is_video":false}"#);
        let app = json!({"pk": 5});
        let owner = plain_profile(&json!({"id": "7", "username": "ada"}));
        let node = story_item_node(Some(&web), Some(&app), Some(owner));
        assert_eq!(
            keys(&node),
            [
                "id",
                "owner",
                "taken_at_timestamp",
                "is_video",
                "iphone_struct"
            ]
        );
        assert_eq!(node["owner"], json!({"id": "7", "username": "ada"}));
        let web = parse(r#"{"id":"5","taken_at_timestamp":9}"#);
        let owner = plain_profile(&json!({"id": "7"}));
        let node = story_item_node(Some(&web), Some(&app), Some(owner));
        assert_eq!(
            keys(&node),
            ["id", "taken_at_timestamp", "iphone_struct", "owner"]
        );
        assert_eq!(story_time(&node), Some(9.0));
    }

    #[test]
    fn comments_are_sorted_merged_and_keep_each_path_s_ids() {
        let web_top = parse(
            r#"{"id":"100","text":"a","created_at":50,"owner":{"id":"1","username":"x"},
            "edge_liked_by":{"count":2}}"#,
        );
        let web_reply_1 = parse(r#"{"id":"101","text":"b","created_at":60,"owner":{"id":"2"}}"#);
        let web_reply_2 = parse(r#"{"id":"102","text":"c","created_at":70,"owner":{"id":"3"}}"#);
        let app_top = parse(
            r#"{"pk":"200","text":"d","created_at":50,"comment_like_count":0,
            "user":{"pk":4,"username":"y","full_name":"Y","is_private":false,"profile_pic_url":"u"}}"#,
        );
        let stored = [
            StoredComment {
                id: 100,
                parent_id: None,
                node: &web_top,
            },
            StoredComment {
                id: 101,
                parent_id: Some(100),
                node: &web_reply_1,
            },
            StoredComment {
                id: 102,
                parent_id: Some(100),
                node: &web_reply_2,
            },
            StoredComment {
                id: 200,
                parent_id: None,
                node: &app_top,
            },
        ];
        let saved = comments_to_save(Vec::new(), fetched_comments(&stored));
        // Same time: lower id first. A web comment's id stays a string, answers' are numbers.
        assert_eq!(saved[0]["id"], "100");
        assert_eq!(saved[1]["id"], 200);
        let answers: Vec<&Value> = saved[0]["answers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| &a["id"])
            .collect();
        assert_eq!(answers, [&json!(102), &json!(101)], "highest id first");
        assert_eq!(saved[0]["likes_count"], 2);
        assert_eq!(
            saved[0]["answers"][0]["likes_count"], 0,
            "no edge_liked_by: 0"
        );
        assert_eq!(saved[1]["owner"]["profile_pic_url_hd"], "u");
        // Read back and merged with the same comments again: nothing is duplicated.
        let again = comments_to_save(saved.clone(), fetched_comments(&stored));
        assert_eq!(again.len(), 2);
        assert_eq!(again[0]["answers"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn captions_are_stripped_as_python_strips() {
        assert_eq!(
            caption_file_text(Some(" \u{1f}hi there\n\u{3000}")),
            Some("hi there\n".into())
        );
        assert_eq!(caption_file_text(Some(" \n\t")), None);
        assert_eq!(caption_file_text(None), None);
    }
}
