//! The rate-limit ledger against a real PostgreSQL: Instaloader's test vectors under a fake clock,
//! a concurrency property from several pools, restarts and 429 penalties.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;
use trawl_shared::config::LimiterConfig;
use trawl_shared::db;
use trawl_shared::limiter::{Decision, Ledger, Profile, QueryType, Request, Scope};
use trawl_shared::testing::fresh_db;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn t(secs: f64) -> DateTime<Utc> {
    t0() + chrono::Duration::microseconds((secs * 1e6).round() as i64)
}

fn secs(at: DateTime<Utc>) -> f64 {
    (at - t0()).num_microseconds().unwrap() as f64 / 1e6
}

fn a() -> QueryType {
    QueryType::QueryHash("A".into())
}
fn b() -> QueryType {
    QueryType::QueryHash("B".into())
}
fn c() -> QueryType {
    QueryType::DocId("C".into())
}

fn req(account: &str, q: QueryType) -> Request {
    Request {
        query_type: q,
        account: account.into(),
        egress: None,
    }
}

fn exact(pool: &PgPool) -> Ledger {
    Ledger::new(
        pool.clone(),
        Profile::from_config(&LimiterConfig::instaloader()),
    )
}

/// Lets a request through at `at` (it must be granted).
async fn grant(ledger: &Ledger, account: &str, q: QueryType, at: f64) {
    match ledger
        .try_acquire(&req(account, q.clone()), Some(t(at)))
        .await
        .unwrap()
    {
        Decision::Granted { at: when, .. } => assert_eq!(when, t(at)),
        other => panic!("{q} at {at}: expected a grant, got {other:?}"),
    }
}

/// The wait for one more request at `at`, in seconds (0 when it would be granted; then it is).
async fn wait(ledger: &Ledger, account: &str, q: QueryType, at: f64) -> f64 {
    match ledger
        .try_acquire(&req(account, q), Some(t(at)))
        .await
        .unwrap()
    {
        Decision::Granted { .. } => 0.0,
        Decision::Wait { wait, .. } => wait.as_secs_f64(),
    }
}

fn assert_ms(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() < 0.001,
        "{what}: got {actual}, expected {expected}"
    );
}

#[tokio::test]
async fn instaloader_vectors_v1_to_v8_reproduce_to_the_millisecond() {
    let db = fresh_db().await;
    let l = exact(&db.pool);

    // V1: 200 A at 0..199, one more A at 200 waits 0 + 660 + 6 - 200.
    for s in 0..200 {
        grant(&l, "v1", a(), s as f64).await;
    }
    assert_ms(wait(&l, "v1", a(), 200.0).await, 466.0, "V1");

    // V2: 75 other at 0..74.
    for s in 0..75 {
        grant(&l, "v2", QueryType::Other, s as f64).await;
    }
    assert_ms(wait(&l, "v2", QueryType::Other, 75.0).await, 591.0, "V2");

    // V3: 150 A then 125 B fill the all-GraphQL window; C waits, other does not.
    for s in 0..150 {
        grant(&l, "v3", a(), s as f64).await;
    }
    for s in 150..275 {
        grant(&l, "v3", b(), s as f64).await;
    }
    assert_ms(wait(&l, "v3", c(), 275.0).await, 325.0, "V3");
    assert_ms(wait(&l, "v3", QueryType::Other, 275.0).await, 0.0, "V3b");

    // V4/V5: 199 iphone at 0..198.
    for s in 0..199 {
        grant(&l, "v4", QueryType::Iphone, s as f64).await;
    }
    assert_ms(wait(&l, "v4", QueryType::Iphone, 199.0).await, 1619.0, "V4");
    assert_ms(wait(&l, "v4", a(), 199.0).await, 0.0, "V5");

    // V6: 10 A at 0..9, a 429 at 10 (that request was let through and counts).
    for s in 0..10 {
        grant(&l, "v6", a(), s as f64).await;
    }
    grant(&l, "v6", a(), 10.0).await;
    let end = l.record_429(&req("v6", a()), Some(t(10.0))).await.unwrap();
    assert_ms(secs(end) - 10.0, 656.0, "V6");
    assert_ms(wait(&l, "v6", QueryType::Other, 10.0).await, 656.0, "V6b");
    assert_ms(wait(&l, "v6", a(), 600.0).await, 66.0, "V6c");

    // V7: 5 iphone at 0..4, a 429 at 5.
    for s in 0..5 {
        grant(&l, "v7", QueryType::Iphone, s as f64).await;
    }
    grant(&l, "v7", QueryType::Iphone, 5.0).await;
    let end = l
        .record_429(&req("v7", QueryType::Iphone), Some(t(5.0)))
        .await
        .unwrap();
    assert_ms(secs(end) - 5.0, 1813.0, "V7");
    assert_ms(wait(&l, "v7", a(), 5.0).await, 1813.0, "V7b");

    // V8: the oldest left the 660 s window at 661; the margin only counts when full at asking.
    for s in 0..200 {
        grant(&l, "v8", a(), s as f64).await;
    }
    assert_ms(wait(&l, "v8", a(), 661.0).await, 0.0, "V8");
}

/// A client that sends as fast as the ledger lets it, each request taking one second.
async fn greedy(l: &Ledger, account: &str, types: &[QueryType], until: f64) -> Vec<f64> {
    let mut now = 0.0;
    let mut granted = Vec::new();
    let mut i = 0;
    loop {
        let q = types[i % types.len()].clone();
        let w = wait(l, account, q.clone(), now).await;
        if w > 0.0 {
            now += w;
            if now >= until {
                break;
            }
            grant(l, account, q, now).await;
        }
        if now >= until {
            break;
        }
        granted.push(now);
        i += 1;
        now += 1.0;
    }
    granted
}

/// The most grants in any closed window `[s, s + len]`.
fn most_in_closed_window(times: &[f64], len: f64) -> usize {
    times
        .iter()
        .map(|&s| {
            times
                .iter()
                .filter(|&&x| x >= s && x <= s + len + 1e-9)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn instaloader_vectors_v9_and_v10_greedy_clients() {
    let db = fresh_db().await;
    let l = exact(&db.pool);
    let v9 = greedy(&l, "v9", &[a()], 3600.0).await;
    assert_eq!(v9.len(), 1200, "V9 grants");
    assert_eq!(most_in_closed_window(&v9, 660.0), 200, "V9 most in 660 s");

    let v10 = greedy(&l, "v10", &[a(), b()], 1200.0).await;
    assert_eq!(v10.len(), 550, "V10 grants");
    assert_eq!(
        most_in_closed_window(&v10, 600.0),
        276,
        "V10 most in a closed 600 s"
    );

    // The default profile's latency margin on the all-GraphQL window keeps a closed window at 275.
    let safe = Ledger::new(
        db.pool.clone(),
        Profile::from_config(&LimiterConfig::default()),
    );
    let v10_safe = greedy(&safe, "v10-safe", &[a(), b()], 1200.0).await;
    assert!(most_in_closed_window(&v10_safe, 600.0) <= 275);
}

#[tokio::test]
async fn a_new_limiter_after_a_restart_grants_exactly_the_rest_of_the_window() {
    let db = fresh_db().await;
    let request = req("restarted", a());
    {
        let first = exact(&db.pool);
        for _ in 0..150 {
            assert!(matches!(
                first.try_acquire(&request, None).await.unwrap(),
                Decision::Granted { .. }
            ));
        }
    }
    // A brand-new pool and ledger: nothing in process memory survives.
    let pool = db::connect_url(&db.url, 2, Duration::from_secs(10))
        .await
        .unwrap();
    let second = exact(&pool);
    let mut granted = 0;
    loop {
        match second.try_acquire(&request, None).await.unwrap() {
            Decision::Granted { .. } => granted += 1,
            Decision::Wait {
                wait, type_used, ..
            } => {
                assert_eq!(type_used, 200);
                assert!(wait > Duration::from_secs(600), "{wait:?}");
                break;
            }
        }
    }
    assert_eq!(granted, 50);
}

#[tokio::test]
async fn a_429_blocks_every_type_of_its_scope_and_no_other_scope() {
    let db = fresh_db().await;
    let l = exact(&db.pool);
    for s in 0..5 {
        grant(&l, "hit", a(), s as f64).await;
        grant(&l, "bystander", a(), s as f64).await;
    }
    let end = l.record_429(&req("hit", a()), Some(t(5.0))).await.unwrap();
    assert_ms(secs(end), 666.0, "penalty end");
    for q in [a(), b(), c(), QueryType::Iphone, QueryType::Other] {
        assert_ms(
            wait(&l, "hit", q.clone(), 100.0).await,
            566.0,
            &format!("hit {q}"),
        );
        assert_ms(
            wait(&l, "bystander", q.clone(), 100.0).await,
            0.0,
            &format!("bystander {q}"),
        );
    }
    // When the penalty ends, the scope is free again.
    assert_ms(
        wait(&l, "hit", QueryType::Other, 666.0).await,
        0.0,
        "after the penalty",
    );

    // A server hint that asks for longer than the ledger's penalty is honoured, never a shorter one.
    l.block_until(&req("hinted", a()), t(900.0)).await.unwrap();
    l.block_until(&req("hinted", a()), t(100.0)).await.unwrap();
    assert_ms(wait(&l, "hinted", b(), 0.0).await, 900.0, "hint");
}

#[tokio::test]
async fn an_egress_group_counts_every_account_that_leaves_from_it() {
    let db = fresh_db().await;
    let l = exact(&db.pool);
    let via = |account: &str| Request {
        query_type: QueryType::Other,
        account: account.into(),
        egress: Some("ip-1".into()),
    };
    for s in 0..75 {
        let account = if s % 2 == 0 { "x" } else { "y" };
        assert!(matches!(
            l.try_acquire(&via(account), Some(t(s as f64)))
                .await
                .unwrap(),
            Decision::Granted { .. }
        ));
    }
    // Neither account is full, but their shared IP is.
    match l.try_acquire(&via("z"), Some(t(75.0))).await.unwrap() {
        Decision::Wait { wait, .. } => assert_ms(wait.as_secs_f64(), 591.0, "egress"),
        other => panic!("expected a wait, got {other:?}"),
    }
    let usage = l
        .usage(&Scope::Egress("ip-1".into()), Some(t(75.0)))
        .await
        .unwrap();
    assert_eq!(usage.keys[0].used, 75);
    assert_eq!(usage.keys[0].recent[0], 75);
    assert_eq!(usage.keys[0].next_free, t(666.0));
}

/// A compressed profile for real-time tests: small caps, windows of a few seconds.
fn compressed() -> LimiterConfig {
    LimiterConfig {
        time_scale: 0.004,
        per_type_cap: 20,
        other_cap: 10,
        graphql_cap: 30,
        iphone_cap: 15,
        ..LimiterConfig::instaloader()
    }
}

#[derive(Debug, Clone)]
struct Recorded {
    scopes: Vec<String>,
    query_type: QueryType,
    at: DateTime<Utc>,
}

/// Acquirers on `pools` (one ledger each: separate processes in all but name) hammer random keys
/// until `for_how_long`; each refusal is slept once, then asked again.
async fn hammer(
    pools: &[PgPool],
    acquirers: usize,
    keys: Vec<Request>,
    for_how_long: Duration,
    seed: u64,
) -> Vec<Recorded> {
    let record: Arc<Mutex<Vec<Recorded>>> = Arc::default();
    let deadline = tokio::time::Instant::now() + for_how_long;
    let mut tasks = Vec::new();
    for i in 0..acquirers {
        let ledger = Ledger::new(
            pools[i % pools.len()].clone(),
            Profile::from_config(&compressed()),
        );
        let keys = keys.clone();
        let record = record.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed + i as u64);
            while tokio::time::Instant::now() < deadline {
                let request = keys[rng.random_range(0..keys.len())].clone();
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..15))).await;
                loop {
                    match ledger.try_acquire(&request, None).await.unwrap() {
                        Decision::Granted { at, .. } => {
                            record.lock().unwrap().push(Recorded {
                                scopes: ledger
                                    .profile()
                                    .scopes(&request)
                                    .iter()
                                    .map(Scope::key)
                                    .collect(),
                                query_type: request.query_type.clone(),
                                at,
                            });
                            break;
                        }
                        Decision::Wait { wait, .. } => {
                            if tokio::time::Instant::now() + wait > deadline {
                                // Past the end of the run: try another key instead.
                                break;
                            }
                            tokio::time::sleep(wait).await;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(record).unwrap().into_inner().unwrap()
}

/// The highest fill (grants / cap) any per-type window of any scope reached.
fn fullest_window(record: &[Recorded], profile: &Profile) -> f64 {
    let micros = |d: Duration| chrono::Duration::microseconds(d.as_micros() as i64);
    let mut best: f64 = 0.0;
    for g in record {
        for scope in &g.scopes {
            let w = profile.type_window(&g.query_type);
            let n = record
                .iter()
                .filter(|x| {
                    x.scopes.contains(scope)
                        && x.query_type == g.query_type
                        && x.at > g.at - micros(w.window)
                        && x.at <= g.at
                })
                .count();
            best = best.max(n as f64 / f64::from(w.cap));
        }
    }
    best
}

/// Checks every half-open window ending at a grant from the independent record.
fn assert_caps_hold(record: &[Recorded], profile: &Profile) {
    let mut by_scope: HashMap<&str, Vec<&Recorded>> = HashMap::new();
    for r in record {
        for s in &r.scopes {
            by_scope.entry(s.as_str()).or_default().push(r);
        }
    }
    let micros = |d: Duration| chrono::Duration::microseconds(d.as_micros() as i64);
    for (scope, grants) in by_scope {
        for g in &grants {
            let count = |filter: &dyn Fn(&Recorded) -> bool, window: Duration| {
                grants
                    .iter()
                    .filter(|x| filter(x) && x.at > g.at - micros(window) && x.at <= g.at)
                    .count() as u32
            };
            let w = profile.type_window(&g.query_type);
            let n = count(&|x: &Recorded| x.query_type == g.query_type, w.window);
            assert!(
                n <= w.cap,
                "{scope} {}: {n} > {} in a window",
                g.query_type,
                w.cap
            );
            if g.query_type.is_graphql() {
                let n = count(
                    &|x: &Recorded| x.query_type.is_graphql(),
                    profile.graphql.window,
                );
                assert!(n <= profile.graphql.cap, "{scope} graphql: {n}");
            }
            if g.query_type == QueryType::Iphone {
                let n = count(
                    &|x: &Recorded| x.query_type == QueryType::Iphone,
                    profile.iphone.window,
                );
                assert!(n <= profile.iphone.cap, "{scope} iphone: {n}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_acquirers_on_several_pools_never_overshoot_a_window() {
    let db = fresh_db().await;
    let mut pools = vec![db.pool.clone()];
    for _ in 0..2 {
        pools.push(
            db::connect_url(&db.url, 12, Duration::from_secs(10))
                .await
                .unwrap(),
        );
    }
    let profile = Profile::from_config(&compressed());
    for (round, acquirers) in [1usize, 9, 32].into_iter().enumerate() {
        // Fresh accounts and IP per round, so one round's windows do not throttle the next.
        let mut keys = Vec::new();
        for account in ["acct-a", "acct-b"] {
            for q in [a(), b(), c(), QueryType::Iphone, QueryType::Other] {
                keys.push(Request {
                    query_type: q,
                    account: format!("{account}-{round}"),
                    egress: Some(format!("ip-{round}")),
                });
            }
        }
        let record = hammer(
            &pools,
            acquirers,
            keys.clone(),
            Duration::from_secs(4),
            1000 * round as u64,
        )
        .await;
        assert!(!record.is_empty());
        assert_caps_hold(&record, &profile);
        if acquirers == 32 {
            // The busiest round must have filled some window, or the check above proved nothing.
            assert_eq!(
                fullest_window(&record, &profile),
                1.0,
                "round {round} filled no window"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_saturation_the_grant_rate_reaches_99_percent_of_the_cap() {
    let db = fresh_db().await;
    let mut pools = vec![db.pool.clone()];
    for _ in 0..3 {
        pools.push(
            db::connect_url(&db.url, 8, Duration::from_secs(10))
                .await
                .unwrap(),
        );
    }
    let profile = Profile::from_config(&compressed());
    let hot = vec![req("hot", QueryType::QueryHash("H".into()))];
    let mut record = hammer(&pools, 16, hot, Duration::from_secs(11), 7).await;
    assert_caps_hold(&record, &profile);
    record.sort_by_key(|r| r.at);
    let w = profile.per_type;
    let cap = w.cap as usize;
    assert!(record.len() >= 3 * cap, "only {} grants", record.len());
    // Each grant takes the slot freed by the grant `cap` before it: the ideal gap is
    // window + margin. The long-run rate is the ideal gap over the mean measured gap.
    let ideal = (w.window + w.margin).as_secs_f64();
    let gaps: Vec<f64> = (cap..record.len())
        .map(|i| {
            (record[i].at - record[i - cap].at)
                .num_microseconds()
                .unwrap() as f64
                / 1e6
        })
        .collect();
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    let rate = ideal / mean;
    assert!(
        rate >= 0.99,
        "grant rate {:.4} of the cap (mean gap {mean:.4}s, ideal {ideal:.4}s)",
        rate
    );
    // The hard bound: two grants `cap` apart never share a half-open window. (A gap may be shorter
    // than window + margin: the margin applies only when the window is full at the moment of asking,
    // reference V8.)
    let shortest = gaps.iter().cloned().fold(f64::INFINITY, f64::min);
    assert!(
        shortest >= w.window.as_secs_f64(),
        "gap {shortest} shorter than the window"
    );
}

#[tokio::test]
async fn the_limiter_sleeps_a_denial_once_and_counts_everything_by_class() {
    use trawl_shared::duration::HumanDuration;
    use trawl_shared::limiter::metrics::LimiterMetrics;
    use trawl_shared::limiter::{Limiter, ServerHints};

    let db = fresh_db().await;
    let config = LimiterConfig {
        time_scale: 0.002, // per-type window 1.32 s + 12 ms margin
        per_type_cap: 5,
        pacing_period: Some(HumanDuration::from_millis(1)),
        pacing_jitter: HumanDuration::from_millis(0),
        ..LimiterConfig::instaloader()
    };
    let metrics = Arc::new(LimiterMetrics::new().unwrap());
    let limiter = Limiter::new(db.pool.clone(), &config, metrics.clone());
    let request = req("paced", QueryType::QueryHash("secret-hash-value".into()));
    for _ in 0..5 {
        limiter.acquire(&request).await.unwrap();
    }
    let graphql = ["graphql"];
    assert_eq!(
        metrics.window_utilisation.with_label_values(&graphql).get(),
        1.0,
        "5 of 5"
    );
    let sixth = limiter.acquire(&request).await.unwrap();
    assert!(
        sixth.waited >= Duration::from_millis(1200),
        "{:?}",
        sixth.waited
    );
    assert_eq!(
        metrics.denials.with_label_values(&graphql).get(),
        1,
        "slept once, not polled"
    );
    assert_eq!(metrics.grants.with_label_values(&graphql).get(), 6);

    // A 429 whose server hint asks for longer than the ledger's penalty: the hint wins.
    let now = Utc::now();
    let hints = ServerHints {
        reset_at: Some(now + chrono::Duration::seconds(3600)),
        ..ServerHints::default()
    };
    let until = limiter.on_429(&request, &hints).await.unwrap();
    assert!(until >= now + chrono::Duration::seconds(3599), "{until}");
    match limiter
        .ledger()
        .try_acquire(&req("paced", QueryType::Other), None)
        .await
        .unwrap()
    {
        Decision::Wait { wait, .. } => assert!(wait > Duration::from_secs(3500)),
        other => panic!("expected the hinted block, got {other:?}"),
    }
    assert_eq!(metrics.responses_429.with_label_values(&graphql).get(), 1);

    // Labels come from the closed class set only: no account, no hash value.
    let text = trawl_shared::metrics::render(&[&metrics.registry]);
    assert!(
        !text.contains("secret-hash-value") && !text.contains("paced"),
        "{text}"
    );
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('{'))
    {
        let labels = &line[line.find('{').unwrap() + 1..line.find('}').unwrap()];
        for pair in labels.split(',') {
            let key = pair.split('=').next().unwrap();
            assert!(key == "class" || key == "le", "unexpected label in {line}");
        }
    }
}

#[tokio::test]
async fn prune_forgets_grants_older_than_the_history_and_keeps_the_rest() {
    let db = fresh_db().await;
    let l = exact(&db.pool);
    let now = Utc::now();
    for (account, age) in [("old", 7200), ("older", 3700), ("recent", 600)] {
        let at = now - chrono::Duration::seconds(age);
        let decision = l
            .try_acquire(&req(account, QueryType::Other), Some(at))
            .await
            .unwrap();
        assert!(matches!(decision, Decision::Granted { .. }), "{decision:?}");
    }
    assert_eq!(l.prune().await.unwrap(), 2);
    let left: Vec<String> = sqlx::query_scalar("SELECT scope FROM limiter_grants")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, vec!["account:recent".to_owned()]);
}

#[tokio::test]
async fn another_platforms_tiers_come_from_configuration_and_each_holds_its_own_cap() {
    let db = fresh_db().await;
    // No code: the shipped v1 tiers, one of them changed and one platform added in the file.
    let config = trawl_shared::config::Config::from_toml_str(
        r#"
        [limiter.platforms.v1.tiers.search]
        cap = 3
        window = "1h"
        margin = "30s"

        [limiter.platforms.forum.tiers.threads]
        cap = 2
        window = "5m"
        "#,
    )
    .unwrap();
    let profile = Profile::from_config(&config.limiter);
    let ledger = Ledger::new(db.pool.clone(), profile.clone());
    let search = QueryType::tier("v1", "search");
    let feed = QueryType::tier("v1", "feed");
    let threads = QueryType::tier("forum", "threads");
    assert_eq!(
        profile.type_window(&feed).cap,
        200,
        "the shipped tier is kept"
    );
    assert_eq!(profile.type_window(&search).cap, 3);
    assert!(
        profile.history >= Duration::from_secs(3630),
        "{:?}",
        profile.history
    );

    for at in [0.0, 10.0, 20.0] {
        grant(&ledger, "v1acct", search.clone(), at).await;
    }
    // The fourth waits until the first leaves the hour, plus the margin: 3630 - 30.
    assert_ms(
        wait(&ledger, "v1acct", search.clone(), 30.0).await,
        3600.0,
        "search",
    );
    // Other tiers, other accounts and Instagram's types are not touched by it.
    grant(&ledger, "v1acct", feed.clone(), 30.0).await;
    grant(&ledger, "other-acct", search.clone(), 30.0).await;
    grant(&ledger, "v1acct", QueryType::Other, 30.0).await;
    grant(&ledger, "v1acct", threads.clone(), 30.0).await;
    grant(&ledger, "v1acct", threads.clone(), 31.0).await;
    assert_ms(
        wait(&ledger, "v1acct", threads.clone(), 32.0).await,
        298.0,
        "threads",
    );
    grant(&ledger, "v1acct", threads, 330.0).await;
    grant(&ledger, "v1acct", search, 3630.0).await;

    // A tier nobody configured counts under the strictest Instagram window, not under none.
    let unknown = QueryType::tier("v1", "no_such_tier");
    assert!(!profile.knows(&unknown));
    assert_eq!(profile.type_window(&unknown), profile.other);
    assert_eq!(QueryType::from_key(&feed.key()), Some(feed));

    for (text, names) in [
        (
            "[limiter.platforms.qh.tiers.x]\ncap = 1\nwindow = \"1h\"",
            "qh",
        ),
        (
            "[limiter.platforms.v1.tiers.Feed]\ncap = 1\nwindow = \"1h\"",
            "Feed",
        ),
        (
            "[limiter.platforms.v1.tiers.feed]\ncap = 0\nwindow = \"1h\"",
            "cap",
        ),
        (
            "[limiter.platforms.v1.tiers.feed]\ncap = 1\nwindow = \"0s\"",
            "window",
        ),
        (
            "[limiter.platforms.v1.shared]\ntiers = [\"feeds\"]\ncap = 1\nwindow = \"1h\"",
            "\"feeds\" is not one of v1's tiers",
        ),
    ] {
        let refused = trawl_shared::config::Config::from_toml_str(text)
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("limiter.platforms") && refused.contains(names),
            "{refused}"
        );
    }
}

#[tokio::test]
async fn tiers_a_platform_names_as_shared_count_in_one_window_besides_their_own() {
    let db = fresh_db().await;
    // As Instagram's GraphQL types share the all-GraphQL window: `threads` and `posts` may send 5
    // each but 6 together in any 10 minutes; `search` counts only in its own.
    let config = trawl_shared::config::Config::from_toml_str(
        r#"
        [limiter.platforms.forum.tiers.threads]
        cap = 5
        window = "10m"
        [limiter.platforms.forum.tiers.posts]
        cap = 5
        window = "10m"
        [limiter.platforms.forum.tiers.search]
        cap = 5
        window = "10m"
        [limiter.platforms.forum.shared]
        tiers = ["threads", "posts"]
        cap = 6
        window = "20m"
        margin = "10s"
        "#,
    )
    .unwrap();
    let profile = Profile::from_config(&config.limiter);
    let ledger = Ledger::new(db.pool.clone(), profile.clone());
    let threads = QueryType::tier("forum", "threads");
    let posts = QueryType::tier("forum", "posts");
    let search = QueryType::tier("forum", "search");
    assert_eq!(profile.shared_window(&search), None);
    assert_eq!(profile.shared_window(&threads).map(|w| w.cap), Some(6));
    assert!(
        profile.history >= Duration::from_secs(1210),
        "{:?}",
        profile.history
    );
    for at in [0.0, 1.0, 2.0, 3.0] {
        grant(&ledger, "f", threads.clone(), at).await;
    }
    grant(&ledger, "f", posts.clone(), 4.0).await;
    grant(&ledger, "f", posts.clone(), 5.0).await;
    // Neither tier is full on its own (4 and 2 of 5), but together they are: the next waits
    // until the first grant leaves the shared 20 minutes, plus its margin (1210 - 6).
    assert_ms(
        wait(&ledger, "f", posts.clone(), 6.0).await,
        1204.0,
        "posts",
    );
    assert_ms(
        wait(&ledger, "f", threads.clone(), 6.0).await,
        1204.0,
        "threads",
    );
    // A tier outside the shared window and another account are not held back by it.
    grant(&ledger, "f", search.clone(), 6.0).await;
    grant(&ledger, "g", posts.clone(), 6.0).await;
    // `trawl limits` shows the shared window with the platform's cap.
    let usage = ledger
        .usage(&Scope::Account("f".into()), Some(t(7.0)))
        .await
        .unwrap();
    assert_eq!((usage.graphql_used, usage.graphql_cap), (6, 6));
    grant(&ledger, "f", posts, 1210.0).await;
}
