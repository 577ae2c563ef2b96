//! The simulator's stand-in for Instagram's CDN (`scontent-*.cdninstagram.com`): signed, expiring
//! media URLs, and the media bytes behind them.
//!
//! Everything here is a pure function of the seed and a media path, so that a test elsewhere can
//! tell what the simulator serves without asking it: [`MediaFile`] produces any byte range of an
//! item (and its SHA-256), [`UrlSigner`] the `oh` a URL carries. Which paths the data set holds is
//! the server's business (`server::cdn`); a path of the right shape is enough here.
//!
//! URL shape, as Instagram's: `{base}/v/t51.2885-15/{name}.jpg?stp=…&_nc_ht={host}&oh={sig}&oe={expiry}`
//! for pictures and `{base}/v/t50.2886-16/{name}.mp4?…` for videos. The extension stands right
//! before the `?` because that is where Instaloader takes a file's extension from.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::data::mix;

/// Where media URLs point when the simulator is not served on a specific address (see
/// [`CdnConfig::base`]): a reserved name, so a URL that leaks out of a test resolves nowhere.
pub const DEFAULT_CDN_BASE: &str = "https://scontent.sim.instagram.test";

/// Instagram's media URLs stay valid for several days; a day of simulated time keeps that order
/// without letting a long test outlive its URLs unnoticed.
pub const DEFAULT_URL_LIFETIME_SECS: f64 = 86_400.0;

/// Smallest `--video-bytes`: the `ftyp` box and an `mdat` header must fit.
pub const MIN_VIDEO_BYTES: u64 = 64;

const IMAGE_DIR: &str = "/v/t51.2885-15/";
const VIDEO_DIR: &str = "/v/t50.2886-16/";

/// The CDN's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CdnConfig {
    /// Scheme and authority media URLs start with (`--cdn-base`). `None`: the simulator's own
    /// `http://{address}` once it is served on a specific address, else [`DEFAULT_CDN_BASE`].
    pub base: Option<String>,
    /// How long a URL stays valid at least, in simulated seconds (`--cdn-url-lifetime`); scaled
    /// by the time scale as the windows are.
    pub url_lifetime_secs: f64,
    /// Every video's size (`--video-bytes`), for benchmarks that need large downloads; `None`:
    /// chosen per item.
    pub video_bytes: Option<u64>,
}

impl Default for CdnConfig {
    fn default() -> Self {
        Self {
            base: None,
            url_lifetime_secs: DEFAULT_URL_LIFETIME_SECS,
            video_bytes: None,
        }
    }
}

impl CdnConfig {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(base) = &self.base {
            let authority = base
                .strip_prefix("http://")
                .or_else(|| base.strip_prefix("https://"))
                .ok_or_else(|| {
                    format!("the CDN base {base:?} must start with http:// or https://")
                })?;
            let authority = authority.trim_end_matches('/');
            if authority.is_empty() || authority.contains(['/', '?', '#', ' ']) {
                return Err(format!(
                    "the CDN base {base:?} must be a scheme and a host (and port), without a path"
                ));
            }
        }
        if !(self.url_lifetime_secs.is_finite() && self.url_lifetime_secs > 0.0) {
            return Err("the CDN URL lifetime must be above 0 seconds".into());
        }
        if self.video_bytes.is_some_and(|n| n < MIN_VIDEO_BYTES) {
            return Err(format!("video bytes must be at least {MIN_VIDEO_BYTES}"));
        }
        Ok(())
    }
}

/// One media item the data set can name, and so one CDN path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MediaItem {
    /// A post's picture: an image post's, a sidecar's cover, a video's thumbnail.
    PostImage {
        post: u64,
    },
    /// Picture `child` (from 0) of a sidecar.
    CarouselImage {
        post: u64,
        child: u8,
    },
    PostVideo {
        post: u64,
    },
    /// A story or highlight item's picture (every item has one; a video's is its thumbnail).
    ReelImage {
        pk: u64,
    },
    ReelVideo {
        pk: u64,
    },
    /// The cover of highlight `highlight` (from 0) of a user.
    HighlightCover {
        user: u64,
        highlight: u64,
    },
    ProfilePicture {
        user: u64,
    },
    ProfilePictureHd {
        user: u64,
    },
    HashtagPicture {
        tag: String,
    },
}

/// What a media file is, which decides its format and its size range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    ProfilePicture,
    Video,
}

impl MediaKind {
    pub fn content_type(self) -> &'static str {
        match self {
            MediaKind::Image | MediaKind::ProfilePicture => "image/jpeg",
            MediaKind::Video => "video/mp4",
        }
    }

    /// The sizes a file of this kind is drawn from, inclusive. The bounds sit inside both readings
    /// of "40 KB to 400 KB" (1,000 or 1,024 bytes a KB), with room for the JPEG padding's
    /// adjustment of up to 3 bytes.
    pub fn size_range(self) -> (u64, u64) {
        match self {
            MediaKind::Image => (40_960, 399_990),
            MediaKind::ProfilePicture => (10_240, 99_990),
            MediaKind::Video => (524_288, 4_000_000),
        }
    }
}

/// A path that names no media item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a media path of the simulator's CDN")]
pub struct NotMediaPath(pub String);

impl MediaItem {
    pub fn kind(&self) -> MediaKind {
        match self {
            MediaItem::PostVideo { .. } | MediaItem::ReelVideo { .. } => MediaKind::Video,
            MediaItem::ProfilePicture { .. } | MediaItem::ProfilePictureHd { .. } => {
                MediaKind::ProfilePicture
            }
            _ => MediaKind::Image,
        }
    }

    /// The file name without its extension.
    fn name(&self) -> String {
        match self {
            MediaItem::PostImage { post } | MediaItem::PostVideo { post } => format!("{post}_n"),
            MediaItem::CarouselImage { post, child } => format!("{post}_{child}_n"),
            MediaItem::ReelImage { pk } | MediaItem::ReelVideo { pk } => format!("{pk}_story"),
            MediaItem::HighlightCover { user, highlight } => format!("{user}_{highlight}_cover"),
            MediaItem::ProfilePicture { user } => format!("{user}_profile"),
            MediaItem::ProfilePictureHd { user } => format!("{user}_profile_hd"),
            MediaItem::HashtagPicture { tag } => format!("tag_{tag}"),
        }
    }

    /// The item's path on the CDN, which is also what its signature and its bytes are keyed by.
    pub fn path(&self) -> String {
        match self.kind() {
            MediaKind::Video => format!("{VIDEO_DIR}{}.mp4", self.name()),
            _ => format!("{IMAGE_DIR}{}.jpg", self.name()),
        }
    }

    /// The item a CDN path (or a whole URL: scheme, host and query are ignored) names. Only the
    /// path [`MediaItem::path`] gives is accepted, so one item never answers on two paths.
    pub fn from_path(url_or_path: &str) -> Result<Self, NotMediaPath> {
        let path = path_of(url_or_path);
        let refuse = || NotMediaPath(path.chars().take(200).collect());
        let (name, video) = if let Some(rest) = path.strip_prefix(IMAGE_DIR) {
            (rest.strip_suffix(".jpg").ok_or_else(refuse)?, false)
        } else if let Some(rest) = path.strip_prefix(VIDEO_DIR) {
            (rest.strip_suffix(".mp4").ok_or_else(refuse)?, true)
        } else {
            return Err(refuse());
        };
        let item = parse_name(name, video).ok_or_else(refuse)?;
        if item.path() == path {
            Ok(item)
        } else {
            Err(refuse())
        }
    }
}

fn parse_name(name: &str, video: bool) -> Option<MediaItem> {
    if let Some(tag) = name.strip_prefix("tag_") {
        let plain = !tag.is_empty() && tag.bytes().all(|b| b.is_ascii_lowercase());
        return (!video && plain).then(|| MediaItem::HashtagPicture {
            tag: tag.to_owned(),
        });
    }
    let parts: Vec<&str> = name.split('_').collect();
    let number = |s: &str| s.parse::<u64>().ok();
    let item = match (parts.as_slice(), video) {
        ([id, "n"], false) => MediaItem::PostImage { post: number(id)? },
        ([id, "n"], true) => MediaItem::PostVideo { post: number(id)? },
        ([id, child, "n"], false) => MediaItem::CarouselImage {
            post: number(id)?,
            child: child.parse().ok()?,
        },
        ([pk, "story"], false) => MediaItem::ReelImage { pk: number(pk)? },
        ([pk, "story"], true) => MediaItem::ReelVideo { pk: number(pk)? },
        ([user, highlight, "cover"], false) => MediaItem::HighlightCover {
            user: number(user)?,
            highlight: number(highlight)?,
        },
        ([user, "profile"], false) => MediaItem::ProfilePicture {
            user: number(user)?,
        },
        ([user, "profile", "hd"], false) => MediaItem::ProfilePictureHd {
            user: number(user)?,
        },
        _ => return None,
    };
    Some(item)
}

/// The path of a URL (or the path itself), without its query.
fn path_of(url_or_path: &str) -> &str {
    let without_query = url_or_path.split(['?', '#']).next().unwrap_or("");
    match without_query.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |at| &rest[at..]),
        None => without_query,
    }
}

/// Why the CDN refuses a URL, in Instagram's words where Instagram has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefusal {
    /// `oh` is missing or does not sign the path and `oe` (also when `oe` was altered).
    #[error("URL signature mismatch")]
    SignatureMismatch,
    /// A correctly signed URL whose `oe` has passed.
    #[error("URL signature expired")]
    SignatureExpired,
}

/// Signs and checks media URLs with a secret derived from the seed, so two simulators with the
/// same seed accept each other's URLs and nobody can forge one without the seed.
#[derive(Clone)]
pub struct UrlSigner {
    secret: [u8; 32],
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlSigner(…)")
    }
}

impl UrlSigner {
    pub fn new(seed: u64) -> Self {
        let mut h = Sha256::new();
        h.update(b"trawl-simulator cdn secret\0");
        h.update(seed.to_le_bytes());
        Self {
            secret: h.finalize().into(),
        }
    }

    /// `oh`: the first 16 bytes, in hex, of SHA-256(secret ‖ path ‖ NUL ‖ `oe` as 8 upper-case
    /// hex digits).
    pub fn sign(&self, path: &str, expires: u64) -> String {
        let mut h = Sha256::new();
        h.update(self.secret);
        h.update(path.as_bytes());
        h.update(b"\0");
        h.update(format!("{expires:08X}").as_bytes());
        hex(&h.finalize()[..16])
    }

    /// Checks the `oh` and `oe` of `query` for `path` at Unix time `now`.
    pub fn check(&self, path: &str, query: &str, now: u64) -> Result<(), UrlRefusal> {
        let mut signature = None;
        let mut expires = None;
        for (key, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
            match key {
                "oh" => signature = Some(value),
                "oe" => expires = Some(value),
                _ => {}
            }
        }
        let expires = expires
            .filter(|e| !e.is_empty() && e.len() <= 16)
            .and_then(|e| u64::from_str_radix(e, 16).ok())
            .ok_or(UrlRefusal::SignatureMismatch)?;
        let want = self.sign(path, expires);
        if !signature.is_some_and(|s| s.eq_ignore_ascii_case(&want)) {
            return Err(UrlRefusal::SignatureMismatch);
        }
        if now > expires {
            return Err(UrlRefusal::SignatureExpired);
        }
        Ok(())
    }
}

/// The `oe` a URL issued at Unix time `now` carries: the end of the bucket after the current one.
/// Every URL issued within one bucket is the same, so answers stay cacheable and two clients in
/// the same period see identical URLs, and each stays valid for at least one `lifetime`.
pub fn expiry_for(now: u64, lifetime_secs: u64) -> u64 {
    let lifetime = lifetime_secs.max(1);
    (now / lifetime + 2).saturating_mul(lifetime)
}

/// The URLs of one answer: one base and one expiry for all of them.
#[derive(Debug, Clone, Copy)]
pub struct MediaUrls<'a> {
    base: &'a str,
    signer: &'a UrlSigner,
    expires: u64,
}

impl<'a> MediaUrls<'a> {
    /// `base` without a trailing `/`; `expires` from [`expiry_for`].
    pub fn new(base: &'a str, signer: &'a UrlSigner, expires: u64) -> Self {
        Self {
            base: base.trim_end_matches('/'),
            signer,
            expires,
        }
    }

    pub fn expires(&self) -> u64 {
        self.expires
    }

    pub fn url(&self, item: &MediaItem) -> String {
        let path = item.path();
        let host = self
            .base
            .split_once("://")
            .map_or(self.base, |(_, host)| host);
        let stp = match item.kind() {
            MediaKind::Image => "dst-jpg_e35_p1080x1080",
            MediaKind::ProfilePicture => "dst-jpg_s320x320",
            MediaKind::Video => "dst-mp4",
        };
        format!(
            "{}{path}?stp={stp}&_nc_ht={host}&_nc_cat=1&oh={}&oe={:08X}",
            self.base,
            self.signer.sign(&path, self.expires),
            self.expires
        )
    }

    pub fn profile_picture(&self, user: u64) -> String {
        self.url(&MediaItem::ProfilePicture { user })
    }

    pub fn profile_picture_hd(&self, user: u64) -> String {
        self.url(&MediaItem::ProfilePictureHd { user })
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A JPEG start: SOI and a JFIF APP0 segment (version 1.01, no thumbnail), what sniffers look for.
const JPEG_HEAD: [u8; 20] = [
    0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0x01, 0x00, 0x00, 0x01,
    0x00, 0x01, 0x00, 0x00,
];

/// The rest of a complete 1×1 grey baseline JPEG (quantisation table, frame, two one-code Huffman
/// tables, the scan's one byte, EOI), so that the file decodes, not only sniffs, as a JPEG.
const JPEG_TAIL: [u8; 139] = {
    let mut t = [0u8; 139];
    let head: [u8; 5] = [0xFF, 0xDB, 0x00, 0x43, 0x00];
    let mut i = 0;
    while i < 5 {
        t[i] = head[i];
        i += 1;
    }
    while i < 69 {
        t[i] = 0x01;
        i += 1;
    }
    let rest: [u8; 70] = [
        // SOF0: 8 bits, 1×1, one component with table 0.
        0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x00, 0x01, 0x00, 0x01, 0x01, 0x01, 0x11, 0x00,
        // DHT, DC table 0: one code of length 1 for category 0.
        0xFF, 0xC4, 0x00, 0x14, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00,
        // DHT, AC table 0: one code of length 1 for end-of-block.
        0xFF, 0xC4, 0x00, 0x14, 0x10, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00,
        // SOS, then the scan (DC 0, EOB, padded with ones), then EOI.
        0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00, 0x3F, 0xFF, 0xD9,
    ];
    let mut j = 0;
    while j < 70 {
        t[69 + j] = rest[j];
        j += 1;
    }
    t
};

/// A comment segment at its largest: marker, length, 65,533 bytes of payload. The random filler
/// sits in such segments, which every decoder skips by their length.
const COMMENT_SEGMENT: u64 = 65_537;
const COMMENT_HEADER: u64 = 4;

/// `ftyp` (major brand `isom`), then an `mdat` box holding the rest.
const MP4_FTYP: [u8; 32] = [
    0x00, 0x00, 0x00, 0x20, b'f', b't', b'y', b'p', b'i', b's', b'o', b'm', 0x00, 0x00, 0x02, 0x00,
    b'i', b's', b'o', b'm', b'i', b's', b'o', b'2', b'a', b'v', b'c', b'1', b'm', b'p', b'4', b'1',
];

/// The bytes of one media item: deterministic in (seed, path), produced from any offset without
/// the bytes before it, so a file of any size is served in chunks and a range costs its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaFile {
    kind: MediaKind,
    size: u64,
    /// The PRNG's key: seed and path together.
    key: u64,
    seed: u64,
}

impl MediaFile {
    /// The file behind `item`, sized from the seed (or `video_bytes` for a video).
    pub fn new(seed: u64, item: &MediaItem, video_bytes: Option<u64>) -> Self {
        let path = item.path();
        let key = path.bytes().fold(mix(seed, 40, 0, 0), |acc, b| {
            mix(seed, 41, acc, u64::from(b))
        });
        let kind = item.kind();
        let size = match (kind, video_bytes) {
            (MediaKind::Video, Some(n)) => n.max(MIN_VIDEO_BYTES),
            _ => {
                let (low, high) = kind.size_range();
                low + mix(seed, 42, key, 0) % (high - low + 1)
            }
        };
        let size = match kind {
            MediaKind::Video => size,
            _ => jpeg_size(size),
        };
        Self {
            kind,
            size,
            key,
            seed,
        }
    }

    /// The file behind a CDN path or URL.
    pub fn for_path(
        seed: u64,
        url_or_path: &str,
        video_bytes: Option<u64>,
    ) -> Result<Self, NotMediaPath> {
        Ok(Self::new(
            seed,
            &MediaItem::from_path(url_or_path)?,
            video_bytes,
        ))
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn kind(&self) -> MediaKind {
        self.kind
    }

    pub fn content_type(&self) -> &'static str {
        self.kind.content_type()
    }

    /// A strong validator: changes whenever the bytes do (another seed, path or size).
    pub fn etag(&self) -> String {
        format!("\"{:016x}{:x}\"", self.key, self.size)
    }

    /// Fills `buf` with the file's bytes from `offset`; bytes past the end are left alone.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) {
        let end = offset
            .saturating_add(buf.len() as u64)
            .min(self.size)
            .max(offset);
        let len = (end - offset) as usize;
        let buf = &mut buf[..len];
        self.fill_random(offset, buf);
        match self.kind {
            MediaKind::Video => {
                overlay(buf, offset, 0, &MP4_FTYP);
                overlay(buf, offset, MP4_FTYP.len() as u64, &self.mdat_header());
            }
            MediaKind::Image | MediaKind::ProfilePicture => self.overlay_jpeg(buf, offset),
        }
    }

    /// The whole file's SHA-256 in hex, computed in chunks.
    pub fn sha256(&self) -> String {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut at = 0;
        while at < self.size {
            let n = (self.size - at).min(buf.len() as u64) as usize;
            self.read_at(at, &mut buf[..n]);
            h.update(&buf[..n]);
            at += n as u64;
        }
        hex(&h.finalize())
    }

    /// One 8-byte word per aligned offset, so any range starts without its prefix.
    fn fill_random(&self, offset: u64, buf: &mut [u8]) {
        let mut at = offset;
        let mut filled = 0;
        while filled < buf.len() {
            let word = mix(self.seed, 43, self.key, at / 8).to_le_bytes();
            let from = (at % 8) as usize;
            let n = (8 - from).min(buf.len() - filled);
            buf[filled..filled + n].copy_from_slice(&word[from..from + n]);
            filled += n;
            at += n as u64;
        }
    }

    fn mdat_header(&self) -> Vec<u8> {
        let rest = self.size - MP4_FTYP.len() as u64;
        match u32::try_from(rest) {
            Ok(n) => [&n.to_be_bytes()[..], b"mdat"].concat(),
            // Boxes past 4 GiB carry their size in a 64-bit field after the type.
            Err(_) => [&1u32.to_be_bytes()[..], b"mdat", &rest.to_be_bytes()[..]].concat(),
        }
    }

    fn overlay_jpeg(&self, buf: &mut [u8], offset: u64) {
        overlay(buf, offset, 0, &JPEG_HEAD);
        let padding_start = JPEG_HEAD.len() as u64;
        let padding_end = self.size - JPEG_TAIL.len() as u64;
        overlay(buf, offset, padding_end, &JPEG_TAIL);
        let end = offset + buf.len() as u64;
        if end <= padding_start || offset >= padding_end {
            return;
        }
        // Only the segments whose 4-byte header meets the buffer.
        let first = offset.saturating_sub(padding_start + COMMENT_HEADER - 1) / COMMENT_SEGMENT;
        let mut segment_start = padding_start + first * COMMENT_SEGMENT;
        while segment_start < end.min(padding_end) {
            let length = (padding_end - segment_start).min(COMMENT_SEGMENT) - 2;
            let [hi, lo] = (length as u16).to_be_bytes();
            overlay(buf, offset, segment_start, &[0xFF, 0xFE, hi, lo]);
            segment_start += COMMENT_SEGMENT;
        }
    }
}

/// `size` moved up, if need be, so that the padding splits into whole comment segments (the last
/// one needs room for its header).
fn jpeg_size(size: u64) -> u64 {
    let padding = size - JPEG_HEAD.len() as u64 - JPEG_TAIL.len() as u64;
    let last = padding % COMMENT_SEGMENT;
    if last > 0 && last < COMMENT_HEADER {
        size + COMMENT_HEADER - last
    } else {
        size
    }
}

/// Writes the part of `bytes` (which sit at file offset `at`) that falls in `buf` (which holds
/// the file from `buf_start`).
fn overlay(buf: &mut [u8], buf_start: u64, at: u64, bytes: &[u8]) {
    let buf_end = buf_start + buf.len() as u64;
    let bytes_end = at + bytes.len() as u64;
    let from = at.max(buf_start);
    let to = bytes_end.min(buf_end);
    if from >= to {
        return;
    }
    let dst = (from - buf_start) as usize..(to - buf_start) as usize;
    let src = (from - at) as usize..(to - at) as usize;
    buf[dst].copy_from_slice(&bytes[src]);
}

/// `(size, content type)` of the item at a CDN path or URL, with the sizes the simulator draws
/// when no `--video-bytes` is given.
pub fn media_bytes(seed: u64, url_or_path: &str) -> Result<(u64, &'static str), NotMediaPath> {
    let file = MediaFile::for_path(seed, url_or_path, None)?;
    Ok((file.size(), file.content_type()))
}

/// The SHA-256 (hex) of what the simulator serves for a CDN path or URL; `video_bytes` as given
/// to the simulator.
pub fn media_sha256(
    seed: u64,
    url_or_path: &str,
    video_bytes: Option<u64>,
) -> Result<String, NotMediaPath> {
    Ok(MediaFile::for_path(seed, url_or_path, video_bytes)?.sha256())
}

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range (none, several, or malformed: RFC 9110 lets a server ignore those).
    Whole,
    /// Bytes `start..end` (end exclusive).
    Part { start: u64, end: u64 },
    /// A range that starts past the end: 416.
    Unsatisfiable,
}

/// Reads one `bytes=a-b`, `bytes=a-` or `bytes=-n` range.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (number(first), number(last)) {
        (Some(start), _) if start >= size => RangeRequest::Unsatisfiable,
        (Some(start), None) if last.trim().is_empty() => RangeRequest::Part { start, end: size },
        (Some(start), Some(last)) if last >= start => RangeRequest::Part {
            start,
            end: last.saturating_add(1).min(size),
        },
        (None, Some(suffix)) if first.trim().is_empty() => {
            if suffix == 0 {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Part {
                    start: size.saturating_sub(suffix),
                    end: size,
                }
            }
        }
        _ => RangeRequest::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items() -> Vec<MediaItem> {
        vec![
            MediaItem::PostImage { post: 1_048_576 },
            MediaItem::CarouselImage {
                post: 1_048_577,
                child: 3,
            },
            MediaItem::PostVideo { post: 1_048_578 },
            MediaItem::ReelImage { pk: 100_000_812 },
            MediaItem::ReelVideo { pk: 100_000_812 },
            MediaItem::HighlightCover {
                user: 1_000_000,
                highlight: 2,
            },
            MediaItem::ProfilePicture { user: 1_000_000 },
            MediaItem::ProfilePictureHd { user: 1_000_000 },
            MediaItem::HashtagPicture {
                tag: "volcano".into(),
            },
        ]
    }

    #[test]
    fn every_item_round_trips_through_its_path_and_its_url() {
        let signer = UrlSigner::new(1);
        let urls = MediaUrls::new("http://127.0.0.1:9/", &signer, 0x6B00_0000);
        for item in items() {
            assert_eq!(MediaItem::from_path(&item.path()), Ok(item.clone()));
            let url = urls.url(&item);
            assert!(url.starts_with("http://127.0.0.1:9/v/t5"), "{url}");
            assert_eq!(MediaItem::from_path(&url), Ok(item.clone()), "{url}");
            let ext = if item.kind() == MediaKind::Video {
                ".mp4?"
            } else {
                ".jpg?"
            };
            assert!(
                url.contains(ext),
                "the extension stands before the query: {url}"
            );
            assert!(url.ends_with("&oe=6B000000"), "{url}");
        }
        for bad in [
            "/v/t51.2885-15/01048576_n.jpg",
            "/v/t51.2885-15/1048576_n.mp4",
            "/v/t50.2886-16/1048576_0_n.mp4",
            "/v/t51.2885-15/1048576_n.png",
            "/v/t51.2885-15/x/1048576_n.jpg",
            "/v/t51.2885-15/tag_Volcano.jpg",
            "/v/t51.2885-15/+5_n.jpg",
            "/p/1048576_n.jpg",
            "",
        ] {
            assert!(MediaItem::from_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signatures_check_the_path_and_the_expiry() {
        let signer = UrlSigner::new(7);
        let path = MediaItem::PostImage { post: 5 }.path();
        let oh = signer.sign(&path, 1000);
        assert_eq!(oh.len(), 32);
        let query = format!("stp=x&oh={oh}&oe=3E8");
        assert_eq!(signer.check(&path, &query, 1000), Ok(()));
        assert_eq!(
            signer.check(&path, &format!("oh={oh}&oe=3e8"), 999),
            Ok(()),
            "lower-case hex"
        );
        assert_eq!(
            signer.check(&path, &query, 1001),
            Err(UrlRefusal::SignatureExpired)
        );
        assert_eq!(
            signer.check(&path, &format!("oh={oh}&oe=3E9"), 0),
            Err(UrlRefusal::SignatureMismatch),
            "a moved expiry"
        );
        // A known answer, so that the rule in docs/simulator.md and this code cannot drift apart.
        assert_eq!(
            UrlSigner::new(1).sign("/v/t51.2885-15/1048576_n.jpg", 0x6B13_5400),
            "9a77544b4e4db3130ac96144b2def8c1"
        );
        let other = MediaItem::PostImage { post: 6 }.path();
        assert_eq!(
            signer.check(&other, &query, 0),
            Err(UrlRefusal::SignatureMismatch)
        );
        assert_eq!(
            UrlSigner::new(8).check(&path, &query, 0),
            Err(UrlRefusal::SignatureMismatch),
            "another seed"
        );
        for broken in ["", "oe=3E8", &format!("oh={oh}"), &format!("oh={oh}&oe=zz")] {
            assert_eq!(
                signer.check(&path, broken, 0),
                Err(UrlRefusal::SignatureMismatch),
                "{broken}"
            );
        }
    }

    #[test]
    fn expiry_is_stable_within_a_bucket_and_at_least_one_lifetime_away() {
        assert_eq!(expiry_for(0, 100), 200);
        assert_eq!(expiry_for(199, 100), 300);
        assert_eq!(expiry_for(100, 100), 300);
        for now in [0, 1, 99, 100, 12_345] {
            assert!(expiry_for(now, 100) >= now + 100);
        }
        assert_eq!(expiry_for(5, 0), 7, "a zero lifetime counts as one second");
    }

    #[test]
    fn files_have_their_magic_their_size_and_any_range_matches_the_whole() {
        for seed in [1, 2] {
            for item in items() {
                let file = MediaFile::new(seed, &item, None);
                let (low, high) = item.kind().size_range();
                assert!(
                    (low..=high + 3).contains(&file.size()),
                    "{item:?}: {}",
                    file.size()
                );
                let mut whole = vec![0u8; file.size() as usize];
                file.read_at(0, &mut whole);
                match item.kind() {
                    MediaKind::Video => {
                        assert_eq!(&whole[4..12], b"ftypisom");
                        assert_eq!(&whole[36..40], b"mdat");
                        let mdat = u32::from_be_bytes([whole[32], whole[33], whole[34], whole[35]]);
                        assert_eq!(u64::from(mdat) + 32, file.size());
                    }
                    _ => {
                        assert_eq!(&whole[..4], [0xFF, 0xD8, 0xFF, 0xE0]);
                        assert_eq!(&whole[6..11], b"JFIF\0");
                        assert_eq!(&whole[whole.len() - 2..], [0xFF, 0xD9]);
                        check_jpeg_segments(&whole);
                    }
                }
                // Across the first comment segment's end and the second one's header too.
                let pieces = [(0, 1), (3, 40), (65_555, 9), (file.size() - 5, 5)];
                for (start, len) in pieces.into_iter().filter(|(s, _)| *s + 9 <= file.size()) {
                    let mut part = vec![0u8; len];
                    file.read_at(start, &mut part);
                    let start = start as usize;
                    assert_eq!(part, whole[start..start + len], "{item:?} at {start}");
                }
            }
        }
    }

    /// Walks the markers from SOI to SOS by their lengths, as a decoder does.
    fn check_jpeg_segments(jpeg: &[u8]) {
        let mut at = 2;
        loop {
            assert_eq!(jpeg[at], 0xFF, "a marker at {at}");
            let marker = jpeg[at + 1];
            let length = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
            assert!(length >= 2);
            at += 2 + length;
            if marker == 0xDA {
                break;
            }
        }
        assert_eq!(at + 3, jpeg.len(), "the scan's byte and EOI follow SOS");
    }

    #[test]
    fn video_bytes_force_the_size_and_large_files_use_a_64_bit_box() {
        let item = MediaItem::PostVideo { post: 9 };
        let file = MediaFile::new(3, &item, Some(200_000_000));
        assert_eq!(file.size(), 200_000_000);
        let huge = MediaFile::new(3, &item, Some(5 << 30));
        let mut head = [0u8; 48];
        huge.read_at(0, &mut head);
        assert_eq!(&head[32..40], [0, 0, 0, 1, b'm', b'd', b'a', b't']);
        assert_eq!(
            u64::from_be_bytes(head[40..48].try_into().unwrap()),
            (5 << 30) - 32
        );
        let mut tail = [0u8; 16];
        huge.read_at(huge.size() - 8, &mut tail);
        assert_eq!(tail[8..], [0u8; 8], "nothing past the end is written");
    }

    #[test]
    fn the_same_seed_and_path_give_the_same_bytes_and_others_do_not() {
        let item = MediaItem::PostImage { post: 77 };
        let a = MediaFile::new(1, &item, None);
        assert_eq!(a.sha256(), MediaFile::new(1, &item, None).sha256());
        assert_ne!(a.sha256(), MediaFile::new(2, &item, None).sha256());
        assert_ne!(
            a.sha256(),
            MediaFile::new(1, &MediaItem::PostImage { post: 78 }, None).sha256()
        );
        assert_eq!(
            media_sha256(1, "http://h:1/v/t51.2885-15/77_n.jpg?oh=x&oe=1", None),
            Ok(a.sha256())
        );
        assert_eq!(media_bytes(1, &item.path()), Ok((a.size(), "image/jpeg")));
    }

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        use RangeRequest::*;
        let r = |h: &str| parse_range(Some(h), 100);
        assert_eq!(parse_range(None, 100), Whole);
        assert_eq!(r("bytes=0-9"), Part { start: 0, end: 10 });
        assert_eq!(
            r("bytes=90-"),
            Part {
                start: 90,
                end: 100
            }
        );
        assert_eq!(
            r("bytes=90-500"),
            Part {
                start: 90,
                end: 100
            }
        );
        assert_eq!(
            r("bytes=-10"),
            Part {
                start: 90,
                end: 100
            }
        );
        assert_eq!(r("bytes=-500"), Part { start: 0, end: 100 });
        assert_eq!(r("bytes=100-"), Unsatisfiable);
        assert_eq!(r("bytes=-0"), Unsatisfiable);
        for ignored in [
            "bytes=5-1",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=a-b",
            "bytes=+1-2",
        ] {
            assert_eq!(r(ignored), Whole, "{ignored}");
        }
    }
}
