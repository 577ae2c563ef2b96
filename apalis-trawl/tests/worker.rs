//! apalis workers (apalis's own `WorkerBuilder` and `Monitor`) on Trawl's queue, against a real
//! PostgreSQL database per test.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apalis_trawl::apalis_core::monitor::Monitor;
use apalis_trawl::apalis_core::task::data::Data;
use apalis_trawl::apalis_core::worker::builder::WorkerBuilder;
use apalis_trawl::{
    Config, JobLease, LimitLayer, PushError, TrawlBackend, TrawlJobError, TrawlSink, TrawlTask,
};
use chrono::{DateTime, Utc};
use futures_util::SinkExt;
use trawl_shared::config::LimiterConfig;
use trawl_shared::domain::JobOptions;
use trawl_shared::duration::HumanDuration;
use trawl_shared::limiter::metrics::LimiterMetrics;
use trawl_shared::limiter::{Limiter, QueryType, Request};
use trawl_shared::queue::{Queue, QueueError, QueueSettings};
use trawl_shared::testing::fresh_db;
use trawl_shared::{JobSpec, JobState};

fn spec(target: &str) -> JobSpec {
    JobSpec {
        kind: "profile".into(),
        target: target.into(),
        priority: None,
        run_at: None,
        max_attempts: None,
        unique_key: None,
        recrawl_every: None,
        options: None,
    }
}

fn settings() -> QueueSettings {
    QueueSettings {
        lease: Duration::from_secs(30),
        poll_interval: Duration::from_millis(100),
        ..QueueSettings::default()
    }
}

fn config() -> Config {
    Config::default().poll_interval(Duration::from_millis(50))
}

async fn submit(queue: &Queue, targets: impl IntoIterator<Item = String>) -> Vec<i64> {
    let sink = TrawlSink::new(queue.clone());
    let specs = targets.into_iter().map(|t| spec(&t)).collect();
    sink.push_many(specs)
        .await
        .expect("submitting test jobs")
        .into_iter()
        .map(|s| s.id)
        .collect()
}

async fn states(queue: &Queue) -> HashMap<JobState, i64> {
    sqlx::query_as::<_, (JobState, i64)>("SELECT state, count(*) FROM jobs GROUP BY state")
        .fetch_all(queue.pool())
        .await
        .expect("counting jobs by state")
        .into_iter()
        .collect()
}

/// Waits until `done` holds, checking every 50 ms, for at most `limit`.
async fn wait_for<F, Fut>(limit: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type Runs = Arc<Mutex<HashMap<i64, u32>>>;

async fn count_run(task: TrawlTask, runs: Data<Runs>) -> Result<(), TrawlJobError> {
    // A yield between reading and finishing widens the window in which a double lease would show.
    tokio::task::yield_now().await;
    *runs.lock().expect("runs lock").entry(task.id).or_default() += 1;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_complete_every_job_exactly_once() {
    let db = fresh_db().await;
    let queue = Queue::new(db.pool.clone(), settings());
    let ids = submit(&queue, (0..300).map(|i| format!("user{i}"))).await;
    let runs: Runs = Arc::default();

    let monitor = {
        let queue = queue.clone();
        let runs = runs.clone();
        Monitor::new().register_n(4, move |index, _restarts| {
            WorkerBuilder::new(format!("apalis-{index}"))
                .backend(TrawlBackend::<TrawlTask>::new(
                    queue.clone(),
                    config().batch_size(7),
                ))
                .data(runs.clone())
                .build(count_run)
        })
    };
    let finished = {
        let queue = queue.clone();
        async move {
            wait_for(Duration::from_secs(60), || async {
                states(&queue).await.get(&JobState::Completed) == Some(&300)
            })
            .await;
            Ok(())
        }
    };
    monitor
        .run_with_signal(finished)
        .await
        .expect("monitor runs and stops");

    assert_eq!(
        states(&queue).await,
        HashMap::from([(JobState::Completed, 300)])
    );
    let runs = runs.lock().expect("runs lock").clone();
    assert_eq!(runs.len(), ids.len(), "every job ran");
    for id in ids {
        assert_eq!(runs.get(&id), Some(&1), "job {id} ran exactly once");
    }
    let attempts: Vec<i32> = sqlx::query_scalar("SELECT DISTINCT attempt FROM jobs")
        .fetch_all(&db.pool)
        .await
        .expect("reading attempts");
    assert_eq!(attempts, vec![1], "no job was leased twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_job_is_rescued_and_its_late_acknowledgement_is_fenced() {
    let db = fresh_db().await;
    let queue = Queue::new(
        db.pool.clone(),
        QueueSettings {
            lease: Duration::from_secs(1),
            ..settings()
        },
    );
    let [id] = submit(&queue, ["victim".to_owned()]).await[..] else {
        panic!("one job submitted");
    };

    // The handler reports its lease and then never finishes: the worker dies holding the job.
    let (lease_tx, mut lease_rx) = tokio::sync::mpsc::unbounded_channel::<JobLease>();
    async fn hang(
        _task: TrawlTask,
        lease: Data<JobLease>,
        tx: Data<tokio::sync::mpsc::UnboundedSender<JobLease>>,
    ) -> Result<(), TrawlJobError> {
        let _ = tx.send((*lease).clone());
        std::future::pending().await
    }
    let doomed = WorkerBuilder::new("doomed")
        .backend(TrawlBackend::<TrawlTask>::new(queue.clone(), config()))
        .data(lease_tx)
        .build(hang);
    let doomed = tokio::spawn(doomed.run());
    let old = tokio::time::timeout(Duration::from_secs(10), lease_rx.recv())
        .await
        .expect("the doomed worker leases the job")
        .expect("lease reported");
    assert_eq!(old.lease.job_id, id);
    doomed.abort();
    let _ = doomed.await;

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let report = queue.rescue_expired().await.expect("rescue pass");
    assert_eq!(report.requeued, 1);
    let rescued = queue.get(id).await.expect("read job").expect("job exists");
    assert_eq!(rescued.state, JobState::Queued);

    // The dead worker's acknowledgement, arriving late, changes nothing.
    match queue.complete(&old.lease).await {
        Err(QueueError::LeaseLost { job_id }) => assert_eq!(job_id, id),
        other => panic!("a late completion must be fenced, got {other:?}"),
    }
    let after = queue.get(id).await.expect("read job").expect("job exists");
    assert_eq!(after, rescued, "the fenced write changed the row");

    // Another worker finishes it, on its second attempt.
    let runs: Runs = Arc::default();
    let rescuer = WorkerBuilder::new("rescuer")
        .backend(TrawlBackend::<TrawlTask>::new(queue.clone(), config()))
        .data(runs.clone())
        .build(count_run);
    let rescuer = tokio::spawn(rescuer.run());
    wait_for(Duration::from_secs(10), || async {
        states(&queue).await.get(&JobState::Completed) == Some(&1)
    })
    .await;
    rescuer.abort();
    let done = queue.get(id).await.expect("read job").expect("job exists");
    assert_eq!(done.attempt, 2);
    assert_eq!(runs.lock().expect("runs lock").get(&id), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_while_its_handler_runs_stops_the_handler_and_stays_cancelled() {
    let db = fresh_db().await;
    let queue = Queue::new(
        db.pool.clone(),
        QueueSettings {
            // Heartbeats every 300 ms, so the lost lease is noticed quickly.
            lease: Duration::from_millis(900),
            ..settings()
        },
    );
    let [id] = submit(&queue, ["cancelled".to_owned()]).await[..] else {
        panic!("one job submitted");
    };
    /// Records whether the handler's future was dropped before it finished.
    struct DroppedEarly(Arc<Mutex<Option<bool>>>);
    impl Drop for DroppedEarly {
        fn drop(&mut self) {
            if let Ok(mut d) = self.0.lock() {
                d.get_or_insert(true);
            }
        }
    }
    type Outcome = Arc<Mutex<Option<bool>>>;
    async fn slow(_task: TrawlTask, outcome: Data<Outcome>) -> Result<(), TrawlJobError> {
        let guard = DroppedEarly((*outcome).clone());
        tokio::time::sleep(Duration::from_secs(5)).await;
        if let Ok(mut d) = guard.0.lock() {
            *d = Some(false);
        }
        Ok(())
    }
    let outcome: Outcome = Arc::default();
    let worker = WorkerBuilder::new("cancelled")
        .backend(TrawlBackend::<TrawlTask>::new(queue.clone(), config()))
        .data(outcome.clone())
        .build(slow);
    let worker = tokio::spawn(worker.run());
    wait_for(Duration::from_secs(10), || async {
        states(&queue).await.get(&JobState::Running) == Some(&1)
    })
    .await;
    queue.cancel(id).await.expect("cancel the running job");
    wait_for(Duration::from_secs(3), || async {
        outcome.lock().map(|o| o.is_some()).unwrap_or(false)
    })
    .await;
    assert_eq!(
        *outcome.lock().expect("outcome lock"),
        Some(true),
        "the handler was stopped, not run to the end"
    );
    let job = queue.get(id).await.expect("read job").expect("job exists");
    assert_eq!(job.state, JobState::Cancelled);
    worker.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_backs_off_durably_and_is_not_leased_before_its_time() {
    let db = fresh_db().await;
    let queue = Queue::new(
        db.pool.clone(),
        QueueSettings {
            retry_base: Duration::from_secs(2),
            ..settings()
        },
    );
    let [id] = submit(&queue, ["flaky".to_owned()]).await[..] else {
        panic!("one job submitted");
    };
    type Calls = Arc<Mutex<Vec<(i32, DateTime<Utc>)>>>;
    async fn flaky(task: TrawlTask, calls: Data<Calls>) -> Result<(), TrawlJobError> {
        calls
            .lock()
            .expect("calls lock")
            .push((task.attempt, Utc::now()));
        if task.attempt == 1 {
            return Err(TrawlJobError::Retry("flaky".into()));
        }
        Ok(())
    }
    let calls: Calls = Arc::default();
    let worker = WorkerBuilder::new("retrier")
        .backend(TrawlBackend::<TrawlTask>::new(queue.clone(), config()))
        .data(calls.clone())
        .build(flaky);
    let worker = tokio::spawn(worker.run());

    wait_for(Duration::from_secs(10), || async {
        queue
            .get(id)
            .await
            .ok()
            .flatten()
            .is_some_and(|j| j.last_error.is_some())
    })
    .await;
    let backing_off = queue.get(id).await.expect("read job").expect("job exists");
    let db_now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&db.pool)
        .await
        .expect("database clock");
    assert_eq!(backing_off.state, JobState::Queued);
    assert_eq!(backing_off.attempt, 1, "the failed attempt is counted");
    assert_eq!(backing_off.last_error.as_deref(), Some("flaky"));
    // retry_base 2 s with ±25% jitter: at least 1.5 s after the failure.
    assert!(
        backing_off.run_at > db_now + chrono::Duration::milliseconds(1000),
        "run_at {} is not in the future of {db_now}",
        backing_off.run_at
    );

    wait_for(Duration::from_secs(10), || async {
        states(&queue).await.get(&JobState::Completed) == Some(&1)
    })
    .await;
    worker.abort();
    let done = queue.get(id).await.expect("read job").expect("job exists");
    assert_eq!(done.attempt, 2);
    let attempted_at = done.attempted_at.expect("second attempt recorded");
    assert!(
        attempted_at >= backing_off.run_at,
        "leased again at {attempted_at}, before its run_at {}",
        backing_off.run_at
    );
    let calls = calls.lock().expect("calls lock").clone();
    assert_eq!(
        calls.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![1, 2],
        "the handler saw Trawl's attempt numbers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_job_fails_permanently_and_the_worker_goes_on() {
    let db = fresh_db().await;
    let queue = Queue::new(db.pool.clone(), settings());
    // A handler that requires `max_items`: a job without it cannot be decoded into its type.
    #[derive(Debug, serde::Deserialize)]
    struct Bounded {
        id: i64,
        options: BoundedOptions,
    }
    #[derive(Debug, serde::Deserialize)]
    struct BoundedOptions {
        max_items: u64,
    }
    let sink = TrawlSink::new(queue.clone());
    let mut unbounded = spec("unbounded");
    unbounded.priority = Some(10);
    let bad = sink.push(unbounded).await.expect("submit").id;
    let mut bounded = spec("bounded");
    bounded.options = Some(JobOptions {
        max_items: Some(5),
        ..JobOptions::default()
    });
    let good = sink.push(bounded).await.expect("submit").id;

    type Seen = Arc<Mutex<Vec<(i64, u64)>>>;
    async fn handle(task: Bounded, seen: Data<Seen>) -> Result<(), TrawlJobError> {
        seen.lock()
            .expect("seen lock")
            .push((task.id, task.options.max_items));
        Ok(())
    }
    let seen: Seen = Arc::default();
    // One job per lease, so the bad job is alone in its batch and is the first one leased.
    let worker = WorkerBuilder::new("strict")
        .backend(TrawlBackend::<Bounded>::new(
            queue.clone(),
            config().batch_size(1),
        ))
        .data(seen.clone())
        .build(handle);
    let worker = tokio::spawn(worker.run());
    wait_for(Duration::from_secs(10), || async {
        states(&queue).await.get(&JobState::Completed) == Some(&1)
    })
    .await;
    worker.abort();

    assert_eq!(*seen.lock().expect("seen lock"), vec![(good, 5)]);
    let failed = queue.get(bad).await.expect("read job").expect("job exists");
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.attempt, 1, "failed at its first attempt, no retry");
    let reason = failed.last_error.expect("a reason");
    assert!(
        reason.contains("cannot decode") && reason.contains("max_items"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limiter_layer_holds_the_window_and_snoozes_the_excess() {
    let db = fresh_db().await;
    let queue = Queue::new(db.pool.clone(), settings());
    const CAP: u32 = 4;
    // 660 s × 0.01: a 6.6 s window (plus 60 ms margin) for `other`, four grants in it. Pacing is
    // made negligible so that only the ledger decides.
    let limits = LimiterConfig {
        time_scale: 0.01,
        other_cap: CAP,
        pacing_burst: 100,
        pacing_period: Some(HumanDuration(Duration::from_micros(100))),
        pacing_jitter: HumanDuration(Duration::ZERO),
        ..LimiterConfig::default()
    };
    let window = Duration::from_millis(6600);
    let limiter = Arc::new(Limiter::new(
        db.pool.clone(),
        &limits,
        Arc::new(LimiterMetrics::new().expect("limiter metrics")),
    ));
    let ids = submit(&queue, (0..10).map(|i| format!("limited{i}"))).await;

    type Granted = Arc<Mutex<Vec<Instant>>>;
    async fn crawl(_task: TrawlTask, granted: Data<Granted>) -> Result<(), TrawlJobError> {
        granted.lock().expect("granted lock").push(Instant::now());
        Ok(())
    }
    let granted: Granted = Arc::default();
    let started = Instant::now();
    let worker = WorkerBuilder::new("limited")
        .backend(TrawlBackend::<TrawlTask>::new(queue.clone(), config()))
        .data(granted.clone())
        .layer(LimitLayer::new(
            limiter,
            Duration::from_millis(200),
            |_task: &TrawlTask| Request {
                query_type: QueryType::Other,
                account: "anonymous".into(),
                egress: None,
            },
        ))
        .build(crawl);
    let worker = tokio::spawn(worker.run());

    // The first window fills at once; the rest are snoozed, not held.
    wait_for(Duration::from_secs(5), || async {
        let s = states(&queue).await;
        s.get(&JobState::Completed) == Some(&i64::from(CAP))
            && s.get(&JobState::Queued) == Some(&(10 - i64::from(CAP)))
    })
    .await;
    let snoozed: Vec<(i32, bool)> = sqlx::query_as(
        "SELECT attempt, run_at > now() FROM jobs WHERE state = 'queued' ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .expect("reading snoozed jobs");
    assert!(
        snoozed
            .iter()
            .all(|&(attempt, later)| attempt == 0 && later),
        "snoozed jobs wait for the window and keep their attempts: {snoozed:?}"
    );

    // The next window lets the snoozed jobs through, never more than the cap at a time.
    wait_for(Duration::from_secs(20), || async {
        states(&queue).await.get(&JobState::Completed) >= Some(&(2 * i64::from(CAP)))
    })
    .await;
    worker.abort();
    let runs = granted.lock().expect("granted lock").len();
    // The ledger's own record of its grants, on the database clock.
    let grants: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT granted_at FROM limiter_grants WHERE query_type = 'other' ORDER BY granted_at",
    )
    .fetch_all(&db.pool)
    .await
    .expect("reading the ledger's grants");
    assert!(runs >= 2 * CAP as usize);
    assert_eq!(grants.len(), runs, "one grant per handler run");
    for pair in grants.windows(CAP as usize + 1) {
        let spread = (pair[CAP as usize] - pair[0])
            .to_std()
            .expect("grants in order");
        assert!(
            spread >= window,
            "{} grants within {spread:?}, under the {window:?} window",
            CAP + 1
        );
    }
    assert!(started.elapsed() >= window);
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'failed'")
        .fetch_one(&db.pool)
        .await
        .expect("counting failed jobs");
    assert_eq!(failed, 0);
    assert_eq!(ids.len(), 10);
}

#[tokio::test]
async fn the_sink_validates_and_deduplicates_like_the_api() {
    let db = fresh_db().await;
    let queue = Queue::new(db.pool.clone(), settings());
    let mut sink = TrawlSink::new(queue.clone());

    let first = sink.push(spec("alice")).await.expect("a valid job");
    assert!(first.created);
    let again = sink.push(spec("@alice")).await.expect("the same job again");
    assert_eq!((again.id, again.created), (first.id, false));

    match sink.push(spec("not a username!")).await {
        Err(PushError::Invalid { index: 0, source }) => assert_eq!(source.field, "target"),
        other => panic!("an invalid target must be refused, got {other:?}"),
    }
    let mut bad_kind = spec("bob");
    bad_kind.kind = "nonsense".into();
    match sink.push_many(vec![spec("carol"), bad_kind]).await {
        Err(PushError::Invalid { index: 1, source }) => assert_eq!(source.field, "kind"),
        other => panic!("an unknown kind must be refused, got {other:?}"),
    }
    let carol: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE target = 'carol'")
        .fetch_one(&db.pool)
        .await
        .expect("counting carol's jobs");
    assert_eq!(carol, 0, "nothing of a refused batch is submitted");

    // The `Sink` side: buffered, then submitted in one statement on flush.
    sink.feed(spec("dave")).await.expect("buffered");
    sink.feed(spec("erin")).await.expect("buffered");
    sink.flush().await.expect("flushed");
    let submitted = sink.take_submitted();
    assert_eq!(submitted.len(), 2);
    assert!(submitted.iter().all(|s| s.created));
    assert_eq!(states(&queue).await.get(&JobState::Queued), Some(&3));
}
