//! `trawl demo`: a whole crawl fleet on one machine with nothing but PostgreSQL's server binaries.
//!
//! A private PostgreSQL cluster kept under a data directory (reused by the next run), the schema,
//! the Instagram simulator at scaled time, the scheduler, and K workers with K accounts, all real
//! components in one process. It submits a crawl through the API, shows it live, prints a
//! summary, and keeps serving `/metrics` until Ctrl-C (or exits with `--exit-when-done`).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use trawl_shared::accounts::{Accounts, NewAccount};
use trawl_shared::config::Config;
use trawl_shared::crypto::SecretBox;
use trawl_shared::db;
use trawl_shared::duration::HumanDuration;
use trawl_shared::pgcluster::{ClusterError, PrivateCluster};
use trawl_shared::queue::QueueStats;
use trawl_shared::results::{self, Kind};
use trawl_shared::secret::Secret;
use trawl_shared::shutdown::{self, Shutdown, ShutdownTrigger};
use trawl_simulator::{DataSet, Sim, SimConfig, Sizes};

use crate::cli::DemoArgs;
use crate::client::{ApiClient, CliError};

const DEMO_DATABASE: &str = "trawl_demo";
const SEED: u64 = 1;

fn fail(context: &str) -> impl Fn(String) -> CliError + '_ {
    move |e| CliError::failed(context, e)
}

/// Where the demo keeps its cluster and key unless `--data-dir` says otherwise.
fn default_data_dir() -> PathBuf {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("trawl-demo-{uid}"))
}

/// The demo's secrets key: generated once, kept beside the cluster, readable by its owner only.
fn demo_key(dir: &Path) -> Result<String, CliError> {
    let path = dir.join("secrets.key");
    if let Ok(existing) = std::fs::read_to_string(&path)
        && SecretBox::from_hex(existing.trim()).is_ok()
    {
        return Ok(existing.trim().to_owned());
    }
    let key = SecretBox::generate_hex().map_err(|e| fail("cannot make a key")(e.to_string()))?;
    std::fs::write(&path, &key).map_err(|e| fail("cannot store the demo key")(e.to_string()))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    Ok(key)
}

struct Database {
    url: String,
    /// The private cluster, when the demo started one.
    cluster: Option<PrivateCluster>,
}

/// `DATABASE_URL` (or `TRAWL_DATABASE__URL`) when given; otherwise the kept private cluster.
/// Run from a checkout (`cargo run -- demo`), the demo installs PostgreSQL's server binaries
/// with the repository's script when the machine has none, so that it works alone on a fresh
/// machine. An installed binary far from its checkout says what is missing instead.
async fn install_postgres_if_missing(quiet: bool) -> Result<(), CliError> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-postgres.sh");
    if trawl_shared::pgcluster::find_bin_dir().is_some() || !script.is_file() {
        return Ok(());
    }
    if !quiet {
        println!(
            "      PostgreSQL's server binaries are missing: running {}",
            script.display()
        );
    }
    let status = tokio::process::Command::new("bash")
        .arg(&script)
        .stdout(if quiet {
            std::process::Stdio::null()
        } else {
            std::process::Stdio::inherit()
        })
        .status()
        .await
        .map_err(|e| CliError::failed(format!("cannot run {}", script.display()), e))?;
    if status.success() {
        Ok(())
    } else {
        Err(CliError::failed(
            format!("{} failed ({status})", script.display()),
            "install PostgreSQL's server binaries and run the demo again",
        ))
    }
}

async fn database(data_dir: &Path, quiet: bool) -> Result<Database, CliError> {
    if let Some(url) = ["DATABASE_URL", "TRAWL_DATABASE__URL"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    {
        if !quiet {
            println!(
                "      using the server from the environment: {}",
                trawl_shared::secret::redact_url_password(&url)
            );
        }
        return Ok(Database { url, cluster: None });
    }
    install_postgres_if_missing(quiet).await?;
    let dir = data_dir.join("postgres");
    let cluster = tokio::task::spawn_blocking(move || PrivateCluster::open(&dir))
        .await
        .map_err(|e| fail("cluster setup panicked")(e.to_string()))?
        .map_err(|e| match e {
            ClusterError::BinariesMissing | ClusterError::NoUnprivilegedUser => {
                CliError::failed("cannot run the demo", e)
            }
            other => CliError::failed(
                format!("cannot start PostgreSQL in {}", data_dir.display()),
                other,
            ),
        })?;
    if !quiet {
        println!(
            "      PostgreSQL on 127.0.0.1:{} (data kept in {})",
            cluster.port(),
            cluster.data_dir().display()
        );
    }
    // A fresh demo database each run; the cluster itself is reused.
    let mut admin = PgConnection::connect(&cluster.url("postgres"))
        .await
        .map_err(|e| fail("cannot connect to the private cluster")(e.to_string()))?;
    for sql in [
        format!("DROP DATABASE IF EXISTS {DEMO_DATABASE} WITH (FORCE)"),
        format!("CREATE DATABASE {DEMO_DATABASE}"),
    ] {
        admin
            .execute(sqlx::AssertSqlSafe(sql))
            .await
            .map_err(|e| fail("cannot create the demo database")(e.to_string()))?;
    }
    let _ = admin.close().await;
    Ok(Database {
        url: cluster.url(DEMO_DATABASE),
        cluster: Some(cluster),
    })
}

async fn bind() -> Result<(tokio::net::TcpListener, String), CliError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| fail("cannot bind a port")(e.to_string()))?;
    let address = listener
        .local_addr()
        .map_err(|e| fail("cannot bind a port")(e.to_string()))?;
    Ok((listener, format!("http://{address}")))
}

/// The running parts, stopped together.
struct Fleet {
    stop: ShutdownTrigger,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    worker_urls: Vec<String>,
    sim_url: String,
    api_url: String,
}

pub async fn run(args: DemoArgs, base: &Config) -> Result<(), CliError> {
    if !(args.time_scale > 0.0 && args.time_scale <= 1.0) {
        return Err(CliError::BadFlag {
            flag: "--time-scale",
            reason: "must be above 0 and at most 1".into(),
        });
    }
    if !(1..=16).contains(&args.workers) {
        return Err(CliError::BadFlag {
            flag: "--workers",
            reason: "must be between 1 and 16".into(),
        });
    }
    let quiet = args.json;
    let say = |line: &str| {
        if !quiet {
            println!("{line}");
        }
    };
    say("Trawl demo: a private PostgreSQL, the Instagram simulator, the scheduler and workers.\n");
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| fail("cannot create the data directory")(e.to_string()))?;

    say("[1/6] PostgreSQL");
    let database = database(&data_dir, quiet).await?;
    let pool = db::connect_url(&database.url, 20, Duration::from_secs(10)).await?;
    db::migrate(&pool).await?;
    say(&format!(
        "      schema at version {}",
        db::required_schema_version()
    ));

    say(&format!(
        "[2/6] the simulator: seed {SEED}, time x{} (an 11-minute window lasts {:.0} s)",
        args.time_scale,
        660.0 * args.time_scale
    ));
    let data = DataSet::generate(SEED, Sizes::default());
    let passwords: Vec<(String, String)> = (0..args.workers)
        .map(|k| trawl_simulator::data::generated_account(SEED, k))
        .collect();
    let targets = demo_targets(&data, args.profiles);
    let sim = Sim::new(SimConfig::fault_free(
        data,
        passwords.clone(),
        args.time_scale,
    ));

    let key = demo_key(&data_dir)?;
    let mut config = base.clone();
    config.database.url = Secret::new(database.url.clone());
    config.secrets.key = Some(Secret::new(key.clone()));
    config.limiter.time_scale = args.time_scale;
    config.scheduler.maintenance_interval = HumanDuration::from_secs(1);
    config.queue.poll_interval = HumanDuration::from_millis(200);
    config.queue.retry_base = HumanDuration::from_secs(1);
    config.queue.retry_max = HumanDuration::from_secs(5);
    config.worker.account_poll = HumanDuration::from_millis(500);
    config.media.store.path = data_dir.join("media");

    say(&format!(
        "[3/6] {} accounts (passwords sealed with the key in {})",
        args.workers,
        data_dir.join("secrets.key").display()
    ));
    let secrets =
        SecretBox::from_hex(&key).map_err(|e| CliError::failed("the demo key does not load", e))?;
    let accounts = Accounts::new(pool.clone(), secrets);
    for (name, password) in &passwords {
        accounts
            .add(&NewAccount {
                name,
                password: Some(password),
                ..NewAccount::default()
            })
            .await
            .map_err(|e| CliError::failed(format!("cannot add demo account {name}"), e))?;
    }

    say(&format!("[4/6] the scheduler and {} workers", args.workers));
    let token = format!("demo-{:032x}", rand::random::<u128>());
    config.scheduler.api_token = Some(Secret::new(token.clone()));
    let fleet = start_fleet(&config, sim, args.workers).await?;
    let client = ApiClient::new(&fleet.api_url, Some(token.clone()), Duration::from_secs(10))?;
    wait_until_ready(&client).await?;
    say(&format!("      API on {}", fleet.api_url));
    say(&format!("      simulator on {}", fleet.sim_url));
    for (i, url) in fleet.worker_urls.iter().enumerate() {
        say(&format!("      worker {i}: {url}/metrics"));
    }

    let specs = demo_jobs(&targets);
    say(&format!(
        "[5/6] submitting a crawl of {} jobs through the API: {} profiles (profile, posts with \
         their comments, followers, stories, highlights) and {} hashtags",
        specs.len(),
        targets.0.len(),
        targets.1.len()
    ));
    let answer: Value = client
        .post("/v1/jobs/batch", &json!({ "jobs": specs }))
        .await?;
    let created = answer["results"]
        .as_array()
        .map(|r| r.iter().filter(|s| s["created"] == true).count())
        .unwrap_or(0);
    say(&format!("      {created} created"));

    say("[6/6] crawling\n");
    let started = Instant::now();
    let http = reqwest::Client::new();
    let live = !quiet && std::io::stdout().is_terminal();
    let mut drawn = 0usize;
    let mut last_line = Instant::now() - Duration::from_secs(60);
    loop {
        let progress = Progress::read(&pool, &http, &fleet).await;
        if !quiet {
            let lines = progress.render(started.elapsed());
            if live {
                if drawn > 0 {
                    print!("\x1b[{drawn}A");
                }
                for l in &lines {
                    println!("\x1b[2K{l}");
                }
                drawn = lines.len();
            } else if last_line.elapsed() >= Duration::from_secs(5) || progress.active == 0 {
                println!("{}", lines.join(" | "));
                last_line = Instant::now();
            }
            let _ = std::io::stdout().flush();
        }
        if progress.active == 0 && progress.total > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(if live { 300 } else { 1000 })).await;
    }
    let summary = summary(&pool, &http, &fleet, started.elapsed()).await?;
    if args.json {
        crate::jobs::print_json(&summary);
    } else {
        print_summary(&summary);
    }

    if !args.exit_when_done {
        say("\nStill serving. Metrics:");
        for url in &fleet.worker_urls {
            say(&format!("  {url}/metrics"));
        }
        say(&format!("  {}/metrics (scheduler)", fleet.api_url));
        say(&format!(
            "In another shell:\n  export TRAWL_CLIENT__URL={}\n  export TRAWL_CLIENT__TOKEN={token}\n  \
             export TRAWL_DATABASE__URL={}\n  trawl jobs stats\n  trawl export posts --format csv",
            fleet.api_url, database.url
        ));
        say("Press Ctrl-C to stop.");
        shutdown::os_signal().await;
    }
    fleet.stop.trigger();
    for t in fleet.tasks {
        let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
    }
    pool.close().await;
    drop(database.cluster);
    say("stopped; the cluster is kept for the next run.");
    Ok(())
}

async fn start_fleet(
    config: &Config,
    sim: std::sync::Arc<Sim>,
    workers: usize,
) -> Result<Fleet, CliError> {
    let (stop, signal) = shutdown::channel();
    let mut tasks = Vec::new();
    let (sim_listener, sim_url) = bind().await?;
    let sim_signal = signal.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = trawl_simulator::run(sim_listener, sim, sim_signal.wait()).await {
            eprintln!("simulator stopped: {e}");
        }
    }));
    let mut config = config.clone();
    config.instagram.web_base = sim_url.clone();
    config.instagram.mobile_base = format!("{sim_url}/mobile");
    let (api_listener, api_url) = bind().await?;
    let scheduler_config = config.clone();
    let scheduler_signal = signal.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(e) =
            trawl_scheduler::run(&scheduler_config, api_listener, scheduler_signal).await
        {
            eprintln!("scheduler stopped: {e}");
        }
    }));
    let mut worker_urls = Vec::new();
    for _ in 0..workers {
        let (listener, url) = bind().await?;
        worker_urls.push(url);
        let worker_config = config.clone();
        let worker_signal: Shutdown = signal.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = trawl_worker::run(&worker_config, listener, worker_signal, false).await
            {
                eprintln!("worker stopped: {e}");
            }
        }));
    }
    Ok(Fleet {
        stop,
        tasks,
        worker_urls,
        sim_url,
        api_url,
    })
}

async fn wait_until_ready(client: &ApiClient) -> Result<(), CliError> {
    let mut last = None;
    for _ in 0..100 {
        match client.get::<Value>("/v1/stats").await {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last.unwrap_or_else(|| CliError::failed("the demo", "the scheduler did not start")))
}

/// Public profiles with posts, and hashtags they use.
fn demo_targets(data: &DataSet, profiles: usize) -> (Vec<String>, Vec<String>) {
    let users: Vec<String> = data
        .users
        .iter()
        .filter(|u| !u.is_private && u.post_count >= 5)
        .take(profiles)
        .map(|u| u.username.clone())
        .collect();
    let mut tags = Vec::new();
    if let Some(u) = users.first().and_then(|n| data.user_by_name(n))
        && let Some(p) = data.post(u.index, 0)
    {
        for word in p.caption.split_whitespace() {
            if let Some(tag) = word.strip_prefix('#') {
                tags.push(tag.to_owned());
            }
        }
    }
    (users, tags)
}

fn demo_jobs((users, tags): &(Vec<String>, Vec<String>)) -> Vec<Value> {
    let mut jobs = Vec::new();
    for (i, u) in users.iter().enumerate() {
        jobs.push(json!({"kind": "profile", "target": u, "priority": 10}));
        jobs.push(json!({"kind": "profile_posts", "target": u,
                   "options": {"with_comments": true, "with_media": true}}));
        if i % 2 == 0 {
            jobs.push(json!({"kind": "followers", "target": u}));
        }
        if i % 4 == 0 {
            jobs.push(json!({"kind": "stories", "target": u, "options": {"with_media": true}}));
            jobs.push(json!({"kind": "highlights", "target": u, "options": {"with_media": true}}));
        }
    }
    for t in tags {
        jobs.push(json!({"kind": "hashtag_posts", "target": t, "options": {"max_items": 60}}));
    }
    jobs
}

/// One look at the crawl: from the database, the simulator and the workers' metrics.
struct Progress {
    total: i64,
    active: i64,
    states: BTreeMap<String, i64>,
    items: Vec<(&'static str, i64)>,
    requests: BTreeMap<String, u64>,
    responses_429: u64,
    waits: f64,
    denials: f64,
}

/// The results the demo counts (hashtag listings only repeat posts already counted).
const SHOWN_ITEMS: [Kind; 5] = [
    Kind::Users,
    Kind::Posts,
    Kind::Comments,
    Kind::Follows,
    Kind::Stories,
];

impl Progress {
    async fn read(pool: &PgPool, http: &reqwest::Client, fleet: &Fleet) -> Self {
        let states: BTreeMap<String, i64> = QueueStats::read(pool)
            .await
            .map(|s| s.by_state())
            .unwrap_or_default()
            .into_iter()
            .map(|(state, n)| (state.as_str().to_owned(), n))
            .collect();
        let total = states.values().sum();
        let active = ["queued", "running"]
            .iter()
            .map(|s| states.get(*s).copied().unwrap_or(0))
            .sum();
        // A count that cannot be read shows as 0 rather than stopping the demo's display.
        let counts = results::counts(pool).await.unwrap_or_default();
        let items = SHOWN_ITEMS
            .iter()
            .map(|&kind| {
                let n = counts.iter().find(|c| c.0 == kind).map_or(0, |c| c.1);
                (kind.label(), n)
            })
            .collect();
        let mut requests = BTreeMap::new();
        let mut responses_429 = 0;
        if let Ok(r) = http
            .get(format!("{}/__sim/audit.jsonl", fleet.sim_url))
            .send()
            .await
            && let Ok(text) = r.text().await
        {
            for line in text.lines() {
                if let Ok(e) = serde_json::from_str::<Value>(line) {
                    let label = type_label(e["query_type"].as_str().unwrap_or("?"));
                    *requests.entry(label).or_insert(0) += 1;
                    if e["status"] == 429 {
                        responses_429 += 1;
                    }
                }
            }
        }
        let (mut waits, mut denials) = (0.0, 0.0);
        for url in &fleet.worker_urls {
            if let Ok(r) = http.get(format!("{url}/metrics")).send().await
                && let Ok(text) = r.text().await
            {
                waits += metric_sum(&text, "trawl_limiter_wait_seconds_sum");
                denials += metric_sum(&text, "trawl_limiter_denials_total");
            }
        }
        Self {
            total,
            active,
            states,
            items,
            requests,
            responses_429,
            waits,
            denials,
        }
    }

    fn render(&self, elapsed: Duration) -> Vec<String> {
        let done = self.total - self.active;
        let bar = |n: i64, of: i64| {
            let width = 30usize;
            let filled = if of > 0 {
                ((n as f64 / of as f64) * width as f64).round() as usize
            } else {
                0
            };
            format!(
                "[{}{}]",
                "#".repeat(filled.min(width)),
                ".".repeat(width - filled.min(width))
            )
        };
        let states = self
            .states
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let items = self
            .items
            .iter()
            .map(|(l, n)| format!("{l} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let requests = self
            .requests
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        vec![
            format!(
                "jobs     {} {done}/{}  ({states})",
                bar(done, self.total),
                self.total
            ),
            format!("items    {items}"),
            format!("requests {requests}"),
            format!(
                "limiter  waited {:.1} s in all, {} ledger refusals; 429s: {}   elapsed {:.0} s",
                self.waits,
                self.denials,
                self.responses_429,
                elapsed.as_secs_f64()
            ),
        ]
    }
}

/// A readable name for a query type: the GraphQL queries by what they fetch (the name of the
/// setting that holds their id).
fn type_label(key: &str) -> String {
    let ig = trawl_shared::config::InstagramConfig::default();
    let id = key
        .strip_prefix("qh:")
        .or_else(|| key.strip_prefix("doc:"))
        .unwrap_or(key);
    ig.query_hashes
        .entries()
        .into_iter()
        .chain(ig.doc_ids.entries())
        .find(|(_, value)| *value == id)
        .and_then(|(setting, _)| setting.rsplit('.').next())
        .map_or_else(|| key.to_owned(), |name| format!("graphql:{name}"))
}

fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn summary(
    pool: &PgPool,
    http: &reqwest::Client,
    fleet: &Fleet,
    elapsed: Duration,
) -> Result<Value, CliError> {
    let progress = Progress::read(pool, http, fleet).await;
    let oracle: Value = http
        .get(format!("{}/__sim/oracle", fleet.sim_url))
        .send()
        .await
        .map_err(|e| fail("cannot read the simulator's oracle")(e.to_string()))?
        .json()
        .await
        .map_err(|e| fail("cannot read the simulator's oracle")(e.to_string()))?;
    // Each window's busiest moment over every account, as a share of its cap.
    let mut windows: BTreeMap<String, (u64, u64, f64)> = BTreeMap::new();
    for peak in oracle["peaks"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let key = type_label(peak["key"].as_str().unwrap_or("?"));
        let most = peak["most"].as_u64().unwrap_or(0);
        let cap = peak["cap"].as_u64().unwrap_or(1);
        let entry =
            windows
                .entry(key)
                .or_insert((0, cap, peak["window_seconds"].as_f64().unwrap_or(0.0)));
        entry.0 = entry.0.max(most);
    }
    let (media_files, media_bytes) = results::media_totals(pool).await.unwrap_or_default();
    Ok(json!({
        "elapsed_seconds": (elapsed.as_secs_f64() * 10.0).round() / 10.0,
        "media": {"files": media_files, "bytes": media_bytes},
        "jobs": progress.states,
        "items_stored": progress.items.iter().map(|(l, n)| (l.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "requests_by_query_type": progress.requests,
        "requests_total": oracle["requests"],
        "responses_429": oracle["responses_429"],
        "limiter_wait_seconds": (progress.waits * 10.0).round() / 10.0,
        "ledger_refusals": progress.denials,
        "window_utilisation": windows.iter().map(|(k, (most, cap, w))| (k.clone(), json!({
            "busiest_window": most, "cap": cap, "window_seconds": w,
            "utilisation": (*most as f64 / *cap as f64 * 1000.0).round() / 1000.0,
        }))).collect::<serde_json::Map<_, _>>(),
    }))
}

fn print_summary(s: &Value) {
    println!("\nSummary ({} s)", s["elapsed_seconds"]);
    println!("  jobs:      {}", compact(&s["jobs"]));
    println!("  stored:    {}", compact(&s["items_stored"]));
    println!(
        "  media:     {} files, {:.1} MB in the blob store (downloads count in no window)",
        s["media"]["files"],
        s["media"]["bytes"].as_f64().unwrap_or(0.0) / 1e6
    );
    println!("  requests:  {} in all", s["requests_total"]);
    for (t, n) in s["requests_by_query_type"]
        .as_object()
        .into_iter()
        .flatten()
    {
        println!("    {t:<26} {n}");
    }
    println!("  busiest window per key, over all accounts (used / cap):");
    for (k, w) in s["window_utilisation"].as_object().into_iter().flatten() {
        println!(
            "    {k:<26} {:>4} / {:<4} in {:>6.1} s  ({:.1}%)",
            w["busiest_window"],
            w["cap"],
            w["window_seconds"].as_f64().unwrap_or(0.0),
            w["utilisation"].as_f64().unwrap_or(0.0) * 100.0
        );
    }
    println!(
        "  429s:      {}   limiter waits: {} s, {} ledger refusals",
        s["responses_429"], s["limiter_wait_seconds"], s["ledger_refusals"]
    );
}

fn compact(v: &Value) -> String {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}
