//! What the benchmark measures from the side while the fleet crawls: lease latency (the workers'
//! own lease statement, leased and given straight back), ledger decisions on probe scopes of its
//! own, and a monitor of PostgreSQL connections and the processes' memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use trawl_shared::JobKind;
use trawl_shared::limiter::{Decision, Ledger, QueryType, Request};
use trawl_shared::queue::Queue;

use crate::procs;

/// The lease owner the benchmark's probe leases carry.
pub const PROBE_OWNER: &str = "bench-fleet-probe";

fn ticker(every: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(every);
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

/// Leases one job every `every` with the statement a worker uses (every kind), and releases it at
/// once; returns the lease latencies.
pub async fn leases(queue: Queue, until: Instant, every: Duration) -> Result<Vec<Duration>> {
    let mut tick = ticker(every);
    let mut samples = Vec::new();
    while Instant::now() < until {
        tick.tick().await;
        let started = Instant::now();
        let leased = queue.lease(PROBE_OWNER, 1, Some(&JobKind::ALL)).await?;
        samples.push(started.elapsed());
        for job in leased {
            queue.release(&job.lease).await?;
        }
    }
    Ok(samples)
}

/// Ledger decisions and how they went.
#[derive(Debug, Default)]
pub struct LedgerSamples {
    pub latencies: Vec<Duration>,
    pub grants: u64,
    pub refusals: u64,
}

/// One `trawl_limiter_acquire` every `every`, round-robin over `scopes` probe accounts that no
/// worker holds (the simulator never sees them), so the probes share the ledger's tables and locks
/// with the fleet without spending its windows.
pub async fn ledger(
    ledger: Ledger,
    scopes: usize,
    until: Instant,
    every: Duration,
) -> Result<LedgerSamples> {
    let mut tick = ticker(every);
    let mut out = LedgerSamples::default();
    let mut k = 0usize;
    while Instant::now() < until {
        tick.tick().await;
        let request = Request {
            query_type: QueryType::Other,
            account: format!("fleet-probe{}", k % scopes.max(1)),
            egress: None,
        };
        k += 1;
        let started = Instant::now();
        let decision = ledger.try_acquire(&request, None).await?;
        out.latencies.push(started.elapsed());
        match decision {
            Decision::Granted { .. } => out.grants += 1,
            Decision::Wait { .. } => out.refusals += 1,
        }
    }
    Ok(out)
}

/// Peaks seen by the monitor.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// Client backends on the whole server (the benchmark's own included).
    pub peak_backends: i64,
    /// Sessions whose last statement was a LISTEN (the workers' job wake-ups).
    pub peak_listeners: i64,
    /// Per process: the most connections to PostgreSQL it held at one sample.
    pub connections: HashMap<u32, usize>,
    /// Per process: the largest VmRSS seen (KiB).
    pub rss_kib: HashMap<u32, u64>,
}

pub struct Monitor {
    observed: Arc<Mutex<Observed>>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<Result<()>>,
}

impl Monitor {
    /// Samples `pg_stat_activity` every second and `/proc` of `pids` every `proc_every`. Connections
    /// per process are counted only when the server listens on a known local port.
    pub fn start(pool: PgPool, pids: Vec<u32>, pg_port: Option<u16>, proc_every: Duration) -> Self {
        let observed = Arc::new(Mutex::new(Observed::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let observed = observed.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut tick = ticker(Duration::from_secs(1));
                let mut last_proc: Option<Instant> = None;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let (backends, listeners): (i64, i64) = sqlx::query_as(
                        "SELECT count(*) FILTER (WHERE backend_type = 'client backend'),
                                count(*) FILTER (WHERE backend_type = 'client backend'
                                                   AND query LIKE 'LISTEN %')
                         FROM pg_stat_activity",
                    )
                    .fetch_one(&pool)
                    .await?;
                    let due = last_proc.is_none_or(|t| t.elapsed() >= proc_every);
                    let per_pid = match pg_port {
                        Some(port) if due => procs::pg_connections(&pids, port),
                        _ => HashMap::new(),
                    };
                    let memory: Vec<(u32, procs::Memory)> = if due {
                        last_proc = Some(Instant::now());
                        pids.iter()
                            .filter_map(|&p| procs::memory(p).map(|m| (p, m)))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    let Ok(mut o) = observed.lock() else {
                        anyhow::bail!("monitor state poisoned");
                    };
                    o.peak_backends = o.peak_backends.max(backends);
                    o.peak_listeners = o.peak_listeners.max(listeners);
                    for (pid, n) in per_pid {
                        let e = o.connections.entry(pid).or_default();
                        *e = (*e).max(n);
                    }
                    for (pid, m) in memory {
                        let e = o.rss_kib.entry(pid).or_default();
                        *e = (*e).max(m.rss_kib);
                    }
                }
                Ok(())
            })
        };
        Self {
            observed,
            stop,
            task,
        }
    }

    pub async fn finish(self) -> Result<Observed> {
        self.stop.store(true, Ordering::Relaxed);
        let Self { observed, task, .. } = self;
        task.await??;
        let o = observed.lock().map(|o| o.clone()).unwrap_or_default();
        Ok(o)
    }
}
