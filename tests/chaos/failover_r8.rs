//! R8 and R8b: the database primary SIGKILLed mid-crawl and its standby promoted. Every process
//! has the database URL's two hosts and must follow the new primary without a restart.
//!
//! - R8: the standby replicates synchronously, so no acknowledged grant, job or item is lost: the
//!   crawl finishes exactly, and the ledger is not fenced.
//! - R8b: the standby replicates asynchronously and is cut off from the primary for a few seconds
//!   before the kill, so the grants of those seconds are lost with the primary. The fence must
//!   keep every window from overshooting anyway.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use trawl_shared::config::LimiterConfig;
use trawl_shared::db;
use trawl_shared::limiter::{Ledger, Profile};
use trawl_shared::pgcluster::PrivateCluster;
use trawl_shared::testing::TestDb;
use trawl_shared::testing::replication::{
    Replication, attach_standby, multi_host_url, start_primary,
};

use crate::partition::Partition;
use crate::support::{Fleet, FleetOptions, posts_with_comments};
use crate::{Verdict, assert_no_panics, first_grant_after, long, sum_metric};

/// How full the fullest window must be when the standby is cut off and the primary killed.
const PRESSURE: f64 = 0.85;

/// What the primary's ledger held just before it died.
struct LastWords {
    /// Grants recorded after the standby was cut off (R8b), or in the last seconds (R8).
    grants_since: i64,
    /// The fullest window of any scope and type, as a share of its cap.
    fullest_window: f64,
}

async fn last_words(primary: &PrivateCluster, since: DateTime<Utc>, time_scale: f64) -> LastWords {
    let pool = db::connect_url(&primary.url("postgres"), 2, Duration::from_secs(5))
        .await
        .expect("connect to the primary");
    let grants_since: i64 =
        sqlx::query_scalar("SELECT count(*) FROM limiter_grants WHERE granted_at > $1")
            .bind(since)
            .fetch_one(&pool)
            .await
            .expect("read the primary's ledger");
    let ledger = Ledger::new(
        pool.clone(),
        Profile::from_config(&LimiterConfig {
            time_scale,
            ..LimiterConfig::instaloader()
        }),
    );
    let mut fullest_window = 0.0f64;
    for scope in ledger.active_scopes().await.expect("active scopes") {
        let usage = ledger.usage(&scope, None).await.expect("scope usage");
        let share = |used: u32, cap: u32| f64::from(used) / f64::from(cap.max(1));
        fullest_window = fullest_window.max(share(usage.graphql_used, usage.graphql_cap));
        for key in &usage.keys {
            fullest_window = fullest_window.max(share(key.used, key.cap));
            if let (Some(used), Some(cap)) = (key.iphone_used, key.iphone_cap) {
                fullest_window = fullest_window.max(share(used, cap));
            }
        }
    }
    pool.close().await;
    LastWords {
        grants_since,
        fullest_window,
    }
}

async fn failover(replication: Replication) {
    let profiles = if long() { 60 } else { 24 };
    let time_scale = 0.02;
    let primary = tokio::task::spawn_blocking(start_primary)
        .await
        .expect("primary task")
        .expect("a primary");
    // The asynchronous standby replicates through a link the test can cut.
    let link = Partition::start(([127, 0, 0, 1], primary.port()).into()).await;
    let upstream = match replication {
        Replication::Synchronous => primary.port(),
        Replication::Asynchronous => link.port,
    };
    let standby = attach_standby(&primary, upstream, replication)
        .await
        .expect("a streaming standby");
    let url = multi_host_url(&[&primary, &standby], "postgres");
    let pool = db::connect_url(&url, 10, Duration::from_secs(10))
        .await
        .expect("connect through the host list");
    db::migrate(&pool).await.expect("migrate");
    let name = match replication {
        Replication::Synchronous => "r8",
        Replication::Asynchronous => "r8b",
    };
    let mut primary = primary;
    let mut fleet = Fleet::start_on(
        FleetOptions {
            workers: 3,
            accounts: 3,
            time_scale,
            metrics_ports: true,
            ..FleetOptions::default()
        },
        TestDb {
            pool,
            url,
            name: name.into(),
        },
    )
    .await;
    let users = fleet.public_users_with_posts(profiles);
    let (posts, comments) = fleet.expected_posts_and_comments(&users);
    fleet.submit(posts_with_comments(&users)).await;
    // The failover comes when a window is nearly full: then grants lost with the primary would
    // let the fleet overshoot it, were it not for the fence.
    let pressure_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = last_words(&primary, Utc::now(), time_scale).await;
        if now.fullest_window >= PRESSURE {
            break;
        }
        assert!(
            Instant::now() < pressure_deadline,
            "no window reached {:.0}% of its cap (fullest {:.0}%); logs in {}",
            PRESSURE * 100.0,
            now.fullest_window * 100.0,
            fleet.logs.display()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let lag_from: DateTime<Utc> = Utc::now();
    if replication == Replication::Asynchronous {
        link.cut();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let before = last_words(&primary, lag_from, time_scale).await;
    let died_at: DateTime<Utc> = Utc::now();
    let died = Instant::now();
    primary = tokio::task::spawn_blocking(move || {
        primary.kill().expect("SIGKILL the primary");
        primary
    })
    .await
    .expect("kill task");
    let standby = tokio::task::spawn_blocking(move || {
        standby.promote().expect("promote the standby");
        standby
    })
    .await
    .expect("promote task");
    let promoted_after = died.elapsed();
    let resumed_after = first_grant_after(
        &fleet,
        died_at,
        died,
        Duration::from_secs(120),
        "after the failover",
    )
    .await;
    let kept: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM limiter_grants WHERE granted_at > $1 AND granted_at <= $2",
    )
    .bind(lag_from)
    .bind(died_at)
    .fetch_one(fleet.pool())
    .await
    .expect("count the grants the new primary has");
    let lost = (before.grants_since - kept).max(0);
    let fenced: bool = sqlx::query_scalar("SELECT fenced_from IS NOT NULL FROM limiter_timeline")
        .fetch_one(fleet.pool())
        .await
        .expect("the ledger's timeline");

    fleet.wait_until_done(Duration::from_secs(400)).await;
    if let Err(dead) = fleet.all_alive() {
        panic!(
            "{dead}: every process follows the new primary without a restart; logs in {}",
            fleet.logs.display()
        );
    }
    assert_no_panics(&fleet);
    let verdict = Verdict::of(&fleet, "true", &posts, Some(&comments)).await;
    verdict.assert_clean(&fleet);

    let logs = fleet.logs.display().to_string();
    let switches = sum_metric(
        &fleet.worker_ports,
        "trawl_database_primary_switches_total",
        None,
    )
    .await;
    let scheduler = [fleet.scheduler_port];
    let scheduler_switches =
        sum_metric(&scheduler, "trawl_database_primary_switches_total", None).await;
    assert!(
        switches >= fleet.worker_count() as f64 && scheduler_switches >= 1.0,
        "every process moved to the new primary (workers {switches}, scheduler \
         {scheduler_switches}); logs in {logs}"
    );
    let fence_refusals = sum_metric(
        &fleet.worker_ports,
        "trawl_limiter_fence_denials_total",
        None,
    )
    .await;
    let rescued = sum_metric(&scheduler, "trawl_queue_lease_rescues_total", None).await;
    match replication {
        Replication::Synchronous => {
            assert_eq!(
                lost, 0,
                "no acknowledged grant is lost with a synchronous standby; logs in {logs}"
            );
            assert!(!fenced, "a synchronous promotion is not fenced");
            assert_eq!(fence_refusals, 0.0);
        }
        Replication::Asynchronous => {
            assert!(
                lost > 0,
                "the cut-off standby lost grants ({} on the primary since the cut, {kept} \
                 kept): otherwise the scenario proves nothing",
                before.grants_since
            );
            assert!(fenced, "the promotion was fenced");
            assert!(fence_refusals > 0.0, "the fence refused requests");
        }
    }
    let label = match replication {
        Replication::Synchronous => "R8 failover, synchronous standby",
        Replication::Asynchronous => "R8b failover, lagging asynchronous standby",
    };
    verdict.record(
        label,
        &format!(
            "primary SIGKILLed, standby promoted {:.2} s later; first grant on the new primary \
             {:.2} s after the death; {lost} grants lost with the primary (fullest window at \
             the death {:.0}% of its cap); {fence_refusals} requests refused by the fence; \
             {rescued} leases rescued; every process followed (workers' switches {switches})",
            promoted_after.as_secs_f64(),
            resumed_after.as_secs_f64(),
            before.fullest_window * 100.0,
        ),
    );
    drop(fleet);
    drop(link);
    drop(standby);
    drop(primary);
}

/// R8: with a synchronous standby, the failover loses nothing and needs no fence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r8_failover_to_a_synchronous_standby_loses_nothing() {
    failover(Replication::Synchronous).await;
}

/// R8b: with a lagging asynchronous standby, grants are lost and the fence holds the windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r8b_failover_to_a_lagging_standby_overshoots_no_window() {
    failover(Replication::Asynchronous).await;
}
