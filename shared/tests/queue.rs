//! The queue against a real PostgreSQL: a fresh database per test.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use trawl_shared::db;
use trawl_shared::domain::{JobKind, JobSpec, JobState, NewJob};
use trawl_shared::queue::{
    Checkpoint, FailOutcome, Failure, Lease, LeasedJob, Queue, QueueError, QueueSettings,
};
use trawl_shared::testing::{TestDb, fresh_db};

fn settings() -> QueueSettings {
    QueueSettings {
        lease: Duration::from_secs(60),
        retry_base: Duration::from_secs(10),
        retry_max: Duration::from_secs(600),
        default_max_attempts: 3,
        poll_interval: Duration::from_millis(200),
    }
}

fn job(kind: &str, target: &str) -> NewJob {
    JobSpec::new(kind, target).validate(3).unwrap()
}

async fn queue_with(settings: QueueSettings) -> (TestDb, Queue) {
    let db = fresh_db().await;
    let queue = Queue::new(db.pool.clone(), settings);
    (db, queue)
}

async fn state_of(queue: &Queue, id: i64) -> JobState {
    queue.get(id).await.unwrap().unwrap().state
}

/// A queue whose leases last `lease`, holding one job that `worker-a` has leased.
async fn one_leased_job(lease: Duration, kind: &str) -> (TestDb, Queue, LeasedJob) {
    let (db, queue) = queue_with(QueueSettings {
        lease,
        ..settings()
    })
    .await;
    queue.submit(&job(kind, "natgeo")).await.unwrap();
    let leased = queue.lease("worker-a", 1, None).await.unwrap().remove(0);
    (db, queue, leased)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_leasers_drain_ten_thousand_jobs_each_exactly_once() {
    let (db, queue) = queue_with(settings()).await;
    let jobs: Vec<NewJob> = (0..10_000)
        .map(|i| job("profile", &format!("user_{i}")))
        .collect();
    let submitted = queue.submit_many(&jobs).await.unwrap();
    assert!(submitted.iter().all(|s| s.created));

    // job id -> leaser currently holding it; a second holder is a violation.
    let held: Arc<Mutex<HashMap<i64, usize>>> = Arc::default();
    let completions: Arc<Mutex<HashMap<i64, u32>>> = Arc::default();
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for leaser in 0..16 {
        let queue = queue.clone();
        let held = held.clone();
        let completions = completions.clone();
        let violations = violations.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let batch = queue
                    .lease(&format!("leaser-{leaser}"), 25, None)
                    .await
                    .unwrap();
                if batch.is_empty() {
                    break;
                }
                {
                    let mut held = held.lock().unwrap();
                    for j in &batch {
                        if let Some(other) = held.insert(j.lease.job_id, leaser) {
                            violations.lock().unwrap().push(format!(
                                "job {} held by {other} and {leaser}",
                                j.lease.job_id
                            ));
                        }
                    }
                }
                let leases: Vec<_> = batch.iter().map(|j| j.lease).collect();
                // Release our claim in the tracker before the database can hand the job on.
                {
                    let mut held = held.lock().unwrap();
                    for l in &leases {
                        held.remove(&l.job_id);
                    }
                }
                let done = queue.complete_many(&leases).await.unwrap();
                let mut completions = completions.lock().unwrap();
                for id in done {
                    *completions.entry(id).or_default() += 1;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        violations.lock().unwrap().is_empty(),
        "{:?}",
        violations.lock().unwrap()
    );
    {
        let completions = completions.lock().unwrap();
        assert_eq!(completions.len(), 10_000);
        assert!(completions.values().all(|&n| n == 1));
    }
    let (completed, attempts_ok): (i64, bool) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'completed'), bool_and(attempt = 1) FROM jobs",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(completed, 10_000);
    assert!(attempts_ok, "every job was leased exactly once");
}

/// Every write a lease holder can make is refused with `LeaseLost` (fencing); the callers check
/// that nothing was written.
async fn assert_every_write_is_refused(queue: &Queue, lease: &Lease) {
    let late = Checkpoint {
        cursor: Some("late".into()),
        items: 99,
        pages: 9,
        ..Checkpoint::default()
    };
    let lost = |r: Result<(), QueueError>, what: &str| {
        assert!(
            matches!(r, Err(QueueError::LeaseLost { .. })),
            "{what} with a lost lease: {r:?}"
        );
    };
    lost(queue.heartbeat(lease).await.map(drop), "heartbeat");
    lost(
        queue.checkpoint(queue.pool(), lease, &late).await,
        "checkpoint",
    );
    lost(queue.complete(lease).await, "complete");
    lost(
        queue
            .fail(lease, "late", Failure::Permanent, 1)
            .await
            .map(drop),
        "fail",
    );
    lost(
        queue.snooze(lease, Duration::from_secs(5)).await.map(drop),
        "snooze",
    );
    lost(queue.release(lease).await, "release");
}

#[tokio::test]
async fn an_expired_lease_is_rescued_and_the_old_holder_is_fenced_out() {
    let (_db, queue, first) = one_leased_job(Duration::from_millis(300), "profile_posts").await;
    let id = first.lease.job_id;
    assert_eq!(first.attempt, 1);
    assert_eq!(first.checkpoint, None);
    let progress = Checkpoint {
        cursor: Some("QVFDcursor2".into()),
        items: 24,
        pages: 2,
        subject_id: Some("1234".into()),
        page_length: Some(25),
        done: false,
    };
    queue
        .checkpoint(queue.pool(), &first.lease, &progress)
        .await
        .unwrap();

    // worker-a stops heartbeating; the rescuer gives the job back.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let report = queue.rescue_expired().await.unwrap();
    assert_eq!(report.requeued, 1);
    assert_eq!(state_of(&queue, id).await, JobState::Queued);

    let second = queue.lease("worker-b", 1, None).await.unwrap().remove(0);
    assert_eq!(second.attempt, 2);
    assert_eq!(
        second.checkpoint.as_ref(),
        Some(&progress),
        "resumes from the checkpoint"
    );

    assert_every_write_is_refused(&queue, &first.lease).await;
    let row = queue.get(id).await.unwrap().unwrap();
    assert_eq!(row.state, JobState::Running);
    assert_eq!(row.lease_owner.as_deref(), Some("worker-b"));
    assert_eq!(
        row.checkpoint,
        Some(serde_json::to_value(&progress).unwrap())
    );

    queue.complete(&second.lease).await.unwrap();
    assert_eq!(state_of(&queue, id).await, JobState::Completed);
}

/// Design invariant 4 holds before the rescuer runs too: a lease that expired on the database
/// clock cannot be revived by a late heartbeat nor write anything (a worker back from a network
/// partition longer than its lease), and the rescuer then requeues the job.
#[tokio::test]
async fn an_expired_lease_writes_nothing_even_before_the_rescuer_runs() {
    let (_db, queue, leased) = one_leased_job(Duration::from_millis(300), "profile_posts").await;
    let id = leased.lease.job_id;
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_every_write_is_refused(&queue, &leased.lease).await;
    let row = queue.get(id).await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.checkpoint),
        (JobState::Running, None),
        "nothing written"
    );
    assert_eq!(queue.rescue_expired().await.unwrap().requeued, 1);
    assert_eq!(state_of(&queue, id).await, JobState::Queued);
}

#[tokio::test]
async fn a_heartbeat_keeps_a_lease_from_being_rescued() {
    let (_db, queue, leased) = one_leased_job(Duration::from_millis(400), "profile").await;
    let id = leased.lease.job_id;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        queue.heartbeat(&leased.lease).await.unwrap();
        assert_eq!(queue.rescue_expired().await.unwrap().requeued, 0);
    }
    assert_eq!(state_of(&queue, id).await, JobState::Running);
}

#[tokio::test]
async fn snooze_keeps_attempts_retry_uses_them_and_backs_off_until_failed() {
    let (db, queue) = queue_with(settings()).await;
    let id = queue
        .submit(&job("followers", "somebody"))
        .await
        .unwrap()
        .id;

    // Snooze twice: the attempt count does not move.
    for _ in 0..2 {
        let j = queue.lease("w", 1, None).await.unwrap().remove(0);
        assert_eq!(j.attempt, 1);
        queue.snooze(&j.lease, Duration::ZERO).await.unwrap();
        assert_eq!(queue.get(id).await.unwrap().unwrap().attempt, 0);
    }
    // A snooze into the future hides the job until then.
    let j = queue.lease("w", 1, None).await.unwrap().remove(0);
    let run_at = queue
        .snooze(&j.lease, Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(queue.lease("w", 1, None).await.unwrap().is_empty());
    let db_now: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!((run_at - db_now).num_seconds() >= 3590);
    sqlx::query("UPDATE jobs SET run_at = now() WHERE id = $1")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();

    // Three retryable failures with max_attempts = 3: two retries with growing backoff, then failed.
    let mut previous_delay = 0.0;
    for attempt in 1..=3 {
        let j = queue.lease("w", 1, None).await.unwrap().remove(0);
        assert_eq!(j.attempt, attempt);
        let outcome = queue
            .fail(
                &j.lease,
                &format!("boom {attempt}"),
                Failure::Retryable,
                j.attempt,
            )
            .await
            .unwrap();
        if attempt < 3 {
            let FailOutcome::RetryAt(at) = outcome else {
                panic!("attempt {attempt} should retry, got {outcome:?}");
            };
            let now: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
                .fetch_one(&db.pool)
                .await
                .unwrap();
            let delay = (at - now).num_milliseconds() as f64 / 1000.0;
            let nominal = 10.0 * 2f64.powi(attempt - 1);
            assert!(
                delay >= nominal * 0.7 && delay <= nominal * 1.3,
                "delay {delay}"
            );
            assert!(
                delay > previous_delay,
                "backoff grows: {delay} after {previous_delay}"
            );
            previous_delay = delay;
            assert!(
                queue.lease("w", 1, None).await.unwrap().is_empty(),
                "backing off"
            );
            sqlx::query("UPDATE jobs SET run_at = now() WHERE id = $1")
                .bind(id)
                .execute(&db.pool)
                .await
                .unwrap();
        } else {
            assert_eq!(outcome, FailOutcome::Failed);
        }
    }
    let row = queue.get(id).await.unwrap().unwrap();
    assert_eq!(row.state, JobState::Failed);
    assert_eq!(row.attempt, 3);
    assert_eq!(row.last_error.as_deref(), Some("boom 3"));
    assert!(row.finished_at.is_some());

    // A user retry queues it again with fresh attempts.
    let retried = queue.retry(id).await.unwrap();
    assert_eq!((retried.state, retried.attempt), (JobState::Queued, 0));
    assert!(matches!(
        queue.retry(id).await,
        Err(QueueError::WrongState {
            state: JobState::Queued,
            ..
        })
    ));
}

#[tokio::test]
async fn a_permanent_failure_fails_at_once() {
    let (_db, queue) = queue_with(settings()).await;
    let id = queue.submit(&job("profile", "ghost")).await.unwrap().id;
    let j = queue.lease("w", 1, None).await.unwrap().remove(0);
    let outcome = queue
        .fail(
            &j.lease,
            "404: profile does not exist",
            Failure::Permanent,
            j.attempt,
        )
        .await
        .unwrap();
    assert_eq!(outcome, FailOutcome::Failed);
    let row = queue.get(id).await.unwrap().unwrap();
    assert_eq!((row.state, row.attempt), (JobState::Failed, 1));
    assert_eq!(
        row.last_error.as_deref(),
        Some("404: profile does not exist")
    );
}

#[tokio::test]
async fn the_same_unique_key_while_active_returns_the_existing_job() {
    let (db, queue) = queue_with(settings()).await;
    let first = queue.submit(&job("profile_posts", "natgeo")).await.unwrap();
    assert!(first.created);
    // Same target in other case: same key after normalisation.
    let again = queue
        .submit(&job("profile_posts", "@NatGeo"))
        .await
        .unwrap();
    assert_eq!((again.id, again.created), (first.id, false));

    // Still deduplicated while running; a batch with repeats inside it creates one job.
    let leased = queue.lease("w", 1, None).await.unwrap().remove(0);
    let batch = queue
        .submit_many(&[
            job("profile_posts", "natgeo"),
            job("profile", "natgeo"),
            job("profile", "natgeo"),
        ])
        .await
        .unwrap();
    assert_eq!((batch[0].id, batch[0].created), (first.id, false));
    assert!(batch[1].created);
    assert_eq!((batch[2].id, batch[2].created), (batch[1].id, false));
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(total, 2);

    // Once finished, the key is free for a new crawl.
    queue.complete(&leased.lease).await.unwrap();
    let fresh = queue.submit(&job("profile_posts", "natgeo")).await.unwrap();
    assert!(fresh.created);
    assert_ne!(fresh.id, first.id);

    // Retrying the finished job now would make a second active job with that key: refused.
    assert!(matches!(
        queue.retry(first.id).await,
        Err(QueueError::WrongState { .. })
    ));
    queue.cancel(fresh.id).await.unwrap();
    let other = queue.submit(&job("profile_posts", "natgeo")).await.unwrap();
    match queue.retry(fresh.id).await {
        Err(QueueError::ActiveDuplicate { existing_id, .. }) => assert_eq!(existing_id, other.id),
        other => panic!("expected a duplicate refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_leaser_is_woken_by_notify_not_by_polling() {
    // The poll interval is far longer than the bound, so only NOTIFY can explain a prompt lease.
    let (_db, queue) = queue_with(QueueSettings {
        poll_interval: Duration::from_secs(30),
        ..settings()
    })
    .await;
    let mut waiter = queue.waiter().await.unwrap();
    let leaser = {
        let queue = queue.clone();
        tokio::spawn(async move {
            loop {
                let jobs = queue.lease("idle", 1, None).await.unwrap();
                if let Some(j) = jobs.into_iter().next() {
                    return (Instant::now(), j);
                }
                assert!(
                    waiter.wait().await,
                    "woken by the poll timeout, not by a notification"
                );
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let submitted_at = Instant::now();
    let id = queue.submit(&job("profile", "wake_me")).await.unwrap().id;
    let (leased_at, j) = tokio::time::timeout(Duration::from_secs(5), leaser)
        .await
        .expect("leaser woke")
        .unwrap();
    assert_eq!(j.lease.job_id, id);
    let latency = leased_at.duration_since(submitted_at);
    assert!(latency < Duration::from_secs(2), "took {latency:?}");
}

#[tokio::test]
async fn an_undecodable_row_fails_that_job_and_leasing_goes_on() {
    let (db, queue) = queue_with(settings()).await;
    let good = queue.submit(&job("profile", "fine")).await.unwrap().id;
    let bad_kind: i64 = sqlx::query_scalar(
        "INSERT INTO jobs (kind, target, max_attempts, unique_key, priority)
         VALUES ('teleport', 'x', 3, 'teleport:x', 10) RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let bad_options: i64 = sqlx::query_scalar(
        "INSERT INTO jobs (kind, target, payload, max_attempts, unique_key, priority)
         VALUES ('profile', 'y', '{\"max_items\": \"lots\"}', 3, 'profile:y', 10) RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let bad_checkpoint: i64 = sqlx::query_scalar(
        "INSERT INTO jobs (kind, target, checkpoint, max_attempts, unique_key, priority)
         VALUES ('profile', 'z', '[1,2]', 3, 'profile:z', 10) RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();

    let leased = queue.lease("w", 10, None).await.unwrap();
    assert_eq!(
        leased.iter().map(|j| j.lease.job_id).collect::<Vec<_>>(),
        vec![good]
    );
    for (id, needle) in [
        (bad_kind, "unknown job kind \"teleport\""),
        (bad_options, "max_items"),
        (bad_checkpoint, "checkpoint"),
    ] {
        let row = queue.get(id).await.unwrap().unwrap();
        assert_eq!(row.state, JobState::Failed, "job {id}");
        let reason = row.last_error.unwrap_or_default();
        assert!(reason.contains(needle), "job {id}: {reason}");
    }
    // And the next lease still works.
    queue.submit(&job("profile", "after")).await.unwrap();
    assert_eq!(queue.lease("w", 10, None).await.unwrap().len(), 1);
}

#[tokio::test]
async fn priority_run_at_kinds_and_pauses_decide_what_is_leased() {
    let (_db, queue) = queue_with(settings()).await;
    let low = queue.submit(&job("profile", "low")).await.unwrap().id;
    let high = queue
        .submit(
            &JobSpec {
                priority: Some(50),
                ..JobSpec::new("profile", "high")
            }
            .validate(3)
            .unwrap(),
        )
        .await
        .unwrap()
        .id;
    let later = queue
        .submit(
            &JobSpec {
                run_at: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
                priority: Some(100),
                ..JobSpec::new("profile", "later")
            }
            .validate(3)
            .unwrap(),
        )
        .await
        .unwrap()
        .id;
    let tag = queue
        .submit(&job("hashtag_posts", "cats"))
        .await
        .unwrap()
        .id;

    queue.pause_kind(JobKind::Profile).await.unwrap();
    let only_tag = queue.lease("w", 10, None).await.unwrap();
    assert_eq!(
        only_tag.iter().map(|j| j.lease.job_id).collect::<Vec<_>>(),
        vec![tag]
    );
    assert_eq!(
        queue.paused_kinds().await.unwrap(),
        vec!["profile".to_owned()]
    );
    queue.resume_kind(JobKind::Profile).await.unwrap();

    assert!(
        queue
            .lease("w", 1, Some(&[JobKind::Post]))
            .await
            .unwrap()
            .is_empty()
    );
    let first = queue
        .lease("w", 1, Some(&[JobKind::Profile]))
        .await
        .unwrap();
    assert_eq!(first[0].lease.job_id, high);
    let second = queue.lease("w", 5, None).await.unwrap();
    assert_eq!(
        second.iter().map(|j| j.lease.job_id).collect::<Vec<_>>(),
        vec![low]
    );
    assert_eq!(state_of(&queue, later).await, JobState::Queued);
}

#[tokio::test]
async fn cancel_stops_a_running_job_and_fences_its_worker() {
    let (_db, queue) = queue_with(settings()).await;
    let id = queue.submit(&job("profile", "stopme")).await.unwrap().id;
    let j = queue.lease("w", 1, None).await.unwrap().remove(0);
    let cancelled = queue.cancel(id).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(matches!(
        queue.complete(&j.lease).await,
        Err(QueueError::LeaseLost { .. })
    ));
    assert!(matches!(
        queue.cancel(id).await,
        Err(QueueError::WrongState {
            state: JobState::Cancelled,
            ..
        })
    ));
    assert!(matches!(
        queue.cancel(999_999).await,
        Err(QueueError::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_recurring_job_schedules_its_next_crawl_when_it_finishes() {
    let (db, queue) = queue_with(settings()).await;
    let spec = JobSpec {
        recrawl_every: Some("1h".parse().unwrap()),
        ..JobSpec::new("profile_posts", "periodic")
    };
    let id = queue.submit(&spec.validate(3).unwrap()).await.unwrap().id;
    let j = queue.lease("w", 1, None).await.unwrap().remove(0);
    queue.complete(&j.lease).await.unwrap();
    let next: (i64, JobState, f64, f64) = sqlx::query_as(
        "SELECT id, state, extract(epoch FROM run_at - now())::float8,
                extract(epoch FROM recrawl_every)::float8
         FROM jobs WHERE id <> $1",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(next.1, JobState::Queued);
    assert!(
        (3590.0..=3600.0).contains(&next.2),
        "next run in {}s",
        next.2
    );
    assert_eq!(next.3, 3600.0);
}

#[tokio::test]
async fn rescue_fails_a_job_whose_attempts_are_used_up() {
    let (_db, queue) = queue_with(QueueSettings {
        lease: Duration::from_millis(200),
        ..settings()
    })
    .await;
    let spec = JobSpec {
        max_attempts: Some(1),
        ..JobSpec::new("profile", "crashy")
    };
    let id = queue.submit(&spec.validate(3).unwrap()).await.unwrap().id;
    queue.lease("w", 1, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = queue.rescue_expired().await.unwrap();
    assert_eq!((report.requeued, report.failed), (0, 1));
    let row = queue.get(id).await.unwrap().unwrap();
    assert_eq!(row.state, JobState::Failed);
    assert!(row.last_error.unwrap().contains("lease expired"));
}

#[tokio::test]
async fn finished_jobs_are_pruned_after_retention_and_active_ones_kept() {
    let (db, queue) = queue_with(settings()).await;
    let done = queue.submit(&job("profile", "old")).await.unwrap().id;
    let active = queue.submit(&job("profile", "active")).await.unwrap().id;
    let j = queue.lease("w", 2, None).await.unwrap();
    let lease = j.iter().find(|j| j.lease.job_id == done).unwrap().lease;
    queue.complete(&lease).await.unwrap();
    assert_eq!(
        queue
            .prune_finished(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    sqlx::query("UPDATE jobs SET finished_at = now() - interval '2 hours' WHERE id = $1")
        .bind(done)
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        queue
            .prune_finished(Duration::from_secs(3600))
            .await
            .unwrap(),
        1
    );
    assert!(queue.get(done).await.unwrap().is_none());
    assert!(queue.get(active).await.unwrap().is_some());
}

#[tokio::test]
async fn a_process_refuses_a_schema_older_than_itself() {
    let db = fresh_db().await;
    db::check_schema(&db.pool).await.unwrap();
    let newest = db::required_schema_version();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(newest)
        .execute(&db.pool)
        .await
        .unwrap();
    let err = db::check_schema(&db.pool).await.unwrap_err().to_string();
    assert!(err.contains("trawl migrate"), "{err}");

    sqlx::query("DROP TABLE _sqlx_migrations")
        .execute(&db.pool)
        .await
        .unwrap();
    let err = db::check_schema(&db.pool).await.unwrap_err().to_string();
    assert!(err.contains("no Trawl schema"), "{err}");
}

#[tokio::test]
async fn list_pages_newest_first_with_filters() {
    let (_db, queue) = queue_with(settings()).await;
    let ids: Vec<i64> = {
        let jobs: Vec<NewJob> = (0..7).map(|i| job("profile", &format!("p{i}"))).collect();
        queue
            .submit_many(&jobs)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect()
    };
    queue.submit(&job("post", "ABC123")).await.unwrap();
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = queue
            .list(&trawl_shared::queue::ListFilter {
                kind: Some("profile".into()),
                state: Some(JobState::Queued),
                before_id: before,
                count: 3,
            })
            .await
            .unwrap();
        seen.extend(page.jobs.iter().map(|j| j.id));
        if !page.has_more {
            break;
        }
        before = page.jobs.last().map(|j| j.id);
    }
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(seen, expected);
}

/// A worker with one connection cannot heartbeat while its page transaction holds that
/// connection: the checkpoint at the end of the transaction renews the lease, so the `complete`
/// right after a long page lands instead of finding the lease run out.
#[tokio::test]
async fn a_checkpoint_renews_the_lease_from_the_moment_it_is_written() {
    let (_db, queue, leased) = one_leased_job(Duration::from_millis(1000), "hashtag_posts").await;
    let id = leased.lease.job_id;
    let mut tx = queue.pool().begin().await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let progress = Checkpoint {
        items: 20_000,
        pages: 1,
        done: true,
        ..Checkpoint::default()
    };
    queue
        .checkpoint(&mut *tx, &leased.lease, &progress)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // Past the lease as it stood before the checkpoint, well inside the renewed one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    queue.complete(&leased.lease).await.unwrap();
    assert_eq!(state_of(&queue, id).await, JobState::Completed);
}

/// The fence of a checkpoint is the moment it is written, not the start of its transaction: a
/// page transaction that began under a valid lease and stalled past the expiry (a worker cut off
/// from the database mid-page) is refused when it comes back, and does not revive the lease.
#[tokio::test]
async fn a_transaction_that_outlives_its_lease_cannot_checkpoint() {
    let (_db, queue, leased) = one_leased_job(Duration::from_millis(300), "hashtag_posts").await;
    let id = leased.lease.job_id;
    // `begin` sends BEGIN: the transaction's clock (`now()`) starts here, inside the lease.
    let mut tx = queue.pool().begin().await.unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    let late = Checkpoint {
        items: 50,
        pages: 1,
        ..Checkpoint::default()
    };
    let written = queue.checkpoint(&mut *tx, &leased.lease, &late).await;
    assert!(
        matches!(written, Err(QueueError::LeaseLost { .. })),
        "a checkpoint after the lease ran out: {written:?}"
    );
    drop(tx);
    assert_eq!(queue.rescue_expired().await.unwrap().requeued, 1);
    let row = queue.get(id).await.unwrap().unwrap();
    assert_eq!((row.state, row.checkpoint), (JobState::Queued, None));
}
