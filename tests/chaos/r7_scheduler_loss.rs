//! R7: the scheduler killed while leading maintenance and in the middle of a batch submit.

use std::time::{Duration, Instant};

use crate::Verdict;
use crate::support::{self, Fleet, FleetOptions, posts_with_comments};

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
    let users = fleet.public_users_with_posts(8);
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
    let killed = Instant::now();
    let before = grants(fleet.pool().clone()).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !leader_of(&http, standby_port).await {
        assert!(
            Instant::now() < deadline,
            "the standby did not take over leadership"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let takeover = killed.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let granted_meanwhile = grants(fleet.pool().clone()).await - before;
    assert!(
        granted_meanwhile > 0,
        "workers kept crawling without the first scheduler"
    );

    // Killed during a batch submit: all of the batch or none of it. To be sure the kill lands
    // inside the batch's transaction, the test holds an uncommitted job with the batch's last
    // unique key: the scheduler's INSERT … ON CONFLICT then waits on it, with its transaction open,
    // until the test sees it waiting in pg_stat_activity and kills the scheduler.
    const BATCH: usize = 4000;
    let batch = serde_json::json!({"jobs": (0..BATCH).map(|k| serde_json::json!({
        "kind": "profile", "target": format!("r7_user_{k}"), "unique_key": format!("r7:{k}"),
        "run_at": "2031-01-01T00:00:00Z"})).collect::<Vec<_>>()});
    let mut blocker = fleet.pool().begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO jobs (kind, target, max_attempts, unique_key, run_at)
         VALUES ('profile', 'r7_blocker', 1, $1, '2031-01-01')",
    )
    .bind(format!("r7:{}", BATCH - 1))
    .execute(&mut *blocker)
    .await
    .expect("the blocking job");
    let request = http
        .post(format!("http://127.0.0.1:{standby_port}/v1/jobs/batch"))
        .bearer_auth(support::TOKEN)
        .json(&batch)
        .send();
    let pool = fleet.pool().clone();
    let killer = async move {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut inside = false;
        while !inside && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            inside = sqlx::query_scalar::<_, bool>(
                "SELECT count(*) > 0 FROM pg_stat_activity
                  WHERE application_name = 'trawl-scheduler' AND state = 'active'
                    AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO jobs%'",
            )
            .fetch_one(&pool)
            .await
            .unwrap_or(false);
        }
        if !inside {
            let seen: Option<String> = sqlx::query_scalar(
                "SELECT string_agg(format('%s %s %s %s', application_name, state,
                                          wait_event_type, left(query, 60)), E'\n')
                   FROM pg_stat_activity WHERE backend_type = 'client backend'",
            )
            .fetch_one(&pool)
            .await
            .unwrap_or_default();
            eprintln!("pg_stat_activity:\n{}", seen.unwrap_or_default());
        }
        let _ = standby.kill();
        let _ = standby.wait();
        inside
    };
    let (answer, killed_inside) = tokio::join!(request, killer);
    blocker.rollback().await.expect("rollback the blocking job");
    assert!(
        killed_inside,
        "the batch's INSERT was never seen waiting inside its transaction (answer: {:?})",
        answer.as_ref().map(|r| r.status())
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE unique_key LIKE 'r7:%'")
        .fetch_one(fleet.pool())
        .await
        .unwrap();
    assert_eq!(
        stored,
        0,
        "the batch killed inside its transaction left {stored} of {BATCH} rows (answer: {:?})",
        answer.map(|r| r.status())
    );
    eprintln!("the scheduler killed inside a {BATCH}-job batch's transaction had stored {stored}");
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

    // The r7 jobs run in 2031; the crawl itself finishes.
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
    let verdict = Verdict::of(
        &fleet,
        "unique_key NOT LIKE 'r7:%'",
        &posts,
        Some(&comments),
    )
    .await;
    verdict.assert_clean(&fleet);
    verdict.record(
        "R7 scheduler loss",
        &format!(
            "leader SIGKILLed: standby led after {:.2} s, workers granted {} requests meanwhile; \
             scheduler SIGKILLed inside a {BATCH}-job batch's open transaction: {stored} stored (all or none), \
             resubmission created {created}",
            takeover.as_secs_f64(),
            granted_meanwhile
        ),
    );
}
