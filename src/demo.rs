//! `trawl demo`: everything on one machine with nothing but PostgreSQL's server binaries: a private
//! cluster, the schema, a scheduler on a free port, sample jobs submitted through the real API, and
//! live progress while they are worked.
//!
//! Until the worker and simulator land (issues 4 and 5), the jobs are worked by a *dry-run* leaser
//! that uses the real queue (lease, heartbeat-free short jobs, complete, fail) but fetches nothing;
//! the demo says so on screen.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};
use trawl_shared::config::Config;
use trawl_shared::db;
use trawl_shared::domain::JobKind;
use trawl_shared::duration::HumanDuration;
use trawl_shared::pgcluster::{ClusterError, Durability, PrivateCluster};
use trawl_shared::queue::{Failure, Queue, QueueSettings, QueueStats};
use trawl_shared::secret::Secret;
use trawl_shared::shutdown;

use crate::cli::DemoArgs;
use crate::client::{ApiClient, CliError};
use crate::jobs;

const USERS: [&str; 12] = [
    "natgeo",
    "nasa",
    "bbcnews",
    "unesco",
    "metmuseum",
    "britishmuseum",
    "nytimes",
    "wwf",
    "esa",
    "cern",
    "louvremuseum",
    "smithsonian",
];
const TAGS: [&str; 6] = [
    "archaeology",
    "astronomy",
    "birding",
    "streetart",
    "volcano",
    "fossils",
];

pub async fn run(args: DemoArgs, base: &Config) -> Result<(), CliError> {
    println!("Trawl demo: a private PostgreSQL, the scheduler, sample jobs.\n");

    println!(
        "[1/5] starting a private PostgreSQL cluster (initdb + pg_ctl, thrown away at the end)"
    );
    let cluster = tokio::task::spawn_blocking(|| PrivateCluster::start(Durability::Throwaway))
        .await
        .map_err(|e| CliError::Failure(format!("cluster setup panicked: {e}")))?
        .map_err(|e| match e {
            ClusterError::BinariesMissing | ClusterError::NoUnprivilegedUser => {
                CliError::Failure(format!("cannot run the demo: {e}"))
            }
            other => CliError::Failure(format!("cannot start PostgreSQL: {other}")),
        })?;
    println!("      PostgreSQL on 127.0.0.1:{}", cluster.port());
    let mut admin = PgConnection::connect(&cluster.url("postgres"))
        .await
        .map_err(|e| CliError::Failure(format!("cannot connect to the private cluster: {e}")))?;
    admin
        .execute("CREATE DATABASE trawl")
        .await
        .map_err(|e| CliError::Failure(format!("cannot create the demo database: {e}")))?;
    let _ = admin.close().await;
    let url = cluster.url("trawl");

    println!("[2/5] applying migrations");
    let pool = db::connect_url(&url, 10, Duration::from_secs(10))
        .await
        .map_err(|e| CliError::Failure(e.to_string()))?;
    db::migrate(&pool)
        .await
        .map_err(|e| CliError::Failure(e.to_string()))?;
    println!("      schema at version {}", db::required_schema_version());

    println!("[3/5] starting the scheduler");
    let token = format!("demo-{:032x}", rand::random::<u128>());
    let mut config = base.clone();
    config.database.url = Secret::new(url.clone());
    config.scheduler.api_token = Some(Secret::new(token.clone()));
    config.scheduler.maintenance_interval = HumanDuration::from_secs(1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| CliError::Failure(format!("cannot bind a port: {e}")))?;
    let address = listener
        .local_addr()
        .map_err(|e| CliError::Failure(e.to_string()))?;
    let (stop, signal) = shutdown::channel();
    let scheduler_config = config.clone();
    let scheduler =
        tokio::spawn(
            async move { trawl_scheduler::run(&scheduler_config, listener, signal).await },
        );
    let api_url = format!("http://{address}");
    println!("      API on {api_url}");
    let client = ApiClient::new(&api_url, Some(token.clone()), Duration::from_secs(10))?;
    wait_until_ready(&client).await?;

    println!("[4/5] submitting {} sample jobs through the API", args.jobs);
    let specs = sample_jobs(args.jobs);
    let answer: Value = client
        .post("/v1/jobs/batch", &json!({ "jobs": specs }))
        .await?;
    let created = answer["results"]
        .as_array()
        .map(|r| r.iter().filter(|s| s["created"] == true).count())
        .unwrap_or(0);
    println!("      {created} created");
    let again: Value = client
        .post(
            "/v1/jobs",
            &json!({"kind": "profile_posts", "target": "@NASA"}),
        )
        .await?;
    println!(
        "      submitting profile_posts @NASA again: created={} (dedup returns the active job {})",
        again["created"], again["job"]["id"]
    );
    match client
        .post::<_, Value>(
            "/v1/jobs",
            &json!({"kind": "profile", "target": "not a username"}),
        )
        .await
    {
        Err(e) => println!("      a malformed job is refused: {e}"),
        Ok(_) => println!("      (unexpected: a malformed job was accepted)"),
    }

    println!(
        "[5/5] working the queue with 4 DRY-RUN leasers (real leases and completions, no Instagram \
         requests: the worker arrives with issue 5)\n"
    );
    let queue = Queue::new(
        pool.clone(),
        QueueSettings {
            lease: Duration::from_secs(30),
            // Short backoff so the retried hashtag jobs finish within the demo.
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(2),
            ..QueueSettings::from(&config.queue)
        },
    );
    let leasers: Vec<_> = (0..4)
        .map(|i| tokio::spawn(dry_run_leaser(queue.clone(), format!("dry-run-{i}"))))
        .collect();
    jobs::watch(&client, Duration::from_millis(250), true).await?;
    for l in leasers {
        l.abort();
    }
    let stats: QueueStats = client.get("/v1/stats").await?;
    println!();
    let completed: i64 = stats
        .rows
        .iter()
        .filter(|r| r.state == trawl_shared::JobState::Completed)
        .map(|r| r.jobs)
        .sum();
    let failed: i64 = stats
        .rows
        .iter()
        .filter(|r| r.state == trawl_shared::JobState::Failed)
        .map(|r| r.jobs)
        .sum();
    println!(
        "done: {completed} completed, {failed} failed (hashtag jobs failed once on purpose and were \
         retried after a backoff)"
    );

    if args.keep_running {
        println!("\nThe scheduler keeps running. In another shell:");
        println!("  export TRAWL_CLIENT__URL={api_url}");
        println!("  export TRAWL_CLIENT__TOKEN={token}");
        println!("  trawl jobs stats");
        println!("  trawl submit profile_posts nasa");
        println!("Press Ctrl-C to stop.");
        trawl_shared::shutdown::os_signal().await;
    }
    stop.trigger();
    match scheduler.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("scheduler stopped with an error: {e}"),
        Err(e) => eprintln!("scheduler task failed: {e}"),
    }
    pool.close().await;
    drop(cluster);
    println!("stopped the scheduler and removed the private cluster.");
    Ok(())
}

async fn wait_until_ready(client: &ApiClient) -> Result<(), CliError> {
    let mut last = None;
    for _ in 0..50 {
        match client.get::<Value>("/v1/stats").await {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last.unwrap_or_else(|| CliError::Failure("scheduler did not start".into())))
}

fn sample_jobs(n: usize) -> Vec<Value> {
    let kinds = [
        JobKind::Profile,
        JobKind::ProfilePosts,
        JobKind::Followers,
        JobKind::HashtagPosts,
        JobKind::Stories,
    ];
    (0..n)
        .map(|i| {
            let kind = kinds[i % kinds.len()];
            let (names, round) = match kind {
                JobKind::HashtagPosts => (&TAGS[..], i / TAGS.len()),
                _ => (&USERS[..], i / USERS.len()),
            };
            let name = names[i % names.len()];
            let target = if round == 0 {
                name.to_owned()
            } else {
                format!("{name}{round}")
            };
            json!({ "kind": kind, "target": target, "priority": (i % 3) as i16 })
        })
        .collect()
}

/// Leases through the real queue and finishes each job after a short pause. Hashtag jobs fail once
/// with a retryable error, so the demo shows a retry with backoff.
async fn dry_run_leaser(queue: Queue, name: String) {
    let Ok(mut waiter) = queue.waiter().await else {
        return;
    };
    loop {
        let batch = match queue.lease(&name, 2, None).await {
            Ok(b) => b,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if batch.is_empty() {
            waiter.wait().await;
            continue;
        }
        for job in batch {
            tokio::time::sleep(Duration::from_millis(40 + rand::random::<u64>() % 80)).await;
            if job.kind == JobKind::HashtagPosts && job.attempt == 1 {
                let _ = queue
                    .fail(
                        &job.lease,
                        "dry run: simulated transient error",
                        Failure::Retryable,
                        job.attempt,
                    )
                    .await;
                continue;
            }
            let _ = queue.complete(&job.lease).await;
        }
    }
}
