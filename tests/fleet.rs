//! End-to-end proofs of the crawl fleet: real `trawl` processes (simulator, scheduler, workers) crawl the
//! simulator's data set on a private PostgreSQL at scaled time.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Fleet, FleetOptions, posts_with_comments};
use trawl_shared::JobSpec;

fn profile_posts_of(users: &[String]) -> Vec<JobSpec> {
    users
        .iter()
        .map(|u| JobSpec::new("profile_posts", u))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_store_every_post_and_comment_once_without_a_429() {
    let fleet = Fleet::start(FleetOptions::default()).await;
    let users = fleet.public_users_with_posts(20);
    let (posts, comments) = fleet.expected_posts_and_comments(&users);
    fleet.submit(posts_with_comments(&users)).await;
    fleet.wait_until_done(Duration::from_secs(120)).await;

    fleet.assert_stored_exactly(&posts, Some(&comments)).await;
    fleet.assert_windows_held().await;
}

/// Pages of the logged-in posts query a crawl of `users` needs: 12 posts a page, as the web app
/// asks for them.
fn minimal_post_pages(fleet: &Fleet, users: &[String]) -> u64 {
    users
        .iter()
        .map(|name| {
            let n = u64::from(fleet.data.user_by_name(name).expect("user").post_count);
            n.div_ceil(12)
        })
        .sum()
}

fn count_requests(audit: &[serde_json::Value], query_type: &str) -> u64 {
    audit
        .iter()
        .filter(|e| e["query_type"] == query_type && e["status"] == 200)
        .count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_workers_loses_and_duplicates_nothing_and_resumes_from_cursors() {
    let mut fleet = Fleet::start(FleetOptions {
        time_scale: 0.02,
        sizes: trawl_simulator::Sizes {
            max_posts: 100,
            ..FleetOptions::default().sizes
        },
        ..FleetOptions::default()
    })
    .await;
    let users = fleet.public_users_with_posts(20);
    let (posts, comments) = fleet.expected_posts_and_comments(&users);
    fleet.submit(posts_with_comments(&users)).await;

    let started = std::time::Instant::now();
    let mut kills = 0u64;
    // The first kill is aimed: the worker in the middle of a profile crawl (two pages stored),
    // so that resumption is always exercised; the rest are random.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let owner: Option<String> = sqlx::query_scalar(
            "SELECT lease_owner FROM jobs WHERE kind = 'profile_posts' AND state = 'running'
               AND coalesce((checkpoint->>'pages')::int, 0) >= 2 LIMIT 1",
        )
        .fetch_optional(fleet.pool())
        .await
        .unwrap()
        .flatten();
        let victim = owner.and_then(|o| {
            let pid: u32 = o.rsplit('-').nth(1)?.parse().ok()?;
            (0..fleet.worker_count()).find(|&i| fleet.worker_pid(i) == Some(pid))
        });
        if let Some(i) = victim {
            fleet.kill_worker(i);
            fleet.start_worker(i);
            kills += 1;
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no profile crawl got two pages in; logs in {}",
            fleet.logs.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    loop {
        if fleet.active_jobs().await == 0 || started.elapsed() > Duration::from_secs(150) {
            break;
        }
        fleet.kill_and_restart_random_worker();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    fleet.wait_until_done(Duration::from_secs(120)).await;

    fleet.assert_stored_exactly(&posts, Some(&comments)).await;
    fleet.assert_windows_held().await;

    // Resumed, not restarted: each kill costs at most the page in flight, while restarting an
    // interrupted crawl would fetch again every page it had stored.
    let interrupted: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT attempt, coalesce((checkpoint->>'pages')::bigint, 0) FROM jobs
         WHERE kind = 'profile_posts' AND attempt > 1",
    )
    .fetch_all(fleet.pool())
    .await
    .unwrap();
    assert!(
        !interrupted.is_empty(),
        "no profile crawl was interrupted by {kills} kills, so resumption was not exercised"
    );
    let posts_query = format!(
        "doc:{}",
        trawl_shared::config::InstagramConfig::default()
            .doc_ids
            .profile_posts
    );
    let fetched = count_requests(&fleet.audit().await, &posts_query);
    let minimal = minimal_post_pages(&fleet, &users);
    assert!(
        fetched <= minimal + interrupted.len() as u64,
        "{fetched} post pages fetched for {minimal} needed, with {} interrupted crawls",
        interrupted.len()
    );
    eprintln!(
        "{kills} kills, {} profile crawls interrupted, {fetched} post pages fetched for {minimal} needed",
        interrupted.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_worker_takes_a_dead_workers_account_and_honours_its_windows() {
    // No local pacing: each account bursts until its ledger window is full, so only the ledger in
    // PostgreSQL stands between the worker that takes over and a 429.
    let mut fleet = Fleet::start(FleetOptions {
        accounts: 2,
        workers: 3,
        worker_env: vec![
            ("TRAWL_LIMITER__PACING_PERIOD".into(), "1ms".into()),
            ("TRAWL_LIMITER__PACING_JITTER".into(), "0ms".into()),
        ],
        ..FleetOptions::default()
    })
    .await;
    // Enough comment pages to keep both accounts' COMMENTS windows full.
    let users = fleet.public_users_with_posts(30);
    let (posts, comments) = fleet.expected_posts_and_comments(&users);
    fleet.submit(posts_with_comments(&users)).await;

    // Find the waiting worker: the one whose log says every account is held.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let waiting = loop {
        let found = (0..3).find(|&i| fleet.worker_log(i).contains("every usable account is held"));
        if let Some(i) = found {
            break i;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no worker waited; logs in {}",
            fleet.logs.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts WHERE state = 'leased'")
        .fetch_one(fleet.pool())
        .await
        .unwrap();
    assert_eq!(
        held, 2,
        "both accounts are leased while the third worker waits"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let victim = (0..3).find(|&i| i != waiting).unwrap();
    fleet.kill_worker(victim);

    fleet.wait_until_done(Duration::from_secs(180)).await;
    assert!(
        fleet.worker_log(waiting).contains("account leased"),
        "the waiting worker never took the dead worker's account; logs in {}",
        fleet.logs.display()
    );
    assert_eq!(fleet.ids("SELECT id FROM ig_posts").await, posts);
    assert_eq!(fleet.ids("SELECT id FROM ig_comments").await, comments);
    fleet.assert_windows_held().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpointed_account_leaves_rotation_and_its_job_completes_elsewhere() {
    let fleet = Fleet::start(FleetOptions {
        accounts: 2,
        workers: 2,
        ..FleetOptions::default()
    })
    .await;
    let users = fleet.public_users_with_posts(10);
    let (posts, comments) = fleet.expected_posts_and_comments(&users);
    fleet.submit(posts_with_comments(&users)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    fleet
        .post("/__sim/faults", &json!({"checkpoint": ["sim_account1"]}))
        .await;
    fleet.wait_until_done(Duration::from_secs(120)).await;

    fleet.assert_stored_exactly(&posts, Some(&comments)).await;
    let (state, reason): (String, Option<String>) =
        sqlx::query_as("SELECT state::text, last_error FROM accounts WHERE name = 'sim_account1'")
            .fetch_one(fleet.pool())
            .await
            .unwrap();
    assert_eq!(state, "checkpoint");
    assert_eq!(reason.as_deref(), Some("checkpoint_required"));
    let (_, text, _) = fleet.trawl(&["accounts", "list"]);
    assert!(
        text.lines().any(|l| l.contains("sim_account1")
            && l.contains("checkpoint")
            && l.contains("checkpoint_required")),
        "accounts list does not show the checkpoint and its reason:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_and_unknown_users_leave_rotation_with_the_reason() {
    let fleet = Fleet::start(FleetOptions {
        accounts: 2,
        workers: 0,
        add_accounts: false,
        ..FleetOptions::default()
    })
    .await;
    let accounts = fleet.accounts();
    for (name, password) in [
        ("ghost_user", "whatever".to_owned()),
        ("sim_account0", support::sim_password(fleet.options.seed, 0)),
        ("sim_account1", "not-the-password".to_owned()),
    ] {
        accounts
            .add(&trawl_shared::accounts::NewAccount {
                name,
                password: Some(&password),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut fleet = fleet;
    for _ in 0..3 {
        fleet.add_worker();
    }
    let users = fleet.public_users_with_posts(4);
    let (posts, _) = fleet.expected_posts_and_comments(&users);
    fleet.submit(profile_posts_of(&users)).await;
    fleet.wait_until_done(Duration::from_secs(60)).await;
    assert_eq!(fleet.ids("SELECT id FROM ig_posts").await, posts);

    let reasons: std::collections::HashMap<String, (String, Option<String>)> =
        sqlx::query_as::<_, (String, String, Option<String>)>(
            "SELECT name, state::text, last_error FROM accounts",
        )
        .fetch_all(fleet.pool())
        .await
        .unwrap()
        .into_iter()
        .map(|(n, s, e)| (n, (s, e)))
        .collect();
    assert_eq!(
        reasons["ghost_user"],
        (
            "checkpoint".to_owned(),
            Some("login refused: Instagram knows no user \"ghost_user\"".to_owned())
        )
    );
    assert_eq!(
        reasons["sim_account1"],
        (
            "checkpoint".to_owned(),
            Some("login refused: wrong password for \"sim_account1\"".to_owned())
        )
    );
    assert_eq!(reasons["sim_account0"].0, "leased");
    // The password never reaches a log.
    for i in 0..3 {
        assert!(!fleet.worker_log(i).contains("not-the-password"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_sessions_are_renewed_by_logging_in_again() {
    let fleet = Fleet::start(FleetOptions {
        accounts: 2,
        workers: 2,
        sim_args: vec!["--session-ttl-seconds".into(), "2".into()],
        ..FleetOptions::default()
    })
    .await;
    let users = fleet.public_users_with_posts(12);
    let (posts, comments) = fleet.expected_posts_and_comments(&users);
    fleet.submit(posts_with_comments(&users)).await;
    fleet.wait_until_done(Duration::from_secs(120)).await;
    assert_eq!(fleet.ids("SELECT id FROM ig_posts").await, posts);
    assert_eq!(fleet.ids("SELECT id FROM ig_comments").await, comments);
    let logins: usize = (0..2)
        .map(|i| {
            fleet
                .worker_log(i)
                .matches("session expired; logging in again")
                .count()
        })
        .sum();
    assert!(
        logins >= 1,
        "no session expired during the crawl; logs in {}",
        fleet.logs.display()
    );
    let blocked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM accounts WHERE state = 'checkpoint'")
            .fetch_one(fleet.pool())
            .await
            .unwrap();
    assert_eq!(
        blocked, 0,
        "a renewed session must not take the account out of rotation"
    );
    fleet.assert_windows_held().await;
}

/// A Python pickle (protocol 2) of a dict of strings: what Instaloader's `save_session_to_file`
/// writes for a cookie jar.
fn pickle_cookies(cookies: &[(String, String)]) -> Vec<u8> {
    let mut out = vec![0x80, 2, b'}', b'('];
    for (k, v) in cookies {
        for s in [k, v] {
            out.push(b'X');
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    out.extend_from_slice(b"u.");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_session_file_is_used_without_logging_in() {
    let mut fleet = Fleet::start(FleetOptions {
        accounts: 1,
        workers: 0,
        add_accounts: false,
        ..FleetOptions::default()
    })
    .await;
    // Log in to the simulator the way Instaloader does, and save the cookies as it would.
    let http = reqwest::Client::new();
    let home = http
        .get(format!("{}/", fleet.sim_url))
        .send()
        .await
        .unwrap();
    let csrf = home
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("csrftoken="))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    let password = support::sim_password(fleet.options.seed, 0);
    let login = http
        .post(format!("{}/api/v1/web/accounts/login/ajax/", fleet.sim_url))
        .header("x-csrftoken", &csrf)
        .header("cookie", format!("csrftoken={csrf}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "username=sim_account0&enc_password=%23PWD_INSTAGRAM_BROWSER%3A0%3A1%3A{password}"
        ))
        .send()
        .await
        .unwrap();
    let cookies: Vec<(String, String)> = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|c| {
            let (k, v) = c.split(';').next()?.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect();
    assert!(cookies.iter().any(|(k, _)| k == "sessionid"));
    let file = fleet.logs.join("session-sim_account0");
    std::fs::write(&file, pickle_cookies(&cookies)).unwrap();
    let bad = fleet.logs.join("session-bad");
    std::fs::write(&bad, b"not a pickle at all").unwrap();

    let (code, _, err) = fleet.trawl(&[
        "accounts",
        "add",
        "sim_account0",
        "--session-file",
        bad.to_str().unwrap(),
    ]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("session-bad"),
        "the error names the file: {err}"
    );
    let (code, out, err) = fleet.trawl(&[
        "accounts",
        "add",
        "sim_account0",
        "--session-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");

    fleet.add_worker();
    let users = fleet.public_users_with_posts(3);
    let (posts, _) = fleet.expected_posts_and_comments(&users);
    fleet.submit(profile_posts_of(&users)).await;
    fleet.wait_until_done(Duration::from_secs(60)).await;
    assert_eq!(fleet.ids("SELECT id FROM ig_posts").await, posts);
    let log = fleet.worker_log(0);
    assert!(
        !log.contains("logging in"),
        "the worker logged in despite a valid session:\n{log}"
    );
    // Followers need a login: the imported session serves them.
    fleet
        .submit(vec![JobSpec::new("followers", &users[0])])
        .await;
    fleet.wait_until_done(Duration::from_secs(60)).await;
    assert_eq!(fleet.job_states().await.get("failed"), None);
    let edges: i64 = sqlx::query_scalar("SELECT count(*) FROM ig_follows")
        .fetch_one(fleet.pool())
        .await
        .unwrap();
    let expected = fleet.data.user_by_name(&users[0]).unwrap().followers.len() as i64;
    assert_eq!(edges, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_the_job_and_the_account_back_at_once() {
    let mut fleet = Fleet::start(FleetOptions {
        accounts: 1,
        workers: 0,
        time_scale: 0.05,
        sizes: trawl_simulator::Sizes {
            max_posts: 100,
            ..FleetOptions::default().sizes
        },
        ..FleetOptions::default()
    })
    .await;
    let port = support::free_port();
    fleet
        .options
        .worker_env
        .push(("TRAWL_WORKER__LISTEN".into(), format!("127.0.0.1:{port}")));
    fleet.add_worker();
    let users = fleet.public_users_with_posts(3);
    fleet
        .submit(
            users
                .iter()
                .map(|u| JobSpec::new("profile_posts", u))
                .collect(),
        )
        .await;
    // Wait until a crawl has stored a page or two.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pages: Option<i64> = sqlx::query_scalar(
            "SELECT max((checkpoint->>'pages')::bigint) FROM jobs WHERE state = 'running'",
        )
        .fetch_one(fleet.pool())
        .await
        .unwrap();
        if pages.unwrap_or(0) >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no crawl progressed; logs in {}",
            fleet.logs.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let http = reqwest::Client::new();
    let ready = http
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("trawl_instagram_requests_total{class=\"graphql\",outcome=\"ok\"}"));
    assert!(metrics.contains("trawl_limiter_grants_total"));

    // The container health check: the same probe without a shell.
    let probe = |port: u16, ready: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_trawl"));
        cmd.args(["healthcheck", "--role", "worker"])
            .env_clear()
            .env("TRAWL_WORKER__LISTEN", format!("127.0.0.1:{port}"));
        if ready {
            cmd.arg("--ready");
        }
        cmd.output().unwrap()
    };
    assert!(probe(port, false).status.success());
    assert!(probe(port, true).status.success());
    let dead = probe(support::free_port(), false);
    assert_eq!(dead.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&dead.stderr).contains("cannot reach"));

    let stopped_at = std::time::Instant::now();
    fleet.signal_worker(0, libc::SIGTERM);
    let code = fleet.wait_worker(0, Duration::from_secs(10)).await;
    assert_eq!(
        code,
        Some(Some(0)),
        "the worker exits cleanly within its grace period"
    );
    assert!(stopped_at.elapsed() < Duration::from_secs(5));
    let (running, resumable): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'running'),
                count(*) FILTER (WHERE state = 'queued' AND (checkpoint->>'pages')::bigint >= 2)
         FROM jobs",
    )
    .fetch_one(fleet.pool())
    .await
    .unwrap();
    assert_eq!(running, 0, "no job is left leased");
    assert!(
        resumable >= 1,
        "the interrupted job is back in the queue with its checkpoint"
    );
    let state: String = sqlx::query_scalar("SELECT state::text FROM accounts")
        .fetch_one(fleet.pool())
        .await
        .unwrap();
    assert_eq!(
        state, "available",
        "the account is free at once, not after its lease expires"
    );

    // A new worker finishes the crawl from the checkpoints.
    fleet.start_worker(0);
    fleet.wait_until_done(Duration::from_secs(60)).await;
    let (posts, _) = fleet.expected_posts_and_comments(&users);
    assert_eq!(fleet.ids("SELECT id FROM ig_posts").await, posts);
    fleet.assert_windows_held().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_retried_and_change_nothing_stored() {
    let fleet = Fleet::start(FleetOptions {
        sim_args: [
            "--error-rate",
            "0.05",
            "--invalid-json-rate",
            "0.02",
            "--drop-rate",
            "0.01",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        ..FleetOptions::default()
    })
    .await;
    let users = fleet.public_users_with_posts(10);
    let (posts, comments) = fleet.expected_posts_and_comments(&users);
    fleet.submit(posts_with_comments(&users)).await;
    fleet.wait_until_done(Duration::from_secs(120)).await;
    fleet.assert_stored_exactly(&posts, Some(&comments)).await;
    let audit = fleet.audit().await;
    let faulted = audit
        .iter()
        .filter(|e| e["status"].as_u64().is_some_and(|s| s >= 500))
        .count();
    assert!(
        faulted > 0,
        "the simulator injected no faults; the test proves nothing"
    );
    fleet.assert_windows_held().await;
}

#[test]
fn the_demo_crawls_with_real_workers_and_reports_zero_429s() {
    let dir = std::env::temp_dir().join(format!("trawl-demo-test-{}", std::process::id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_trawl"))
        .args([
            "demo",
            "--exit-when-done",
            "--json",
            "--workers",
            "2",
            "--profiles",
            "2",
            "--time-scale",
            "0.01",
            "--data-dir",
        ])
        .arg(&dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON summary");
    assert_eq!(summary["responses_429"], 0);
    let jobs = summary["jobs"].as_object().unwrap();
    assert_eq!(
        jobs.keys().collect::<Vec<_>>(),
        vec!["completed"],
        "{summary}"
    );
    assert!(summary["items_stored"]["posts"].as_i64().unwrap() > 0);
    assert!(summary["items_stored"]["comments"].as_i64().unwrap() > 0);
    assert!(
        summary["requests_by_query_type"]["iphone"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(summary["window_utilisation"]["graphql:comments"]["cap"] == 200);
}
