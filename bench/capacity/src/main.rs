//! `bench-capacity`: how much of Instagram's windows a fleet actually uses. A workers with A
//! accounts work a backlog of follower crawls (after a profile page and the profile query, every
//! request is one GraphQL query type, so the per-type window, 200 per 11 minutes, is the one that
//! binds) against the simulator at scaled time. From the simulator's own audit log: per account, the requests it received in the first
//! `--windows` full windows after its first one, against `windows × cap`; and the 429 count.
//! Goal (docs/architecture.md, invariant 5): at least 99% of capacity, zero 429s.
//!
//! Run: `cargo run --release -p trawl-bench-capacity -- --write bench/RESULTS.md`

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use clap::Parser;
use serde_json::Value;
use trawl_bench_common::{Server, machine_report, write_section};
use trawl_shared::accounts::{Accounts, NewAccount};
use trawl_shared::config::Config;
use trawl_shared::crypto::SecretBox;
use trawl_shared::db;
use trawl_shared::duration::HumanDuration;
use trawl_shared::queue::{Queue, QueueSettings};
use trawl_shared::secret::Secret;
use trawl_shared::{JobSpec, NewJob};
use trawl_simulator::{DataSet, Sim, SimConfig, Sizes};

#[derive(Debug, Parser)]
#[command(about = "Benchmark the share of the rate-limit windows a Trawl fleet uses")]
struct Args {
    /// Account counts (one worker per account), one run each.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    accounts: Vec<usize>,
    /// Full windows measured per account.
    #[arg(long, default_value_t = 3)]
    windows: u32,
    /// Requests per second the whole fleet may send at full capacity; each run's time scale is
    /// chosen so that A accounts at full capacity send this many (real Instagram: 0.3 per
    /// account). Keeps the machine's load, not the fleet's size, constant across runs.
    #[arg(long, default_value_t = 20.0)]
    fleet_rate: f64,
    /// Use this server instead of a private cluster.
    #[arg(long)]
    database_url: Option<String>,
    /// Write the report into this Markdown file (replacing the previous capacity report).
    #[arg(long)]
    write: Option<PathBuf>,
}

const SEED: u64 = 3;
const KEY: &str = "2222222222222222222222222222222222222222222222222222222222222222";

struct Run {
    accounts: usize,
    time_scale: f64,
    per_account: Vec<(String, usize)>,
    capacity: usize,
    responses_429: u64,
    peak: (u64, u64),
    elapsed: Duration,
}

async fn bind() -> Result<(tokio::net::TcpListener, String)> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", l.local_addr()?);
    Ok((l, url))
}

/// The time scale at which `accounts` accounts at full capacity send `fleet_rate` requests/s.
fn time_scale(accounts: usize, fleet_rate: f64) -> f64 {
    accounts as f64 * 200.0 / (666.0 * fleet_rate)
}

async fn run(server: &Server, args: &Args, accounts: usize) -> Result<Run> {
    let name = format!("bench_capacity_{accounts}");
    let scale = time_scale(accounts, args.fleet_rate);
    let pool = server.fresh(&name, 8).await?;
    let url = db::with_database(&server.admin_url, &name);
    // Users followed by about a thousand others each: a follower crawl is ~80 pages of 12.
    let data = DataSet::generate(
        SEED,
        Sizes {
            users: 2000,
            max_posts: 2,
            max_following: 2000,
            max_comments: 0,
        },
    );
    let page = 12u64;
    let window = 660.0 * scale;
    let needed = accounts as u64 * 200 * u64::from(args.windows + 2);
    let mut targets = Vec::new();
    let mut pages = 0;
    for u in data.users.iter().filter(|u| !u.is_private) {
        if u.followers.len() >= 500 {
            pages += (u.followers.len() as u64).div_ceil(page);
            targets.push(u.username.clone());
            if pages >= needed * 13 / 10 {
                break;
            }
        }
    }
    if pages < needed {
        bail!("the data set holds {pages} follower pages; {needed} are needed");
    }
    let passwords: Vec<(String, String)> = (0..accounts)
        .map(|k| trawl_simulator::data::generated_account(SEED, k))
        .collect();
    let sim = Sim::new(SimConfig::fault_free(data, passwords.clone(), scale));
    let store = Accounts::new(pool.clone(), SecretBox::from_hex(KEY)?);
    for (name, password) in &passwords {
        store
            .add(&NewAccount {
                name,
                password: Some(password),
                ..NewAccount::default()
            })
            .await?;
    }
    let queue = Queue::new(pool.clone(), QueueSettings::default());
    let jobs: Vec<NewJob> = targets
        .iter()
        .map(|u| JobSpec::new("followers", u).validate(5))
        .collect::<Result<_, _>>()?;
    queue.submit_many(&jobs).await?;

    let (stop, signal) = trawl_shared::shutdown::channel();
    let (sim_listener, sim_url) = bind().await?;
    let sim_task = tokio::spawn(trawl_simulator::run(
        sim_listener,
        sim,
        signal.clone().wait(),
    ));
    let mut config = Config::default();
    config.database.url = Secret::new(url);
    config.database.max_connections = 4;
    config.secrets.key = Some(Secret::new(KEY.to_owned()));
    config.limiter.time_scale = scale;
    config.instagram.web_base = sim_url.clone();
    config.instagram.mobile_base = format!("{sim_url}/mobile");
    config.queue.poll_interval = HumanDuration::from_millis(100);
    let started = std::time::Instant::now();
    let mut workers = Vec::new();
    for _ in 0..accounts {
        let (listener, _) = bind().await?;
        let c = config.clone();
        let s = signal.clone();
        workers.push(tokio::spawn(async move {
            trawl_worker::run(&c, listener, s, false).await
        }));
    }
    // The first window starts at each account's first request, after its login.
    let run_for = Duration::from_secs_f64(window * (f64::from(args.windows) + 1.0) + 2.0);
    tokio::time::sleep(run_for).await;
    let http = reqwest::Client::new();
    let audit = http
        .get(format!("{sim_url}/__sim/audit.jsonl"))
        .send()
        .await?
        .text()
        .await?;
    let oracle: Value = http
        .get(format!("{sim_url}/__sim/oracle"))
        .send()
        .await?
        .json()
        .await?;
    stop.trigger();
    for w in workers {
        w.await?.context("worker")?;
    }
    sim_task.await??;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'queued'")
        .fetch_one(&pool)
        .await?;
    if left == 0 {
        bail!("the backlog ran out before the measurement ended");
    }

    let measured_type = format!(
        "qh:{}",
        trawl_shared::config::InstagramConfig::default()
            .query_hashes
            .followers
    );
    let mut times: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for line in audit.lines() {
        let e: Value = serde_json::from_str(line)?;
        if e["query_type"] == measured_type.as_str()
            && let Some(a) = e["account"].as_str()
        {
            times
                .entry(a.to_owned())
                .or_default()
                .push(e["t"].as_f64().unwrap_or(0.0));
        }
    }
    let span = window * f64::from(args.windows);
    let per_account = times
        .into_iter()
        .map(|(a, mut t)| {
            t.sort_by(f64::total_cmp);
            let first = t.first().copied().unwrap_or(0.0);
            (a, t.iter().filter(|&&x| x < first + span).count())
        })
        .collect::<Vec<_>>();
    let peak = oracle["peaks"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|p| p["key"] == measured_type.as_str())
        .map(|p| {
            (
                p["most"].as_u64().unwrap_or(0),
                p["cap"].as_u64().unwrap_or(0),
            )
        })
        .max()
        .unwrap_or((0, 0));
    pool.close().await;
    Ok(Run {
        accounts,
        time_scale: scale,
        per_account,
        capacity: 200 * args.windows as usize,
        responses_429: oracle["responses_429"].as_u64().unwrap_or(0),
        peak,
        elapsed: started.elapsed(),
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let server = Server::start(args.database_url.clone()).await?;
    let mut runs = Vec::new();
    for &a in &args.accounts {
        eprintln!("capacity run with {a} accounts…");
        runs.push(run(&server, &args, a).await?);
    }
    let mut report = String::new();
    writeln!(
        report,
        "## Capacity: the share of the windows a fleet uses\n"
    )?;
    writeln!(
        report,
        "Command: `cargo run --release -p trawl-bench-capacity -- --accounts {} --windows {} \
         --fleet-rate {} --write bench/RESULTS.md`\n",
        args.accounts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        args.windows,
        args.fleet_rate
    )?;
    writeln!(report, "Run: {}\n", Utc::now().format("%Y-%m-%d %H:%M UTC"))?;
    report.push_str(&machine_report(&server.admin_url).await?);
    writeln!(
        report,
        "\nA workers (in one process) with A accounts work a backlog of `followers` crawls (users \
         followed by 500 or more, ~80 pages of 12 each) against the simulator at scaled time, \
         speaking Instaloader 4.16's protocol, the scale chosen so that the whole fleet at full \
         capacity sends {} requests/s (the machine's load stays the same as A grows; real \
         Instagram allows 0.3 per account). After each crawl's profile page and profile query, \
         every request is the followers GraphQL query, so its per-type window (200 per 11 \
         minutes) binds. Counted from the simulator's audit log: per \
         account, the requests received in the {} full windows that start at its first one. \
         Two shares: of the server's capacity ({} × 200 per window), and of what the windows \
         allow with Instaloader's 6 s margin (docs/rate-limits.md: 200 per 11 min + 6 s; from the first \
         request that is ⌊span / (666 s / 200)⌋ + 1 requests, so the server-capacity ceiling is \
         about 99.2%). Default limiter settings.\n",
        args.fleet_rate, args.windows, args.windows
    )?;
    writeln!(
        report,
        "| accounts | time scale (window) | requests per account (min / mean / max) | of server capacity (min / mean) | of the limiter's allowance (min / mean) | 429s | busiest window / cap | run |"
    )?;
    writeln!(report, "|---|---|---|---|---|---|---|---|")?;
    for r in &runs {
        let counts: Vec<usize> = r.per_account.iter().map(|(_, n)| *n).collect();
        let min = counts.iter().copied().min().unwrap_or(0) as f64;
        let max = counts.iter().copied().max().unwrap_or(0);
        let mean = counts.iter().sum::<usize>() as f64 / counts.len().max(1) as f64;
        let capacity = r.capacity as f64;
        // Pacing at 666 s / 200 from the first request lets floor(span / period) + 1 through.
        let allowance = (f64::from(args.windows) * 660.0 * 200.0 / 666.0).floor() + 1.0;
        writeln!(
            report,
            "| {} | {:.4} ({:.1} s) | {min} / {mean:.1} / {max} | {:.2}% / {:.2}% | {:.2}% / {:.2}% | {} | {} / {} | {:.0} s |",
            r.accounts,
            r.time_scale,
            660.0 * r.time_scale,
            min / capacity * 100.0,
            mean / capacity * 100.0,
            min / allowance * 100.0,
            mean / allowance * 100.0,
            r.responses_429,
            r.peak.0,
            r.peak.1,
            r.elapsed.as_secs_f64()
        )?;
    }
    println!("{report}");
    if let Some(path) = args.write {
        write_section(&path, "capacity", &report)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
