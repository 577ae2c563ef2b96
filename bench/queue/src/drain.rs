//! The side-by-side workload: N no-op jobs enqueued in bulk, then drained by W concurrent workers,
//! with every figure read back from the database's own timestamps, so that Trawl and its peer are
//! measured the same way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use trawl_shared::queue::Queue;

/// One drain, as read from the database afterwards.
#[derive(Debug, Clone, Copy)]
pub struct DrainFigures {
    pub enqueue_rate: f64,
    pub finished: usize,
    pub drain_rate: f64,
    /// Seconds from a job becoming runnable (or the drain starting, if later) to its lease.
    pub lease_wait_p50: f64,
    pub lease_wait_p99: f64,
    /// Jobs/s over the first 10% of the backlog.
    pub first_10_rate: Option<f64>,
    /// Jobs/s over the last 10% of the backlog; `None` when the drain did not finish.
    pub last_10_rate: Option<f64>,
    pub hit_cap: bool,
}

/// Reads the figures from `source`, a query returning `run_at`, `leased_at` and `finished_at` for
/// every job of the run.
pub async fn figures_from_db(
    pool: &PgPool,
    source: &str,
    drain_start: DateTime<Utc>,
    n: usize,
    enqueue_rate: f64,
    hit_cap: bool,
) -> Result<DrainFigures> {
    let sql = format!(
        "WITH s AS ({source})
         SELECT count(*) FILTER (WHERE finished_at IS NOT NULL),
                percentile_cont(0.5) WITHIN GROUP (
                    ORDER BY extract(epoch FROM leased_at - greatest(run_at, $1))::float8)
                    FILTER (WHERE leased_at IS NOT NULL),
                percentile_cont(0.99) WITHIN GROUP (
                    ORDER BY extract(epoch FROM leased_at - greatest(run_at, $1))::float8)
                    FILTER (WHERE leased_at IS NOT NULL),
                extract(epoch FROM max(finished_at) - $1)::float8,
                extract(epoch FROM max(finished_at) - percentile_disc(0.9) WITHIN GROUP (
                    ORDER BY finished_at) FILTER (WHERE finished_at IS NOT NULL))::float8,
                (SELECT extract(epoch FROM f.finished_at - $1)::float8 FROM s AS f
                  WHERE f.finished_at IS NOT NULL ORDER BY f.finished_at OFFSET $2 LIMIT 1)
         FROM s"
    );
    type Row = (
        i64,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Option<f64>,
    );
    let tenth = n / 10;
    let (finished, p50, p99, elapsed, last_10, first_10): Row =
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(drain_start)
            .bind(i64::try_from(tenth.saturating_sub(1)).unwrap_or(0))
            .fetch_one(pool)
            .await?;
    let finished = usize::try_from(finished).unwrap_or(0);
    let elapsed = elapsed.unwrap_or(f64::INFINITY).max(1e-6);
    let complete = finished >= n && !hit_cap;
    Ok(DrainFigures {
        enqueue_rate,
        finished,
        drain_rate: finished as f64 / elapsed,
        lease_wait_p50: p50.unwrap_or(f64::NAN),
        lease_wait_p99: p99.unwrap_or(f64::NAN),
        first_10_rate: first_10.map(|s| tenth as f64 / s.max(1e-6)),
        last_10_rate: complete
            .then(|| last_10.map(|s| (n - n * 9 / 10) as f64 / s.max(1e-6)))
            .flatten(),
        hit_cap: !complete,
    })
}

/// Enqueues `n` jobs into Trawl's queue, freshens the planner's statistics, and returns the
/// enqueue rate and the database time the drain starts at: what every drain of Trawl's queue
/// (its own leasers, apalis workers on it) begins with.
pub async fn enqueue_for_drain(
    pool: &PgPool,
    queue: &Queue,
    n: usize,
) -> Result<(f64, DateTime<Utc>)> {
    let enqueue_rate = crate::enqueue(queue, n).await?;
    sqlx::query("VACUUM ANALYZE jobs").execute(pool).await?;
    let drain_start: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(pool)
        .await?;
    Ok((enqueue_rate, drain_start))
}

/// Trawl's side: `submit_many` in chunks of 5,000, then W leasers that lease `batch` and complete
/// them in one statement each, until the queue is empty or `cap` has passed.
pub async fn trawl(
    pool: &PgPool,
    queue: &Queue,
    n: usize,
    workers: usize,
    batch: usize,
    cap: Duration,
) -> Result<DrainFigures> {
    let (enqueue_rate, drain_start) = enqueue_for_drain(pool, queue, n).await?;
    let deadline = Instant::now() + cap;
    let hit_cap = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let queue = queue.clone();
        let hit_cap = hit_cap.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                if Instant::now() >= deadline {
                    hit_cap.store(true, Ordering::Relaxed);
                    break;
                }
                let leased = queue.lease(&format!("bench-{w}"), batch, None).await?;
                if leased.is_empty() {
                    break;
                }
                let leases: Vec<_> = leased.iter().map(|j| j.lease).collect();
                queue.complete_many(&leases).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    figures_from_db(
        pool,
        "SELECT run_at, attempted_at AS leased_at, finished_at FROM jobs",
        drain_start,
        n,
        enqueue_rate,
        hit_cap.load(Ordering::Relaxed),
    )
    .await
}
