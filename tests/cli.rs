//! The `trawl` binary as a user runs it, against a real scheduler and PostgreSQL.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;
use trawl_scheduler::testing::{self, RunningScheduler};
use trawl_shared::testing::{TestDb, fresh_db};

const TOKEN: &str = "cli-test-token";

struct Scheduler {
    url: String,
    db: TestDb,
    running: RunningScheduler,
    workdir: PathBuf,
}

impl Scheduler {
    async fn start() -> Self {
        let db = fresh_db().await;
        let running = testing::spawn(testing::config(&db.url, TOKEN)).await;
        let workdir = std::env::temp_dir().join(format!("trawl-cli-{}", rand_suffix()));
        std::fs::create_dir_all(&workdir).unwrap();
        Self {
            url: running.url(),
            db,
            running,
            workdir,
        }
    }

    /// Runs `trawl ARGS` with only this scheduler's URL and token in its environment.
    async fn trawl(&self, args: &[&str]) -> Output {
        self.trawl_env(args, &[("TRAWL_CLIENT__TOKEN", TOKEN)])
            .await
    }

    async fn trawl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        // The case's own settings come last, so that they override the scheduler's URL.
        let base = [("TRAWL_CLIENT__URL", self.url.as_str())];
        let mut cmd = support::trawl_command(args, base.into_iter().chain(env.iter().copied()));
        cmd.current_dir(&self.workdir);
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    }

    async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.running.stop().await.unwrap();
        let _ = std::fs::remove_dir_all(&self.workdir);
    }
}

fn rand_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_show_list_and_manage_jobs_from_the_command_line() {
    let s = Scheduler::start().await;

    let out = s
        .trawl(&[
            "submit",
            "profile_posts",
            "natgeo",
            "--priority",
            "5",
            "--max-items",
            "100",
        ])
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("created job"), "{}", stdout(&out));

    let out = s.trawl(&["submit", "profile_posts", "@NatGeo"]).await;
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("already queued"), "{}", stdout(&out));
    assert_eq!(s.count("SELECT count(*) FROM jobs").await, 1);

    let out = s.trawl(&["submit", "profile", "someone", "--json"]).await;
    assert_eq!(code(&out), 0);
    let answer: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    let id = answer["job"]["id"].as_i64().unwrap();

    let out = s.trawl(&["jobs", "show", &id.to_string(), "--json"]).await;
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["target"], "someone");

    let out = s.trawl(&["jobs", "list", "--json"]).await;
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["jobs"].as_array().unwrap().len(), 2);
    let out = s.trawl(&["jobs", "list"]).await;
    assert!(stdout(&out).contains("profile_posts") && stdout(&out).contains("someone"));

    let out = s.trawl(&["jobs", "cancel", &id.to_string()]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("cancelled"));
    let out = s.trawl(&["jobs", "cancel", &id.to_string()]).await;
    assert_eq!(
        code(&out),
        4,
        "cancelling twice is a conflict: {}",
        stderr(&out)
    );
    let out = s.trawl(&["jobs", "retry", &id.to_string()]).await;
    assert_eq!(code(&out), 0);

    let out = s.trawl(&["jobs", "pause", "profile"]).await;
    assert_eq!(code(&out), 0);
    let out = s.trawl(&["jobs", "stats", "--json"]).await;
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["paused_kinds"][0], "profile");
    let out = s.trawl(&["jobs", "stats"]).await;
    assert!(stdout(&out).contains("paused: profile"), "{}", stdout(&out));
    s.trawl(&["jobs", "resume", "profile"]).await;

    let out = s.trawl(&["jobs", "show", "999999"]).await;
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("does not exist"));

    // Bad input is refused before anything is written, naming the field.
    let before = s.count("SELECT count(*) FROM jobs").await;
    for (args, needle) in [
        (&["submit", "teleport", "x"][..], "kind"),
        (&["submit", "profile", "two words"][..], "target"),
        (
            &["submit", "profile", "x", "--max-attempts", "0"][..],
            "max_attempts",
        ),
        (
            &["submit", "profile", "x", "--run-at", "someday"][..],
            "--run-at",
        ),
    ] {
        let out = s.trawl(args).await;
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(s.count("SELECT count(*) FROM jobs").await, before);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jsonl_file_reports_bad_lines_and_submits_the_good_ones() {
    let s = Scheduler::start().await;
    let file = s.workdir.join("jobs.jsonl");
    std::fs::write(
        &file,
        concat!(
            "{\"kind\":\"profile\",\"target\":\"alice\"}\n",
            "{\"kind\":\"profile\",\"target\":\"bob\"\n",
            "\n",
            "{\"kind\":\"teleport\",\"target\":\"carol\"}\n",
            "{\"kind\":\"hashtag_posts\",\"target\":\"#cats\",\"priority\":3}\n",
            "[1,2,3]\n",
            "{\"kind\":\"profile\",\"target\":\"dave\",\"colour\":\"red\"}\n",
            "{\"kind\":\"post\",\"target\":\"CxYz123\",\"recrawl_every\":\"1d\"}\n",
        ),
    )
    .unwrap();
    let out = s.trawl(&["submit", "--file", file.to_str().unwrap()]).await;
    assert_eq!(code(&out), 7, "partly rejected: {}", stderr(&out));
    let err = stderr(&out);
    for line in [":2:", ":4:", ":6:", ":7:"] {
        assert!(err.contains(line), "line {line} not reported: {err}");
    }
    assert!(
        err.contains("unknown job kind") && err.contains("colour"),
        "{err}"
    );
    assert!(
        stdout(&out).contains("submitted 3 jobs"),
        "{}",
        stdout(&out)
    );
    assert_eq!(s.count("SELECT count(*) FROM jobs").await, 3);
    assert_eq!(
        s.count("SELECT count(*) FROM jobs WHERE recrawl_every = interval '1 day'")
            .await,
        1
    );

    let all_bad = s.workdir.join("bad.jsonl");
    std::fs::write(&all_bad, b"nope\n\xff\xfe\n").unwrap();
    let out = s
        .trawl(&["submit", "--file", all_bad.to_str().unwrap(), "--json"])
        .await;
    assert_eq!(code(&out), 2);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rejected"].as_array().unwrap().len(), 2);
    assert!(
        report["rejected"][1]["error"]
            .as_str()
            .unwrap()
            .contains("UTF-8")
    );

    let out = s.trawl(&["submit", "--file", "/nonexistent.jsonl"]).await;
    assert_eq!(code(&out), 2);
    assert_eq!(s.count("SELECT count(*) FROM jobs").await, 3);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_reachability_and_config_errors_have_their_own_exit_codes() {
    let s = Scheduler::start().await;
    let out = s.trawl_env(&["jobs", "stats"], &[]).await;
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("TRAWL_CLIENT__TOKEN"),
        "{}",
        stderr(&out)
    );
    let out = s
        .trawl_env(&["jobs", "stats"], &[("TRAWL_CLIENT__TOKEN", "wrong")])
        .await;
    assert_eq!(code(&out), 5);

    let out = s
        .trawl_env(
            &["jobs", "stats", "--url", "http://127.0.0.1:9"],
            &[("TRAWL_CLIENT__TOKEN", TOKEN)],
        )
        .await;
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot reach the scheduler"));

    // Configuration: file < env < flag, secrets redacted, bad values named with their source.
    std::fs::write(
        s.workdir.join("trawl.toml"),
        "[client]\nurl = \"http://from-file:1\"\ntoken = \"file-secret\"\n[queue]\nlease = \"90s\"\n",
    )
    .unwrap();
    let out = s
        .trawl_env(&["config", "show"], &[("TRAWL_QUEUE__LEASE", "3m")])
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let shown = stdout(&out);
    assert!(!shown.contains("file-secret"), "{shown}");
    assert!(shown.contains("lease = \"3m\""), "env beats file: {shown}");
    assert!(
        shown.contains(&s.url),
        "env beats file for client.url: {shown}"
    );
    let out = s
        .trawl_env(&["config", "show", "--url", "http://flag:2"], &[])
        .await;
    assert!(stdout(&out).contains("http://flag:2"), "flag beats env");

    let out = s
        .trawl_env(&["config", "show"], &[("TRAWL_QUEUE__LEASE", "soonish")])
        .await;
    assert_eq!(code(&out), 8);
    assert!(stderr(&out).contains("queue.lease"), "{}", stderr(&out));
    assert!(
        stderr(&out).to_lowercase().contains("environment"),
        "{}",
        stderr(&out)
    );
    std::fs::write(s.workdir.join("trawl.toml"), "[queue]\nlease = [1]\n").unwrap();
    let out = s.trawl_env(&["config", "show"], &[]).await;
    assert_eq!(code(&out), 8);
    assert!(
        stderr(&out).contains("queue.lease") && stderr(&out).contains("trawl.toml"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(s.workdir.join("trawl.toml")).unwrap();

    let out = s.trawl_env(&["jobs", "frobnicate"], &[]).await;
    assert_eq!(code(&out), 2, "clap usage error");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_the_schema_on_an_empty_database() {
    let db = fresh_db().await;
    for sql in ["DROP SCHEMA public CASCADE", "CREATE SCHEMA public"] {
        sqlx::query(sql).execute(&db.pool).await.unwrap();
    }
    let url = db.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_trawl"))
            .args(["migrate", "--database-url", &url])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("schema is at version"));
    trawl_shared::db::check_schema(&db.pool).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_shows_the_ledger_per_key_with_penalties() {
    use trawl_shared::config::LimiterConfig;
    use trawl_shared::limiter::{Decision, Ledger, Profile, QueryType, Request};

    let s = Scheduler::start().await;
    let ledger = Ledger::new(
        s.db.pool.clone(),
        Profile::from_config(&LimiterConfig::default()),
    );
    let request = |q: QueryType| Request {
        query_type: q,
        account: "researcher1".into(),
        egress: Some("ip-a".into()),
    };
    for _ in 0..75 {
        let d = ledger
            .try_acquire(&request(QueryType::Other), None)
            .await
            .unwrap();
        assert!(matches!(d, Decision::Granted { .. }));
    }
    for _ in 0..3 {
        ledger
            .try_acquire(&request(QueryType::QueryHash("abc".into())), None)
            .await
            .unwrap();
    }

    let out = s
        .trawl(&["limits", "--account", "researcher1", "--json"])
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let usage: Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys = usage[0]["keys"].as_array().unwrap();
    let other = keys.iter().find(|k| k["query_type"] == "other").unwrap();
    assert_eq!(
        (other["used"].as_u64(), other["cap"].as_u64()),
        (Some(75), Some(75))
    );
    assert_eq!(usage[0]["graphql_used"], 3);
    assert!(usage[0]["penalty_until"].is_null());

    ledger
        .record_429(&request(QueryType::QueryHash("abc".into())), None)
        .await
        .unwrap();
    let out = s.trawl(&["limits", "--account", "researcher1"]).await;
    let text = stdout(&out);
    assert!(
        text.contains("account:researcher1  PENALTY until"),
        "{text}"
    );
    assert!(text.contains("75/75") && text.contains("qh:abc"), "{text}");

    // Without a scope: every active account and egress group.
    let out = s.trawl(&["limits", "--json"]).await;
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["scope"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["account:researcher1", "egress:ip-a"]);

    let out = s.trawl(&["limits", "--account", &"x".repeat(500)]).await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    s.stop().await;
}

#[tokio::test]
async fn sim_users_prints_the_same_users_for_the_same_seed() {
    let run = |args: &'static [&'static str]| {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_trawl"))
                .args(args)
                .env_clear()
                .current_dir(std::env::temp_dir())
                .output()
                .unwrap()
        })
    };
    let a = run(&[
        "sim", "users", "--seed", "3", "--users", "50", "--count", "5",
    ])
    .await
    .unwrap();
    let b = run(&[
        "sim", "users", "--seed", "3", "--users", "50", "--count", "5",
    ])
    .await
    .unwrap();
    let c = run(&[
        "sim", "users", "--seed", "4", "--users", "50", "--count", "5",
    ])
    .await
    .unwrap();
    assert_eq!(code(&a), 0, "{}", stderr(&a));
    assert_eq!(stdout(&a).lines().count(), 6, "a header and five users");
    assert_eq!(a.stdout, b.stdout);
    assert_ne!(a.stdout, c.stdout);
    let bad = run(&["sim", "--account", "nopassword", "--listen", "127.0.0.1:0"])
        .await
        .unwrap();
    assert_eq!(code(&bad), 2, "{}", stderr(&bad));
    assert!(stderr(&bad).contains("NAME:PASSWORD"));
}
