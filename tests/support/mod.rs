//! A crawl fleet of real `trawl` processes for end-to-end tests: the simulator, a scheduler and N
//! workers, each its own process, on a fresh database of the private test cluster. Their logs go
//! to files (named in every failure message) so a failing run can be read afterwards.

#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::PgPool;
use trawl_shared::accounts::{Accounts, NewAccount};
use trawl_shared::crypto::SecretBox;
use trawl_shared::domain::JobOptions;
use trawl_shared::queue::{Queue, QueueSettings};
use trawl_shared::testing::{TestDb, fresh_db};
use trawl_shared::{JobSpec, NewJob};
use trawl_simulator::{DataSet, Sizes};

/// The key the fleet's accounts are sealed with (a test key, not the insecure dev key).
pub const KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";
pub const TOKEN: &str = "fleet-test-token";

#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub seed: u64,
    pub sizes: Sizes,
    pub time_scale: f64,
    /// The simulator's own time scale when it differs from the workers' (a larger one makes its
    /// windows longer than the workers believe, so they earn 429s).
    pub sim_time_scale: Option<f64>,
    /// Login accounts the simulator knows and the database holds (`sim_account{k}`).
    pub accounts: usize,
    /// Accounts of the v1 platform (`sim_account{accounts}` on, before the spare ones): the
    /// simulator's same logins, stored as v1 accounts, so their workers speak its v1 API.
    pub v1_accounts: usize,
    /// Further accounts the simulator knows but the database does not (`sim_account{accounts}`
    /// on): for another client (the real Instaloader) that must not share the workers' windows.
    pub spare_accounts: usize,
    pub workers: usize,
    pub page_length: u32,
    /// Extra `trawl sim` arguments (faults, challenges).
    pub sim_args: Vec<String>,
    /// Extra worker environment.
    pub worker_env: Vec<(String, String)>,
    pub with_scheduler: bool,
    /// Store the simulator's accounts with their right passwords (tests of bad credentials add
    /// their own).
    pub add_accounts: bool,
    /// Give each worker a known `/metrics` port (`Fleet::worker_ports`).
    pub metrics_ports: bool,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self {
            seed: 7,
            sizes: Sizes {
                users: 200,
                max_posts: 40,
                max_following: 30,
                max_comments: 12,
            },
            time_scale: 0.01,
            sim_time_scale: None,
            accounts: 4,
            v1_accounts: 0,
            spare_accounts: 0,
            workers: 4,
            page_length: 12,
            sim_args: Vec::new(),
            worker_env: Vec::new(),
            with_scheduler: true,
            add_accounts: true,
            metrics_ports: false,
        }
    }
}

pub struct Fleet {
    pub options: FleetOptions,
    pub db: TestDb,
    pub queue: Queue,
    pub sim_url: String,
    pub data: DataSet,
    pub logs: PathBuf,
    sim: Child,
    scheduler: Option<Child>,
    /// The scheduler's API (and /metrics) port.
    pub scheduler_port: u16,
    workers: Vec<Option<Child>>,
    /// Each worker's `/metrics` port, when `metrics_ports` is set.
    pub worker_ports: Vec<u16>,
    /// Environment of one worker only, kept across its restarts (`add_worker_with`).
    worker_envs: Vec<Vec<(String, String)>>,
    started_workers: usize,
    http: reqwest::Client,
}

/// `profile_posts` of each user, with a `post_comments` job fanned out for every post.
pub fn posts_with_comments(users: &[String]) -> Vec<JobSpec> {
    users
        .iter()
        .map(|u| JobSpec {
            options: Some(JobOptions {
                with_comments: true,
                ..JobOptions::default()
            }),
            ..JobSpec::new("profile_posts", u)
        })
        .collect()
}

/// `trawl ARGS` with a clean environment (only `PATH` and `env`), so that no setting of the
/// machine running the tests leaks into the process under test.
pub fn trawl_command<K, V>(args: &[&str], env: impl IntoIterator<Item = (K, V)>) -> Command
where
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trawl"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env);
    cmd
}

/// Public users with posts of `data`, in data-set order.
pub fn public_users_with_posts(data: &DataSet, n: usize) -> Vec<String> {
    data.users
        .iter()
        .filter(|u| !u.is_private && u.post_count > 0)
        .take(n)
        .map(|u| u.username.clone())
        .collect()
}

/// The ids of every post of `users` in `data`, and of every comment and reply on them.
pub fn expected_posts_and_comments(
    data: &DataSet,
    users: &[String],
) -> (BTreeSet<i64>, BTreeSet<i64>) {
    let mut posts = BTreeSet::new();
    let mut comments = BTreeSet::new();
    for name in users {
        let u = data.user_by_name(name).expect("user in the data set");
        for i in 0..u.post_count {
            let p = data.post(u.index, i).expect("post");
            posts.insert(p.id as i64);
            for c in 0..p.comment_count {
                let cm = data.comment(&p, c).expect("comment");
                comments.insert(cm.id as i64);
                for (reply, ..) in data.replies(&cm) {
                    comments.insert(reply as i64);
                }
            }
        }
    }
    (posts, comments)
}

/// An instant query against the Prometheus at `base_url` (its JSON answer).
pub async fn prometheus_query(
    http: &reqwest::Client,
    base_url: &str,
    expr: &str,
) -> reqwest::Result<Value> {
    let encoded: String = expr
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    http.post(format!("{base_url}/api/v1/query"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("query={encoded}"))
        .send()
        .await?
        .json()
        .await
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The simulator's generated password of `sim_account{k}` (it prints the same).
pub fn sim_password(seed: u64, k: usize) -> String {
    trawl_simulator::data::generated_account(seed, k).1
}

impl Fleet {
    pub async fn start(options: FleetOptions) -> Self {
        Self::start_on(options, fresh_db().await).await
    }

    /// A fleet on a database the test provides (a cluster of its own, to restart or cut off).
    pub async fn start_on(options: FleetOptions, db: TestDb) -> Self {
        let logs =
            std::env::temp_dir().join(format!("trawl-fleet-{}-{}", std::process::id(), db.name));
        std::fs::create_dir_all(&logs).expect("log directory");
        let port = free_port();
        let sim_url = format!("http://127.0.0.1:{port}");
        let s = &options.sizes;
        let mut args: Vec<String> = [
            "sim",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--seed",
            &options.seed.to_string(),
            "--users",
            &s.users.to_string(),
            "--max-posts",
            &s.max_posts.to_string(),
            "--max-following",
            &s.max_following.to_string(),
            "--max-comments",
            &s.max_comments.to_string(),
            "--time-scale",
            &options
                .sim_time_scale
                .unwrap_or(options.time_scale)
                .to_string(),
            "--accounts",
            &(options.accounts + options.v1_accounts + options.spare_accounts).to_string(),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.extend(options.sim_args.iter().cloned());
        let sim = spawn(&logs, "sim", &args, &[]);
        let http = reqwest::Client::new();
        wait_for(&http, &format!("{sim_url}/__sim/oracle"), &logs).await;
        let accounts = Accounts::new(db.pool.clone(), SecretBox::from_hex(KEY).expect("key"));
        for k in (0..options.accounts).filter(|_| options.add_accounts) {
            let (name, password) = trawl_simulator::data::generated_account(options.seed, k);
            accounts
                .add(&NewAccount {
                    name: &name,
                    password: Some(&password),
                    ..NewAccount::default()
                })
                .await
                .expect("add account");
        }
        let v1_logins = options.accounts..options.accounts + options.v1_accounts;
        for k in v1_logins.filter(|_| options.add_accounts) {
            let (name, password) = trawl_simulator::data::generated_account(options.seed, k);
            accounts
                .add(&NewAccount {
                    name: &name,
                    password: Some(&password),
                    platform: trawl_shared::Platform::V1,
                    ..NewAccount::default()
                })
                .await
                .expect("add v1 account");
        }
        let data = DataSet::generate(options.seed, options.sizes);
        let queue = Queue::new(db.pool.clone(), QueueSettings::default());
        let mut fleet = Self {
            options,
            db,
            queue,
            sim_url,
            data,
            logs,
            sim,
            scheduler: None,
            scheduler_port: 0,
            workers: Vec::new(),
            worker_ports: Vec::new(),
            worker_envs: Vec::new(),
            started_workers: 0,
            http,
        };
        if fleet.options.with_scheduler {
            fleet.start_scheduler();
        }
        for _ in 0..fleet.options.workers {
            fleet.add_worker();
        }
        fleet
    }

    pub fn accounts(&self) -> Accounts {
        Accounts::new(self.db.pool.clone(), SecretBox::from_hex(KEY).expect("key"))
    }

    /// Runs `trawl ARGS` with the fleet's configuration; returns (exit code, stdout, stderr).
    pub fn trawl(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let out = trawl_command(args, self.env()).output().expect("run trawl");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The fleet's local blob store.
    pub fn blob_dir(&self) -> PathBuf {
        self.logs.join("blobs")
    }

    pub fn pool(&self) -> &PgPool {
        &self.db.pool
    }

    /// Configuration every `trawl` process of the fleet shares, as environment variables.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("TRAWL_DATABASE__URL", self.db.url.as_str()),
            ("TRAWL_DATABASE__MAX_CONNECTIONS", "4"),
            ("TRAWL_SECRETS__KEY", KEY),
            ("TRAWL_INSTAGRAM__WEB_BASE", self.sim_url.as_str()),
            (
                "TRAWL_LIMITER__TIME_SCALE",
                &self.options.time_scale.to_string(),
            ),
            ("TRAWL_QUEUE__LEASE", "2s"),
            ("TRAWL_QUEUE__POLL_INTERVAL", "100ms"),
            ("TRAWL_QUEUE__RETRY_BASE", "200ms"),
            ("TRAWL_QUEUE__RETRY_MAX", "1s"),
            ("TRAWL_WORKER__ACCOUNT_LEASE", "2s"),
            ("TRAWL_WORKER__ACCOUNT_POLL", "200ms"),
            ("TRAWL_WORKER__LISTEN", "127.0.0.1:0"),
            ("TRAWL_WORKER__GRACE_PERIOD", "5s"),
            (
                "TRAWL_INSTAGRAM__PAGE_LENGTH",
                &self.options.page_length.to_string(),
            ),
            ("TRAWL_INSTAGRAM__REQUEST_TIMEOUT", "10s"),
            ("TRAWL_SCHEDULER__API_TOKEN", TOKEN),
            ("TRAWL_SCHEDULER__MAINTENANCE_INTERVAL", "200ms"),
            ("TRAWL_LOG__FILTER", "info,trawl_worker=debug"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        env.push((
            "TRAWL_INSTAGRAM__MOBILE_BASE".into(),
            format!("{}/mobile", self.sim_url),
        ));
        env.push(("TRAWL_V1__BASE".into(), format!("{}/api/v1", self.sim_url)));
        env.push((
            "TRAWL_MEDIA__STORE__PATH".into(),
            self.blob_dir().display().to_string(),
        ));
        env.extend(self.options.worker_env.iter().cloned());
        env
    }

    /// Another scheduler process (the test owns it); returns it and its port.
    pub fn spawn_scheduler(&mut self, name: &str) -> (Child, u16) {
        let port = free_port();
        let args = vec![
            "scheduler".to_owned(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ];
        (spawn(&self.logs, name, &args, &self.env()), port)
    }

    /// SIGKILLs the fleet's own scheduler.
    pub fn kill_scheduler(&mut self) {
        if let Some(mut child) = self.scheduler.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn start_scheduler(&mut self) {
        let port = free_port();
        self.scheduler_port = port;
        let args = vec![
            "scheduler".to_owned(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ];
        self.scheduler = Some(spawn(&self.logs, "scheduler", &args, &self.env()));
    }

    /// Starts one more worker process; returns its index.
    pub fn add_worker(&mut self) -> usize {
        self.add_worker_with(Vec::new())
    }

    /// Starts one more worker process with environment of its own on top of the fleet's.
    pub fn add_worker_with(&mut self, env: Vec<(String, String)>) -> usize {
        let i = self.workers.len();
        self.workers.push(None);
        self.worker_envs.push(env);
        self.start_worker(i);
        i
    }

    pub fn start_worker(&mut self, i: usize) {
        self.started_workers += 1;
        let name = format!("worker{i}-{}", self.started_workers);
        let mut env = self.env();
        if self.options.metrics_ports {
            while self.worker_ports.len() <= i {
                self.worker_ports.push(free_port());
            }
            env.push((
                "TRAWL_WORKER__LISTEN".into(),
                format!("127.0.0.1:{}", self.worker_ports[i]),
            ));
        }
        env.extend(self.worker_envs[i].iter().cloned());
        let child = spawn(&self.logs, &name, &["worker".to_owned()], &env);
        self.workers[i] = Some(child);
    }

    /// Whether every started process (scheduler, workers, simulator) is still running.
    pub fn all_alive(&mut self) -> Result<(), String> {
        let mut dead = Vec::new();
        for (i, child) in self.workers.iter_mut().enumerate() {
            if let Some(c) = child
                && let Ok(Some(status)) = c.try_wait()
            {
                dead.push(format!("worker {i} exited: {status}"));
            }
        }
        if let Some(c) = self.scheduler.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            dead.push(format!("scheduler exited: {status}"));
        }
        if dead.is_empty() {
            Ok(())
        } else {
            Err(dead.join("; "))
        }
    }

    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    pub fn worker_pid(&self, i: usize) -> Option<u32> {
        self.workers.get(i)?.as_ref().map(Child::id)
    }

    /// Sends `signal` to worker `i` (SIGKILL leaves it dead; SIGTERM lets it stop cleanly).
    pub fn signal_worker(&mut self, i: usize, signal: i32) {
        if let Some(child) = self.workers[i].as_ref() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
        }
    }

    /// Waits for worker `i` to exit; returns its exit status code (None: killed by a signal).
    pub async fn wait_worker(&mut self, i: usize, timeout: Duration) -> Option<Option<i32>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.workers[i].as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.workers[i] = None;
                return Some(status.code());
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn kill_worker(&mut self, i: usize) {
        if let Some(mut child) = self.workers[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn submit(&self, specs: Vec<JobSpec>) -> Vec<i64> {
        let jobs: Vec<NewJob> = specs
            .into_iter()
            .map(|s| s.validate(5).expect("valid job"))
            .collect();
        self.queue
            .submit_many(&jobs)
            .await
            .expect("submit")
            .into_iter()
            .map(|s| s.id)
            .collect()
    }

    /// Jobs still queued or running.
    pub async fn active_jobs(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')")
            .fetch_one(self.pool())
            .await
            .expect("count active jobs")
    }

    /// SIGKILLs a random worker and starts it again (with its own environment); returns which.
    pub fn kill_and_restart_random_worker(&mut self) -> usize {
        let victim = rand::random_range(0..self.worker_count());
        self.kill_worker(victim);
        self.start_worker(victim);
        victim
    }

    /// Waits until no job is queued or running, or panics after `timeout` with the queue's state.
    pub async fn wait_until_done(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let active = self.active_jobs().await;
            if active == 0 {
                return;
            }
            if Instant::now() > deadline {
                let states: Vec<(String, String, i64)> = sqlx::query_as(
                    "SELECT kind, state::text, count(*) FROM jobs GROUP BY 1, 2 ORDER BY 1, 2",
                )
                .fetch_all(self.pool())
                .await
                .unwrap_or_default();
                panic!(
                    "the crawl did not finish in {timeout:?}: {states:?}; logs in {}",
                    self.logs.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn oracle(&self) -> Value {
        self.http
            .get(format!("{}/__sim/oracle", self.sim_url))
            .send()
            .await
            .expect("oracle")
            .json()
            .await
            .expect("oracle json")
    }

    /// Every request the simulator received.
    pub async fn audit(&self) -> Vec<Value> {
        let text = self
            .http
            .get(format!("{}/__sim/audit.jsonl", self.sim_url))
            .send()
            .await
            .expect("audit")
            .text()
            .await
            .expect("audit body");
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Zero 429s and no window above its cap, from the simulator's own oracle.
    pub async fn assert_windows_held(&self) {
        let oracle = self.oracle().await;
        assert_eq!(
            oracle["responses_429"],
            0,
            "the simulator answered 429; logs in {}",
            self.logs.display()
        );
        for peak in oracle["peaks"].as_array().expect("peaks") {
            assert!(
                peak["most"].as_u64() <= peak["cap"].as_u64(),
                "a window held more than its cap: {peak}"
            );
        }
    }

    pub async fn post(&self, path: &str, body: &Value) {
        self.http
            .post(format!("{}{path}", self.sim_url))
            .json(body)
            .send()
            .await
            .expect("post");
    }

    /// Public users with posts, in data-set order.
    pub fn public_users_with_posts(&self, n: usize) -> Vec<String> {
        public_users_with_posts(&self.data, n)
    }

    /// The ids of every post of `users`, and of every comment and reply on them.
    pub fn expected_posts_and_comments(&self, users: &[String]) -> (BTreeSet<i64>, BTreeSet<i64>) {
        expected_posts_and_comments(&self.data, users)
    }

    /// No job failed, and exactly these posts (and comments, when given) are stored.
    pub async fn assert_stored_exactly(
        &self,
        posts: &BTreeSet<i64>,
        comments: Option<&BTreeSet<i64>>,
    ) {
        self.assert_none_failed().await;
        assert_eq!(&self.ids("SELECT id FROM ig_posts").await, posts);
        if let Some(comments) = comments {
            assert_eq!(&self.ids("SELECT id FROM ig_comments").await, comments);
        }
    }

    /// No job failed for good.
    pub async fn assert_none_failed(&self) {
        let states = self.job_states().await;
        assert_eq!(
            states.get("failed"),
            None,
            "{states:?}; logs in {}",
            self.logs.display()
        );
    }

    pub async fn ids(&self, sql: &str) -> BTreeSet<i64> {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_all(self.pool())
            .await
            .expect("ids")
            .into_iter()
            .collect()
    }

    pub async fn job_states(&self) -> HashMap<String, i64> {
        sqlx::query_as::<_, (String, i64)>("SELECT state::text, count(*) FROM jobs GROUP BY 1")
            .fetch_all(self.pool())
            .await
            .expect("states")
            .into_iter()
            .collect()
    }

    pub fn worker_log(&self, i: usize) -> String {
        let mut text = String::new();
        if let Ok(dir) = std::fs::read_dir(&self.logs) {
            let mut names: Vec<PathBuf> = dir
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("worker{i}-")))
                })
                .collect();
            names.sort();
            for n in names {
                text.push_str(&std::fs::read_to_string(n).unwrap_or_default());
            }
        }
        text
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in self
            .workers
            .iter_mut()
            .filter_map(Option::as_mut)
            .chain(self.scheduler.as_mut())
            .chain(std::iter::once(&mut self.sim))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(logs: &std::path::Path, name: &str, args: &[String], env: &[(String, String)]) -> Child {
    let log = File::create(logs.join(format!("{name}.log"))).expect("log file");
    let err = log.try_clone().expect("log file");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    trawl_command(&args, env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .expect("spawn trawl")
}

async fn wait_for(http: &reqwest::Client, url: &str, logs: &std::path::Path) {
    for _ in 0..200 {
        if http.get(url).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} did not come up; logs in {}", logs.display());
}

/// Runs the project's installer (it creates the venv and installs the pinned Instaloader when
/// they are missing) and returns the venv's python.
pub fn instaloader_python() -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/install-instaloader.sh"
    );
    let out = Command::new("bash")
        .arg(script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/install-instaloader.sh");
    assert!(out.status.success(), "installing Instaloader 4.16 failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("the installer names the venv's python")
        .trim()
        .to_owned()
}
