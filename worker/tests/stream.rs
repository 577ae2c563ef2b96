//! The stream process against the real simulator's WebSocket stream and a real PostgreSQL queue:
//! events become exactly the jobs the rules call for, across a connection the server cuts while
//! events keep happening (replayed after the reconnection, each handled once); a disabled
//! account's stream left and taken again once it is enabled.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use trawl_shared::Platform;
use trawl_shared::accounts::{Accounts, NewAccount};
use trawl_shared::config::{Config, StreamRule};
use trawl_shared::crypto::SecretBox;
use trawl_shared::duration::HumanDuration;
use trawl_shared::secret::Secret;
use trawl_shared::testing::fresh_db;
use trawl_simulator::{DataSet, Sim, SimConfig, Sizes};

const KEY: &str = "2222222222222222222222222222222222222222222222222222222222222222";

async fn activity(base: &str, n: u32) -> Vec<Value> {
    let answer: Value = reqwest::Client::new()
        .post(format!("{base}/__sim/v1/activity?n={n}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["events"].as_array().unwrap().clone()
}

/// A counter's value (summed over its labels) from a `/metrics` page.
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics(addr: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn jobs(pool: &sqlx::PgPool) -> Vec<(String, String, chrono::DateTime<Utc>)> {
    sqlx::query_as("SELECT kind, target, run_at FROM jobs ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_become_exactly_the_rules_jobs_across_a_forced_reconnect() {
    let scale = 0.01;
    let data = DataSet::generate(
        17,
        Sizes {
            users: 200,
            ..Sizes::default()
        },
    );
    let sim = Sim::new(SimConfig::fault_free(
        data,
        vec![("alice".to_owned(), "pw-a".to_owned())],
        scale,
    ));
    let s = trawl_simulator::serve_in_background(sim).await.unwrap();
    let db = fresh_db().await;
    Accounts::new(db.pool.clone(), SecretBox::from_hex(KEY).unwrap())
        .add(&NewAccount {
            name: "alice",
            password: Some("pw-a"),
            platform: Platform::V1,
            ..NewAccount::default()
        })
        .await
        .unwrap();

    // Events before the stream is first held are not its business: it starts from now on.
    let before = activity(&s.base, 3).await;
    let watched = before
        .iter()
        .find(|e| e["type"] == "new_post")
        .and_then(|e| e["user_id"].as_str())
        .unwrap()
        .to_owned();

    let mut config = Config::default();
    config.database.url = Secret::new(db.url.clone());
    config.secrets.key = Some(Secret::new(KEY));
    config.limiter.time_scale = scale;
    config.v1.base = format!("{}/api/v1", s.base);
    config.stream.url = format!("{}/v1/stream", s.base.replacen("http", "ws", 1));
    config.stream.lease = HumanDuration(Duration::from_secs(2));
    // Long enough that the events made right after the cut happen while it is disconnected.
    config.stream.reconnect_min = HumanDuration(Duration::from_millis(600));
    config.stream.account_poll = HumanDuration(Duration::from_millis(100));
    let rule = StreamRule::new;
    let mut watched_rule = rule("new_post", "v1_user_posts", "user");
    watched_rule.users = vec![watched.clone()];
    let mut follows = rule("notification", "v1_user", "user");
    follows.notification_types = vec!["follow".into()];
    let mut posts = rule("new_post", "v1_post", "post");
    posts.delay = HumanDuration(Duration::from_secs(600));
    config.stream.rules = vec![
        posts,
        watched_rule,
        rule("new_story", "v1_stories_feed", "account"),
        follows,
    ];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, shutdown) = trawl_shared::shutdown::channel();
    let process = tokio::spawn({
        let config = config.clone();
        async move { trawl_worker::stream::run(&config, listener, shutdown, false).await }
    });
    wait_for("the subscription", async || {
        metric(&metrics(addr).await, "trawl_stream_connected") == 1.0
    })
    .await;

    let mut events = activity(&s.base, 6).await;
    wait_for("the first events", async || {
        metric(&metrics(addr).await, "trawl_stream_events_total") == 6.0
    })
    .await;
    let cut = reqwest::Client::new()
        .post(format!("{}/__sim/v1/streams/close", s.base))
        .send()
        .await
        .unwrap();
    assert!(cut.status().is_success());
    events.extend(activity(&s.base, 6).await);
    wait_for("the replay after the reconnection", async || {
        let page = metrics(addr).await;
        metric(&page, "trawl_stream_events_total") == 12.0
            && metric(&page, "trawl_stream_reconnects_total") >= 1.0
    })
    .await;
    // Anything more (a second delivery) would arrive now.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut expected: BTreeSet<(String, String)> = BTreeSet::new();
    let mut matches = 0;
    for e in &events {
        let id = |k: &str| e[k].as_str().unwrap().to_owned();
        let mut add = |kind: &str, target: String| {
            matches += 1;
            expected.insert((kind.to_owned(), target));
        };
        match e["type"].as_str().unwrap() {
            "new_post" => {
                add("v1_post", id("post_id"));
                if id("user_id") == watched {
                    add("v1_user_posts", watched.clone());
                }
            }
            "new_story" => add("v1_stories_feed", "alice".into()),
            "notification" if e["kind"] == "follow" => add("v1_user", id("actor_id")),
            _ => {}
        }
    }
    let stored = jobs(&db.pool).await;
    let got: BTreeSet<(String, String)> = stored
        .iter()
        .map(|(k, t, _)| (k.clone(), t.clone()))
        .collect();
    assert_eq!(got, expected, "events: {events:?}");
    assert_eq!(stored.len(), expected.len(), "a job stored twice");
    for (kind, _, run_at) in &stored {
        if kind == "v1_post" {
            assert!(*run_at > Utc::now() + chrono::Duration::seconds(590));
        }
    }
    let page = metrics(addr).await;
    assert_eq!(metric(&page, "trawl_stream_events_total"), 12.0, "{page}");
    // Every match of every event was handled once: created, or absorbed by the queue's dedup.
    assert_eq!(
        metric(&page, "trawl_stream_jobs_total"),
        f64::from(matches),
        "{page}"
    );
    assert!(
        page.contains("trawl_stream_reconnects_total{reason=\"server_restart\"} 1"),
        "{page}"
    );

    // An account disabled while its stream is held: the process stops acting as it and gives
    // the stream back; enabled again, it is listened to again.
    let accounts = Accounts::new(db.pool.clone(), SecretBox::from_hex(KEY).unwrap());
    accounts.set_enabled("alice", false).await.unwrap();
    let holder = async || -> Option<String> {
        sqlx::query_scalar("SELECT lease_owner FROM v1_streams WHERE account = 'alice'")
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };
    wait_for("the stream left on disabling", async || {
        metric(&metrics(addr).await, "trawl_stream_connected") == 0.0 && holder().await.is_none()
    })
    .await;
    accounts.set_enabled("alice", true).await.unwrap();
    wait_for("the stream taken again", async || {
        metric(&metrics(addr).await, "trawl_stream_connected") == 1.0
    })
    .await;
    assert_eq!(
        metric(&metrics(addr).await, "trawl_stream_events_total"),
        12.0,
        "nothing replayed twice on resuming"
    );

    stop.trigger();
    process.await.unwrap().unwrap();
    assert_eq!(
        holder().await,
        None,
        "the stream was not given back on stopping"
    );
}
