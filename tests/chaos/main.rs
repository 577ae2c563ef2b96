//! The chaos scenarios R1–R8 (docs/reliability.md): real `trawl` processes, the simulator at scaled time and a
//! PostgreSQL of the test's own, with one fault staged per scenario. Each ends with the same
//! verdict, from the database and the simulator's oracle: every job terminal with a reason, every
//! item the crawl covers stored exactly once (none missing, none unexpected), zero 429s and no
//! window above its cap.
//!
//! `cargo test` runs the short versions. `TRAWL_CHAOS_LONG=1` runs the long ones (bigger crawls,
//! longer faults) and `TRAWL_CHAOS_FIGURES=FILE` appends each scenario's figures to FILE as a
//! Markdown table row; `bench/chaos/run.sh` does both and writes `bench/RESULTS.md`.

#[path = "../support/mod.rs"]
mod support;

mod failover_r8;
mod partition;
mod r1_kill_storm;
mod r2_database_restart;
mod r3_database_unreachable;
mod r4_fault_storm;
mod r5_clock_skew;
mod r6_graceful_stop;
mod r7_scheduler_loss;

use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;

use support::Fleet;
use trawl_shared::db;
use trawl_shared::pgcluster::{Durability, PrivateCluster};
use trawl_shared::testing::TestDb;

/// Whether to run the long versions (bench/chaos).
pub fn long() -> bool {
    std::env::var("TRAWL_CHAOS_LONG").is_ok_and(|v| v == "1")
}

/// A migrated database on a private cluster that only this test uses (to restart or cut off).
pub async fn own_cluster() -> (PrivateCluster, TestDb) {
    let cluster = tokio::task::spawn_blocking(|| PrivateCluster::start(Durability::Throwaway))
        .await
        .expect("cluster task")
        .expect("a private cluster");
    let url = cluster.url("postgres");
    let pool = db::connect_url(&url, 10, Duration::from_secs(10))
        .await
        .expect("connect to the private cluster");
    db::migrate(&pool).await.expect("migrate");
    (
        cluster,
        TestDb {
            pool,
            url,
            name: "postgres".into(),
        },
    )
}

/// What a scenario ended with, from the database and the simulator's oracle.
#[derive(Debug, Default)]
pub struct Verdict {
    pub jobs: i64,
    /// Jobs still queued or running: lost, as far as the crawl's user can tell.
    pub unfinished: i64,
    pub failed: i64,
    pub failed_without_reason: i64,
    pub items_expected: usize,
    pub items_stored: usize,
    pub items_missing: usize,
    /// Stored items the crawl does not cover (a duplicate under another id, or garbage).
    pub items_unexpected: usize,
    pub requests: u64,
    pub responses_429: u64,
    /// Windows whose busiest moment held more than the cap.
    pub overshoots: usize,
    /// The busiest window's use of its cap, over every key (1.0 = exactly full).
    pub busiest: f64,
}

impl Verdict {
    /// Judges the crawl of `posts` (and `comments`) on `fleet`, counting only jobs that match
    /// `jobs_filter` (SQL over `jobs`; "true" for all).
    pub async fn of(
        fleet: &Fleet,
        jobs_filter: &str,
        posts: &BTreeSet<i64>,
        comments: Option<&BTreeSet<i64>>,
    ) -> Self {
        let (jobs, unfinished, failed, failed_without_reason): (i64, i64, i64, i64) =
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT count(*),
                        count(*) FILTER (WHERE state IN ('queued', 'running')),
                        count(*) FILTER (WHERE state = 'failed'),
                        count(*) FILTER (WHERE state = 'failed'
                                          AND coalesce(last_error, '') = '')
                   FROM jobs WHERE {jobs_filter}"
            )))
            .fetch_one(fleet.pool())
            .await
            .expect("job counts");
        let mut expected: BTreeSet<(u8, i64)> = posts.iter().map(|&p| (0, p)).collect();
        let mut stored: BTreeSet<(u8, i64)> = fleet
            .ids("SELECT id FROM ig_posts")
            .await
            .into_iter()
            .map(|p| (0, p))
            .collect();
        if let Some(comments) = comments {
            expected.extend(comments.iter().map(|&c| (1, c)));
            stored.extend(
                fleet
                    .ids("SELECT id FROM ig_comments")
                    .await
                    .into_iter()
                    .map(|c| (1, c)),
            );
        }
        let oracle = fleet.oracle().await;
        let mut overshoots = 0;
        let mut busiest = 0.0f64;
        for peak in oracle["peaks"].as_array().expect("oracle peaks") {
            let (most, cap) = (
                peak["most"].as_u64().unwrap_or(0),
                peak["cap"].as_u64().unwrap_or(0),
            );
            if most > cap {
                overshoots += 1;
            }
            if cap > 0 {
                busiest = busiest.max(most as f64 / cap as f64);
            }
        }
        Self {
            jobs,
            unfinished,
            failed,
            failed_without_reason,
            items_expected: expected.len(),
            items_stored: stored.len(),
            items_missing: expected.difference(&stored).count(),
            items_unexpected: stored.difference(&expected).count(),
            requests: oracle["requests"].as_u64().unwrap_or(0),
            responses_429: oracle["responses_429"].as_u64().unwrap_or(0),
            overshoots,
            busiest,
        }
    }

    /// Panics unless nothing was lost, failed, duplicated or overshot.
    pub fn assert_clean(&self, fleet: &Fleet) {
        self.assert_clean_allowing_failures(fleet);
        assert_eq!(
            self.failed,
            0,
            "no job fails; logs in {}",
            fleet.logs.display()
        );
    }

    /// As [`Verdict::assert_clean`], but failed jobs are allowed when they carry a reason.
    pub fn assert_clean_allowing_failures(&self, fleet: &Fleet) {
        let logs = fleet.logs.display();
        assert!(self.jobs > 0, "the scenario submitted jobs");
        assert_eq!(
            self.unfinished, 0,
            "every job is terminal; {self:?}; logs in {logs}"
        );
        assert_eq!(
            self.failed_without_reason, 0,
            "every failed job says why; logs in {logs}"
        );
        assert_eq!(
            (self.items_missing, self.items_unexpected),
            (0, 0),
            "every item stored exactly once; {self:?}; logs in {logs}"
        );
        assert_eq!(self.responses_429, 0, "zero 429s; logs in {logs}");
        assert_eq!(
            self.overshoots, 0,
            "no window above its cap; logs in {logs}"
        );
    }

    /// Appends this scenario's row to `TRAWL_CHAOS_FIGURES` when it is set.
    pub fn record(&self, scenario: &str, notes: &str) {
        eprintln!("{scenario}: {self:?}; {notes}");
        let Ok(path) = std::env::var("TRAWL_CHAOS_FIGURES") else {
            return;
        };
        let row = format!(
            "| {scenario} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1}% | {notes} |\n",
            self.jobs,
            self.unfinished,
            self.failed,
            self.items_expected,
            self.items_missing,
            self.items_unexpected,
            self.requests,
            self.responses_429,
            self.overshoots,
            self.busiest * 100.0,
        );
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("figures file");
        file.write_all(row.as_bytes()).expect("write figures");
    }
}

/// How long after `since` (a database time) the ledger granted its first request, polling until
/// `limit` has passed since `started`; panics with `what` when nothing was granted by then.
pub async fn first_grant_after(
    fleet: &Fleet,
    since: chrono::DateTime<chrono::Utc>,
    started: std::time::Instant,
    limit: Duration,
    what: &str,
) -> Duration {
    loop {
        let granted: i64 =
            sqlx::query_scalar("SELECT count(*) FROM limiter_grants WHERE granted_at > $1")
                .bind(since)
                .fetch_one(fleet.pool())
                .await
                .expect("count grants");
        if granted > 0 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{what}: crawling did not resume within {limit:?}; logs in {}",
            fleet.logs.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sums one metric of every process's `/metrics` on `ports` over the label sets whose labels
/// contain `label` (all when `None`).
pub async fn sum_metric(ports: &[u16], name: &str, label: Option<&str>) -> f64 {
    let http = reqwest::Client::new();
    let mut total = 0.0;
    for port in ports {
        let body = http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .expect("a /metrics page")
            .text()
            .await
            .expect("metrics body");
        for line in body.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once("} ").unwrap_or((r, "0")),
                None => ("", rest.trim()),
            };
            if label.is_none_or(|l| labels.contains(l)) {
                total += value.trim().parse::<f64>().unwrap_or(0.0);
            }
        }
    }
    total
}

/// Panics if any worker log shows a panic.
pub fn assert_no_panics(fleet: &Fleet) {
    for i in 0..fleet.worker_count() {
        assert!(
            !fleet.worker_log(i).contains("panicked"),
            "worker {i} panicked; logs in {}",
            fleet.logs.display()
        );
    }
}
