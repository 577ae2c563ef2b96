//! One crawler per job kind, each sending what Instaloader 4.16 sends for the same work (the
//! same hosts, paths, doc_ids, variables and page sizes), so a crawl spends the same budget per
//! item as the reference client. A paginated crawler stores each page's items and its checkpoint
//! (the next cursor, counts, the resolved subject) in one transaction, so a crash loses at most
//! the page in flight and a rescued job resumes where the last one stopped.

mod media;
mod read;

use serde_json::{Value, json};
use sqlx::PgPool;
use trawl_shared::JobKind;
use trawl_shared::domain::{JobSpec, MediaTarget};
use trawl_shared::queue::{Checkpoint, LeasedJob, Queue, QueueError};
use trawl_shared::shutdown::Shutdown;

use crate::instagram::{Answer, Call, IgError, InstagramClient, Vars, query_refused};
use crate::media::{MediaError, MediaFetcher};
use crate::metrics::WorkerMetrics;
use crate::rows::{CommentRow, DecodeUser, PostRow, ShapeError, StoryRow, UserRow};
use read::{Entry, PageData};
use trawl_shared::results::{self, Listing, ResultsError};

/// Smallest page length a 400 may halve to (Instaloader's rule).
const MIN_PAGE_LENGTH: u32 = 12;
/// A post with more comments than this is read through the mobile API: Instaloader's rule, since
/// the web query's pagination stopped being reliable past one page.
const COMMENTS_ON_ONE_WEB_PAGE: i64 = 12;
/// Where the web app's pages are; referers name them.
const WEB: &str = "https://www.instagram.com";

#[derive(Debug, thiserror::Error)]
pub enum CrawlError {
    #[error(transparent)]
    Instagram(#[from] IgError),
    #[error(transparent)]
    Shape(#[from] ShapeError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error("the worker is stopping")]
    Stopping,
    /// A kind of another platform reached an Instagram crawler (a worker leases by platform, so
    /// only a bug sends one here).
    #[error("{0} is not an Instagram kind")]
    OtherPlatform(JobKind),
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
    /// Where `media` jobs fetch to; `None` on a worker without a blob store.
    pub media: Option<&'a MediaFetcher>,
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

/// An answer the crawlers read, for [`decode_answer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    /// A profile's page (HTML), read for the profile it embeds.
    ProfilePage,
    /// A profile's page, read for the first posts it embeds (logged out).
    ProfilePageTimeline,
    /// The profile query's `data.user` (or `web_profile_info`).
    Profile,
    /// A page of the logged-in posts query (posts in the mobile shape).
    ProfilePosts,
    /// A page of the logged-out posts query (shortcodes only).
    ProfilePostsLoggedOut,
    /// A post by its shortcode.
    Post,
    /// `tags/web_info`.
    HashtagInfo,
    /// A GraphQL page of a hashtag's posts.
    HashtagPosts,
    /// A web page of a post's comments with their replies.
    PostComments,
    /// A page of one comment's replies.
    CommentReplies,
    /// A mobile page of a post's comments.
    MobileComments,
    /// A mobile page of one comment's replies.
    ChildComments,
    /// A GraphQL page of followers.
    Followers,
    /// A GraphQL page of followees.
    Followees,
    /// The stories query: whose reels there are.
    StoryReels,
    /// `reels_media` for the subject's stories.
    Stories,
    /// The highlights query.
    Highlights,
    /// The highlight items query.
    HighlightItems,
    /// `reels_media` for the subject's highlight `highlight:1`.
    HighlightReel,
}

impl AnswerKind {
    pub const ALL: [AnswerKind; 19] = [
        AnswerKind::ProfilePage,
        AnswerKind::ProfilePageTimeline,
        AnswerKind::Profile,
        AnswerKind::ProfilePosts,
        AnswerKind::ProfilePostsLoggedOut,
        AnswerKind::Post,
        AnswerKind::HashtagInfo,
        AnswerKind::HashtagPosts,
        AnswerKind::PostComments,
        AnswerKind::CommentReplies,
        AnswerKind::MobileComments,
        AnswerKind::ChildComments,
        AnswerKind::Followers,
        AnswerKind::Followees,
        AnswerKind::StoryReels,
        AnswerKind::Stories,
        AnswerKind::Highlights,
        AnswerKind::HighlightItems,
        AnswerKind::HighlightReel,
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

    fn cursor(end_cursor: Option<String>, has_next: bool) -> Self {
        Decoded {
            end_cursor,
            has_next,
            ..Decoded::default()
        }
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
    if matches!(
        kind,
        AnswerKind::ProfilePage | AnswerKind::ProfilePageTimeline
    ) {
        let user = read::page_user(&String::from_utf8_lossy(body), target)?;
        if kind == AnswerKind::ProfilePageTimeline {
            let t = read::page_timeline(&user, target)?;
            return Ok(Decoded::cursor(t.end_cursor, t.has_next));
        }
        return Ok(Decoded {
            users: vec![UserRow::from_web(&read::normalize_profile(&user))?],
            ..Decoded::default()
        });
    }
    let j = crate::instagram::parse_body(body)
        .ok_or_else(|| ShapeError("the answer is not JSON".into()))?;
    let page = match kind {
        AnswerKind::ProfilePage | AnswerKind::ProfilePageTimeline => unreachable_page(),
        AnswerKind::Profile => {
            let user = UserRow::from_web(&read::profile_user(&j, target)?)?;
            return Ok(Decoded {
                users: vec![user],
                ..Decoded::default()
            });
        }
        AnswerKind::ProfilePosts => read::profile_posts_page(&j)?,
        AnswerKind::ProfilePostsLoggedOut => {
            let t = read::logged_out_posts_page(&j)?;
            return Ok(Decoded::cursor(t.end_cursor, t.has_next));
        }
        AnswerKind::Post => {
            return Ok(Decoded {
                posts: vec![read::post_media(&j, target)?],
                ..Decoded::default()
            });
        }
        AnswerKind::HashtagInfo => {
            read::hashtag_info(&j, target)?;
            return Ok(Decoded::default());
        }
        AnswerKind::HashtagPosts => read::hashtag_page(&j)?,
        AnswerKind::PostComments => read::comments_page(target, &j)?.0,
        AnswerKind::CommentReplies => {
            let (comments, end_cursor, has_next) = read::replies_page(target, subject, &j)?;
            return Ok(Decoded {
                comments,
                ..Decoded::cursor(end_cursor, has_next)
            });
        }
        AnswerKind::MobileComments => {
            let page = read::mobile_comments(target, &j)?;
            return Ok(Decoded {
                comments: page.threads.into_iter().flat_map(|t| t.rows).collect(),
                has_next: page.next_min_id.is_some(),
                end_cursor: page.next_min_id,
                ..Decoded::default()
            });
        }
        AnswerKind::ChildComments => {
            return Ok(Decoded {
                comments: read::child_comments(target, subject, &j)?,
                ..Decoded::default()
            });
        }
        AnswerKind::Followers => read::follows_page("edge_followed_by", &j)?,
        AnswerKind::Followees => read::follows_page("edge_follow", &j)?,
        AnswerKind::StoryReels => {
            read::story_reels(&j)?;
            return Ok(Decoded::default());
        }
        AnswerKind::Stories => {
            return Ok(Decoded {
                stories: read::reel_rows(subject, &subject.to_string(), None, &j)?,
                ..Decoded::default()
            });
        }
        AnswerKind::Highlights => {
            read::highlight_list(&j)?;
            return Ok(Decoded::default());
        }
        AnswerKind::HighlightItems => {
            read::highlight_items(&j)?;
            return Ok(Decoded::default());
        }
        AnswerKind::HighlightReel => {
            return Ok(Decoded {
                stories: read::reel_rows(subject, "highlight:1", Some(("highlight:1", "")), &j)?,
                ..Decoded::default()
            });
        }
    };
    Ok(Decoded::from_page(page))
}

/// HTML kinds return before the JSON reading; this arm cannot be reached.
fn unreachable_page() -> PageData {
    PageData {
        entries: Vec::new(),
        end_cursor: None,
        has_next: false,
    }
}

/// A profile crawl's view of its target, once resolved: its user id, and the page id the
/// logged-out posts query asks by.
struct Subject {
    id: i64,
    username: String,
}

/// Where a profile's posts crawl stands, kept in the checkpoint's cursor: which query it pages
/// (the logged-in one, or the logged-out one with the profile page's id) and its cursor. A job
/// resumed by an account of the other kind starts over (results are upserted, so nothing is
/// stored twice).
#[derive(Debug, PartialEq, Eq)]
enum PostsCursor {
    LoggedIn(String),
    LoggedOut { page_id: String, after: String },
}

impl PostsCursor {
    fn encode(&self) -> String {
        match self {
            PostsCursor::LoggedIn(after) => format!("in|{after}"),
            PostsCursor::LoggedOut { page_id, after } => format!("out|{page_id}|{after}"),
        }
    }

    fn decode(stored: &str) -> Option<Self> {
        if let Some(after) = stored.strip_prefix("in|") {
            return Some(PostsCursor::LoggedIn(after.to_owned()));
        }
        let (page_id, after) = stored.strip_prefix("out|")?.split_once('|')?;
        Some(PostsCursor::LoggedOut {
            page_id: page_id.to_owned(),
            after: after.to_owned(),
        })
    }
}

/// A post whose comments are crawled, as the checkpoint keeps it: `pk/comment_count`.
fn encode_post_subject(post: &PostRow) -> String {
    format!("{}/{}", post.id, post.comment_count.unwrap_or(0))
}

fn decode_post_subject(stored: &str) -> Option<(i64, i64)> {
    let (pk, count) = stored.split_once('/')?;
    Some((pk.parse().ok()?, count.parse().ok()?))
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
                JobKind::Media => self.media(&mut cp).await?,
                other => return Err(CrawlError::OtherPlatform(other)),
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

    fn logged_in(&self) -> bool {
        self.client.is_logged_in()
    }

    /// The username the job is about (a `media` job's for a profile picture).
    fn username(&self) -> String {
        match self.job.target.parse() {
            Ok(MediaTarget::ProfilePic(name)) if self.job.kind == JobKind::Media => name,
            _ => self.job.target.to_lowercase(),
        }
    }

    fn profile_url(&self) -> String {
        format!("{WEB}/{}/", self.username())
    }

    /// The target's profile page, loaded as a logged-out visitor (as Instaloader resolves a
    /// username, logged in or not): the profile it embeds, with its timeline.
    async fn page_user(&self) -> Result<Value, CrawlError> {
        let page = self
            .send(&Call::page(format!("/{}/", self.username())))
            .await?;
        read::page_user(&page.html, &self.job.target)
    }

    /// The profile query by user id (the logged-in web app's): `data.user` as sent.
    async fn profile_query(&self, id: &Value) -> Result<Value, CrawlError> {
        let ids = &self.client.config().doc_ids;
        let vars = Vars::new()
            .set(
                "id",
                id.as_str().map_or_else(|| id.to_string(), str::to_owned),
            )
            .set("render_surface", "PROFILE")
            .set(
                "__relay_internal__pv__PolarisCannesGuardianExperienceEnabledrelayprovider",
                true,
            )
            .set(
                "__relay_internal__pv__PolarisCASB976ProfileEnabledrelayprovider",
                false,
            )
            .set(
                "__relay_internal__pv__PolarisRepostsConsumptionEnabledrelayprovider",
                false,
            )
            .set(
                "__relay_internal__pv__PolarisWebSchoolsEnabledrelayprovider",
                false,
            )
            .set("enable_integrity_filters", true);
        self.client.ensure_csrf_token().await?;
        let answer = self
            .send(&Call::doc_id(
                &ids.profile,
                "instagram.doc_ids.profile",
                &vars,
            ))
            .await?;
        read::profile_user_as_sent(&answer.json, &self.job.target)
    }

    /// The full profile: logged in, the page and then the profile query (the page shows the
    /// profile as a logged-out visitor sees it); logged out, the page's. The row keeps the
    /// profile query's user as sent.
    async fn full_profile(&self) -> Result<UserRow, CrawlError> {
        let page_user = self.page_user().await?;
        if self.logged_in() {
            let as_sent = self.profile_query(&page_user["id"]).await?;
            let mut row = UserRow::from_web(&read::normalize_profile(&as_sent))?;
            row.profile_as_sent = Some(as_sent);
            Ok(row)
        } else {
            Ok(UserRow::from_web(&read::normalize_profile(&page_user))?)
        }
    }

    /// A crawl that keeps media keeps the profile as Instaloader downloads it too: Instaloader
    /// reads the app's `users/<id>/info/` for the profile picture's URL and saves its `user`
    /// with the profile (logged in only, as Instaloader).
    async fn with_app_user_info(&self, mut row: UserRow) -> Result<UserRow, CrawlError> {
        if self.job.options.with_media && self.logged_in() {
            let answer = self
                .send(&Call::mobile(
                    format!("/api/v1/users/{}/info/", row.id),
                    &[],
                ))
                .await?;
            row.app_user_as_sent = Some(read::app_user_info(&answer.json)?);
        }
        Ok(row)
    }

    async fn store_user(&self, row: UserRow, cp: &mut Checkpoint) -> Result<Subject, CrawlError> {
        let subject = Subject {
            id: row.id,
            username: row.username.to_lowercase(),
        };
        cp.subject_id = Some(row.id.to_string());
        let mut tx = self.pool.begin().await?;
        let n = results::upsert_users(&mut tx, self.job.lease.job_id, &[row]).await?;
        self.queue_media(&mut tx, [MediaTarget::ProfilePic(subject.username.clone())])
            .await?;
        self.queue.checkpoint(&mut *tx, &self.job.lease, cp).await?;
        tx.commit().await?;
        self.count("user", n);
        Ok(subject)
    }

    async fn profile(&self, cp: &mut Checkpoint) -> Result<(), CrawlError> {
        let user = self.full_profile().await?;
        let user = self.with_app_user_info(user).await?;
        cp.items += 1;
        cp.pages += 1;
        cp.done = true;
        self.store_user(user, cp).await?;
        Ok(())
    }

    /// The target's user id, resolved once and kept in the checkpoint. `full`: as the crawl's
    /// reference does, load the full profile (the profile query, logged in) rather than only the
    /// page; the profile is stored either way.
    async fn subject(&self, cp: &mut Checkpoint, full: bool) -> Result<Subject, CrawlError> {
        if let Some(id) = cp.subject_id.as_deref().and_then(|s| s.parse().ok()) {
            return Ok(Subject {
                id,
                username: self.username(),
            });
        }
        let user = if full {
            self.full_profile().await?
        } else {
            UserRow::from_web(&read::normalize_profile(&self.page_user().await?))?
        };
        self.store_user(user, cp).await
    }

    async fn profile_posts(&self, cp: &mut Checkpoint) -> Result<(), CrawlError> {
        let resumed = cp.cursor.as_deref().and_then(PostsCursor::decode);
        if self.logged_in() {
            let after = match resumed {
                Some(PostsCursor::LoggedIn(after)) if cp.subject_id.is_some() => Some(after),
                _ => {
                    cp.subject_id = None;
                    let user = self.full_profile().await?;
                    read::check_posts_visible(&user.raw, &self.job.target, true)?;
                    let user = self.with_app_user_info(user).await?;
                    self.store_user(user, cp).await?;
                    None
                }
            };
            self.logged_in_posts(cp, after).await
        } else {
            let (page_id, after) =
                match resumed {
                    Some(PostsCursor::LoggedOut { page_id, after }) if cp.subject_id.is_some() => {
                        (page_id, Some(after))
                    }
                    _ => {
                        // As Instaloader: the page once for the profile, once more for its posts.
                        let user = read::normalize_profile(&self.page_user().await?);
                        read::check_posts_visible(&user, &self.job.target, false)?;
                        self.store_user(UserRow::from_web(&user)?, cp).await?;
                        let page = self.page_user().await?;
                        let first = read::page_timeline(&page, &self.job.target)?;
                        let page_id = page["page_id"]
                            .as_str()
                            .map_or_else(|| page["page_id"].to_string(), str::to_owned);
                        if self.store_timeline(cp, &page_id, first).await? {
                            return Ok(());
                        }
                        let after = cp.cursor.as_deref().and_then(PostsCursor::decode).and_then(
                            |c| match c {
                                PostsCursor::LoggedOut { after, .. } => Some(after),
                                PostsCursor::LoggedIn(_) => None,
                            },
                        );
                        (page_id, after)
                    }
                };
            self.logged_out_posts(cp, &page_id, after).await
        }
    }

    /// The logged-in web app's posts query, on `api/graphql`, from `after`.
    async fn logged_in_posts(
        &self,
        cp: &mut Checkpoint,
        mut after: Option<String>,
    ) -> Result<(), CrawlError> {
        let doc = &self.client.config().doc_ids.profile_posts;
        let sink = Sink::Posts { tag: None };
        let data = Vars::new()
            .set("count", 12)
            .set("include_reel_media_seen_timestamp", true)
            .set("include_relationship_info", true)
            .set("latest_besties_reel_media", true)
            .set("latest_reel_media", true);
        let base = Vars::new()
            .nest("data", &data)
            .set("first", 12)
            .set("include_multi_captions", true)
            .set("username", self.username())
            .set(
                "__relay_internal__pv__PolarisMultiCaptionCarouselEnabledrelayprovider",
                true,
            )
            .set(
                "__relay_internal__pv__PolarisShortDramaEnabledrelayprovider",
                true,
            )
            .set(
                "__relay_internal__pv__PolarisSEOIsCrawlerrelayprovider",
                false,
            )
            .set(
                "__relay_internal__pv__PolarisThreadsStyleCommentsEnabledrelayprovider",
                false,
            )
            .set(
                "__relay_internal__pv__PolarisReelsRecoDebugOverlayEnabledrelayprovider",
                false,
            );
        loop {
            let tokens = self.client.web_tokens().await?;
            let vars = page_vars(&base, after.as_deref());
            let call = Call::web_api(doc, "instagram.doc_ids.profile_posts", &vars, &tokens)
                .with_referer(self.profile_url());
            let answer = self.send(&call).await?;
            let mut page = read::profile_posts_page(&answer.json)?;
            page.end_cursor = page.end_cursor.map(|c| PostsCursor::LoggedIn(c).encode());
            if self.store_page(&sink, page, cp).await? {
                return Ok(());
            }
            after = match cp.cursor.as_deref().and_then(PostsCursor::decode) {
                Some(PostsCursor::LoggedIn(next)) => Some(next),
                _ => return Err(ShapeError("the posts cursor was lost".into()).into()),
            };
        }
    }

    /// The logged-out posts query after the page's first posts, each post then loaded by its
    /// shortcode (the listing carries only shortcodes).
    async fn logged_out_posts(
        &self,
        cp: &mut Checkpoint,
        page_id: &str,
        mut after: Option<String>,
    ) -> Result<(), CrawlError> {
        let doc = &self.client.config().doc_ids.profile_posts_logged_out;
        let base = Vars::new().set("id", page_id).set(
            "__relay_internal__pv__PolarisSEOIsCrawlerrelayprovider",
            false,
        );
        while let Some(cursor) = after {
            let tokens = self.client.web_tokens().await?;
            let vars = page_vars(&base, Some(&cursor));
            let call = Call::web_api(
                doc,
                "instagram.doc_ids.profile_posts_logged_out",
                &vars,
                &tokens,
            )
            .with_referer(self.profile_url());
            let answer = self.send(&call).await?;
            let timeline = read::logged_out_posts_page(&answer.json)?;
            if self.store_timeline(cp, page_id, timeline).await? {
                return Ok(());
            }
            after = match cp.cursor.as_deref().and_then(PostsCursor::decode) {
                Some(PostsCursor::LoggedOut { after, .. }) => Some(after),
                _ => None,
            };
        }
        Ok(())
    }

    /// Loads each post of a logged-out timeline page by its shortcode and stores them as one
    /// page. `true`: the crawl is done.
    async fn store_timeline(
        &self,
        cp: &mut Checkpoint,
        page_id: &str,
        timeline: read::Timeline,
    ) -> Result<bool, CrawlError> {
        let mut entries = Vec::with_capacity(timeline.codes.len());
        for code in &timeline.codes {
            entries.push(Entry::Post(self.load_post(code).await?));
        }
        let end_cursor = timeline.end_cursor.map(|after| {
            PostsCursor::LoggedOut {
                page_id: page_id.to_owned(),
                after,
            }
            .encode()
        });
        let page = PageData {
            entries,
            end_cursor,
            has_next: timeline.has_next,
        };
        self.store_page(&Sink::Posts { tag: None }, page, cp).await
    }

    /// One post by its shortcode: on `graphql/query` when logged in, on the web app's
    /// `api/graphql` with the start page's tokens when not (as Instaloader sends it).
    async fn load_post(&self, shortcode: &str) -> Result<PostRow, CrawlError> {
        let doc = &self.client.config().doc_ids.post;
        let vars = Vars::new().set("shortcode", shortcode).set(
            "__relay_internal__pv__PolarisAIGMMediaWebLabelEnabledrelayprovider",
            false,
        );
        let call = if self.logged_in() {
            self.client.ensure_csrf_token().await?;
            Call::doc_id(doc, "instagram.doc_ids.post", &vars)
        } else {
            let tokens = self.client.web_tokens().await?;
            self.client.ensure_csrf_token().await?;
            Call::web_api(doc, "instagram.doc_ids.post", &vars, &tokens)
        };
        let answer = self.send(&call).await?;
        read::post_media(&answer.json, shortcode)
    }

    async fn post(&self, cp: &mut Checkpoint) -> Result<(), CrawlError> {
        let post = self.load_post(&self.job.target).await?;
        let page = PageData {
            entries: vec![Entry::Post(post)],
            end_cursor: None,
            has_next: false,
        };
        self.store_page(&Sink::Posts { tag: None }, page, cp)
            .await?;
        Ok(())
    }

    async fn hashtag_posts(&self, cp: &mut Checkpoint) -> Result<(), CrawlError> {
        let tag = self.job.target.to_lowercase();
        if cp.cursor.is_none() && cp.pages == 0 {
            // Instaloader's `Hashtag.from_name`: the hashtag must exist before its posts are paged.
            let info = self
                .send(&Call::mobile(
                    "/api/v1/tags/web_info/",
                    &[("__a", "1"), ("__d", "dis"), ("tag_name", &tag)],
                ))
                .await?;
            read::hashtag_info(&info.json, &tag)?;
        }
        let sink = Sink::Posts {
            tag: Some(tag.clone()),
        };
        let hash = &self.client.config().query_hashes.hashtag_posts;
        let referer = format!("{WEB}/explore/tags/{tag}/");
        let base = Vars::new().set("tag_name", tag.as_str());
        self.paginate(
            &sink,
            cp,
            |first, after| {
                Call::graphql(
                    hash,
                    "instagram.query_hashes.hashtag_posts",
                    &hash_page_vars(&base, first, after),
                )
                .with_referer(referer.clone())
            },
            read::hashtag_page,
        )
        .await
    }

    async fn post_comments(&self, cp: &mut Checkpoint) -> Result<(), CrawlError> {
        let shortcode = self.job.target.clone();
        let (pk, count) = match cp.subject_id.as_deref().and_then(decode_post_subject) {
            Some(known) => known,
            None => {
                let post = self.load_post(&shortcode).await?;
                let known = (post.id, post.comment_count.unwrap_or(0));
                cp.subject_id = Some(encode_post_subject(&post));
                let mut tx = self.pool.begin().await?;
                let n = results::upsert_posts(&mut tx, self.job.lease.job_id, &[post]).await?;
                cp.done = known.1 == 0;
                self.queue.checkpoint(&mut *tx, &self.job.lease, cp).await?;
                tx.commit().await?;
                self.count("post", n);
                known
            }
        };
        if count == 0 {
            cp.done = true;
            return Ok(());
        }
        if count > COMMENTS_ON_ONE_WEB_PAGE {
            return self.mobile_comments(cp, pk).await;
        }
        let hash = &self.client.config().query_hashes.comments;
        let referer = format!("{WEB}/p/{shortcode}/");
        let base = Vars::new().set("shortcode", shortcode.as_str());
        let mut cursor = cp.cursor.clone();
        loop {
            let first = cp.page_length.unwrap_or(self.client.page_length());
            let call = Call::graphql(
                hash,
                "instagram.query_hashes.comments",
                &hash_page_vars(&base, first, cursor.as_deref()),
            )
            .with_referer(referer.clone());
            let answer = self.send_page(&call, cp, first).await?;
            let Some(answer) = answer else { continue };
            let (mut page, incomplete) = read::comments_page(&shortcode, &answer.json)?;
            for comment_id in incomplete {
                let replies = self.comment_replies(&shortcode, &comment_id).await?;
                page.entries.push(Entry::Thread(replies));
            }
            if self.store_page(&Sink::Comments, page, cp).await? {
                return Ok(());
            }
            cursor = cp.cursor.clone();
        }
    }

    /// Every reply of one comment, page by page (replies of a comment that its page did not
    /// carry in full).
    async fn comment_replies(
        &self,
        shortcode: &str,
        comment_id: &str,
    ) -> Result<Vec<CommentRow>, CrawlError> {
        let parent: i64 = comment_id.parse().map_err(|_| {
            ShapeError(format!("a comment id that is not a number: {comment_id:?}"))
        })?;
        let hash = &self.client.config().query_hashes.comment_replies;
        let base = Vars::new().set("comment_id", comment_id);
        let mut rows = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let call = Call::graphql(
                hash,
                "instagram.query_hashes.comment_replies",
                &hash_page_vars(&base, self.client.page_length(), after.as_deref()),
            )
            .with_referer(format!("{WEB}/p/{shortcode}/"));
            let answer = self.send(&call).await?;
            let (page, next, has_next) = read::replies_page(shortcode, parent, &answer.json)?;
            rows.extend(page);
            match next.filter(|_| has_next) {
                Some(next) if after.as_deref() != Some(next.as_str()) => after = Some(next),
                _ => return Ok(rows),
            }
        }
    }

    /// A post's comments through the mobile API (more than one web page of them), paged by
    /// `min_id`, with each comment's replies asked for when the page did not carry them all.
    async fn mobile_comments(&self, cp: &mut Checkpoint, pk: i64) -> Result<(), CrawlError> {
        let shortcode = self.job.target.clone();
        loop {
            let mut query = vec![
                ("can_support_threading", "true"),
                ("permalink_enabled", "false"),
            ];
            let min_id = cp.cursor.clone();
            if let Some(min_id) = &min_id {
                query.push(("min_id", min_id));
            }
            let answer = self
                .send(&Call::mobile(
                    format!("/api/v1/media/{pk}/comments/"),
                    &query,
                ))
                .await?;
            let page = read::mobile_comments(&shortcode, &answer.json)?;
            if page.next_min_id.is_some() && page.next_min_id == min_id {
                return Err(ShapeError(
                    "the next comments page is the one just read: the listing would never end"
                        .into(),
                )
                .into());
            }
            let mut entries = Vec::with_capacity(page.threads.len());
            for mut thread in page.threads {
                if thread.replies_missing {
                    let parent = thread.rows[0].id;
                    let replies = self
                        .send(&Call::mobile(
                            format!("/api/v1/media/{pk}/comments/{parent}/child_comments/"),
                            &[("max_id", "")],
                        ))
                        .await?;
                    thread
                        .rows
                        .extend(read::child_comments(&shortcode, parent, &replies.json)?);
                }
                entries.push(Entry::Thread(thread.rows));
            }
            let page = PageData {
                entries,
                has_next: page.next_min_id.is_some(),
                end_cursor: page.next_min_id,
            };
            if self.store_page(&Sink::Comments, page, cp).await? {
                return Ok(());
            }
        }
    }

    async fn follows(&self, cp: &mut Checkpoint) -> Result<(), CrawlError> {
        let subject = self.subject(cp, true).await?;
        let id = subject.id;
        let hashes = &self.client.config().query_hashes;
        let (hash, key, edge, sink) = if self.job.kind == JobKind::Followers {
            (
                &hashes.followers,
                "instagram.query_hashes.followers",
                "edge_followed_by",
                Sink::Followers { subject: id },
            )
        } else {
            (
                &hashes.followees,
                "instagram.query_hashes.followees",
                "edge_follow",
                Sink::Followees { subject: id },
            )
        };
        let referer = format!("{WEB}/{}/", subject.username);
        let base = Vars::new().set("id", id.to_string());
        self.paginate(
            &sink,
            cp,
            |first, after| {
                Call::graphql(hash, key, &hash_page_vars(&base, first, after))
                    .with_referer(referer.clone())
            },
            |j| read::follows_page(edge, j),
        )
        .await
    }

    async fn stories(&self, cp: &mut Checkpoint) -> Result<(), CrawlError> {
        let subject = self.subject(cp, false).await?;
        let hash = &self.client.config().query_hashes.stories;
        let vars = Vars::new()
            .set("reel_ids", json!([subject.id]))
            .set("precomposed_overlay", false);
        let reels = self
            .send(&Call::graphql(
                hash,
                "instagram.query_hashes.stories",
                &vars,
            ))
            .await?;
        let mut rows = Vec::new();
        for reel in read::story_reels(&reels.json)? {
            let answer = self
                .send(&Call::mobile(
                    "/api/v1/feed/reels_media/",
                    &[("reel_ids", &reel.owner)],
                ))
                .await?;
            let mut items = read::reel_rows(subject.id, &reel.owner, None, &answer.json)?;
            read::attach_web_items(&mut items, &reel.items, &reel.user);
            rows.extend(items);
        }
        self.store_stories(rows, &[], cp).await
    }

    async fn highlights(&self, cp: &mut Checkpoint) -> Result<(), CrawlError> {
        let subject = self.subject(cp, false).await?;
        let hashes = &self.client.config().query_hashes;
        let list = self.highlight_list_of(subject.id).await?;
        let mut rows = Vec::new();
        let mut covers = Vec::new();
        for read::Highlight {
            id,
            title,
            cover_url,
        } in list
        {
            if let Some(url) = cover_url {
                covers.push((id.clone(), url));
            }
            // As Instaloader: the items query first, then the mobile reel with the full items.
            let items = Vars::new()
                .set("reel_ids", json!([]))
                .set("tag_names", json!([]))
                .set("location_ids", json!([]))
                .set("highlight_reel_ids", json!([id]))
                .set("precomposed_overlay", false);
            let answer = self
                .send(&Call::graphql(
                    &hashes.highlight_items,
                    "instagram.query_hashes.highlight_items",
                    &items,
                ))
                .await?;
            let web_items = read::highlight_items(&answer.json)?;
            let reel_id = format!("highlight:{id}");
            let answer = self
                .send(&Call::mobile(
                    "/api/v1/feed/reels_media/",
                    &[("reel_ids", &reel_id)],
                ))
                .await?;
            let mut items =
                read::reel_rows(subject.id, &reel_id, Some((&reel_id, &title)), &answer.json)?;
            // A highlight item's owner is the profile itself: no reel user to keep.
            read::attach_web_items(&mut items, &web_items, &Value::Null);
            rows.extend(items);
        }
        self.store_stories(rows, &covers, cp).await
    }

    /// Stores story items (and the covers of the highlights they were read from, as media
    /// files of their own) with the checkpoint, in one transaction.
    /// The highlights query for user `owner` (as Instaloader sends it).
    async fn highlight_list_of(&self, owner: i64) -> Result<Vec<read::Highlight>, CrawlError> {
        let hashes = &self.client.config().query_hashes;
        let vars = Vars::new()
            .set("user_id", owner)
            .set("include_chaining", false)
            .set("include_reel", false)
            .set("include_suggested_users", false)
            .set("include_logged_out_extras", false)
            .set("include_highlight_reels", true);
        let list = self
            .send(&Call::graphql(
                &hashes.highlights,
                "instagram.query_hashes.highlights",
                &vars,
            ))
            .await?;
        Ok(read::highlight_list(&list.json)?)
    }

    async fn store_stories(
        &self,
        rows: Vec<StoryRow>,
        covers: &[(String, String)],
        cp: &mut Checkpoint,
    ) -> Result<(), CrawlError> {
        let mut tx = self.pool.begin().await?;
        for (id, url) in covers {
            let item = MediaTarget::HighlightCover(id.clone()).to_string();
            let cover = trawl_shared::results::MediaFile {
                position: 0,
                variant: trawl_shared::results::MediaVariant::Picture,
                url: url.clone(),
            };
            results::record_media_files(&mut tx, self.job.lease.job_id, &item, &[cover]).await?;
        }
        self.queue_media(
            &mut tx,
            covers
                .iter()
                .map(|(id, _)| MediaTarget::HighlightCover(id.clone())),
        )
        .await?;
        let n = results::upsert_stories(&mut tx, self.job.lease.job_id, &rows).await?;
        self.queue_media(
            &mut tx,
            rows.iter().map(|r| MediaTarget::Story(r.id.clone())),
        )
        .await?;
        cp.items += n;
        cp.pages += 1;
        cp.done = true;
        self.queue.checkpoint(&mut *tx, &self.job.lease, cp).await?;
        tx.commit().await?;
        self.count("story", n);
        Ok(())
    }

    /// Sends one page of a paginated query. `None`: Instagram refused the page length with a 400,
    /// which is now halved (Instaloader's rule) for the caller to ask again.
    async fn send_page(
        &self,
        call: &Call,
        cp: &mut Checkpoint,
        first: u32,
    ) -> Result<Option<Answer>, CrawlError> {
        match self.send(call).await {
            Ok(a) => Ok(Some(a)),
            Err(CrawlError::Instagram(IgError::BadRequest(reason))) => {
                if first / 2 >= MIN_PAGE_LENGTH {
                    tracing::info!(job_id = self.job.lease.job_id, first, %reason,
                        "400 on a page; halving the page length");
                    cp.page_length = Some(first / 2);
                    Ok(None)
                } else {
                    Err(query_refused(call, reason).into())
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Pages a query_hash listing from the checkpoint's cursor to the end (or the stop
    /// condition), halving the page length after a 400 while it stays at least 12.
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
            let Some(answer) = self
                .send_page(&call(first, cp.cursor.as_deref()), cp, first)
                .await?
            else {
                continue;
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
            let known = results::stored_by_others(&mut tx, sink.listing(), job_id, &ids).await?;
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
        let mut stored = results::Stored::default();
        stored.add(
            "post",
            results::upsert_posts(&mut tx, job_id, &posts).await?,
        );
        stored.add(
            "comment",
            results::upsert_comments(&mut tx, job_id, &comments).await?,
        );
        stored.add(
            "user",
            results::upsert_users(&mut tx, job_id, &users).await?,
        );
        match sink {
            Sink::Posts { tag: Some(tag) } => {
                let ids: Vec<i64> = posts.iter().map(|p| p.id).collect();
                stored.add(
                    "hashtag_post",
                    results::upsert_hashtag_posts(&mut tx, job_id, tag, &ids).await?,
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
                    results::upsert_follows(&mut tx, job_id, &edges).await?,
                );
            }
            _ => {}
        }
        self.queue_media(
            &mut tx,
            posts.iter().map(|p| MediaTarget::Post(p.shortcode.clone())),
        )
        .await?;
        if options.with_comments {
            // Every post, as Instaloader's `--comments` loads every post's full metadata to learn
            // its comment count: the job stores that post and ends at once when it has none.
            let jobs = posts
                .iter()
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

/// Variables of a query_hash page: Instaloader adds `first` on every page and `after` on later
/// ones.
fn hash_page_vars(base: &Vars, first: u32, after: Option<&str>) -> Vars {
    let vars = base.clone().set("first", first);
    match after {
        Some(after) => vars.set("after", after),
        None => vars,
    }
}

/// Variables of a doc_id page: nothing added on the first page, `after`, `before`, `first` and
/// `last` on later ones (Instaloader's order).
fn page_vars(base: &Vars, after: Option<&str>) -> Vars {
    match after {
        None => base.clone(),
        Some(after) => base
            .clone()
            .set("after", after)
            .set("before", Value::Null)
            .set("first", 12)
            .set("last", Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(kind: AnswerKind, body: &str) -> Result<Decoded, CrawlError> {
        decode_answer(kind, "EAAA", 7, body.as_bytes())
    }

    const MEDIA: &str = r#"{"pk":"11","code":"EAAA","media_type":8,"taken_at":1767223562,
        "caption":{"text":"hi"},"like_count":3,"comment_count":2,"user":{"pk":"7","username":"u"}}"#;

    #[test]
    fn listings_decode_with_their_cursor() {
        let body = format!(
            r#"{{"data":{{"xdt_api__v1__feed__user_timeline_graphql_connection":{{
            "page_info":{{"has_next_page":true,"end_cursor":"c1"}},"edges":[{{"node":{MEDIA}}}]}}}}}}"#
        );
        let page = decode(AnswerKind::ProfilePosts, &body).unwrap();
        assert_eq!(page.posts.len(), 1);
        let post = &page.posts[0];
        assert_eq!(
            (
                post.id,
                post.owner_id,
                post.comment_count,
                post.typename.as_deref()
            ),
            (11, 7, Some(2), Some("GraphSidecar"))
        );
        assert_eq!(
            (page.end_cursor.as_deref(), page.has_next),
            (Some("c1"), true)
        );
        let comments = r#"{"data":{"shortcode_media":{"edge_media_to_parent_comment":{"edges":[
            {"node":{"id":"5","text":"hi","edge_threaded_comments":{"count":1,"edges":[{"node":{"id":"6"}}]}}}],
            "page_info":{"has_next_page":true}}}}}"#;
        let page = decode(AnswerKind::PostComments, comments).unwrap();
        let ids: Vec<_> = page.comments.iter().map(|c| (c.id, c.parent_id)).collect();
        assert_eq!(ids, [(5, None), (6, Some(5))]);
        assert!(!page.has_next, "no cursor, so no next page");
    }

    #[test]
    fn a_post_is_items_zero_of_its_shortcode_query() {
        let body = format!(
            r#"{{"data":{{"xdt_api__v1__media__shortcode__web_info":{{"items":[{MEDIA}]}}}}}}"#
        );
        assert_eq!(
            decode(AnswerKind::Post, &body).unwrap().posts[0].shortcode,
            "EAAA"
        );
        let none = r#"{"data":{"xdt_api__v1__media__shortcode__web_info":{"items":[]}}}"#;
        assert!(matches!(
            decode(AnswerKind::Post, none),
            Err(CrawlError::Instagram(IgError::NotFound(_)))
        ));
    }

    #[test]
    fn mobile_comments_carry_their_replies_or_ask_for_them() {
        let body = r#"{"comments":[
            {"pk":"5","text":"a","user":{"pk":"1","username":"x"},"child_comment_count":1,
             "preview_child_comments":[{"pk":"6","text":"b","user":{"pk":"2","username":"y"}}]},
            {"pk":"8","text":"c","child_comment_count":3,"preview_child_comments":[]}],
            "next_min_id":"m2"}"#;
        let page = read::mobile_comments("EAAA", &serde_json::from_str(body).unwrap()).unwrap();
        let ids: Vec<_> = page
            .threads
            .iter()
            .flat_map(|t| {
                t.rows
                    .iter()
                    .map(|c| (c.id, c.parent_id, t.replies_missing))
            })
            .collect();
        assert_eq!(
            ids,
            [(5, None, false), (6, Some(5), false), (8, None, true)]
        );
        assert_eq!(page.next_min_id.as_deref(), Some("m2"));
    }

    #[test]
    fn stories_and_highlights_are_read_by_their_reel_ids() {
        let stories = r#"{"reels":{"7":{"items":[{"pk":1,"taken_at":1767223562}]},
            "8":{"items":[{"pk":2}]}}}"#;
        let rows = decode(AnswerKind::Stories, stories).unwrap().stories;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, "1");
        let list = r#"{"data":{"user":{"edge_highlight_reels":{"edges":[
            {"node":{"id":"70","title":"Trips"}},{"node":{"title":"no id"}}]}}}}"#;
        let highlights = read::highlight_list(&serde_json::from_str(list).unwrap()).unwrap();
        assert_eq!(
            highlights,
            [read::Highlight {
                id: "70".into(),
                title: "Trips".into(),
                cover_url: None
            }]
        );
    }

    #[test]
    fn a_posts_cursor_remembers_its_query() {
        for c in [
            PostsCursor::LoggedIn("a|b".into()),
            PostsCursor::LoggedOut {
                page_id: "p7".into(),
                after: "x|y".into(),
            },
        ] {
            assert_eq!(PostsCursor::decode(&c.encode()), Some(c));
        }
        assert_eq!(PostsCursor::decode("raw-cursor"), None);
    }

    #[test]
    fn page_variables_follow_instaloader() {
        let base = Vars::new().set("id", "7");
        assert_eq!(page_vars(&base, None).to_json(), r#"{"id":"7"}"#);
        assert_eq!(
            page_vars(&base, Some("c")).to_json(),
            r#"{"id":"7","after":"c","before":null,"first":12,"last":null}"#
        );
        assert_eq!(
            hash_page_vars(&base, 12, Some("c")).to_json(),
            r#"{"id":"7","first":12,"after":"c"}"#
        );
    }

    #[test]
    fn answers_that_are_not_what_the_crawler_asked_for_are_errors() {
        for (kind, body) in [
            (AnswerKind::Post, "<html>"),
            (AnswerKind::Post, r#"{"data":{}}"#),
            (AnswerKind::HashtagPosts, r#"{"data":{"hashtag":null}}"#),
            (AnswerKind::HashtagInfo, r#"{"data":null}"#),
            (
                AnswerKind::Followers,
                r#"{"data":{"user":{"edge_followed_by":{}}}}"#,
            ),
            (AnswerKind::Highlights, r#"{"data":{}}"#),
            (AnswerKind::ProfilePage, "<html></html>"),
        ] {
            assert!(decode(kind, body).is_err(), "{kind:?} {body}");
        }
    }
}
