//! The second platform end to end: real `trawl` processes crawl the simulator's v1 API with v1
//! accounts under its hourly tiers (scaled), alone and next to an Instagram crawl, and the
//! simulator's own oracle judges the windows.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use support::{Fleet, FleetOptions, posts_with_comments};
use trawl_shared::JobSpec;
use trawl_shared::domain::JobOptions;

/// Ids stored in `v1_items` of one item kind.
async fn v1_ids(fleet: &Fleet, item: &str) -> BTreeSet<String> {
    sqlx::query_scalar("SELECT id FROM v1_items WHERE item = $1")
        .bind(item)
        .fetch_all(fleet.pool())
        .await
        .expect("v1 ids")
        .into_iter()
        .collect()
}

/// The peak and the cap of `tier`'s busiest window over every caller, from the oracle.
fn busiest(oracle: &Value, tier: &str) -> (u64, u64) {
    oracle["peaks"]
        .as_array()
        .expect("peaks")
        .iter()
        .filter(|p| p["key"] == format!("v1:{tier}"))
        .map(|p| {
            (
                p["most"].as_u64().unwrap_or(0),
                p["cap"].as_u64().unwrap_or(0),
            )
        })
        .max()
        .unwrap_or((0, 0))
}

/// What a v1 crawl of `users` must store: their posts, and the comments of `with_comments` of
/// those posts.
struct V1Crawl {
    jobs: Vec<JobSpec>,
    posts: BTreeSet<String>,
    comments: BTreeSet<String>,
    users_searched: BTreeSet<String>,
}

fn v1_crawl(fleet: &Fleet, users: &[String], searches: usize, v1_accounts: &[String]) -> V1Crawl {
    // Every post of every user; the comments only of the first user's posts (below).
    let (posts, _) = fleet.expected_posts_and_comments(users);
    let id_of = |name: &String| {
        fleet
            .data
            .user_by_name(name)
            .expect("user in the data set")
            .id
            .to_string()
    };
    let mut jobs: Vec<JobSpec> = users
        .iter()
        .flat_map(|u| {
            [
                JobSpec::new("v1_user_posts", id_of(u)),
                JobSpec::new("v1_user", id_of(u)),
                JobSpec::new("v1_followers", id_of(u)),
            ]
        })
        .collect();
    // Every post of the first user, with its comments.
    let first = fleet.data.user_by_name(&users[0]).expect("user");
    let mut commented_posts = BTreeSet::new();
    let mut expected_comments = BTreeSet::new();
    for i in 0..first.post_count {
        let p = fleet.data.post(first.index, i).expect("post");
        jobs.push(JobSpec::new("v1_post", p.id.to_string()));
        commented_posts.insert(p.id);
        for c in 0..p.comment_count {
            let cm = fleet.data.comment(&p, c).expect("comment");
            expected_comments.insert(cm.id.to_string());
            for (reply, ..) in fleet.data.replies(&cm) {
                expected_comments.insert(reply.to_string());
            }
        }
    }
    // Searches for data-set usernames, as users and as hashtags: each one page of the search
    // tier, more of them than the accounts' search windows hold.
    let searched: Vec<String> = fleet
        .data
        .users
        .iter()
        .take(searches)
        .map(|u| u.username.clone())
        .collect();
    for name in &searched {
        jobs.push(JobSpec::new("v1_search_users", name.clone()));
        jobs.push(JobSpec::new("v1_search_hashtags", name.clone()));
    }
    for account in v1_accounts {
        for kind in [
            "v1_feed",
            "v1_explore",
            "v1_stories_feed",
            "v1_notifications",
        ] {
            jobs.push(JobSpec {
                options: Some(JobOptions {
                    max_items: Some(100),
                    ..JobOptions::default()
                }),
                ..JobSpec::new(kind, account.clone())
            });
        }
    }
    V1Crawl {
        jobs,
        posts: posts.iter().map(i64::to_string).collect(),
        comments: expected_comments,
        users_searched: searched
            .iter()
            .map(|n| fleet.data.user_by_name(n).expect("user").id.to_string())
            .collect(),
    }
}

fn v1_account_names(fleet: &Fleet) -> Vec<String> {
    let o = &fleet.options;
    (o.accounts..o.accounts + o.v1_accounts)
        .map(|k| trawl_simulator::data::generated_account(o.seed, k).0)
        .collect()
}

async fn assert_v1_stored(fleet: &Fleet, crawl: &V1Crawl) {
    let posts = v1_ids(fleet, "post").await;
    assert!(
        crawl.posts.is_subset(&posts),
        "v1 posts missing: {:?}",
        crawl.posts.difference(&posts).take(5).collect::<Vec<_>>()
    );
    assert_eq!(v1_ids(fleet, "comment").await, crawl.comments);
    let users = v1_ids(fleet, "user").await;
    assert!(
        crawl.users_searched.is_subset(&users),
        "searched users missing: {:?}",
        crawl
            .users_searched
            .difference(&users)
            .take(5)
            .collect::<Vec<_>>()
    );
    let edges: i64 = sqlx::query_scalar("SELECT count(*) FROM v1_follows")
        .fetch_one(fleet.pool())
        .await
        .expect("edges");
    assert!(edges > 0, "no follow edge stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_fleet_crawls_every_kind_under_the_tiers_without_a_429() {
    let mut fleet = Fleet::start(FleetOptions {
        // A tier's hour lasts 18 s: the searches below fill the search windows, so the fleet
        // must wait them out.
        time_scale: 0.005,
        accounts: 0,
        v1_accounts: 2,
        workers: 0,
        ..FleetOptions::default()
    })
    .await;
    // A worker configured for Instagram's kinds only starts first: it must leave both v1
    // accounts to the others rather than hold one idle.
    let instagram_only = fleet.add_worker_with(vec![(
        "TRAWL_WORKER__KINDS".into(),
        r#"["profile_posts", "post_comments"]"#.into(),
    )]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while fleet
        .worker_log(instagram_only)
        .matches("leaving it to other workers")
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the Instagram-only worker did not pass both v1 accounts on: {}",
            fleet.worker_log(instagram_only)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..3 {
        fleet.add_worker();
    }
    let users = fleet.public_users_with_posts(8);
    let accounts = v1_account_names(&fleet);
    let crawl = v1_crawl(&fleet, &users, 150, &accounts);
    let submitted = crawl.jobs.len();
    fleet.submit(crawl.jobs.clone()).await;
    fleet.wait_until_done(Duration::from_secs(240)).await;

    fleet.assert_none_failed().await;
    let completed = fleet.job_states().await.get("completed").copied();
    assert_eq!(completed, Some(submitted as i64));
    assert_v1_stored(&fleet, &crawl).await;
    fleet.assert_windows_held().await;
    // The 300 searches are half again what two accounts may send in one window, so the fleet
    // filled the windows and waited: the limiter, not luck, kept the 429s away.
    let oracle = fleet.oracle().await;
    let (most, cap) = busiest(&oracle, "search");
    assert_eq!(cap, 100, "{oracle}");
    assert!(
        most >= 90,
        "the search tier was never pressed: {most} of {cap}"
    );
    let exported = fleet.trawl(&["export", "v1_posts", "--format", "jsonl"]);
    assert_eq!(exported.0, Some(0), "{}", exported.2);
    assert!(exported.1.lines().count() >= crawl.posts.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_fleet_holds_each_platforms_windows_at_once() {
    let fleet = Fleet::start(FleetOptions {
        time_scale: 0.005,
        accounts: 2,
        v1_accounts: 2,
        workers: 4,
        ..FleetOptions::default()
    })
    .await;
    let users = fleet.public_users_with_posts(8);
    let (ig_posts, ig_comments) = fleet.expected_posts_and_comments(&users);
    let accounts = v1_account_names(&fleet);
    let crawl = v1_crawl(&fleet, &users, 120, &accounts);
    let mut jobs = posts_with_comments(&users);
    jobs.extend(crawl.jobs.clone());
    fleet.submit(jobs).await;
    fleet.wait_until_done(Duration::from_secs(300)).await;

    fleet.assert_none_failed().await;
    fleet
        .assert_stored_exactly(&ig_posts, Some(&ig_comments))
        .await;
    assert_v1_stored(&fleet, &crawl).await;
    // One oracle judges both platforms' windows: Instagram's per account and query type, v1's
    // per account and tier.
    fleet.assert_windows_held().await;
    let audit = fleet.audit().await;
    let platform_requests = |prefix: &str| {
        audit
            .iter()
            .filter(|e| {
                e["query_type"]
                    .as_str()
                    .is_some_and(|q| q.starts_with(prefix))
            })
            .count()
    };
    assert!(platform_requests("v1:") > 0, "no v1 request was sent");
    assert!(
        audit.len() > platform_requests("v1:"),
        "no Instagram request was sent"
    );
}
