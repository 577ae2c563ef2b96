//! R2: the database restarted (`pg_ctl restart -m immediate`) under a crawl.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::support::{Fleet, FleetOptions, posts_with_comments};
use crate::{Verdict, assert_no_panics, first_grant_after, long, own_cluster};

/// R2: `pg_ctl restart -m immediate` mid-crawl (once; three times in the long version). No
/// process exits; crawling resumes within 10 s of the database accepting connections; nothing is
/// lost or stored twice; the windows hold across the restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_database_restart_loses_nothing_and_crawling_resumes() {
    let (restarts, profiles) = if long() { (3, 60) } else { (1, 20) };
    let (mut cluster, db) = own_cluster().await;
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
    let users = fleet.public_users_with_posts(profiles);
    let (posts, comments) = fleet.expected_posts_and_comments(&users);
    fleet.submit(posts_with_comments(&users)).await;

    let mut resumed_after = Vec::new();
    for _ in 0..restarts {
        tokio::time::sleep(Duration::from_secs(4)).await;
        cluster = tokio::task::spawn_blocking(move || {
            cluster.restart_immediate().expect("restart");
            cluster
        })
        .await
        .expect("restart task");
        let up: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(fleet.pool())
            .await
            .expect("the pool reconnects after the restart");
        let restarted = Instant::now();
        // The first request let through after the restart.
        let resumed = first_grant_after(
            &fleet,
            up,
            restarted,
            Duration::from_secs(10),
            "after the database restart",
        )
        .await;
        resumed_after.push(resumed);
    }

    fleet.wait_until_done(Duration::from_secs(300)).await;
    if let Err(dead) = fleet.all_alive() {
        panic!("{dead}; logs in {}", fleet.logs.display());
    }
    assert_no_panics(&fleet);
    let verdict = Verdict::of(&fleet, "true", &posts, Some(&comments)).await;
    verdict.assert_clean(&fleet);
    let slowest = resumed_after.iter().max().copied().unwrap_or_default();
    verdict.record(
        "R2 database restart",
        &format!(
            "{restarts} immediate restart(s); crawling resumed at most {:.2} s after the database \
             accepted connections (limit 10 s)",
            slowest.as_secs_f64()
        ),
    );
    drop(fleet);
    drop(cluster);
}
