//! Media download throughput and memory: release `trawl worker` processes fetch video posts from
//! the simulator's CDN into each blob store backend (a local directory, and S3 on the test
//! server), timed against plain `curl` fetching the same URLs to the same disk in the same run;
//! then one worker streams a 200 MB video while its resident memory is sampled.
//!
//! ```sh
//! cargo build --release --bin trawl
//! cargo run --release -p trawl-bench-media -- --write bench/RESULTS.md
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use sqlx::PgPool;
use trawl_bench_common::{Server, machine_report, write_section};
use trawl_shared::JobSpec;
use trawl_shared::accounts::{Accounts, NewAccount};
use trawl_shared::crypto::SecretBox;
use trawl_shared::queue::{Queue, QueueSettings};
use trawl_simulator::data::{DataSet, PostType, Sizes};

const KEY: &str = "4444444444444444444444444444444444444444444444444444444444444444";
const SEED: u64 = 7;
const SIZES: Sizes = Sizes {
    users: 400,
    max_posts: 40,
    max_following: 10,
    max_comments: 2,
};

#[derive(Parser)]
#[command(about = "Media download throughput per worker and per fleet, and a worker's memory")]
struct Args {
    /// The trawl binary to run (a release build).
    #[arg(long, default_value = "target/release/trawl")]
    trawl: PathBuf,
    /// Video posts fetched per run.
    #[arg(long, default_value_t = 16)]
    videos: usize,
    /// Size of every video, in bytes.
    #[arg(long, default_value_t = 40_000_000)]
    video_bytes: u64,
    /// Workers of the fleet runs.
    #[arg(long, default_value_t = 4)]
    fleet: usize,
    /// Size of the video the memory run streams.
    #[arg(long, default_value_t = 200_000_000)]
    big_video_bytes: u64,
    /// Use this PostgreSQL server instead of a private cluster.
    #[arg(long)]
    database_url: Option<String>,
    /// Keep the work directory (logs, stores) instead of removing it at the end.
    #[arg(long)]
    keep: bool,
    /// Write the report into this results file (its media section).
    #[arg(long)]
    write: Option<PathBuf>,
}

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn spawn(trawl: &Path, args: &[String], env: &[(String, String)], log: &Path) -> Result<Child> {
    let out = std::fs::File::create(log)?;
    Command::new(trawl)
        .args(args)
        .envs(env.iter().cloned())
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", trawl.display()))
}

async fn wait_http(url: &str) -> Result<()> {
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if http.get(url).send().await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{url} never answered")
}

/// A simulator whose videos are `video_bytes` long.
async fn simulator(args: &Args, video_bytes: u64, dir: &Path) -> Result<(Child, String)> {
    let port = free_port()?;
    let sim = spawn(
        &args.trawl,
        &[
            "sim".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
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
            "--accounts".into(),
            accounts_needed(args).to_string(),
            "--time-scale".into(),
            "0.01".into(),
            // Links that outlive the run (at this time scale the default lives 864 s).
            "--cdn-url-lifetime".into(),
            "100000000".into(),
            "--video-bytes".into(),
            video_bytes.to_string(),
        ],
        &[],
        &dir.join(format!("sim-{port}.log")),
    )?;
    let url = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{url}/__sim/oracle")).await?;
    Ok((sim, url))
}

fn worker_env(db: &str, sim: &str, store: &[(String, String)]) -> Result<Vec<(String, String)>> {
    let mut env: Vec<(String, String)> = [
        ("TRAWL_DATABASE__URL", db),
        ("TRAWL_SECRETS__KEY", KEY),
        ("TRAWL_INSTAGRAM__WEB_BASE", sim),
        ("TRAWL_LIMITER__TIME_SCALE", "0.01"),
        ("TRAWL_QUEUE__POLL_INTERVAL", "50ms"),
        ("TRAWL_WORKER__ACCOUNT_POLL", "100ms"),
        ("TRAWL_LOG__FILTER", "info"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    env.push((
        "TRAWL_INSTAGRAM__MOBILE_BASE".into(),
        format!("{sim}/mobile"),
    ));
    env.push((
        "TRAWL_WORKER__LISTEN".into(),
        format!("127.0.0.1:{}", free_port()?),
    ));
    env.extend(store.iter().cloned());
    Ok(env)
}

/// Public video posts of the data set, in its order.
fn video_posts(n: usize) -> Vec<String> {
    let data = DataSet::generate(SEED, SIZES);
    data.users
        .iter()
        .filter(|u| !u.is_private)
        .flat_map(|u| (0..u.post_count).filter_map(|i| data.post(u.index, i)))
        .filter(|p| matches!(p.kind, PostType::Video))
        .map(|p| p.shortcode)
        .take(n)
        .collect()
}

/// An account for every worker any run starts: a killed worker's account stays leased until its
/// lease expires, and a run must not wait for that.
fn accounts_needed(args: &Args) -> usize {
    1 + (1 + args.fleet) * (ROUNDS + 1)
}

/// The simulator's first `n` login accounts, sealed into the database.
async fn add_accounts(pool: &PgPool, n: usize) -> Result<()> {
    let accounts = Accounts::new(pool.clone(), SecretBox::from_hex(KEY)?);
    for k in 0..n {
        let (name, password) = trawl_simulator::data::generated_account(SEED, k);
        accounts
            .add(&NewAccount {
                name: &name,
                password: Some(&password),
                ..NewAccount::default()
            })
            .await?;
    }
    Ok(())
}

async fn submit(pool: &PgPool, specs: Vec<JobSpec>) -> Result<()> {
    let jobs = specs
        .into_iter()
        .map(|s| s.validate(3))
        .collect::<Result<Vec<_>, _>>()?;
    Queue::new(pool.clone(), QueueSettings::default())
        .submit_many(&jobs)
        .await?;
    Ok(())
}

async fn wait_done(pool: &PgPool, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let (active, failed): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state IN ('queued', 'running')),
                    count(*) FILTER (WHERE state = 'failed') FROM jobs",
        )
        .fetch_one(pool)
        .await?;
        if failed > 0 {
            let why: Option<String> =
                sqlx::query_scalar("SELECT last_error FROM jobs WHERE state = 'failed' LIMIT 1")
                    .fetch_optional(pool)
                    .await?
                    .flatten();
            bail!("{failed} jobs failed: {why:?}");
        }
        if active == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{active} jobs still active after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One timed run: `workers` workers fetch every video's files into a store of their own.
struct Run {
    label: String,
    bytes: u64,
    seconds: f64,
    /// Jobs that needed more than one attempt (each waits the queue's retry backoff).
    retried: i64,
}

impl Run {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds
    }
}

#[allow(clippy::too_many_arguments)]
async fn media_run(
    args: &Args,
    pool: &PgPool,
    db_url: &str,
    sim: &str,
    codes: &[String],
    workers: usize,
    store: Vec<(String, String)>,
    label: &str,
    dir: &Path,
    round: usize,
) -> Result<Run> {
    let tag = format!("{label}-{workers}-{round}");
    let leased = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM accounts WHERE state = 'leased'")
            .fetch_one(pool)
            .await
    };
    let before = leased().await?;
    let mut procs = Killed(Vec::new());
    for i in 0..workers {
        let env = worker_env(db_url, sim, &store)?;
        procs.0.push(spawn(
            &args.trawl,
            &["worker".into()],
            &env,
            &dir.join(format!("worker-{tag}-{i}.log")),
        )?);
    }
    // Workers log in first (each on an account no earlier run left leased); the clock starts
    // when every one holds its account and the jobs are queued.
    let deadline = Instant::now() + Duration::from_secs(60);
    while leased().await? < before + workers as i64 {
        if Instant::now() > deadline {
            bail!("{workers} workers did not all lease an account");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    submit(
        pool,
        codes
            .iter()
            .map(|c| JobSpec {
                unique_key: Some(format!("{tag}:{c}")),
                ..JobSpec::new("media", format!("post:{c}"))
            })
            .collect(),
    )
    .await?;
    wait_done(pool, Duration::from_secs(900)).await?;
    let seconds = started.elapsed().as_secs_f64();
    let bytes: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(size), 0)::bigint FROM ig_media WHERE item LIKE 'post:%'",
    )
    .fetch_one(pool)
    .await?;
    let retried: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE unique_key LIKE $1 AND attempt > 1")
            .bind(format!("{tag}:%"))
            .fetch_one(pool)
            .await?;
    Ok(Run {
        label: format!("Trawl, {workers} worker(s), {label}"),
        bytes: bytes as u64,
        seconds,
        retried,
    })
}

/// Rounds of one run, each measured alone.
const ROUNDS: usize = 3;

/// The round of median throughput, its label saying how many rounds there were.
fn median(mut rounds: Vec<Run>) -> Run {
    rounds.sort_by(|a, b| a.mb_per_s().total_cmp(&b.mb_per_s()));
    let n = rounds.len();
    let mut mid = rounds.swap_remove(n / 2);
    mid.label = format!("{} (median of {n})", mid.label);
    mid
}

/// `curl` fetching the same URLs into `dir` with `parallel` transfers at once.
fn curl_run(urls: &[String], parallel: usize, dir: &Path) -> Result<Run> {
    std::fs::create_dir_all(dir)?;
    let list = dir.join("urls.txt");
    let mut text = String::new();
    for (i, u) in urls.iter().enumerate() {
        text.push_str(&format!(
            "url = \"{u}\"\noutput = \"{}/{i}\"\n",
            dir.display()
        ));
    }
    std::fs::write(&list, text)?;
    let started = Instant::now();
    let status = Command::new("curl")
        .args(["-sS", "--fail", "--parallel", "--parallel-max"])
        .arg(parallel.to_string())
        .arg("--config")
        .arg(&list)
        .status()
        .context("running curl")?;
    let seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("curl failed: {status}");
    }
    let mut bytes = 0;
    for i in 0..urls.len() {
        bytes += std::fs::metadata(dir.join(i.to_string()))?.len();
    }
    Ok(Run {
        label: format!("curl, {parallel} transfer(s) at once, local disk"),
        bytes,
        seconds,
        retried: 0,
    })
}

fn local_store(dir: &Path) -> Vec<(String, String)> {
    vec![("TRAWL_MEDIA__STORE__PATH".into(), dir.display().to_string())]
}

/// (VmRSS, VmHWM) of a process, in kB.
fn memory_kb(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if !args.trawl.exists() {
        bail!(
            "{} is missing: cargo build --release --bin trawl",
            args.trawl.display()
        );
    }
    let work = std::env::temp_dir().join(format!("trawl-bench-media-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let server = Server::start(args.database_url.clone()).await?;
    let pool = server.fresh("trawl_bench_media", 8).await?;
    let db_url = trawl_shared::db::with_database(&server.admin_url, "trawl_bench_media");
    add_accounts(&pool, accounts_needed(&args)).await?;
    let codes = video_posts(args.videos);
    if codes.len() < args.videos {
        bail!("the data set has only {} public video posts", codes.len());
    }

    let (sim, sim_url) = simulator(&args, args.video_bytes, &work).await?;
    let _sim = Killed(vec![sim]);
    // The posts first (their URLs are what media jobs read), with one worker.
    eprintln!("crawling {} video posts…", codes.len());
    {
        let env = worker_env(&db_url, &sim_url, &local_store(&work.join("warmup")))?;
        let _w = Killed(vec![spawn(
            &args.trawl,
            &["worker".into()],
            &env,
            &work.join("worker-posts.log"),
        )?]);
        submit(
            &pool,
            codes.iter().map(|c| JobSpec::new("post", c)).collect(),
        )
        .await?;
        wait_done(&pool, Duration::from_secs(300)).await?;
    }
    let s3 = trawl_shared::testing::s3::shared_server();
    let mut runs = Vec::new();
    for (workers, curl_parallel) in [(1, 1), (args.fleet, args.fleet)] {
        // Three rounds of Trawl then curl, interleaved, and the median round of each: the
        // simulator, the workers and curl share two cores, so one round alone is noisy.
        let mut trawl_rounds = Vec::new();
        let mut curl_rounds = Vec::new();
        for round in 0..ROUNDS {
            eprintln!("{workers} worker(s), local store, round {}…", round + 1);
            let dir = work.join(format!("local-{workers}"));
            trawl_rounds.push(
                media_run(
                    &args,
                    &pool,
                    &db_url,
                    &sim_url,
                    &codes,
                    workers,
                    local_store(&dir),
                    "local directory",
                    &work,
                    round,
                )
                .await?,
            );
            // The URLs the media jobs just fetched, for curl.
            let urls: Vec<String> = sqlx::query_scalar(
                "SELECT url FROM ig_media WHERE item LIKE 'post:%' ORDER BY item, position, variant",
            )
            .fetch_all(&pool)
            .await?;
            eprintln!("curl, {curl_parallel} at once, round {}…", round + 1);
            curl_rounds.push(curl_run(
                &urls,
                curl_parallel,
                &work.join(format!("curl-{workers}")),
            )?);
            std::fs::remove_dir_all(&dir).ok();
            std::fs::remove_dir_all(work.join(format!("curl-{workers}"))).ok();
        }
        runs.push(median(trawl_rounds));
        runs.push(median(curl_rounds));
        eprintln!("{workers} worker(s), S3 store…");
        let bucket = s3.fresh_bucket().map_err(anyhow::Error::msg)?;
        runs.push(
            media_run(
                &args,
                &pool,
                &db_url,
                &sim_url,
                &codes,
                workers,
                {
                    let mut env = s3.worker_env(&bucket, &work.join(format!("spool-{workers}")));
                    // A benchmark retries what a test lets fail at once.
                    env.push(("TRAWL_MEDIA__STORE__MAX_RETRIES".into(), "3".into()));
                    env.push(("TRAWL_MEDIA__STORE__CONNECT_TIMEOUT".into(), "5s".into()));
                    env
                },
                "S3 (moto server)",
                &work,
                0,
            )
            .await?,
        );
    }
    drop(_sim);

    // Memory: one worker streams one big video.
    eprintln!(
        "one worker streams a {} MB video…",
        args.big_video_bytes / 1_000_000
    );
    let (big_sim, big_url) = simulator(&args, args.big_video_bytes, &work).await?;
    let _big = Killed(vec![big_sim]);
    let big_pool = server.fresh("trawl_bench_media_rss", 4).await?;
    let big_db = trawl_shared::db::with_database(&server.admin_url, "trawl_bench_media_rss");
    add_accounts(&big_pool, 1).await?;
    let env = worker_env(&big_db, &big_url, &local_store(&work.join("big")))?;
    let worker = spawn(
        &args.trawl,
        &["worker".into()],
        &env,
        &work.join("worker-big.log"),
    )?;
    let pid = worker.id();
    let _worker = Killed(vec![worker]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle_rss, _) = memory_kb(pid)?;
    let started = Instant::now();
    submit(
        &big_pool,
        vec![JobSpec {
            options: Some(trawl_shared::domain::JobOptions {
                with_media: true,
                ..Default::default()
            }),
            ..JobSpec::new("post", &codes[0])
        }],
    )
    .await?;
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        samples.push(memory_kb(pid)?.0);
        let active: i64 =
            sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')")
                .fetch_one(&big_pool)
                .await?;
        if active == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let big_seconds = started.elapsed().as_secs_f64();
    let (_, peak) = memory_kb(pid)?;
    let stored: i64 = sqlx::query_scalar(
        "SELECT coalesce(max(size), 0)::bigint FROM ig_media WHERE variant = 'video'",
    )
    .fetch_one(&big_pool)
    .await?;
    if stored as u64 != args.big_video_bytes {
        bail!("the big video was not stored whole ({stored} bytes)");
    }
    let sampled_max = samples.iter().copied().max().unwrap_or(0);
    let first_half = samples.len() / 2;
    let early = samples[..first_half.max(1)]
        .iter()
        .copied()
        .max()
        .unwrap_or(0);
    let late = samples[first_half..].iter().copied().max().unwrap_or(0);

    let mut out = String::from("## Media downloads (bench/media)\n\n");
    out.push_str(&machine_report(&server.admin_url).await?);
    out.push_str(&format!(
        "\nCommand: `cargo build --release --bin trawl && cargo run --release -p trawl-bench-media -- \
         --write bench/RESULTS.md` ({} video posts of {} MB each plus their thumbnails per run, the \
         release binary for the simulator and the workers, simulator and workers and curl on this \
         machine; each worker streams one file at a time, as a media job fetches its files in \
         turn, so curl runs with as many transfers at once as there are workers).\n\n",
        codes.len(),
        args.video_bytes / 1_000_000
    ));
    out.push_str(
        "| run | MB | seconds | MB/s | of curl | jobs retried |\n|---|---|---|---|---|---|\n",
    );
    for chunk in runs.chunks(3) {
        let curl = &chunk[1];
        for r in chunk {
            out.push_str(&format!(
                "| {} | {:.0} | {:.2} | {:.1} | {:.0}% | {} |\n",
                r.label,
                r.bytes as f64 / 1e6,
                r.seconds,
                r.mb_per_s(),
                100.0 * r.mb_per_s() / curl.mb_per_s(),
                r.retried
            ));
        }
    }
    out.push_str(&format!(
        "\nTrawl's times run from queueing the media jobs to the last one finished (leasing, the \
         database writes and the blob store's fsync and rename included); curl's from start to \
         exit. curl neither hashes nor syncs; Trawl hashes every byte (SHA-256), copies it \
         through the store's buffer and syncs each blob before it is visible, and here the \
         simulator generating the bytes runs on the same two cores, so that work shows most \
         where one stream leaves no core idle. The S3 runs upload to moto, a Python S3 server \
         on the same two cores, which is what they measure more than Trawl.\n\n\
         Memory of one worker streaming a {} MB video to the local store ({:.1} s): resident \
         {:.1} MB idle before the job, at most {:.1} MB sampled every 100 ms during it (first \
         half {:.1} MB, second half {:.1} MB), peak over the process's life (VmHWM) {:.1} MB.\n",
        args.big_video_bytes / 1_000_000,
        big_seconds,
        idle_rss as f64 / 1024.0,
        sampled_max as f64 / 1024.0,
        early as f64 / 1024.0,
        late as f64 / 1024.0,
        peak as f64 / 1024.0,
    ));
    println!("{out}");
    if let Some(path) = &args.write {
        write_section(path, "media", &out)?;
    }
    if args.keep {
        eprintln!("logs and stores kept in {}", work.display());
    } else {
        std::fs::remove_dir_all(&work).ok();
    }
    Ok(())
}
