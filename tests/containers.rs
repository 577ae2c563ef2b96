//! The compose fleet on real containers. `scripts/build-images.sh` makes the images (Trawl's own
//! through `deploy/Dockerfile`'s production path: cargo-chef, a release build, the slim non-root
//! runtime), then `deploy/compose.yaml` runs under the machine's compose tool, in a copy of
//! `deploy/` with its own `.env`, exactly as the README tells a user to run it. A crawl submitted
//! with the host's `trawl` CLI goes through: workers scaled 2 → 6 → 2, a worker SIGKILLed, a
//! worker cut off from the database's network for longer than its lease and reconnected, and a
//! PostgreSQL restart. At each step Prometheus, inside the compose network, must scrape every
//! worker replica; at the end every item is stored once, the simulator answered no 429 and held
//! every window under its cap.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::{Connection, PgConnection};
use trawl_simulator::{DataSet, Sizes};

mod support;
use support::{expected_posts_and_comments, free_port, prometheus_query, public_users_with_posts};

/// Settings the test shortens so that a lease expires in seconds, not minutes; everything else
/// is `deploy/trawl.env` as shipped.
const TEST_OVERRIDE: &str = r#"services:
  scheduler:
    environment:
      TRAWL_QUEUE__LEASE: 20s
  worker:
    environment:
      TRAWL_QUEUE__LEASE: 20s
      TRAWL_WORKER__ACCOUNT_LEASE: 15s
"#;

const LEASE: Duration = Duration::from_secs(20);
const ACCOUNTS: usize = 8;
const PROFILES: usize = 12;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd`, panicking with its output unless it succeeds; returns its stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn docker(args: &[&str]) -> String {
    run(Command::new("docker").args(args))
}

/// Polls `probe` every second until it yields, or panics naming `what`.
async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One compose project in a temporary copy of `deploy/`; taken down with its volumes on drop.
struct ComposeFleet {
    dir: PathBuf,
    project: String,
    tool: Vec<String>,
    /// Variables the compose file interpolates (images, host ports).
    vars: Vec<(String, String)>,
    database_password: String,
    scheduler_port: u16,
    prometheus_port: u16,
    token: String,
    http: reqwest::Client,
}

impl ComposeFleet {
    /// Copies `deploy/`, writes its `.env` as the README says (fresh secrets, a token of the
    /// scheduler's own format) and picks the compose tool the machine has.
    fn prepare(images: &[(String, String)]) -> Self {
        let project = format!("trawltest{}", std::process::id());
        let dir = std::env::temp_dir().join(&project).join("deploy");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("prometheus")).expect("temp deploy dir");
        for file in [
            "compose.yaml",
            "trawl.env",
            ".env.example",
            "prometheus/prometheus.yml",
            "prometheus/alerts.yml",
        ] {
            std::fs::copy(repo().join("deploy").join(file), dir.join(file))
                .unwrap_or_else(|e| panic!("copy deploy/{file}: {e}"));
        }
        std::fs::write(dir.join("compose.test.yaml"), TEST_OVERRIDE).expect("override");

        let hex = |bytes: usize| -> String {
            (0..bytes)
                .map(|_| format!("{:02x}", rand::random::<u8>()))
                .collect()
        };
        let database_password = hex(16);
        let (token, token_sha256) = new_token();
        // The .env of .env.example, every value changed (as its first line asks).
        let env = std::fs::read_to_string(dir.join(".env.example"))
            .expect(".env.example")
            .lines()
            .map(|line| match line.split_once('=') {
                Some(("POSTGRES_PASSWORD", _)) => format!("POSTGRES_PASSWORD={database_password}"),
                Some(("TRAWL_DATABASE__URL", _)) => format!(
                    "TRAWL_DATABASE__URL=postgres://trawl:{database_password}@postgres:5432/trawl"
                ),
                Some(("TRAWL_SECRETS__KEY", _)) => format!("TRAWL_SECRETS__KEY={}", hex(32)),
                Some(("TRAWL_SCHEDULER__TOKENS", _)) => format!(
                    "TRAWL_SCHEDULER__TOKENS=[{{name=\"test\",sha256=\"{token_sha256}\",scopes=[\"admin\"]}}]"
                ),
                Some(("GF_SECURITY_ADMIN_PASSWORD", _)) => {
                    format!("GF_SECURITY_ADMIN_PASSWORD={}", hex(8))
                }
                _ => line.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.join(".env"), env + "\n").expect("write .env");

        let tool = if Command::new("docker")
            .args(["compose", "version"])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            vec!["docker".to_owned(), "compose".to_owned()]
        } else {
            vec!["docker-compose".to_owned()]
        };
        let scheduler_port = free_port();
        let prometheus_port = free_port();
        let mut vars = images.to_vec();
        vars.push(("PORT_SCHEDULER".into(), scheduler_port.to_string()));
        vars.push(("PORT_PROMETHEUS".into(), prometheus_port.to_string()));
        Self {
            dir,
            project,
            tool,
            vars,
            database_password,
            scheduler_port,
            prometheus_port,
            token,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
        }
    }

    /// `docker compose -p PROJECT -f compose.yaml -f compose.test.yaml ARGS`, not yet run.
    fn compose_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.tool[0]);
        cmd.args(&self.tool[1..])
            .args(["-p", &self.project])
            .arg("-f")
            .arg(self.dir.join("compose.yaml"))
            .arg("-f")
            .arg(self.dir.join("compose.test.yaml"))
            .args(args)
            .envs(self.vars.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs a compose command, panicking unless it succeeds; returns its stdout.
    fn compose(&self, args: &[&str]) -> String {
        run(&mut self.compose_command(args))
    }

    /// The ids of the service's containers, running or not.
    fn containers(&self, service: &str) -> Vec<String> {
        self.compose(&["ps", "-q", service])
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn running(&self, service: &str) -> Vec<String> {
        self.containers(service)
            .into_iter()
            .filter(|id| inspect(id, "{{.State.Running}}") == "true")
            .collect()
    }

    fn network(&self, name: &str) -> String {
        format!("{}_{name}", self.project)
    }

    /// The container's address on one of the project's networks (reachable from the host).
    fn address(&self, id: &str, network: &str) -> String {
        inspect(
            id,
            &format!(
                "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
                self.network(network)
            ),
        )
    }

    fn one(&self, service: &str) -> String {
        let ids = self.containers(service);
        assert_eq!(ids.len(), 1, "one {service} container: {ids:?}");
        ids[0].clone()
    }

    async fn database(&self) -> Result<PgConnection, sqlx::Error> {
        let ip = self.address(&self.one("postgres"), "data");
        PgConnection::connect(&format!(
            "postgres://trawl:{}@{ip}:5432/trawl",
            self.database_password
        ))
        .await
    }

    async fn scalar(&self, sql: &str) -> Option<i64> {
        let mut db = self.database().await.ok()?;
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&mut db)
            .await
            .ok()
    }

    async fn ids(&self, sql: &str) -> BTreeSet<i64> {
        let mut db = self.database().await.expect("the database answers");
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_all(&mut db)
            .await
            .expect("ids")
            .into_iter()
            .collect()
    }

    /// The host's `trawl` CLI against the published scheduler port.
    fn trawl(&self, args: &[&str]) -> String {
        run(Command::new(env!("CARGO_BIN_EXE_trawl"))
            .args([
                "--url",
                &format!("http://127.0.0.1:{}", self.scheduler_port),
            ])
            .args(args)
            .env_clear()
            .env("TRAWL_CLIENT__TOKEN", &self.token))
    }

    /// How many worker targets Prometheus scrapes successfully right now.
    async fn workers_up_in_prometheus(&self) -> Option<usize> {
        let answer = prometheus_query(
            &self.http,
            &format!("http://127.0.0.1:{}", self.prometheus_port),
            "count(up{job=\"trawl-workers\"} == 1) or vector(0)",
        )
        .await
        .ok()?;
        answer["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()
    }

    /// Waits until Prometheus scrapes exactly the running worker replicas, `expected` of them.
    async fn wait_prometheus_sees_workers(&self, expected: usize) {
        wait_for(
            &format!("Prometheus to scrape {expected} workers"),
            Duration::from_secs(120),
            async || {
                let running = self.running("worker").len();
                let up = self.workers_up_in_prometheus().await?;
                (running == expected && up == expected).then_some(())
            },
        )
        .await;
    }

    async fn wait_healthy(&self, service: &str, count: usize) {
        wait_for(
            &format!("{count} healthy {service} containers"),
            Duration::from_secs(180),
            async || {
                let running = self.running(service);
                (running.len() == count
                    && running
                        .iter()
                        .all(|id| inspect(id, "{{.State.Health.Status}}") == "healthy"))
                .then_some(())
            },
        )
        .await;
    }

    fn scale_workers(&self, n: usize) {
        self.compose(&[
            "up",
            "-d",
            "--no-deps",
            "--scale",
            &format!("worker={n}"),
            "worker",
        ]);
    }

    async fn oracle(&self) -> Value {
        let ip = self.address(&self.one("simulator"), "default");
        self.http
            .get(format!("http://{ip}:8443/__sim/oracle"))
            .send()
            .await
            .expect("the simulator's oracle answers")
            .json()
            .await
            .expect("oracle JSON")
    }
}

impl Drop for ComposeFleet {
    fn drop(&mut self) {
        if std::env::var_os("TRAWL_KEEP_CONTAINERS").is_some() {
            eprintln!(
                "containers kept: project {} in {}",
                self.project,
                self.dir.display()
            );
            return;
        }
        if std::thread::panicking() {
            // The logs of the whole project, for the failure at hand.
            let logs = ["logs", "--no-color", "--tail", "60"];
            if let Ok(out) = self.compose_command(&logs).output() {
                eprintln!("{}", String::from_utf8_lossy(&out.stdout));
            }
        }
        let _ = self
            .compose_command(&["down", "-v", "--remove-orphans", "-t", "5"])
            .output();
        if let Some(project_dir) = self.dir.parent() {
            let _ = std::fs::remove_dir_all(project_dir);
        }
    }
}

fn inspect(id: &str, format: &str) -> String {
    Command::new("docker")
        .args(["inspect", "-f", format, id])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// A fresh API token and its sha256, from `trawl token new` as an operator makes one.
fn new_token() -> (String, String) {
    let out = run(Command::new(env!("CARGO_BIN_EXE_trawl"))
        .args(["token", "new", "--scope", "admin", "--name", "test"]));
    let field = |prefix: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.trim().trim_matches('"').to_owned())
            .unwrap_or_else(|| panic!("`trawl token new` printed no {prefix:?}: {out}"))
    };
    (field("token:"), field("sha256 ="))
}

/// Builds every image with scripts/build-images.sh and returns the variables it printed.
fn build_images() -> Vec<(String, String)> {
    if !Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        trawl_shared::testing::install("install-docker.sh")
            .unwrap_or_else(|e| panic!("no Docker engine and installing one failed: {e}"));
    }
    let started = Instant::now();
    let out = run(Command::new("bash").arg(repo().join("scripts/build-images.sh")));
    eprintln!(
        "FIGURE images built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The posts and comments (with replies) of the first `n` public users with posts of the data
/// set the compose simulator serves (its defaults: seed 1, default sizes).
fn expected_crawl(n: usize) -> (Vec<String>, BTreeSet<i64>, BTreeSet<i64>) {
    let data = DataSet::generate(1, Sizes::default());
    let users = public_users_with_posts(&data, n);
    let (posts, comments) = expected_posts_and_comments(&data, &users);
    (users, posts, comments)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_fleet_on_containers_scales_survives_kills_cut_offs_and_a_database_restart() {
    let images = build_images();
    let fleet = ComposeFleet::prepare(&images);
    let (users, posts, comments) = expected_crawl(PROFILES);

    let up_started = Instant::now();
    fleet.compose(&["up", "-d", "--scale", "worker=2"]);
    fleet.wait_healthy("postgres", 1).await;
    fleet.wait_healthy("scheduler", 1).await;
    fleet.wait_healthy("worker", 2).await;
    // The one-shot services ran and succeeded: the schema is migrated, the trial accounts added.
    for service in ["migrate", "trial-accounts"] {
        let id = fleet.one(service);
        wait_for(
            &format!("{service} to finish"),
            Duration::from_secs(120),
            async || (inspect(&id, "{{.State.Status}}") == "exited").then_some(()),
        )
        .await;
        assert_eq!(
            inspect(&id, "{{.State.ExitCode}}"),
            "0",
            "{service} succeeded"
        );
    }
    let accounts = wait_for("the trial accounts", Duration::from_secs(60), async || {
        fleet
            .scalar("SELECT count(*) FROM accounts")
            .await
            .filter(|&n| n == ACCOUNTS as i64)
    })
    .await;
    assert_eq!(accounts, ACCOUNTS as i64);

    // Every long-running process runs as a non-root user.
    for service in ["postgres", "scheduler", "worker", "simulator", "prometheus"] {
        for id in fleet.running(service) {
            let processes = docker(&["top", &id, "-eo", "pid,uid,comm"]);
            assert!(processes.lines().count() > 1, "{service} runs a process");
            for line in processes.lines().skip(1) {
                let uid = line.split_whitespace().nth(1).unwrap_or_default();
                assert_ne!(uid, "0", "{service} runs a process as root: {line}");
            }
        }
    }

    for user in &users {
        fleet.trawl(&["submit", "profile_posts", user, "--with-comments"]);
    }
    let first_item = wait_for(
        "the first crawled post",
        Duration::from_secs(120),
        async || {
            fleet
                .scalar("SELECT count(*) FROM ig_posts")
                .await
                .filter(|&n| n > 0)
        },
    )
    .await;
    eprintln!(
        "FIGURE up to the first crawled item: {:.1} s ({first_item} posts)",
        up_started.elapsed().as_secs_f64()
    );
    fleet.wait_prometheus_sees_workers(2).await;

    // 2 → 6.
    fleet.scale_workers(6);
    fleet.wait_healthy("worker", 6).await;
    fleet.wait_prometheus_sees_workers(6).await;
    let leased = wait_for("six accounts leased", Duration::from_secs(60), async || {
        fleet
            .scalar("SELECT count(*) FROM accounts WHERE state = 'leased'")
            .await
            .filter(|&n| n == 6)
    })
    .await;
    assert_eq!(leased, 6, "six workers hold six accounts");

    // A worker SIGKILLed: its job and account come back when their leases run out.
    let workers = fleet.running("worker");
    docker(&["kill", &workers[0]]);
    let running_after_kill = wait_for(
        "the killed worker gone or restarted",
        Duration::from_secs(60),
        async || {
            let running = fleet.running("worker").len();
            (running == 5 || inspect(&workers[0], "{{.RestartCount}}") != "0").then_some(running)
        },
    )
    .await;
    fleet.wait_prometheus_sees_workers(running_after_kill).await;

    // A worker cut off from the database's network for longer than its lease, then back. Its
    // container's host name (the short id) begins its lease owner name.
    let victim = workers[1].clone();
    let owner = format!("{}-%", &victim[..12]);
    let (job, token) = wait_for("the victim to hold a job", Duration::from_secs(60), async || {
        let mut db = fleet.database().await.ok()?;
        sqlx::query_as::<_, (i64, String)>(
            "SELECT id, lease_token::text FROM jobs WHERE state = 'running' AND lease_owner LIKE $1",
        )
        .bind(&owner)
        .fetch_optional(&mut db)
        .await
        .ok()
        .flatten()
    })
    .await;
    let data_network = fleet.network("data");
    docker(&["network", "disconnect", &data_network, &victim]);
    tokio::time::sleep(LEASE + Duration::from_secs(15)).await;
    let still_held = fleet
        .scalar(&format!(
            "SELECT count(*) FROM jobs WHERE id = {job} AND lease_token::text = '{token}'"
        ))
        .await;
    assert_eq!(
        still_held,
        Some(0),
        "the cut-off worker's job {job} was taken back when its lease ran out"
    );
    docker(&["network", "connect", &data_network, &victim]);

    // PostgreSQL restarted under the running fleet.
    docker(&["restart", "-t", "10", &fleet.one("postgres")]);
    fleet.wait_healthy("postgres", 1).await;
    fleet.wait_healthy("worker", running_after_kill).await;
    let active = fleet
        .scalar("SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')")
        .await
        .unwrap_or_default();
    assert!(
        active > 0,
        "the crawl is still running when the fleet scales down"
    );

    // 6 → 2: compose stops the extra replicas with SIGTERM; they give their work back.
    fleet.scale_workers(2);
    fleet.wait_prometheus_sees_workers(2).await;

    wait_for(
        "the crawl to finish",
        Duration::from_secs(900),
        async || {
            fleet
                .scalar("SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')")
                .await
                .filter(|&n| n == 0)
        },
    )
    .await;
    let failed = fleet
        .scalar("SELECT count(*) FROM jobs WHERE state = 'failed'")
        .await;
    assert_eq!(failed, Some(0), "no job failed");
    assert_eq!(
        fleet.ids("SELECT id FROM ig_posts").await,
        posts,
        "every post once"
    );
    assert_eq!(
        fleet.ids("SELECT id FROM ig_comments").await,
        comments,
        "every comment once"
    );
    let oracle = fleet.oracle().await;
    assert_eq!(oracle["responses_429"], 0, "the simulator answered no 429");
    let peaks = oracle["peaks"].as_array().expect("oracle peaks");
    assert!(!peaks.is_empty(), "the oracle saw the crawl's windows");
    for peak in peaks {
        assert!(
            peak["most"].as_u64() <= peak["cap"].as_u64(),
            "a window held more than its cap: {peak}"
        );
    }
    eprintln!(
        "FIGURE crawl: {} posts, {} comments, {} requests, busiest window {:.0}% of its cap",
        posts.len(),
        comments.len(),
        oracle["requests"],
        peaks
            .iter()
            .filter_map(|p| Some(p["most"].as_f64()? / p["cap"].as_f64()?))
            .fold(0.0, f64::max)
            * 100.0
    );
}
