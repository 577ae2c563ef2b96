//! `bench-limiter`: how fast the rate-limit ledger decides, and how late a waiting acquirer
//! proceeds once its slot opens. Every figure is measured on a fresh database of a private, durable
//! PostgreSQL cluster (each grant is a committed transaction) unless `--database-url` names a server.
//!
//! Run: `cargo run --release -p trawl-bench-limiter -- --write bench/RESULTS.md`

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::{DateTime, Utc};
use clap::Parser;
use tokio::sync::Mutex;
use trawl_bench_common::{Server, machine_report, ms, percentile, write_section};
use trawl_shared::config::LimiterConfig;
use trawl_shared::limiter::{Decision, Ledger, Profile, QueryType, Request};

#[derive(Debug, Parser)]
#[command(about = "Benchmark Trawl's rate-limit ledger")]
struct Args {
    /// Concurrent acquirers, one run each (distinct keys, then one hot key).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    acquirers: Vec<usize>,
    /// Length of each throughput run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Waiting acquirers in the wake-up run (one key each).
    #[arg(long, default_value_t = 16)]
    wake_keys: usize,
    /// Length of the wake-up run.
    #[arg(long, default_value_t = 15)]
    wake_seconds: u64,
    /// Use this server instead of a private cluster.
    #[arg(long)]
    database_url: Option<String>,
    /// Write the report into this Markdown file (replacing the previous limiter report).
    #[arg(long)]
    write: Option<PathBuf>,
}

struct Throughput {
    rate: f64,
    grants: usize,
    p50: Duration,
    p99: Duration,
}

/// `acquirers` tasks call the ledger as fast as they can for `seconds`.
async fn throughput(
    server: &Server,
    name: &str,
    acquirers: usize,
    hot: bool,
    seconds: u64,
) -> Result<Throughput> {
    let pool = server
        .fresh(name, (acquirers as u32).clamp(1, 64) + 1)
        .await?;
    // The real caps. Distinct keys: each acquirer rotates over its own accounts, as a fleet does,
    // so no window fills and every call is a grant. The hot key fills its window within the first
    // 200 calls; after that each call is a refusal that names the wait (and records nothing), which
    // is the contention a hot key sees in production.
    let ledger = Ledger::new(
        pool.clone(),
        Profile::from_config(&LimiterConfig::default()),
    );
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for i in 0..acquirers {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut grants = 0usize;
            let mut n = 0usize;
            while Instant::now() < deadline {
                let request = if hot {
                    Request {
                        query_type: QueryType::QueryHash("hot".into()),
                        account: "hot".into(),
                        egress: None,
                    }
                } else {
                    Request {
                        query_type: QueryType::QueryHash(format!("h{}", n % 7)),
                        account: format!("account{i}-{}", n % 500),
                        egress: None,
                    }
                };
                n += 1;
                let t0 = Instant::now();
                let decision = ledger.try_acquire(&request, None).await?;
                latencies.push(t0.elapsed());
                match decision {
                    Decision::Granted { .. } => grants += 1,
                    Decision::Wait { .. } => {
                        anyhow::ensure!(hot, "unexpected wait for {request:?}")
                    }
                }
            }
            anyhow::Ok((latencies, grants))
        }));
    }
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut grants = 0;
    for t in tasks {
        let (l, g) = t.await??;
        latencies.extend(l);
        grants += g;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    pool.close().await;
    Ok(Throughput {
        rate: latencies.len() as f64 / elapsed,
        grants,
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
    })
}

/// One acquirer per key on a small window: each refusal names when the slot opens (database
/// time); the acquirer sleeps exactly that long and asks again. Lateness is the database time of
/// the grant minus the time the slot opened.
async fn wake_lateness(
    server: &Server,
    keys: usize,
    seconds: u64,
) -> Result<(Vec<Duration>, usize)> {
    let pool = server.fresh("bench_limiter_wake", keys as u32 + 1).await?;
    let config = LimiterConfig {
        time_scale: 0.002, // per-type window 1.32 s + 12 ms margin
        per_type_cap: 5,
        ..LimiterConfig::instaloader()
    };
    let ledger = Ledger::new(pool.clone(), Profile::from_config(&config));
    let lateness: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for i in 0..keys {
        let ledger = ledger.clone();
        let lateness = lateness.clone();
        let request = Request {
            query_type: QueryType::QueryHash("w".into()),
            account: format!("waiter{i}"),
            egress: None,
        };
        tasks.push(tokio::spawn(async move {
            let mut opens_at: Option<DateTime<Utc>> = None;
            let mut grants = 0usize;
            while Instant::now() < deadline {
                match ledger.try_acquire(&request, None).await? {
                    Decision::Granted { at, .. } => {
                        grants += 1;
                        if let Some(open) = opens_at.take() {
                            let late = (at - open).to_std().unwrap_or(Duration::ZERO);
                            lateness.lock().await.push(late);
                        }
                    }
                    Decision::Wait { at, wait, .. } => {
                        opens_at = Some(at + chrono::Duration::from_std(wait)?);
                        tokio::time::sleep(wait).await;
                    }
                }
            }
            anyhow::Ok(grants)
        }));
    }
    let mut grants = 0;
    for t in tasks {
        grants += t.await??;
    }
    pool.close().await;
    let mut samples = Arc::try_unwrap(lateness)
        .map_err(|_| anyhow::anyhow!("lateness still shared"))?
        .into_inner();
    samples.sort();
    Ok((samples, grants))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let server = Server::start(args.database_url.clone()).await?;
    let mut report = String::new();
    writeln!(report, "## Rate limiter (`bench/limiter`)\n")?;
    writeln!(
        report,
        "Command: `cargo run --release -p trawl-bench-limiter -- --acquirers {} --seconds {} --wake-keys {} --wake-seconds {} --write bench/RESULTS.md`  ",
        args.acquirers
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(","),
        args.seconds,
        args.wake_keys,
        args.wake_seconds
    )?;
    writeln!(report, "Run: {}\n", Utc::now().format("%Y-%m-%d %H:%M UTC"))?;
    report.push_str(&machine_report(&server.admin_url).await?);
    writeln!(
        report,
        "\nEach decision is one call of `trawl_limiter_acquire_fenced`: one committed transaction \
         that checks the failover fence (one row and the server's timeline), takes the scope's \
         advisory lock, counts the windows and records the grant (a refusal records nothing). \
         Default caps; on distinct keys every decision is a grant; the hot key's window \
         is full after 200 grants and later calls are refusals naming the wait.\n"
    )?;
    writeln!(
        report,
        "| acquirers | keys | decisions/s | grants | p50 ms | p99 ms |"
    )?;
    writeln!(report, "|---:|---|---:|---:|---:|---:|")?;
    for hot in [false, true] {
        for &n in &args.acquirers {
            let label = if hot { "one hot key" } else { "distinct" };
            eprintln!("{n} acquirers, {label}…");
            let name = format!("bench_limiter_{}_{n}", if hot { "hot" } else { "distinct" });
            let r = throughput(&server, &name, n, hot, args.seconds).await?;
            writeln!(
                report,
                "| {n} | {label} | {:.0} | {} | {} | {} |",
                r.rate,
                r.grants,
                ms(r.p50),
                ms(r.p99)
            )?;
            eprintln!("  {:.0}/s", r.rate);
        }
    }
    eprintln!("wake-up lateness…");
    let (late, grants) = wake_lateness(&server, args.wake_keys, args.wake_seconds).await?;
    writeln!(
        report,
        "\n### Wake-up\n\n{} acquirers, one key each, cap 5 per 1.32 s window: {} grants, {} of them \
         after a wait. A waiting acquirer proceeds p50 {} ms, p99 {} ms, max {} ms after its slot \
         opens (database time of the grant minus the time the refusal named).",
        args.wake_keys,
        grants,
        late.len(),
        ms(percentile(&late, 0.5)),
        ms(percentile(&late, 0.99)),
        ms(late.last().copied().unwrap_or_default())
    )?;
    println!("{report}");
    if let Some(path) = args.write {
        write_section(&path, "limiter", &report)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
