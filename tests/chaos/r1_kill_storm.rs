//! R1: a random worker SIGKILLed every 5 s, and started again, through a crawl of at least
//! 6,000 items (50,000 in the long version). Each comment crawl loads its post first, as Instagram's
//! web app does, so an item costs more requests than it did with the retired requests.

use std::time::{Duration, Instant};

use crate::support::{Fleet, FleetOptions, posts_with_comments};
use crate::{Verdict, long};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_kill_storm_through_thousands_of_items_loses_and_duplicates_nothing() {
    let least_items = if long() { 50_000 } else { 6_000 };
    let mut fleet = Fleet::start(FleetOptions {
        workers: 4,
        accounts: 4,
        time_scale: 0.1,
        sizes: trawl_simulator::Sizes {
            users: 2000,
            max_posts: 60,
            ..FleetOptions::default().sizes
        },
        ..FleetOptions::default()
    })
    .await;
    // The fewest profiles whose posts and comments make at least `least_items` items.
    let candidates = fleet.public_users_with_posts(2000);
    let mut users = Vec::new();
    let (mut posts, mut comments) = Default::default();
    for user in candidates {
        users.push(user);
        (posts, comments) = fleet.expected_posts_and_comments(&users);
        if posts.len() + comments.len() >= least_items {
            break;
        }
    }
    let items = posts.len() + comments.len();
    assert!(items >= least_items, "the data set holds {items} items");
    fleet.submit(posts_with_comments(&users)).await;

    let started = Instant::now();
    let mut kills = 0u32;
    // The windows bound this crawl, not the machine: at time scale 0.1 the short version needs
    // about 4 to 5 minutes (each comment crawl loads its post first). Twice that before it is
    // called stuck, so a busy machine does not fail it.
    let timeout = Duration::from_secs(if long() { 1800 } else { 600 });
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        if fleet.active_jobs().await == 0 {
            break;
        }
        assert!(
            started.elapsed() < timeout,
            "the crawl did not finish in {timeout:?} under the kill storm; logs in {}",
            fleet.logs.display()
        );
        fleet.kill_and_restart_random_worker();
        kills += 1;
    }
    assert!(
        kills >= 3,
        "the storm killed {kills} workers; it needs a longer crawl"
    );
    let verdict = Verdict::of(&fleet, "true", &posts, Some(&comments)).await;
    verdict.assert_clean(&fleet);
    let resumed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE kind = 'profile_posts' AND attempt > 1",
    )
    .fetch_one(fleet.pool())
    .await
    .expect("count resumed crawls");
    verdict.record(
        "R1 kill storm",
        &format!(
            "{items} items from {} profiles; {kills} SIGKILLs, one every 5 s; {resumed} profile \
             crawls taken over by another worker after a kill (they resume from their \
             checkpoints); {:.0} s",
            users.len(),
            started.elapsed().as_secs_f64()
        ),
    );
}
