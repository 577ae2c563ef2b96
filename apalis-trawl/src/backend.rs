//! The backend: leases jobs in batches, decodes them into the handler's arguments and hands them
//! to the apalis worker, bounded by the worker's concurrency.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use trawl_shared::JobKind;
use trawl_shared::domain::JobOptions;
use trawl_shared::queue::{Checkpoint, Failure, JobWaiter, Lease, LeasedJob, Queue, QueueError};

use crate::ack::AckLayer;

/// How a [`TrawlBackend`] leases.
#[derive(Debug, Clone)]
pub struct Config {
    /// Jobs leased per statement. Default 10.
    pub batch_size: usize,
    /// Jobs one worker holds at once, running or waiting to run. Default: `batch_size`.
    pub concurrency: usize,
    /// Longest wait between two lease attempts when the queue was empty. Default 1 s.
    pub poll_interval: Duration,
    /// Wake on the queue's `NOTIFY` instead of waiting out the poll interval (one extra
    /// connection per worker, outside the pool). Default on.
    pub listen: bool,
    /// Lease only these kinds; `None`: every kind.
    pub kinds: Option<Vec<JobKind>>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            batch_size: 10,
            concurrency: 10,
            poll_interval: Duration::from_secs(1),
            listen: true,
            kinds: None,
        }
    }
}

impl Config {
    /// Sets the batch size, and the concurrency to match it.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self.concurrency = self.batch_size;
        self
    }

    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    pub fn listen(mut self, listen: bool) -> Self {
        self.listen = listen;
        self
    }

    pub fn kinds(mut self, kinds: impl Into<Vec<JobKind>>) -> Self {
        self.kinds = Some(kinds.into());
        self
    }
}

/// The default handler arguments: a job as the queue stores it, without its lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrawlTask {
    pub id: i64,
    pub kind: JobKind,
    pub target: String,
    #[serde(default)]
    pub options: JobOptions,
    /// 1 on the first attempt; snoozes do not count.
    pub attempt: i32,
    pub max_attempts: i32,
    /// Where the previous attempt stopped, if it stored a checkpoint.
    #[serde(default)]
    pub checkpoint: Option<Checkpoint>,
}

/// The lease of the job a task came from, in the task's data (`Data<JobLease>` in a handler).
/// Every write about the job (a checkpoint with a page's results) must carry `lease`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobLease {
    pub lease: Lease,
    pub kind: JobKind,
    pub attempt: i32,
    pub max_attempts: i32,
}

/// Errors of the backend itself (not of a job).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Leased jobs could not be given back at shutdown; they return when their leases expire
    /// and the rescuer takes them back.
    #[error("could not release {count} leased jobs at shutdown: {source}")]
    Release {
        count: usize,
        #[source]
        source: QueueError,
    },
}

/// What the backend and its acknowledgement layer share: the queue and how many jobs this
/// worker holds.
pub(crate) struct Shared {
    pub(crate) queue: Queue,
    held: AtomicUsize,
    freed: Notify,
    /// The completer task's inbox, started on the first completion (inside the runtime).
    pub(crate) completions: OnceLock<crate::ack::Completions>,
}

impl Shared {
    /// A job held by this worker was settled (or its settling given up).
    pub(crate) fn release_one(&self) {
        self.held.fetch_sub(1, Ordering::AcqRel);
        self.freed.notify_one();
    }

    pub(crate) fn heartbeat_every(&self) -> Duration {
        (self.queue.settings().lease / 3).max(Duration::from_millis(10))
    }
}

/// Trawl's queue as an apalis backend. One per worker: clone it for the next worker (a clone
/// shares the queue and the configuration, not the jobs held).
pub struct TrawlBackend<Args> {
    shared: Arc<Shared>,
    config: Config,
    buffer: VecDeque<Task<Args>>,
    batches: Option<BoxStream<'static, Vec<Task<Args>>>>,
    closing: Option<BoxFuture<'static, Result<(), BackendError>>>,
}

impl<Args> TrawlBackend<Args> {
    pub fn new(queue: Queue, config: Config) -> Self {
        Self {
            shared: Arc::new(Shared {
                queue,
                held: AtomicUsize::new(0),
                freed: Notify::new(),
                completions: OnceLock::new(),
            }),
            config,
            buffer: VecDeque::new(),
            batches: None,
            closing: None,
        }
    }

    pub fn queue(&self) -> &Queue {
        &self.shared.queue
    }
}

impl<Args> Clone for TrawlBackend<Args> {
    fn clone(&self) -> Self {
        Self::new(self.shared.queue.clone(), self.config.clone())
    }
}

impl<Args> std::fmt::Debug for TrawlBackend<Args> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrawlBackend")
            .field("config", &self.config)
            .field("held", &self.shared.held.load(Ordering::Relaxed))
            .field("buffered", &self.buffer.len())
            .finish()
    }
}

impl<Args> Backend for TrawlBackend<Args>
where
    Args: DeserializeOwned + Send + 'static,
{
    type Task = Task<Args>;
    type Error = BackendError;

    fn poll_ready(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        loop {
            if let Some(task) = self.buffer.pop_front() {
                return Poll::Ready(Some(Ok(task)));
            }
            let batches = self.batches.get_or_insert_with(|| {
                Fetcher::<Args> {
                    shared: self.shared.clone(),
                    config: self.config.clone(),
                    owner: worker.name().to_owned(),
                    waiter: None,
                    listen: self.config.listen,
                    _args: PhantomData,
                }
                .into_stream()
            });
            match batches.poll_next_unpin(cx) {
                Poll::Ready(Some(batch)) => self.buffer.extend(batch),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Stops leasing and gives back, at once, the jobs leased but not started. A lease statement
    /// cut off here may still have committed; its jobs come back when their leases expire.
    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        self.batches = None;
        let closing = self.closing.get_or_insert_with(|| {
            let leases: Vec<Lease> = self
                .buffer
                .drain(..)
                .filter_map(|t| t.ctx().data().get::<JobLease>().map(|j| j.lease))
                .collect();
            let shared = self.shared.clone();
            async move {
                let count = leases.len();
                let mut first_error = None;
                for lease in leases {
                    match shared.queue.release(&lease).await {
                        Ok(()) | Err(QueueError::LeaseLost { .. }) => {}
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                    shared.release_one();
                }
                match first_error {
                    None => Ok(()),
                    Some(source) => Err(BackendError::Release { count, source }),
                }
            }
            .boxed()
        });
        let done = futures_util::ready!(closing.poll_unpin(cx));
        // A finished async block must not be polled again; a later close finds nothing to do.
        self.closing = Some(futures_util::future::ready(Ok(())).boxed());
        Poll::Ready(done)
    }
}

impl<Args> BackendConfig for TrawlBackend<Args> {
    type Args = Args;
    type Id = i64;
    /// Arguments are decoded by the backend itself, not by apalis's codec wrapper: its decode
    /// error would stop the worker instead of failing the one job.
    type Kind = Ephemeral;
    type Config = Config;
    type Layer = AckLayer;

    fn config(&self) -> &Config {
        &self.config
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> AckLayer {
        AckLayer::new(self.shared.clone())
    }
}

/// The leasing loop behind a backend, run as a stream of batches.
struct Fetcher<Args> {
    shared: Arc<Shared>,
    config: Config,
    owner: String,
    waiter: Option<JobWaiter>,
    listen: bool,
    _args: PhantomData<fn() -> Args>,
}

/// Longest pause after the database failed a lease, so a worker comes back soon after an outage.
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(30);

impl<Args: DeserializeOwned + Send + 'static> Fetcher<Args> {
    fn into_stream(self) -> BoxStream<'static, Vec<Task<Args>>> {
        futures_util::stream::unfold(self, |mut fetcher| async move {
            let batch = fetcher.next_batch().await;
            Some((batch, fetcher))
        })
        .boxed()
    }

    /// Waits for room and for runnable jobs; returns at least one decoded task.
    async fn next_batch(&mut self) -> Vec<Task<Args>> {
        let mut error_backoff = Duration::from_millis(100);
        loop {
            let room = self.room().await;
            let want = room.min(self.config.batch_size);
            // Counted before the statement, so the acknowledgement of a job can never bring the
            // count below the jobs actually held.
            self.shared.held.fetch_add(want, Ordering::AcqRel);
            let leased = self
                .shared
                .queue
                .lease(&self.owner, want, self.config.kinds.as_deref())
                .await;
            let leased = match leased {
                Ok(jobs) => jobs,
                Err(e) => {
                    self.shared.held.fetch_sub(want, Ordering::AcqRel);
                    tracing::warn!(error = %e, worker = %self.owner, "leasing failed; trying again");
                    tokio::time::sleep(error_backoff).await;
                    error_backoff = (error_backoff * 2).min(MAX_ERROR_BACKOFF);
                    continue;
                }
            };
            error_backoff = Duration::from_millis(100);
            self.shared
                .held
                .fetch_sub(want - leased.len(), Ordering::AcqRel);
            let mut batch = Vec::with_capacity(leased.len());
            for job in leased {
                match decode::<Args>(&job) {
                    Ok(task) => batch.push(task),
                    Err(reason) => {
                        self.fail_undecodable(&job, &reason).await;
                        self.shared.release_one();
                    }
                }
            }
            if !batch.is_empty() {
                return batch;
            }
            self.wait_for_jobs().await;
        }
    }

    /// How many more jobs this worker may hold; waits until at least one.
    async fn room(&self) -> usize {
        loop {
            let freed = self.shared.freed.notified();
            let held = self.shared.held.load(Ordering::Acquire);
            if held < self.config.concurrency {
                return self.config.concurrency - held;
            }
            freed.await;
        }
    }

    async fn wait_for_jobs(&mut self) {
        if self.listen && self.waiter.is_none() {
            match self.shared.queue.waiter().await {
                Ok(w) => self.waiter = Some(w),
                Err(e) => {
                    // Polling still finds every job, only later.
                    tracing::warn!(error = %e, "cannot LISTEN for new jobs; polling only");
                    self.listen = false;
                }
            }
        }
        match &mut self.waiter {
            Some(w) => {
                let _ = tokio::time::timeout(self.config.poll_interval, w.wait()).await;
            }
            None => tokio::time::sleep(self.config.poll_interval).await,
        }
    }

    async fn fail_undecodable(&self, job: &LeasedJob, reason: &str) {
        tracing::warn!(job_id = job.lease.job_id, %reason, "failing a job its handler cannot decode");
        let reason = format!(
            "cannot decode job into {}: {reason}",
            std::any::type_name::<Args>()
        );
        match self
            .shared
            .queue
            .fail(&job.lease, &reason, Failure::Permanent, job.attempt)
            .await
        {
            Ok(_) | Err(QueueError::LeaseLost { .. }) => {}
            // Left to the rescuer: the lease runs out and the job is tried (and failed) again.
            Err(e) => {
                tracing::warn!(job_id = job.lease.job_id, error = %e, "could not fail an undecodable job")
            }
        }
    }
}

/// The row's JSON view, decoded into the handler's type, as an apalis task carrying the lease.
fn decode<Args: DeserializeOwned>(job: &LeasedJob) -> Result<Task<Args>, String> {
    let view = serde_json::json!({
        "id": job.lease.job_id,
        "kind": job.kind,
        "target": job.target,
        "options": job.options,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "checkpoint": job.checkpoint,
    });
    let args: Args = serde_json::from_value(view).map_err(|e| e.to_string())?;
    let id = u64::try_from(job.lease.job_id).map_err(|e| e.to_string())?;
    Ok(TaskBuilder::new(args)
        .task_id(TaskId::from_int(id))
        // apalis counts the attempt up when the task starts; Trawl has counted it at the lease.
        .attempt(usize::try_from(job.attempt - 1).unwrap_or(0))
        .max_attempts(usize::try_from(job.max_attempts).unwrap_or(0))
        .data(JobLease {
            lease: job.lease,
            kind: job.kind,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
        })
        .build())
}
