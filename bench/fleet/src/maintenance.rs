//! Maintenance at scale: one leader pass (the scheduler's steps, in its order) over a database that
//! holds a million finished jobs, half of them past retention, plus expired leases, a queued
//! backlog and an hour's ledger of a thousand accounts twice over. Each step is timed, and the
//! plans PostgreSQL chose for the statements it ran are captured with `auto_explain` (sent to this
//! client as NOTICEs, which sqlx hands to `tracing`), so the report shows which index each used.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use trawl_bench_common::Server;
use trawl_shared::accounts;
use trawl_shared::config::LimiterConfig;
use trawl_shared::db;
use trawl_shared::limiter::{Ledger, Profile};
use trawl_shared::queue::{Queue, QueueSettings};

/// The scheduler's default retention (7 days); finished jobs are spread over twice that.
const RETENTION: Duration = Duration::from_secs(7 * 86_400);
const ACCOUNTS: usize = 1000;

/// Plans `auto_explain` sent as NOTICEs, in arrival order.
#[derive(Clone, Default)]
pub struct PlanLog(Arc<Mutex<Vec<String>>>);

impl PlanLog {
    fn take(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.0);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "message" && self.0.is_empty() {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: Subscriber> Layer<S> for PlanLog {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != "sqlx::postgres::notice" {
            return;
        }
        let mut m = Message(String::new());
        event.record(&mut m);
        if m.0.contains("plan:")
            && let Ok(mut plans) = self.0.lock()
        {
            plans.push(m.0);
        }
    }
}

/// What was in the database when the pass ran.
#[derive(Debug, Clone)]
pub struct Contents {
    pub finished: usize,
    pub expired: usize,
    pub queued: usize,
    pub grants: usize,
    pub jobs_bytes: i64,
    pub grants_bytes: i64,
    pub load_seconds: f64,
}

/// One step of one pass.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: &'static str,
    pub catch_up: Duration,
    pub catch_up_rows: String,
    pub steady: Duration,
    /// Distinct plans of the statements the step ran (costs removed).
    pub plans: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Figures {
    pub contents: Contents,
    pub steps: Vec<Step>,
    /// Why plans are missing, when they are.
    pub plans_unavailable: Option<String>,
}

/// Fills a fresh database: `finished` finished jobs (one in ten failed) whose `finished_at` grows
/// with their id over twice the retention, so half are past it; `finished / 100` running jobs
/// whose leases expired (one in five on its last attempt); `finished / 20` queued jobs; and
/// `finished` ledger grants of 1,000 accounts over the last two hours (the history keeps one).
async fn fill(pool: &PgPool, finished: usize) -> Result<Contents> {
    let started = Instant::now();
    let n = i64::try_from(finished)?;
    let chunk = 200_000i64;
    let mut from = 0i64;
    while from < n {
        let to = (from + chunk).min(n);
        sqlx::query(
            "INSERT INTO jobs (kind, target, state, run_at, attempt, max_attempts, unique_key,
                               last_error, created_at, updated_at, attempted_at, finished_at)
             SELECT 'profile', 'user' || (i % 10000),
                    CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'completed' END::job_state,
                    f - interval '2 minutes', 1, 3, 'done:' || i,
                    CASE WHEN i % 10 = 0 THEN 'not found: user' END,
                    f - interval '2 minutes', f, f - interval '1 minute', f
             FROM generate_series($1::bigint, $2::bigint - 1) AS i,
                  LATERAL (SELECT now() - make_interval(secs => $4 * 2 * (1 - i::float8 / $3))
                                  - make_interval(secs => random() * 3600) AS f) AS t",
        )
        .bind(from)
        .bind(to)
        .bind(n as f64)
        .bind(RETENTION.as_secs_f64())
        .execute(pool)
        .await?;
        from = to;
    }
    let expired = (n / 100).max(1);
    sqlx::query(
        "INSERT INTO jobs (kind, target, state, attempt, max_attempts, unique_key, lease_owner,
                           lease_token, lease_expires_at, attempted_at)
         SELECT 'profile', 'user' || (i % 10000), 'running',
                CASE WHEN i % 5 = 0 THEN 3 ELSE 1 END, 3, 'run:' || i, 'gone-worker',
                gen_random_uuid(), now() - make_interval(secs => 60 + random() * 600),
                now() - interval '20 minutes'
         FROM generate_series(1, $1::bigint) AS i",
    )
    .bind(expired)
    .execute(pool)
    .await?;
    let queued = (n / 20).max(1);
    sqlx::query(
        "INSERT INTO jobs (kind, target, max_attempts, unique_key)
         SELECT 'profile', 'user' || (i % 10000), 3, 'q:' || i
         FROM generate_series(1, $1::bigint) AS i",
    )
    .bind(queued)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO limiter_grants (scope, query_type, graphql, granted_at)
         SELECT 'account:sim_account' || (i % $2),
                CASE WHEN i % 3 = 0 THEN 'other' ELSE 'qh:97b41c52301f77ce508f55e66d17620e' END,
                i % 3 <> 0,
                now() - make_interval(secs => 7200 * (1 - i::float8 / $1))
         FROM generate_series(1, $1::bigint) AS i",
    )
    .bind(n)
    .bind(ACCOUNTS as i64)
    .execute(pool)
    .await?;
    // Rows as a worker fleet leaves them; the sealed secret is never opened here.
    sqlx::query(
        "INSERT INTO accounts (name, password_sealed, state, lease_owner, lease_token,
                               lease_expires_at)
         SELECT 'sim_account' || i, '\\x00'::bytea,
                CASE WHEN i < 64 THEN 'leased' ELSE 'available' END::account_state,
                CASE WHEN i < 64 THEN 'worker' END,
                CASE WHEN i < 64 THEN gen_random_uuid() END,
                CASE WHEN i < 64 THEN now() + interval '1 minute' END
         FROM generate_series(0, $1::bigint - 1) AS i",
    )
    .bind(ACCOUNTS as i64)
    .execute(pool)
    .await?;
    // As autovacuum would have left them.
    sqlx::query("VACUUM ANALYZE jobs, limiter_grants, accounts")
        .execute(pool)
        .await?;
    let (jobs_bytes, grants_bytes): (i64, i64) = sqlx::query_as(
        "SELECT pg_total_relation_size('jobs'), pg_total_relation_size('limiter_grants')",
    )
    .fetch_one(pool)
    .await?;
    Ok(Contents {
        finished,
        expired: expired as usize,
        queued: queued as usize,
        grants: finished,
        jobs_bytes,
        grants_bytes,
        load_seconds: started.elapsed().as_secs_f64(),
    })
}

/// A pool whose sessions send the plan of every statement they run to the client.
async fn explaining_pool(url: &str) -> Result<PgPool> {
    let options: PgConnectOptions = url.parse()?;
    Ok(PgPoolOptions::new()
        .max_connections(2)
        .after_connect(|conn, _| {
            Box::pin(async move {
                // Trawl's own sessions force custom plans (shared::db); so do these.
                sqlx::raw_sql(
                    "LOAD 'auto_explain';
                     SET auto_explain.log_min_duration = 0;
                     SET auto_explain.log_level = notice;
                     SET auto_explain.log_format = json;
                     SET plan_cache_mode = force_custom_plan",
                )
                .execute(conn)
                .await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await?)
}

/// One plan as `EXPLAIN` would print it, from `auto_explain`'s JSON, with the statement condensed
/// to a line; `None` for sqlx's own catalog look-ups.
fn render_plan(notice: &str) -> Option<String> {
    let json: Value = serde_json::from_str(notice.split_once("plan:")?.1.trim()).ok()?;
    let query = json["Query Text"].as_str()?;
    if query.contains("pg_catalog.") {
        return None;
    }
    let mut query = query.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some((cut, _)) = query.char_indices().nth(160) {
        query.truncate(cut);
        query.push('…');
    }
    let mut lines = vec![query];
    render_node(&json["Plan"], 0, &mut lines);
    Some(lines.join("\n"))
}

fn render_node(node: &Value, depth: usize, out: &mut Vec<String>) {
    let pad = "  ".repeat(depth * 2);
    let text = |key: &str| node[key].as_str().map(str::to_owned);
    let mut line = text("Node Type").unwrap_or_else(|| "?".into());
    if let Some(strategy) = text("Strategy").filter(|s| s != "Plain") {
        line = format!("{strategy} {line}");
    }
    if let Some(index) = text("Index Name") {
        line.push_str(&format!(" using {index}"));
    }
    if let Some(relation) = text("Relation Name") {
        line.push_str(&format!(" on {relation}"));
    }
    out.push(format!(
        "{pad}{}{line}",
        if depth > 0 { "->  " } else { "" }
    ));
    for key in [
        "Index Cond",
        "Recheck Cond",
        "Hash Cond",
        "Join Filter",
        "Filter",
    ] {
        if let Some(v) = text(key) {
            out.push(format!("{pad}      {key}: {v}"));
        }
    }
    for key in ["Sort Key", "Group Key"] {
        if let Some(keys) = node[key].as_array() {
            let keys: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
            out.push(format!("{pad}      {key}: {}", keys.join(", ")));
        }
    }
    for child in node["Plans"].as_array().into_iter().flatten() {
        render_node(child, depth + 1, out);
    }
}

fn distinct_plans(notices: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in notices.iter().filter_map(|n| render_plan(n)) {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// Builds the database, then runs the leader's pass twice: a catch-up pass (half the finished
/// jobs past retention, the expired leases, an hour of stale grants) and the steady pass that
/// follows it five seconds later in production (nothing left to remove).
pub async fn run(server: &Server, finished: usize, plans: &PlanLog) -> Result<Figures> {
    let name = "bench_fleet_maintenance";
    let pool = server.fresh(name, 4).await?;
    eprintln!("maintenance: loading {finished} finished jobs and {finished} ledger grants…");
    let contents = fill(&pool, finished).await?;
    let url = db::with_database(&server.admin_url, name);
    let (work_pool, plans_unavailable) = match explaining_pool(&url).await {
        Ok(p) => (p, None),
        Err(e) => (
            db::connect_url(&url, 2, Duration::from_secs(30)).await?,
            Some(format!("auto_explain could not be loaded ({e})")),
        ),
    };
    let queue = Queue::new(work_pool.clone(), QueueSettings::default());
    let ledger = Ledger::new(
        work_pool.clone(),
        Profile::from_config(&LimiterConfig::default()),
    );
    let mut steps: Vec<Step> = Vec::new();
    for pass in 0..2 {
        if pass == 1 {
            // Autovacuum visits tables after deletes this large; the steady pass comes after it.
            sqlx::query("VACUUM ANALYZE jobs, limiter_grants")
                .execute(&pool)
                .await?;
        }
        eprintln!(
            "maintenance: {} pass…",
            if pass == 0 { "catch-up" } else { "steady" }
        );
        let mut timed = Vec::new();
        plans.take();
        // Each step: its name, how long the call took, what it did, and the plans it logged.
        macro_rules! step {
            ($name:expr, $call:expr, |$r:ident| $rows:expr) => {{
                let started = Instant::now();
                let $r = $call.await?;
                timed.push(($name, started.elapsed(), $rows, plans.take()));
            }};
        }
        step!(
            "rescue expired leases (`Queue::rescue_expired`)",
            queue.rescue_expired(),
            |r| format!("{} requeued, {} failed", r.requeued, r.failed)
        );
        step!(
            "prune finished jobs past 7 days (`Queue::prune_finished`)",
            queue.prune_finished(RETENTION),
            |n| format!("{n} deleted")
        );
        step!(
            "forget grants older than the history (`Ledger::prune`)",
            ledger.prune(),
            |n| format!("{n} deleted")
        );
        step!(
            "queue metrics (`Queue::stats`)",
            queue.stats(),
            |s| format!("{} rows", s.rows.len())
        );
        step!(
            "account metrics (`accounts::count_by_state`)",
            accounts::count_by_state(&work_pool),
            |c| format!("{} states", c.len())
        );

        for (i, (name, took, rows, notices)) in timed.into_iter().enumerate() {
            if pass == 0 {
                steps.push(Step {
                    name,
                    catch_up: took,
                    catch_up_rows: rows,
                    steady: Duration::ZERO,
                    plans: distinct_plans(notices),
                });
            } else if let Some(s) = steps.get_mut(i) {
                s.steady = took;
                for p in distinct_plans(notices) {
                    if !s.plans.contains(&p) {
                        s.plans.push(p);
                    }
                }
            }
        }
    }
    work_pool.close().await;
    pool.close().await;
    Ok(Figures {
        contents,
        steps,
        plans_unavailable,
    })
}
