//! `bench-queue`: how fast Trawl's queue drains, how lease latency behaves as the backlog grows,
//! and how quickly NOTIFY wakes an idle leaser. Every figure is measured on a fresh database of a
//! private, durable PostgreSQL cluster (fsync and synchronous_commit on) unless `--database-url`
//! names a server.
//!
//! Run: `cargo run --release -p trawl-bench-queue -- --write bench/RESULTS.md`

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use sqlx::{Connection, Executor, PgConnection};
use trawl_bench_common::{Server, machine_report, ms, percentile, write_section};

#[cfg(feature = "apalis")]
mod drain;
#[cfg(feature = "apalis")]
mod peer;
use trawl_shared::domain::{JobKind, JobOptions, NewJob};
use trawl_shared::pgcluster::PrivateCluster;
use trawl_shared::queue::{Queue, QueueSettings};

#[derive(Debug, Parser)]
#[command(about = "Benchmark Trawl's PostgreSQL job queue")]
struct Args {
    /// Jobs in each burn-down.
    #[arg(long, default_value_t = 100_000)]
    jobs: usize,
    /// Concurrent leasers, one burn-down each.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    workers: Vec<usize>,
    /// Jobs leased (and then completed) per statement.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Backlog sizes at which lease latency is measured.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    depths: Vec<usize>,
    /// Lease+complete cycles timed at each depth.
    #[arg(long, default_value_t = 300)]
    samples: usize,
    /// Use this server instead of a private cluster (a fresh database is created per run).
    #[arg(long)]
    database_url: Option<String>,
    /// Write the report into this Markdown file (replacing the previous queue report).
    #[arg(long)]
    write: Option<PathBuf>,
    /// Run Trawl's queue and apalis-postgres side by side instead (needs `--features apalis`).
    #[arg(long)]
    peer: bool,
    /// Backlog sizes of the side-by-side run.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    peer_jobs: Vec<usize>,
    /// Longest a drain may take in the side-by-side run before it is stopped and reported as capped.
    #[arg(long, default_value_t = 45)]
    cap_seconds: u64,
}

fn jobs(n: usize, offset: usize) -> Vec<NewJob> {
    (offset..offset + n)
        .map(|i| NewJob {
            kind: JobKind::Profile,
            target: format!("user{i}"),
            priority: 0,
            run_at: None,
            max_attempts: 3,
            unique_key: format!("bench:{i}"),
            recrawl_every: None,
            options: JobOptions::default(),
        })
        .collect()
}

fn settings() -> QueueSettings {
    QueueSettings {
        lease: Duration::from_secs(300),
        poll_interval: Duration::from_secs(1),
        ..QueueSettings::default()
    }
}

/// Inserts `n` jobs in submissions of 5,000; returns jobs per second.
async fn enqueue(queue: &Queue, n: usize) -> Result<f64> {
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        let chunk = (n - done).min(5000);
        queue.submit_many(&jobs(chunk, done)).await?;
        done += chunk;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

struct Drain {
    workers: usize,
    enqueue_rate: f64,
    drain_rate: f64,
    first_90_rate: f64,
    last_10_rate: f64,
    lease_p50: Duration,
    lease_p99: Duration,
}

async fn burn_down(server: &Server, workers: usize, n: usize, batch: usize) -> Result<Drain> {
    let pool = server
        .fresh(&format!("bench_drain_{workers}"), workers as u32 + 2)
        .await?;
    let queue = Queue::new(pool.clone(), settings());
    let enqueue_rate = enqueue(&queue, n).await?;
    sqlx::query("VACUUM ANALYZE jobs").execute(&pool).await?;

    let completed = Arc::new(AtomicU64::new(0));
    let ninety = (n as u64 * 9) / 10;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let queue = queue.clone();
        let completed = completed.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut reached_ninety: Option<Instant> = None;
            loop {
                let t0 = Instant::now();
                let leased = queue.lease(&format!("bench-{w}"), batch, None).await?;
                latencies.push(t0.elapsed());
                if leased.is_empty() {
                    break;
                }
                let leases: Vec<_> = leased.iter().map(|j| j.lease).collect();
                let done = queue.complete_many(&leases).await?.len() as u64;
                let total = completed.fetch_add(done, Ordering::Relaxed) + done;
                if total >= ninety && reached_ninety.is_none() {
                    reached_ninety = Some(Instant::now());
                }
            }
            anyhow::Ok((latencies, reached_ninety))
        }));
    }
    let mut latencies = Vec::new();
    let mut ninety_at: Option<Instant> = None;
    for t in tasks {
        let (l, r) = t.await??;
        latencies.extend(l);
        if let Some(r) = r {
            ninety_at = Some(ninety_at.map_or(r, |n| n.min(r)));
        }
    }
    let elapsed = start.elapsed();
    let end = start + elapsed;
    let total = completed.load(Ordering::Relaxed);
    anyhow::ensure!(total == n as u64, "drained {total} of {n} jobs");
    let ninety_at = ninety_at.context("never reached 90%")?;
    let first_90 = ninety_at.duration_since(start).as_secs_f64();
    let last_10 = end.duration_since(ninety_at).as_secs_f64().max(1e-6);
    latencies.sort();
    pool.close().await;
    Ok(Drain {
        workers,
        enqueue_rate,
        drain_rate: n as f64 / elapsed.as_secs_f64(),
        first_90_rate: ninety as f64 / first_90,
        last_10_rate: (n as u64 - ninety) as f64 / last_10,
        lease_p50: percentile(&latencies, 0.5),
        lease_p99: percentile(&latencies, 0.99),
    })
}

struct DepthLatency {
    depth: usize,
    single_p50: Duration,
    single_p99: Duration,
    batch_p50: Duration,
    batch_p99: Duration,
}

async fn latency_at_depth(
    server: &Server,
    depth: usize,
    samples: usize,
    batch: usize,
) -> Result<DepthLatency> {
    let pool = server.fresh(&format!("bench_depth_{depth}"), 4).await?;
    let queue = Queue::new(pool.clone(), settings());
    enqueue(&queue, depth).await?;
    sqlx::query("VACUUM ANALYZE jobs").execute(&pool).await?;
    let mut single = Vec::with_capacity(samples);
    let mut batched = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t0 = Instant::now();
        let one = queue.lease("depth", 1, None).await?;
        single.push(t0.elapsed());
        let t1 = Instant::now();
        let many = queue.lease("depth", batch, None).await?;
        batched.push(t1.elapsed());
        let leases: Vec<_> = one.iter().chain(many.iter()).map(|j| j.lease).collect();
        queue.complete_many(&leases).await?;
        // Keep the backlog at its depth.
        queue
            .submit_many(&jobs(leases.len(), depth + single.len() * (batch + 1)))
            .await?;
    }
    single.sort();
    batched.sort();
    pool.close().await;
    Ok(DepthLatency {
        depth,
        single_p50: percentile(&single, 0.5),
        single_p99: percentile(&single, 0.99),
        batch_p50: percentile(&batched, 0.5),
        batch_p99: percentile(&batched, 0.99),
    })
}

/// Time from a submission committing to an idle leaser holding the job, woken by NOTIFY.
async fn wake_latency(server: &Server, rounds: usize) -> Result<(Duration, Duration)> {
    let pool = server.fresh("bench_wake", 4).await?;
    let queue = Queue::new(
        pool.clone(),
        QueueSettings {
            poll_interval: Duration::from_secs(30),
            ..settings()
        },
    );
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let mut waiter = queue.waiter().await?;
        let leaser = {
            let queue = queue.clone();
            tokio::spawn(async move {
                loop {
                    let jobs = queue.lease("idle", 1, None).await?;
                    if let Some(j) = jobs.into_iter().next() {
                        queue.complete(&j.lease).await?;
                        return anyhow::Ok(Instant::now());
                    }
                    waiter.wait().await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let submitted = Instant::now();
        queue.submit_many(&jobs(1, round)).await?;
        let leased_at = tokio::time::timeout(Duration::from_secs(10), leaser).await???;
        samples.push(leased_at.duration_since(submitted));
    }
    samples.sort();
    pool.close().await;
    Ok((percentile(&samples, 0.5), percentile(&samples, 0.99)))
}

async fn pgbench(cluster: Option<&PrivateCluster>, server: &Server) -> Result<Option<f64>> {
    let Some(cluster) = cluster else {
        return Ok(None);
    };
    let mut admin = PgConnection::connect(&server.admin_url).await?;
    admin
        .execute("DROP DATABASE IF EXISTS bench_pgbench WITH (FORCE)")
        .await?;
    admin.execute("CREATE DATABASE bench_pgbench").await?;
    admin.close().await?;
    let port = cluster.port().to_string();
    let base = ["-h", "127.0.0.1", "-p", &port, "-U", "postgres"];
    let init = cluster
        .command("pgbench")
        .args(base)
        .args(["-i", "-s", "10", "-q", "bench_pgbench"])
        .output()?;
    anyhow::ensure!(
        init.status.success(),
        "pgbench -i failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let run = cluster
        .command("pgbench")
        .args(base)
        .args(["-N", "-c", "8", "-j", "2", "-T", "15", "bench_pgbench"])
        .output()?;
    let text = String::from_utf8_lossy(&run.stdout);
    Ok(text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|v| v.parse().ok()))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let server = Server::start(args.database_url.clone()).await?;
    if args.peer {
        return side_by_side(&args, &server).await;
    }

    let mut report = String::new();
    writeln!(report, "## Queue (`bench/queue`)\n")?;
    writeln!(
        report,
        "Command: `cargo run --release -p trawl-bench-queue -- --jobs {} --workers {} --batch {} --depths {} --write bench/RESULTS.md`  ",
        args.jobs,
        args.workers
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join(","),
        args.batch,
        args.depths
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(","),
    )?;
    writeln!(
        report,
        "Run: {}\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    )?;
    report.push_str(&machine_report(&server.admin_url).await?);

    eprintln!("pgbench -N ceiling…");
    let ceiling = pgbench(server.cluster(), &server).await?;
    if let Some(tps) = ceiling {
        writeln!(
            report,
            "- Ceiling: `pgbench -N -c8 -j2 -T15`, scale 10, same server: {tps:.0} tps"
        )?;
    }

    writeln!(
        report,
        "\n### Burn-down of {} no-op jobs (lease {} per statement, complete per batch)\n",
        args.jobs, args.batch
    )?;
    writeln!(
        report,
        "| leasers | enqueue jobs/s | drain jobs/s | first 90% jobs/s | last 10% jobs/s | lease p50 ms | lease p99 ms |"
    )?;
    writeln!(report, "|---:|---:|---:|---:|---:|---:|---:|")?;
    for &w in &args.workers {
        eprintln!("burn-down with {w} leasers…");
        let d = burn_down(&server, w, args.jobs, args.batch).await?;
        writeln!(
            report,
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |",
            d.workers,
            d.enqueue_rate,
            d.drain_rate,
            d.first_90_rate,
            d.last_10_rate,
            ms(d.lease_p50),
            ms(d.lease_p99)
        )?;
        eprintln!("  {:.0} jobs/s", d.drain_rate);
    }

    writeln!(
        report,
        "\n### Lease latency against backlog depth ({} samples each; the backlog is topped up after each sample)\n",
        args.samples
    )?;
    writeln!(
        report,
        "| queued jobs | lease 1: p50 ms | p99 ms | lease {}: p50 ms | p99 ms |",
        args.batch
    )?;
    writeln!(report, "|---:|---:|---:|---:|---:|")?;
    for &depth in &args.depths {
        eprintln!("lease latency at {depth} queued…");
        let l = latency_at_depth(&server, depth, args.samples, args.batch).await?;
        writeln!(
            report,
            "| {} | {} | {} | {} | {} |",
            l.depth,
            ms(l.single_p50),
            ms(l.single_p99),
            ms(l.batch_p50),
            ms(l.batch_p99)
        )?;
    }

    eprintln!("NOTIFY wake-up latency…");
    let (p50, p99) = wake_latency(&server, 100).await?;
    writeln!(
        report,
        "\n### Wake-up\n\nAn idle leaser (poll interval 30 s, so only NOTIFY can wake it) holds a newly submitted job after p50 {} ms, p99 {} ms (100 rounds).",
        ms(p50),
        ms(p99)
    )?;

    println!("{report}");
    if let Some(path) = args.write {
        write_section(&path, "queue", &report)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(not(feature = "apalis"))]
async fn side_by_side(_args: &Args, _server: &Server) -> Result<()> {
    anyhow::bail!(
        "the peer is not compiled in: run `cargo run --release -p trawl-bench-queue --features apalis -- --peer`"
    )
}

/// Trawl's queue and apalis-postgres, same workload, same server, one after the other.
/// `a` as a multiple of `b` (`-` when `b` is not positive).
#[cfg(feature = "apalis")]
fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.1}×", a / b)
    } else {
        "-".into()
    }
}

/// One row of the "Trawl ÷ peer" table: how many times Trawl's figure is the peer's.
#[cfg(feature = "apalis")]
fn ratio_row(
    n: usize,
    w: usize,
    label: &str,
    ours: &drain::DrainFigures,
    theirs: &drain::DrainFigures,
) -> String {
    format!(
        "| {n} | {w} | {label} | {} | {} | {} | {} |\n",
        ratio(ours.enqueue_rate, theirs.enqueue_rate),
        ratio(ours.drain_rate, theirs.drain_rate),
        ratio(theirs.lease_wait_p50, ours.lease_wait_p50),
        match (ours.last_10_rate, theirs.last_10_rate) {
            (Some(a), Some(b)) => ratio(a, b),
            (Some(_), None) => "peer capped".into(),
            _ => "-".into(),
        }
    )
}

#[cfg(feature = "apalis")]
async fn side_by_side(args: &Args, server: &Server) -> Result<()> {
    use drain::DrainFigures;
    use peer::Settings;

    let cap = Duration::from_secs(args.cap_seconds);
    let mut report = String::new();
    writeln!(
        report,
        "## Queue: Trawl and apalis-postgres side by side (`bench/queue --peer`)\n"
    )?;
    writeln!(
        report,
        "Command: `cargo run --release -p trawl-bench-queue --features apalis -- --peer --peer-jobs {} --workers {} --batch {} --cap-seconds {} --write bench/RESULTS.md`  ",
        args.peer_jobs
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(","),
        args.workers
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join(","),
        args.batch,
        args.cap_seconds
    )?;
    writeln!(
        report,
        "Run: {}\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    )?;
    report.push_str(&machine_report(&server.admin_url).await?);
    writeln!(
        report,
        "- Versions: trawl {}, apalis 1.0.0, apalis-postgres 1.0.0 (its own migrations), apalis-trawl (this workspace)",
        env!("CARGO_PKG_VERSION")
    )?;
    eprintln!("pgbench -N ceiling…");
    if let Some(tps) = pgbench(server.cluster(), server).await? {
        writeln!(
            report,
            "- Ceiling: `pgbench -N -c8 -j2 -T15`, scale 10, same server: {tps:.0} single-row transactions/s"
        )?;
    }
    writeln!(
        report,
        "\nEach run: N no-op jobs enqueued in bulk on a fresh database, then drained by W concurrent \
         workers; a drain stopped at {} s is marked *capped*. Lease wait: from a job becoming \
         runnable (or the drain starting, if later) to its lease, from the database's timestamps \
         (for a capped drain, of the jobs leased before the cap). Trawl leases {} jobs per statement and completes them in one statement; \
         apalis workers on Trawl's queue lease as many per statement; apalis settles one task \
         at a time, and the backend writes the completions that arrive together in one statement.\n",
        args.cap_seconds, args.batch
    )?;
    writeln!(
        report,
        "| N | W | queue | enqueue jobs/s | drain jobs/s | lease wait p50 s | p99 s | first 10% jobs/s | last 10% jobs/s |"
    )?;
    writeln!(report, "|---:|---:|---|---:|---:|---:|---:|---:|---:|")?;
    let row = |n: usize, w: usize, label: &str, f: &DrainFigures| {
        format!(
            "| {n} | {w} | {label} | {:.0} | {:.0}{} | {:.2} | {:.2} | {} | {} |\n",
            f.enqueue_rate,
            f.drain_rate,
            if f.hit_cap {
                format!(" (capped: {} of {n})", f.finished)
            } else {
                String::new()
            },
            f.lease_wait_p50,
            f.lease_wait_p99,
            f.first_10_rate
                .map(|r| format!("{r:.0}"))
                .unwrap_or_else(|| "-".into()),
            f.last_10_rate
                .map(|r| format!("{r:.0}"))
                .unwrap_or_else(|| "-".into())
        )
    };
    let mut ratios = String::new();
    for &n in &args.peer_jobs {
        for &w in &args.workers {
            eprintln!("N={n} W={w}: trawl…");
            let pool = server
                .fresh(&format!("bench_peer_trawl_{n}_{w}"), w as u32 + 2)
                .await?;
            let queue = Queue::new(pool.clone(), settings());
            let ours = drain::trawl(&pool, &queue, n, w, args.batch, cap).await?;
            pool.close().await;
            report.push_str(&row(n, w, "Trawl", &ours));
            for peer_settings in [Settings::Defaults, Settings::Tuned] {
                eprintln!("N={n} W={w}: {}…", peer_settings.label());
                let name = format!(
                    "bench_peer_apalis_{}_{n}_{w}",
                    if peer_settings == Settings::Defaults {
                        "defaults"
                    } else {
                        "tuned"
                    }
                );
                let pool = server.fresh(&name, w as u32 + 4).await?;
                let theirs = peer::run(&pool, peer_settings, n, w, cap).await?;
                pool.close().await;
                report.push_str(&row(n, w, peer_settings.label(), &theirs));
                ratios.push_str(&ratio_row(n, w, peer_settings.label(), &ours, &theirs));
            }
            eprintln!("N={n} W={w}: {}…", peer::on_trawl_label(args.batch));
            let pool = server
                .fresh(&format!("bench_peer_apalis_trawl_{n}_{w}"), w as u32 + 4)
                .await?;
            let queue = Queue::new(pool.clone(), settings());
            let theirs = peer::run_on_trawl(&pool, &queue, n, w, args.batch, cap).await?;
            pool.close().await;
            let label = peer::on_trawl_label(args.batch);
            report.push_str(&row(n, w, &label, &theirs));
            ratios.push_str(&ratio_row(n, w, &label, &ours, &theirs));
        }
    }
    writeln!(report, "\n### Trawl ÷ apalis-postgres (same run)\n")?;
    writeln!(
        report,
        "Higher is better for Trawl; the lease-wait column is apalis ÷ Trawl (how many times longer a job waits with apalis).\n"
    )?;
    writeln!(
        report,
        "| N | W | peer | enqueue | drain | lease wait p50 | last 10% |"
    )?;
    writeln!(report, "|---:|---:|---|---:|---:|---:|---:|")?;
    report.push_str(&ratios);
    println!("{report}");
    if let Some(path) = &args.write {
        write_section(path, "queue-peer", &report)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
