//! Submitting jobs: the same validation and dedup as `POST /v1/jobs`.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, Sink};
use trawl_shared::domain::ValidationError;
use trawl_shared::queue::{Queue, QueueError, Submitted};
use trawl_shared::{JobSpec, NewJob};

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// A field of the job is not acceptable; nothing of that call was submitted.
    #[error("job {index} is invalid: {source}")]
    Invalid {
        index: usize,
        #[source]
        source: ValidationError,
    },
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Most jobs a [`Sink`] buffers before it submits them in one statement.
const SINK_BUFFER: usize = 1_000;

/// Submits [`JobSpec`]s to Trawl's queue. A job whose unique key belongs to an active job is not
/// inserted twice: its [`Submitted`] names the existing job with `created: false`.
///
/// It is not apalis's `TaskSink`: that pushes the worker's argument type and answers nothing,
/// while a Trawl job is submitted as a specification that is validated, deduplicated and
/// answered with its id.
pub struct TrawlSink {
    queue: Queue,
    pending: Vec<NewJob>,
    flushing: Option<BoxFuture<'static, Result<Vec<Submitted>, QueueError>>>,
    submitted: Vec<Submitted>,
    sent: usize,
}

impl TrawlSink {
    pub fn new(queue: Queue) -> Self {
        Self {
            queue,
            pending: Vec::new(),
            flushing: None,
            submitted: Vec::new(),
            sent: 0,
        }
    }

    fn validate(&self, index: usize, spec: JobSpec) -> Result<NewJob, PushError> {
        spec.validate(self.queue.settings().default_max_attempts)
            .map_err(|source| PushError::Invalid { index, source })
    }

    /// Validates and submits one job.
    pub async fn push(&self, spec: JobSpec) -> Result<Submitted, PushError> {
        let job = self.validate(0, spec)?;
        Ok(self.queue.submit(&job).await?)
    }

    /// Validates every job, then submits them all in one transaction: one invalid job and none is
    /// submitted.
    pub async fn push_many(&self, specs: Vec<JobSpec>) -> Result<Vec<Submitted>, PushError> {
        let jobs = specs
            .into_iter()
            .enumerate()
            .map(|(i, s)| self.validate(i, s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.queue.submit_many(&jobs).await?)
    }

    /// What the [`Sink`] side submitted so far, in order; taking it empties it.
    pub fn take_submitted(&mut self) -> Vec<Submitted> {
        std::mem::take(&mut self.submitted)
    }
}

impl Clone for TrawlSink {
    /// A clone shares the queue, not the buffered or submitted jobs.
    fn clone(&self) -> Self {
        Self::new(self.queue.clone())
    }
}

impl Sink<JobSpec> for TrawlSink {
    type Error = PushError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), PushError>> {
        if self.pending.len() >= SINK_BUFFER {
            return self.as_mut().poll_flush(cx);
        }
        Poll::Ready(Ok(()))
    }

    /// Validates at once, so an invalid job is refused before anything of it is buffered;
    /// `index` counts the jobs this sink was sent.
    fn start_send(mut self: Pin<&mut Self>, spec: JobSpec) -> Result<(), PushError> {
        let index = self.sent;
        self.sent += 1;
        let job = self.validate(index, spec)?;
        self.pending.push(job);
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), PushError>> {
        loop {
            if let Some(flushing) = self.flushing.as_mut() {
                let result = futures_util::ready!(flushing.poll_unpin(cx));
                self.flushing = None;
                self.submitted.extend(result?);
            }
            if self.pending.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let jobs = std::mem::take(&mut self.pending);
            let queue = self.queue.clone();
            self.flushing = Some(async move { queue.submit_many(&jobs).await }.boxed());
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), PushError>> {
        self.poll_flush(cx)
    }
}
