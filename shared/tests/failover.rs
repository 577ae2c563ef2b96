//! Database failover against real PostgreSQL: a primary and a streaming standby on private
//! clusters, the primary SIGKILLed and the standby promoted. The pool, the leader lock and the job
//! listener follow the new primary without a restart; the ledger's fence holds every window after
//! an asynchronous promotion and stays out of the way after a synchronous one.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use trawl_shared::config::LimiterConfig;
use trawl_shared::db;
use trawl_shared::domain::JobSpec;
use trawl_shared::leader::LeaderElector;
use trawl_shared::limiter::{Decision, Ledger, Profile, QueryType, Request};
use trawl_shared::pgcluster::PrivateCluster;
use trawl_shared::primary;
use trawl_shared::queue::{Queue, QueueSettings};
use trawl_shared::testing::replication::{
    Replication, attach_standby, multi_host_url, start_primary,
};

/// A primary, its standby, and a migrated pool on a URL listing both hosts (the standby's first
/// when `standby_first`).
async fn replicated(
    replication: Replication,
    standby_first: bool,
) -> (PrivateCluster, PrivateCluster, PgPool) {
    let primary = tokio::task::spawn_blocking(start_primary)
        .await
        .expect("primary task")
        .expect("a primary");
    let standby = attach_standby(&primary, primary.port(), replication)
        .await
        .expect("a standby");
    let hosts = if standby_first {
        [&standby, &primary]
    } else {
        [&primary, &standby]
    };
    let pool = db::connect_url(
        &multi_host_url(&hosts, "postgres"),
        4,
        Duration::from_secs(5),
    )
    .await
    .expect("connect through the host list");
    db::migrate(&pool).await.expect("migrate");
    (primary, standby, pool)
}

async fn server_port(pool: &PgPool) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT inet_server_port()")
        .fetch_one(pool)
        .await
}

/// Polls until `pool` reaches the server on `port`, or panics after `limit`.
async fn wait_for_port(pool: &PgPool, port: u16, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok(p) = server_port(pool).await
            && p == i32::from(port)
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "the pool did not reach the new primary on port {port} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn fail_over(primary: &mut PrivateCluster, standby: &PrivateCluster) {
    primary.kill().expect("SIGKILL the primary");
    standby.promote().expect("promote the standby");
}

fn request(query_type: QueryType) -> Request {
    Request {
        query_type,
        account: "failover".into(),
        egress: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_list_finds_the_primary_and_follows_a_promotion() {
    // The standby first: the pool must skip it.
    let (mut primary, standby, pool) = replicated(Replication::Asynchronous, true).await;
    assert_eq!(server_port(&pool).await.unwrap(), i32::from(primary.port()));

    // The standby alone is refused with the reason.
    let alone = db::connect_url(&standby.url("postgres"), 2, Duration::from_secs(2))
        .await
        .expect_err("a standby alone is refused");
    let said = alone.to_string();
    assert!(said.contains("standby"), "{said}");

    let queue = Queue::new(pool.clone(), QueueSettings::default());
    let mut waiter = queue.waiter().await.expect("listener");
    let mut leader = LeaderElector::new(pool.clone(), "failover-test", 42);
    assert!(leader.check().await, "the only contender leads");

    let switches_before = primary::primary_switches();
    fail_over(&mut primary, &standby);
    let followed = wait_for_port(&pool, standby.port(), Duration::from_secs(15)).await;
    eprintln!("the pool reached the promoted standby {followed:?} after the promotion");
    assert!(primary::primary_switches() > switches_before);

    // The leader lock is taken again on the new primary.
    let started = Instant::now();
    while !leader.check().await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "leadership not regained"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The listener listens on the new primary: a submission wakes it.
    let woken = async {
        // The first waits may report the lost connection and reopen the listener.
        for i in 0..100 {
            let job = JobSpec::new("profile", format!("after_failover_{i}"))
                .validate(3)
                .expect("a valid job");
            queue.submit(&job).await.expect("submit on the new primary");
            if waiter.wait().await {
                return true;
            }
        }
        false
    };
    assert!(woken.await, "no notification after the failover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_asynchronous_promotion_every_window_counts_as_full_until_no_lost_grant_can_be_in_it()
 {
    let (mut primary, standby, pool) = replicated(Replication::Asynchronous, false).await;
    // Windows of 3.3 s (11 min), 3 s (10 min) and 9 s (30 min).
    let profile = Profile::from_config(&LimiterConfig {
        time_scale: 0.005,
        ..LimiterConfig::instaloader()
    });
    let ledger = Ledger::new(pool.clone(), profile.clone());
    let graphql = request(QueryType::QueryHash("h".into()));
    let iphone = request(QueryType::Iphone);
    for r in [&graphql, &iphone] {
        assert!(matches!(
            ledger.try_acquire(r, None).await.unwrap(),
            Decision::Granted { .. }
        ));
    }
    let timeline_before: i64 = sqlx::query_scalar("SELECT timeline FROM limiter_timeline")
        .fetch_one(&pool)
        .await
        .unwrap();
    // Let the grants reach the standby, so the fence below is the promotion's alone.
    tokio::time::sleep(Duration::from_millis(500)).await;

    fail_over(&mut primary, &standby);
    wait_for_port(&pool, standby.port(), Duration::from_secs(15)).await;
    let graphql_wait = match ledger.try_acquire(&graphql, None).await.unwrap() {
        Decision::Wait { wait, fenced, .. } => {
            assert!(fenced, "refused by the fence");
            wait
        }
        other => panic!("expected the fence to refuse, got {other:?}"),
    };
    let type_window = profile.per_type.window + profile.per_type.margin;
    assert!(
        graphql_wait > type_window.mul_f64(0.8) && graphql_wait <= type_window,
        "a GraphQL request waits out its longest window, {type_window:?}: {graphql_wait:?}"
    );
    let iphone_wait = match ledger.try_acquire(&iphone, None).await.unwrap() {
        Decision::Wait {
            wait, fenced: true, ..
        } => wait,
        other => panic!("expected the fence to refuse, got {other:?}"),
    };
    let iphone_window = profile.iphone.window + profile.iphone.margin;
    assert!(
        iphone_wait > iphone_window.mul_f64(0.8) && iphone_wait <= iphone_window,
        "an iPhone request waits out the 30-minute window, {iphone_window:?}: {iphone_wait:?}"
    );
    let (timeline, promoted_from, fenced): (i64, Option<i64>, bool) = sqlx::query_as(
        "SELECT timeline, promoted_from, fenced_from IS NOT NULL FROM limiter_timeline",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (promoted_from, fenced),
        (Some(timeline_before), true),
        "the promotion is recorded"
    );
    assert!(timeline > timeline_before);

    tokio::time::sleep(graphql_wait + Duration::from_millis(100)).await;
    assert!(
        matches!(
            ledger.try_acquire(&graphql, None).await.unwrap(),
            Decision::Granted { .. }
        ),
        "GraphQL is let through once its windows are past the fence"
    );
    assert!(
        matches!(
            ledger.try_acquire(&iphone, None).await.unwrap(),
            Decision::Wait { fenced: true, .. }
        ),
        "the 30-minute window is still fenced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_synchronous_promotion_nothing_is_fenced_and_no_grant_is_lost() {
    let (mut primary, standby, pool) = replicated(Replication::Synchronous, false).await;
    let ledger = Ledger::new(
        pool.clone(),
        Profile::from_config(&LimiterConfig {
            time_scale: 0.005,
            ..LimiterConfig::instaloader()
        }),
    );
    let graphql = request(QueryType::QueryHash("h".into()));
    let mut granted = 0;
    for _ in 0..20 {
        if let Decision::Granted { .. } = ledger.try_acquire(&graphql, None).await.unwrap() {
            granted += 1;
        }
    }
    // Killed at once: whatever was acknowledged is on the standby.
    fail_over(&mut primary, &standby);
    wait_for_port(&pool, standby.port(), Duration::from_secs(15)).await;
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM limiter_grants")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kept, granted, "every acknowledged grant survived");
    assert!(
        matches!(
            ledger.try_acquire(&graphql, None).await.unwrap(),
            Decision::Granted { .. }
        ),
        "no fence after a synchronous promotion"
    );
    let (promoted_from, fenced): (Option<i64>, bool) =
        sqlx::query_as("SELECT promoted_from, fenced_from IS NOT NULL FROM limiter_timeline")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(promoted_from.is_some(), "the promotion is recorded");
    assert!(!fenced, "and not fenced");
}
