//! The CDN route (`GET`/`HEAD /v/{*rest}`): the media bytes behind the URLs the other routes hand
//! out. It stands apart from the request gate ([`super::handle`]): Instagram's CDN is another
//! service, so its requests count against no window and ignore sessions, but they are audited
//! (as `cdn`) and take the fault settings that make sense for a download.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;

use super::*;
use crate::cdn::{
    CdnConfig, DEFAULT_CDN_BASE, MediaFile, MediaItem, MediaUrls, RangeRequest, UrlSigner,
    expiry_for, parse_range,
};
use crate::faults::Fault;
use crate::windows::QueryType;

/// Every media file was last modified at the data set's "now" (2026-01-01T00:00:00Z): the bytes
/// never change.
const LAST_MODIFIED: &str = "Thu, 01 Jan 2026 00:00:00 GMT";

/// Largest piece of a body produced at once: enough to keep a fast client busy, small enough that
/// a 200 MB video never sits in memory.
const CHUNK: u64 = 64 * 1024;

/// The CDN's settings as the server keeps them.
pub(crate) struct CdnState {
    /// Set once: from `--cdn-base`, or by [`crate::run`] from the address it serves on.
    base: OnceLock<String>,
    signer: UrlSigner,
    /// The URL lifetime in wall-clock seconds (scaled, at least 1).
    lifetime_secs: u64,
    video_bytes: Option<u64>,
}

impl CdnState {
    pub(crate) fn new(seed: u64, config: &CdnConfig, time_scale: f64) -> Self {
        let base = OnceLock::new();
        if let Some(b) = &config.base {
            let _ = base.set(b.trim_end_matches('/').to_owned());
        }
        let scaled = (config.url_lifetime_secs * time_scale).round();
        Self {
            base,
            signer: UrlSigner::new(seed),
            lifetime_secs: if scaled.is_finite() && scaled >= 1.0 {
                scaled as u64
            } else {
                1
            },
            video_bytes: config.video_bytes,
        }
    }
}

impl Sim {
    /// Where media URLs point.
    pub fn cdn_base(&self) -> &str {
        self.cdn.base.get().map_or(DEFAULT_CDN_BASE, String::as_str)
    }

    /// Points media URLs at `address`, when it is one a client can reach (not 0.0.0.0 or ::) and
    /// no base was configured or adopted before.
    pub fn adopt_served_address(&self, address: SocketAddr) {
        if !address.ip().is_unspecified() {
            let _ = self.cdn.base.set(format!("http://{address}"));
        }
    }

    /// Unix time now, on the simulator's clock.
    pub(crate) fn unix_now(&self) -> u64 {
        (self.started_unix + self.started.elapsed().as_secs_f64()) as u64
    }

    /// The media URLs for an answer rendered now. Every URL of one answer shares one expiry, and
    /// so does every answer in one bucket: a cached page only has to be keyed by
    /// [`MediaUrls::expires`].
    pub fn media_urls(&self) -> MediaUrls<'_> {
        MediaUrls::new(
            self.cdn_base(),
            &self.cdn.signer,
            expiry_for(self.unix_now(), self.cdn.lifetime_secs),
        )
    }

    /// The file the CDN serves for `item`, if the data set has that item.
    pub fn media_file(&self, item: &MediaItem) -> Option<MediaFile> {
        self.has_media(item)
            .then(|| MediaFile::new(self.data.seed, item, self.cdn.video_bytes))
    }

    fn has_media(&self, item: &MediaItem) -> bool {
        let data = &self.data;
        let post = |id: u64| data.post_by_id(id);
        match item {
            MediaItem::PostImage { post: id } => post(*id).is_some(),
            MediaItem::CarouselImage { post: id, child } => post(*id)
                .is_some_and(|p| matches!(p.kind, crate::data::PostType::Sidecar(n) if *child < n)),
            MediaItem::PostVideo { post: id } => {
                post(*id).is_some_and(|p| p.kind == crate::data::PostType::Video)
            }
            MediaItem::ReelImage { pk } => self.reel_item(*pk).is_some(),
            MediaItem::ReelVideo { pk } => self.reel_item(*pk).is_some_and(|it| it.video),
            MediaItem::HighlightCover { user, highlight } => data
                .user_by_id(*user)
                .is_some_and(|u| !u.is_private && *highlight < data.highlight_count(u)),
            MediaItem::ProfilePicture { user } | MediaItem::ProfilePictureHd { user } => {
                data.user_by_id(*user).is_some() || self.account_ids.contains(user)
            }
            MediaItem::HashtagPicture { tag } => crate::data::TAGS.contains(&tag.as_str()),
        }
    }

    /// The story or highlight item with `pk`, which is `(user id × 100 + salt) × 100 + k` (see
    /// [`shapes::reel_items`]).
    fn reel_item(&self, pk: u64) -> Option<shapes::ReelItem> {
        let salt = pk / 100 % 100;
        let highlight = match salt {
            8 => None,
            20..=29 => Some(salt - 20),
            _ => return None,
        };
        let u = self.data.user_by_id(pk / 10_000)?;
        shapes::reel_items(&self.data, u, highlight)?
            .into_iter()
            .find(|it| it.pk == pk)
    }
}

pub(super) fn routes() -> Router<Arc<Sim>> {
    Router::new().route("/v/{*rest}", get(media))
}

/// One media download (a GET, or a HEAD, which axum routes here too).
async fn media(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let who = caller(&sim, peer, &headers);
    let arrived = sim.started.elapsed().as_secs_f64();
    let (response, body_bytes) = answer(&sim, &method, &headers, &uri).await;
    let body_bytes = if method == Method::HEAD {
        0
    } else {
        body_bytes
    };
    if let Ok(mut log) = sim.audit.lock() {
        log.push(audit::Entry::new(
            arrived,
            who.account,
            who.ip,
            current_route(),
            &QueryType::Cdn,
            response.status().as_u16(),
            body_bytes as usize,
        ));
    }
    response
}

/// What a body carries: `start..end` of `file`, cut after `cut_at` bytes if the connection is to
/// be dropped, sent at most `bytes_per_second` fast (0: no limit).
#[derive(Clone, Copy)]
struct BodyPlan {
    file: MediaFile,
    start: u64,
    end: u64,
    cut_at: Option<u64>,
    bytes_per_second: u64,
}

/// The answer and how many body bytes it sends.
async fn answer(sim: &Sim, method: &Method, headers: &HeaderMap, uri: &Uri) -> (Response, u64) {
    let Some(file) = MediaItem::from_path(uri.path())
        .ok()
        .and_then(|item| sim.media_file(&item))
    else {
        return plain(StatusCode::NOT_FOUND, "Not Found".to_owned());
    };
    if let Err(refusal) =
        sim.cdn
            .signer
            .check(uri.path(), uri.query().unwrap_or(""), sim.unix_now())
    {
        return plain(StatusCode::FORBIDDEN, refusal.to_string());
    }
    let (latency, fault, bytes_per_second) = sim
        .faults
        .lock()
        .map(|f| {
            let (latency, fault) = f.draw(fault_roll(sim));
            (latency, fault, f.cdn_bytes_per_second)
        })
        .unwrap_or((0, None, 0));
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if let Some(Fault::ServerError(code)) = fault {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let reason = status.canonical_reason().unwrap_or("Server Error");
        return plain(status, reason.to_owned());
    }
    let etag = file.etag();
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if unchanged {
        return (
            with_file_headers(StatusCode::NOT_MODIFIED, &file, Body::empty()),
            0,
        );
    }
    let range = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        file.size(),
    );
    let (status, start, end) = match range {
        RangeRequest::Whole => (StatusCode::OK, 0, file.size()),
        RangeRequest::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
        RangeRequest::Unsatisfiable => {
            let mut r = with_file_headers(StatusCode::RANGE_NOT_SATISFIABLE, &file, Body::empty());
            insert(
                &mut r,
                header::CONTENT_RANGE,
                format!("bytes */{}", file.size()),
            );
            insert(&mut r, header::CONTENT_LENGTH, "0".to_owned());
            return (r, 0);
        }
    };
    let length = end - start;
    // Invalid JSON means nothing to a picture; only a drop changes what a download gets.
    let cut_at = (fault == Some(Fault::Drop)).then_some(length / 2);
    let sent = cut_at.unwrap_or(length);
    let body = if *method == Method::HEAD {
        Body::empty()
    } else {
        Body::from_stream(body_stream(BodyPlan {
            file,
            start,
            end,
            cut_at: cut_at.map(|n| start + n),
            bytes_per_second,
        }))
    };
    let mut r = with_file_headers(status, &file, body);
    insert(&mut r, header::CONTENT_LENGTH, length.to_string());
    if status == StatusCode::PARTIAL_CONTENT {
        insert(
            &mut r,
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{}", end - 1, file.size()),
        );
    }
    (r, sent)
}

/// The body in chunks produced on demand, paced to the rate limit, cut where the plan says.
fn body_stream(plan: BodyPlan) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    let began = tokio::time::Instant::now();
    let chunk = if plan.bytes_per_second > 0 {
        // About ten chunks a second, so a slow body trickles instead of arriving in bursts.
        (plan.bytes_per_second / 10).clamp(1, CHUNK)
    } else {
        CHUNK
    };
    let stop = plan.cut_at.unwrap_or(plan.end);
    futures_util::stream::unfold(Some(plan.start), move |at| async move {
        let at = at?;
        if at >= stop {
            plan.cut_at?;
            // The pause lets the server flush what was sent; an error at once could drop the
            // connection before the headers leave.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let cut = std::io::Error::other("connection dropped by the simulator");
            return Some((Err(cut), None));
        }
        if plan.bytes_per_second > 0 {
            let due = (at - plan.start) as f64 / plan.bytes_per_second as f64;
            tokio::time::sleep_until(began + Duration::from_secs_f64(due)).await;
        }
        let n = chunk.min(stop - at);
        let mut buf = vec![0u8; n as usize];
        plan.file.read_at(at, &mut buf);
        Some((Ok(Bytes::from(buf)), Some(at + n)))
    })
}

fn with_file_headers(status: StatusCode, file: &MediaFile, body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(file.content_type()),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::LAST_MODIFIED,
        HeaderValue::from_static(LAST_MODIFIED),
    );
    if let Ok(v) = HeaderValue::from_str(&file.etag()) {
        h.insert(header::ETAG, v);
    }
    r
}

fn insert(r: &mut Response, name: header::HeaderName, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().insert(name, v);
    }
}

/// The CDN answers errors in plain text, not in the API's JSON; with the body's length.
fn plain(status: StatusCode, text: String) -> (Response, u64) {
    let length = text.len() as u64;
    let response = (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response();
    (response, length)
}
