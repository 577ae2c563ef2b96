//! A custom crawl handler as an apalis worker on Trawl's queue: fetches each `profile` job's
//! `web_profile_info` from the simulator, with the shared rate limiter in front, and prints the
//! follower count. A missing profile fails its job for good; a 429 or a network error retries it
//! with the queue's backoff.
//!
//! Run it against `trawl sim` and a database migrated by Trawl:
//!
//! ```sh
//! trawl sim --seed 1 --users 200 --listen 127.0.0.1:8443 &
//! trawl sim users --seed 1 --users 200 --count 5          # some usernames to crawl
//! DATABASE_URL=postgres://… SIM_URL=http://127.0.0.1:8443 \
//!   cargo run -p apalis-trawl --example crawl_profiles -- USERNAME…
//! ```
//!
//! It submits a `profile` job per username (through the same validation and dedup as the API),
//! crawls until none is left and stops. `time_scale` is 0.01, as in `trawl demo`, so start the
//! simulator with a matching `--time-scale 0.01` to see the windows in action.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use apalis_trawl::apalis_core::task::data::Data;
use apalis_trawl::apalis_core::worker::builder::WorkerBuilder;
use apalis_trawl::apalis_core::worker::context::WorkerContext;
use apalis_trawl::{Config, LimitLayer, TrawlBackend, TrawlJobError, TrawlSink, TrawlTask};
use trawl_shared::config::LimiterConfig;
use trawl_shared::limiter::metrics::LimiterMetrics;
use trawl_shared::limiter::{Limiter, QueryType, Request};
use trawl_shared::queue::{Queue, QueueSettings, QueueStats};
use trawl_shared::{JobKind, JobSpec, JobState};

#[derive(Clone)]
struct Sim {
    http: reqwest::Client,
    base: String,
}

async fn crawl_profile(task: TrawlTask, sim: Data<Sim>) -> Result<(), TrawlJobError> {
    // A validated username is letters, digits, '.' and '_': nothing to escape.
    let url = format!(
        "{}/api/v1/users/web_profile_info/?username={}",
        sim.base, task.target
    );
    let answer = sim
        .http
        .get(url)
        .send()
        .await
        .map_err(|e| TrawlJobError::Retry(e.to_string()))?;
    match answer.status().as_u16() {
        200 => {}
        404 => {
            return Err(TrawlJobError::Permanent(format!(
                "no profile {}",
                task.target
            )));
        }
        status => return Err(TrawlJobError::Retry(format!("HTTP {status}"))),
    }
    let body: serde_json::Value = answer
        .json()
        .await
        .map_err(|e| TrawlJobError::Retry(e.to_string()))?;
    let followers = &body["data"]["user"]["edge_followed_by"]["count"];
    println!(
        "{}: {followers} followers (attempt {})",
        task.target, task.attempt
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let database_url = std::env::var("DATABASE_URL").context("DATABASE_URL is not set")?;
    let sim_url = std::env::var("SIM_URL").unwrap_or_else(|_| "http://127.0.0.1:8443".into());
    let pool = sqlx::PgPool::connect(&database_url).await?;
    let queue = Queue::new(pool.clone(), QueueSettings::default());

    let sink = TrawlSink::new(queue.clone());
    for username in std::env::args().skip(1) {
        let spec: JobSpec = serde_json::from_value(serde_json::json!({
            "kind": "profile", "target": username,
        }))?;
        let submitted = sink.push(spec).await?;
        println!(
            "job {} for {username} (new: {})",
            submitted.id, submitted.created
        );
    }

    let limits = LimiterConfig {
        time_scale: 0.01,
        ..LimiterConfig::default()
    };
    let limiter = Arc::new(Limiter::new(
        pool.clone(),
        &limits,
        Arc::new(LimiterMetrics::new()?),
    ));
    let worker = WorkerBuilder::new("crawl-profiles")
        .backend(TrawlBackend::<TrawlTask>::new(
            queue.clone(),
            Config::default().kinds([JobKind::Profile]),
        ))
        .data(Sim {
            http: reqwest::Client::new(),
            base: sim_url.trim_end_matches('/').to_owned(),
        })
        // Anonymous web requests: Instaloader's `other` window, counted for one identity.
        .layer(LimitLayer::new(
            limiter,
            Duration::from_secs(5),
            |_: &TrawlTask| Request {
                query_type: QueryType::Other,
                account: "anonymous".into(),
                egress: None,
            },
        ))
        .build(crawl_profile);

    // Stops the worker once no profile job is queued or running.
    let stop_when_idle = move |worker: WorkerContext| {
        let pool = pool.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                // A read that fails is tried again at the next tick.
                let Ok(stats) = QueueStats::read(&pool).await else {
                    continue;
                };
                let busy = stats.rows.iter().any(|r| {
                    r.kind == JobKind::Profile.as_str()
                        && matches!(r.state, JobState::Queued | JobState::Running)
                        && r.jobs > 0
                });
                if !busy {
                    return worker.stop();
                }
            }
        }
    };
    worker.run_with_ctx(stop_when_idle).await?;
    Ok(())
}
