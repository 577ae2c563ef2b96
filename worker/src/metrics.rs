//! The worker's metrics (docs/metrics.md): labels from closed sets only (query-type class, outcome, job
//! kind, item kind), every known label set registered at zero. Usernames, targets and URLs go to
//! tracing spans, never here.

use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
};
use trawl_shared::JobKind;
use trawl_shared::limiter::QueryClass;

/// How one request to Instagram ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    NotFound,
    Forbidden,
    RateLimited,
    Checkpoint,
    FeedbackRequired,
    LoginRequired,
    BadRequest,
    ServerError,
    InvalidJson,
    Transport,
}

impl Outcome {
    pub const ALL: [Outcome; 11] = [
        Outcome::Ok,
        Outcome::NotFound,
        Outcome::Forbidden,
        Outcome::RateLimited,
        Outcome::Checkpoint,
        Outcome::FeedbackRequired,
        Outcome::LoginRequired,
        Outcome::BadRequest,
        Outcome::ServerError,
        Outcome::InvalidJson,
        Outcome::Transport,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotFound => "not_found",
            Outcome::Forbidden => "forbidden",
            Outcome::RateLimited => "rate_limited",
            Outcome::Checkpoint => "checkpoint",
            Outcome::FeedbackRequired => "feedback_required",
            Outcome::LoginRequired => "login_required",
            Outcome::BadRequest => "bad_request",
            Outcome::ServerError => "server_error",
            Outcome::InvalidJson => "invalid_json",
            Outcome::Transport => "transport_error",
        }
    }
}

/// How one job attempt ended on this worker.
pub const JOB_OUTCOMES: [&str; 5] = ["completed", "failed", "retried", "snoozed", "released"];
/// What a crawler stores.
pub const ITEM_KINDS: [&str; 14] = [
    "user",
    "post",
    "comment",
    "follow",
    "story",
    "hashtag_post",
    "v1_user",
    "v1_post",
    "v1_comment",
    "v1_follow",
    "v1_story",
    "v1_notification",
    "v1_hashtag",
    "v1_location",
];

/// How a media file's fetch ended.
pub const MEDIA_OUTCOMES: [&str; 3] = ["stored", "already_stored", "failed"];
/// Why a media fetch failed (one attempt: the job may retry).
pub const MEDIA_FAILURES: [&str; 7] = [
    "expired",
    "gone",
    "http",
    "transport",
    "corrupt",
    "store",
    "proxy",
];

pub struct WorkerMetrics {
    pub registry: Registry,
    /// Bytes of media received from the CDN (every attempt's, resumed ranges included).
    pub media_bytes: prometheus::IntCounter,
    pub media_files: IntCounterVec,
    /// Expired media URLs refreshed by reading their item again.
    pub media_refreshes: prometheus::IntCounter,
    pub media_failures: IntCounterVec,
    /// Media downloads in flight on this worker.
    pub media_in_flight: IntGauge,
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub jobs: IntCounterVec,
    pub job_seconds: HistogramVec,
    pub items: IntCounterVec,
    pub account_held: IntGauge,
    pub logins: IntCounterVec,
    pub account_cooldowns: IntCounterVec,
    pub proxy_failures: IntCounterVec,
    pub last_activity: Gauge,
    pub build_info: GaugeVec,
}

impl WorkerMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "trawl_instagram_requests_total",
                "Requests sent to Instagram, by query-type class and outcome",
            ),
            &["class", "outcome"],
        )?;
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "trawl_instagram_request_duration_seconds",
                "Time from sending a request to Instagram to reading its whole answer",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["class"],
        )?;
        let jobs = IntCounterVec::new(
            Opts::new(
                "trawl_worker_jobs_total",
                "Job attempts finished by this worker, by kind and outcome",
            ),
            &["kind", "outcome"],
        )?;
        let job_seconds = HistogramVec::new(
            HistogramOpts::new(
                "trawl_worker_job_duration_seconds",
                "Time a job attempt held its lease on this worker",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0,
            ]),
            &["kind"],
        )?;
        let items = IntCounterVec::new(
            Opts::new(
                "trawl_worker_items_stored_total",
                "Items written to the results tables (an upsert of an item seen before counts)",
            ),
            &["item"],
        )?;
        let account_held = IntGauge::new(
            "trawl_worker_account_held",
            "1 while this worker holds an account lease, 0 while it waits for one",
        )?;
        let logins = IntCounterVec::new(
            Opts::new(
                "trawl_worker_logins_total",
                "Login attempts by this worker, by result",
            ),
            &["result"],
        )?;
        let account_cooldowns = IntCounterVec::new(
            Opts::new(
                "trawl_worker_account_cooldowns_total",
                "Accounts this worker sent to rest (state cooldown), by reason",
            ),
            &["reason"],
        )?;
        let proxy_failures = IntCounterVec::new(
            Opts::new(
                "trawl_proxy_failures_total",
                "Times this worker found its account's proxy failing and rested it, by reason",
            ),
            &["reason"],
        )?;
        let last_activity = Gauge::new(
            "trawl_worker_last_activity_timestamp_seconds",
            "Unix time of this worker's last finished request or job",
        )?;
        let build_info = GaugeVec::new(
            Opts::new(
                "trawl_worker_build_info",
                "Always 1; the labels say the build",
            ),
            &["version"],
        )?;
        let media_bytes = prometheus::IntCounter::new(
            "trawl_media_bytes_total",
            "Bytes of pictures and videos received from the CDN",
        )?;
        let media_files = IntCounterVec::new(
            Opts::new(
                "trawl_media_files_total",
                "Media files fetched, by outcome (already_stored: the blob store had the bytes)",
            ),
            &["outcome"],
        )?;
        let media_refreshes = prometheus::IntCounter::new(
            "trawl_media_url_refreshes_total",
            "Expired media URLs renewed by reading their post, story or profile again",
        )?;
        let media_failures = IntCounterVec::new(
            Opts::new(
                "trawl_media_failures_total",
                "Media fetch attempts that failed, by reason",
            ),
            &["reason"],
        )?;
        let media_in_flight = IntGauge::new(
            "trawl_media_downloads_in_flight",
            "Media downloads this worker is streaming now",
        )?;
        registry.register(Box::new(media_bytes.clone()))?;
        registry.register(Box::new(media_files.clone()))?;
        registry.register(Box::new(media_refreshes.clone()))?;
        registry.register(Box::new(media_failures.clone()))?;
        registry.register(Box::new(media_in_flight.clone()))?;
        for outcome in MEDIA_OUTCOMES {
            media_files.with_label_values(&[outcome]);
        }
        for reason in MEDIA_FAILURES {
            media_failures.with_label_values(&[reason]);
        }
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_seconds.clone()))?;
        registry.register(Box::new(jobs.clone()))?;
        registry.register(Box::new(job_seconds.clone()))?;
        registry.register(Box::new(items.clone()))?;
        registry.register(Box::new(account_held.clone()))?;
        registry.register(Box::new(logins.clone()))?;
        registry.register(Box::new(account_cooldowns.clone()))?;
        registry.register(Box::new(proxy_failures.clone()))?;
        for reason in crate::egress::ProxyFailure::LABELS {
            proxy_failures.with_label_values(&[reason]);
        }
        registry.register(Box::new(last_activity.clone()))?;
        registry.register(Box::new(build_info.clone()))?;
        for class in QueryClass::ALL {
            request_seconds.with_label_values(&[class.as_str()]);
            for outcome in Outcome::ALL {
                requests.with_label_values(&[class.as_str(), outcome.as_str()]);
            }
        }
        for kind in JobKind::ALL {
            job_seconds.with_label_values(&[kind.as_str()]);
            for outcome in JOB_OUTCOMES {
                jobs.with_label_values(&[kind.as_str(), outcome]);
            }
        }
        for item in ITEM_KINDS {
            items.with_label_values(&[item]);
        }
        for result in ["ok", "refused", "error"] {
            logins.with_label_values(&[result]);
        }
        for reason in crate::cooldown::Reason::ALL {
            account_cooldowns.with_label_values(&[reason.as_str()]);
        }
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);
        Ok(Self {
            registry,
            media_bytes,
            media_files,
            media_refreshes,
            media_failures,
            media_in_flight,
            requests,
            request_seconds,
            jobs,
            job_seconds,
            items,
            account_held,
            logins,
            account_cooldowns,
            proxy_failures,
            last_activity,
            build_info,
        })
    }

    pub fn touch(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.last_activity.set(now);
    }
}
