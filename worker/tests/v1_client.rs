//! The v1 client against the real simulator over HTTP and a real PostgreSQL ledger: tokens kept
//! fresh without a refused request, a revoked account logging in again, and several clients (two
//! of them on one account, as two workers would be) held to the v1 tiers with no 429.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use trawl_shared::config::LimiterConfig;
use trawl_shared::limiter::Limiter;
use trawl_shared::limiter::metrics::LimiterMetrics;
use trawl_shared::secret::Secret;
use trawl_shared::testing::fresh_db;
use trawl_simulator::{Background, DataSet, Sim, SimConfig, Sizes};
use trawl_worker::v1::V1Client;

async fn simulator(seed: u64, time_scale: f64) -> Background {
    let data = DataSet::generate(
        seed,
        Sizes {
            users: 300,
            ..Sizes::default()
        },
    );
    let accounts = vec![
        ("alice".to_owned(), "pw-a".to_owned()),
        ("bob".to_owned(), "pw-b".to_owned()),
    ];
    let sim = Sim::new(SimConfig::fault_free(data, accounts, time_scale));
    trawl_simulator::serve_in_background(sim).await.unwrap()
}

/// A limiter as a worker process has one: the shipped v1 tiers, scaled like the simulator.
fn limiter(pool: &sqlx::PgPool, time_scale: f64) -> Arc<Limiter> {
    let config = LimiterConfig {
        time_scale,
        ..LimiterConfig::default()
    };
    Arc::new(Limiter::new(
        pool.clone(),
        &config,
        Arc::new(LimiterMetrics::new().unwrap()),
    ))
}

fn client(s: &Background, account: &str, password: &str, limiter: Arc<Limiter>) -> V1Client {
    V1Client::new(
        reqwest::Client::new(),
        format!("{}/api/v1", s.base),
        account,
        Secret::new(password),
        limiter,
    )
}

/// The audit log's entries whose route is `path`, as (status) values.
async fn statuses(s: &Background, path: &str) -> Vec<u64> {
    let log = reqwest::get(format!("{}/__sim/audit.jsonl", s.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["path"] == path)
        .filter_map(|e| e["status"].as_u64())
        .collect()
}

#[tokio::test]
async fn tokens_are_renewed_before_they_end_and_a_revoked_account_logs_in_again() {
    let scale = 0.002; // an hour is 7.2 s: a token lives 7 s
    let s = simulator(71, scale).await;
    let db = fresh_db().await;
    let alice = client(&s, "alice", "pw-a", limiter(&db.pool, scale));
    let someone = s.sim.data.users.iter().find(|u| !u.is_private).unwrap();
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_secs(9) {
        let profile = alice
            .get("user_lookup", &format!("/users/{}", someone.id), &[])
            .await
            .unwrap();
        assert_eq!(profile["username"], someone.username.as_str());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(statuses(&s, "/api/v1/auth/login").await, [200]);
    assert_eq!(
        statuses(&s, "/api/v1/auth/refresh").await,
        [200],
        "renewed once, before the end"
    );
    let refused = statuses(&s, "/api/v1/users/{user_id}").await;
    assert!(refused.iter().all(|&st| st == 200), "{refused:?}");

    // Every token of the account ends: the client is refused once, its refresh token is
    // refused, it logs in again and goes on.
    let r = reqwest::Client::new()
        .post(format!("{}/__sim/v1/revoke", s.base))
        .json(&serde_json::json!({"account": "alice"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    alice
        .get("user_lookup", &format!("/users/{}", someone.id), &[])
        .await
        .unwrap();
    assert_eq!(statuses(&s, "/api/v1/auth/login").await, [200, 200]);
    assert_eq!(statuses(&s, "/api/v1/auth/refresh").await, [200, 401]);

    let wrong = client(&s, "bob", "not-his", limiter(&db.pool, scale));
    let e = wrong.get("feed", "/feed", &[]).await.unwrap_err();
    assert!(e.to_string().contains("refused the login of bob"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_sharing_the_ledger_hold_every_tier_with_no_429() {
    let scale = 0.004; // an hour is 14.4 s; the margin 144 ms
    let s = simulator(72, scale).await;
    let db = fresh_db().await;
    let posts: Vec<u64> = s
        .sim
        .data
        .users
        .iter()
        .filter(|u| !u.is_private)
        .flat_map(|u| (0..u.post_count).filter_map(|i| s.sim.data.post(u.index, i)))
        .map(|p| p.id)
        .take(200)
        .collect();
    assert_eq!(posts.len(), 200);
    // Two clients of alice (two workers, each with its own limiter and pacing) and one of bob:
    // alice asks for 400 posts and 120 searches in all, over her caps of 300 and 100.
    let crawlers = [("alice", "pw-a"), ("alice", "pw-a"), ("bob", "pw-b")].map(|(a, p)| {
        let c = Arc::new(client(&s, a, p, limiter(&db.pool, scale)));
        let posts = posts.clone();
        tokio::spawn(async move {
            for (k, id) in posts.iter().enumerate() {
                let post = c.get("media", &format!("/posts/{id}"), &[]).await.unwrap();
                assert_eq!(post["post_id"], id.to_string());
                if k % 10 < 3 {
                    let found = c
                        .get("search", "/search/users", &[("q", "a".to_owned())])
                        .await
                        .unwrap();
                    assert!(found["users"].is_array());
                }
            }
        })
    });
    for c in crawlers {
        c.await.unwrap();
    }
    let oracle: Value = reqwest::get(format!("{}/__sim/oracle", s.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(oracle["responses_429"], 0, "{oracle}");
    let peaks = oracle["peaks"].as_array().unwrap();
    let peak = |scope: &str, key: &str| {
        peaks
            .iter()
            .find(|p| p["scope"] == scope && p["key"] == key)
            .map(|p| (p["most"].as_u64().unwrap(), p["cap"].as_u64().unwrap()))
            .unwrap()
    };
    for p in peaks
        .iter()
        .filter(|p| p["key"].as_str().unwrap().starts_with("v1:"))
    {
        assert!(p["most"].as_u64() <= p["cap"].as_u64(), "over a tier: {p}");
    }
    // The test pushed alice to her caps: a window held (almost) all it may.
    let (most, cap) = peak("account:alice", "v1:media");
    assert_eq!(cap, 300);
    assert!(most >= 270, "media: {most} of {cap}");
    let (most, cap) = peak("account:alice", "v1:search");
    assert_eq!(cap, 100);
    assert!(most >= 90, "search: {most} of {cap}");
}
