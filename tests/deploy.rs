//! The deployment's proof: the compose topology (PostgreSQL, scheduler, scaled workers, the simulator) run
//! as local processes from the configuration the compose file uses (`deploy/trawl.env`), with the
//! workers scaled from 2 to 6 and back to 2 during a crawl: nothing lost, nothing duplicated, the
//! windows held. Also: the KEDA scaler's query, run against the live database.

mod support;

use std::path::Path;
use std::time::Duration;

use support::{Fleet, FleetOptions, posts_with_comments};

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `deploy/trawl.env` as (key, value) pairs.
fn compose_settings() -> Vec<(String, String)> {
    repo_file("deploy/trawl.env")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=VALUE");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// The folded `query: >-` block of the KEDA trigger, as one line of SQL.
fn keda_query() -> String {
    let text = repo_file("deploy/k8s/keda.yaml");
    let mut lines = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("query: >-"));
    let header = lines.next().expect("a query in keda.yaml");
    let indent = header.len() - header.trim_start().len();
    lines
        .take_while(|l| l.len() - l.trim_start().len() > indent)
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_topology_scales_workers_2_6_2_without_loss_duplicates_or_429s() {
    let settings = compose_settings();
    let value = |key: &str| {
        settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{key} is not in deploy/trawl.env"))
    };
    let time_scale: f64 = value("TRAWL_LIMITER__TIME_SCALE").parse().unwrap();
    let compose = repo_file("deploy/compose.yaml");
    assert!(
        compose.contains(&format!("\"--time-scale\", \"{time_scale}\"")),
        "the compose simulator must run at the workers' time scale ({time_scale})"
    );
    let accounts = 8;
    assert!(compose.contains(&format!("\"--accounts\", \"{accounts}\"")));
    // Addresses are the compose network's; the harness points the processes at local ones.
    let worker_env: Vec<(String, String)> = settings
        .iter()
        .filter(|(_, v)| !v.contains("simulator:"))
        .cloned()
        .collect();
    let mut fleet = Fleet::start(FleetOptions {
        accounts,
        workers: 2,
        time_scale,
        worker_env,
        ..FleetOptions::default()
    })
    .await;
    // Each comment crawl loads its post first (as Instagram's web app and Instaloader do), so 15
    // profiles keep the crawl inside its deadline on two cores.
    let users = fleet.public_users_with_posts(15);
    let (posts, comments) = fleet.expected_posts_and_comments(&users);
    fleet.submit(posts_with_comments(&users)).await;

    tokio::time::sleep(Duration::from_secs(4)).await;
    for _ in 0..4 {
        fleet.add_worker();
    }
    // KEDA's query on the live queue: runnable or running jobs, capped at usable accounts.
    let (scale_to, active, usable): (i64, i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT ({}), (SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')),
                (SELECT count(*) FROM accounts WHERE state IN ('available', 'leased'))",
        keda_query()
    )))
    .fetch_one(fleet.pool())
    .await
    .unwrap();
    assert!(
        active > 0,
        "the crawl is still running when the scaler is asked"
    );
    assert_eq!(
        scale_to,
        active.min(usable),
        "KEDA's target is min(jobs, accounts)"
    );
    assert_eq!(usable, accounts as i64);

    tokio::time::sleep(Duration::from_secs(8)).await;
    let busy: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts WHERE state = 'leased'")
        .fetch_one(fleet.pool())
        .await
        .unwrap();
    assert_eq!(busy, 6, "six workers hold six accounts");
    let active: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')")
            .fetch_one(fleet.pool())
            .await
            .unwrap();
    assert!(
        active > 0,
        "the crawl is still running when the fleet scales down"
    );
    // Scale back to 2: the orchestrator's SIGTERM.
    for i in 2..6 {
        fleet.signal_worker(i, libc::SIGTERM);
    }
    for i in 2..6 {
        let code = fleet.wait_worker(i, Duration::from_secs(35)).await;
        assert_eq!(
            code,
            Some(Some(0)),
            "worker {i} stops cleanly within its grace period"
        );
    }
    let busy: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts WHERE state = 'leased'")
        .fetch_one(fleet.pool())
        .await
        .unwrap();
    assert_eq!(
        busy, 2,
        "the stopped workers gave their accounts back at once"
    );

    fleet.wait_until_done(Duration::from_secs(240)).await;
    fleet.assert_stored_exactly(&posts, Some(&comments)).await;
    fleet.assert_windows_held().await;
}
