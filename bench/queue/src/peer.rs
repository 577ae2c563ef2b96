//! The peer: apalis-postgres, driven the way its documentation shows (`PostgresStorage`, `apalis`
//! workers), on a fresh database with its own migrations; and apalis's same workers on Trawl's
//! queue (`apalis-trawl`), so that the worker is the same on both sides and only the storage
//! differs. Built only with `--features apalis`, so nothing else in the workspace depends on it.

use std::time::{Duration, Instant};

use anyhow::Result;
use apalis::prelude::*;
use apalis_postgres::{Config, PostgresStorage};
use futures::stream::{self, StreamExt};
use sqlx::PgPool;

use crate::drain::{DrainFigures, enqueue_for_drain, figures_from_db};
use apalis_trawl::{TrawlBackend, TrawlJobError, TrawlTask};
use trawl_shared::queue::Queue;

/// The settings run: the defaults, and the best its documentation offers (bigger fetch batches,
/// NOTIFY instead of waiting for the next poll).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settings {
    Defaults,
    Tuned,
}

impl Settings {
    pub fn label(self) -> &'static str {
        match self {
            Settings::Defaults => "apalis-postgres (defaults: batch 10)",
            Settings::Tuned => "apalis-postgres (tuned: batch 100, pubsub)",
        }
    }

    fn storage(self, pool: &PgPool) -> PostgresStorage<u64> {
        match self {
            Settings::Defaults => PostgresStorage::new(pool),
            Settings::Tuned => PostgresStorage::new(pool)
                .with_config(Config::default().queue("bench").batch_size(100)),
        }
    }
}

async fn noop(_job: u64) -> Result<(), BoxDynError> {
    Ok(())
}

/// Enqueues `n` jobs with `push_all`, then drains them with `workers` apalis workers, stopping at
/// `cap` if they are not done by then.
pub async fn run(
    pool: &PgPool,
    settings: Settings,
    n: usize,
    workers: usize,
    cap: Duration,
) -> Result<DrainFigures> {
    PostgresStorage::<()>::setup(pool).await?;
    let mut storage = settings.storage(pool);
    let started = Instant::now();
    let mut items = stream::iter(0..n as u64).map(|i| TaskBuilder::new(i).build());
    storage.push_all(&mut items).await?;
    let enqueue_rate = n as f64 / started.elapsed().as_secs_f64();
    sqlx::query("VACUUM ANALYZE apalis.jobs")
        .execute(pool)
        .await?;

    let drain_start: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(pool)
        .await?;
    let mut tasks = Vec::new();
    // The two settings give backends of different types, hence a macro rather than a function.
    macro_rules! spawn_workers {
        ($backend:expr) => {
            for w in 0..workers {
                let worker = WorkerBuilder::new(format!("bench-{w}"))
                    .backend($backend)
                    .build(noop);
                tasks.push(tokio::spawn(async move {
                    let _ = worker.run().await;
                }));
            }
        };
    }
    match settings {
        Settings::Defaults => spawn_workers!(storage.clone()),
        // Each worker gets its own LISTEN connection, as the documentation describes.
        Settings::Tuned => spawn_workers!(storage.clone().with_pubsub()),
    }
    let hit_cap = drain_then_stop(
        pool,
        "SELECT count(*) FROM apalis.jobs WHERE done_at IS NOT NULL",
        n,
        cap,
        tasks,
    )
    .await?;
    figures_from_db(
        pool,
        "SELECT run_at, lock_at AS leased_at, done_at AS finished_at FROM apalis.jobs",
        drain_start,
        n,
        enqueue_rate,
        hit_cap,
    )
    .await
}

/// Waits until `done_sql` counts `n` finished jobs or `cap` passes, then stops the workers;
/// returns whether the cap was hit.
async fn drain_then_stop(
    pool: &PgPool,
    done_sql: &'static str,
    n: usize,
    cap: Duration,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) -> Result<bool> {
    let deadline = Instant::now() + cap;
    let mut hit_cap = true;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let done: i64 = sqlx::query_scalar(done_sql).fetch_one(pool).await?;
        if done as usize >= n {
            hit_cap = false;
            break;
        }
    }
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(hit_cap)
}

async fn noop_trawl(_job: TrawlTask) -> Result<(), TrawlJobError> {
    Ok(())
}

/// The label of [`run_on_trawl`]'s row.
pub fn on_trawl_label(batch: usize) -> String {
    format!("apalis workers on Trawl's queue (apalis-trawl: batch {batch}, NOTIFY)")
}

/// Enqueues `n` jobs as Trawl's own run does, then drains them with `workers` apalis workers on
/// [`TrawlBackend`]: each leases `batch` jobs per statement, and the backend's ack layer writes
/// the completions that arrive together in one statement.
pub async fn run_on_trawl(
    pool: &PgPool,
    queue: &Queue,
    n: usize,
    workers: usize,
    batch: usize,
    cap: Duration,
) -> Result<DrainFigures> {
    let (enqueue_rate, drain_start) = enqueue_for_drain(pool, queue, n).await?;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let worker = WorkerBuilder::new(format!("bench-{w}"))
            .backend(TrawlBackend::<TrawlTask>::new(
                queue.clone(),
                apalis_trawl::Config::default().batch_size(batch),
            ))
            .build(noop_trawl);
        tasks.push(tokio::spawn(async move {
            let _ = worker.run().await;
        }));
    }
    let hit_cap = drain_then_stop(
        pool,
        "SELECT count(*) FROM jobs WHERE state = 'completed'",
        n,
        cap,
        tasks,
    )
    .await?;
    figures_from_db(
        pool,
        "SELECT run_at, attempted_at AS leased_at, finished_at FROM jobs",
        drain_start,
        n,
        enqueue_rate,
        hit_cap,
    )
    .await
}
