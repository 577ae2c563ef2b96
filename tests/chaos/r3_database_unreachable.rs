//! R3: the database unreachable for 60 s behind a network partition (a TCP proxy of the test's
//! own between every Trawl process and PostgreSQL; the test itself keeps a direct line).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::partition::Partition;
use crate::support::{Fleet, FleetOptions, posts_with_comments};
use crate::{Verdict, assert_no_panics, first_grant_after, long, own_cluster};

/// How long after its ledger grant a request may reach the simulator (pacing comes before the
/// grant, so only the hop from the worker to the simulator lies between them).
const GRANT_TO_SEND: f64 = 0.5;

async fn ready(http: &reqwest::Client, url: String) -> Option<bool> {
    let answer = http
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    Some(answer.status().is_success())
}

/// The readiness of the scheduler and of every worker: `(ready, not ready, no answer)`.
async fn readiness(fleet: &Fleet, http: &reqwest::Client) -> (usize, usize, usize) {
    let mut urls = vec![format!("http://127.0.0.1:{}/readyz", fleet.scheduler_port)];
    urls.extend(
        fleet
            .worker_ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}/readyz")),
    );
    let mut counts = (0, 0, 0);
    for url in urls {
        match ready(http, url).await {
            Some(true) => counts.0 += 1,
            Some(false) => counts.1 += 1,
            None => counts.2 += 1,
        }
    }
    counts
}

/// The limiter fails closed, proven from the two logs: per (scope, query type), the k-th request
/// the simulator received came no earlier than the k-th grant in the ledger. Times are Unix
/// seconds (the database's clock and the simulator's are the same machine's).
fn assert_every_request_had_a_grant(
    requests: &HashMap<(String, String), Vec<f64>>,
    grants: &HashMap<(String, String), Vec<f64>>,
) {
    for (key, sent) in requests {
        let granted = grants.get(key).map(Vec::as_slice).unwrap_or_default();
        assert!(
            granted.len() >= sent.len(),
            "{key:?}: {} requests reached Instagram, the ledger granted {}",
            sent.len(),
            granted.len()
        );
        for (k, (at, grant)) in sent.iter().zip(granted).enumerate() {
            assert!(
                *grant <= at + GRANT_TO_SEND,
                "{key:?}: request {k} reached Instagram at {at:.3} before its grant at {grant:.3}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_an_unreachable_database_stops_every_request_and_the_fleet_recovers() {
    let outage = Duration::from_secs(60);
    let (outages, profiles, time_scale) = if long() { (2, 20, 0.2) } else { (1, 10, 0.1) };
    let (cluster, direct) = own_cluster().await;
    let partition = Partition::start(([127, 0, 0, 1], cluster.port()).into()).await;
    // The fleet's processes reach PostgreSQL only through the partition; the test's own pool
    // (for its checks) goes straight to the server.
    let behind_partition = trawl_shared::testing::TestDb {
        url: cluster.url("postgres").replace(
            &format!(":{}/", cluster.port()),
            &format!(":{}/", partition.port),
        ),
        ..direct
    };
    assert_ne!(behind_partition.url, cluster.url("postgres"));
    // A time scale whose ledger history (an hour, scaled) outlasts the test, so that every grant
    // is still there for the proof at the end.
    let mut fleet = Fleet::start_on(
        FleetOptions {
            workers: 3,
            accounts: 3,
            time_scale,
            metrics_ports: true,
            ..FleetOptions::default()
        },
        behind_partition,
    )
    .await;
    let users = fleet.public_users_with_posts(profiles);
    let (posts, comments) = fleet.expected_posts_and_comments(&users);
    fleet.submit(posts_with_comments(&users)).await;
    let http = reqwest::Client::new();
    let clock: Value = http
        .get(format!("{}/__sim/clock", fleet.sim_url))
        .send()
        .await
        .expect("sim clock")
        .json()
        .await
        .expect("sim clock json");
    let sim_zero = clock["started_unix"].as_f64().expect("started_unix");

    let mut notes = Vec::new();
    let mut silent_spans = Vec::new();
    let mut expired_in_outages = 0;
    for round in 0..outages {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let active = fleet.active_jobs().await;
        assert!(active > 0, "round {round}: the crawl was still running");
        let cut_at: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(fleet.pool())
            .await
            .expect("now");
        partition.cut();
        let cut = Instant::now();

        // Well inside the outage, every process reports not ready (and answers at all).
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (up, down, silent) = readiness(&fleet, &http).await;
        assert_eq!(
            (up, silent),
            (0, 0),
            "round {round}: during the partition every /readyz answers 'not ready' \
             ({down} did); logs in {}",
            fleet.logs.display()
        );
        let mut last_readiness = (up, down, silent);
        while cut.elapsed() < outage {
            tokio::time::sleep(Duration::from_secs(5).min(outage.saturating_sub(cut.elapsed())))
                .await;
            if cut.elapsed() < outage - Duration::from_secs(3) {
                last_readiness = readiness(&fleet, &http).await;
                assert_eq!(
                    last_readiness.0, 0,
                    "round {round}: nobody is ready mid-outage"
                );
            }
        }
        if let Err(dead) = fleet.all_alive() {
            panic!(
                "{dead} during the partition; logs in {}",
                fleet.logs.display()
            );
        }
        let expired: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE state = 'running' AND lease_expires_at < now()",
        )
        .fetch_one(fleet.pool())
        .await
        .expect("count expired leases");
        expired_in_outages += expired;
        let healed_at: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(fleet.pool())
            .await
            .expect("now");
        partition.heal();
        let healed = Instant::now();
        silent_spans.push((
            cut_at.timestamp_micros() as f64 / 1e6,
            healed_at.timestamp_micros() as f64 / 1e6,
        ));

        // Recovery by itself: a new grant, then every process ready again.
        let resumed = first_grant_after(
            &fleet,
            healed_at,
            healed,
            Duration::from_secs(30),
            &format!("round {round}, after the network healed"),
        )
        .await;
        let all_ready = loop {
            let (up, ..) = readiness(&fleet, &http).await;
            if up == fleet.worker_count() + 1 {
                break healed.elapsed();
            }
            assert!(
                healed.elapsed() < Duration::from_secs(30),
                "round {round}: not every process is ready 30 s after the network healed"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        notes.push(format!(
            "outage {}: {expired} leases expired during it, not ready {}/{} processes, first \
             grant {:.2} s and all ready {:.2} s after healing",
            round + 1,
            last_readiness.1,
            fleet.worker_count() + 1,
            resumed.as_secs_f64(),
            all_ready.as_secs_f64()
        ));
    }

    fleet.wait_until_done(Duration::from_secs(300)).await;
    if let Err(dead) = fleet.all_alive() {
        panic!("{dead}; logs in {}", fleet.logs.display());
    }
    assert_no_panics(&fleet);
    let verdict = Verdict::of(&fleet, "true", &posts, Some(&comments)).await;
    verdict.assert_clean(&fleet);

    // Fail closed: nothing reached Instagram during the partition except what was granted
    // before it, and every request had a grant of its own.
    let mut requests: HashMap<(String, String), Vec<f64>> = HashMap::new();
    for entry in fleet.audit().await {
        let (Some(t), Some(query_type)) = (entry["t"].as_f64(), entry["query_type"].as_str())
        else {
            continue;
        };
        let scope = match entry["account"].as_str() {
            Some(a) => format!("account:{a}"),
            None => continue,
        };
        requests
            .entry((scope, query_type.to_owned()))
            .or_default()
            .push(sim_zero + t);
    }
    let during: usize = requests
        .values()
        .flatten()
        .filter(|&&at| {
            silent_spans
                .iter()
                .any(|&(cut, healed)| at > cut + GRANT_TO_SEND && at < healed)
        })
        .count();
    assert_eq!(
        during, 0,
        "requests reached Instagram while the ledger was unreachable"
    );
    let mut grants: HashMap<(String, String), Vec<f64>> = HashMap::new();
    let rows: Vec<(String, String, f64)> = sqlx::query_as(
        "SELECT scope, query_type, extract(epoch FROM granted_at)::float8 FROM limiter_grants",
    )
    .fetch_all(fleet.pool())
    .await
    .expect("grants");
    for (scope, query_type, at) in rows {
        grants.entry((scope, query_type)).or_default().push(at);
    }
    for times in requests.values_mut().chain(grants.values_mut()) {
        times.sort_by(f64::total_cmp);
    }
    assert_every_request_had_a_grant(&requests, &grants);

    // Fencing: the leases that expired in the partition were taken back by the rescuer and run
    // again; their old holders could not write (they gave up, or were refused: `job lease lost`).
    let fenced: usize = (0..fleet.worker_count())
        .map(|i| fleet.worker_log(i).matches("job lease lost").count())
        .sum();
    let retaken: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE attempt > 1")
        .fetch_one(fleet.pool())
        .await
        .expect("count retaken jobs");
    assert!(
        expired_in_outages > 0,
        "some lease expired during the partition"
    );
    assert!(
        retaken >= expired_in_outages,
        "every lease that expired in the partition was rescued and run again \
         ({retaken} of {expired_in_outages})"
    );
    notes.push(format!(
        "{retaken} jobs rescued and run again, {fenced} late writes refused by fencing; 0 \
         requests without a grant"
    ));
    verdict.record(
        &format!(
            "R3 database unreachable ({}× {} s)",
            outages,
            outage.as_secs()
        ),
        &notes.join("; "),
    );
    drop(fleet);
    drop(partition);
    drop(cluster);
}
