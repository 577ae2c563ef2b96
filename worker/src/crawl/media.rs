//! The `media` kind, and the fan-out that queues it: one job per item fetches that item's
//! pictures and videos into the blob store. The URLs come from the item as it was stored, so a
//! download spends no request of Instagram's windows; only an expired URL costs one, to read
//! the item again (as the reference client renews its own). CDN fetches themselves are outside
//! the windows, as in the reference client, and paced by the worker's media politeness instead.

use futures_util::StreamExt;
use sqlx::PgConnection;
use trawl_shared::JobKind;
use trawl_shared::domain::{JobSpec, MediaTarget};
use trawl_shared::queue::{Checkpoint, Queue};
use trawl_shared::results::{self, MediaFile, MediaVariant};

use super::{Crawl, CrawlError, read};
use crate::instagram::{Call, IgError};
use crate::media::{Fetched, MediaError, files};
use crate::rows::PostRow;

impl Crawl<'_> {
    /// Queues a `media` job for each of `items` when the job asked for media, in the caller's
    /// transaction (so the fan-out commits with the rows it reads).
    pub(super) async fn queue_media(
        &self,
        tx: &mut PgConnection,
        items: impl IntoIterator<Item = MediaTarget>,
    ) -> Result<(), CrawlError> {
        if !self.job.options.with_media {
            return Ok(());
        }
        let jobs = items
            .into_iter()
            .filter_map(|item| {
                JobSpec::new(JobKind::Media.as_str(), item.to_string())
                    .validate(self.default_max_attempts)
                    .ok()
            })
            .collect::<Vec<_>>();
        Queue::submit_in(tx, &jobs).await?;
        Ok(())
    }

    pub(super) async fn media(&self, cp: &mut Checkpoint) -> Result<(), CrawlError> {
        let Some(fetcher) = self.media else {
            return Err(MediaError::NoStore.into());
        };
        let target: MediaTarget = self
            .job
            .target
            .parse()
            .map_err(|e| IgError::NotFound(format!("{e}: {:?}", self.job.target)))?;
        let item = target.to_string();
        let job_id = self.job.lease.job_id;
        let stored = results::media_files(self.pool, std::slice::from_ref(&item)).await?;
        let mut files = match self.stored_files(&target).await? {
            Some(files) => files,
            None => self.refresh(&target).await?,
        };
        let mut conn = self.pool.acquire().await?;
        results::record_media_files(&mut conn, job_id, &item, &files).await?;
        drop(conn);
        // Files whose bytes the store already holds are done before anything is fetched.
        let mut done = std::collections::HashSet::new();
        for row in &stored {
            if let Some((sha, _)) = &row.blob
                && fetcher
                    .store()
                    .contains(sha)
                    .await
                    .map_err(MediaError::Store)?
            {
                done.insert((row.file.position, row.file.variant));
            }
        }
        let mut downloaded = 0;
        let mut refreshed = false;
        loop {
            let pending: Vec<MediaFile> = files
                .iter()
                .filter(|f| !done.contains(&(f.position, f.variant)))
                .cloned()
                .collect();
            // An item's files (a sidecar's children) stream side by side, up to the worker's
            // media concurrency.
            let fetched: Vec<(MediaFile, Result<Fetched, MediaError>)> =
                futures_util::stream::iter(pending)
                    .map(|file| async move {
                        let result = fetcher.fetch(&file.url).await;
                        (file, result)
                    })
                    .buffer_unordered(fetcher.concurrency())
                    .collect()
                    .await;
            let mut expired = None;
            let mut failed = None;
            for (file, result) in fetched {
                match result {
                    Ok(fetched) => {
                        let size = i64::try_from(fetched.blob.size).unwrap_or(i64::MAX);
                        results::record_media_blob(
                            self.pool,
                            job_id,
                            &item,
                            &file,
                            &fetched.blob.sha256,
                            size,
                            &results::CdnHeaders {
                                last_modified: fetched.last_modified,
                                content_type: fetched.content_type,
                            },
                        )
                        .await?;
                        done.insert((file.position, file.variant));
                        downloaded += 1;
                    }
                    Err(e @ (MediaError::Expired(_) | MediaError::Refused(_))) => expired = Some(e),
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(e) = failed {
                return Err(e.into());
            }
            match expired {
                None => break,
                Some(e) if refreshed => return Err(e.into()),
                Some(_) => {
                    tracing::info!(job_id, item, "media URL expired; reading the item again");
                    self.metrics.media_refreshes.inc();
                    files = self.refresh(&target).await?;
                    let mut conn = self.pool.acquire().await?;
                    results::record_media_files(&mut conn, job_id, &item, &files).await?;
                    refreshed = true;
                }
            }
        }
        cp.items += downloaded;
        cp.pages += 1;
        cp.done = true;
        let mut conn = self.pool.acquire().await?;
        self.queue
            .checkpoint(&mut *conn, &self.job.lease, cp)
            .await?;
        self.count("media", downloaded);
        Ok(())
    }

    /// The item's files from its stored JSON; `None` when the item was never stored.
    async fn stored_files(
        &self,
        target: &MediaTarget,
    ) -> Result<Option<Vec<MediaFile>>, CrawlError> {
        let files = match target {
            MediaTarget::Post(code) => results::post_raw(self.pool, code)
                .await?
                .map(|raw| files::post_files(&raw)),
            MediaTarget::Story(id) => results::story_raw(self.pool, id)
                .await?
                .map(|(raw, _, _)| files::story_files(&raw)),
            MediaTarget::ProfilePic(name) => results::user_raw(self.pool, name)
                .await?
                .map(|raw| files::profile_pic_file(&raw)),
            // A cover has no row of its own: the highlights crawl recorded its file directly.
            MediaTarget::HighlightCover(_) => {
                let rows = results::media_files(self.pool, &[target.to_string()]).await?;
                (!rows.is_empty()).then(|| Ok(rows.into_iter().map(|r| r.file).collect()))
            }
        };
        Ok(files.transpose().map_err(MediaError::from)?)
    }

    /// Reads the item from Instagram again (one request of its query type), stores it, and
    /// returns its files at their new URLs.
    async fn refresh(&self, target: &MediaTarget) -> Result<Vec<MediaFile>, CrawlError> {
        let job_id = self.job.lease.job_id;
        // Every request is sent before the transaction opens: the limiter needs a connection of
        // the worker's small pool for each one.
        match target {
            MediaTarget::Post(code) => {
                let post: PostRow = self.load_post(code).await?;
                let files = files::post_files(&post.raw).map_err(MediaError::from)?;
                let mut tx = self.pool.begin().await?;
                results::upsert_posts(&mut tx, job_id, &[post]).await?;
                tx.commit().await?;
                Ok(files)
            }
            MediaTarget::Story(id) => {
                let Some((_, owner, highlight)) = results::story_raw(self.pool, id).await? else {
                    return Err(MediaError::Gone(format!(
                        "story item {id} was never stored: crawl its stories or highlights first"
                    ))
                    .into());
                };
                let reel_id = highlight.clone().unwrap_or_else(|| owner.to_string());
                let answer = self
                    .send(&Call::mobile(
                        "/api/v1/feed/reels_media/",
                        &[("reel_ids", &reel_id)],
                    ))
                    .await?;
                let rows = read::reel_rows(owner, &reel_id, None, &answer.json)?;
                let Some(row) = rows.into_iter().find(|r| &r.id == id) else {
                    return Err(MediaError::Gone(format!(
                        "story item {id} is no longer served (expired or deleted)"
                    ))
                    .into());
                };
                let files = files::story_files(&row.raw).map_err(MediaError::from)?;
                let mut tx = self.pool.begin().await?;
                results::upsert_stories(&mut tx, job_id, &[row]).await?;
                tx.commit().await?;
                Ok(files)
            }
            MediaTarget::HighlightCover(id) => {
                let Some(owner) = results::highlight_owner(self.pool, id).await? else {
                    return Err(MediaError::Gone(format!(
                        "highlight {id} has no stored items to find its owner by"
                    ))
                    .into());
                };
                let list = self.highlight_list_of(owner).await?;
                let Some(url) = list
                    .into_iter()
                    .find(|h| &h.id == id)
                    .and_then(|h| h.cover_url)
                else {
                    return Err(
                        MediaError::Gone(format!("highlight {id} is no longer served")).into(),
                    );
                };
                Ok(vec![MediaFile {
                    position: 0,
                    variant: MediaVariant::Picture,
                    url,
                }])
            }
            MediaTarget::ProfilePic(_) => {
                let row = self.full_profile().await?;
                let files = files::profile_pic_file(&row.raw).map_err(MediaError::from)?;
                let mut tx = self.pool.begin().await?;
                results::upsert_users(&mut tx, job_id, &[row]).await?;
                tx.commit().await?;
                Ok(files)
            }
        }
    }
}
