//! One crawler per job kind. A paginated crawler stores each page's items and its checkpoint (the
//! next cursor, counts, the resolved user id) in one transaction, so a crash loses at most the page
//! in flight and a rescued job resumes where the last one stopped.

use serde_json::{Value, json};
use sqlx::PgPool;
use trawl_shared::JobKind;
use trawl_shared::domain::JobSpec;
use trawl_shared::queue::{Checkpoint, LeasedJob, Queue, QueueError};
use trawl_shared::shutdown::Shutdown;

use crate::instagram::{Answer, Call, IgError, InstagramClient};
use crate::metrics::WorkerMetrics;
use crate::store::{self, CommentRow, Listing, PostRow, ShapeError, StoryRow, UserRow};

/// The web GraphQL queries Trawl sends (Instaloader's `query_hash` values).
pub mod hashes {
    pub const PROFILE_POSTS: &str = "003056d32c2554def87228bc3fd9668a";
    pub const COMMENTS: &str = "97b41c52301f77ce508f55e66d17620e";
    pub const FOLLOWERS: &str = "37479f2b8209594dde7facb0d904896a";
    pub const FOLLOWEES: &str = "58712303d941c6855d4e888c5f0cd22f";
    pub const HASHTAG: &str = "9b498c08113f1e09617a1703c22b2f32";
}

/// Smallest page length a 400 may halve to (Instaloader's rule).
const MIN_PAGE_LENGTH: u32 = 12;
/// Reels asked for in one mobile request.
const REELS_PER_REQUEST: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum CrawlError {
    #[error(transparent)]
    Instagram(#[from] IgError),
    #[error(transparent)]
    Shape(#[from] ShapeError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("the worker is stopping")]
    Stopping,
}

/// What a finished crawl did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrawlReport {
    pub items: u64,
    pub pages: u64,
}

/// One job's crawl, with what it needs.
pub struct Crawl<'a> {
    pub client: &'a InstagramClient,
    pub pool: &'a PgPool,
    pub queue: &'a Queue,
    pub job: &'a LeasedJob,
    pub shutdown: &'a Shutdown,
    pub metrics: &'a WorkerMetrics,
    pub default_max_attempts: i32,
}

/// One page of a listing, read from an answer.
struct PageData {
    entries: Vec<Entry>,
    end_cursor: Option<String>,
    has_next: bool,
}

enum Entry {
    Post(PostRow),
    /// A top-level comment and its replies.
    Thread(Vec<CommentRow>),
    User(UserRow),
}

impl Entry {
    fn id(&self) -> i64 {
        match self {
            Entry::Post(p) => p.id,
            Entry::Thread(t) => t.first().map_or(0, |c| c.id),
            Entry::User(u) => u.id,
        }
    }
}

/// Where a listing's entries go.
#[derive(Debug, Clone)]
enum Sink {
    Posts { tag: Option<String> },
    Comments,
    Followers { subject: i64 },
    Followees { subject: i64 },
}

impl Sink {
    fn listing(&self) -> Listing {
        match self {
            Sink::Posts { .. } => Listing::Posts,
            Sink::Comments => Listing::Comments,
            Sink::Followers { subject } => Listing::Followers { subject: *subject },
            Sink::Followees { subject } => Listing::Followees { subject: *subject },
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
    let info = &connection["page_info"];
    let end_cursor = info["end_cursor"].as_str().map(str::to_owned);
    let has_next = info["has_next_page"].as_bool().unwrap_or(false) && end_cursor.is_some();
    Ok(PageData {
        entries,
        end_cursor,
        has_next,
    })
}

fn posts_page(connection: &Value, what: &str) -> Result<PageData, ShapeError> {
    edge_page(connection, what, |n| PostRow::from_node(n).map(Entry::Post))
}

// What each crawler reads from its answers, apart from the sending and storing, so that
// `decode_answer` (and the fuzz target `ig_response`) runs exactly the crawlers' code.

/// The user object of a `web_profile_info` answer.
fn profile_user(j: &Value, target: &str) -> Result<Value, CrawlError> {
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

/// The first page of posts, which travels with the profile (Instaloader's `first_data`); a
/// private profile that shows none of its posts is not visible.
fn first_posts(user: &Value, target: &str) -> Result<PageData, CrawlError> {
    let media = &user["edge_owner_to_timeline_media"];
    if user["is_private"].as_bool() == Some(true)
        && media["edges"].as_array().is_none_or(Vec::is_empty)
        && media["count"].as_i64().unwrap_or(0) > 0
    {
        return Err(IgError::Forbidden(format!("profile {target:?} is private")).into());
    }
    Ok(posts_page(media, "the profile's first posts")?)
}

fn profile_posts_page(j: &Value) -> Result<PageData, ShapeError> {
    posts_page(
        &j["data"]["user"]["edge_owner_to_timeline_media"],
        "profile posts",
    )
}

fn hashtag_page(j: &Value) -> Result<PageData, ShapeError> {
    let hashtag = &j["data"]["hashtag"];
    if hashtag.is_null() {
        return Err(ShapeError("no such hashtag".into()));
    }
    posts_page(&hashtag["edge_hashtag_to_media"], "hashtag posts")
}

fn comments_page(shortcode: &str, j: &Value) -> Result<PageData, ShapeError> {
    let media = &j["data"]["shortcode_media"];
    if media.is_null() {
        return Err(ShapeError("no such post".into()));
    }
    edge_page(&media["edge_media_to_comment"], "comments", |n| {
        CommentRow::thread(shortcode, n).map(Entry::Thread)
    })
}

/// A page of followers (`edge` = `edge_followed_by`) or followees (`edge_follow`).
fn follows_page(edge: &str, j: &Value) -> Result<PageData, ShapeError> {
    let user = &j["data"]["user"];
    if user.is_null() {
        return Err(ShapeError("no such user".into()));
    }
    edge_page(&user[edge], edge, |n| UserRow::from_web(n).map(Entry::User))
}

/// A post page (`/p/{shortcode}/?__a=1`) as a page of one post.
fn post_page(j: &Value, target: &str) -> Result<PageData, CrawlError> {
    let media = &j["graphql"]["shortcode_media"];
    if media.is_null() {
        return Err(IgError::NotFound(format!("post {target:?}")).into());
    }
    Ok(PageData {
        entries: vec![Entry::Post(PostRow::from_node(media)?)],
        end_cursor: None,
        has_next: false,
    })
}

/// The stories of user `id` in a `reels_media` answer.
fn story_rows(id: i64, j: &Value) -> Result<Vec<StoryRow>, ShapeError> {
    // No reel for the user means no current stories; no `reels` object means a bad answer.
    reels_of(j, "stories")?[id.to_string()]["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|item| StoryRow::from_item(id, None, item))
        .collect()
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

/// The highlights of a highlights tray: (id, title).
fn highlight_tray(j: &Value) -> Result<Vec<(String, String)>, ShapeError> {
    Ok(j["tray"]
        .as_array()
        .ok_or_else(|| ShapeError("highlights: no tray".into()))?
        .iter()
        .filter_map(|h| {
            Some((
                h["id"].as_str()?.to_owned(),
                h["title"].as_str().unwrap_or("").to_owned(),
            ))
        })
        .collect())
}

/// The items of the highlights `chunk` (of user `id`) in a `reels_media` answer.
fn highlight_rows(
    id: i64,
    chunk: &[(String, String)],
    j: &Value,
) -> Result<Vec<StoryRow>, ShapeError> {
    let reels = reels_of(j, "highlights")?;
    let mut rows = Vec::new();
    for (hid, title) in chunk {
        for item in reels[hid]["items"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            rows.push(StoryRow::from_item(id, Some((hid, title)), item)?);
        }
    }
    Ok(rows)
}

/// An answer the crawlers read, for [`decode_answer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    /// `web_profile_info`, read as the `profile` crawler (and every per-user one) reads it.
    Profile,
    /// `web_profile_info`, read as the first page of `profile_posts`.
    ProfileFirstPosts,
    /// A GraphQL page of a profile's posts.
    ProfilePosts,
    /// A GraphQL page of a hashtag's posts.
    HashtagPosts,
    /// A GraphQL page of a post's comments with their replies.
    PostComments,
    /// A GraphQL page of followers.
    Followers,
    /// A GraphQL page of followees.
    Followees,
    /// A post page (`/p/{shortcode}/?__a=1&__d=dis`).
    Post,
    /// `reels_media` for the subject's stories.
    Stories,
    /// A highlights tray and the `reels_media` answer for its highlights, merged into one
    /// object (`{"tray": …, "reels": …}`): the crawler asks for the reels of the tray's ids.
    Highlights,
}

impl AnswerKind {
    pub const ALL: [AnswerKind; 10] = [
        AnswerKind::Profile,
        AnswerKind::ProfileFirstPosts,
        AnswerKind::ProfilePosts,
        AnswerKind::HashtagPosts,
        AnswerKind::PostComments,
        AnswerKind::Followers,
        AnswerKind::Followees,
        AnswerKind::Post,
        AnswerKind::Stories,
        AnswerKind::Highlights,
    ];
}

/// The rows one answer decodes to, as its crawler would store them, and where its listing goes
/// next.
#[derive(Debug, Default)]
pub struct Decoded {
    pub users: Vec<UserRow>,
    pub posts: Vec<PostRow>,
    pub comments: Vec<CommentRow>,
    pub stories: Vec<StoryRow>,
    pub end_cursor: Option<String>,
    pub has_next: bool,
}

impl Decoded {
    fn from_page(page: PageData) -> Self {
        let mut out = Decoded {
            end_cursor: page.end_cursor,
            has_next: page.has_next,
            ..Decoded::default()
        };
        for entry in page.entries {
            match entry {
                Entry::Post(p) => out.posts.push(p),
                Entry::Thread(t) => out.comments.extend(t),
                Entry::User(u) => out.users.push(u),
            }
        }
        out
    }
}

/// Decodes the body of a 200 answer as the crawler of `kind` reads it (the client's JSON
/// reading first), without a network or a database: the fuzz target `ig_response` and tests
/// use it. `target` is the job's target and `subject` the user id it resolved to.
pub fn decode_answer(
    kind: AnswerKind,
    target: &str,
    subject: i64,
    body: &[u8],
) -> Result<Decoded, CrawlError> {
    let j = crate::instagram::parse_body(body)
        .ok_or_else(|| ShapeError("the answer is not JSON".into()))?;
    let page = match kind {
        AnswerKind::Profile => {
            let user = UserRow::from_web(&profile_user(&j, target)?)?;
            return Ok(Decoded {
                users: vec![user],
                ..Decoded::default()
            });
        }
        AnswerKind::ProfileFirstPosts => {
            let user = profile_user(&j, target)?;
            let row = UserRow::from_web(&user)?;
            let mut out = Decoded::from_page(first_posts(&user, target)?);
            out.users.insert(0, row);
            return Ok(out);
        }
        AnswerKind::ProfilePosts => profile_posts_page(&j)?,
        AnswerKind::HashtagPosts => hashtag_page(&j)?,
        AnswerKind::PostComments => comments_page(target, &j)?,
        AnswerKind::Followers => follows_page("edge_followed_by", &j)?,
        AnswerKind::Followees => follows_page("edge_follow", &j)?,
        AnswerKind::Post => post_page(&j, target)?,
        AnswerKind::Stories => {
            return Ok(Decoded {
                stories: story_rows(subject, &j)?,
                ..Decoded::default()
            });
        }
        AnswerKind::Highlights => {
            let tray = highlight_tray(&j)?;
            let mut stories = Vec::new();
            for chunk in tray.chunks(REELS_PER_REQUEST) {
                stories.extend(highlight_rows(subject, chunk, &j)?);
            }
            return Ok(Decoded {
                stories,
                ..Decoded::default()
            });
        }
    };
    Ok(Decoded::from_page(page))
}

impl Crawl<'_> {
    pub async fn run(&self) -> Result<CrawlReport, CrawlError> {
        let mut cp = self.job.checkpoint.clone().unwrap_or_default();
        if !cp.done {
            match self.job.kind {
                JobKind::Profile => self.profile(&mut cp).await?,
                JobKind::ProfilePosts => self.profile_posts(&mut cp).await?,
                JobKind::Post => self.post(&mut cp).await?,
                JobKind::PostComments => self.post_comments(&mut cp).await?,
                JobKind::Followers | JobKind::Followees => self.follows(&mut cp).await?,
                JobKind::HashtagPosts => self.hashtag_posts(&mut cp).await?,
                JobKind::Stories => self.stories(&mut cp).await?,
                JobKind::Highlights => self.highlights(&mut cp).await?,
            }
        }
        Ok(CrawlReport {
            items: cp.items,
            pages: cp.pages,
        })
    }

    /// Sends a request unless the worker is stopping; a stop abandons a limiter wait at once.
    async fn send(&self, call: &Call) -> Result<Answer, CrawlError> {
        if self.shutdown.is_triggered() {
            return Err(CrawlError::Stopping);
        }
        tokio::select! {
            answer = self.client.send(call) => Ok(answer?),
            () = self.shutdown.clone().wait() => Err(CrawlError::Stopping),
        }
    }

    /// The web profile of the job's target (username): the user object.
    async fn profile_info(&self) -> Result<Value, CrawlError> {
        let answer = self
            .send(&Call::web(
                "/api/v1/users/web_profile_info/",
                &[("username", &self.job.target)],
            ))
            .await?;
        profile_user(&answer.json, &self.job.target)
    }

    async fn profile(&self, cp: &mut Checkpoint) -> Result<(), CrawlError> {
        let user = UserRow::from_web(&self.profile_info().await?)?;
        let mut tx = self.pool.begin().await?;
        let n = store::upsert_users(&mut tx, self.job.lease.job_id, &[user]).await?;
        cp.items += n;
        cp.pages += 1;
        cp.done = true;
        self.queue.checkpoint(&mut *tx, &self.job.lease, cp).await?;
        tx.commit().await?;
        self.count("user", n);
        Ok(())
    }

    /// The user id of the target, resolved once and kept in the checkpoint; the profile is stored.
    async fn subject(&self, cp: &mut Checkpoint) -> Result<(i64, Option<Value>), CrawlError> {
        if let Some(id) = cp.subject_id.as_deref().and_then(|s| s.parse().ok()) {
            return Ok((id, None));
        }
        let user = self.profile_info().await?;
        let row = UserRow::from_web(&user)?;
        let id = row.id;
        cp.subject_id = Some(id.to_string());
        let mut tx = self.pool.begin().await?;
        let n = store::upsert_users(&mut tx, self.job.lease.job_id, &[row]).await?;
        self.queue.checkpoint(&mut *tx, &self.job.lease, cp).await?;
        tx.commit().await?;
        self.count("user", n);
        Ok((id, Some(user)))
    }

    async fn profile_posts(&self, cp: &mut Checkpoint) -> Result<(), CrawlError> {
        let (id, profile) = self.subject(cp).await?;
        let sink = Sink::Posts { tag: None };
        // The profile answer carries the first page (Instaloader's `first_data`): store it
        // rather than ask for it again.
        if let Some(user) = profile.filter(|_| cp.pages == 0) {
            let page = first_posts(&user, &self.job.target)?;
            if self.store_page(&sink, page, cp).await? {
                return Ok(());
            }
        }
        let vars = |first: u32, after: Option<&str>| json!({"id": id.to_string(), "first": first, "after": after});
        self.paginate(
            &sink,
            cp,
            |first, after| Call::graphql(hashes::PROFILE_POSTS, &vars(first, after)),
            profile_posts_page,
        )
        .await
    }

    async fn hashtag_posts(&self, cp: &mut Checkpoint) -> Result<(), CrawlError> {
        let tag = self.job.target.clone();
        let sink = Sink::Posts {
            tag: Some(tag.clone()),
        };
        self.paginate(
            &sink,
            cp,
            |first, after| {
                Call::graphql(
                    hashes::HASHTAG,
                    &json!({"tag_name": tag, "first": first, "after": after}),
                )
            },
            hashtag_page,
        )
        .await
    }

    async fn post_comments(&self, cp: &mut Checkpoint) -> Result<(), CrawlError> {
        let shortcode = self.job.target.clone();
        let sink = Sink::Comments;
        let code = shortcode.clone();
        self.paginate(
            &sink,
            cp,
            |first, after| {
                Call::graphql(
                    hashes::COMMENTS,
                    &json!({"shortcode": shortcode, "first": first, "after": after}),
                )
            },
            move |j| comments_page(&code, j),
        )
        .await
    }

    async fn follows(&self, cp: &mut Checkpoint) -> Result<(), CrawlError> {
        let (id, _) = self.subject(cp).await?;
        let followers = self.job.kind == JobKind::Followers;
        let (hash, edge, sink) = if followers {
            (
                hashes::FOLLOWERS,
                "edge_followed_by",
                Sink::Followers { subject: id },
            )
        } else {
            (
                hashes::FOLLOWEES,
                "edge_follow",
                Sink::Followees { subject: id },
            )
        };
        self.paginate(
            &sink,
            cp,
            |first, after| {
                Call::graphql(
                    hash,
                    &json!({"id": id.to_string(), "first": first, "after": after}),
                )
            },
            |j| follows_page(edge, j),
        )
        .await
    }

    async fn post(&self, cp: &mut Checkpoint) -> Result<(), CrawlError> {
        let answer = self
            .send(&Call::web(
                format!("/p/{}/", self.job.target),
                &[("__a", "1"), ("__d", "dis")],
            ))
            .await?;
        let page = post_page(&answer.json, &self.job.target)?;
        self.store_page(&Sink::Posts { tag: None }, page, cp)
            .await?;
        Ok(())
    }

    async fn stories(&self, cp: &mut Checkpoint) -> Result<(), CrawlError> {
        let (id, _) = self.subject(cp).await?;
        let answer = self
            .send(&Call::mobile(
                "/api/v1/feed/reels_media/",
                &[("reel_ids", &id.to_string())],
            ))
            .await?;
        let rows = story_rows(id, &answer.json)?;
        self.store_stories(rows, cp).await
    }

    async fn highlights(&self, cp: &mut Checkpoint) -> Result<(), CrawlError> {
        let (id, _) = self.subject(cp).await?;
        let tray = self
            .send(&Call::mobile(
                format!("/api/v1/highlights/{id}/highlights_tray/"),
                &[],
            ))
            .await?;
        let highlights = highlight_tray(&tray.json)?;
        let mut rows = Vec::new();
        for chunk in highlights.chunks(REELS_PER_REQUEST) {
            let ids: Vec<&str> = chunk.iter().map(|h| h.0.as_str()).collect();
            let answer = self
                .send(&Call::mobile(
                    "/api/v1/feed/reels_media/",
                    &[("reel_ids", &ids.join(","))],
                ))
                .await?;
            rows.extend(highlight_rows(id, chunk, &answer.json)?);
        }
        self.store_stories(rows, cp).await
    }

    async fn store_stories(
        &self,
        rows: Vec<StoryRow>,
        cp: &mut Checkpoint,
    ) -> Result<(), CrawlError> {
        let mut tx = self.pool.begin().await?;
        let n = store::upsert_stories(&mut tx, self.job.lease.job_id, &rows).await?;
        cp.items += n;
        cp.pages += 1;
        cp.done = true;
        self.queue.checkpoint(&mut *tx, &self.job.lease, cp).await?;
        tx.commit().await?;
        self.count("story", n);
        Ok(())
    }

    /// Pages from the checkpoint's cursor to the end (or the stop condition), halving the page
    /// length after a 400 while it stays at least 12.
    async fn paginate(
        &self,
        sink: &Sink,
        cp: &mut Checkpoint,
        call: impl Fn(u32, Option<&str>) -> Call,
        extract: impl Fn(&Value) -> Result<PageData, ShapeError>,
    ) -> Result<(), CrawlError> {
        let mut asked = std::collections::HashSet::new();
        loop {
            let first = cp.page_length.unwrap_or(self.client.page_length());
            let answer = match self.send(&call(first, cp.cursor.as_deref())).await {
                Ok(a) => a,
                Err(CrawlError::Instagram(IgError::BadRequest(reason)))
                    if first / 2 >= MIN_PAGE_LENGTH =>
                {
                    tracing::info!(job_id = self.job.lease.job_id, first, %reason,
                        "400 on a page; halving the page length");
                    cp.page_length = Some(first / 2);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let page = extract(&answer.json)?;
            // A server that hands back a cursor it gave before would page forever.
            if let Some(sent) = &cp.cursor {
                asked.insert(sent.clone());
            }
            if let Some(next) = page.end_cursor.as_ref().filter(|_| page.has_next)
                && asked.contains(next)
            {
                let shown: String = next.chars().take(80).collect();
                return Err(ShapeError(format!(
                    "the next-page cursor {shown:?} was already used: the listing would never end"
                ))
                .into());
            }
            if self.store_page(sink, page, cp).await? {
                return Ok(());
            }
        }
    }

    /// Stores one page and the checkpoint after it in one transaction. `true`: the crawl is done
    /// (last page, `max_items` reached, or an item an earlier job stored).
    async fn store_page(
        &self,
        sink: &Sink,
        mut page: PageData,
        cp: &mut Checkpoint,
    ) -> Result<bool, CrawlError> {
        let job_id = self.job.lease.job_id;
        let options = &self.job.options;
        let mut tx = self.pool.begin().await?;
        let mut stop = false;
        if options.stop_at_stored {
            let ids: Vec<i64> = page.entries.iter().map(Entry::id).collect();
            let known = store::stored_by_others(&mut tx, sink.listing(), job_id, &ids).await?;
            if let Some(at) = page.entries.iter().position(|e| known.contains(&e.id())) {
                page.entries.truncate(at);
                stop = true;
            }
        }
        if let Some(max) = options.max_items {
            let room = usize::try_from(max.saturating_sub(cp.items)).unwrap_or(usize::MAX);
            if page.entries.len() >= room {
                page.entries.truncate(room);
                stop = true;
            }
        }
        let Decoded {
            posts,
            comments,
            users,
            end_cursor,
            has_next,
            ..
        } = Decoded::from_page(page);
        let listed = (posts.len() + users.len()) as u64
            + comments.iter().filter(|c| c.parent_id.is_none()).count() as u64;
        let mut stored = store::Stored::default();
        stored.add("post", store::upsert_posts(&mut tx, job_id, &posts).await?);
        stored.add(
            "comment",
            store::upsert_comments(&mut tx, job_id, &comments).await?,
        );
        stored.add("user", store::upsert_users(&mut tx, job_id, &users).await?);
        match sink {
            Sink::Posts { tag: Some(tag) } => {
                let ids: Vec<i64> = posts.iter().map(|p| p.id).collect();
                stored.add(
                    "hashtag_post",
                    store::upsert_hashtag_posts(&mut tx, job_id, tag, &ids).await?,
                );
            }
            Sink::Followers { subject } | Sink::Followees { subject } => {
                let edges: Vec<(i64, i64)> = users
                    .iter()
                    .map(|u| match sink {
                        Sink::Followers { .. } => (u.id, *subject),
                        _ => (*subject, u.id),
                    })
                    .collect();
                stored.add(
                    "follow",
                    store::upsert_follows(&mut tx, job_id, &edges).await?,
                );
            }
            _ => {}
        }
        if options.with_comments {
            let jobs = posts
                .iter()
                .filter(|p| p.comment_count.unwrap_or(0) > 0)
                .filter_map(|p| {
                    JobSpec::new(JobKind::PostComments.as_str(), &p.shortcode)
                        .validate(self.default_max_attempts)
                        .ok()
                })
                .collect::<Vec<_>>();
            Queue::submit_in(&mut tx, &jobs).await?;
        }
        cp.items += listed;
        cp.pages += 1;
        cp.cursor = end_cursor;
        cp.done = stop || !has_next;
        self.queue.checkpoint(&mut *tx, &self.job.lease, cp).await?;
        tx.commit().await?;
        for (item, n) in stored.0 {
            self.count(item, n);
        }
        Ok(cp.done)
    }

    fn count(&self, item: &str, n: u64) {
        self.metrics.items.with_label_values(&[item]).inc_by(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(kind: AnswerKind, body: &str) -> Result<Decoded, CrawlError> {
        decode_answer(kind, "EAAA", 7, body.as_bytes())
    }

    const POST: &str = r#"{"id":"11","shortcode":"EAAA","owner":{"id":"7","username":"u"},
        "taken_at_timestamp":1767223562,"edge_media_to_comment":{"count":2}}"#;

    #[test]
    fn listings_decode_with_their_cursor() {
        let body = format!(
            r#"{{"data":{{"user":{{"edge_owner_to_timeline_media":{{"count":9,
            "page_info":{{"has_next_page":true,"end_cursor":"c1"}},"edges":[{{"node":{POST}}}]}}}}}},
            "status":"ok"}}"#
        );
        let page = decode(AnswerKind::ProfilePosts, &body).unwrap();
        assert_eq!(page.posts.len(), 1);
        assert_eq!(page.posts[0].comment_count, Some(2));
        assert_eq!(
            (page.end_cursor.as_deref(), page.has_next),
            (Some("c1"), true)
        );
        let comments = r#"{"data":{"shortcode_media":{"edge_media_to_comment":{"edges":[
            {"node":{"id":"5","text":"hi","edge_threaded_comments":{"edges":[{"node":{"id":"6"}}]}}}],
            "page_info":{"has_next_page":true}}}}}"#;
        let page = decode(AnswerKind::PostComments, comments).unwrap();
        let ids: Vec<_> = page.comments.iter().map(|c| (c.id, c.parent_id)).collect();
        assert_eq!(ids, [(5, None), (6, Some(5))]);
        assert!(!page.has_next, "no cursor, so no next page");
    }

    #[test]
    fn a_private_profile_without_posts_is_not_visible() {
        let body = r#"{"data":{"user":{"id":"7","username":"u","is_private":true,
            "edge_owner_to_timeline_media":{"count":3,"edges":[]}}}}"#;
        assert!(matches!(
            decode(AnswerKind::ProfileFirstPosts, body),
            Err(CrawlError::Instagram(IgError::Forbidden(_)))
        ));
        assert_eq!(decode(AnswerKind::Profile, body).unwrap().users[0].id, 7);
    }

    #[test]
    fn stories_and_highlights_are_read_by_their_reel_ids() {
        let stories = r#"{"reels":{"7":{"items":[{"pk":1,"taken_at":1767223562}]},
            "8":{"items":[{"pk":2}]}}}"#;
        let rows = decode(AnswerKind::Stories, stories).unwrap().stories;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, "1");
        let highlights = r#"{"tray":[{"id":"highlight:70","title":"Trips"},{"title":"no id"}],
            "reels":{"highlight:70":{"items":[{"id":"3_7"}]},"highlight:71":{"items":[{"id":"4"}]}}}"#;
        let rows = decode(AnswerKind::Highlights, highlights).unwrap().stories;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].highlight_title.as_deref(), Some("Trips"));
    }

    #[test]
    fn answers_that_are_not_what_the_crawler_asked_for_are_errors() {
        for (kind, body) in [
            (AnswerKind::Post, "<html>"),
            (AnswerKind::Post, r#"{"graphql":{}}"#),
            (AnswerKind::HashtagPosts, r#"{"data":{"hashtag":null}}"#),
            (
                AnswerKind::Followers,
                r#"{"data":{"user":{"edge_followed_by":{}}}}"#,
            ),
            (AnswerKind::Highlights, r#"{"reels":{}}"#),
        ] {
            assert!(decode(kind, body).is_err(), "{kind:?} {body}");
        }
    }
}
