//! The worker: leases one account, logs in when it must, leases the jobs its account can do,
//! speaks Instagram's three API types through the shared limiter ([`instagram`]), runs one crawler
//! per job kind ([`crawl`]) that checkpoints every page with its results (decoded by [`rows`],
//! stored by `trawl_shared::results`), and serves `/metrics`, `/healthz` and `/readyz`.
//!
//! It must not keep state that another worker needs anywhere but PostgreSQL: job and account
//! leases, the rate-limit ledger, checkpoints and results all live there, so a worker can be
//! killed at any moment and another takes over where it stopped.

pub mod cooldown;
pub mod crawl;
pub mod egress;
pub mod instagram;
pub mod media;
pub mod metrics;
pub mod probes;
pub mod rows;
pub mod session_file;
pub mod stream;
pub mod v1;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tracing::Instrument;
use trawl_shared::accounts::{AccountError, Accounts, LeasedAccount};
use trawl_shared::config::Config;
use trawl_shared::crypto::{KeyError, SecretBox};
use trawl_shared::db::{self, DbError};
use trawl_shared::limiter::metrics::LimiterMetrics;
use trawl_shared::limiter::{LedgerError, Limiter};
use trawl_shared::queue::{Failure, LeasedJob, Queue, QueueError, QueueSettings};
use trawl_shared::shutdown::Shutdown;
use trawl_shared::{JobKind, Platform};

use crate::crawl::{Crawl, CrawlError};
use crate::egress::ProxyFailure;
use crate::instagram::{IgError, InstagramClient, Session};
use crate::media::{MediaError, MediaFetcher, Politeness};
use crate::metrics::WorkerMetrics;
use trawl_shared::blobs::BlobStore;
use trawl_shared::proxies;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("probe server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// What happened to the account while its jobs ran.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AccountVerdict {
    /// Keep working with it.
    Keep,
    /// Out of rotation until a person acts, with the reason.
    Checkpoint(String),
    /// Another worker holds it now (our lease expired).
    Lost,
    /// Give it back for now (a login failed for a reason that is not the account's).
    Release,
    /// Rest it for `worker.cooldown`: Instagram is pushing back on it, but no person needs to act.
    Cooldown(cooldown::Reason, String),
    /// Its proxy failed: the proxy rests (and every account behind it), the account is given back.
    ProxyDown {
        proxy: String,
        failure: ProxyFailure,
    },
}

/// What happened to a held account so far; the first verdict other than `Keep` stands.
struct VerdictCell(std::sync::Mutex<AccountVerdict>);

impl VerdictCell {
    fn new() -> Self {
        Self(std::sync::Mutex::new(AccountVerdict::Keep))
    }

    fn get(&self) -> AccountVerdict {
        self.0
            .lock()
            .map(|v| v.clone())
            .unwrap_or(AccountVerdict::Lost)
    }

    fn set(&self, v: AccountVerdict) {
        if let Ok(mut current) = self.0.lock()
            && *current == AccountVerdict::Keep
        {
            *current = v;
        }
    }
}

/// Shared by the job loops of one account.
struct Held {
    client: InstagramClient,
    /// `None` when this worker has no blob store: it leases no `media` job then.
    media: Option<MediaFetcher>,
    account: LeasedAccount,
    /// Set once a re-login was tried in this hold: a second login redirect takes the account
    /// out of rotation.
    relogged: AtomicBool,
    verdict: VerdictCell,
    strikes: std::sync::Mutex<cooldown::Strikes>,
}

impl Held {
    fn verdict(&self) -> AccountVerdict {
        self.verdict.get()
    }

    /// Records a 429; true when the account has drawn enough of them to rest.
    fn strike(&self) -> bool {
        self.strikes
            .lock()
            .map(|mut s| s.strike(Instant::now()))
            .unwrap_or(false)
    }

    fn set_verdict(&self, v: AccountVerdict) {
        self.verdict.set(v);
    }
}

/// Everything a worker process shares between its tasks.
struct Worker {
    config: Config,
    owner: String,
    pool: PgPool,
    queue: Queue,
    accounts: Accounts,
    limiter: Arc<Limiter>,
    metrics: Arc<WorkerMetrics>,
    shutdown: Shutdown,
    /// `None` when the blob store could not be opened: this worker then leases no `media` job.
    media_store: Option<BlobStore>,
}

/// What a worker or a stream process opens first: its key, a pool on a migrated schema, and the
/// shared limiter with its metrics.
pub(crate) struct ProcessBase {
    pub secrets: SecretBox,
    pub pool: PgPool,
    pub limiter: Arc<Limiter>,
    pub limiter_metrics: Arc<LimiterMetrics>,
}

impl ProcessBase {
    pub async fn open(
        config: &Config,
        insecure_dev_key: bool,
        connections: u32,
        application_name: &str,
    ) -> Result<Self, WorkerError> {
        let secrets = SecretBox::from_config(config.secrets.key.as_ref(), insecure_dev_key)?;
        let pool = db::connect_as(
            &trawl_shared::config::DatabaseConfig {
                max_connections: connections,
                ..config.database.clone()
            },
            application_name,
        )
        .await?;
        db::check_schema(&pool).await?;
        let limiter_metrics = Arc::new(LimiterMetrics::new()?);
        let limiter = Arc::new(Limiter::new(
            pool.clone(),
            &config.limiter,
            limiter_metrics.clone(),
        ));
        Ok(Self {
            secrets,
            pool,
            limiter,
            limiter_metrics,
        })
    }
}

/// A name for this process in lease columns: host, pid and a random suffix.
pub fn owner_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{}-{}-{}",
        host.chars().take(40).collect::<String>(),
        std::process::id(),
        &suffix[..6]
    )
}

/// Runs a worker until `shutdown`: then it stops leasing, checkpoints or finishes the page in
/// flight, gives its job back with the checkpoint and gives its account back at once.
pub async fn run(
    config: &Config,
    listener: TcpListener,
    shutdown: Shutdown,
    insecure_dev_key: bool,
) -> Result<(), WorkerError> {
    let ProcessBase {
        secrets,
        pool,
        limiter,
        limiter_metrics,
    } = ProcessBase::open(
        config,
        insecure_dev_key,
        config.worker.db_connections,
        "trawl-worker",
    )
    .await?;
    let metrics = Arc::new(WorkerMetrics::new()?);
    let media_store = match BlobStore::open(&config.media.store).await {
        Ok(store) => Some(store),
        Err(e) => {
            tracing::warn!(error = %e, "blob store unavailable; this worker takes no media jobs");
            None
        }
    };
    let worker = Arc::new(Worker {
        media_store,
        config: config.clone(),
        owner: owner_name(),
        queue: Queue::new(pool.clone(), QueueSettings::from(&config.queue)),
        accounts: Accounts::new(pool.clone(), secrets),
        pool: pool.clone(),
        limiter,
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    });
    tracing::info!(owner = %worker.owner, "worker starting");
    let probes = tokio::spawn(probes::serve(
        listener,
        probes::ProbeState {
            pool: pool.clone(),
            registries: vec![metrics.registry.clone(), limiter_metrics.registry.clone()],
        },
        shutdown.clone(),
    ));
    let grace = config.worker.grace_period.0;
    let out_of_grace = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.wait().await;
            tokio::time::sleep(grace).await;
        }
    };
    tokio::select! {
        () = worker.clone().account_loop() => {}
        () = out_of_grace => tracing::warn!(
            "the grace period ended before the page in flight did; exiting, the job and account \
             leases will expire and be rescued"
        ),
    }
    tracing::info!(owner = %worker.owner, "worker stopped");
    pool.close().await;
    probes.await.map_err(std::io::Error::other)??;
    Ok(())
}

impl Worker {
    async fn sleep_or_stop(&self, d: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(d) => false,
            () = self.shutdown.clone().wait() => true,
        }
    }

    /// Leases an account, works with it until it is lost, blocked or the worker stops; repeats.
    async fn account_loop(self: Arc<Self>) {
        let ttl = self.config.worker.account_lease.0;
        let mut waiting_logged = false;
        // Accounts this worker's key cannot open, or whose kinds it does not take: skipped, so
        // the others stay usable.
        let mut skipped: Vec<String> = Vec::new();
        while !self.shutdown.is_triggered() {
            let leased = self
                .accounts
                .lease_excluding(&self.owner, ttl, &skipped)
                .await;
            let account = match leased {
                Ok(Some(a)) => a,
                Ok(None) => {
                    if !waiting_logged {
                        tracing::info!("every usable account is held by another worker; waiting");
                        waiting_logged = true;
                    }
                    if self.sleep_or_stop(self.config.worker.account_poll.0).await {
                        break;
                    }
                    continue;
                }
                Err(AccountError::Rotate(name, e)) => {
                    tracing::error!(account = %name, error = %e,
                        "cannot open this account's secrets with secrets.key (a wrong or rotated \
                         key); skipping it");
                    skipped.push(name);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot lease an account; retrying");
                    if self.sleep_or_stop(self.config.worker.account_poll.0).await {
                        break;
                    }
                    continue;
                }
            };
            waiting_logged = false;
            if self.kinds(account.platform, account.anonymous).is_empty() {
                // Holding it would idle the account while another worker could use it.
                tracing::info!(account = %account.name, platform = %account.platform,
                    "this worker leases none of this account's kinds (worker.kinds); leaving it \
                     to other workers");
                self.give_back(&account, &AccountVerdict::Release).await;
                skipped.push(account.name);
                continue;
            }
            tracing::info!(account = %account.name, "account leased");
            self.metrics.account_held.set(1);
            match account.platform {
                Platform::Instagram => self.hold(account).await,
                Platform::V1 => self.hold_v1(account).await,
            }
            self.metrics.account_held.set(0);
        }
    }

    async fn hold(self: &Arc<Self>, account: LeasedAccount) {
        if let Some(route) = &account.proxy {
            let checked = egress::check(
                route,
                &self.config.instagram.web_base,
                self.config.worker.proxy_check_timeout.0,
            )
            .await;
            if let Err(failure) = checked {
                let verdict = AccountVerdict::ProxyDown {
                    proxy: route.name.clone(),
                    failure,
                };
                self.give_back(&account, &verdict).await;
                return;
            }
            match proxies::mark_up(&self.pool, &route.name).await {
                Ok(true) => tracing::info!(proxy = %route.name,
                    "proxy checked and back in service; its accounts return to rotation"),
                Ok(false) => {}
                Err(e) => tracing::warn!(proxy = %route.name, error = %e,
                    "cannot mark the proxy up; its accounts wait for the next check"),
            }
        }
        let session = account
            .session
            .as_deref()
            .map(Session::from_cookie_string)
            .unwrap_or_default();
        let client = match InstagramClient::new(
            &self.config.instagram,
            self.limiter.clone(),
            self.metrics.clone(),
            instagram::Identity {
                account: account.name.clone(),
                egress: account.egress_group.clone(),
                session,
                proxy: account.proxy.clone(),
            },
            self.config.worker.concurrency,
            self.config.worker.max_inline_wait.0,
        ) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the HTTP client");
                self.give_back(&account, &AccountVerdict::Release).await;
                return;
            }
        };
        let media = match self.media_fetcher(&account) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the media HTTP client");
                self.give_back(&account, &AccountVerdict::Release).await;
                return;
            }
        };
        let held = Arc::new(Held {
            client,
            media,
            account,
            relogged: AtomicBool::new(false),
            verdict: VerdictCell::new(),
            strikes: std::sync::Mutex::new(cooldown::Strikes::new(
                self.config.worker.cooldown_after_429s,
                self.config.worker.cooldown_window.0,
            )),
        });
        let heartbeat = tokio::spawn(
            self.clone()
                .account_heartbeat(held.clone(), |h: &Held| (&h.account, &h.verdict)),
        );
        if !held.account.anonymous && !held.client.is_logged_in() {
            match self.login(&held).await {
                Ok(()) => {}
                Err(verdict) => held.set_verdict(verdict),
            }
        }
        if held.verdict() == AccountVerdict::Keep {
            let loops = (0..self.config.worker.concurrency).map(|_| self.job_loop(&held));
            futures_util::future::join_all(loops).await;
        }
        heartbeat.abort();
        let verdict = held.verdict();
        match verdict {
            AccountVerdict::Lost => tracing::warn!(account = %held.account.name,
                "account lease lost (another worker holds it now)"),
            other => self.give_back(&held.account, &other).await,
        }
    }

    /// The held account's media downloads, on its route.
    fn media_fetcher(
        &self,
        account: &LeasedAccount,
    ) -> Result<Option<MediaFetcher>, reqwest::Error> {
        let Some(store) = &self.media_store else {
            return Ok(None);
        };
        let media = &self.config.media;
        MediaFetcher::new(
            store.clone(),
            Politeness {
                concurrency: media.max_concurrent_downloads,
                bytes_per_second: media.bytes_per_second,
                tries: media.download_tries,
                stall_timeout: media.stall_timeout.0,
            },
            self.metrics.clone(),
            account.proxy.clone(),
        )
        .map(Some)
    }

    /// Ends the hold as `verdict` says: out of rotation, resting, or simply available.
    async fn give_back(&self, account: &LeasedAccount, verdict: &AccountVerdict) {
        let done = match verdict {
            AccountVerdict::ProxyDown { proxy, failure } => {
                self.metrics
                    .proxy_failures
                    .with_label_values(&[failure.label()])
                    .inc();
                let w = &self.config.worker;
                let reason = failure.to_string();
                match proxies::mark_down(
                    &self.pool,
                    proxy,
                    &reason,
                    w.proxy_rest.0,
                    w.proxy_rest_max.0,
                )
                .await
                {
                    Ok(until) => tracing::warn!(account = %account.name, %proxy, %reason,
                        check_after = %until,
                        "proxy down: its accounts rest until it is checked again"),
                    Err(e) => tracing::warn!(%proxy, %reason, error = %e,
                        "proxy down, but it cannot be marked so"),
                }
                self.accounts.release(account).await
            }
            AccountVerdict::Checkpoint(reason) => {
                tracing::warn!(account = %account.name, %reason,
                    "account taken out of rotation until a person acts");
                self.accounts.checkpoint(account, reason).await
            }
            AccountVerdict::Cooldown(why, reason) => {
                let rest = self.config.worker.cooldown.0;
                tracing::warn!(account = %account.name, %reason, rest_secs = rest.as_secs(),
                    "account resting; it returns to rotation by itself");
                self.metrics
                    .account_cooldowns
                    .with_label_values(&[why.as_str()])
                    .inc();
                self.accounts.cool_down(account, rest, reason).await
            }
            AccountVerdict::Keep | AccountVerdict::Release | AccountVerdict::Lost => {
                self.accounts.release(account).await
            }
        };
        match done {
            Ok(()) | Err(AccountError::LeaseLost(_)) => {}
            Err(e) => tracing::warn!(account = %account.name, error = %e,
                "cannot give the account back; its lease will expire"),
        }
    }

    /// Keeps the account's lease while `held` works; records `Lost` once another worker has it.
    async fn account_heartbeat<H>(
        self: Arc<Self>,
        held: Arc<H>,
        parts: fn(&H) -> (&LeasedAccount, &VerdictCell),
    ) {
        let ttl = self.config.worker.account_lease.0;
        loop {
            tokio::time::sleep(ttl / 3).await;
            let (account, verdict) = parts(&held);
            match self.accounts.heartbeat(account, ttl).await {
                Ok(()) => {}
                Err(AccountError::LeaseLost(_)) => {
                    verdict.set(AccountVerdict::Lost);
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "account heartbeat failed; retrying"),
            }
        }
    }

    /// Logs in with the stored password and stores the new session (sealed).
    async fn login(&self, held: &Held) -> Result<(), AccountVerdict> {
        let Some(password) = held.account.password.as_deref() else {
            return Err(AccountVerdict::Checkpoint(
                "the session is missing or expired and no password is stored: import a fresh \
                 session file (trawl accounts import-session)"
                    .into(),
            ));
        };
        tracing::info!(account = %held.account.name, "logging in");
        let result = tokio::select! {
            r = held.client.login(&held.account.name, password) => r,
            () = self.shutdown.clone().wait() => return Err(AccountVerdict::Keep),
        };
        match result {
            Ok(()) => {
                self.metrics.logins.with_label_values(&["ok"]).inc();
                let cookies = held.client.session().to_cookie_string();
                match self.accounts.store_session(&held.account, &cookies).await {
                    Ok(()) => Ok(()),
                    Err(AccountError::LeaseLost(_)) => Err(AccountVerdict::Lost),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot store the new session; using it anyway");
                        Ok(())
                    }
                }
            }
            Err(IgError::LoginRefused(reason)) => {
                self.metrics.logins.with_label_values(&["refused"]).inc();
                Err(AccountVerdict::Checkpoint(format!(
                    "login refused: {reason}"
                )))
            }
            Err(IgError::AccountBlocked(reason)) => {
                self.metrics.logins.with_label_values(&["refused"]).inc();
                Err(AccountVerdict::Checkpoint(reason))
            }
            Err(IgError::FeedbackRequired(reason)) => {
                self.metrics.logins.with_label_values(&["refused"]).inc();
                Err(AccountVerdict::Cooldown(
                    cooldown::Reason::FeedbackRequired,
                    reason,
                ))
            }
            Err(IgError::ProxyDown { proxy, failure }) => {
                self.metrics.logins.with_label_values(&["error"]).inc();
                Err(AccountVerdict::ProxyDown { proxy, failure })
            }
            Err(e) => {
                self.metrics.logins.with_label_values(&["error"]).inc();
                tracing::warn!(account = %held.account.name, error = %e, "login failed; will retry");
                // Not the account's fault: give it back and let any worker try again later.
                self.sleep_or_stop(self.config.worker.account_poll.0).await;
                Err(AccountVerdict::Release)
            }
        }
    }

    /// The kinds an account of `platform` may lease: that platform's configured ones, minus
    /// login-only kinds when anonymous.
    fn kinds(&self, platform: Platform, anonymous: bool) -> Vec<JobKind> {
        let configured: Vec<JobKind> = self
            .config
            .worker
            .kinds
            .iter()
            .filter_map(|k| k.parse().ok())
            .collect();
        JobKind::ALL
            .into_iter()
            .filter(|k| k.platform() == platform)
            .filter(|k| configured.is_empty() || configured.contains(k))
            .filter(|k| !(anonymous && k.requires_login()))
            .filter(|k| *k != JobKind::Media || self.media_store.is_some())
            .collect()
    }

    async fn job_loop(self: &Arc<Self>, held: &Arc<Held>) {
        let kinds = self.kinds(Platform::Instagram, held.account.anonymous);
        let mut waiter = self.waiter().await;
        while !self.shutdown.is_triggered() && held.verdict() == AccountVerdict::Keep {
            if let Some(job) = self.next_job(&kinds, None, &mut waiter).await {
                self.work(held, job).await;
            }
        }
    }

    /// A listener that wakes the job loop when a job is submitted, when configured.
    async fn waiter(&self) -> Option<trawl_shared::queue::JobWaiter> {
        // Polling by default: a LISTEN connection per worker would double the fleet's share of
        // the server's connections (docs/operations.md, "Sizing").
        if !self.config.worker.wake_on_notify {
            return None;
        }
        match self.queue.waiter().await {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for new jobs; polling");
                None
            }
        }
    }

    /// Leases one job of `kinds` (for `account`, when it reads its own listings); `None` after
    /// a wait when there is none or the lease failed, so the caller checks its account again.
    async fn next_job(
        &self,
        kinds: &[JobKind],
        account: Option<&str>,
        waiter: &mut Option<trawl_shared::queue::JobWaiter>,
    ) -> Option<LeasedJob> {
        let leased = match self
            .queue
            .lease_as(&self.owner, 1, Some(kinds), account)
            .await
        {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(error = %e, "cannot lease jobs; retrying");
                self.sleep_or_stop(self.config.queue.poll_interval.0).await;
                return None;
            }
        };
        if let Some(job) = leased.into_iter().next() {
            return Some(job);
        }
        let wait = async {
            match waiter.as_mut() {
                Some(w) => {
                    w.wait().await;
                }
                None => tokio::time::sleep(self.config.queue.poll_interval.0).await,
            }
        };
        tokio::select! {
            () = wait => {}
            () = self.shutdown.clone().wait() => {}
        }
        None
    }

    /// Keeps `job`'s lease alive until the returned task is aborted.
    fn job_heartbeat(&self, job: &LeasedJob) -> tokio::task::JoinHandle<()> {
        let queue = self.queue.clone();
        let lease = job.lease;
        let every = self.config.queue.lease.0 / 3;
        tokio::spawn(
            async move {
                loop {
                    tokio::time::sleep(every).await;
                    if let Err(QueueError::LeaseLost { .. }) = queue.heartbeat(&lease).await {
                        return;
                    }
                }
            }
            .in_current_span(),
        )
    }

    /// Counts a finished job in the metrics.
    fn record(&self, kind: JobKind, outcome: &str, started: Instant) {
        let kind = kind.as_str();
        self.metrics.jobs.with_label_values(&[kind, outcome]).inc();
        self.metrics
            .job_seconds
            .with_label_values(&[kind])
            .observe(started.elapsed().as_secs_f64());
        self.metrics.touch();
    }

    /// Turns a queue write into the outcome label, logging what could not be written.
    fn written(written: Result<&'static str, QueueError>) -> &'static str {
        match written {
            Ok(outcome) => outcome,
            Err(QueueError::LeaseLost { .. }) => {
                tracing::warn!(
                    "job lease lost (cancelled, or expired and rescued); result dropped"
                );
                "released"
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot record the job's outcome; its lease will expire");
                "released"
            }
        }
    }

    /// Runs one job to its outcome and records it on the job (fenced) and in the metrics.
    ///
    /// The span is attached with `#[instrument]`, not entered: a guard held across an `.await`
    /// would stay entered while this task is parked, and lines other tasks log on the same
    /// thread meanwhile would carry this job's id.
    #[tracing::instrument(name = "job", skip_all, fields(job_id = job.lease.job_id,
        kind = job.kind.as_str(), target = %job.target, account = %held.account.name,
        attempt = job.attempt))]
    async fn work(&self, held: &Arc<Held>, job: LeasedJob) {
        let started = Instant::now();
        let heartbeat = self.job_heartbeat(&job);
        let crawl = Crawl {
            client: &held.client,
            pool: &self.pool,
            queue: &self.queue,
            job: &job,
            shutdown: &self.shutdown,
            metrics: &self.metrics,
            default_max_attempts: self.config.queue.default_max_attempts,
            media: held.media.as_ref(),
        };
        let result = crawl.run().await;
        heartbeat.abort();
        let outcome = self.settle(held, &job, result).await;
        self.record(job.kind, outcome, started);
    }

    /// Turns a crawl's result into a queue write; returns the outcome label.
    async fn settle(
        &self,
        held: &Arc<Held>,
        job: &LeasedJob,
        result: Result<crawl::CrawlReport, CrawlError>,
    ) -> &'static str {
        let lease = &job.lease;
        let written = match result {
            Ok(report) => {
                tracing::info!(items = report.items, pages = report.pages, "job completed");
                held.relogged.store(false, Ordering::Relaxed);
                self.queue.complete(lease).await.map(|()| "completed")
            }
            Err(CrawlError::Stopping) => {
                tracing::info!("stopping: job released with its checkpoint");
                self.queue.release(lease).await.map(|()| "released")
            }
            Err(CrawlError::Instagram(IgError::RateLimited { until, got_429 })) => {
                if got_429 && held.strike() {
                    held.set_verdict(AccountVerdict::Cooldown(
                        cooldown::Reason::RateLimited,
                        format!(
                            "{} 429s within {}",
                            self.config.worker.cooldown_after_429s,
                            self.config.worker.cooldown_window
                        ),
                    ));
                }
                let delay = (until - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                tracing::info!(got_429, delay_ms = delay.as_millis() as u64, "job snoozed");
                self.queue.snooze(lease, delay).await.map(|_| "snoozed")
            }
            Err(CrawlError::Instagram(IgError::NotFound(what))) => {
                self.fail(job, &format!("not found: {what}"), Failure::Permanent)
                    .await
            }
            Err(CrawlError::Instagram(IgError::Forbidden(what))) => self.hidden(job, &what).await,
            Err(CrawlError::Instagram(e @ IgError::QueryRefused { .. })) => {
                // Another account would be refused the same: the configuration must change.
                self.fail(job, &e.to_string(), Failure::Permanent).await
            }
            Err(CrawlError::Instagram(IgError::AccountBlocked(reason))) => {
                held.set_verdict(AccountVerdict::Checkpoint(reason));
                self.queue.release(lease).await.map(|()| "released")
            }
            Err(CrawlError::Instagram(IgError::FeedbackRequired(reason))) => {
                held.set_verdict(AccountVerdict::Cooldown(
                    cooldown::Reason::FeedbackRequired,
                    reason,
                ));
                self.queue.release(lease).await.map(|()| "released")
            }
            Err(CrawlError::Instagram(IgError::LoginRequired)) if held.account.anonymous => {
                self.fail(
                    job,
                    "Instagram requires a login for this target",
                    Failure::Retryable,
                )
                .await
            }
            Err(CrawlError::Instagram(IgError::LoginRequired)) => {
                if held.relogged.swap(true, Ordering::Relaxed) {
                    held.set_verdict(AccountVerdict::Checkpoint(
                        "logged out again right after a fresh login".into(),
                    ));
                } else {
                    tracing::info!("session expired; logging in again");
                    held.client.forget_session();
                    if let Err(verdict) = self.login(held).await {
                        held.set_verdict(verdict);
                    }
                }
                self.queue.release(lease).await.map(|()| "released")
            }
            Err(CrawlError::Instagram(IgError::Ledger(e))) => self.ledger_down(lease, &e).await,
            Err(CrawlError::Instagram(IgError::ProxyDown { proxy, failure }))
            | Err(CrawlError::Media(MediaError::Proxy { proxy, failure })) => {
                // Not the job's fault: it goes back with its checkpoint, no attempt spent.
                held.set_verdict(AccountVerdict::ProxyDown { proxy, failure });
                self.queue.release(lease).await.map(|()| "released")
            }
            Err(CrawlError::Media(e)) if e.is_permanent() => {
                self.fail(job, &e.to_string(), Failure::Permanent).await
            }
            Err(CrawlError::Queue(QueueError::LeaseLost { .. })) => Err(QueueError::LeaseLost {
                job_id: lease.job_id,
            }),
            Err(e) => self.fail(job, &e.to_string(), Failure::Retryable).await,
        };
        Self::written(written)
    }

    /// The target exists but this account may not see it: another account would not either.
    async fn hidden(&self, job: &LeasedJob, what: &str) -> Result<&'static str, QueueError> {
        self.fail(
            job,
            &format!("private or not visible: {what}"),
            Failure::Permanent,
        )
        .await
    }

    /// The ledger could not be asked: fail closed, nothing was sent. The job is given back (if
    /// the database lets us) and the lease rescuer catches it otherwise.
    async fn ledger_down(
        &self,
        lease: &trawl_shared::queue::Lease,
        e: &LedgerError,
    ) -> Result<&'static str, QueueError> {
        tracing::warn!(error = %e, "rate-limit ledger unavailable; releasing the job");
        self.sleep_or_stop(self.config.queue.poll_interval.0).await;
        self.queue.release(lease).await.map(|()| "released")
    }

    async fn fail(
        &self,
        job: &LeasedJob,
        reason: &str,
        failure: Failure,
    ) -> Result<&'static str, QueueError> {
        tracing::info!(%reason, ?failure, "job failed");
        self.queue
            .fail(&job.lease, reason, failure, job.attempt)
            .await
            .map(|o| match o {
                trawl_shared::queue::FailOutcome::Failed => "failed",
                trawl_shared::queue::FailOutcome::RetryAt(_) => "retried",
            })
    }
}
