//! Singleton maintenance under the advisory-lock leader: rescue expired leases, prune finished
//! jobs past retention, forget rate-limit grants older than the history, refresh queue metrics. Any number of schedulers may run; one does this.
//! Recurring jobs need no service here: completing one queues its successor in the same
//! transaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use trawl_shared::leader::{LeaderElector, MAINTENANCE_LOCK_KEY};
use trawl_shared::limiter::Ledger;
use trawl_shared::queue::Queue;
use trawl_shared::shutdown::Shutdown;

use crate::metrics::SchedulerMetrics;

pub struct Maintenance {
    pub queue: Queue,
    pub ledger: Ledger,
    pub interval: Duration,
    pub retention: Duration,
    pub metrics: Arc<SchedulerMetrics>,
    pub is_leader: Arc<AtomicBool>,
}

impl Maintenance {
    pub async fn run(self, shutdown: Shutdown) {
        let mut elector = LeaderElector::new(
            self.queue.pool().clone(),
            "trawl-scheduler-leader",
            MAINTENANCE_LOCK_KEY,
        );
        let stop = shutdown.clone().wait();
        tokio::pin!(stop);
        loop {
            let leader = elector.check().await;
            self.is_leader.store(leader, Ordering::Relaxed);
            self.metrics.is_leader.set(i64::from(leader));
            if leader {
                self.tick().await;
            }
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
        elector.resign().await;
        self.is_leader.store(false, Ordering::Relaxed);
        self.metrics.is_leader.set(0);
    }

    /// One pass. Each step logs its own failure and the others still run: a database hiccup must
    /// not stop rescues for good.
    async fn tick(&self) {
        match self.queue.rescue_expired().await {
            Ok(report) => {
                if report.requeued + report.failed > 0 {
                    tracing::info!(
                        requeued = report.requeued,
                        failed = report.failed,
                        "rescued jobs with expired leases"
                    );
                }
                self.metrics.lease_rescues.inc_by(report.requeued);
                self.metrics.rescue_failures.inc_by(report.failed);
            }
            Err(e) => tracing::warn!(error = %e, "lease rescue failed"),
        }
        match self.queue.prune_finished(self.retention).await {
            Ok(n) => self.metrics.pruned_jobs.inc_by(n),
            Err(e) => tracing::warn!(error = %e, "pruning finished jobs failed"),
        }
        if let Err(e) = self.ledger.prune().await {
            tracing::warn!(error = %e, "pruning the rate-limit ledger failed");
        }
        match self.queue.stats().await {
            Ok(stats) => self.metrics.set_queue(&stats),
            Err(e) => tracing::warn!(error = %e, "refreshing queue metrics failed"),
        }
        match trawl_shared::accounts::count_by_state(self.queue.pool()).await {
            Ok(counts) => self.metrics.set_accounts(&counts),
            Err(e) => tracing::warn!(error = %e, "refreshing account metrics failed"),
        }
        match trawl_shared::proxies::count_by_state(self.queue.pool()).await {
            Ok(counts) => self.metrics.set_proxies(&counts),
            Err(e) => tracing::warn!(error = %e, "refreshing proxy metrics failed"),
        }
    }
}
