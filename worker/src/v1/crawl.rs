//! One crawler per v1 job kind. A listing is read a page at a time; each page's items and the
//! checkpoint after it (the next cursor, counts) commit in one transaction, so a crash loses at
//! most the page in flight and a rescued job resumes at the cursor the last one stored.

use serde_json::Value;
use sqlx::PgPool;
use trawl_shared::JobKind;
use trawl_shared::queue::{Checkpoint, LeasedJob, Queue, QueueError};
use trawl_shared::results::{self, ResultsError, V1Item, V1Row};
use trawl_shared::shutdown::Shutdown;

use super::client::{V1Client, V1Error};
use crate::crawl::CrawlReport;
use crate::metrics::WorkerMetrics;

#[derive(Debug, thiserror::Error)]
pub enum V1CrawlError {
    #[error(transparent)]
    Api(#[from] V1Error),
    #[error("the v1 API answered without {0}")]
    Shape(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("the worker is stopping")]
    Stopping,
}

/// Where one listing is, and what its items are.
struct Listing {
    tier: &'static str,
    path: String,
    query: Vec<(&'static str, String)>,
    key: &'static str,
    /// The largest `count` the endpoint takes.
    max_count: u32,
    item: V1Item,
}

/// One page's rows.
#[derive(Default)]
struct Rows {
    items: Vec<(V1Item, V1Row)>,
    follows: Vec<(String, String)>,
}

impl Rows {
    fn push(&mut self, item: V1Item, row: V1Row) {
        self.items.push((item, row));
    }
}

pub struct V1Crawl<'a> {
    pub client: &'a V1Client,
    pub pool: &'a PgPool,
    pub queue: &'a Queue,
    pub job: &'a LeasedJob,
    pub shutdown: &'a Shutdown,
    pub metrics: &'a WorkerMetrics,
    /// Items asked for per page (capped by each endpoint's maximum).
    pub page_count: u32,
}

impl V1Crawl<'_> {
    pub async fn run(&self) -> Result<CrawlReport, V1CrawlError> {
        let mut cp = self.job.checkpoint.clone().unwrap_or_default();
        if !cp.done {
            self.crawl(&mut cp).await?;
        }
        Ok(CrawlReport {
            items: cp.items,
            pages: cp.pages,
        })
    }

    async fn crawl(&self, cp: &mut Checkpoint) -> Result<(), V1CrawlError> {
        let target = self.job.target.as_str();
        let listing = |tier, path: String, key, max_count, item| Listing {
            tier,
            path,
            query: Vec::new(),
            key,
            max_count,
            item,
        };
        let search = |path: &str, key, item| Listing {
            tier: "search",
            path: path.to_owned(),
            query: vec![("q", target.to_owned())],
            key,
            max_count: 50,
            item,
        };
        match self.job.kind {
            JobKind::V1User => {
                let user = self
                    .client
                    .get("user_lookup", &format!("/users/{target}"), &[])
                    .await?;
                let mut rows = Rows::default();
                rows.push(V1Item::User, user_row(&user)?);
                cp.items += 1;
                cp.done = true;
                self.store(rows, cp).await
            }
            JobKind::V1UserPosts => {
                let l = listing(
                    "media",
                    format!("/users/{target}/posts"),
                    "posts",
                    50,
                    V1Item::Post,
                );
                self.listing(&l, cp).await
            }
            JobKind::V1Post => {
                if cp.pages == 0 {
                    let post = self
                        .client
                        .get("media", &format!("/posts/{target}"), &[])
                        .await?;
                    let mut rows = Rows::default();
                    rows.push(V1Item::Post, post_row(&post)?);
                    cp.items += 1;
                    self.store(rows, cp).await?;
                }
                let l = listing(
                    "media",
                    format!("/posts/{target}/comments"),
                    "comments",
                    50,
                    V1Item::Comment,
                );
                self.listing(&l, cp).await
            }
            JobKind::V1Followers | JobKind::V1Following => {
                let path = if self.job.kind == JobKind::V1Followers {
                    "followers"
                } else {
                    "following"
                };
                let l = listing(
                    "graph",
                    format!("/users/{target}/{path}"),
                    "users",
                    100,
                    V1Item::User,
                );
                self.listing(&l, cp).await
            }
            JobKind::V1Feed => {
                let l = listing("feed", "/feed".into(), "posts", 50, V1Item::Post);
                self.listing(&l, cp).await
            }
            JobKind::V1Explore => {
                let l = listing("feed", "/explore".into(), "posts", 50, V1Item::Post);
                self.listing(&l, cp).await
            }
            JobKind::V1Notifications => {
                let l = listing(
                    "notifications",
                    "/notifications".into(),
                    "notifications",
                    50,
                    V1Item::Notification,
                );
                self.listing(&l, cp).await
            }
            JobKind::V1SearchUsers => {
                self.listing(&search("/search/users", "users", V1Item::User), cp)
                    .await
            }
            JobKind::V1SearchHashtags => {
                let l = search("/search/hashtags", "hashtags", V1Item::Hashtag);
                self.listing(&l, cp).await
            }
            JobKind::V1SearchLocations => {
                let l = search("/search/locations", "locations", V1Item::Location);
                self.listing(&l, cp).await
            }
            JobKind::V1StoriesFeed => {
                let answer = self.client.get("feed", "/stories/feed", &[]).await?;
                let trays = answer["stories"]
                    .as_array()
                    .ok_or_else(|| V1CrawlError::Shape("the stories feed's trays".into()))?;
                let mut rows = Rows::default();
                for tray in trays {
                    let owner = user_row(&tray["user"])?;
                    for story in tray["stories"].as_array().into_iter().flatten() {
                        cp.items += 1;
                        rows.push(
                            V1Item::Story,
                            V1Row {
                                id: id_of(story, "story_id")?,
                                owner_id: Some(owner.id.clone()),
                                raw: story.clone(),
                            },
                        );
                    }
                    rows.push(V1Item::User, owner);
                }
                cp.done = true;
                self.store(rows, cp).await
            }
            other => Err(V1CrawlError::Shape(format!(
                "a crawler for {other}, which is not a v1 kind"
            ))),
        }
    }

    /// Reads `l` from the checkpoint's cursor to its end (or `max_items`), a page at a time.
    async fn listing(&self, l: &Listing, cp: &mut Checkpoint) -> Result<(), V1CrawlError> {
        let count = self.page_count.clamp(1, l.max_count);
        loop {
            if self.shutdown.is_triggered() {
                return Err(V1CrawlError::Stopping);
            }
            if cp.done {
                return Ok(());
            }
            let page = self
                .client
                .page(
                    l.tier,
                    &l.path,
                    &l.query,
                    l.key,
                    count,
                    cp.cursor.as_deref(),
                )
                .await?;
            let mut items = page.items;
            let mut done = page.next.is_none();
            if let Some(max) = self.job.options.max_items {
                let room = usize::try_from(max.saturating_sub(cp.items)).unwrap_or(usize::MAX);
                if items.len() >= room {
                    items.truncate(room);
                    done = true;
                }
            }
            let mut rows = Rows::default();
            for item in &items {
                self.add(l.item, item, &mut rows)?;
            }
            cp.items += items.len() as u64;
            cp.cursor = page.next;
            cp.done = done;
            self.store(rows, cp).await?;
        }
    }

    /// Turns one listed item into rows (and, for a social graph listing, edges).
    fn add(&self, item: V1Item, raw: &Value, rows: &mut Rows) -> Result<(), V1CrawlError> {
        let target = &self.job.target;
        let row = match item {
            V1Item::User => {
                let user = user_row(raw)?;
                match self.job.kind {
                    JobKind::V1Followers => rows.follows.push((user.id.clone(), target.clone())),
                    JobKind::V1Following => rows.follows.push((target.clone(), user.id.clone())),
                    _ => {}
                }
                user
            }
            V1Item::Post => post_row(raw)?,
            V1Item::Comment => V1Row {
                id: id_of(raw, "comment_id")?,
                owner_id: Some(target.clone()),
                raw: raw.clone(),
            },
            // Notification ids are the account's own: the account's name keeps them apart.
            V1Item::Notification => V1Row {
                id: format!("{target}:{}", id_of(raw, "notification_id")?),
                owner_id: Some(target.clone()),
                raw: raw.clone(),
            },
            V1Item::Hashtag => V1Row {
                id: id_of(raw, "name")?,
                owner_id: None,
                raw: raw.clone(),
            },
            V1Item::Location => V1Row {
                id: id_of(raw, "location_id")?,
                owner_id: None,
                raw: raw.clone(),
            },
            V1Item::Story => V1Row {
                id: id_of(raw, "story_id")?,
                owner_id: None,
                raw: raw.clone(),
            },
        };
        rows.push(item, row);
        Ok(())
    }

    /// Stores `rows` and the checkpoint after them in one transaction.
    async fn store(&self, rows: Rows, cp: &mut Checkpoint) -> Result<(), V1CrawlError> {
        let job_id = self.job.lease.job_id;
        cp.pages += 1;
        let mut tx = self.pool.begin().await?;
        let mut stored = Vec::new();
        for item in [
            V1Item::User,
            V1Item::Post,
            V1Item::Comment,
            V1Item::Story,
            V1Item::Notification,
            V1Item::Hashtag,
            V1Item::Location,
        ] {
            let of_item: Vec<V1Row> = rows
                .items
                .iter()
                .filter(|(i, _)| *i == item)
                .map(|(_, r)| r.clone())
                .collect();
            let n = results::upsert_v1_items(&mut tx, job_id, item, &of_item).await?;
            stored.push((item, n));
        }
        let edges = results::upsert_v1_follows(&mut tx, job_id, &rows.follows).await?;
        self.queue.checkpoint(&mut *tx, &self.job.lease, cp).await?;
        tx.commit().await?;
        for (item, n) in stored {
            self.metrics
                .items
                .with_label_values(&[format!("v1_{}", item.as_str()).as_str()])
                .inc_by(n);
        }
        self.metrics
            .items
            .with_label_values(&["v1_follow"])
            .inc_by(edges);
        Ok(())
    }
}

/// A string id: the API sends ids as strings, a number is taken as its digits.
fn id_of(v: &Value, field: &str) -> Result<String, V1CrawlError> {
    match &v[field] {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(V1CrawlError::Shape(format!("the item's {field}"))),
    }
}

fn user_row(v: &Value) -> Result<V1Row, V1CrawlError> {
    Ok(V1Row {
        id: id_of(v, "user_id")?,
        owner_id: None,
        raw: v.clone(),
    })
}

fn post_row(v: &Value) -> Result<V1Row, V1CrawlError> {
    Ok(V1Row {
        id: id_of(v, "post_id")?,
        owner_id: Some(id_of(&v["user"], "user_id")?),
        raw: v.clone(),
    })
}
