//! `bench-fleet`: Trawl at fleet scale on one machine. A private PostgreSQL cluster (PostgreSQL's
//! default `max_connections`, 100, unless `--max-connections` says otherwise; a fleet whose pools
//! do not fit is refused with the arithmetic), the simulator with 1,000 login accounts, two
//! schedulers and 64 worker processes (the release `trawl` binary, configured by `TRAWL_*`
//! variables as an operator would) crawl a backlog of real `profile` and `post_comments` jobs at
//! scaled time. Measured while they crawl:
//!
//! - lease latency (the workers' own lease statement) with 10,000 and then 1,000,000 jobs queued;
//! - ledger decisions (`trawl_limiter_acquire`) on probe scopes, p50/p99, at both depths;
//! - the scheduler's API under 64 concurrent clients (`wrk`): submit (`POST /v1/jobs`) and list
//!   (`GET /v1/jobs`, and `?state=completed` behind the backlog);
//! - resident memory of every worker and scheduler, PostgreSQL connections in use (the whole
//!   server, and per process from `/proc`), and the simulator's oracle (429s, windows over cap).
//!
//! Then, on a database of its own, one maintenance pass of the scheduler's leader at a million
//! finished jobs, each step timed and its plans shown ([`maintenance`]).
//!
//! Run: `cargo build --release --bin trawl && cargo run --release -p trawl-bench-fleet --
//! --write bench/RESULTS.md` (Trawl's default pools: 64 workers × 1 + 2 schedulers × 11 fit the
//! default 100, see `docs/operations.md`; `--quick` for a smoke run: 10,000 jobs, 50 accounts,
//! 8 workers).

mod api;
mod maintenance;
mod probes;
mod procs;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::Value;
use sqlx::PgPool;
use trawl_bench_common::{Server, machine_report, ms, percentile, write_section};
use trawl_shared::accounts::{Accounts, NewAccount};
use trawl_shared::config::LimiterConfig;
use trawl_shared::crypto::SecretBox;
use trawl_shared::db;
use trawl_shared::limiter::{Ledger, Profile};
use trawl_shared::queue::{Queue, QueueSettings};
use trawl_simulator::{DataSet, Sizes};

use crate::procs::{Procs, Role};

#[derive(Debug, Parser)]
#[command(about = "Benchmark a Trawl fleet at scale: 64 workers, 1,000 accounts, 1,000,000 jobs")]
struct Args {
    /// A smoke run: 10,000 jobs (2,000 at the first depth), 50 accounts, 8 workers, 20 s phases,
    /// maintenance over 20,000 finished jobs.
    #[arg(long)]
    quick: bool,
    /// Jobs queued in the second phase [default: 1000000].
    #[arg(long)]
    jobs: Option<usize>,
    /// Jobs queued in the first phase, the depth lease latency is compared with [default: 10000].
    #[arg(long)]
    baseline_jobs: Option<usize>,
    /// Login accounts in the simulator and the database [default: 1000].
    #[arg(long)]
    accounts: Option<usize>,
    /// Worker processes [default: 64].
    #[arg(long)]
    workers: Option<usize>,
    /// Scheduler processes (one leads maintenance).
    #[arg(long, default_value_t = 2)]
    schedulers: usize,
    /// `worker.db_connections` of each worker (Trawl's default: 1).
    #[arg(long, default_value_t = 1)]
    worker_pool: u32,
    /// `database.max_connections` of each scheduler (Trawl's default: 10; its leader lock takes
    /// one more).
    #[arg(long, default_value_t = 10)]
    scheduler_pool: u32,
    /// `max_connections` of the private cluster (PostgreSQL's default: 100).
    #[arg(long, default_value_t = 100)]
    max_connections: u32,
    /// Requests/s the fleet's `other` windows allow together; sets the time scale (a `profile`
    /// job is one `other` request; `post_comments` add GraphQL requests on top).
    #[arg(long, default_value_t = 40.0)]
    fleet_rate: f64,
    /// Seconds each measuring phase lasts [default: 60].
    #[arg(long)]
    phase_seconds: Option<u64>,
    /// Seconds each API load lasts [default: 20].
    #[arg(long)]
    api_seconds: Option<u64>,
    /// Concurrent API clients.
    #[arg(long, default_value_t = 64)]
    api_clients: usize,
    /// Finished jobs in the maintenance database [default: 1000000].
    #[arg(long)]
    maintenance_jobs: Option<usize>,
    /// Only the maintenance part.
    #[arg(long)]
    skip_fleet: bool,
    /// Only the fleet part.
    #[arg(long)]
    skip_maintenance: bool,
    /// The `trawl` binary [default: target/release/trawl of this workspace].
    #[arg(long)]
    trawl: Option<PathBuf>,
    /// Use this server instead of a private cluster (fresh databases are created there).
    #[arg(long)]
    database_url: Option<String>,
    /// Write the report into this Markdown file (replacing the previous fleet report).
    #[arg(long)]
    write: Option<PathBuf>,
}

/// The sizes of a run, from `--quick` or the full defaults, overridden by flags.
#[derive(Debug, Clone)]
struct Plan {
    jobs: usize,
    baseline: usize,
    accounts: usize,
    workers: usize,
    phase: Duration,
    warmup: Duration,
    api_seconds: u64,
    maintenance_jobs: usize,
    time_scale: f64,
}

impl Plan {
    fn from(args: &Args) -> Result<Self> {
        let q = args.quick;
        let workers = args.workers.unwrap_or(if q { 8 } else { 64 });
        let plan = Self {
            jobs: args.jobs.unwrap_or(if q { 10_000 } else { 1_000_000 }),
            baseline: args.baseline_jobs.unwrap_or(if q { 2_000 } else { 10_000 }),
            accounts: args.accounts.unwrap_or(if q { 50 } else { 1000 }),
            workers,
            phase: Duration::from_secs(args.phase_seconds.unwrap_or(if q { 20 } else { 60 })),
            warmup: Duration::from_secs(if q { 8 } else { 20 }),
            api_seconds: args.api_seconds.unwrap_or(if q { 8 } else { 20 }),
            maintenance_jobs: args
                .maintenance_jobs
                .unwrap_or(if q { 20_000 } else { 1_000_000 }),
            // Every account's `other` window (75 per 11 min + 6 s) allows fleet_rate / workers.
            time_scale: workers as f64 * 75.0 / (666.0 * args.fleet_rate),
        };
        if plan.accounts < plan.workers {
            bail!(
                "{} workers need at least as many accounts (got {})",
                plan.workers,
                plan.accounts
            );
        }
        if plan.baseline == 0 || plan.baseline >= plan.jobs {
            bail!("--baseline-jobs must be above 0 and below --jobs");
        }
        Ok(plan)
    }
}

const SEED: u64 = 11;
const KEY: &str = "3333333333333333333333333333333333333333333333333333333333333333";
const TOKEN: &str = "bench-fleet-token";
/// Connections of the benchmark's own pool (samplers, monitor, loading).
const BENCH_POOL: u32 = 4;
const SIZES: Sizes = Sizes {
    users: 10_000,
    max_posts: 20,
    max_following: 20,
    max_comments: 100,
};
/// Ledger probe scopes, as many as the accounts of a full run.
const PROBE_SCOPES: usize = 1000;

/// The connection budget: PostgreSQL's limit, what is reserved, and what the fleet needs.
struct Budget {
    max_connections: i64,
    reserved: i64,
    need: i64,
}

impl Budget {
    fn usable(&self) -> i64 {
        self.max_connections - self.reserved
    }

    /// Workers that fit beside the schedulers and the benchmark under PostgreSQL's default limit.
    fn workers_at_default(&self, args: &Args) -> i64 {
        let others =
            args.schedulers as i64 * (i64::from(args.scheduler_pool) + 1) + i64::from(BENCH_POOL);
        (100 - self.reserved - others).max(0) / i64::from(args.worker_pool.max(1))
    }

    fn rule(&self, args: &Args, plan: &Plan) -> String {
        format!(
            "{} workers × {} + {} schedulers × ({} + 1) + the benchmark's {} = {} {} {} − {} = {}",
            plan.workers,
            args.worker_pool,
            args.schedulers,
            args.scheduler_pool,
            BENCH_POOL,
            self.need,
            if self.need <= self.usable() {
                "≤"
            } else {
                ">"
            },
            self.max_connections,
            self.reserved,
            self.usable()
        )
    }
}

async fn budget(pool: &PgPool, args: &Args, plan: &Plan) -> Result<Budget> {
    let setting = |name: &'static str| async move {
        let v: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {name}")))
            .fetch_one(pool)
            .await?;
        v.parse::<i64>()
            .with_context(|| format!("{name} = {v:?} is not a number"))
    };
    let need = plan.workers as i64 * i64::from(args.worker_pool)
        + args.schedulers as i64 * (i64::from(args.scheduler_pool) + 1)
        + i64::from(BENCH_POOL);
    Ok(Budget {
        max_connections: setting("max_connections").await?,
        reserved: setting("superuser_reserved_connections").await?,
        need,
    })
}

/// Public users (profile targets) and shortcodes of posts with 1–100 comments.
fn targets() -> (Vec<String>, Vec<String>) {
    let data = DataSet::generate(SEED, SIZES);
    let public: Vec<_> = data.users.iter().filter(|u| !u.is_private).collect();
    let users = public
        .iter()
        .take(5000)
        .map(|u| u.username.clone())
        .collect();
    let mut shortcodes = Vec::new();
    'users: for u in &public {
        for i in 0..u.post_count {
            if let Some(p) = data.post(u.index, i)
                && (1..=100).contains(&p.comment_count)
            {
                shortcodes.push(p.shortcode.clone());
                if shortcodes.len() >= 5000 {
                    break 'users;
                }
            }
        }
    }
    (users, shortcodes)
}

/// Queues jobs `from..to` in statements of 100,000: three `profile` jobs to one `post_comments`,
/// targets repeating over the lists, each with a unique key of its own. Returns jobs/s.
async fn queue_jobs(
    pool: &PgPool,
    from: usize,
    to: usize,
    users: &[String],
    shortcodes: &[String],
) -> Result<f64> {
    let started = Instant::now();
    let mut at = from;
    while at < to {
        let end = (at + 100_000).min(to);
        sqlx::query(
            "INSERT INTO jobs (kind, target, max_attempts, unique_key)
             SELECT CASE WHEN i % 4 = 3 THEN 'post_comments' ELSE 'profile' END,
                    CASE WHEN i % 4 = 3 THEN ($2::text[])[1 + (i / 4) % cardinality($2::text[])]
                         ELSE ($1::text[])[1 + i % cardinality($1::text[])] END,
                    3, 'fleet:' || i
             FROM generate_series($3::bigint, $4::bigint - 1) AS i",
        )
        .bind(users)
        .bind(shortcodes)
        .bind(i64::try_from(at)?)
        .bind(i64::try_from(end)?)
        .execute(pool)
        .await?;
        at = end;
    }
    let rate = (to - from) as f64 / started.elapsed().as_secs_f64();
    sqlx::query("ANALYZE jobs").execute(pool).await?;
    Ok(rate)
}

/// Jobs queued, and jobs finished (completed or failed).
async fn job_counts(pool: &PgPool) -> Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'queued'),
                count(*) FILTER (WHERE state IN ('completed', 'failed'))
         FROM jobs",
    )
    .fetch_one(pool)
    .await?)
}

/// The configuration every `trawl` process of the fleet shares.
fn fleet_env(url: &str, sim_url: &str, scale: f64, pool: u32) -> Vec<(String, String)> {
    [
        ("TRAWL_DATABASE__URL", url.to_owned()),
        ("TRAWL_DATABASE__MAX_CONNECTIONS", pool.to_string()),
        ("TRAWL_SECRETS__KEY", KEY.to_owned()),
        ("TRAWL_INSTAGRAM__WEB_BASE", sim_url.to_owned()),
        ("TRAWL_INSTAGRAM__MOBILE_BASE", format!("{sim_url}/mobile")),
        ("TRAWL_INSTAGRAM__REQUEST_TIMEOUT", "10s".to_owned()),
        ("TRAWL_LIMITER__TIME_SCALE", scale.to_string()),
        ("TRAWL_WORKER__GRACE_PERIOD", "5s".to_owned()),
        ("TRAWL_SCHEDULER__API_TOKEN", TOKEN.to_owned()),
        ("TRAWL_LOG__FILTER", "info".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value> {
    Ok(http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Sums of a worker's counters by metric name, and `trawl_worker_jobs_total` by outcome.
fn sum_metrics(text: &str, into: &mut BTreeMap<String, f64>) {
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        let key = match name {
            "trawl_worker_jobs_total" => series
                .split("outcome=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(|o| format!("jobs_{o}")),
            "trawl_limiter_grants_total"
            | "trawl_limiter_denials_total"
            | "trawl_instagram_429_responses_total"
            | "trawl_worker_account_held" => Some(name.to_owned()),
            _ => None,
        };
        if let Some(k) = key {
            *into.entry(k).or_default() += value;
        }
    }
}

/// One measuring phase at one backlog depth.
struct Phase {
    queued_at_start: i64,
    seconds: f64,
    finished: i64,
    requests: u64,
    leases: Vec<Duration>,
    ledger: probes::LedgerSamples,
}

async fn phase(
    pool: &PgPool,
    queue: &Queue,
    ledger: &Ledger,
    http: &reqwest::Client,
    sim_url: &str,
    length: Duration,
) -> Result<Phase> {
    let oracle = format!("{sim_url}/__sim/oracle");
    let (queued_at_start, finished_before) = job_counts(pool).await?;
    let requests_before = get_json(http, &oracle).await?["requests"]
        .as_u64()
        .unwrap_or(0);
    let started = Instant::now();
    let until = started + length;
    let (mut leases, mut ledger) = tokio::try_join!(
        probes::leases(queue.clone(), until, Duration::from_millis(100)),
        probes::ledger(
            ledger.clone(),
            PROBE_SCOPES,
            until,
            Duration::from_millis(50)
        ),
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let (_, finished_after) = job_counts(pool).await?;
    let requests_after = get_json(http, &oracle).await?["requests"]
        .as_u64()
        .unwrap_or(0);
    leases.sort();
    ledger.latencies.sort();
    Ok(Phase {
        queued_at_start,
        seconds,
        finished: finished_after - finished_before,
        requests: requests_after.saturating_sub(requests_before),
        leases,
        ledger,
    })
}

/// Resident memory of one process: the largest VmRSS the monitor saw, and the kernel's VmHWM.
struct Resident {
    name: String,
    role: Role,
    rss_kib: u64,
    hwm_kib: u64,
    connections: usize,
    /// CPU time over its lifetime, as a share of one core.
    cpu_share: f64,
}

struct FleetFigures {
    phases: [Phase; 2],
    /// Jobs queued between the phases (to bring the backlog back to the plan's size).
    top_up: usize,
    top_up_rate: f64,
    accounts_seconds: f64,
    api: Vec<api::Load>,
    residents: Vec<Resident>,
    observed: probes::Observed,
    per_process_known: bool,
    oracle_requests: u64,
    responses_429: u64,
    /// Requests without a session (the login flow), and how many of them were answered 429.
    without_session: (u64, u64),
    windows: usize,
    over_cap: Vec<String>,
    busiest: (u64, u64),
    worker_metrics: BTreeMap<String, f64>,
    held: usize,
    final_states: Vec<(String, i64)>,
    killed: usize,
    logs: PathBuf,
}

async fn fleet(server: &Server, args: &Args, plan: &Plan, trawl: PathBuf) -> Result<FleetFigures> {
    let name = "bench_fleet";
    let pool = server.fresh(name, BENCH_POOL).await?;
    let url = db::with_database(&server.admin_url, name);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let (users, shortcodes) = targets();
    if users.is_empty() || shortcodes.is_empty() {
        bail!("the data set has no public users or no posts with comments");
    }

    eprintln!("adding {} accounts…", plan.accounts);
    let started = Instant::now();
    let store = Accounts::new(pool.clone(), SecretBox::from_hex(KEY)?);
    for k in 0..plan.accounts {
        let (name, password) = trawl_simulator::data::generated_account(SEED, k);
        store
            .add(&NewAccount {
                name: &name,
                password: Some(&password),
                ..NewAccount::default()
            })
            .await?;
    }
    let accounts_seconds = started.elapsed().as_secs_f64();
    eprintln!("queueing {} jobs…", plan.baseline);
    queue_jobs(&pool, 0, plan.baseline, &users, &shortcodes).await?;

    let logs = std::env::temp_dir().join(format!("trawl-bench-fleet-{}", std::process::id()));
    let mut procs = Procs::new(trawl, logs.clone())?;
    let sim_port = procs::free_port()?;
    let sim_url = format!("http://127.0.0.1:{sim_port}");
    let sim_args: Vec<String> = [
        "sim".to_owned(),
        "--listen".into(),
        format!("127.0.0.1:{sim_port}"),
        "--seed".into(),
        SEED.to_string(),
        "--users".into(),
        SIZES.users.to_string(),
        "--max-posts".into(),
        SIZES.max_posts.to_string(),
        "--max-following".into(),
        SIZES.max_following.to_string(),
        "--max-comments".into(),
        SIZES.max_comments.to_string(),
        "--time-scale".into(),
        plan.time_scale.to_string(),
        "--accounts".into(),
        plan.accounts.to_string(),
    ]
    .into();
    procs.spawn("sim", Role::Simulator, sim_port, &sim_args, &[])?;
    procs::wait_ready(
        &http,
        &format!("{sim_url}/__sim/oracle"),
        "the simulator",
        Duration::from_secs(30),
    )
    .await?;

    eprintln!(
        "starting {} schedulers and {} workers…",
        args.schedulers, plan.workers
    );
    let scheduler_env = fleet_env(&url, &sim_url, plan.time_scale, args.scheduler_pool);
    for i in 0..args.schedulers {
        let port = procs::free_port()?;
        let a = vec![
            "scheduler".to_owned(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ];
        procs.spawn(
            &format!("scheduler{i}"),
            Role::Scheduler,
            port,
            &a,
            &scheduler_env,
        )?;
    }
    let mut worker_env = fleet_env(&url, &sim_url, plan.time_scale, args.worker_pool);
    worker_env.push((
        "TRAWL_WORKER__DB_CONNECTIONS".into(),
        args.worker_pool.to_string(),
    ));
    for i in 0..plan.workers {
        let port = procs::free_port()?;
        let mut env = worker_env.clone();
        env.push(("TRAWL_WORKER__LISTEN".into(), format!("127.0.0.1:{port}")));
        procs.spawn(
            &format!("worker{i}"),
            Role::Worker,
            port,
            &["worker".to_owned()],
            &env,
        )?;
    }
    let urls: Vec<(String, String)> = procs
        .all
        .iter()
        .filter(|p| p.role != Role::Simulator)
        .map(|p| {
            let path = if p.role == Role::Scheduler {
                "/readyz"
            } else {
                "/healthz"
            };
            (p.name.clone(), format!("{}{path}", p.url()))
        })
        .collect();
    for (name, u) in &urls {
        procs::wait_ready(&http, u, name, Duration::from_secs(60)).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let leased: i64 =
            sqlx::query_scalar("SELECT count(*) FROM accounts WHERE state = 'leased'")
                .fetch_one(&pool)
                .await?;
        if leased as usize >= plan.workers {
            break;
        }
        procs.check_alive()?;
        if Instant::now() > deadline {
            bail!(
                "only {leased} of {} workers hold an account after 2 minutes; logs in {}",
                plan.workers,
                logs.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let pids: Vec<u32> = procs.all.iter().map(|p| p.pid()).collect();
    let pg_port = server.cluster().map(|c| c.port());
    let monitor = probes::Monitor::start(pool.clone(), pids, pg_port, Duration::from_secs(5));
    eprintln!("warming up for {:?}…", plan.warmup);
    tokio::time::sleep(plan.warmup).await;
    procs.check_alive()?;

    let queue = Queue::new(pool.clone(), QueueSettings::default());
    let limiter_config = LimiterConfig {
        time_scale: plan.time_scale,
        ..LimiterConfig::default()
    };
    let ledger = Ledger::new(pool.clone(), Profile::from_config(&limiter_config));
    eprintln!("phase 1: {} jobs queued, {:?}…", plan.baseline, plan.phase);
    let first = phase(&pool, &queue, &ledger, &http, &sim_url, plan.phase).await?;
    procs.check_alive()?;

    let (queued, _) = job_counts(&pool).await?;
    let top_up = plan
        .jobs
        .saturating_sub(usize::try_from(queued).unwrap_or(0));
    eprintln!("topping up with {top_up} jobs…");
    let top_up_rate = queue_jobs(
        &pool,
        plan.baseline,
        plan.baseline + top_up,
        &users,
        &shortcodes,
    )
    .await?;
    eprintln!("phase 2: {} jobs queued, {:?}…", plan.jobs, plan.phase);
    let second = phase(&pool, &queue, &ledger, &http, &sim_url, plan.phase).await?;
    procs.check_alive()?;

    let api_url = procs
        .of(Role::Scheduler)
        .next()
        .map(|p| p.url())
        .context("no scheduler")?;
    let submit_targets: Vec<String> = users.iter().take(200).cloned().collect();
    let mut loads = Vec::new();
    for (label, path, script) in [
        (
            "submit",
            "/v1/jobs",
            api::submit_script(TOKEN, &submit_targets),
        ),
        ("list", "/v1/jobs", api::get_script(TOKEN)),
        (
            "list completed",
            "/v1/jobs?state=completed",
            api::get_script(TOKEN),
        ),
    ] {
        eprintln!(
            "API: {label} with {} clients for {} s…",
            args.api_clients, plan.api_seconds
        );
        loads.push(
            api::run(
                label,
                &format!("{api_url}{path}"),
                &script,
                args.api_clients,
                plan.api_seconds,
                &logs,
            )
            .await?,
        );
    }
    procs.check_alive()?;

    let mut worker_metrics = BTreeMap::new();
    for p in procs.of(Role::Worker) {
        let text = http
            .get(format!("{}/metrics", p.url()))
            .send()
            .await?
            .text()
            .await?;
        sum_metrics(&text, &mut worker_metrics);
    }
    let oracle = get_json(&http, &format!("{sim_url}/__sim/oracle")).await?;
    let audit = http
        .get(format!("{sim_url}/__sim/audit.jsonl"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let mut without_session = (0u64, 0u64);
    for line in audit.lines() {
        let e: Value = serde_json::from_str(line)?;
        if e["account"].is_null() {
            without_session.0 += 1;
            without_session.1 += u64::from(e["status"] == 429);
        }
    }
    let observed = monitor.finish().await?;
    let residents = procs
        .all
        .iter()
        .map(|p| {
            let now = procs::memory(p.pid()).unwrap_or_default();
            Resident {
                name: p.name.clone(),
                role: p.role,
                rss_kib: observed
                    .rss_kib
                    .get(&p.pid())
                    .copied()
                    .unwrap_or(0)
                    .max(now.rss_kib),
                hwm_kib: now.hwm_kib,
                connections: observed.connections.get(&p.pid()).copied().unwrap_or(0),
                cpu_share: procs::cpu_seconds(p.pid()).unwrap_or(0.0)
                    / p.started.elapsed().as_secs_f64().max(1e-9),
            }
        })
        .collect();

    eprintln!("stopping the fleet…");
    let mut killed = procs.stop(Role::Worker, Duration::from_secs(20)).await;
    killed += procs.stop(Role::Scheduler, Duration::from_secs(10)).await;
    killed += procs.stop(Role::Simulator, Duration::from_secs(5)).await;
    let final_states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state::text, count(*) FROM jobs GROUP BY 1 ORDER BY 1")
            .fetch_all(&pool)
            .await?;
    pool.close().await;

    let peaks = oracle["peaks"].as_array().cloned().unwrap_or_default();
    let over_cap = peaks
        .iter()
        .filter(|p| p["most"].as_u64() > p["cap"].as_u64())
        .map(|p| p.to_string())
        .collect();
    let busiest = peaks
        .iter()
        .map(|p| {
            (
                p["most"].as_u64().unwrap_or(0),
                p["cap"].as_u64().unwrap_or(1),
            )
        })
        .max_by(|a, b| (a.0 * b.1).cmp(&(b.0 * a.1)))
        .unwrap_or((0, 0));
    Ok(FleetFigures {
        phases: [first, second],
        top_up,
        top_up_rate,
        accounts_seconds,
        api: loads,
        residents,
        observed,
        per_process_known: pg_port.is_some(),
        oracle_requests: oracle["requests"].as_u64().unwrap_or(0),
        responses_429: oracle["responses_429"].as_u64().unwrap_or(0),
        without_session,
        windows: peaks.len(),
        over_cap,
        busiest,
        held: worker_metrics
            .get("trawl_worker_account_held")
            .copied()
            .unwrap_or(0.0) as usize,
        worker_metrics,
        final_states,
        killed,
        logs,
    })
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// p50 and max of `values`.
fn p50_max(mut values: Vec<u64>) -> (u64, u64) {
    values.sort_unstable();
    let p50 = values.get(values.len() / 2).copied().unwrap_or(0);
    (p50, values.last().copied().unwrap_or(0))
}

fn fleet_report(
    out: &mut String,
    args: &Args,
    plan: &Plan,
    budget: &Budget,
    f: &FleetFigures,
) -> Result<()> {
    let [first, second] = &f.phases;
    writeln!(
        out,
        "\n{} worker processes and {} schedulers (the release `trawl` binary, configured by \
         `TRAWL_*` variables), {} login accounts (sealed, added with `Accounts::add`), the \
         simulator ({} users, seed {SEED}) at time scale {:.4} (an `other` window of {:.1} s), so \
         that the fleet's `other` windows allow {} requests/s together. Jobs: three `profile` to \
         one `post_comments` (posts with 1–100 comments), queued with one `INSERT … SELECT \
         generate_series` per 100,000, each with its own unique key. Pools: \
         `database.max_connections` {} per worker, {} per scheduler.\n",
        plan.workers,
        args.schedulers,
        plan.accounts,
        SIZES.users,
        plan.time_scale,
        660.0 * plan.time_scale,
        args.fleet_rate,
        args.worker_pool,
        args.scheduler_pool,
    )?;
    writeln!(
        out,
        "Each phase lasts {:.0} s after a {:.0} s warm-up; meanwhile the benchmark leases one job \
         every 100 ms with the workers' statement (every kind, `FOR UPDATE SKIP LOCKED`) and gives \
         it straight back, and makes one ledger decision (`trawl_limiter_acquire`) every 50 ms on \
         one of {PROBE_SCOPES} probe scopes the simulator never sees. Between the phases {} more \
         jobs were queued while the fleet crawled ({:.0} jobs/s), then `ANALYZE jobs`.\n",
        plan.phase.as_secs_f64(),
        plan.warmup.as_secs_f64(),
        f.top_up,
        f.top_up_rate,
    )?;
    writeln!(
        out,
        "| figure | phase 1: {} jobs queued | phase 2: {} jobs queued |",
        first.queued_at_start, second.queued_at_start
    )?;
    writeln!(out, "|---|---:|---:|")?;
    let p50_p99 = |samples: &[Duration]| {
        format!(
            "{} / {}",
            ms(percentile(samples, 0.5)),
            ms(percentile(samples, 0.99))
        )
    };
    let per_second = |p: &Phase, n: f64| format!("{:.1}", n / p.seconds);
    let rows = [
        (
            format!(
                "lease latency p50 / p99 ms ({} and {} samples)",
                first.leases.len(),
                second.leases.len()
            ),
            p50_p99(&first.leases),
            p50_p99(&second.leases),
        ),
        (
            format!(
                "ledger decision p50 / p99 ms ({} and {} decisions)",
                first.ledger.latencies.len(),
                second.ledger.latencies.len()
            ),
            p50_p99(&first.ledger.latencies),
            p50_p99(&second.ledger.latencies),
        ),
        (
            "jobs finished / s".to_owned(),
            per_second(first, first.finished as f64),
            per_second(second, second.finished as f64),
        ),
        (
            "requests to the simulator / s".to_owned(),
            per_second(first, first.requests as f64),
            per_second(second, second.requests as f64),
        ),
    ];
    for (label, one, two) in rows {
        writeln!(out, "| {label} | {one} | {two} |")?;
    }

    writeln!(
        out,
        "\n### The scheduler's API under {} concurrent clients\n\n`wrk -t2 -c{} -d{}s` against \
         one scheduler with about {} jobs queued and the fleet crawling; every submission \
         inserts a new `profile` job (its own unique key).\n",
        args.api_clients, args.api_clients, plan.api_seconds, plan.jobs
    )?;
    writeln!(
        out,
        "| request | requests/s | p50 ms | p99 ms | max ms | non-2xx | socket errors |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|")?;
    for l in &f.api {
        let what = match l.label.as_str() {
            "submit" => "submit: `POST /v1/jobs`",
            "list" => "list: `GET /v1/jobs` (newest 50)",
            _ => "list: `GET /v1/jobs?state=completed` (newest 50 completed)",
        };
        writeln!(
            out,
            "| {what} | {:.0} | {} | {} | {} | {} | {} |",
            l.rate(),
            ms(l.p50),
            ms(l.p99),
            ms(l.max),
            l.bad_status,
            l.socket_errors
        )?;
    }

    writeln!(out, "\n### Memory and connections\n")?;
    let of = |role: Role| f.residents.iter().filter(move |r| r.role == role);
    let (rss50, rssmax) = p50_max(of(Role::Worker).map(|r| r.rss_kib).collect());
    let (hwm50, hwmmax) = p50_max(of(Role::Worker).map(|r| r.hwm_kib).collect());
    let (conn50, connmax) = p50_max(of(Role::Worker).map(|r| r.connections as u64).collect());
    let (cpu50, cpumax) = p50_max(
        of(Role::Worker)
            .map(|r| (r.cpu_share * 1000.0) as u64)
            .collect(),
    );
    writeln!(
        out,
        "| process | resident MiB (largest VmRSS seen) | peak resident MiB (VmHWM) | CPU, share of a core over its life | connections to PostgreSQL (most at once) |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|")?;
    writeln!(
        out,
        "| worker (p50 / max of {}) | {} / {} | {} / {} | {:.3} / {:.3} | {} / {} |",
        plan.workers,
        mib(rss50),
        mib(rssmax),
        mib(hwm50),
        mib(hwmmax),
        cpu50 as f64 / 1000.0,
        cpumax as f64 / 1000.0,
        conn50,
        connmax
    )?;
    for r in of(Role::Scheduler).chain(of(Role::Simulator)) {
        writeln!(
            out,
            "| {} | {} | {} | {:.3} | {} |",
            r.name,
            mib(r.rss_kib),
            mib(r.hwm_kib),
            r.cpu_share,
            if r.role == Role::Simulator {
                "-".to_owned()
            } else {
                r.connections.to_string()
            }
        )?;
    }
    let trawl_total: usize = f
        .residents
        .iter()
        .filter(|r| r.role != Role::Simulator)
        .map(|r| r.connections)
        .sum();
    writeln!(
        out,
        "\nPostgreSQL client backends, most at once over the run (1 s samples of \
         `pg_stat_activity`): **{}** of `max_connections` {} (the benchmark's own pool of {} \
         included); sessions parked on `LISTEN`: {}.{}",
        f.observed.peak_backends,
        budget.max_connections,
        BENCH_POOL,
        f.observed.peak_listeners,
        if f.per_process_known {
            format!(
                " Summed over the Trawl processes from `/proc` (each process's own most, 5 s \
                 samples): {trawl_total}."
            )
        } else {
            String::new()
        }
    )?;
    writeln!(
        out,
        "Budget (docs/operations.md): {}. At PostgreSQL's default `max_connections` of 100 \
         these pools leave room for at most {} workers, each holding at most {} \
         (`worker.db_connections`; workers poll for jobs, no `LISTEN`).",
        budget.rule(args, plan),
        budget.workers_at_default(args),
        args.worker_pool
    )?;

    writeln!(out, "\n### Windows and outcome\n")?;
    let m = |k: &str| f.worker_metrics.get(k).copied().unwrap_or(0.0);
    writeln!(
        out,
        "- Simulator oracle: {} requests, **{} answered 429**, {} windows (scope × key) checked, \
         **{} over their cap** (busiest: {} of {}).",
        f.oracle_requests,
        f.responses_429,
        f.windows,
        f.over_cap.len(),
        f.busiest.0,
        f.busiest.1
    )?;
    for o in f.over_cap.iter().take(5) {
        writeln!(out, "  - over cap: `{o}`")?;
    }
    writeln!(
        out,
        "- Requests without a session (the login flow: `GET /` and the login POST), which the \
         simulator, like Instagram, counts against the client's IP and not an account: {}, {} of \
         them answered 429.{}",
        f.without_session.0,
        f.without_session.1,
        if f.without_session.1 > 0 {
            " Trawl's limiter counts them against the account logging in, so workers that log in \
             together from one address overflow the address's `other` window (75 per 11 min); \
             each 429 then penalises the account, and the workers retry together when the \
             penalties end."
        } else {
            ""
        }
    )?;
    writeln!(
        out,
        "- Workers' own counters: {:.0} ledger grants, {:.0} refusals, {:.0} 429s; job attempts \
         {:.0} completed, {:.0} failed, {:.0} retried, {:.0} snoozed, {:.0} released; {} of {} \
         workers held an account at the end.",
        m("trawl_limiter_grants_total"),
        m("trawl_limiter_denials_total"),
        m("trawl_instagram_429_responses_total"),
        m("jobs_completed"),
        m("jobs_failed"),
        m("jobs_retried"),
        m("jobs_snoozed"),
        m("jobs_released"),
        f.held,
        plan.workers
    )?;
    writeln!(
        out,
        "- After SIGTERM to every process: jobs by state {}; {} process(es) had to be killed. \
         Adding the {} accounts took {:.1} s.",
        f.final_states
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        f.killed,
        plan.accounts,
        f.accounts_seconds
    )?;
    Ok(())
}

fn maintenance_report(out: &mut String, f: &maintenance::Figures) -> Result<()> {
    let c = &f.contents;
    writeln!(
        out,
        "\n### Maintenance at scale\n\nOne pass of the maintenance leader's steps, in its order, \
         on a database of its own: {} finished jobs (one in ten failed) finished over the last 14 \
         days (so half are past the default 7-day retention), {} running jobs whose leases \
         expired, {} queued jobs, and {} ledger grants of 1,000 accounts over the last two hours \
         (the history keeps one). Jobs table {:.0} MiB, ledger {:.0} MiB, loaded and `VACUUM \
         ANALYZE`d in {:.0} s. The catch-up pass removes the backlog; the steady pass is the one \
         that follows every `scheduler.maintenance_interval` (5 s) once nothing is overdue.\n",
        c.finished,
        c.expired,
        c.queued,
        c.grants,
        c.jobs_bytes as f64 / 1048576.0,
        c.grants_bytes as f64 / 1048576.0,
        c.load_seconds
    )?;
    writeln!(out, "| step | catch-up pass | rows | steady pass |")?;
    writeln!(out, "|---|---:|---|---:|")?;
    let mut total = (Duration::ZERO, Duration::ZERO);
    for s in &f.steps {
        total.0 += s.catch_up;
        total.1 += s.steady;
        writeln!(
            out,
            "| {} | {} ms | {} | {} ms |",
            s.name,
            ms(s.catch_up),
            s.catch_up_rows,
            ms(s.steady)
        )?;
    }
    writeln!(
        out,
        "| **one pass** | **{} ms** | | **{} ms** |",
        ms(total.0),
        ms(total.1)
    )?;
    match &f.plans_unavailable {
        Some(why) => writeln!(out, "\nPlans: not shown, {why}.")?,
        None => {
            writeln!(
                out,
                "\nPlans of the statements each step ran (`auto_explain`, costs removed; every \
                 distinct plan of both passes):\n"
            )?;
            for s in &f.steps {
                writeln!(out, "{}:\n\n```", s.name)?;
                for p in &s.plans {
                    writeln!(out, "{p}\n")?;
                }
                writeln!(out, "```\n")?;
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let plan = Plan::from(&args)?;
    let plans = maintenance::PlanLog::default();
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::{Layer, filter::Targets};
        let only_notices =
            Targets::new().with_target("sqlx::postgres::notice", tracing::Level::INFO);
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(plans.clone().with_filter(only_notices)),
        )?;
    }
    let trawl = args.trawl.clone().unwrap_or_else(|| {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/release/trawl"
        ))
    });
    if !args.skip_fleet {
        if !trawl.is_file() {
            bail!(
                "{} is missing: build it first with `cargo build --release --bin trawl`",
                trawl.display()
            );
        }
        if !api::available() {
            bail!("wrk is missing: install it with `apt-get install -y wrk`");
        }
    }
    let max_connections = args.max_connections.to_string();
    let server = Server::start_with(
        args.database_url.clone(),
        &[("max_connections", max_connections.as_str())],
    )
    .await?;

    let mut report = String::new();
    writeln!(report, "## Fleet at scale (`bench/fleet`)\n")?;
    let command = format!(
        "cargo run --release -p trawl-bench-fleet -- {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    writeln!(report, "Command: `{command}`  ")?;
    writeln!(
        report,
        "Run: {}\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    )?;
    report.push_str(&machine_report(&server.admin_url).await?);

    if !args.skip_fleet {
        let admin = db::connect_url(&server.admin_url, 1, Duration::from_secs(30)).await?;
        let budget = budget(&admin, &args, &plan).await?;
        admin.close().await;
        if budget.need > budget.usable() {
            bail!(
                "the fleet does not fit the server's connections: {}; see docs/operations.md. \
                 Run with --max-connections {} or more, or fewer workers.",
                budget.rule(&args, &plan),
                budget.need + budget.reserved
            );
        }
        let f = fleet(&server, &args, &plan, trawl).await?;
        eprintln!("fleet logs: {}", f.logs.display());
        fleet_report(&mut report, &args, &plan, &budget, &f)?;
    }
    if !args.skip_maintenance {
        let m = maintenance::run(&server, plan.maintenance_jobs, &plans).await?;
        maintenance_report(&mut report, &m)?;
    }

    println!("{report}");
    if let Some(path) = args.write {
        write_section(&path, "fleet", &report)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
