//! The persistent job queue (docs/architecture.md): submit with dedup, lease with `FOR UPDATE SKIP LOCKED`,
//! heartbeat, checkpoint, complete, fail (retry with backoff or permanently), snooze, release,
//! cancel, retry, pause and resume a kind, rescue expired leases, prune finished jobs.
//!
//! Every write a worker makes about a leased job (heartbeat, checkpoint, complete, fail, snooze,
//! release) carries the lease's token and is refused with [`QueueError::LeaseLost`] when the token
//! no longer matches or the lease has expired on the database clock at the moment of writing
//! (`clock_timestamp()`, never the transaction's start `now()`; fencing, invariant 4 of docs/architecture.md):
//! a worker whose lease expired cannot change the job, whether or not the rescuer has given it to
//! someone else yet. An expired lease is not revived by a late heartbeat: a worker cut off from the
//! database for longer than its lease finds its job taken back, and the rescuer requeues it.
//!
//! Attempts: leasing a job uses one attempt; a snooze or a release gives it back, so only real
//! failures (and crashes detected by the rescuer) count against `max_attempts`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::config::QueueConfig;
use crate::domain::{JobKind, JobOptions, JobState, NewJob, UnknownKind};

/// The NOTIFY channel that wakes idle leasers when runnable jobs arrive.
pub const JOBS_CHANNEL: &str = "trawl_jobs";

/// Most jobs one rescue or prune statement touches, so maintenance never holds long locks.
const MAINTENANCE_BATCH: i64 = 5_000;

/// Every column of a job as [`Job`] reads it.
macro_rules! job_columns {
    () => {
        "id, kind, target, payload, state, priority, run_at, attempt, max_attempts, unique_key, \
         extract(epoch FROM recrawl_every)::float8 AS recrawl_every_secs, lease_owner, lease_token, \
         lease_expires_at, checkpoint, last_error, created_at, updated_at, attempted_at, finished_at"
    };
}

/// Clears the lease columns; part of every statement that takes a job out of `running`.
macro_rules! clear_lease {
    () => {
        "lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = now()"
    };
}

/// Errors callers branch on. `Database` is the only retryable one.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("lease on job {job_id} is no longer held (expired and rescued, cancelled or finished)")]
    LeaseLost { job_id: i64 },
    #[error("job {job_id} does not exist")]
    NotFound { job_id: i64 },
    #[error("job {job_id} is {state}; cannot {action} it")]
    WrongState {
        job_id: i64,
        state: JobState,
        action: &'static str,
    },
    #[error(
        "job {existing_id} with unique key {unique_key:?} is already active; cannot {action} job {job_id}"
    )]
    ActiveDuplicate {
        job_id: i64,
        existing_id: i64,
        unique_key: String,
        action: &'static str,
    },
}

/// A job row as stored. `lease_token` never leaves the process in API output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub target: String,
    #[sqlx(rename = "payload")]
    pub options: serde_json::Value,
    pub state: JobState,
    pub priority: i16,
    pub run_at: DateTime<Utc>,
    pub attempt: i32,
    pub max_attempts: i32,
    pub unique_key: String,
    pub recrawl_every_secs: Option<f64>,
    pub lease_owner: Option<String>,
    #[serde(skip)]
    pub lease_token: Option<Uuid>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub checkpoint: Option<serde_json::Value>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub attempted_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The proof of holding a job: its id and the token of this attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    pub job_id: i64,
    pub token: Uuid,
}

/// Where a paginated crawl stands, stored with each page's results.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The `end_cursor` of the last page stored; `None` before the first page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Items stored so far.
    #[serde(default)]
    pub items: u64,
    /// Pages stored so far.
    #[serde(default)]
    pub pages: u64,
    /// The Instagram id the crawl resolved its target to (a user id), so a resumed crawl does not
    /// spend a request resolving it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_id: Option<String>,
    /// The page length in use (it halves after a 400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_length: Option<u32>,
    /// The crawl saw its last page (or its stop condition); only the completion is left to do.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub done: bool,
}

/// A job handed to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct LeasedJob {
    pub lease: Lease,
    pub kind: JobKind,
    pub target: String,
    pub options: JobOptions,
    /// 1 on the first attempt.
    pub attempt: i32,
    pub max_attempts: i32,
    /// Where the previous attempt stopped, if it stored a checkpoint.
    pub checkpoint: Option<Checkpoint>,
    pub lease_expires_at: DateTime<Utc>,
}

/// What [`Queue::submit_many`] did with one submitted job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    pub id: i64,
    /// `false` when an active job with the same unique key already existed; `id` is that job.
    pub created: bool,
    pub unique_key: String,
}

/// Whether a failure may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Try again after a backoff, while attempts remain.
    Retryable,
    /// Never try again (a missing profile, a private account).
    Permanent,
}

/// What [`Queue::fail`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    RetryAt(DateTime<Utc>),
    Failed,
}

/// Filters and position for [`Queue::list`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub kind: Option<String>,
    pub state: Option<JobState>,
    /// Only jobs with an id below this one (the cursor of the previous page).
    pub before_id: Option<i64>,
    pub count: i64,
}

/// One page of jobs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    pub has_more: bool,
}

/// Jobs per kind and state, with the age of the oldest runnable job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct StatsRow {
    pub kind: String,
    pub state: JobState,
    pub jobs: i64,
    /// For `queued`: seconds since the oldest job that may run now became runnable.
    pub oldest_runnable_age_seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueStats {
    pub rows: Vec<StatsRow>,
    pub paused_kinds: Vec<String>,
}

async fn paused_kinds(pool: &PgPool) -> Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT kind FROM paused_kinds ORDER BY kind")
            .fetch_all(pool)
            .await?,
    )
}

impl QueueStats {
    /// The one query that counts jobs by state: the API's stats, the scheduler's queue metrics
    /// and `trawl demo`'s progress all read it, so they never disagree about what a count means.
    /// Needs only a pool, for the processes that read it without running a queue.
    pub async fn read(pool: &PgPool) -> Result<QueueStats> {
        let rows: Vec<StatsRow> = sqlx::query_as(
            "SELECT kind, state, count(*)::bigint AS jobs,
                    extract(epoch FROM now() - min(run_at)
                        FILTER (WHERE state = 'queued' AND run_at <= now()))::float8
                        AS oldest_runnable_age_seconds
             FROM jobs GROUP BY kind, state ORDER BY kind, state",
        )
        .fetch_all(pool)
        .await?;
        Ok(QueueStats {
            rows,
            paused_kinds: paused_kinds(pool).await?,
        })
    }

    /// Jobs per state over every kind.
    pub fn by_state(&self) -> BTreeMap<JobState, i64> {
        let mut states = BTreeMap::new();
        for row in &self.rows {
            *states.entry(row.state).or_default() += row.jobs;
        }
        states
    }
}

/// What one rescue pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RescueReport {
    pub requeued: u64,
    pub failed: u64,
}

/// Timing settings of the queue, from [`QueueConfig`].
#[derive(Debug, Clone)]
pub struct QueueSettings {
    pub lease: Duration,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub default_max_attempts: i32,
    pub poll_interval: Duration,
}

impl From<&QueueConfig> for QueueSettings {
    fn from(c: &QueueConfig) -> Self {
        Self {
            lease: c.lease.0,
            retry_base: c.retry_base.0,
            retry_max: c.retry_max.0,
            default_max_attempts: c.default_max_attempts,
            poll_interval: c.poll_interval.0,
        }
    }
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self::from(&QueueConfig::default())
    }
}

/// The queue: a handle on the pool plus its timing settings. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Queue {
    pool: PgPool,
    settings: QueueSettings,
}

type Result<T, E = QueueError> = std::result::Result<T, E>;

impl Queue {
    pub fn new(pool: PgPool, settings: QueueSettings) -> Self {
        Self { pool, settings }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// Submits one job; see [`Queue::submit_many`].
    pub async fn submit(&self, job: &NewJob) -> Result<Submitted> {
        let mut out = self.submit_many(std::slice::from_ref(job)).await?;
        // `submit_in` answers once per job it is given, in order.
        Ok(out.swap_remove(0))
    }

    /// Inserts jobs in one transaction. A job whose unique key belongs to an active (queued or
    /// running) job is not inserted; its result names the existing job. Idle leasers are woken once
    /// per call when any new job is runnable now.
    pub async fn submit_many(&self, jobs: &[NewJob]) -> Result<Vec<Submitted>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let submitted = Self::submit_in(&mut tx, jobs).await?;
        tx.commit().await?;
        Ok(submitted)
    }

    /// [`Queue::submit_many`] inside the caller's transaction: a crawler fans out follow-up jobs in
    /// the same transaction as the page that found them, so a crash never loses or repeats them.
    pub async fn submit_in(tx: &mut sqlx::PgConnection, jobs: &[NewJob]) -> Result<Vec<Submitted>> {
        let mut ids: HashMap<String, (i64, bool)> = HashMap::with_capacity(jobs.len());
        let mut pending: Vec<&NewJob> = jobs.iter().collect();
        let mut any_runnable = false;
        // A conflicting job can finish between our insert and our lookup; then the key is free and
        // the next round inserts. Each extra round needs yet another job with the same key to be
        // created and to finish between two of our statements, so the loop ends as soon as the
        // churn on a key pauses; rounds are not capped, because a capped loop would have to
        // answer "no idea" for a key, which no caller could act on but by submitting again.
        while !pending.is_empty() {
            let inserted: Vec<(i64, String, bool)> = sqlx::query_as(
                "INSERT INTO jobs (kind, target, payload, priority, run_at, max_attempts, unique_key, recrawl_every)
                 SELECT k, t, p::jsonb, pr, coalesce(r, now()), m, u,
                        CASE WHEN rc IS NULL THEN NULL ELSE make_interval(secs => rc) END
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int2[], $5::timestamptz[],
                             $6::int4[], $7::text[], $8::float8[]) AS x(k, t, p, pr, r, m, u, rc)
                 ON CONFLICT (unique_key) WHERE state IN ('queued', 'running') DO NOTHING
                 RETURNING id, unique_key, run_at <= now()",
            )
            .bind(pending.iter().map(|j| j.kind.as_str()).collect::<Vec<_>>())
            .bind(pending.iter().map(|j| j.target.as_str()).collect::<Vec<_>>())
            .bind(
                pending
                    .iter()
                    .map(|j| serde_json::to_string(&j.options).unwrap_or_else(|_| "{}".into()))
                    .collect::<Vec<_>>(),
            )
            .bind(pending.iter().map(|j| j.priority).collect::<Vec<_>>())
            .bind(pending.iter().map(|j| j.run_at).collect::<Vec<_>>())
            .bind(pending.iter().map(|j| j.max_attempts).collect::<Vec<_>>())
            .bind(pending.iter().map(|j| j.unique_key.as_str()).collect::<Vec<_>>())
            .bind(
                pending
                    .iter()
                    .map(|j| j.recrawl_every.map(|d| d.as_secs_f64()))
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&mut *tx)
            .await?;
            for (id, key, runnable) in inserted {
                any_runnable |= runnable;
                ids.insert(key, (id, true));
            }
            pending.retain(|j| !ids.contains_key(&j.unique_key));
            if pending.is_empty() {
                break;
            }
            let existing: Vec<(i64, String)> = sqlx::query_as(
                "SELECT id, unique_key FROM jobs
                 WHERE unique_key = ANY($1) AND state IN ('queued', 'running')",
            )
            .bind(
                pending
                    .iter()
                    .map(|j| j.unique_key.as_str())
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&mut *tx)
            .await?;
            for (id, key) in existing {
                ids.insert(key, (id, false));
            }
            pending.retain(|j| !ids.contains_key(&j.unique_key));
        }
        if any_runnable {
            notify_jobs(&mut *tx).await?;
        }
        let submitted = jobs
            .iter()
            .map(|j| {
                // The loop above ends only once every job's key is in `ids`.
                let (id, created) = ids[&j.unique_key];
                Submitted {
                    id,
                    // Two jobs of one call with one key: the first is created, the rest are not.
                    created,
                    unique_key: j.unique_key.clone(),
                }
            })
            .collect::<Vec<_>>();
        Ok(mark_repeats_as_existing(submitted))
    }

    /// Leases up to `limit` runnable jobs (of `kinds`, or any kind) for `owner`, highest priority
    /// and oldest `run_at` first, skipping rows other leasers hold and kinds that are paused.
    ///
    /// A row that cannot be decoded (unknown kind, malformed options or checkpoint) is failed with
    /// the decoding error and not returned; the other rows are.
    pub async fn lease(
        &self,
        owner: &str,
        limit: usize,
        kinds: Option<&[JobKind]>,
    ) -> Result<Vec<LeasedJob>> {
        self.lease_as(owner, limit, kinds, None).await
    }

    /// [`Queue::lease`] for a worker holding `account`: of the kinds that read their own
    /// account's listing ([`JobKind::reads_own_account`]), only the jobs whose target is
    /// `account` are leased, since no other account can read that listing.
    #[tracing::instrument(level = "debug", skip(self, kinds), fields(job_id = tracing::field::Empty,
        kind = tracing::field::Empty), err(level = "warn"))]
    pub async fn lease_as(
        &self,
        owner: &str,
        limit: usize,
        kinds: Option<&[JobKind]>,
        account: Option<&str>,
    ) -> Result<Vec<LeasedJob>> {
        let own_kinds: Vec<&str> = JobKind::ALL
            .into_iter()
            .filter(|k| k.reads_own_account())
            .map(JobKind::as_str)
            .collect();
        let kinds: Option<Vec<&str>> = kinds.map(|ks| ks.iter().map(|k| k.as_str()).collect());
        let rows: Vec<Job> = sqlx::query_as(concat!(
            "WITH picked AS (
                SELECT id AS job_id FROM jobs
                WHERE state = 'queued' AND run_at <= now()
                  AND ($3::text[] IS NULL OR kind = ANY($3))
                  AND (kind <> ALL($5) OR target = $6)
                  -- NOT IN (a hashed subplan), not NOT EXISTS: the planner estimates an anti-join
                  -- against the tiny paused_kinds table at one row, and then prefers a full scan
                  -- and sort of the queue to the ordered index scan (93 ms instead of 0.4 ms at
                  -- 100k jobs). paused_kinds.kind is a primary key, so NOT IN has no NULL trap.
                  AND kind NOT IN (SELECT kind FROM paused_kinds)
                ORDER BY priority DESC, run_at, id
                LIMIT $2
                FOR UPDATE SKIP LOCKED
             )
             UPDATE jobs SET state = 'running', attempt = attempt + 1, lease_owner = $1,
                    lease_token = gen_random_uuid(),
                    lease_expires_at = now() + make_interval(secs => $4),
                    attempted_at = now(), updated_at = now()
             FROM picked WHERE jobs.id = picked.job_id
             RETURNING ",
            job_columns!()
        ))
        .bind(owner)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(kinds)
        .bind(self.settings.lease.as_secs_f64())
        .bind(&own_kinds)
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        let mut leased = Vec::with_capacity(rows.len());
        for row in rows {
            match decode_leased(&row) {
                Ok(job) => leased.push(job),
                Err(reason) => {
                    tracing::warn!(job_id = row.id, %reason, "failing a job that cannot be decoded");
                    if let Some(token) = row.lease_token {
                        let lease = Lease {
                            job_id: row.id,
                            token,
                        };
                        // The job was just leased by us, so only a cancel can race this.
                        match self.fail(&lease, &reason, Failure::Permanent, 1).await {
                            Ok(_) | Err(QueueError::LeaseLost { .. }) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
        }
        leased.sort_by_key(|j| j.lease.job_id);
        if let [one] = leased.as_slice() {
            let span = tracing::Span::current();
            span.record("job_id", one.lease.job_id);
            span.record("kind", one.kind.as_str());
        }
        Ok(leased)
    }

    /// Extends a lease by the configured lease duration from now (database clock).
    #[tracing::instrument(level = "debug", skip_all, fields(job_id = lease.job_id),
        err(level = "debug"))]
    pub async fn heartbeat(&self, lease: &Lease) -> Result<DateTime<Utc>> {
        sqlx::query_scalar(
            "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3), updated_at = now()
             WHERE id = $1 AND lease_token = $2 AND lease_expires_at > clock_timestamp()
             RETURNING lease_expires_at",
        )
        .bind(lease.job_id)
        .bind(lease.token)
        .bind(self.settings.lease.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(QueueError::LeaseLost {
            job_id: lease.job_id,
        })
    }

    /// Stores a checkpoint. Pass the transaction that stores the page's results, so that results and
    /// progress commit together.
    ///
    /// A checkpoint is also a heartbeat: it renews the lease from the moment it is written. A worker
    /// with one database connection cannot heartbeat while a long page transaction holds that
    /// connection, and without the renewal the lease could run out between this commit and the
    /// `complete` right after it, dropping a finished job's outcome.
    #[tracing::instrument(level = "debug", skip_all, fields(job_id = lease.job_id,
        items = checkpoint.items, pages = checkpoint.pages), err(level = "warn"))]
    pub async fn checkpoint<'e>(
        &self,
        executor: impl PgExecutor<'e>,
        lease: &Lease,
        checkpoint: &Checkpoint,
    ) -> Result<()> {
        // `clock_timestamp()`, not `now()`: `now()` is the transaction's start, and a page
        // transaction that began under a valid lease and stalled (a network partition) past its
        // expiry must not write, nor revive the lease, when it comes back.
        let done = sqlx::query(
            "UPDATE jobs SET checkpoint = $3, updated_at = now(),
                 lease_expires_at = greatest(lease_expires_at,
                                             clock_timestamp() + make_interval(secs => $4))
             WHERE id = $1 AND lease_token = $2 AND lease_expires_at > clock_timestamp()",
        )
        .bind(lease.job_id)
        .bind(lease.token)
        .bind(sqlx::types::Json(checkpoint))
        .bind(self.settings.lease.as_secs_f64())
        .execute(executor)
        .await?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(QueueError::LeaseLost {
                job_id: lease.job_id,
            })
        }
    }

    /// Marks a leased job completed (and schedules its next crawl when it recurs).
    #[tracing::instrument(level = "debug", skip_all, fields(job_id = lease.job_id),
        err(level = "debug"))]
    pub async fn complete(&self, lease: &Lease) -> Result<()> {
        let done = self.complete_many(std::slice::from_ref(lease)).await?;
        if done.is_empty() {
            Err(QueueError::LeaseLost {
                job_id: lease.job_id,
            })
        } else {
            Ok(())
        }
    }

    /// Completes many leases in one transaction; returns the ids completed. A lease that is no
    /// longer held is skipped (it is not in the result).
    pub async fn complete_many(&self, leases: &[Lease]) -> Result<Vec<i64>> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<(i64, bool)> = sqlx::query_as(concat!(
            "UPDATE jobs SET state = 'completed', finished_at = now(), ",
            clear_lease!(),
            " FROM UNNEST($1::bigint[], $2::uuid[]) AS l(job_id, token)
              WHERE jobs.id = l.job_id AND jobs.lease_token = l.token AND jobs.lease_expires_at > clock_timestamp()
              RETURNING jobs.id, jobs.recrawl_every IS NOT NULL"
        ))
        .bind(leases.iter().map(|l| l.job_id).collect::<Vec<_>>())
        .bind(leases.iter().map(|l| l.token).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
        let recurring: Vec<i64> = rows.iter().filter(|r| r.1).map(|r| r.0).collect();
        schedule_recrawls(&mut tx, &recurring).await?;
        tx.commit().await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// Records a failure. A retryable failure with attempts left goes back to the queue after an
    /// exponential backoff with jitter; otherwise the job fails with `error` as its reason.
    /// `attempt` is the attempt number the caller holds (from [`LeasedJob::attempt`]).
    #[tracing::instrument(level = "debug", skip(self, lease), fields(job_id = lease.job_id),
        err(level = "debug"))]
    pub async fn fail(
        &self,
        lease: &Lease,
        error: &str,
        failure: Failure,
        attempt: i32,
    ) -> Result<FailOutcome> {
        let delay = retry_delay(&self.settings, attempt);
        let mut tx = self.pool.begin().await?;
        let row: Option<(JobState, DateTime<Utc>, bool)> = sqlx::query_as(concat!(
            "UPDATE jobs SET
                state = CASE WHEN $3 OR attempt >= max_attempts THEN 'failed'::job_state
                             ELSE 'queued'::job_state END,
                run_at = CASE WHEN $3 OR attempt >= max_attempts THEN run_at
                              ELSE now() + make_interval(secs => $4) END,
                finished_at = CASE WHEN $3 OR attempt >= max_attempts THEN now() END,
                last_error = $5, ",
            clear_lease!(),
            " WHERE id = $1 AND lease_token = $2 AND lease_expires_at > clock_timestamp()
              RETURNING state, run_at, recrawl_every IS NOT NULL"
        ))
        .bind(lease.job_id)
        .bind(lease.token)
        .bind(failure == Failure::Permanent)
        .bind(delay.as_secs_f64())
        .bind(truncate_error(error))
        .fetch_optional(&mut *tx)
        .await?;
        let Some((state, run_at, recurring)) = row else {
            return Err(QueueError::LeaseLost {
                job_id: lease.job_id,
            });
        };
        if state == JobState::Failed && recurring {
            schedule_recrawls(&mut tx, &[lease.job_id]).await?;
        }
        tx.commit().await?;
        Ok(match state {
            JobState::Failed => FailOutcome::Failed,
            _ => FailOutcome::RetryAt(run_at),
        })
    }

    /// Puts a leased job back until `delay` from now without using an attempt (a rate-limit wait
    /// longer than the lease, a 429). Returns when it will run.
    #[tracing::instrument(level = "debug", skip_all, fields(job_id = lease.job_id),
        err(level = "debug"))]
    pub async fn snooze(&self, lease: &Lease, delay: Duration) -> Result<DateTime<Utc>> {
        sqlx::query_scalar(concat!(
            "UPDATE jobs SET state = 'queued', attempt = greatest(attempt - 1, 0),
                    run_at = now() + make_interval(secs => $3), ",
            clear_lease!(),
            " WHERE id = $1 AND lease_token = $2 AND lease_expires_at > clock_timestamp() RETURNING run_at"
        ))
        .bind(lease.job_id)
        .bind(lease.token)
        .bind(delay.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(QueueError::LeaseLost {
            job_id: lease.job_id,
        })
    }

    /// Gives a job back at once without using an attempt (a worker shutting down).
    #[tracing::instrument(level = "debug", skip_all, fields(job_id = lease.job_id),
        err(level = "debug"))]
    pub async fn release(&self, lease: &Lease) -> Result<()> {
        self.snooze(lease, Duration::ZERO).await?;
        notify_jobs(&self.pool).await?;
        Ok(())
    }

    /// Cancels a queued or running job. A running job's worker finds out at its next fenced write.
    pub async fn cancel(&self, job_id: i64) -> Result<Job> {
        let row: Option<Job> = sqlx::query_as(concat!(
            "UPDATE jobs SET state = 'cancelled', finished_at = now(), ",
            clear_lease!(),
            " WHERE id = $1 AND state IN ('queued', 'running') RETURNING ",
            job_columns!()
        ))
        .bind(job_id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(job) => Ok(job),
            None => Err(self.explain_refusal(job_id, "cancel").await),
        }
    }

    /// Queues a failed or cancelled job again with fresh attempts. It keeps its checkpoint, so a
    /// crawl resumes where it stopped.
    pub async fn retry(&self, job_id: i64) -> Result<Job> {
        let mut tx = self.pool.begin().await?;
        let row: std::result::Result<Option<Job>, sqlx::Error> = sqlx::query_as(concat!(
            "UPDATE jobs SET state = 'queued', attempt = 0, run_at = now(), finished_at = NULL,
                    updated_at = now()
             WHERE id = $1 AND state IN ('failed', 'cancelled') RETURNING ",
            job_columns!()
        ))
        .bind(job_id)
        .fetch_optional(&mut *tx)
        .await;
        match row {
            Ok(Some(job)) => {
                notify_jobs(&mut *tx).await?;
                tx.commit().await?;
                Ok(job)
            }
            Ok(None) => {
                drop(tx);
                Err(self.explain_refusal(job_id, "retry").await)
            }
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                drop(tx);
                let job = self
                    .get(job_id)
                    .await?
                    .ok_or(QueueError::NotFound { job_id })?;
                let existing_id: Option<i64> = sqlx::query_scalar(
                    "SELECT id FROM jobs WHERE unique_key = $1 AND state IN ('queued', 'running')",
                )
                .bind(&job.unique_key)
                .fetch_optional(&self.pool)
                .await?;
                Err(QueueError::ActiveDuplicate {
                    job_id,
                    existing_id: existing_id.unwrap_or_default(),
                    unique_key: job.unique_key,
                    action: "retry",
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn explain_refusal(&self, job_id: i64, action: &'static str) -> QueueError {
        match self.get(job_id).await {
            Ok(Some(job)) => QueueError::WrongState {
                job_id,
                state: job.state,
                action,
            },
            Ok(None) => QueueError::NotFound { job_id },
            Err(e) => e,
        }
    }

    /// Stops leasing jobs of `kind` until [`Queue::resume_kind`]. Running jobs finish.
    pub async fn pause_kind(&self, kind: JobKind) -> Result<()> {
        sqlx::query("INSERT INTO paused_kinds (kind) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(kind.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn resume_kind(&self, kind: JobKind) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM paused_kinds WHERE kind = $1")
            .bind(kind.as_str())
            .execute(&mut *tx)
            .await?;
        notify_jobs(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn paused_kinds(&self) -> Result<Vec<String>> {
        paused_kinds(&self.pool).await
    }

    pub async fn get(&self, job_id: i64) -> Result<Option<Job>> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE id = $1"
        ))
        .bind(job_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Jobs newest first, filtered by kind and state, after a cursor.
    pub async fn list(&self, filter: &ListFilter) -> Result<JobPage> {
        let count = filter.count.clamp(1, 1000);
        let mut jobs: Vec<Job> = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs
              WHERE ($1::text IS NULL OR kind = $1)
                AND ($2::job_state IS NULL OR state = $2)
                AND ($3::bigint IS NULL OR id < $3)
              ORDER BY id DESC
              LIMIT $4"
        ))
        .bind(filter.kind.as_deref())
        .bind(filter.state)
        .bind(filter.before_id)
        .bind(count + 1)
        .fetch_all(&self.pool)
        .await?;
        let has_more = jobs.len() as i64 > count;
        jobs.truncate(count as usize);
        Ok(JobPage { jobs, has_more })
    }

    /// Jobs by kind and state, and the paused kinds: see [`QueueStats::read`].
    pub async fn stats(&self) -> Result<QueueStats> {
        QueueStats::read(&self.pool).await
    }

    /// Takes back jobs whose lease expired: they return to the queue at once, or fail when their
    /// attempts are used up (a job that crashes its worker every time must not loop forever).
    pub async fn rescue_expired(&self) -> Result<RescueReport> {
        let mut report = RescueReport::default();
        loop {
            let mut tx = self.pool.begin().await?;
            let rows: Vec<(i64, JobState, bool)> = sqlx::query_as(concat!(
                "UPDATE jobs SET
                    state = CASE WHEN attempt >= max_attempts THEN 'failed'::job_state
                                 ELSE 'queued'::job_state END,
                    finished_at = CASE WHEN attempt >= max_attempts THEN now() END,
                    run_at = now(),
                    last_error = 'lease expired: ' || coalesce(lease_owner, 'unknown worker')
                                 || ' stopped heartbeating during attempt ' || attempt, ",
                clear_lease!(),
                " WHERE id IN (SELECT id FROM jobs WHERE state = 'running' AND lease_expires_at < now()
                               ORDER BY lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
                  RETURNING id, state, recrawl_every IS NOT NULL"
            ))
            .bind(MAINTENANCE_BATCH)
            .fetch_all(&mut *tx)
            .await?;
            let failed_recurring: Vec<i64> = rows
                .iter()
                .filter(|r| r.1 == JobState::Failed && r.2)
                .map(|r| r.0)
                .collect();
            schedule_recrawls(&mut tx, &failed_recurring).await?;
            let requeued = rows.iter().filter(|r| r.1 == JobState::Queued).count() as u64;
            if requeued > 0 {
                notify_jobs(&mut *tx).await?;
            }
            tx.commit().await?;
            report.requeued += requeued;
            report.failed += rows.len() as u64 - requeued;
            if (rows.len() as i64) < MAINTENANCE_BATCH {
                return Ok(report);
            }
        }
    }

    /// Deletes finished jobs older than `retention`; returns how many.
    pub async fn prune_finished(&self, retention: Duration) -> Result<u64> {
        let mut total = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM jobs WHERE id IN (
                    SELECT id FROM jobs
                    WHERE finished_at IS NOT NULL
                      AND finished_at < now() - make_interval(secs => $1)
                    LIMIT $2)",
            )
            .bind(retention.as_secs_f64())
            .bind(MAINTENANCE_BATCH)
            .execute(&self.pool)
            .await?;
            total += done.rows_affected();
            if (done.rows_affected() as i64) < MAINTENANCE_BATCH {
                return Ok(total);
            }
        }
    }

    /// A listener that wakes when runnable jobs arrive. Create it before the first lease so that no
    /// notification between a lease and the wait is missed. It holds a connection of its own,
    /// outside the queue's pool: a LISTEN connection is never given back, and taking it from a
    /// small pool would leave nothing for leasing.
    pub async fn waiter(&self) -> Result<JobWaiter> {
        let listener = listen_for_jobs(&self.pool).await?;
        Ok(JobWaiter {
            listener: Some(listener),
            pool: self.pool.clone(),
            poll_interval: self.settings.poll_interval,
        })
    }
}

/// A LISTEN connection on the pool's current target (the primary it follows after a failover).
async fn listen_for_jobs(pool: &PgPool) -> Result<PgListener> {
    let own = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        // Short: while a failover is under way the target may be dead; the waiter polls meanwhile.
        .acquire_timeout(Duration::from_secs(2))
        .connect_with(pool.connect_options().as_ref().clone())
        .await?;
    let mut listener = PgListener::connect_with(&own).await?;
    // A lost connection ends this listener (the waiter opens another on the pool's target then)
    // instead of reconnecting to the host it had, which a failover may have left dead.
    listener.eager_reconnect(false);
    listener.listen(JOBS_CHANNEL).await?;
    Ok(listener)
}

/// Waits for a NOTIFY on [`JOBS_CHANNEL`] or the poll interval, whichever comes first.
pub struct JobWaiter {
    /// `None` after the listener failed, until it is opened again on the current primary.
    listener: Option<PgListener>,
    pool: PgPool,
    poll_interval: Duration,
}

impl JobWaiter {
    /// Returns `true` when woken by a notification, `false` on the poll timeout or a lost
    /// connection. A lost listener is opened again on the next call, on the host the pool uses
    /// then: after a failover, reconnecting the old one would keep trying the old primary.
    pub async fn wait(&mut self) -> bool {
        if self.listener.is_none() {
            match listen_for_jobs(&self.pool).await {
                Ok(listener) => self.listener = Some(listener),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for job notifications; polling");
                    tokio::time::sleep(self.poll_interval).await;
                    return false;
                }
            }
        }
        let Some(listener) = self.listener.as_mut() else {
            return false;
        };
        match tokio::time::timeout(self.poll_interval, listener.try_recv()).await {
            Ok(Ok(Some(_))) => true,
            // The connection was lost (notifications may have been missed: the caller polls).
            Ok(Ok(None)) => {
                tracing::warn!("job notification listener lost its connection; opening another");
                self.listener = None;
                false
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "job notification listener failed; polling");
                self.listener = None;
                tokio::time::sleep(self.poll_interval).await;
                false
            }
            Err(_) => false,
        }
    }
}

async fn notify_jobs<'e>(executor: impl PgExecutor<'e>) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(JOBS_CHANNEL)
        .execute(executor)
        .await?;
    Ok(())
}

/// Queues the next crawl of each recurring job in `ids`, `recrawl_every` from now.
async fn schedule_recrawls(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    ids: &[i64],
) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO jobs (kind, target, payload, priority, run_at, max_attempts, unique_key, recrawl_every)
         SELECT kind, target, payload, priority, now() + recrawl_every, max_attempts, unique_key,
                recrawl_every
         FROM jobs WHERE id = ANY($1) AND recrawl_every IS NOT NULL
         ON CONFLICT (unique_key) WHERE state IN ('queued', 'running') DO NOTHING",
    )
    .bind(ids)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn decode_leased(row: &Job) -> std::result::Result<LeasedJob, String> {
    let kind: JobKind = row
        .kind
        .parse()
        .map_err(|e: UnknownKind| format!("cannot decode job: {e}"))?;
    let options: JobOptions = serde_json::from_value(row.options.clone())
        .map_err(|e| format!("cannot decode job options {}: {e}", row.options))?;
    let checkpoint = row
        .checkpoint
        .clone()
        .map(serde_json::from_value::<Checkpoint>)
        .transpose()
        .map_err(|e| format!("cannot decode job checkpoint: {e}"))?;
    let (Some(token), Some(lease_expires_at)) = (row.lease_token, row.lease_expires_at) else {
        return Err("leased row has no lease token".into());
    };
    Ok(LeasedJob {
        lease: Lease {
            job_id: row.id,
            token,
        },
        kind,
        target: row.target.clone(),
        options,
        attempt: row.attempt,
        max_attempts: row.max_attempts,
        checkpoint,
        lease_expires_at,
    })
}

/// `retry_base × 2^(attempt−1)`, capped at `retry_max`, times a random factor in [0.75, 1.25) so
/// that jobs failed together do not retry together.
pub fn retry_delay(settings: &QueueSettings, attempt: i32) -> Duration {
    let exponent = attempt.clamp(1, 31) - 1;
    let base = settings.retry_base.as_secs_f64() * 2f64.powi(exponent);
    let capped = base.min(settings.retry_max.as_secs_f64());
    let jitter = 0.75 + rand::random::<f64>() * 0.5;
    Duration::from_secs_f64(capped * jitter)
}

fn truncate_error(error: &str) -> String {
    const MAX: usize = 4000;
    // PostgreSQL text cannot hold NUL, and a reason can quote what a server sent.
    let cleaned;
    let error = if error.contains('\0') {
        cleaned = error.replace('\0', "\u{fffd}");
        cleaned.as_str()
    } else {
        error
    };
    if error.len() <= MAX {
        return error.to_owned();
    }
    let mut end = MAX;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &error[..end])
}

/// Within one submission, only the first job with a key is reported as created.
fn mark_repeats_as_existing(mut results: Vec<Submitted>) -> Vec<Submitted> {
    let mut seen = std::collections::HashSet::new();
    for r in &mut results {
        if !seen.insert(r.id) {
            r.created = false;
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_and_is_capped_with_jitter() {
        let s = QueueSettings {
            retry_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(60),
            ..QueueSettings::default()
        };
        for (attempt, nominal) in [(1, 10.0), (2, 20.0), (3, 40.0), (4, 60.0), (30, 60.0)] {
            for _ in 0..50 {
                let d = retry_delay(&s, attempt).as_secs_f64();
                assert!(
                    d >= nominal * 0.75 && d < nominal * 1.25,
                    "attempt {attempt}: {d}"
                );
            }
        }
    }

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        let long = "é".repeat(5000);
        let cut = truncate_error(&long);
        assert!(cut.len() <= 4004 && cut.ends_with('…'));
    }
}
