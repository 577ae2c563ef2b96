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
        let user = answer.json["data"]["user"].clone();
        if user.is_null() {
            return Err(IgError::NotFound(format!("profile {:?}", self.job.target)).into());
        }
        Ok(user)
    }

    async fn profile(&self, cp: &mut Checkpoint) -> Result<(), CrawlError> {
        let user = UserRow::from_web(&self.profile_info().await?)?;
        let mut tx = self.pool.begin().await?;
        let n = store::upsert_users(&mut tx, self.job.lease.job_id, &[user]).await?;
        cp.items += n;
        cp.pages += 1;
        cp.done = true;
        Queue::checkpoint(&mut *tx, &self.job.lease, cp).await?;
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
        Queue::checkpoint(&mut *tx, &self.job.lease, cp).await?;
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
            let media = &user["edge_owner_to_timeline_media"];
            if user["is_private"].as_bool() == Some(true)
                && media["edges"].as_array().is_none_or(Vec::is_empty)
                && media["count"].as_i64().unwrap_or(0) > 0
            {
                return Err(IgError::Forbidden(format!(
                    "profile {:?} is private",
                    self.job.target
                ))
                .into());
            }
            let page = posts_page(media, "the profile's first posts")?;
            if self.store_page(&sink, page, cp).await? {
                return Ok(());
            }
        }
        let vars = |first: u32, after: Option<&str>| json!({"id": id.to_string(), "first": first, "after": after});
        self.paginate(
            &sink,
            cp,
            |first, after| Call::graphql(hashes::PROFILE_POSTS, &vars(first, after)),
            |j| {
                posts_page(
                    &j["data"]["user"]["edge_owner_to_timeline_media"],
                    "profile posts",
                )
            },
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
            |j| {
                let hashtag = &j["data"]["hashtag"];
                if hashtag.is_null() {
                    return Err(ShapeError("no such hashtag".into()));
                }
                posts_page(&hashtag["edge_hashtag_to_media"], "hashtag posts")
            },
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
            move |j| {
                let media = &j["data"]["shortcode_media"];
                if media.is_null() {
                    return Err(ShapeError("no such post".into()));
                }
                edge_page(&media["edge_media_to_comment"], "comments", |n| {
                    CommentRow::thread(&code, n).map(Entry::Thread)
                })
            },
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
            |j| {
                let user = &j["data"]["user"];
                if user.is_null() {
                    return Err(ShapeError("no such user".into()));
                }
                edge_page(&user[edge], edge, |n| UserRow::from_web(n).map(Entry::User))
            },
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
        let media = &answer.json["graphql"]["shortcode_media"];
        if media.is_null() {
            return Err(IgError::NotFound(format!("post {:?}", self.job.target)).into());
        }
        let page = PageData {
            entries: vec![Entry::Post(PostRow::from_node(media)?)],
            end_cursor: None,
            has_next: false,
        };
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
        let items = answer.json["reels"][id.to_string()]["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let rows = items
            .iter()
            .map(|item| StoryRow::from_item(id, None, item))
            .collect::<Result<Vec<_>, _>>()?;
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
        let highlights: Vec<(String, String)> = tray.json["tray"]
            .as_array()
            .ok_or_else(|| ShapeError("highlights: no tray".into()))?
            .iter()
            .filter_map(|h| {
                Some((
                    h["id"].as_str()?.to_owned(),
                    h["title"].as_str().unwrap_or("").to_owned(),
                ))
            })
            .collect();
        let mut rows = Vec::new();
        for chunk in highlights.chunks(REELS_PER_REQUEST) {
            let ids: Vec<&str> = chunk.iter().map(|h| h.0.as_str()).collect();
            let answer = self
                .send(&Call::mobile(
                    "/api/v1/feed/reels_media/",
                    &[("reel_ids", &ids.join(","))],
                ))
                .await?;
            for (hid, title) in chunk {
                for item in answer.json["reels"][hid]["items"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                {
                    rows.push(StoryRow::from_item(id, Some((hid, title)), item)?);
                }
            }
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
        Queue::checkpoint(&mut *tx, &self.job.lease, cp).await?;
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
        let mut posts = Vec::new();
        let mut comments = Vec::new();
        let mut users = Vec::new();
        for entry in page.entries {
            match entry {
                Entry::Post(p) => posts.push(p),
                Entry::Thread(t) => comments.extend(t),
                Entry::User(u) => users.push(u),
            }
        }
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
        cp.cursor = page.end_cursor;
        cp.done = stop || !page.has_next;
        Queue::checkpoint(&mut *tx, &self.job.lease, cp).await?;
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
