//! Issue 9's scenarios (short versions; in progress): real `trawl` processes, the simulator at
//! scaled time, and a PostgreSQL cluster of the test's own, so it can be restarted under them.
//! Each ends by checking that every job finished, every item is stored exactly once, and no
//! window went above its cap.

mod support;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use support::{Fleet, FleetOptions, posts_with_comments};
use trawl_shared::db;
use trawl_shared::pgcluster::{Durability, PrivateCluster};
use trawl_shared::testing::TestDb;

/// A migrated database on a private cluster that only this test uses.
async fn own_cluster() -> (PrivateCluster, TestDb) {
    let cluster = tokio::task::spawn_blocking(|| PrivateCluster::start(Durability::Throwaway))
        .await
        .unwrap()
        .expect("a private cluster");
    let url = cluster.url("postgres");
    let pool = db::connect_url(&url, 10, Duration::from_secs(10))
        .await
        .unwrap();
    db::migrate(&pool).await.unwrap();
    (
        cluster,
        TestDb {
            pool,
            url,
            name: "postgres".into(),
        },
    )
}

/// R2: `pg_ctl restart -m immediate` mid-crawl. No process exits; crawling resumes within 10 s of
/// the database accepting connections; nothing is lost or stored twice; the windows hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_database_restart_loses_nothing_and_crawling_resumes() {
    let (cluster, db) = own_cluster().await;
    let mut fleet = Fleet::start_on(
        FleetOptions {
            workers: 3,
            accounts: 3,
            time_scale: 0.02,
            ..FleetOptions::default()
        },
        db,
    )
    .await;
    let users = fleet.public_users_with_posts(20);
    let (posts, comments) = fleet.expected_posts_and_comments(&users);
    fleet.submit(posts_with_comments(&users)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.restart_immediate().expect("restart");
        cluster
    })
    .await
    .unwrap();
    let up: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(fleet.pool())
        .await
        .expect("the pool reconnects after the restart");
    let restarted = Instant::now();
    // The first request let through after the restart.
    loop {
        let granted: i64 =
            sqlx::query_scalar("SELECT count(*) FROM limiter_grants WHERE granted_at > $1")
                .bind(up)
                .fetch_one(fleet.pool())
                .await
                .unwrap();
        if granted > 0 {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "crawling did not resume within 10 s of the restart; logs in {}",
            fleet.logs.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "crawling resumed {:?} after the restart",
        restarted.elapsed()
    );

    fleet.wait_until_done(Duration::from_secs(180)).await;
    if let Err(dead) = fleet.all_alive() {
        panic!("{dead}; logs in {}", fleet.logs.display());
    }
    fleet.assert_stored_exactly(&posts, Some(&comments)).await;
    fleet.assert_windows_held().await;
    for i in 0..fleet.worker_count() {
        assert!(
            !fleet.worker_log(i).contains("panicked"),
            "worker {i} panicked; logs in {}",
            fleet.logs.display()
        );
    }
    drop(fleet);
    drop(cluster);
}

/// R6: SIGTERM to every worker mid-crawl: each exits cleanly within its grace period, its job is
/// back in the queue with its checkpoint, its account free at once; a restarted fleet finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r6_stopping_every_worker_gives_everything_back_and_a_new_fleet_finishes() {
    let mut fleet = Fleet::start(FleetOptions {
        workers: 4,
        accounts: 4,
        time_scale: 0.1,
        sizes: trawl_simulator::Sizes {
            max_posts: 100,
            ..FleetOptions::default().sizes
        },
        ..FleetOptions::default()
    })
    .await;
    // Long paginated crawls, so that every worker is mid-crawl when it is stopped.
    let users: Vec<String> = fleet
        .public_users_with_posts(200)
        .into_iter()
        .filter(|u| {
            fleet
                .data
                .user_by_name(u)
                .is_some_and(|u| u.post_count >= 60)
        })
        .take(12)
        .collect();
    let (posts, _) = fleet.expected_posts_and_comments(&users);
    fleet
        .submit(
            users
                .iter()
                .map(|u| trawl_shared::JobSpec::new("profile_posts", u))
                .collect(),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(3500)).await;

    for i in 0..4 {
        fleet.signal_worker(i, libc::SIGTERM);
    }
    for i in 0..4 {
        let code = fleet.wait_worker(i, Duration::from_secs(10)).await;
        assert_eq!(
            code,
            Some(Some(0)),
            "worker {i} exits cleanly in its grace period"
        );
    }
    let (running, leased, checkpointed, queued): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM jobs WHERE state = 'running'),
                (SELECT count(*) FROM accounts WHERE state = 'leased'),
                (SELECT count(*) FROM jobs WHERE state = 'queued' AND checkpoint IS NOT NULL),
                (SELECT count(*) FROM jobs WHERE state = 'queued')",
    )
    .fetch_one(fleet.pool())
    .await
    .unwrap();
    assert_eq!(running, 0, "every job was given back");
    assert_eq!(leased, 0, "every account was given back at once");
    assert!(queued > 0, "the crawl was stopped mid-way");
    assert!(
        checkpointed > 0,
        "interrupted crawls kept their checkpoints"
    );

    for i in 0..4 {
        fleet.start_worker(i);
    }
    fleet.wait_until_done(Duration::from_secs(180)).await;
    fleet.assert_stored_exactly(&posts, None).await;
    fleet.assert_windows_held().await;
}

async fn leader_of(http: &reqwest::Client, port: u16) -> bool {
    let Ok(r) = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
    else {
        return false;
    };
    r.text()
        .await
        .is_ok_and(|t| t.lines().any(|l| l == "trawl_scheduler_leader 1"))
}

/// R7: the scheduler is killed during maintenance and during a batch submit. Workers keep
/// crawling without it; a batch is stored whole or not at all; resubmitting the same unique keys
/// creates nothing twice; another scheduler takes over leadership.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r7_losing_the_scheduler_stops_nothing_and_splits_no_batch() {
    let mut fleet = Fleet::start(FleetOptions {
        workers: 2,
        accounts: 2,
        time_scale: 0.05,
        ..FleetOptions::default()
    })
    .await;
    let users = fleet.public_users_with_posts(12);
    let (posts, comments) = fleet.expected_posts_and_comments(&users);
    fleet.submit(posts_with_comments(&users)).await;
    let http = reqwest::Client::new();
    let (mut standby, standby_port) = fleet.spawn_scheduler("scheduler-standby");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !leader_of(&http, fleet.scheduler_port).await {
        assert!(Instant::now() < deadline, "the first scheduler never led");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!leader_of(&http, standby_port).await, "only one leader");

    // Killed while leading maintenance: the standby takes over; workers never notice.
    let grants = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM limiter_grants")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    fleet.kill_scheduler();
    let before = grants(fleet.pool().clone()).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !leader_of(&http, standby_port).await {
        assert!(
            Instant::now() < deadline,
            "the standby did not take over leadership"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        grants(fleet.pool().clone()).await > before,
        "workers kept crawling without the first scheduler"
    );

    // Killed during a batch submit: all of the batch or none of it.
    const BATCH: usize = 4000;
    let batch = serde_json::json!({"jobs": (0..BATCH).map(|k| serde_json::json!({
        "kind": "profile", "target": format!("r7_user_{k}"), "unique_key": format!("r7:{k}"),
        "run_at": "2100-01-01T00:00:00Z"})).collect::<Vec<_>>()});
    let request = http
        .post(format!("http://127.0.0.1:{standby_port}/v1/jobs/batch"))
        .bearer_auth(support::TOKEN)
        .json(&batch)
        .send();
    let killer = async {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let _ = standby.kill();
        let _ = standby.wait();
    };
    let (answer, ()) = tokio::join!(request, killer);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE unique_key LIKE 'r7:%'")
        .fetch_one(fleet.pool())
        .await
        .unwrap();
    assert!(
        stored == 0 || stored == BATCH as i64,
        "a batch was split by the kill: {stored} of {BATCH} stored (answer: {:?})",
        answer.map(|r| r.status())
    );
    eprintln!("the scheduler killed 40 ms into a {BATCH}-job batch had stored {stored}");
    // Resubmitted to a new scheduler with the same unique keys: nothing twice.
    fleet.start_scheduler();
    let url = format!("http://127.0.0.1:{}/v1/jobs/batch", fleet.scheduler_port);
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer: serde_json::Value = loop {
        match http
            .post(&url)
            .bearer_auth(support::TOKEN)
            .json(&batch)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => break r.json().await.unwrap(),
            _ => {
                assert!(
                    Instant::now() < deadline,
                    "the new scheduler did not answer"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let created = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["created"] == true)
        .count() as i64;
    assert_eq!(
        created,
        BATCH as i64 - stored,
        "only what was missing is created"
    );
    let (total, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT unique_key) FROM jobs WHERE unique_key LIKE 'r7:%'",
    )
    .fetch_one(fleet.pool())
    .await
    .unwrap();
    assert_eq!((total, distinct), (BATCH as i64, BATCH as i64));

    // The r7 jobs run in 2100; the crawl itself finishes.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let active: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')
               AND unique_key NOT LIKE 'r7:%'",
        )
        .fetch_one(fleet.pool())
        .await
        .unwrap();
        if active == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "logs in {}",
            fleet.logs.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    fleet.assert_stored_exactly(&posts, Some(&comments)).await;
    fleet.assert_windows_held().await;
}
