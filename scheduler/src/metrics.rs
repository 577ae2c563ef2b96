//! The scheduler's metrics. Queue depth and age describe the whole queue, so only the maintenance
//! leader exports them (otherwise every scheduler replica would report the same jobs and sums in
//! Grafana would multiply them).

use prometheus::{Gauge, GaugeVec, IntCounter, IntGauge, IntGaugeVec, Opts, Registry};
use trawl_shared::accounts::AccountState;
use trawl_shared::domain::{JobKind, JobState};
use trawl_shared::queue::QueueStats;

pub struct SchedulerMetrics {
    process: Registry,
    leader: Registry,
    pub is_leader: IntGauge,
    pub lease_rescues: IntCounter,
    pub rescue_failures: IntCounter,
    pub pruned_jobs: IntCounter,
    queue_jobs: IntGaugeVec,
    oldest_runnable_age: GaugeVec,
    last_refresh: Gauge,
    accounts: IntGaugeVec,
    proxies: IntGaugeVec,
}

/// The label used for a kind this binary does not know (a row written by a newer version).
const UNKNOWN_KIND: &str = "unknown";

impl SchedulerMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let process = Registry::new();
        let leader = Registry::new();
        let is_leader = IntGauge::with_opts(Opts::new(
            "trawl_scheduler_leader",
            "1 when this scheduler holds the maintenance leader lock",
        ))?;
        let lease_rescues = IntCounter::with_opts(Opts::new(
            "trawl_queue_lease_rescues_total",
            "Jobs whose lease expired and were put back in the queue by this scheduler",
        ))?;
        let rescue_failures = IntCounter::with_opts(Opts::new(
            "trawl_queue_rescued_jobs_failed_total",
            "Jobs whose lease expired with no attempts left, failed by this scheduler",
        ))?;
        let pruned_jobs = IntCounter::with_opts(Opts::new(
            "trawl_queue_pruned_jobs_total",
            "Finished jobs removed after the retention period by this scheduler",
        ))?;
        let build_info = IntGauge::with_opts(
            Opts::new("trawl_build_info", "Build of this process (always 1)")
                .const_label("version", env!("CARGO_PKG_VERSION"))
                .const_label("role", "scheduler"),
        )?;
        build_info.set(1);
        process.register(Box::new(is_leader.clone()))?;
        process.register(Box::new(lease_rescues.clone()))?;
        process.register(Box::new(rescue_failures.clone()))?;
        process.register(Box::new(pruned_jobs.clone()))?;
        process.register(Box::new(build_info))?;

        let queue_jobs = IntGaugeVec::new(
            Opts::new("trawl_queue_jobs", "Jobs in the queue by kind and state"),
            &["kind", "state"],
        )?;
        let oldest_runnable_age = GaugeVec::new(
            Opts::new(
                "trawl_queue_oldest_runnable_age_seconds",
                "Seconds since the oldest queued job that may run now became runnable (0 when none)",
            ),
            &["kind"],
        )?;
        let last_refresh = Gauge::with_opts(Opts::new(
            "trawl_queue_stats_refreshed_timestamp_seconds",
            "Unix time of the last queue statistics refresh",
        ))?;
        let accounts = IntGaugeVec::new(
            Opts::new("trawl_accounts", "Instagram accounts by state"),
            &["state"],
        )?;
        leader.register(Box::new(accounts.clone()))?;
        let proxies = IntGaugeVec::new(
            Opts::new(
                "trawl_proxies",
                "Forward proxies by state (down: a worker could not get through it; its accounts rest)",
            ),
            &["state"],
        )?;
        leader.register(Box::new(proxies.clone()))?;
        leader.register(Box::new(queue_jobs.clone()))?;
        leader.register(Box::new(oldest_runnable_age.clone()))?;
        leader.register(Box::new(last_refresh.clone()))?;
        let metrics = Self {
            process,
            leader,
            is_leader,
            lease_rescues,
            rescue_failures,
            pruned_jobs,
            queue_jobs,
            oldest_runnable_age,
            last_refresh,
            accounts,
            proxies,
        };
        metrics.reset_queue();
        metrics.set_accounts(&[]);
        metrics.set_proxies(&[]);
        Ok(metrics)
    }

    /// Every known kind and state at zero, so dashboards see series before the first job.
    fn reset_queue(&self) {
        for kind in JobKind::ALL {
            for state in JobState::ALL {
                self.queue_jobs
                    .with_label_values(&[kind.as_str(), state.as_str()])
                    .set(0);
            }
            self.oldest_runnable_age
                .with_label_values(&[kind.as_str()])
                .set(0.0);
        }
    }

    /// Replaces the queue gauges with a fresh snapshot.
    pub fn set_queue(&self, stats: &QueueStats) {
        self.queue_jobs.reset();
        self.oldest_runnable_age.reset();
        self.reset_queue();
        for row in &stats.rows {
            let kind = row
                .kind
                .parse::<JobKind>()
                .map(JobKind::as_str)
                .unwrap_or(UNKNOWN_KIND);
            self.queue_jobs
                .with_label_values(&[kind, row.state.as_str()])
                .add(row.jobs);
            if let Some(age) = row.oldest_runnable_age_seconds {
                let gauge = self.oldest_runnable_age.with_label_values(&[kind]);
                gauge.set(gauge.get().max(age));
            }
        }
        self.last_refresh.set(chrono::Utc::now().timestamp() as f64);
    }

    /// Replaces the accounts gauge; states not in `counts` are 0.
    pub fn set_accounts(&self, counts: &[(AccountState, i64)]) {
        for state in AccountState::ALL {
            let n = counts
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            self.accounts.with_label_values(&[state.as_str()]).set(n);
        }
    }

    /// Replaces the proxies gauge (`up`, `down`); states not in `counts` are 0.
    pub fn set_proxies(&self, counts: &[(String, i64)]) {
        for state in ["up", "down"] {
            let n = counts
                .iter()
                .find(|(s, _)| s == state)
                .map_or(0, |(_, n)| *n);
            self.proxies.with_label_values(&[state]).set(n);
        }
    }

    /// The text exposition; queue families only when this process leads.
    pub fn render(&self, leader: bool) -> String {
        if leader {
            trawl_shared::metrics::render(&[&self.process, &self.leader])
        } else {
            trawl_shared::metrics::render(&[&self.process])
        }
    }
}
