//! The acknowledgement layer: heartbeats while a handler runs, then records its outcome in the
//! queue, fenced by the lease.

use std::collections::HashSet;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::error::BoxDynError;
use apalis_core::task::Task;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::{Notify, mpsc, oneshot};
use tower_layer::Layer;
use tower_service::Service;
use trawl_shared::queue::{Failure, Lease, Queue, QueueError};

use crate::backend::{JobLease, Shared};

/// What a handler (or a layer in front of it) says happened to its job. Return it as the
/// handler's error; any other error counts as [`TrawlJobError::Retry`] with its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrawlJobError {
    /// Worth trying again: the queue's durable exponential backoff decides when, and the job
    /// fails for good once its attempts are used up.
    #[error("retryable: {0}")]
    Retry(String),
    /// Never worth trying again (a profile that does not exist): the job fails with this reason.
    #[error("permanent: {0}")]
    Permanent(String),
    /// Not a failure: put the job back until this much later without using an attempt (a rate
    /// limit's wait, a 429).
    #[error("snoozed for {0:?}")]
    Snooze(Duration),
}

/// Why an outcome was not recorded. The job itself is safe either way: a lost lease belongs to
/// someone else now, and a job whose outcome could not be written is rescued when its lease runs
/// out.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    /// The task did not come from a [`crate::TrawlBackend`], so there is nothing to acknowledge.
    #[error("task carries no Trawl lease")]
    NoLease,
    /// The lease expired or the job was cancelled; the outcome was dropped and nothing changed.
    #[error("lease on job {job_id} was lost; its outcome was not recorded")]
    LeaseLost { job_id: i64 },
    #[error("recording the outcome of job {job_id} failed: {source}")]
    Queue {
        job_id: i64,
        #[source]
        source: QueueError,
    },
}

/// Installed by [`crate::TrawlBackend`] as its middleware; there is no need to add it by hand.
#[derive(Clone)]
pub struct AckLayer {
    shared: Arc<Shared>,
}

impl AckLayer {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl<S> Layer<S> for AckLayer {
    type Service = AckService<S>;

    fn layer(&self, inner: S) -> AckService<S> {
        AckService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AckService<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// Counts a held job as settled when dropped, whether the settling finished or was abandoned.
struct Held(Arc<Shared>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.release_one();
    }
}

/// Stops the heartbeat when the handler's future ends or is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<S, Args> Service<Task<Args>> for AckService<S>
where
    S: Service<Task<Args>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxDynError>,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<S::Response, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<Args>) -> Self::Future {
        let job = task.ctx().data().get::<JobLease>().cloned();
        let Some(job) = job else {
            // Not leased by this worker's backend, so not counted among the jobs it holds.
            return async { Err(AckError::NoLease.into()) }.boxed();
        };
        let held = Held(self.shared.clone());
        let shared = self.shared.clone();
        let handler = self.inner.call(task);
        async move {
            let _held = held;
            let Some(outcome) = run_with_heartbeat(&shared, &job, handler).await else {
                return Err(AckError::LeaseLost {
                    job_id: job.lease.job_id,
                }
                .into());
            };
            settle(&shared, &job, outcome.map_err(Into::into)).await
        }
        .boxed()
    }
}

/// Runs the handler while a separate task renews the lease every lease/3. Returns `None` when
/// the lease was lost: the handler is dropped then, since its job is no longer its own.
async fn run_with_heartbeat<F: Future>(
    shared: &Arc<Shared>,
    job: &JobLease,
    handler: F,
) -> Option<F::Output> {
    let lost = Arc::new(Notify::new());
    let every = shared.heartbeat_every();
    let _heartbeat = AbortOnDrop(tokio::spawn({
        let shared = shared.clone();
        let lease = job.lease;
        let lost = lost.clone();
        async move {
            loop {
                tokio::time::sleep(every).await;
                match shared.queue.heartbeat(&lease).await {
                    Ok(_) => {}
                    Err(QueueError::LeaseLost { .. }) => {
                        tracing::warn!(
                            job_id = lease.job_id,
                            "lease lost while the handler ran; stopping it"
                        );
                        lost.notify_one();
                        return;
                    }
                    // The next beat tries again; if the lease runs out first, that beat says so.
                    Err(e) => tracing::warn!(job_id = lease.job_id, error = %e, "heartbeat failed"),
                }
            }
        }
    }));
    tokio::select! {
        out = handler => Some(out),
        () = lost.notified() => None,
    }
}

/// Records the handler's outcome. Returns the handler's own result when it was recorded, so the
/// worker's events still show what the handler said.
async fn settle<R>(
    shared: &Shared,
    job: &JobLease,
    outcome: Result<R, BoxDynError>,
) -> Result<R, BoxDynError> {
    let queue = &shared.queue;
    let lease = &job.lease;
    let written = match &outcome {
        Ok(_) => complete(shared, *lease).await,
        Err(e) => match e.downcast_ref::<TrawlJobError>() {
            Some(TrawlJobError::Snooze(delay)) => queue.snooze(lease, *delay).await.map(drop),
            Some(TrawlJobError::Permanent(reason)) => queue
                .fail(lease, reason, Failure::Permanent, job.attempt)
                .await
                .map(drop),
            Some(TrawlJobError::Retry(reason)) => queue
                .fail(lease, reason, Failure::Retryable, job.attempt)
                .await
                .map(drop),
            None => queue
                .fail(lease, &e.to_string(), Failure::Retryable, job.attempt)
                .await
                .map(drop),
        },
    };
    match written {
        Ok(()) => outcome,
        Err(QueueError::LeaseLost { job_id }) => Err(AckError::LeaseLost { job_id }.into()),
        Err(source) => Err(AckError::Queue {
            job_id: lease.job_id,
            source,
        }
        .into()),
    }
}

/// One completion waiting for the completer: the lease, and where to say whether it was held.
type Completion = (Lease, oneshot::Sender<bool>);

/// The inbox of a worker's completer task.
pub(crate) type Completions = mpsc::UnboundedSender<Completion>;

/// Most completions written in one statement.
const COMPLETE_BATCH: usize = 256;

/// Completes a job through the worker's completer, which writes the completions that arrive
/// together in one `complete_many`: apalis settles one task at a time, and a commit per job would
/// cap a worker at the server's commit rate. Fencing is the same, lease by lease.
async fn complete(shared: &Shared, lease: Lease) -> Result<(), QueueError> {
    let inbox = shared.completions.get_or_init(|| {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_completer(shared.queue.clone(), rx));
        tx
    });
    let (reply, held) = oneshot::channel();
    if inbox.send((lease, reply)).is_ok()
        && let Ok(held) = held.await
    {
        return if held {
            Ok(())
        } else {
            Err(QueueError::LeaseLost {
                job_id: lease.job_id,
            })
        };
    }
    // The completer is gone (its batch failed, or the runtime is shutting down): write alone,
    // which also gives this job its own error.
    shared.queue.complete(&lease).await
}

/// Ends when every sender is gone, that is when the backend and its layers are dropped.
async fn run_completer(queue: Queue, mut inbox: mpsc::UnboundedReceiver<Completion>) {
    let mut batch = Vec::with_capacity(COMPLETE_BATCH);
    while inbox.recv_many(&mut batch, COMPLETE_BATCH).await > 0 {
        let leases: Vec<Lease> = batch.iter().map(|(lease, _)| *lease).collect();
        match queue.complete_many(&leases).await {
            Ok(done) => {
                let done: HashSet<i64> = done.into_iter().collect();
                for (lease, reply) in batch.drain(..) {
                    let _ = reply.send(done.contains(&lease.job_id));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, jobs = batch.len(), "batched completion failed; completing one by one");
                // Dropping the replies sends each caller to complete its job alone.
                batch.clear();
            }
        }
    }
}
