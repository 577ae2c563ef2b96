//! A worker's hold on a v1 account: one [`V1Client`] logged in with the account's password, job
//! loops that lease only the v1 kinds (and, of the kinds that read an account's own listings,
//! only this account's), and each crawl's result turned into a queue write.

use std::sync::Arc;
use std::time::Instant;

use trawl_shared::Platform;
use trawl_shared::accounts::LeasedAccount;
use trawl_shared::queue::{Failure, LeasedJob, QueueError};
use trawl_shared::secret::Secret;

use super::client::{PLATFORM, V1Client, V1Error};
use super::crawl::{V1Crawl, V1CrawlError};
use crate::crawl::CrawlReport;
use crate::{AccountVerdict, VerdictCell, Worker, egress};

/// Shared by the job loops of one v1 account.
struct HeldV1 {
    client: V1Client,
    account: LeasedAccount,
    verdict: VerdictCell,
}

impl Worker {
    pub(crate) async fn hold_v1(self: &Arc<Self>, account: LeasedAccount) {
        let Some(password) = account.password.clone() else {
            let verdict = AccountVerdict::Checkpoint(
                "a v1 account logs in with its password, and none is stored".into(),
            );
            self.give_back(&account, &verdict).await;
            return;
        };
        let http = egress::client_builder(account.proxy.as_ref())
            .and_then(|b| b.timeout(self.config.v1.request_timeout.0).build());
        let http = match http {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the v1 HTTP client");
                self.give_back(&account, &AccountVerdict::Release).await;
                return;
            }
        };
        let held = Arc::new(HeldV1 {
            client: V1Client::new(
                http,
                self.config.v1.base.clone(),
                account.name.clone(),
                Secret::new(password),
                self.limiter.clone(),
            ),
            account,
            verdict: VerdictCell::new(),
        });
        tracing::info!(account = %held.account.name, platform = PLATFORM, "holding a v1 account");
        let heartbeat = tokio::spawn(
            self.clone()
                .account_heartbeat(held.clone(), |h: &HeldV1| (&h.account, &h.verdict)),
        );
        let loops = (0..self.config.worker.concurrency).map(|_| self.v1_job_loop(&held));
        futures_util::future::join_all(loops).await;
        heartbeat.abort();
        match held.verdict.get() {
            AccountVerdict::Lost => tracing::warn!(account = %held.account.name,
                "account lease lost (another worker holds it now)"),
            other => self.give_back(&held.account, &other).await,
        }
    }

    async fn v1_job_loop(self: &Arc<Self>, held: &Arc<HeldV1>) {
        let kinds = self.kinds(Platform::V1, false);
        let mut waiter = self.waiter().await;
        while !self.shutdown.is_triggered() && held.verdict.get() == AccountVerdict::Keep {
            if let Some(job) = self
                .next_job(&kinds, Some(&held.account.name), &mut waiter)
                .await
            {
                self.work_v1(held, job).await;
            }
        }
    }

    #[tracing::instrument(name = "job", skip_all, fields(job_id = job.lease.job_id,
        kind = job.kind.as_str(), target = %job.target, account = %held.account.name,
        attempt = job.attempt))]
    async fn work_v1(&self, held: &Arc<HeldV1>, job: LeasedJob) {
        let started = Instant::now();
        let heartbeat = self.job_heartbeat(&job);
        let crawl = V1Crawl {
            client: &held.client,
            pool: &self.pool,
            queue: &self.queue,
            job: &job,
            shutdown: &self.shutdown,
            metrics: &self.metrics,
            page_count: self.config.v1.page_count,
        };
        let result = crawl.run().await;
        heartbeat.abort();
        let outcome = self.settle_v1(held, &job, result).await;
        self.record(job.kind, outcome, started);
    }

    /// Turns a v1 crawl's result into a queue write; returns the outcome label.
    async fn settle_v1(
        &self,
        held: &HeldV1,
        job: &LeasedJob,
        result: Result<CrawlReport, V1CrawlError>,
    ) -> &'static str {
        let lease = &job.lease;
        let written = match result {
            Ok(report) => {
                tracing::info!(items = report.items, pages = report.pages, "job completed");
                self.queue.complete(lease).await.map(|()| "completed")
            }
            Err(V1CrawlError::Stopping) => {
                tracing::info!("stopping: job released with its checkpoint");
                self.queue.release(lease).await.map(|()| "released")
            }
            Err(V1CrawlError::Api(V1Error::LoginRefused { message, .. })) => {
                // The job is not at fault: it goes back for another account.
                held.verdict.set(AccountVerdict::Checkpoint(format!(
                    "v1 login refused: {message}"
                )));
                self.queue.release(lease).await.map(|()| "released")
            }
            Err(V1CrawlError::Api(V1Error::NotFound(what))) => {
                self.fail(job, &format!("not found: {what}"), Failure::Permanent)
                    .await
            }
            Err(V1CrawlError::Api(V1Error::Forbidden(what))) => self.hidden(job, &what).await,
            Err(V1CrawlError::Api(e @ V1Error::Refused { .. })) => {
                self.fail(job, &e.to_string(), Failure::Permanent).await
            }
            Err(V1CrawlError::Api(V1Error::Ledger(e))) => self.ledger_down(lease, &e).await,
            Err(V1CrawlError::Queue(QueueError::LeaseLost { .. })) => Err(QueueError::LeaseLost {
                job_id: lease.job_id,
            }),
            Err(e) => self.fail(job, &e.to_string(), Failure::Retryable).await,
        };
        Self::written(written)
    }
}
