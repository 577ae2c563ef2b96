//! Layered configuration: code defaults < `trawl.toml` (or `--config` / `TRAWL_CONFIG`) < `TRAWL_*`
//! environment variables (nested with `__`, e.g. `TRAWL_QUEUE__LEASE=2m`) < command-line flags.
//!
//! Unknown keys are refused, so a typo in a file or a variable name is an error and not a silently
//! ignored setting. Every error names the key, where the value came from and what was expected.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Metadata};
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::secret::{REDACTED, Secret, redact_url_password};

/// The file read when neither `--config` nor `TRAWL_CONFIG` names one (skipped when absent).
pub const DEFAULT_CONFIG_FILE: &str = "trawl.toml";
/// Environment variable naming the configuration file.
pub const CONFIG_FILE_ENV: &str = "TRAWL_CONFIG";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub scheduler: SchedulerConfig,
    pub queue: QueueConfig,
    pub client: ClientConfig,
    pub log: LogConfig,
    pub limiter: LimiterConfig,
    pub secrets: SecretsConfig,
    pub worker: WorkerConfig,
    pub instagram: InstagramConfig,
    pub media: MediaConfig,
    /// The v1 platform's API, for workers holding a v1 account.
    pub v1: V1ApiConfig,
    /// `trawl stream`: v1 realtime streams turned into jobs.
    pub stream: StreamConfig,
}

/// `trawl stream` (docs/stream.md): each process holds one v1 account's realtime stream and
/// queues the jobs its rules make of the events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub listen: SocketAddr,
    /// The stream's URL (`ws://` or `wss://`).
    pub url: String,
    /// Channels subscribed to: `feed`, `stories`, `notifications`.
    pub channels: Vec<String>,
    /// The stream lease: renewed at a third of it; another process takes over once it runs out.
    pub lease: HumanDuration,
    /// First wait before reconnecting; it doubles with each failure in a row, up to
    /// `reconnect_max`, with jitter.
    pub reconnect_min: HumanDuration,
    pub reconnect_max: HumanDuration,
    /// How long to wait for an account whose stream nobody holds.
    pub account_poll: HumanDuration,
    /// What becomes a job; an event no rule matches is counted and dropped.
    pub rules: Vec<StreamRule>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9102)),
            url: "ws://127.0.0.1:8443/v1/stream".into(),
            channels: vec!["feed".into(), "stories".into(), "notifications".into()],
            lease: HumanDuration::from_secs(30),
            reconnect_min: HumanDuration(Duration::from_millis(200)),
            reconnect_max: HumanDuration::from_secs(30),
            account_poll: HumanDuration::from_secs(5),
            rules: Vec::new(),
        }
    }
}

/// One rule: events of `event` (from `users`, of `notification_types`) queue a job of `kind`
/// whose target is the event's `target`, `delay` later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamRule {
    /// `new_post`, `new_story` or `notification`.
    pub event: String,
    /// User ids whose events match (the poster, or a notification's actor); empty: anyone's.
    #[serde(default)]
    pub users: Vec<String>,
    /// Notification types that match (`like`, `comment`, `follow`, `tag`); empty: every type.
    #[serde(default)]
    pub notification_types: Vec<String>,
    /// The job kind queued (a v1 kind).
    pub kind: String,
    /// Which of the event's ids is the target: `post`, `user` (the poster or the actor) or
    /// `account` (the stream's own account).
    pub target: String,
    /// How long after the event the job may run.
    #[serde(default)]
    pub delay: HumanDuration,
    #[serde(default)]
    pub priority: i16,
    /// Bounds the job's listing, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<u64>,
}

impl StreamRule {
    /// A rule with no filter, no delay and no bound.
    pub fn new(event: &str, kind: &str, target: &str) -> Self {
        Self {
            event: event.into(),
            users: Vec::new(),
            notification_types: Vec::new(),
            kind: kind.into(),
            target: target.into(),
            delay: HumanDuration::default(),
            priority: 0,
            max_items: None,
        }
    }
}

/// What a stream rule's `target` may name.
pub const STREAM_TARGETS: [&str; 3] = ["post", "user", "account"];
/// The events a stream rule may name.
pub const STREAM_EVENTS: [&str; 3] = ["new_post", "new_story", "notification"];

/// Where the v1 platform's REST API is, and how its listings are paged (docs/v1-client.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct V1ApiConfig {
    /// The API's base, up to and with its version (`https://api.example.com/api/v1`).
    pub base: String,
    pub request_timeout: HumanDuration,
    /// Items asked for per page (`count`): the document's maxima are 50, and 100 for followers.
    pub page_count: u32,
}

impl Default for V1ApiConfig {
    fn default() -> Self {
        Self {
            base: "http://127.0.0.1:8443/api/v1".into(),
            request_timeout: HumanDuration::from_secs(30),
            page_count: 50,
        }
    }
}

/// Downloaded media (pictures, videos): where the bytes go, and how politely each worker fetches
/// them. CDN downloads count in none of Instagram's query windows (the reference client's don't
/// either), so these limits are the only brake on them: per worker process, which holds one
/// account and so sends from one egress group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Where media bytes are kept (docs/media.md).
    pub store: BlobStoreConfig,
    /// Downloads one worker streams at once (at least 1).
    pub max_concurrent_downloads: usize,
    /// Bytes per second over all of one worker's downloads; unset: no cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<u64>,
    /// Tries per file within one attempt of a `media` job; a cut connection resumes from the
    /// byte it stopped at when the CDN serves ranges.
    pub download_tries: u32,
    /// A download that receives nothing for this long is cut and tried again.
    pub stall_timeout: HumanDuration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            store: BlobStoreConfig::default(),
            max_concurrent_downloads: 4,
            bytes_per_second: None,
            download_tries: 5,
            stall_timeout: HumanDuration::from_secs(30),
        }
    }
}

/// The content-addressed blob store (`trawl_shared::blobs`): a local directory, or an
/// S3-compatible bucket that a fleet of workers on many machines shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlobStoreConfig {
    /// `local` (default) or `s3`.
    pub backend: BlobBackend,
    /// The local store's root (default `data/media`, relative to the working directory, as
    /// `trawl.toml` is). With `backend = "s3"` uploads are spooled under `{path}/tmp` until
    /// their hash is known, so it must hold the largest blob times the uploads in flight.
    pub path: PathBuf,
    /// `http(s)://host:port` of an S3-compatible server; unset: AWS's endpoint for `region`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Required with `backend = "s3"`. The bucket must exist.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    pub region: String,
    /// Put before every key (`trawl/` gives `trawl/sha256/ab/cd/<hex>`); empty by default.
    pub prefix: String,
    /// Static credentials. Both or neither: with neither, the usual `AWS_*` variables and
    /// instance or web-identity credentials are used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<Secret>,
    /// `http://host/bucket/key` instead of `http://bucket.host/key`: most self-hosted
    /// S3-compatible servers need it; AWS prefers it off.
    pub path_style: bool,
    /// How long connecting to the server may take.
    pub connect_timeout: HumanDuration,
    /// How long one request may take, from connecting to the end of its body. Uploads go in
    /// parts of 6 MiB; a read that times out resumes where it stopped.
    pub request_timeout: HumanDuration,
    /// Retries of a failed request (connection errors, timeouts, 5xx), with exponential
    /// backoff, before the error reaches the caller.
    pub max_retries: u32,
}

/// Which backend a [`BlobStoreConfig`] selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobBackend {
    Local,
    S3,
}

impl Default for BlobStoreConfig {
    fn default() -> Self {
        Self {
            backend: BlobBackend::Local,
            path: PathBuf::from("data/media"),
            endpoint: None,
            bucket: None,
            region: "us-east-1".into(),
            prefix: String::new(),
            access_key_id: None,
            secret_access_key: None,
            path_style: false,
            connect_timeout: HumanDuration::from_secs(5),
            request_timeout: HumanDuration::from_secs(300),
            max_retries: 3,
        }
    }
}

impl BlobStoreConfig {
    /// Checks what serde cannot: `Err((key, message))` names the offending key as written in
    /// `trawl.toml`. Both the configuration loader and `BlobStore::open` run it.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.path.as_os_str().is_empty() {
            return Err(("media.store.path", "must not be empty".into()));
        }
        if self.connect_timeout.0 < Duration::from_millis(100) {
            return Err((
                "media.store.connect_timeout",
                "must be at least 100ms".into(),
            ));
        }
        if self.request_timeout.0 < Duration::from_secs(1) {
            return Err(("media.store.request_timeout", "must be at least 1s".into()));
        }
        if self.max_retries > 20 {
            return Err(("media.store.max_retries", "must be at most 20".into()));
        }
        if self.backend == BlobBackend::Local {
            return Ok(());
        }
        match self.bucket.as_deref() {
            None | Some("") => {
                return Err((
                    "media.store.bucket",
                    "must be set when media.store.backend is \"s3\"".into(),
                ));
            }
            Some(bucket) => {
                let allowed =
                    |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-';
                if !(3..=63).contains(&bucket.len()) || !bucket.bytes().all(allowed) {
                    return Err((
                        "media.store.bucket",
                        format!(
                            "expected 3 to 63 lower-case letters, digits, dots or hyphens, not {bucket:?}"
                        ),
                    ));
                }
            }
        }
        if self.region.is_empty() {
            return Err(("media.store.region", "must not be empty".into()));
        }
        if let Some(endpoint) = &self.endpoint {
            let rest = endpoint
                .strip_prefix("http://")
                .or_else(|| endpoint.strip_prefix("https://"));
            match rest {
                Some(host) if !host.is_empty() && !host.trim_end_matches('/').contains('/') => {}
                _ => {
                    return Err((
                        "media.store.endpoint",
                        format!("expected http(s)://host[:port] without a path, not {endpoint:?}"),
                    ));
                }
            }
        }
        let p = &self.prefix;
        if p.starts_with('/') || p.contains("//") || p.split('/').any(|s| s == "." || s == "..") {
            return Err((
                "media.store.prefix",
                format!(
                    "expected key segments without a leading slash, \"//\", \".\" or \"..\", not {p:?}"
                ),
            ));
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(_), None) => Err((
                "media.store.secret_access_key",
                "must be set when media.store.access_key_id is".into(),
            )),
            (None, Some(_)) => Err((
                "media.store.access_key_id",
                "must be set when media.store.secret_access_key is".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// The key that seals account passwords and sessions at rest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// 64 hex characters (`trawl accounts new-key` prints one). Workers and the `accounts` verbs
    /// refuse to run without it unless given `--insecure-dev-key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Secret>,
}

/// A worker process: one account, its jobs, its probes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    pub listen: SocketAddr,
    /// How long an account lease lasts without a heartbeat.
    pub account_lease: HumanDuration,
    /// How often a worker without an account asks for one.
    pub account_poll: HumanDuration,
    /// Jobs worked at once, which is also the most requests in flight for the account.
    pub concurrency: usize,
    /// Only these kinds (empty: every kind the account can do).
    pub kinds: Vec<String>,
    /// Longest a limiter wait is slept inside a job; a longer wait snoozes the job instead.
    pub max_inline_wait: HumanDuration,
    /// How long a stopping worker may take to finish or checkpoint its page.
    pub grace_period: HumanDuration,
    /// PostgreSQL connections a worker's pool may hold (instead of `database.max_connections`,
    /// which sizes the scheduler's). One is enough for `concurrency` 1: statements are short and
    /// the heartbeats wait milliseconds behind a page's transaction. Kept small so that a fleet
    /// fits the server's `max_connections` (docs/operations.md has the rule).
    pub db_connections: u32,
    /// Hold one more connection per job loop, listening for new jobs, so that an idle worker
    /// starts a submitted job at once instead of within `queue.poll_interval`.
    pub wake_on_notify: bool,
    /// How long an account rests (state `cooldown`) after Instagram said `feedback_required` or
    /// answered it with `cooldown_after_429s` 429s within `cooldown_window`. It returns to
    /// rotation by itself when the rest ends.
    pub cooldown: HumanDuration,
    /// 429s within `cooldown_window` that send the account to rest (0: 429s never do; each 429
    /// still snoozes its job).
    pub cooldown_after_429s: u32,
    pub cooldown_window: HumanDuration,
    /// How long a proxy that failed rests before a worker checks it again; each failed check in a
    /// row doubles it, up to `proxy_rest_max`.
    pub proxy_rest: HumanDuration,
    pub proxy_rest_max: HumanDuration,
    /// How long a proxy check (a bare tunnel to Instagram's host through it) may take.
    pub proxy_check_timeout: HumanDuration,
}

/// Where Instagram is and how the client treats it. The defaults are what Instaloader 4.16
/// sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InstagramConfig {
    /// Web host: REST, login and GraphQL (`https://www.instagram.com`).
    pub web_base: String,
    /// Mobile API base (`https://i.instagram.com`); requests go to `{mobile_base}/api/v1/...`.
    pub mobile_base: String,
    /// Tries per request before a job-level retry (Instaloader's `max_connection_attempts`).
    pub max_connection_attempts: u32,
    pub request_timeout: HumanDuration,
    /// First page length of paginated GraphQL queries; halved on a 400 while it stays >= 12.
    pub page_length: u32,
    /// Desktop browser `User-Agent` of web requests.
    pub user_agent: String,
    /// The web app's GraphQL `doc_id`s. Instagram retires them now and then; a job whose query
    /// Instagram refuses fails with the key to update here.
    pub doc_ids: DocIds,
    /// The older GraphQL `query_hash`es Instagram still answers.
    pub query_hashes: QueryHashes,
}

/// `doc_id`s of the web app's GraphQL queries (Instaloader 4.16's values by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DocIds {
    /// A profile's details by user id (the web app's profile page query).
    pub profile: String,
    /// A profile's posts as the logged-in web app pages them (`api/graphql`).
    pub profile_posts: String,
    /// A profile's posts after the page's first ones, logged out (`api/graphql`).
    pub profile_posts_logged_out: String,
    /// One post by its shortcode.
    pub post: String,
}

impl Default for DocIds {
    fn default() -> Self {
        Self {
            profile: "27937681195819736".into(),
            profile_posts: "29104886249145907".into(),
            profile_posts_logged_out: "28904005159232689".into(),
            post: "27128499623469141".into(),
        }
    }
}

impl DocIds {
    /// (configuration key, value) of every id, for validation and error messages.
    pub fn entries(&self) -> [(&'static str, &str); 4] {
        [
            ("instagram.doc_ids.profile", &self.profile),
            ("instagram.doc_ids.profile_posts", &self.profile_posts),
            (
                "instagram.doc_ids.profile_posts_logged_out",
                &self.profile_posts_logged_out,
            ),
            ("instagram.doc_ids.post", &self.post),
        ]
    }
}

/// `query_hash`es of the GraphQL queries Instagram still answers (Instaloader 4.16's values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryHashes {
    pub followers: String,
    pub followees: String,
    /// A post's comments, when it has no more than one page of them.
    pub comments: String,
    /// The replies of one comment, when its page did not carry all of them.
    pub comment_replies: String,
    pub hashtag_posts: String,
    /// Story reels by owner id.
    pub stories: String,
    /// A user's highlight reels.
    pub highlights: String,
    /// The items of one highlight.
    pub highlight_items: String,
}

impl Default for QueryHashes {
    fn default() -> Self {
        Self {
            followers: "37479f2b8209594dde7facb0d904896a".into(),
            followees: "58712303d941c6855d4e888c5f0cd22f".into(),
            comments: "97b41c52301f77ce508f55e66d17620e".into(),
            comment_replies: "51fdd02b67508306ad4484ff574a0b62".into(),
            hashtag_posts: "9b498c08113f1e09617a1703c22b2f32".into(),
            stories: "303a4ae99711322310f25250d988f3b7".into(),
            highlights: "7c16654f22c819fb63d1183034a5162f".into(),
            highlight_items: "45246d3fe16ccc6577e0bd297a5db1ab".into(),
        }
    }
}

impl QueryHashes {
    /// (configuration key, value) of every hash, for validation and error messages.
    pub fn entries(&self) -> [(&'static str, &str); 8] {
        [
            ("instagram.query_hashes.followers", &self.followers),
            ("instagram.query_hashes.followees", &self.followees),
            ("instagram.query_hashes.comments", &self.comments),
            (
                "instagram.query_hashes.comment_replies",
                &self.comment_replies,
            ),
            ("instagram.query_hashes.hashtag_posts", &self.hashtag_posts),
            ("instagram.query_hashes.stories", &self.stories),
            ("instagram.query_hashes.highlights", &self.highlights),
            (
                "instagram.query_hashes.highlight_items",
                &self.highlight_items,
            ),
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/database`. Its password is a secret.
    pub url: Secret,
    pub max_connections: u32,
    pub connect_timeout: HumanDuration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// A plaintext bearer token with every scope, for development set-ups. Production
    /// configuration lists hashed, scoped `tokens` instead (`trawl token new`). The scheduler
    /// refuses to start with neither.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_token: Option<Secret>,
    /// Accepted API tokens, by SHA-256 hash, each with its scopes (`read`, `submit`, `admin`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<crate::tokens::TokenEntry>,
    /// Largest request body accepted (bytes); larger bodies get 413.
    pub max_body_bytes: usize,
    /// How long a client may take to send a request's head (and an idle connection may wait for
    /// its next request) before the connection is closed.
    pub header_timeout: HumanDuration,
    /// How long a client may take to send a request's body before it is answered 408.
    pub body_timeout: HumanDuration,
    /// Most jobs in one batch submission.
    pub max_batch: usize,
    /// How often the leader rescues expired leases, prunes old jobs and refreshes queue metrics.
    pub maintenance_interval: HumanDuration,
    /// Finished jobs are removed this long after they finished.
    pub retention: HumanDuration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// How long a lease lasts without a heartbeat.
    pub lease: HumanDuration,
    /// First retry delay; each further attempt doubles it, up to `retry_max`, with ±25% jitter.
    pub retry_base: HumanDuration,
    pub retry_max: HumanDuration,
    /// Attempts a job gets when its submission does not say.
    pub default_max_attempts: i32,
    /// How often an idle leaser looks for work when no notification arrives.
    pub poll_interval: HumanDuration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// The scheduler the CLI verbs talk to.
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    pub timeout: HumanDuration,
}

/// The rate limiter's windows (docs/rate-limits.md). The defaults reproduce Instaloader, plus a
/// latency margin on the all-GraphQL window (ADR 0002); `LimiterConfig::instaloader()` is exact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimiterConfig {
    /// Multiplies every window, margin and the history (0.01 turns 11 minutes into 6.6 s).
    pub time_scale: f64,
    /// Grants per query type in `per_type_window` (every type but `other`).
    pub per_type_cap: u32,
    /// Grants of `other` in `per_type_window`.
    pub other_cap: u32,
    pub per_type_window: HumanDuration,
    pub per_type_margin: HumanDuration,
    /// Grants of all GraphQL types together in `graphql_window`.
    pub graphql_cap: u32,
    pub graphql_window: HumanDuration,
    pub graphql_margin: HumanDuration,
    /// Grants of `iphone` in `iphone_window`.
    pub iphone_cap: u32,
    pub iphone_window: HumanDuration,
    pub iphone_margin: HumanDuration,
    /// Grants older than this are forgotten.
    pub history: HumanDuration,
    /// Which windows apply to an egress group (the IP a set of accounts leaves from).
    pub egress: EgressWindows,
    /// Local pacing: burst of the per-type `governor` limiter.
    pub pacing_burst: u32,
    /// Local pacing: period between requests of one type; default (window + margin) / cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pacing_period: Option<HumanDuration>,
    /// Local pacing: up to this much random delay on each request.
    pub pacing_jitter: HumanDuration,
    /// The windows of platforms other than Instagram, by platform name, then by tier (the name
    /// of an endpoint class, which is the query type requests of that class count as). The v1
    /// API's tiers ship as the default `v1` platform; a configuration file may change one tier,
    /// add tiers, or add a platform, without code.
    pub platforms: std::collections::BTreeMap<String, PlatformWindows>,
}

/// The windows of one platform's API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformWindows {
    /// One window per tier: requests of that tier in any interval of `window`, per account.
    pub tiers: std::collections::BTreeMap<String, TierWindow>,
    /// A window several tiers count in together besides their own (as every Instagram GraphQL
    /// type counts in the all-GraphQL window): at most one per platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedWindow>,
}

/// A window the requests of `tiers` count in together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedWindow {
    pub tiers: Vec<String>,
    pub cap: u32,
    pub window: HumanDuration,
    #[serde(default)]
    pub margin: HumanDuration,
}

/// One tier's window, before `time_scale`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierWindow {
    pub cap: u32,
    pub window: HumanDuration,
    /// Added to a wait when the window is full (clock and latency differences with the server).
    #[serde(default)]
    pub margin: HumanDuration,
}

impl PlatformWindows {
    /// The v1 API's hourly tiers per account (docs/rate-limits.md): the API document's numbers
    /// for uploads, feed, search and follows, the simulator's for the classes it leaves out, each
    /// with a 1% margin as Instaloader keeps on its windows.
    pub fn v1() -> Self {
        let hour = HumanDuration::from_secs(3600);
        let margin = HumanDuration::from_secs(36);
        let tiers = [
            ("auth", 60),
            ("user_lookup", 200),
            ("feed", 200),
            ("media", 300),
            ("graph", 200),
            ("search", 100),
            ("notifications", 100),
            ("post_upload", 50),
            ("story_upload", 100),
            ("follow", 200),
            ("interaction", 200),
            ("stream", 60),
        ]
        .into_iter()
        .map(|(name, cap)| {
            (
                name.to_owned(),
                TierWindow {
                    cap,
                    window: hour,
                    margin,
                },
            )
        })
        .collect();
        Self {
            tiers,
            shared: None,
        }
    }
}

/// Windows applied to an egress scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EgressWindows {
    /// The account windows, counted across every account of the group (anonymous crawling).
    SameAsAccount,
    /// None: only accounts are limited.
    None,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self {
            graphql_margin: HumanDuration::from_secs(5),
            ..Self::instaloader()
        }
    }
}

impl LimiterConfig {
    /// Instaloader's arithmetic to the millisecond (docs/rate-limits.md), with no added margin.
    pub fn instaloader() -> Self {
        Self {
            time_scale: 1.0,
            per_type_cap: 200,
            other_cap: 75,
            per_type_window: HumanDuration::from_secs(660),
            per_type_margin: HumanDuration::from_secs(6),
            graphql_cap: 275,
            graphql_window: HumanDuration::from_secs(600),
            graphql_margin: HumanDuration::from_secs(0),
            iphone_cap: 199,
            iphone_window: HumanDuration::from_secs(1800),
            iphone_margin: HumanDuration::from_secs(18),
            history: HumanDuration::from_secs(3600),
            egress: EgressWindows::SameAsAccount,
            pacing_burst: 1,
            pacing_period: None,
            pacing_jitter: HumanDuration::from_millis(500),
            platforms: [("v1".to_owned(), PlatformWindows::v1())].into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `info` or `trawl_shared=debug,info`.
    pub filter: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("postgres://localhost/trawl"),
            max_connections: 10,
            connect_timeout: HumanDuration::from_secs(10),
        }
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            api_token: None,
            tokens: Vec::new(),
            max_body_bytes: 2 * 1024 * 1024,
            header_timeout: HumanDuration::from_secs(10),
            body_timeout: HumanDuration::from_secs(30),
            max_batch: 10_000,
            maintenance_interval: HumanDuration::from_secs(5),
            retention: HumanDuration::from_secs(7 * 86_400),
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            lease: HumanDuration::from_secs(120),
            retry_base: HumanDuration::from_secs(30),
            retry_max: HumanDuration::from_secs(3600),
            default_max_attempts: 5,
            poll_interval: HumanDuration::from_secs(5),
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8080".into(),
            token: None,
            timeout: HumanDuration::from_secs(30),
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            account_lease: HumanDuration::from_secs(60),
            account_poll: HumanDuration::from_secs(2),
            concurrency: 1,
            kinds: Vec::new(),
            max_inline_wait: HumanDuration::from_secs(60),
            grace_period: HumanDuration::from_secs(30),
            db_connections: 1,
            wake_on_notify: false,
            cooldown: HumanDuration::from_secs(30 * 60),
            cooldown_after_429s: 3,
            cooldown_window: HumanDuration::from_secs(10 * 60),
            proxy_rest: HumanDuration::from_secs(30),
            proxy_rest_max: HumanDuration::from_secs(10 * 60),
            proxy_check_timeout: HumanDuration::from_secs(5),
        }
    }
}

impl Default for InstagramConfig {
    fn default() -> Self {
        Self {
            web_base: "https://www.instagram.com".into(),
            mobile_base: "https://i.instagram.com".into(),
            max_connection_attempts: 3,
            request_timeout: HumanDuration::from_secs(30),
            page_length: 12,
            user_agent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 \
                         (KHTML, like Gecko) Chrome/142.0.0.0 Safari/537.36"
                .into(),
            doc_ids: DocIds::default(),
            query_hashes: QueryHashes::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Why configuration could not be loaded. Each message names the key and the source.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path} does not exist")]
    MissingFile { path: PathBuf },
    #[error("{}", format_figment_error(.0))]
    Invalid(Box<figment::Error>),
    #[error("invalid value for {key} (from {source_name}): {message}")]
    OutOfRange {
        key: String,
        source_name: String,
        message: String,
    },
}

fn format_figment_error(err: &figment::Error) -> String {
    let mut lines = Vec::new();
    for e in err.clone() {
        let key = if e.path.is_empty() {
            "(top level)".to_owned()
        } else {
            e.path.join(".")
        };
        let source = e
            .metadata
            .as_ref()
            .map(describe_source)
            .unwrap_or_else(|| "unknown source".into());
        lines.push(format!(
            "invalid configuration at {key} (from {source}): {}",
            e.kind
        ));
    }
    lines.join("\n")
}

fn describe_source(meta: &Metadata) -> String {
    match &meta.source {
        Some(figment::Source::File(path)) => format!("file {}", path.display()),
        Some(figment::Source::Custom(s)) => s.clone(),
        _ => meta.name.to_string(),
    }
}

/// A configuration being assembled: defaults, then file, then environment, then flags.
pub struct ConfigLoader {
    file: Option<PathBuf>,
    env: bool,
    flags: Vec<(&'static str, figment::value::Value)>,
}

impl ConfigLoader {
    /// `file`: the `--config` flag. When `None`, `TRAWL_CONFIG` or `./trawl.toml` (if present).
    pub fn new(file: Option<PathBuf>) -> Self {
        Self {
            file,
            env: true,
            flags: Vec::new(),
        }
    }

    /// Skips the environment layer (tests use this to stay independent of the caller's shell).
    pub fn without_env(mut self) -> Self {
        self.env = false;
        self
    }

    /// A command-line flag that overrides `key` (dotted, e.g. `scheduler.listen`).
    pub fn flag(mut self, key: &'static str, value: impl Serialize) -> Self {
        if let Ok(v) = figment::value::Value::serialize(value) {
            self.flags.push((key, v));
        }
        self
    }

    pub fn flag_opt<T: Serialize>(self, key: &'static str, value: Option<T>) -> Self {
        match value {
            Some(v) => self.flag(key, v),
            None => self,
        }
    }

    pub fn figment(&self) -> Result<Figment, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        let env_file = if self.env {
            std::env::var_os(CONFIG_FILE_ENV).map(PathBuf::from)
        } else {
            None
        };
        match self.file.clone().or(env_file) {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::MissingFile { path });
                }
                figment = figment.merge(Toml::file_exact(path));
            }
            None => {
                if Path::new(DEFAULT_CONFIG_FILE).exists() {
                    figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_FILE));
                }
            }
        }
        if self.env {
            figment = figment.merge(Env::prefixed("TRAWL_").split("__").ignore(&["config"]));
        }
        for (key, value) in &self.flags {
            figment = figment.merge(Serialized::default(key, value.clone()));
        }
        Ok(figment)
    }

    pub fn load(&self) -> Result<Config, ConfigError> {
        self.load_with(|_| Ok(()))
    }

    /// [`ConfigLoader::load`] plus a check the caller owns (one that needs a crate this one does
    /// not depend on, such as the log filter's syntax): `Err((key, message))` becomes an error
    /// that names the key and where its value came from.
    pub fn load_with(
        &self,
        check: impl FnOnce(&Config) -> Result<(), (&'static str, String)>,
    ) -> Result<Config, ConfigError> {
        let figment = self.figment()?;
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(Box::new(e)))?;
        config.check_ranges(&figment)?;
        if let Err((key, message)) = check(&config) {
            return Err(ConfigError::OutOfRange {
                key: key.to_owned(),
                source_name: figment
                    .find_metadata(key)
                    .map(describe_source)
                    .unwrap_or_else(|| "defaults".into()),
                message,
            });
        }
        Ok(config)
    }
}

impl Config {
    /// Reads `text` as a configuration file is read (over the defaults, with no environment and
    /// no flags) and checks it as [`ConfigLoader::load`] does. The fuzz target `config` uses it.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let figment =
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text));
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(Box::new(e)))?;
        config.check_ranges(&figment)?;
        Ok(config)
    }

    fn check_ranges(&self, figment: &Figment) -> Result<(), ConfigError> {
        let fail = |key: &str, message: String| {
            let source_name = figment
                .find_metadata(key)
                .map(describe_source)
                .unwrap_or_else(|| "defaults".into());
            Err(ConfigError::OutOfRange {
                key: key.to_owned(),
                source_name,
                message,
            })
        };
        if self.database.max_connections == 0 {
            return fail("database.max_connections", "must be at least 1".into());
        }
        if !self.database.url.expose().starts_with("postgres://")
            && !self.database.url.expose().starts_with("postgresql://")
        {
            return fail(
                "database.url",
                "expected a URL starting with postgres:// or postgresql://".into(),
            );
        }
        if let Err(e) = crate::primary::HostList::parse(self.database.url.expose()) {
            return fail("database.url", e.to_string());
        }
        if self.queue.lease.0 < Duration::from_millis(100) {
            return fail("queue.lease", "must be at least 100ms".into());
        }
        if self.queue.poll_interval.0 < Duration::from_millis(10) {
            return fail("queue.poll_interval", "must be at least 10ms".into());
        }
        if self.queue.retry_max.0 < self.queue.retry_base.0 {
            return fail(
                "queue.retry_max",
                format!(
                    "must not be shorter than queue.retry_base ({})",
                    self.queue.retry_base
                ),
            );
        }
        if !(1..=crate::domain::MAX_ATTEMPTS_LIMIT).contains(&self.queue.default_max_attempts) {
            return fail(
                "queue.default_max_attempts",
                format!(
                    "must be between 1 and {}",
                    crate::domain::MAX_ATTEMPTS_LIMIT
                ),
            );
        }
        if self.scheduler.max_batch == 0 {
            return fail("scheduler.max_batch", "must be at least 1".into());
        }
        if self.media.max_concurrent_downloads == 0 {
            return fail(
                "media.max_concurrent_downloads",
                "must be at least 1".into(),
            );
        }
        if self.media.download_tries == 0 {
            return fail("media.download_tries", "must be at least 1".into());
        }
        if self.media.bytes_per_second == Some(0) {
            return fail(
                "media.bytes_per_second",
                "must be at least 1 (leave it out for no cap)".into(),
            );
        }
        if self.media.stall_timeout.0 < std::time::Duration::from_secs(1) {
            return fail("media.stall_timeout", "must be at least 1s".into());
        }
        if self.scheduler.max_body_bytes < 1024 {
            return fail("scheduler.max_body_bytes", "must be at least 1024".into());
        }
        for (key, value) in [
            ("scheduler.header_timeout", self.scheduler.header_timeout.0),
            ("scheduler.body_timeout", self.scheduler.body_timeout.0),
        ] {
            if value < Duration::from_millis(100) {
                return fail(key, "must be at least 100ms".into());
            }
        }
        if self.scheduler.maintenance_interval.0 < Duration::from_millis(10) {
            return fail(
                "scheduler.maintenance_interval",
                "must be at least 10ms".into(),
            );
        }
        let l = &self.limiter;
        if !(l.time_scale.is_finite() && l.time_scale > 0.0 && l.time_scale <= 100.0) {
            return fail(
                "limiter.time_scale",
                "must be above 0 and at most 100".into(),
            );
        }
        for (key, cap) in [
            ("limiter.per_type_cap", l.per_type_cap),
            ("limiter.other_cap", l.other_cap),
            ("limiter.graphql_cap", l.graphql_cap),
            ("limiter.iphone_cap", l.iphone_cap),
            ("limiter.pacing_burst", l.pacing_burst),
        ] {
            if cap == 0 {
                return fail(key, "must be at least 1".into());
            }
        }
        for (key, window) in [
            ("limiter.per_type_window", l.per_type_window),
            ("limiter.graphql_window", l.graphql_window),
            ("limiter.iphone_window", l.iphone_window),
        ] {
            if window.0.is_zero() {
                return fail(key, "must be longer than 0".into());
            }
        }
        for (platform, windows) in &l.platforms {
            let refuse = |message: String| fail("limiter.platforms", message);
            if !is_tier_name(platform)
                || ["qh", "doc", "iphone", "other"].contains(&platform.as_str())
            {
                return refuse(format!(
                    "{platform:?}: a platform name is lowercase letters, digits and _, \
                     and not qh, doc, iphone or other"
                ));
            }
            if windows.tiers.is_empty() {
                return refuse(format!("{platform}: names no tier"));
            }
            for (tier, w) in &windows.tiers {
                if !is_tier_name(tier) {
                    return refuse(format!(
                        "{platform}.tiers.{tier:?}: a tier name is lowercase letters, digits and _"
                    ));
                }
                if w.cap == 0 {
                    return refuse(format!("{platform}.tiers.{tier}.cap: must be at least 1"));
                }
                if w.window.0.is_zero() {
                    return refuse(format!(
                        "{platform}.tiers.{tier}.window: must be longer than 0"
                    ));
                }
            }
            if let Some(shared) = &windows.shared {
                if let Some(unknown) = shared
                    .tiers
                    .iter()
                    .find(|t| !windows.tiers.contains_key(*t))
                {
                    return refuse(format!(
                        "{platform}.shared.tiers: {unknown:?} is not one of {platform}'s tiers"
                    ));
                }
                if shared.tiers.is_empty() || shared.cap == 0 || shared.window.0.is_zero() {
                    return refuse(format!(
                        "{platform}.shared: needs tiers, a cap of at least 1 and a window"
                    ));
                }
            }
        }
        if l.history.0 < l.iphone_window.0.max(l.per_type_window.0) {
            return fail(
                "limiter.history",
                "must be at least as long as the longest window".into(),
            );
        }
        if !(1..=64).contains(&self.worker.db_connections) {
            return fail("worker.db_connections", "must be between 1 and 64".into());
        }
        if !(1..=64).contains(&self.worker.concurrency) {
            return fail("worker.concurrency", "must be between 1 and 64".into());
        }
        for kind in &self.worker.kinds {
            if let Err(e) = kind.parse::<crate::domain::JobKind>() {
                return fail("worker.kinds", e.to_string());
            }
        }
        if self.worker.cooldown.0 < Duration::from_secs(1) {
            return fail("worker.cooldown", "must be at least 1s".into());
        }
        if self.worker.cooldown_after_429s > 0 && self.worker.cooldown_window.0.is_zero() {
            return fail(
                "worker.cooldown_window",
                "must be above 0 when worker.cooldown_after_429s is".into(),
            );
        }
        if self.worker.proxy_rest.0 < Duration::from_millis(100)
            || self.worker.proxy_rest_max.0 < self.worker.proxy_rest.0
        {
            return fail(
                "worker.proxy_rest",
                "must be at least 100ms, and worker.proxy_rest_max at least as long".into(),
            );
        }
        if self.worker.proxy_check_timeout.0 < Duration::from_millis(100) {
            return fail(
                "worker.proxy_check_timeout",
                "must be at least 100ms".into(),
            );
        }
        if self.worker.account_lease.0 < Duration::from_millis(500) {
            return fail("worker.account_lease", "must be at least 500ms".into());
        }
        let i = &self.instagram;
        for (key, url) in [
            ("instagram.web_base", &i.web_base),
            ("instagram.mobile_base", &i.mobile_base),
            ("v1.base", &self.v1.base),
        ] {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.ends_with('/') {
                return fail(
                    key,
                    "expected an http:// or https:// URL without a trailing slash".into(),
                );
            }
        }
        if !(1..=20).contains(&i.max_connection_attempts) {
            return fail(
                "instagram.max_connection_attempts",
                "must be between 1 and 20".into(),
            );
        }
        if !(12..=50).contains(&i.page_length) {
            return fail("instagram.page_length", "must be between 12 and 50".into());
        }
        if !(1..=50).contains(&self.v1.page_count) {
            return fail("v1.page_count", "must be between 1 and 50".into());
        }
        if let Err((key, reason)) = self.stream.check() {
            return fail(&key, reason);
        }
        for (key, id) in i.doc_ids.entries() {
            if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_digit()) {
                return fail(key, format!("expected a doc_id of digits, not {id:?}"));
            }
        }
        for (key, hash) in i.query_hashes.entries() {
            if hash.len() != 32 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return fail(
                    key,
                    format!("expected a query_hash of 32 hex digits, not {hash:?}"),
                );
            }
        }
        let url = &self.client.url;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return fail(
                "client.url",
                "expected the scheduler's http:// or https:// URL".into(),
            );
        }
        for (key, value) in [
            ("client.timeout", self.client.timeout.0),
            ("database.connect_timeout", self.database.connect_timeout.0),
            (
                "instagram.request_timeout",
                self.instagram.request_timeout.0,
            ),
        ] {
            if value < Duration::from_millis(100) {
                return fail(key, "must be at least 100ms".into());
            }
        }
        if let Err((key, message)) = self.media.store.check() {
            // A missing setting has no source of its own: name the one that chose the backend.
            let source_name = figment
                .find_metadata(key)
                .or_else(|| figment.find_metadata("media.store.backend"))
                .map(describe_source)
                .unwrap_or_else(|| "defaults".into());
            return Err(ConfigError::OutOfRange {
                key: key.to_owned(),
                source_name,
                message,
            });
        }
        if let Some(key) = &self.secrets.key
            && let Err(e) = crate::crypto::SecretBox::from_hex(key.expose())
        {
            return fail("secrets.key", e.to_string());
        }
        if matches!(&self.scheduler.api_token, Some(t) if t.is_empty()) {
            return fail("scheduler.api_token", "must not be empty when set".into());
        }
        if let Err(e) = crate::tokens::TokenSet::new(
            &self.scheduler.tokens,
            self.scheduler.api_token.as_ref().map(Secret::expose),
        ) {
            return fail("scheduler.tokens", e.to_string());
        }
        Ok(())
    }

    /// The configuration as it may be shown to people: every secret replaced by `********`.
    pub fn redacted(&self) -> Config {
        let mut shown = self.clone();
        shown.database.url = Secret::new(redact_url_password(self.database.url.expose()));
        if shown.scheduler.api_token.is_some() {
            shown.scheduler.api_token = Some(Secret::new(REDACTED));
        }
        if shown.client.token.is_some() {
            shown.client.token = Some(Secret::new(REDACTED));
        }
        if shown.secrets.key.is_some() {
            shown.secrets.key = Some(Secret::new(REDACTED));
        }
        if shown.media.store.secret_access_key.is_some() {
            shown.media.store.secret_access_key = Some(Secret::new(REDACTED));
        }
        shown
    }

    /// The redacted configuration as TOML, for `trawl config show`.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(&self.redacted())
            .unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

/// Platform and tier names: they become ledger keys (`platform:tier`) and metric-free labels.
fn is_tier_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl StreamConfig {
    /// Every problem names its key (`stream.rules[2].kind`).
    fn check(&self) -> Result<(), (String, String)> {
        let key = |k: &str| format!("stream.{k}");
        if !(self.url.starts_with("ws://") || self.url.starts_with("wss://")) {
            return Err((key("url"), "expected a ws:// or wss:// URL".into()));
        }
        if self.channels.is_empty() {
            return Err((key("channels"), "name at least one channel".into()));
        }
        for c in &self.channels {
            if !["feed", "stories", "notifications"].contains(&c.as_str()) {
                return Err((
                    key("channels"),
                    format!("unknown channel {c:?}: feed, stories or notifications"),
                ));
            }
        }
        if self.lease.0 < Duration::from_millis(500) {
            return Err((key("lease"), "must be at least 500ms".into()));
        }
        if self.reconnect_min.0 < Duration::from_millis(10)
            || self.reconnect_max.0 < self.reconnect_min.0
        {
            return Err((
                key("reconnect_min"),
                "must be at least 10ms, and stream.reconnect_max at least as long".into(),
            ));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let field = |f: &str| format!("stream.rules[{i}].{f}");
            if !STREAM_EVENTS.contains(&rule.event.as_str()) {
                return Err((
                    field("event"),
                    format!(
                        "unknown event {:?}: new_post, new_story or notification",
                        rule.event
                    ),
                ));
            }
            let kind: crate::JobKind = rule
                .kind
                .parse()
                .map_err(|e: crate::domain::UnknownKind| (field("kind"), e.to_string()))?;
            if kind.platform() != crate::Platform::V1 {
                return Err((
                    field("kind"),
                    format!("{kind} is not a v1 kind: a stream queues v1 jobs"),
                ));
            }
            if !STREAM_TARGETS.contains(&rule.target.as_str()) {
                return Err((
                    field("target"),
                    format!("unknown target {:?}: post, user or account", rule.target),
                ));
            }
            let wants_account = kind.reads_own_account();
            if wants_account != (rule.target == "account") {
                return Err((
                    field("target"),
                    format!(
                        "{kind} takes {}, not the event's {}",
                        if wants_account {
                            "the stream's account (target = \"account\")"
                        } else {
                            "an id or a text"
                        },
                        rule.target
                    ),
                ));
            }
            if rule.target == "post" && rule.event == "new_story" {
                return Err((field("target"), "a new_story event names no post".into()));
            }
            if !rule.notification_types.is_empty() && rule.event != "notification" {
                return Err((
                    field("notification_types"),
                    "only applies to notification events".into(),
                ));
            }
            if let Some(bad) = rule
                .users
                .iter()
                .find(|u| u.is_empty() || u.len() > 20 || !u.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err((
                    field("users"),
                    format!("{bad:?} is not a user id (1 to 20 digits)"),
                ));
            }
            if rule.max_items == Some(0) {
                return Err((field("max_items"), "must be at least 1".into()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(contents: &str) -> tempfile_like::TempFile {
        tempfile_like::TempFile::new(contents)
    }

    /// Loads a configuration file of `contents`, which must be refused; returns the file (kept
    /// until the caller is done) and the error's text.
    fn refusal(contents: &str) -> (tempfile_like::TempFile, String) {
        let f = file(contents);
        let err = ConfigLoader::new(Some(f.0.clone()))
            .without_env()
            .load()
            .unwrap_err()
            .to_string();
        (f, err)
    }

    /// A minimal temporary file, so the tests need no extra crate.
    mod tempfile_like {
        use std::path::PathBuf;
        pub struct TempFile(pub PathBuf);
        impl TempFile {
            pub fn new(contents: &str) -> Self {
                let path = std::env::temp_dir().join(format!(
                    "trawl-config-test-{}-{}.toml",
                    std::process::id(),
                    rand::random::<u64>()
                ));
                std::fs::write(&path, contents).expect("write temp config");
                Self(path)
            }
        }
        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn later_layers_win() {
        let f =
            file("[queue]\nlease = \"3m\"\npoll_interval = \"2s\"\n[scheduler]\nmax_batch = 50\n");
        let cfg = ConfigLoader::new(Some(f.0.clone()))
            .without_env()
            .flag("queue.poll_interval", "750ms")
            .load()
            .unwrap();
        assert_eq!(
            cfg.queue.lease.0,
            Duration::from_secs(180),
            "file beats default"
        );
        assert_eq!(
            cfg.queue.poll_interval.0,
            Duration::from_millis(750),
            "flag beats file"
        );
        assert_eq!(cfg.scheduler.max_batch, 50);
        assert_eq!(
            cfg.queue.retry_base,
            QueueConfig::default().retry_base,
            "default kept"
        );
    }

    #[test]
    fn a_wrong_type_names_key_and_file() {
        let (f, err) = refusal("[scheduler]\nmax_batch = \"many\"\n");
        assert!(err.contains("scheduler.max_batch"), "{err}");
        assert!(err.contains(&f.0.display().to_string()), "{err}");
        assert!(err.contains("expected"), "{err}");
    }

    #[test]
    fn a_host_list_is_accepted_and_an_empty_host_in_it_is_refused() {
        let f = file("[database]\nurl = \"postgres://trawl:pw@db1:5432,db2:5432/trawl\"\n");
        let cfg = ConfigLoader::new(Some(f.0.clone()))
            .without_env()
            .load()
            .unwrap();
        assert!(cfg.database.url.expose().contains("db1:5432,db2:5432"));
        let (_f, err) = refusal("[database]\nurl = \"postgres://trawl:pw@db1:5432,,db2/trawl\"\n");
        assert!(
            err.contains("database.url") && err.contains("empty host"),
            "{err}"
        );
        assert!(!err.contains(":pw@"), "no password in the error: {err}");
    }

    #[test]
    fn stream_rules_are_read_and_a_bad_one_is_refused_by_its_index() {
        let good = "[[stream.rules]]\nevent = \"new_post\"\nusers = [\"42\"]\n\
                    kind = \"v1_post\"\ntarget = \"post\"\ndelay = \"5m\"\n";
        let f = file(good);
        let cfg = ConfigLoader::new(Some(f.0.clone()))
            .without_env()
            .load()
            .unwrap();
        assert_eq!(cfg.stream.rules.len(), 1);
        assert_eq!(cfg.stream.rules[0].delay.0, Duration::from_secs(300));
        for (rule, key, says) in [
            (
                "event = \"new_post\"\nkind = \"profile\"\ntarget = \"user\"",
                "rules[1].kind",
                "not a v1 kind",
            ),
            (
                "event = \"new_post\"\nkind = \"v1_pots\"\ntarget = \"post\"",
                "rules[1].kind",
                "unknown job kind",
            ),
            (
                "event = \"new_like\"\nkind = \"v1_post\"\ntarget = \"post\"",
                "rules[1].event",
                "unknown event",
            ),
            (
                "event = \"new_story\"\nkind = \"v1_post\"\ntarget = \"post\"",
                "rules[1].target",
                "names no post",
            ),
            (
                "event = \"new_post\"\nkind = \"v1_feed\"\ntarget = \"user\"",
                "rules[1].target",
                "stream's account",
            ),
            (
                "event = \"new_post\"\nkind = \"v1_user\"\ntarget = \"user\"\nusers = [\"bob\"]",
                "rules[1].users",
                "not a user id",
            ),
        ] {
            let (_f, err) = refusal(&format!("{good}[[stream.rules]]\n{rule}\n"));
            assert!(
                err.contains(&format!("stream.{key}")) && err.contains(says),
                "{rule}: {err}"
            );
        }
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let (_f, err) = refusal("[queue]\nleese = \"3m\"\n");
        assert!(err.contains("leese"), "{err}");
    }

    #[test]
    fn a_bad_duration_and_a_range_error_name_the_key() {
        let (_f, err) = refusal("[queue]\nlease = \"soon\"\n");
        assert!(
            err.contains("queue.lease") && err.contains("invalid duration"),
            "{err}"
        );

        let (f, err) = refusal("[database]\nmax_connections = 0\n");
        assert!(err.contains("database.max_connections"), "{err}");
        assert!(err.contains(&f.0.display().to_string()), "{err}");
    }

    #[test]
    fn a_toml_syntax_error_is_reported() {
        let (f, err) = refusal("[queue\nlease = 3\n");
        assert!(err.contains(&f.0.display().to_string()), "{err}");
    }

    #[test]
    fn the_shipped_example_file_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../trawl.example.toml");
        let cfg = ConfigLoader::new(Some(path.into()))
            .without_env()
            .load()
            .unwrap();
        assert_eq!(cfg.queue.lease.0, Duration::from_secs(120));
        assert_eq!(cfg.scheduler.retention.0, Duration::from_secs(7 * 86_400));
        assert_eq!(cfg.media, MediaConfig::default());
    }

    #[test]
    fn the_media_store_is_checked_and_its_secret_redacted() {
        let f = file(
            "[media.store]\nbackend = \"s3\"\nbucket = \"media\"\naccess_key_id = \"AKID\"\nsecret_access_key = \"s3-secret-123\"\n",
        );
        let cfg = ConfigLoader::new(Some(f.0.clone()))
            .without_env()
            .load()
            .unwrap();
        assert_eq!(cfg.media.store.backend, BlobBackend::S3);
        let shown = cfg.to_redacted_toml();
        assert!(!shown.contains("s3-secret-123"), "{shown}");
        assert!(shown.contains("secret_access_key"), "{shown}");

        // A bucket left out is blamed on the file that chose S3.
        let (f, err) = refusal("[media.store]\nbackend = \"s3\"\n");
        assert!(err.contains("media.store.bucket"), "{err}");
        assert!(err.contains(&f.0.display().to_string()), "{err}");
    }

    #[test]
    fn a_missing_named_file_is_an_error() {
        let err = ConfigLoader::new(Some("/nonexistent/trawl.toml".into()))
            .without_env()
            .load()
            .unwrap_err();
        assert!(matches!(err, ConfigError::MissingFile { .. }));
    }

    #[test]
    fn show_redacts_every_secret() {
        let f = file(
            "[database]\nurl = \"postgres://u:pw-123@h/db\"\n[scheduler]\napi_token = \"tok-456\"\n[client]\ntoken = \"tok-789\"\n",
        );
        let cfg = ConfigLoader::new(Some(f.0.clone()))
            .without_env()
            .load()
            .unwrap();
        assert_eq!(
            cfg.scheduler.api_token.as_ref().unwrap().expose(),
            "tok-456"
        );
        let shown = cfg.to_redacted_toml();
        for secret in ["pw-123", "tok-456", "tok-789"] {
            assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
        }
        assert!(shown.contains("postgres://u:********@h/db"), "{shown}");
    }

    #[test]
    fn toml_text_loads_as_the_same_file_does() {
        let text = include_str!("../../trawl.example.toml");
        let f = file(text);
        let from_file = ConfigLoader::new(Some(f.0.clone()))
            .without_env()
            .load()
            .unwrap();
        assert_eq!(Config::from_toml_str(text).unwrap(), from_file);
        let err = Config::from_toml_str("[queue]\nlease = \"50ms\"\n").unwrap_err();
        assert!(err.to_string().contains("queue.lease"), "{err}");
    }

    /// Found by the fuzz target `config` (fuzz/corpus/config/regression-sub-millisecond): a
    /// duration below a millisecond loaded, but written back out (`config show`) it read as
    /// another value.
    #[test]
    fn a_loaded_configuration_written_out_loads_the_same() {
        let text = "[queue]\nlease = \"120.0000005s\"\n";
        let config = Config::from_toml_str(text).unwrap();
        let written = toml::to_string(&config).unwrap();
        assert_eq!(
            Config::from_toml_str(&written).unwrap(),
            config,
            "{written}"
        );
    }
}
