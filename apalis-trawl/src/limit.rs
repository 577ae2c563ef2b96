//! The shared rate limiter in front of a handler.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::error::BoxDynError;
use apalis_core::task::Task;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tower_layer::Layer;
use tower_service::Service;
use trawl_shared::limiter::{Limiter, Request};

use crate::ack::TrawlJobError;

/// Asks the ledger before each task runs. `request` names what the task is about to send (its
/// query type, account and egress group). A grant the ledger gives within `max_inline_wait` is
/// waited for; a longer wait snoozes the job for that long, without using an attempt and without
/// holding its lease. A ledger that cannot be reached grants nothing: the job is retried with
/// the queue's backoff.
///
/// One grant per task: a handler that sends several requests acquires the rest itself (pass the
/// same `Arc<Limiter>` to it as worker data).
pub struct LimitLayer<F> {
    limiter: Arc<Limiter>,
    request: Arc<F>,
    max_inline_wait: Duration,
}

impl<F> LimitLayer<F> {
    /// `max_inline_wait` should stay well below the queue's lease, since the wait happens while
    /// the lease is held (the heartbeat keeps it, but a worker sleeping on a slot is a worker not
    /// crawling).
    pub fn new(limiter: Arc<Limiter>, max_inline_wait: Duration, request: F) -> Self {
        Self {
            limiter,
            request: Arc::new(request),
            max_inline_wait,
        }
    }
}

impl<F> Clone for LimitLayer<F> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            request: self.request.clone(),
            max_inline_wait: self.max_inline_wait,
        }
    }
}

impl<S, F> Layer<S> for LimitLayer<F> {
    type Service = LimitService<S, F>;

    fn layer(&self, inner: S) -> LimitService<S, F> {
        LimitService {
            inner,
            layer: self.clone(),
        }
    }
}

pub struct LimitService<S, F> {
    inner: S,
    layer: LimitLayer<F>,
}

impl<S: Clone, F> Clone for LimitService<S, F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S, F, Args> Service<Task<Args>> for LimitService<S, F>
where
    S: Service<Task<Args>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxDynError>,
    F: Fn(&Args) -> Request + Send + Sync + 'static,
    Args: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<S::Response, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<Args>) -> Self::Future {
        // The service that was polled ready is the one to call; a fresh clone stays behind.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let request = (self.layer.request)(&task.args);
        let limiter = self.layer.limiter.clone();
        let max_wait = self.layer.max_inline_wait;
        async move {
            match limiter.acquire_within(&request, max_wait).await {
                Ok(Ok(_grant)) => inner.call(task).await.map_err(Into::into),
                Ok(Err(wait)) => Err(TrawlJobError::Snooze(wait).into()),
                Err(e) => {
                    Err(TrawlJobError::Retry(format!("rate limiter unavailable: {e}")).into())
                }
            }
        }
        .boxed()
    }
}
