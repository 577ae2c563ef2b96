//! R6: every worker stopped with SIGTERM mid-crawl.

use std::time::{Duration, Instant};

use crate::support::{Fleet, FleetOptions};
use crate::{Verdict, long};

/// R6: SIGTERM to every worker mid-crawl: each exits cleanly within its grace period, its job is
/// back in the queue with its checkpoint, its account free at once; a restarted fleet finishes.
/// Once in the short version; three stop-and-restart rounds in the long one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r6_stopping_every_worker_gives_everything_back_and_a_new_fleet_finishes() {
    let rounds = if long() { 3 } else { 1 };
    let mut fleet = Fleet::start(FleetOptions {
        workers: 4,
        accounts: 4,
        time_scale: 0.1,
        sizes: trawl_simulator::Sizes {
            users: 600,
            max_posts: 100,
            ..FleetOptions::default().sizes
        },
        ..FleetOptions::default()
    })
    .await;
    // Long paginated crawls, so that every worker is mid-crawl when it is stopped, and enough of
    // them that each round stops a crawl still under way.
    let users: Vec<String> = fleet
        .public_users_with_posts(600)
        .into_iter()
        .filter(|u| {
            fleet
                .data
                .user_by_name(u)
                .is_some_and(|u| u.post_count >= 60)
        })
        .take(12 * rounds)
        .collect();
    assert_eq!(
        users.len(),
        12 * rounds,
        "the data set has enough long profiles"
    );
    let (posts, _) = fleet.expected_posts_and_comments(&users);
    fleet
        .submit(
            users
                .iter()
                .map(|u| trawl_shared::JobSpec::new("profile_posts", u))
                .collect(),
        )
        .await;
    let grace = Duration::from_secs(5);
    let mut slowest_exit = Duration::ZERO;
    for round in 0..rounds {
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let stopped = Instant::now();
        for i in 0..4 {
            fleet.signal_worker(i, libc::SIGTERM);
        }
        for i in 0..4 {
            let code = fleet.wait_worker(i, grace).await;
            assert_eq!(
                code,
                Some(Some(0)),
                "worker {i} exits cleanly within its grace period ({grace:?}), round {round}"
            );
        }
        slowest_exit = slowest_exit.max(stopped.elapsed());
        let (running, leased, checkpointed, queued): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM jobs WHERE state = 'running'),
                    (SELECT count(*) FROM accounts WHERE state = 'leased'),
                    (SELECT count(*) FROM jobs WHERE state = 'queued' AND checkpoint IS NOT NULL),
                    (SELECT count(*) FROM jobs WHERE state = 'queued')",
        )
        .fetch_one(fleet.pool())
        .await
        .expect("queue state");
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
    }
    fleet.wait_until_done(Duration::from_secs(240)).await;
    let verdict = Verdict::of(&fleet, "true", &posts, None).await;
    verdict.assert_clean(&fleet);
    verdict.record(
        "R6 graceful stop",
        &format!(
            "{rounds} round(s) of SIGTERM to all 4 workers; every worker out within {:.2} s \
             (grace 5 s); no job running and no account leased after",
            slowest_exit.as_secs_f64()
        ),
    );
}
