//! Streaming one CDN file into the blob store: chunk by chunk (never the whole file in memory),
//! resumed with a range request after a connection drop when the CDN allows ranges, checked
//! against the announced size before the blob becomes visible, and paced by the worker's media
//! politeness (concurrent downloads, bytes per second).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::LAST_MODIFIED;
use reqwest::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;
use trawl_shared::blobs::{BlobError, BlobStore, BlobWriter, Expect, StoredBlob};

use crate::egress::{self, ProxyFailure};
use crate::metrics::WorkerMetrics;
use trawl_shared::proxies::ProxyRoute;

/// Why one file could not be fetched. [`MediaError::is_permanent`] says which no retry mends.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The CDN says the URL's signature has expired: the item must be read again for a new one.
    #[error("the media URL has expired ({0})")]
    Expired(String),
    /// The CDN refused the URL for another reason (a bad signature): reading the item again may
    /// mend it, as for an expired one.
    #[error("the CDN refused the media URL: {0}")]
    Refused(String),
    /// The CDN does not have the file (or the item no longer exists).
    #[error("no such media: {0}")]
    Gone(String),
    #[error("the CDN answered {status} for {what}")]
    Status { status: u16, what: String },
    #[error("download of {what} cut off {attempts} times: {last}")]
    Transport {
        what: String,
        attempts: u32,
        last: String,
    },
    /// The bytes did not match what the CDN announced: nothing was stored.
    #[error("download of {what} is corrupt: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("blob store: {0}")]
    Store(#[from] BlobError),
    /// This worker could not open the blob store (it leases no media job then).
    #[error("this worker has no blob store")]
    NoStore,
    /// An item's JSON names no file to fetch.
    #[error(transparent)]
    NoMedia(#[from] super::files::NoMedia),
    /// The account's proxy, not the CDN, failed: nothing is wrong with the file.
    #[error("proxy {proxy}: {failure}")]
    Proxy {
        proxy: String,
        failure: ProxyFailure,
    },
}

impl MediaError {
    /// No retry of the job can succeed: the file or its item is gone.
    pub fn is_permanent(&self) -> bool {
        matches!(self, MediaError::Gone(_) | MediaError::NoMedia(_))
            || matches!(self, MediaError::Store(e) if !e.is_retryable())
    }

    /// The label of `trawl_media_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            MediaError::Expired(_) | MediaError::Refused(_) => "expired",
            MediaError::Gone(_) | MediaError::NoMedia(_) => "gone",
            MediaError::Status { .. } => "http",
            MediaError::Transport { .. } => "transport",
            MediaError::Corrupt { .. } => "corrupt",
            MediaError::Store(_) | MediaError::NoStore => "store",
            MediaError::Proxy { .. } => "proxy",
        }
    }
}

/// How politely media is fetched; see `[media]` in the configuration.
#[derive(Debug, Clone)]
pub struct Politeness {
    /// Downloads streaming at once on this worker.
    pub concurrency: usize,
    /// Bytes per second over all of this worker's downloads; `None`: no cap.
    pub bytes_per_second: Option<u64>,
    /// Tries per file within one job attempt (a cut connection resumes where it stopped).
    pub tries: u32,
    /// A body that sends nothing for this long is cut and resumed.
    pub stall_timeout: Duration,
}

/// A file in the store, with what the CDN said of it.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub blob: StoredBlob,
    /// `Last-Modified`, which names profile pictures and covers in the reference client's tree.
    pub last_modified: Option<DateTime<Utc>>,
    /// `Content-Type`, from which the reference client takes a post's or story item's file
    /// extension.
    pub content_type: Option<String>,
}

/// Fetches CDN files into the blob store for one worker.
pub struct MediaFetcher {
    http: reqwest::Client,
    proxy: Option<ProxyRoute>,
    store: BlobStore,
    slots: Semaphore,
    pace: Option<Mutex<Pace>>,
    politeness: Politeness,
    metrics: Arc<WorkerMetrics>,
}

/// A shared byte budget: after `sent` bytes since `since`, the next chunk waits until the rate
/// allows it. Restarted after an idle spell so that idleness does not bank a burst.
struct Pace {
    bytes_per_second: u64,
    since: Instant,
    sent: u64,
}

impl Pace {
    fn delay_for(&mut self, bytes: u64) -> Duration {
        let now = Instant::now();
        let due =
            self.since + Duration::from_secs_f64(self.sent as f64 / self.bytes_per_second as f64);
        if due + Duration::from_secs(1) < now {
            self.since = now;
            self.sent = 0;
        }
        self.sent += bytes;
        let due =
            self.since + Duration::from_secs_f64(self.sent as f64 / self.bytes_per_second as f64);
        due.saturating_duration_since(now)
    }
}

/// What a file's URL is called in errors and logs: its path, without the signed query.
fn shown(url: &str) -> String {
    let path = url.split('?').next().unwrap_or(url);
    let tail: String = path.chars().rev().take(120).collect();
    tail.chars().rev().collect()
}

impl MediaFetcher {
    /// A fetcher whose downloads take `proxy` (the held account's), or go straight out.
    pub fn new(
        store: BlobStore,
        politeness: Politeness,
        metrics: Arc<WorkerMetrics>,
        proxy: Option<ProxyRoute>,
    ) -> Result<Self, reqwest::Error> {
        // No cookies and no account: the reference client fetches media with an anonymous
        // session too, and a CDN needs neither. The account's exit all the same: a CDN sees the
        // address too, and one that jumps between proxy and machine is what gets flagged.
        let http = egress::client_builder(proxy.as_ref())?
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(politeness.stall_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()?;
        Ok(Self {
            http,
            proxy,
            store,
            slots: Semaphore::new(politeness.concurrency.max(1)),
            pace: politeness.bytes_per_second.filter(|b| *b > 0).map(|b| {
                Mutex::new(Pace {
                    bytes_per_second: b,
                    since: Instant::now(),
                    sent: 0,
                })
            }),
            politeness,
            metrics,
        })
    }

    pub fn store(&self) -> &BlobStore {
        &self.store
    }

    /// Downloads this worker streams at once.
    pub fn concurrency(&self) -> usize {
        self.politeness.concurrency.max(1)
    }

    /// Downloads `url` into the store and returns its blob, trying again (from where it stopped
    /// when the CDN allows ranges) after a cut connection or a 5xx.
    pub async fn fetch(&self, url: &str) -> Result<Fetched, MediaError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| MediaError::Transport {
                what: shown(url),
                attempts: 0,
                last: "the worker is stopping".into(),
            })?;
        self.metrics.media_in_flight.inc();
        let result = self.fetch_in_slot(url).await;
        self.metrics.media_in_flight.dec();
        match &result {
            Ok(fetched) => {
                let outcome = if fetched.blob.newly_stored {
                    "stored"
                } else {
                    "already_stored"
                };
                self.metrics.media_files.with_label_values(&[outcome]).inc();
            }
            Err(e) => {
                self.metrics
                    .media_files
                    .with_label_values(&["failed"])
                    .inc();
                self.metrics
                    .media_failures
                    .with_label_values(&[e.reason()])
                    .inc();
            }
        }
        result
    }

    async fn fetch_in_slot(&self, url: &str) -> Result<Fetched, MediaError> {
        let what = shown(url);
        let mut writer = self.store.writer().await?;
        let mut total: Option<u64> = None;
        let mut ranges = false;
        let mut last_modified = None;
        let mut content_type = None;
        let mut last = String::new();
        let mut proxy_failure = None;
        let tries = self.politeness.tries.max(1);
        for attempt in 0..tries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt.min(5)))).await;
            }
            let from = writer.written();
            if from > 0 && !ranges {
                // The CDN cannot resume: start again from the first byte.
                let _ = writer.abort().await;
                writer = self.store.writer().await?;
            }
            let from = writer.written();
            let mut request = self.http.get(url);
            if from > 0 {
                request = request.header(RANGE, format!("bytes={from}-"));
            }
            let mut response = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    proxy_failure = egress::failure_of_error(self.proxy.as_ref(), &e);
                    last = e.without_url().to_string();
                    continue;
                }
            };
            let status = response.status();
            proxy_failure =
                egress::failure_of_answer(self.proxy.as_ref(), status.as_u16(), response.headers());
            if let Some(failure) = &proxy_failure {
                last = failure.to_string();
                if *failure == ProxyFailure::AuthRequired {
                    break;
                }
                continue;
            }
            match status {
                StatusCode::OK if from > 0 => {
                    // Range ignored: the body starts at byte 0 again.
                    let _ = writer.abort().await;
                    writer = self.store.writer().await?;
                }
                StatusCode::OK | StatusCode::PARTIAL_CONTENT => {}
                StatusCode::FORBIDDEN => {
                    let body = response.text().await.unwrap_or_default();
                    let _ = writer.abort().await;
                    return Err(if body.contains("expired") {
                        MediaError::Expired(what)
                    } else {
                        MediaError::Refused(format!(
                            "{what}: {}",
                            body.chars().take(100).collect::<String>()
                        ))
                    });
                }
                StatusCode::NOT_FOUND | StatusCode::GONE => {
                    let _ = writer.abort().await;
                    return Err(MediaError::Gone(what));
                }
                s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                    last = format!("status {s}");
                    continue;
                }
                s => {
                    let _ = writer.abort().await;
                    return Err(MediaError::Status {
                        status: s.as_u16(),
                        what,
                    });
                }
            }
            let header = |name| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                    .map(str::to_owned)
            };
            ranges = header(ACCEPT_RANGES).is_some_and(|v| v.contains("bytes"));
            last_modified = header(LAST_MODIFIED)
                .and_then(|v| DateTime::parse_from_rfc2822(&v).ok())
                .map(|t| t.with_timezone(&Utc))
                .or(last_modified);
            content_type = header(CONTENT_TYPE).or(content_type);
            let announced = if response.status() == StatusCode::PARTIAL_CONTENT {
                match header(CONTENT_RANGE)
                    .as_deref()
                    .and_then(parse_content_range)
                {
                    Some((start, size)) if start == writer.written() => Some(size),
                    _ => {
                        let _ = writer.abort().await;
                        return Err(MediaError::Corrupt {
                            what,
                            reason: "the CDN answered another range than the one asked".into(),
                        });
                    }
                }
            } else {
                header(CONTENT_LENGTH).and_then(|v| v.parse().ok())
            };
            if let (Some(before), Some(now)) = (total, announced)
                && before != now
            {
                let _ = writer.abort().await;
                return Err(MediaError::Corrupt {
                    what,
                    reason: format!("the file was {before} bytes, now {now}"),
                });
            }
            total = total.or(announced);
            match self.stream_body(&mut response, &mut writer).await {
                Ok(()) => {
                    if total.is_some_and(|t| writer.written() < t) {
                        last = format!("body ended at byte {} of {:?}", writer.written(), total);
                        continue;
                    }
                    let expect = Expect {
                        size: total,
                        sha256: None,
                    };
                    let blob = writer.finish(expect).await.map_err(|e| match e {
                        BlobError::Corrupt { .. } => MediaError::Corrupt {
                            what,
                            reason: e.to_string(),
                        },
                        e => MediaError::Store(e),
                    })?;
                    return Ok(Fetched {
                        blob,
                        last_modified,
                        content_type,
                    });
                }
                Err(BodyError::Store(e)) => {
                    let _ = writer.abort().await;
                    return Err(MediaError::Store(e));
                }
                Err(BodyError::Cut(reason)) => {
                    last = reason;
                }
            }
        }
        let _ = writer.abort().await;
        if let (Some(failure), Some(route)) = (proxy_failure, &self.proxy) {
            return Err(MediaError::Proxy {
                proxy: route.name.clone(),
                failure,
            });
        }
        Err(MediaError::Transport {
            what,
            attempts: tries,
            last,
        })
    }

    async fn stream_body(
        &self,
        response: &mut reqwest::Response,
        writer: &mut BlobWriter,
    ) -> Result<(), BodyError> {
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Ok(()),
                Err(e) => return Err(BodyError::Cut(e.without_url().to_string())),
            };
            self.metrics.media_bytes.inc_by(chunk.len() as u64);
            writer.write(&chunk).await.map_err(BodyError::Store)?;
            if let Some(pace) = &self.pace {
                let delay = pace.lock().await.delay_for(chunk.len() as u64);
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

enum BodyError {
    Cut(String),
    Store(BlobError),
}

/// `bytes START-END/SIZE` to (START, SIZE).
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, size) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, size.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_read_their_start_and_size() {
        assert_eq!(parse_content_range("bytes 100-199/1000"), Some((100, 1000)));
        assert_eq!(parse_content_range("bytes */1000"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn a_url_is_shown_without_its_signature() {
        assert_eq!(
            shown("http://cdn/v/t51/1_n.jpg?oh=secret&oe=6A"),
            "http://cdn/v/t51/1_n.jpg"
        );
    }

    #[test]
    fn the_pace_spreads_bytes_over_time() {
        let mut pace = Pace {
            bytes_per_second: 1000,
            since: Instant::now(),
            sent: 0,
        };
        assert!(pace.delay_for(500) <= Duration::from_millis(500));
        let later = pace.delay_for(1500);
        assert!(later > Duration::from_millis(1900) && later <= Duration::from_secs(2));
    }
}
