//! The v1 API's view of the world: the generated data set with the overlay on top (follows,
//! posts, comments, likes, stories, profile edits), rendered in the document's JSON shapes.

use serde_json::{Value, json};

use super::rfc3339;
use super::state::{NewPost, NewStory, Overlay};
use crate::cdn::{MediaItem, MediaUrls};
use crate::data::{Post, PostType, mix, place_by_id, place_by_name};
use crate::server::Sim;
use crate::server::shapes::reel_items;

/// How many data-set users an account follows from the start.
const DEFAULT_FOLLOWS: u64 = 12;

pub(crate) struct World<'a> {
    pub sim: &'a Sim,
    pub o: &'a Overlay,
    pub urls: MediaUrls<'a>,
}

/// A post of the data set or one the overlay added.
#[derive(Debug, Clone)]
pub(crate) enum PostRef {
    Data(Post),
    New(NewPost),
}

impl PostRef {
    pub fn id(&self) -> u64 {
        match self {
            PostRef::Data(p) => p.id,
            PostRef::New(p) => p.id,
        }
    }

    pub fn created_at(&self) -> i64 {
        match self {
            PostRef::Data(p) => p.taken_at,
            PostRef::New(p) => p.created_at,
        }
    }
}

impl<'a> World<'a> {
    pub fn new(sim: &'a Sim, o: &'a Overlay) -> Self {
        Self {
            sim,
            o,
            urls: sim.media_urls(),
        }
    }

    /// The login account with user id `id`.
    pub fn account_name(&self, id: u64) -> Option<&'a str> {
        account_name(self.sim, id)
    }

    pub fn exists(&self, id: u64) -> bool {
        self.sim.data.user_by_id(id).is_some() || self.account_name(id).is_some()
    }

    pub fn is_private(&self, id: u64) -> bool {
        self.sim.data.user_by_id(id).is_some_and(|u| u.is_private)
    }

    /// Whom `id` follows: the data set's graph (or an account's first picks), less what was
    /// unfollowed, plus what was followed since.
    pub fn following(&self, id: u64) -> Vec<u64> {
        let base: Vec<u64> = match self.sim.data.user_by_id(id) {
            Some(u) => u
                .following
                .iter()
                .map(|&i| self.sim.data.users[i as usize].id)
                .collect(),
            None if self.account_name(id).is_some() => default_follows(self.sim, id),
            None => Vec::new(),
        };
        let mut out: Vec<u64> = base
            .into_iter()
            .filter(|f| !self.o.unfollows.contains(&(id, *f)))
            .collect();
        for &(a, b) in &self.o.follows {
            if a == id && !out.contains(&b) {
                out.push(b);
            }
        }
        out
    }

    /// Who follows `id`, by the same rules.
    pub fn followers(&self, id: u64) -> Vec<u64> {
        let mut base: Vec<u64> = self
            .sim
            .data
            .user_by_id(id)
            .map(|u| {
                u.followers
                    .iter()
                    .map(|&i| self.sim.data.users[i as usize].id)
                    .collect()
            })
            .unwrap_or_default();
        for name in self.sim.accounts.keys() {
            let a = self.sim.account_user_id(name);
            if default_follows(self.sim, a).contains(&id) {
                base.push(a);
            }
        }
        let mut out: Vec<u64> = base
            .into_iter()
            .filter(|f| !self.o.unfollows.contains(&(*f, id)))
            .collect();
        for &(a, b) in &self.o.follows {
            if b == id && !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }

    pub fn follows(&self, a: u64, b: u64) -> bool {
        self.following(a).contains(&b)
    }

    /// Whether `viewer` may see what `id` posts and whom they know.
    pub fn visible(&self, id: u64, viewer: u64) -> bool {
        !self.is_private(id) || id == viewer || self.follows(viewer, id)
    }

    pub fn username(&self, id: u64) -> String {
        match self.sim.data.user_by_id(id) {
            Some(u) => u.username.clone(),
            None => self.account_name(id).unwrap_or("unknown").to_owned(),
        }
    }

    fn full_name(&self, id: u64) -> String {
        if let Some(name) = self.o.profiles.get(&id).and_then(|p| p.full_name.clone()) {
            return name;
        }
        match self.sim.data.user_by_id(id) {
            Some(u) => u.full_name.clone(),
            None => self.username(id),
        }
    }

    /// The short user object of the document (`{"user_id", "username", "profile_image_url"}`).
    pub fn user_summary(&self, id: u64) -> Value {
        json!({"user_id": id.to_string(), "username": self.username(id),
               "full_name": self.full_name(id),
               "profile_image_url": self.urls.profile_picture(id)})
    }

    /// A whole profile as `GET /users/{id}` answers it.
    pub fn user_profile(&self, id: u64, viewer: Option<u64>) -> Value {
        let edit = self.o.profiles.get(&id);
        let data = self.sim.data.user_by_id(id);
        let bio = edit
            .and_then(|e| e.bio.clone())
            .or_else(|| data.map(|u| u.biography.clone()))
            .unwrap_or_default();
        let website = edit
            .and_then(|e| e.website.clone())
            .or_else(|| data.map(|u| format!("https://{}.example", u.username)))
            .unwrap_or_default();
        let mut body = self.user_summary(id);
        body["bio"] = json!(bio);
        body["website"] = json!(website);
        body["verified"] = json!(data.is_some_and(|u| u.is_verified));
        body["private_account"] = json!(self.is_private(id));
        body["stats"] = json!({
            "followers_count": self.followers(id).len(),
            "following_count": self.following(id).len(),
            "posts_count": self.posts_of(id).len(),
        });
        let (following, followed_by, requested) = match viewer {
            Some(v) => (
                self.follows(v, id),
                self.follows(id, v),
                self.o.requests.contains(&(v, id)),
            ),
            None => (false, false, false),
        };
        body["following"] = json!(following);
        body["followed_by"] = json!(followed_by);
        body["requested"] = json!(requested);
        body
    }

    pub fn find_post(&self, id: u64) -> Option<PostRef> {
        if self.o.deleted.contains(&id) {
            return None;
        }
        if let Some(p) = self.sim.data.post_by_id(id) {
            return Some(PostRef::Data(p));
        }
        self.o
            .posts
            .iter()
            .find(|p| p.id == id)
            .cloned()
            .map(PostRef::New)
    }

    pub fn owner_of(&self, p: &PostRef) -> u64 {
        match p {
            PostRef::Data(p) => self.sim.data.users[p.owner as usize].id,
            PostRef::New(p) => p.owner,
        }
    }

    /// A user's posts, newest first.
    pub fn posts_of(&self, id: u64) -> Vec<PostRef> {
        let mut out: Vec<PostRef> = self
            .o
            .posts
            .iter()
            .rev()
            .filter(|p| p.owner == id && !self.o.deleted.contains(&p.id))
            .cloned()
            .map(PostRef::New)
            .collect();
        if let Some(u) = self.sim.data.user_by_id(id) {
            out.extend(
                (0..u.post_count)
                    .filter_map(|i| self.sim.data.post(u.index, i))
                    .filter(|p| !self.o.deleted.contains(&p.id))
                    .map(PostRef::Data),
            );
        }
        out
    }

    fn likes_count(&self, p: &PostRef) -> usize {
        let base = match p {
            PostRef::Data(p) => p.likes as usize,
            PostRef::New(_) => 0,
        };
        base + self
            .o
            .likes
            .iter()
            .filter(|(_, post)| *post == p.id())
            .count()
    }

    /// How many comments [`World::comments_of`] lists, counted without rendering them.
    pub fn comments_count(&self, p: &PostRef) -> usize {
        let data = match p {
            PostRef::Data(post) => (0..post.comment_count)
                .filter_map(|i| self.sim.data.comment(post, i))
                .map(|cm| 1 + self.sim.data.replies(&cm).len())
                .sum(),
            PostRef::New(_) => 0,
        };
        data + self.o.comments.iter().filter(|c| c.post == p.id()).count()
    }

    /// Every comment of a post, threads in order: a top-level comment, then its replies.
    pub fn comments_of(&self, p: &PostRef) -> Vec<Value> {
        let mut out = Vec::new();
        let post_id = p.id().to_string();
        let comment = |id: u64,
                       owner: u64,
                       text: &str,
                       created: i64,
                       likes: u64,
                       parent: Option<u64>| {
            json!({"comment_id": id.to_string(), "post_id": post_id, "user": self.user_summary(owner),
                   "text": text, "created_at": rfc3339(created), "likes_count": likes,
                   "parent_comment_id": parent.map(|p| p.to_string())})
        };
        let added_replies = |parent: u64, out: &mut Vec<Value>| {
            for c in self.o.comments.iter().filter(|c| c.parent == Some(parent)) {
                out.push(comment(c.id, c.owner, &c.text, c.created_at, 0, c.parent));
            }
        };
        if let PostRef::Data(post) = p {
            let users = &self.sim.data.users;
            for i in 0..post.comment_count {
                let Some(cm) = self.sim.data.comment(post, i) else {
                    continue;
                };
                out.push(comment(
                    cm.id,
                    users[cm.owner as usize].id,
                    &cm.text,
                    cm.created_at,
                    cm.likes,
                    None,
                ));
                for (rid, owner, created, likes) in self.sim.data.replies(&cm) {
                    let text = format!("@{} thanks", users[cm.owner as usize].username);
                    out.push(comment(
                        rid,
                        users[owner as usize].id,
                        &text,
                        created,
                        likes,
                        Some(cm.id),
                    ));
                }
                added_replies(cm.id, &mut out);
            }
        }
        for c in self
            .o
            .comments
            .iter()
            .filter(|c| c.post == p.id() && c.parent.is_none())
        {
            out.push(comment(c.id, c.owner, &c.text, c.created_at, 0, None));
            added_replies(c.id, &mut out);
        }
        out
    }

    /// A post in the document's shape, as `viewer` sees it.
    pub fn post_json(&self, p: &PostRef, viewer: Option<u64>) -> Value {
        let owner = self.owner_of(p);
        let (caption, media, location, tags): (String, Vec<Value>, Option<Value>, Vec<u64>) =
            match p {
                PostRef::Data(p) => {
                    let users = &self.sim.data.users;
                    let n = match p.kind {
                        PostType::Sidecar(n) => usize::from(n),
                        _ => 1,
                    };
                    let media = (0..n)
                        .map(|k| {
                            let item = match p.kind {
                                PostType::Sidecar(_) => MediaItem::CarouselImage {
                                    post: p.id,
                                    child: u8::try_from(k).unwrap_or(u8::MAX),
                                },
                                PostType::Video => MediaItem::PostVideo { post: p.id },
                                PostType::Image => MediaItem::PostImage { post: p.id },
                            };
                            json!({"media_id": format!("media_{}_{k}", p.id),
                               "type": if p.kind == PostType::Video { "video" } else { "photo" },
                               "url": self.urls.url(&item), "width": 1080, "height": 1080})
                        })
                        .collect();
                    let location = p
                        .location
                        .and_then(place_by_name)
                        .map(|pl| json!({"location_id": pl.id, "name": pl.name}));
                    let tags = p.tagged.iter().map(|&t| users[t as usize].id).collect();
                    (p.caption.clone(), media, location, tags)
                }
                PostRef::New(p) => {
                    let media = p
                        .media
                        .iter()
                        .map(|(id, kind)| {
                            json!({"media_id": id, "type": kind,
                               "url": format!("{}/api/v1/media/{id}", self.sim.cdn_base()),
                               "width": 1080, "height": 1080})
                        })
                        .collect();
                    let location = p
                        .location_id
                        .and_then(place_by_id)
                        .map(|pl| json!({"location_id": pl.id, "name": pl.name}));
                    (p.caption.clone(), media, location, p.user_tags.clone())
                }
            };
        let hashtags: Vec<String> = caption
            .split_whitespace()
            .filter_map(|w| w.strip_prefix('#'))
            .map(|t| {
                t.trim_end_matches(|c: char| !c.is_alphanumeric() && c != '_')
                    .to_lowercase()
            })
            .filter(|t| !t.is_empty())
            .collect();
        let user_tags: Vec<Value> = tags
            .iter()
            .enumerate()
            .map(|(k, &t)| {
                json!({"user_id": t.to_string(), "username": self.username(t),
                                  "x": 0.25 + 0.25 * (k % 3) as f64, "y": 0.3})
            })
            .collect();
        json!({
            "post_id": p.id().to_string(),
            "user": self.user_summary(owner),
            "caption": caption,
            "media": media,
            "location": location,
            "hashtags": hashtags,
            "user_tags": user_tags,
            "created_at": rfc3339(p.created_at()),
            "likes_count": self.likes_count(p),
            "comments_count": self.comments_count(p),
            "liked_by_user": viewer.is_some_and(|v| self.o.likes.contains(&(v, p.id()))),
            "saved_by_user": false,
        })
    }

    /// A user's current stories: the data set's, and those posted since that have not expired.
    pub fn stories_of(&self, id: u64, viewer: u64, now: i64) -> Vec<Value> {
        let mut out = Vec::new();
        if let Some(items) = self
            .sim
            .data
            .user_by_id(id)
            .and_then(|u| reel_items(&self.sim.data, u, None))
        {
            for it in items {
                let item = if it.video {
                    MediaItem::ReelVideo { pk: it.pk }
                } else {
                    MediaItem::ReelImage { pk: it.pk }
                };
                out.push(
                    json!({"story_id": it.pk.to_string(), "media_url": self.urls.url(&item),
                    "media_type": if it.video { "video" } else { "photo" },
                    "created_at": rfc3339(it.taken_at),
                    "expires_at": rfc3339(it.expiring_at.unwrap_or(it.taken_at + 86_400)),
                    "viewed": self.o.views.get(&it.pk).is_some_and(|v| v.contains(&viewer))}),
                );
            }
        }
        for s in self
            .o
            .stories
            .iter()
            .filter(|s| s.owner == id && s.expires_at > now)
        {
            out.push(self.story_json(s, Some(viewer)));
        }
        out
    }

    pub fn story_json(&self, s: &NewStory, viewer: Option<u64>) -> Value {
        json!({"story_id": s.id.to_string(), "user_id": s.owner.to_string(),
               "media_url": format!("{}/api/v1/media/{}", self.sim.cdn_base(), s.media_id),
               "media_type": s.media_type, "created_at": rfc3339(s.created_at),
               "expires_at": rfc3339(s.expires_at),
               "viewed": viewer.is_some_and(|v| self.o.views.get(&s.id).is_some_and(|x| x.contains(&v)))})
    }

    /// Whether `story` exists (in the data set or the overlay), and who posted it.
    pub fn story_owner(&self, story: u64, now: i64) -> Option<u64> {
        if let Some(s) = self
            .o
            .stories
            .iter()
            .find(|s| s.id == story && s.expires_at > now)
        {
            return Some(s.owner);
        }
        let u = self.sim.data.user_by_id(story / 10_000)?;
        reel_items(&self.sim.data, u, None)?
            .iter()
            .any(|it| it.pk == story)
            .then_some(u.id)
    }
}

pub(crate) fn account_name(sim: &Sim, id: u64) -> Option<&str> {
    sim.accounts
        .keys()
        .find(|name| sim.account_user_id(name) == id)
        .map(String::as_str)
}

/// The data-set users an account follows from the start: a seeded pick of public users, so that
/// its feed and stories have something in them.
pub(crate) fn default_follows(sim: &Sim, account_id: u64) -> Vec<u64> {
    let users = &sim.data.users;
    let n = users.len() as u64;
    let mut out = Vec::new();
    for k in 0..DEFAULT_FOLLOWS * 3 {
        if out.len() as u64 >= DEFAULT_FOLLOWS || n == 0 {
            break;
        }
        let u = &users[(mix(sim.data.seed, 41, account_id, k) % n) as usize];
        if !u.is_private && !out.contains(&u.id) {
            out.push(u.id);
        }
    }
    out
}
